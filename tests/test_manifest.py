"""Manifest round trip and validation messages (every problem at once, with row and column)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from scalpscan.data.vocab import CONDITIONS, MANIFEST_COLUMNS

HEADER = ",".join(MANIFEST_COLUMNS)


def _photo(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 90, 60)).save(path)
    return path


def _mask(path: Path, size=(64, 48), value=1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8), "L").save(path)
    return path


def test_round_trip_keeps_labels_extras_and_relative_paths(tmp_path):
    photos = tmp_path / "photos"
    a, b = _photo(photos / "a.jpg"), _photo(photos / "b.png")
    zm = _mask(tmp_path / "masks" / "a_z.png", value=3)
    rows = [
        ManifestRow(a, "p1", "front", {"thinning": 1, "alopecia_patch": 0, "transplant_scar": None}, 3, zm, None,
                    {"sex": "male", "source": "test"}),
        ManifestRow(b, "p2", None, dict.fromkeys(CONDITIONS), None, None, None, {"skin_tone": "V"}),
    ]
    out = tmp_path / "out" / "manifest.csv"
    write_manifest(rows, out)
    text = out.read_text().splitlines()
    assert text[0] == HEADER + ",sex,source,skin_tone"
    assert text[1].startswith("../photos/a.jpg,p1,front,1,0,,3,../masks/a_z.png,,male,test,")
    back = read_manifest(out)
    assert back[0].image == a.resolve() and back[0].zone_mask == zm.resolve()
    assert back[0].conditions == rows[0].conditions and back[0].stage == 3 and back[0].view == "front"
    assert back[1].view is None and back[1].stage is None and back[1].extra["skin_tone"] == "V"
    assert list(back[0].extra) == ["sex", "source", "skin_tone"]
    assert not list(out.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_every_problem_is_reported_at_once_with_row_and_column(tmp_path):
    _photo(tmp_path / "ok.jpg")
    _photo(tmp_path / "b.jpg")
    _mask(tmp_path / "small.png", size=(32, 32))
    _photo(tmp_path / "rgbmask.png")
    lines = [
        HEADER,
        "ok.jpg,s1,front,1,0,,2,,",            # row 2 fine
        "missing.jpg,s2,top,,,,,,",             # row 3 missing image
        "b.jpg,s3,sideways,,,,,,",              # row 4 unknown view
        "ok.jpg,s4,back,,,,,,",                 # row 5 duplicate image
        "c.jpg,s5,left,2,yes,,,,",              # row 6 missing + two bad labels
    ]
    _photo(tmp_path / "c.jpg")
    _photo(tmp_path / "d.jpg")
    _photo(tmp_path / "e.jpg")
    lines += [
        "d.jpg,s6,right,,,,9,small.png,",       # row 7 stage 9 + mask size
        "e.jpg,,front,,,,,,rgbmask.png",        # row 8 empty subject + mask mode
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    problems = info.value.problems
    text = str(info.value)
    expected = [
        ("row 3", "'image'", "image not found"),
        ("row 4", "'view'", "unknown view 'sideways'"),
        ("row 5", "'image'", "already listed on row 2"),
        ("row 6", "'thinning'", "not 0, 1 or empty"),
        ("row 6", "'alopecia_patch'", "'yes'"),
        ("row 7", "'stage'", "outside 1-7"),
        ("row 7", "'zone_mask'", "32x32 but the image is 64x48"),
        ("row 8", "'subject'", "is empty"),
        ("row 8", "'loss_mask'", "mode RGB"),
    ]
    for row, column, what in expected:
        assert any(row in p and column in p and what in p and str(path) in p for p in problems), (row, column, what)
    assert len(problems) == len(expected)
    assert f"{len(expected)} problem(s)" in text


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image,subject,view,thinning\nx.jpg,s,front,1\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert any("missing required column 'stage'" in p for p in info.value.problems)
    assert any("'loss_mask'" in p for p in info.value.problems)


def test_check_files_false_skips_the_file_system(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "\nnowhere.jpg,s1,top,,,,,,\n")
    rows = read_manifest(path, check_files=False)
    assert rows[0].image == (tmp_path / "nowhere.jpg").resolve()


def test_missing_manifest_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
