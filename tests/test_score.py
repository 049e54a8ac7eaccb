"""`scalpscan score`: one row per photo, broken files as rows, resume after kill -9, shards."""

from __future__ import annotations

import argparse
import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.vocab import CONDITIONS
from scalpscan.inference.inputs import (
    InputError,
    discover_inputs,
    parse_shard,
    select_shard,
    shard_from_env,
    subject_from_name,
)
from scalpscan.inference.results import CSV_COLUMNS, ResultsFile
from scalpscan.scripts.commands import score as score_command

ROOT = Path(__file__).resolve().parents[1]
SIDE = 64


def _textured(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(40, 220, size=shape, dtype=np.uint8)


def _good_photos(folder: Path, count: int, *, size: int = 128) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"S{i % 5:02d}_{i:04d}.jpg"
        Image.fromarray(_textured(size, size, i)).save(path, quality=90)
        paths.append(path)
    return paths


def _awkward_folder(root: Path) -> dict[str, str]:
    """Good, awkward and broken photos; returns {file name: expected status}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    expected: dict[str, str] = {}
    Image.fromarray(_textured(160, 120, 1)).save(root / "P001_front.jpg")
    expected["P001_front.jpg"] = "ok"
    Image.fromarray(_textured(130, 300, 2, channels=1), "L").save(root / "P001_grey.PNG")
    expected["P001_grey.PNG"] = "ok"
    rgba = np.dstack([_textured(140, 140, 3), np.full((140, 140), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "nested" / "P002_alpha.png")
    expected["P002_alpha.png"] = "ok"
    Image.fromarray(_textured(120, 200, 4)).save(root / "nested" / "deeper" / "P002_side.webp")
    expected["P002_side.webp"] = "ok"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: stored landscape, shown portrait
    Image.fromarray(_textured(120, 180, 5)).save(root / "P003_rotated.jpg", exif=exif)
    expected["P003_rotated.jpg"] = "ok"
    Image.fromarray(_textured(150, 150, 6)).save(root / "P003_scan.tif")
    expected["P003_scan.tif"] = "ok"
    Image.fromarray(np.full((160, 160, 3), 4, np.uint8)).save(root / "P004_dark.png")
    expected["P004_dark.png"] = "recapture"
    Image.fromarray(_textured(40, 40, 7)).save(root / "P004_tiny.png")
    expected["P004_tiny.png"] = "recapture"
    (root / "P005_empty.jpg").write_bytes(b"")
    expected["P005_empty.jpg"] = "error"
    (root / "P005_text.jpg").write_text("this is not a photo")
    expected["P005_text.jpg"] = "error"
    buffer = io.BytesIO()
    Image.fromarray(_textured(200, 200, 8)).save(buffer, format="JPEG")
    (root / "P005_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    expected["P005_truncated.jpg"] = "error"
    (root / "notes.txt").write_text("ignored: not an image extension")
    Image.fromarray(_textured(128, 128, 9)).save(root / ".hidden" / "P009.jpg")  # hidden: skipped
    return expected


def _score(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    score_command.add_arguments(parser)
    return score_command.run(parser.parse_args([*argv, "--no-progress"]))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _images(path: Path) -> list[str]:
    """The rows' photos as absolute paths (rows store them relative to the results file's folder)."""
    return [str((path.parent / row["image"]).resolve()) for row in _rows(path)]


def test_folder_of_broken_awkward_and_good_photos(run_dir: Path, tmp_path: Path) -> None:
    expected = _awkward_folder(tmp_path / "photos")
    out = tmp_path / "results.jsonl"
    code = _score(str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out), "--batch-size", "3", "--workers", "1")
    assert code == 1  # some error / recapture rows
    rows = _rows(out)
    got = {Path(row["image"]).name: row for row in rows}
    assert len(rows) == len(got) == len(expected)
    assert {name: row["status"] for name, row in got.items()} == expected
    for name, row in got.items():
        # The per-patient folder directly under the input folder comes before the name's id.
        folder = Path(row["image"]).relative_to("photos").parts
        assert row["subject"] == (folder[0] if len(folder) > 1 else name.split("_")[0])
        assert row["subject_source"] == ("folder" if len(folder) > 1 else "pattern")
        if row["status"] == "ok":
            assert row["error"] is None and set(row["conditions"]) == set(CONDITIONS)
            for zone in row["zones"].values():
                if zone["visible"]:
                    x0, y0, x1, y1 = zone["box"]
                    assert 0 <= x0 <= x1 <= row["width"] and 0 <= y0 <= y1 <= row["height"]
        else:
            assert row["error"] and row["conditions"] is None
    assert (got["P003_rotated.jpg"]["width"], got["P003_rotated.jpg"]["height"]) == (120, 180)
    assert "too dark" in got["P004_dark.png"]["error"] and "too small" in got["P004_tiny.png"]["error"]
    assert "empty" in got["P005_empty.jpg"]["error"]
    # Every other file under the folder is listed as skipped, with its reason.
    with (tmp_path / "results.skipped.csv").open(newline="") as handle:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert skipped == {"notes.txt": "not a photo", "P009.jpg": "hidden"}


def test_all_good_exits_0_and_rerun_scores_nothing_twice(run_dir: Path, tmp_path: Path) -> None:
    _good_photos(tmp_path / "photos", 6)
    out = tmp_path / "out" / "results.jsonl"
    args = [str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out), "--workers", "0"]
    assert _score(*args) == 0
    first = out.read_text()
    assert _score(*args) == 0
    assert out.read_text() == first and len(_rows(out)) == 6


def test_resume_after_kill_9(run_dir: Path, tmp_path: Path) -> None:
    photos = _good_photos(tmp_path / "photos", 150, size=256)
    out = tmp_path / "results.jsonl"
    code = (
        "import argparse, sys; from scalpscan.scripts.commands import score as s; p = argparse.ArgumentParser(); "
        "s.add_arguments(p); sys.exit(s.run(p.parse_args(sys.argv[1:])))"
    )
    argv = [sys.executable, "-c", code, str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out)]
    argv += ["--batch-size", "1", "--workers", "1", "--no-progress"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = out.read_bytes().count(b"\n")
    assert 3 <= written < len(photos), "the run should have been killed part-way"
    # A torn last line, as a kill in the middle of a write leaves it.
    with out.open("a") as handle:
        handle.write('{"image": "' + str(photos[-1]) + '", "status": "o')
    assert _score(str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out), "--workers", "0") == 0
    images = _images(out)
    assert sorted(images) == sorted(str(p.resolve()) for p in photos)  # exactly one row per photo
    assert len(set(images)) == len(images)


def test_csv_format_and_resume(run_dir: Path, tmp_path: Path) -> None:
    photos = _good_photos(tmp_path / "photos", 4)
    out = tmp_path / "results.csv"
    args = [str(p) for p in photos[:2]] + ["--model", str(run_dir), "--out", str(out), "--workers", "0"]
    assert _score(*args) == 0
    args = [str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out), "--workers", "0"]
    assert _score(*args) == 0
    with out.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert tuple(records[0]) == CSV_COLUMNS
    assert sorted(r["image"] for r in records) == sorted(p.relative_to(tmp_path).as_posix() for p in photos)
    assert all(0.0 <= float(r["conditions.thinning"]) <= 1.0 for r in records)
    assert all(r["status"] == "ok" and r["model.id"] for r in records)
    assert ResultsFile(out, "csv").resume().rows.keys() == {str(p.resolve()) for p in photos}


def test_shards_cover_every_photo_once(run_dir: Path, tmp_path: Path) -> None:
    _good_photos(tmp_path / "photos" / "a", 7)
    _good_photos(tmp_path / "photos" / "b", 6)
    jobs = discover_inputs([tmp_path / "photos"]).jobs
    parts = [select_shard(jobs, k, 3) for k in range(3)]
    assert sorted(j.image for part in parts for j in part) == sorted(j.image for j in jobs)
    assert sum(len(p) for p in parts) == len(jobs) == 13
    # The split depends on paths relative to the folder, not where the folder is mounted.
    moved = tmp_path / "elsewhere"
    (tmp_path / "photos").rename(moved)
    again = [[Path(j.image).relative_to(moved) for j in select_shard(discover_inputs([moved]).jobs, k, 3)] for k in range(3)]
    assert again == [[Path(j.image).relative_to(tmp_path / "photos") for j in part] for part in parts]
    # Through the command: three shard runs together give one row per photo.
    seen: list[str] = []
    for k in range(3):
        out = tmp_path / f"part{k}.jsonl"
        assert _score(str(moved), "--model", str(run_dir), "--out", str(out), "--shard", f"{k}/3", "--workers", "0") == 0
        seen += _images(out)
    assert sorted(seen) == sorted(str(p.resolve()) for p in moved.rglob("*.jpg"))


def test_torchrun_ranks_split_the_folder_into_one_file_each(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = _good_photos(tmp_path / "photos", 6)
    seen: list[str] = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert _score(str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(tmp_path / "r.jsonl"), "--workers", "0") == 0
        seen += _images(tmp_path / f"r.shard{rank}of2.jsonl")
    assert not (tmp_path / "r.jsonl").exists()
    assert sorted(seen) == sorted(str(p.resolve()) for p in photos)


def test_shard_arguments_and_torchrun_env() -> None:
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from_env({}) is None


def test_bad_arguments_exit_2_before_any_photo_is_scored(run_dir: Path, tmp_path: Path) -> None:
    _good_photos(tmp_path / "photos", 2)
    out = tmp_path / "results.jsonl"
    bad_intake = tmp_path / "intake.csv"
    bad_intake.write_text("subject,sex,keloid_history\nP1,martian,yes\n")
    common = ["--model", str(run_dir), "--out", str(out)]
    assert _score(str(tmp_path / "photos"), *common, "--intake", str(bad_intake)) == 2
    assert _score(str(tmp_path / "photos"), *common, "--intake", str(tmp_path / "missing.csv")) == 2
    assert _score(str(tmp_path / "nope"), *common) == 2
    assert _score(str(tmp_path / "photos"), *common, "--shard", "3/3") == 2
    assert _score(str(tmp_path / "photos"), "--model", str(tmp_path / "no-run"), "--out", str(out)) == 2
    assert _score(str(tmp_path / "photos"), *common, "--batch-size", "0") == 2
    (tmp_path / "empty").mkdir()
    assert _score(str(tmp_path / "empty"), *common) == 2
    assert not out.exists()


def test_subject_pattern_never_reads_camera_names_or_dates() -> None:
    assert subject_from_name("photos/P001_top.jpg") == "P001"
    assert subject_from_name("2024-0012 crown.heic") == "2024-0012"
    assert subject_from_name("p012-top.jpg") == "p012"
    for camera in ("IMG_4411.HEIC", "IMG_4412.HEIC", "20240115_103045.jpg", "DSC01234.JPG", "P1010001.JPG",
                   "PXL_20240115_103045123.jpg", "MVIMG_20240101_120000.jpg", "Screenshot 2024-01-15 at 10.30.45.png",
                   "2024-01-15 10.30.45.jpg", "DJI0001.jpg", "scan.jpg", "anna-crown.heic"):
        assert subject_from_name(camera) is None, camera
    assert subject_from_name("anna-crown.heic", r"^([a-z]+)-") == "anna"
    assert subject_from_name("case7_top.jpg", r"case(?P<subject>\d+)") == "7"


def test_who_is_who_manifest_intake_folder_pattern_unknown(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for name in ("IMG_4411.HEIC", "IMG_4412.HEIC", "20240115_103045.jpg", "P002_top.jpg", "anna/IMG_0001.jpg",
                 "anna/deeper/IMG_0002.jpg", "visits/P777/IMG_0003.jpg", "Bob_front.jpg"):
        path = photos / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_textured(32, 32, 1)).save(path, format="JPEG")
    found = discover_inputs([photos], subjects={"p777", "BOB"})
    got = {Path(j.image).relative_to(photos.resolve()).as_posix(): (j.subject, j.subject_source) for j in found.jobs}
    assert got == {
        "IMG_4411.HEIC": (None, "unknown"),  # two phone photos are never one "Patient IMG"
        "IMG_4412.HEIC": (None, "unknown"),
        "20240115_103045.jpg": (None, "unknown"),  # nor is a day of photos one patient
        "P002_top.jpg": ("P002", "pattern"),
        "anna/IMG_0001.jpg": ("anna", "folder"),  # per-patient folder, no intake sheet needed
        "anna/deeper/IMG_0002.jpg": ("anna", "folder"),
        "visits/P777/IMG_0003.jpg": ("p777", "intake"),  # the sheet's spelling
        "Bob_front.jpg": ("BOB", "intake"),
    }
    assert [Path(j.image).name for j in found.unknown_patients()] == ["20240115_103045.jpg", "IMG_4411.HEIC", "IMG_4412.HEIC"]
    # Day and camera folders are never patients: the next folder down, or the file name, says who.
    for name in ("2024-11-25/P003/IMG_0004.jpg", "2024-11-25/P004_top.jpg", "DCIM/100APPLE/IMG_0005.HEIC",
                 "20241126/IMG_0006.jpg"):
        path = photos / "day" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_textured(32, 32, 1)).save(path, format="JPEG")
    found = discover_inputs([photos / "day"])
    got = {Path(j.image).relative_to((photos / "day").resolve()).as_posix(): (j.subject, j.subject_source)
           for j in found.jobs}
    assert got == {
        "2024-11-25/P003/IMG_0004.jpg": ("P003", "folder"),
        "2024-11-25/P004_top.jpg": ("P004", "pattern"),
        "DCIM/100APPLE/IMG_0005.HEIC": (None, "unknown"),
        "20241126/IMG_0006.jpg": (None, "unknown"),
    }
    with pytest.raises(InputError, match="--subject"):
        discover_inputs([photos], subject_pattern="P(")
    manifest = photos / "manifest.csv"
    manifest.write_text(
        "image,subject,view,thinning,alopecia_patch,transplant_scar,stage,zone_mask,loss_mask\n"
        "anna/IMG_0001.jpg,patient-9,top,,,,,,\n"
    )
    jobs = discover_inputs([manifest, photos / "anna" / "IMG_0001.jpg"]).jobs
    assert len(jobs) == 1 and (jobs[0].subject, jobs[0].subject_source) == ("patient-9", "manifest")


def test_torn_tail_is_cut_and_foreign_files_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text('{"image": "a.jpg", "status": "ok"}\n{"image": "b.jp')
    results = ResultsFile(out)
    assert {Path(k).name: v.status for k, v in results.resume().rows.items()} == {"a.jpg": "ok"}
    assert out.read_text() == '{"image": "a.jpg", "status": "ok"}\n'
    other = tmp_path / "other.jsonl"
    other.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="line 1"):
        ResultsFile(other).resume()
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="other columns"):
        ResultsFile(foreign, "csv").resume()


def test_predictor_score_streams_rows_in_order(run_dir: Path, tmp_path: Path) -> None:
    from scalpscan.inference import Predictor

    photos = _good_photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "bad.png").write_bytes(b"\x89PNG broken")
    paths = [*photos[:2], tmp_path / "photos" / "bad.png", *photos[2:]]
    rows = list(Predictor.load(run_dir).score(iter(paths), batch_size=2))
    assert [row["image"] for row in rows] == [str(p) for p in paths]
    assert [row["status"] for row in rows] == ["ok", "ok", "error", "ok", "ok", "ok"]


def test_worker_processes_give_the_same_rows(run_dir: Path, tmp_path: Path) -> None:
    # Decoding in child processes (DataLoader workers) must not change a single row.
    _good_photos(tmp_path / "photos", 5)
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.jsonl"
        assert _score(str(tmp_path / "photos"), "--model", str(run_dir), "--out", str(out), "--workers", workers) == 0
        outs.append(_rows(out))
    assert outs[0] == outs[1]
