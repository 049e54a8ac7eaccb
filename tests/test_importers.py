"""Every importer on small exports the tests write themselves, and `scalpscan import`."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.importers import ImportFormatError, get_importer, parse_labels, parse_mapping, view_from_name
from scalpscan.data.importers.coco import import_coco, rle_to_mask
from scalpscan.data.importers.imagefolder import import_imagefolder
from scalpscan.data.importers.roboflow import import_roboflow, original_name
from scalpscan.data.manifest import read_manifest
from scalpscan.data.vocab import condition_bit, zone_bit


def _jpg(path: Path, size=(32, 24), colour=(100, 80, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# Real Roboflow names are messy: missing dashes, "Top-Down", several copies per photo.
ROBOFLOW_NAMES = [
    ("1-Left_jpg.rf.6bc2f4b4c055fe1c23be4d36a8b8f6ef.jpg", "LEVEL_2", "left", "LEVEL_2:1"),
    ("1-Left_jpg.rf.aba1e5b989d113cdef2d845738cf2f4b.jpg", "LEVEL_2", "left", "LEVEL_2:1"),
    ("1-Top-Down_jpg.rf.0e66e06d513256dad94cdf8584cdfd74.jpg", "LEVEL_2", "top", "LEVEL_2:1"),
    ("31Front_jpg.rf.2bd88b0a97de27a414ea3ba902325e2e.jpg", "LEVEL_4", "front", "LEVEL_4:31"),
    ("32Top-Down_jpg.rf.1a6520b33cb4f8f4e22e52ac4c960868.jpg", "LEVEL_4", "top", "LEVEL_4:32"),
    ("17-Back_jpeg.rf.09d799a68cabda5c5cea7137eb29d1dd.jpeg", "LEVEL_7", "back", "LEVEL_7:17"),
    ("17-Right_jpg.rf.782c2bb91f35e43fb8eaf052b5574d8a.jpg", "LEVEL_2", "right", "LEVEL_2:17"),
]


def _roboflow(tmp_path: Path, names=ROBOFLOW_NAMES) -> Path:
    src = tmp_path / "export" / "train"
    classes = ["LEVEL_2", "LEVEL_3", "LEVEL_4", "LEVEL_5", "LEVEL_6", "LEVEL_7"]
    lines = ["filename, " + ", ".join(classes)]
    for name, level, _, _ in names:
        _jpg(src / name)
        lines.append(name + "," + ",".join("1" if c == level else "0" for c in classes))
    (src / "_classes.csv").write_text("\n".join(lines) + "\n")
    return src


def test_roboflow_stage_view_and_subject_from_messy_names(tmp_path):
    result = import_roboflow(_roboflow(tmp_path))
    assert result.warnings == []
    got = {r.image.name: (r.stage, r.view, r.subject) for r in result.rows}
    for name, level, view, subject in ROBOFLOW_NAMES:
        assert got[name] == (int(level[-1]), view, subject), name
    assert all(r.conditions == {"thinning": None, "alopecia_patch": None, "transplant_scar": None}
               for r in result.rows)
    assert result.rows[0].extra["original"] == "1-Left.jpg"


def test_roboflow_multilabel_conditions_and_problems(tmp_path):
    src = tmp_path / "ml"
    _jpg(src / "a-front_jpg.rf.1.jpg")
    _jpg(src / "b_jpg.rf.2.jpg")
    _jpg(src / "stray.jpg")
    (src / "_classes.csv").write_text(
        "filename, thinning, bald spots, none\na-front_jpg.rf.1.jpg,1,0,0\nb_jpg.rf.2.jpg,0,0,1\n"
    )
    with pytest.raises(ImportFormatError, match="'bald spots'.*--map"):
        import_roboflow(src)
    result = import_roboflow(src, mapping=parse_mapping(["bald spots=alopecia_patch"]))
    a, b = result.rows
    assert a.conditions == {"thinning": 1, "alopecia_patch": 0, "transplant_scar": None}
    assert b.conditions == {"thinning": 0, "alopecia_patch": 0, "transplant_scar": 0}
    assert a.view == "front" and b.view is None
    assert any("no view" in w for w in result.warnings)
    assert any("stray.jpg" in w and "not listed" in w for w in result.warnings)
    (src / "_classes.csv").write_text("filename, thinning\nmissing.jpg,1\na-front_jpg.rf.1.jpg,2\n")
    with pytest.raises(ImportFormatError) as info:
        import_roboflow(src)
    assert "row 2: image not found" in str(info.value) and "row 3: class cells" in str(info.value)


def test_roboflow_root_folder_points_to_the_splits(tmp_path):
    _roboflow(tmp_path)
    with pytest.raises(ImportFormatError, match="split folders train"):
        import_roboflow(tmp_path / "export")


def test_original_name_and_view_parsing():
    assert original_name("17-Top-Down_jpg.rf.abc123.jpg") == "17-Top-Down.jpg"
    assert original_name("plain.jpg") == "plain.jpg"
    assert view_from_name("31Front") == ("front", None)
    assert view_from_name("IMG_2041_vertex")[0] == "top"
    assert view_from_name("brightness_test")[0] is None  # "right" inside a word is no view
    view, problem = view_from_name("left-and-right")
    assert view is None and "several views" in problem


def test_label_parsing_and_mapping_file(tmp_path):
    labels = parse_labels("thinning,stage:3,top-down")
    assert labels.conditions == {"thinning": 1} and labels.stage == 3 and labels.view == "top"
    assert parse_labels("Norwood 5").stage == 5
    assert parse_labels("none").conditions == {"thinning": 0, "alopecia_patch": 0, "transplant_scar": 0}
    with pytest.raises(ImportFormatError, match="unknown label 'baldish'"):
        parse_labels("baldish")
    with pytest.raises(ImportFormatError, match="two different stages"):
        parse_labels("stage:3,level_4")
    mapping_file = tmp_path / "map.yaml"
    mapping_file.write_text("Bald Spots: [alopecia_patch]\nnw3: stage:3, thinning\n")
    mapping = parse_mapping([str(mapping_file), "odd=skip"])
    assert mapping["bald_spots"].conditions == {"alopecia_patch": 1}
    assert mapping["nw3"].stage == 3 and mapping["odd"].skip
    with pytest.raises(ImportFormatError, match="neither NAME=LABEL"):
        parse_mapping(["no-such-file.yaml"])


def test_imagefolder_defaults_mapping_and_subjects(tmp_path):
    src = tmp_path / "tree"
    _jpg(src / "thinning" / "17-front.jpg")
    _jpg(src / "thinning" / "sub" / "17-top.png")
    _jpg(src / "alopecia_patch" / "IMG_0042.jpg")
    _jpg(src / "level_3" / "5_left.jpg")
    _jpg(src / "None" / "8-back.jpg")
    _jpg(src / "bald spots" / "9-right.jpg")
    _jpg(src / "junk" / "x.jpg")
    (src / "thinning" / "notes.txt").write_text("hello")
    with pytest.raises(ImportFormatError, match="'bald spots', 'junk'"):
        import_imagefolder(src)
    result = import_imagefolder(src, mapping=parse_mapping(["bald spots=alopecia_patch,stage:2", "junk=skip"]))
    rows = {r.image.name: r for r in result.rows}
    assert set(rows) == {"17-front.jpg", "17-top.png", "IMG_0042.jpg", "5_left.jpg", "8-back.jpg", "9-right.jpg"}
    assert rows["17-front.jpg"].conditions["thinning"] == 1 and rows["17-front.jpg"].view == "front"
    assert rows["17-front.jpg"].subject == rows["17-top.png"].subject == "thinning:17"
    assert rows["IMG_0042.jpg"].subject == "alopecia_patch:IMG_0042" and rows["IMG_0042.jpg"].view is None
    assert rows["5_left.jpg"].stage == 3 and rows["5_left.jpg"].conditions["thinning"] is None
    assert rows["8-back.jpg"].conditions == {"thinning": 0, "alopecia_patch": 0, "transplant_scar": 0}
    assert rows["9-right.jpg"].stage == 2 and rows["9-right.jpg"].conditions["alopecia_patch"] == 1
    assert any("notes.txt" in w for w in result.warnings)
    assert any("1 of 6" in w and "no view" in w for w in result.warnings)


def _coco(tmp_path: Path, **info) -> Path:
    _jpg(tmp_path / "imgs" / "p1-top.jpg", size=(40, 30))
    _jpg(tmp_path / "imgs" / "p2-front.jpg", size=(40, 30))
    # RLE (uncompressed, column-major): 30 zeros then 30 ones = pixels x=1 column, all rows.
    data = {
        "info": info,
        "images": [
            {"id": 1, "file_name": "p1-top.jpg", "width": 40, "height": 30, "subject": "alice"},
            {"id": 2, "file_name": "p2-front.jpg", "width": 40, "height": 30, "stage": 5},
        ],
        "categories": [{"id": 1, "name": "Crown"}, {"id": 2, "name": "left temple"},
                       {"id": 3, "name": "alopecia"}, {"id": 4, "name": "freckle"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]},
            {"id": 11, "image_id": 1, "category_id": 2, "segmentation": [[10, 5, 30, 5, 30, 20, 10, 20]]},
            {"id": 12, "image_id": 1, "category_id": 3,
             "segmentation": {"size": [30, 40], "counts": [30, 30, 1140]}},
            {"id": 13, "image_id": 2, "category_id": 4, "bbox": [0, 0, 5, 5]},
        ],
    }
    path = tmp_path / "imgs" / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_polygons_become_mask_bits(tmp_path):
    path = _coco(tmp_path)
    with pytest.raises(ImportFormatError, match="'freckle'"):
        import_coco(path, out_dir=tmp_path / "out")
    result = import_coco(path, out_dir=tmp_path / "out", mapping=parse_mapping(["freckle=skip"]))
    one, two = result.rows
    zones = np.asarray(Image.open(one.zone_mask))
    loss = np.asarray(Image.open(one.loss_mask))
    crown, left = zone_bit("crown"), zone_bit("temple_left")
    assert zones[2, 2] == crown and zones[7, 15] == crown | left and zones[15, 25] == left and zones[25, 35] == 0
    assert (loss[:, 1] == condition_bit("alopecia_patch")).all() and loss[:, [0, 2]].sum() == 0
    assert one.conditions == {"thinning": None, "alopecia_patch": 1, "transplant_scar": None}
    assert one.subject == "alice" and one.view == "top"
    assert two.zone_mask is None and two.loss_mask is None and two.stage == 5 and two.view == "front"
    assert two.subject == "p2-front"


def test_coco_exhaustive_file_makes_absent_conditions_zero(tmp_path):
    path = _coco(tmp_path, exhaustive=True)
    result = import_coco(path, out_dir=tmp_path / "out", mapping=parse_mapping(["freckle=skip"]))
    two = result.rows[1]
    assert two.conditions == {"thinning": 0, "alopecia_patch": 0, "transplant_scar": 0}
    assert two.loss_mask is not None and np.asarray(Image.open(two.loss_mask)).sum() == 0


def test_coco_size_mismatch_is_refused(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["width"] = 80
    path.write_text(json.dumps(data))
    with pytest.raises(ImportFormatError, match="40x30 but the JSON says 80x30"):
        import_coco(path, out_dir=tmp_path / "out", mapping=parse_mapping(["freckle=skip"]))


def test_compressed_rle_decodes_like_pycocotools():
    # The encoder below is pycocotools' rleToString, line for line; decoding its output must
    # give back the plain runs.
    def encode(counts):
        out = []
        for i, x in enumerate(counts):
            if i > 2:
                x -= counts[i - 2]
            more = True
            while more:
                c = x & 0x1F
                x >>= 5
                more = (x != -1) if (c & 0x10) else (x != 0)
                if more:
                    c |= 0x20
                out.append(chr(c + 48))
        return "".join(out)
    counts = [1, 2, 1, 3, 5]
    mask = rle_to_mask({"size": [3, 4], "counts": encode(counts)})
    expected = rle_to_mask({"size": [3, 4], "counts": counts})
    assert np.array_equal(mask, expected) and mask.sum() == 5


def _run_import(argv):
    from scalpscan.scripts.commands import import_

    parser = argparse.ArgumentParser()
    import_.add_arguments(parser)
    return import_.run(parser.parse_args(argv))


def test_import_command_writes_relative_manifest_and_splits(tmp_path, capsys):
    names = [(f"{i}-{v}_jpg.rf.{i}{j}.jpg", f"LEVEL_{2 + i % 6}", v.lower(), "")
             for i in range(1, 13) for j, v in enumerate(["Front", "Back"])]
    src = _roboflow(tmp_path, names)
    for i, (name, *_rest) in enumerate(names):  # distinct pictures, so no near-duplicates
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((32, 24)).save(src / name)
    out = tmp_path / "local" / "norwood"
    assert _run_import(["roboflow", str(src), "--out", str(out)]) == 0
    text = (out / "manifest.csv").read_text()
    assert "../../export/train/1-Front_jpg.rf.10.jpg,LEVEL_3:1,front" in text
    assert len(read_manifest(out / "manifest.csv")) == 24

    assert _run_import(["roboflow", str(src), "--out", str(out), "--split", "0.5,0.25,0.25", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    parts = {name: read_manifest(out / f"{name}.csv") for name in ("train", "val", "test")}
    subjects = [{r.subject for r in rows} for rows in parts.values()]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert sum(len(rows) for rows in parts.values()) == 24
    assert "subjects shared between splits: none" in printed and "none found" in printed
    with open(out / "train.csv", newline="") as f:
        assert next(csv.reader(f))[-2:] == ["source", "original"]


def test_import_command_reports_bad_input(tmp_path, capsys):
    assert _run_import(["roboflow", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "_classes.csv not found" in capsys.readouterr().err
    assert _run_import(["imagefolder", str(tmp_path), "--out", str(tmp_path / "o"), "--split", "0.9,0.2"]) == 2
    with pytest.raises(ImportFormatError, match="unknown import format"):
        get_importer("yolo")


def test_import_command_reports_leakage_against_another_manifest(tmp_path, capsys):
    rng = np.random.default_rng(0)
    photo, other = (Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((160, 120), Image.Resampling.BICUBIC)
                    for _ in range(2))
    old, new = tmp_path / "old" / "none", tmp_path / "new" / "none"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    photo.save(old / "1-front.png")
    other.save(new / "2-back.png")
    photo.rotate(270, expand=True).save(new / "3-left.jpg", quality=80)  # the same picture, rotated
    assert _run_import(["imagefolder", str(tmp_path / "old"), "--out", str(tmp_path / "m_old")]) == 0
    capsys.readouterr()
    assert _run_import(["imagefolder", str(tmp_path / "new"), "--out", str(tmp_path / "m_new"),
                        "--check-against", str(tmp_path / "m_old" / "manifest.csv")]) == 0
    report = capsys.readouterr().out
    assert "1 near-duplicate pair(s) across splits" in report
    assert "3-left.jpg" in report and "1-front.png" in report and "2-back.png" not in report.split("leakage report")[1]


# A real CVAT export ("COCO 1.0", annotations/ beside images/), trimmed to two photos whose
# pixels are stand-ins of the same size; see tests/fixtures/README.md.
CVAT_EXPORT = Path(__file__).parent / "fixtures" / "cvat_potato"


@pytest.fixture()
def cvat(tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(CVAT_EXPORT, tmp_path / "export"))


def test_cvat_export_is_found_in_its_usual_layout(cvat: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="'Early_blight'.*--map"):
        import_coco(cvat, out_dir=tmp_path / "out")
    mapping = parse_mapping(["Early_blight=alopecia_patch"])
    for src in (cvat, cvat / "annotations" / "instances_default.json"):
        result = import_coco(src, out_dir=tmp_path / "out", mapping=mapping)
        assert len(result.rows) == 2 and not any("not found" in w for w in result.warnings)
    data = json.loads((cvat / "annotations" / "instances_default.json").read_text())
    for row in result.rows:
        assert row.image.parent == (cvat / "images").resolve()
        assert row.conditions["alopecia_patch"] == 1
        loss = np.asarray(Image.open(row.loss_mask))
        assert loss.shape == (256, 256) and set(np.unique(loss)) == {0, condition_bit("alopecia_patch")}
    # Every polygon of the first photo is drawn: its mask covers about the annotated area.
    first = next(i for i in data["images"] if i["file_name"] == result.rows[0].image.name)
    area = sum(a["area"] for a in data["annotations"] if a["image_id"] == first["id"])
    drawn = int((np.asarray(Image.open(result.rows[0].loss_mask)) > 0).sum())
    assert 0.7 * area <= drawn <= 1.5 * area


def test_unused_categories_need_no_mapping(cvat: Path, tmp_path: Path) -> None:
    path = cvat / "annotations" / "instances_default.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 2, "name": "Late_blight", "supercategory": ""})  # no annotation uses it
    path.write_text(json.dumps(data))
    result = import_coco(cvat, out_dir=tmp_path / "out", mapping=parse_mapping(["Early_blight=thinning"]))
    assert len(result.rows) == 2


def test_missing_photo_is_reported_and_skipped_or_refused_with_strict(cvat: Path, tmp_path: Path) -> None:
    mapping = parse_mapping(["Early_blight=alopecia_patch"])
    gone = sorted((cvat / "images").iterdir())[0]
    gone.unlink()
    result = import_coco(cvat, out_dir=tmp_path / "out", mapping=mapping)
    assert len(result.rows) == 1
    assert any(gone.name in w and "image not found" in w and str(cvat / "images") in w for w in result.warnings)
    out = tmp_path / "strict"
    with pytest.raises(ImportFormatError, match="image not found") as info:
        import_coco(cvat, out_dir=out, mapping=mapping, strict=True)
    assert "looked for the photos in" in str(info.value)
    assert not (out / "masks").exists() or not any((out / "masks").iterdir())  # nothing left behind
    # Through the command: --strict exits 2 and writes nothing.
    assert _run_import(["coco", str(cvat), "--out", str(out), "--map", "Early_blight=alopecia_patch", "--strict"]) == 2
    assert not (out / "manifest.csv").exists() and not (out / "masks").exists()
    assert _run_import(["coco", str(cvat), "--out", str(out), "--map", "Early_blight=alopecia_patch", "--no-dedup"]) == 0
    assert len(read_manifest(out / "manifest.csv")) == 1


def test_photos_nowhere_to_be_found_says_where_it_looked(cvat: Path, tmp_path: Path) -> None:
    (cvat / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(ImportFormatError, match="looked for the photos in: .*--images"):
        import_coco(cvat, out_dir=tmp_path / "out", mapping=parse_mapping(["Early_blight=thinning"]))
    result = import_coco(cvat, out_dir=tmp_path / "out", images=tmp_path / "elsewhere",
                         mapping=parse_mapping(["Early_blight=thinning"]))
    assert len(result.rows) == 2


def test_a_failed_import_leaves_no_masks_behind(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["images"][1]["width"] = 80  # the second photo fails after the first one's masks are drawn
    path.write_text(json.dumps(data))
    with pytest.raises(ImportFormatError, match="40x30 but the JSON says 80x30"):
        import_coco(path, out_dir=tmp_path / "out", mapping=parse_mapping(["freckle=skip"]), strict=True)
    assert not (tmp_path / "out" / "masks").exists()
