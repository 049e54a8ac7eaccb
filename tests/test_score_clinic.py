"""`scalpscan score` as a clinic runs it: patients never pooled by a guess, a photo is its file
however its path is spelled, every file accounted for, any phone format, plain messages."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data import decode
from scalpscan.inference.report.results import read_results
from scalpscan.inference.score import ScoreSummary
from scalpscan.scripts.commands import report as report_command
from scalpscan.scripts.commands import score as score_command


@pytest.fixture(autouse=True)
def _default_pixel_limit():
    yield
    decode.set_max_pixels(decode.DEFAULT_MAX_PIXELS)  # --max-pixels is process-wide


def _photo(path: Path, seed: int = 0, size: int = 128, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(40, 220, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt or "JPEG")
    return path


def _score(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    score_command.add_arguments(parser)
    return score_command.run(parser.parse_args([*argv, "--no-progress", "--workers", "0"]))


def _report(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    return report_command.run(parser.parse_args(list(argv)))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_phone_names_are_never_one_patient_and_unknown_patients_stay_apart(run_dir: Path, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    for i, name in enumerate(("IMG_4411.HEIC", "IMG_4412.HEIC", "20240115_103045.jpg", "20240115_103112.jpg")):
        _photo(photos / name, seed=i, fmt="HEIF" if name.endswith("HEIC") else "JPEG")
    _photo(photos / "P001" / "IMG_0001.jpg", seed=7)
    _photo(photos / "P001" / "IMG_0002.jpg", seed=8)
    out = tmp_path / "results.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out), "--report-dir", str(tmp_path / "r")) == 0
    text = capsys.readouterr().out
    assert "Patient unknown for 4 photo(s)" in text and "--subject" in text
    subjects = {Path(r["image"]).name: (r["subject"], r["subject_source"]) for r in _rows(out)}
    assert subjects["IMG_4411.HEIC"] == subjects["IMG_4412.HEIC"] == (None, "unknown")
    assert subjects["IMG_0001.jpg"] == subjects["IMG_0002.jpg"] == ("P001", "folder")
    records = [json.loads(line) for line in (tmp_path / "r" / "patients.jsonl").read_text().splitlines()]
    assert len(records) == 5  # P001 and four patients of their own
    assert sorted(len(r["photos"]) for r in records) == [1, 1, 1, 1, 2]
    index = (tmp_path / "r" / "index.html").read_text()
    assert index.count("patient unknown") == 4
    # A clinic's own naming: --subject.
    out2 = tmp_path / "named.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out2), "--subject", r"^(\d{8})_") == 0
    assert {r["subject"] for r in _rows(out2) if r["image"].startswith("photos/2024")} == {"20240115"}
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out2), "--subject", "(") == 2


def test_resume_and_report_work_however_the_path_is_spelled(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "clinic" / "photos"
    for i in range(3):
        _photo(photos / f"P00{i}_top.jpg", seed=i)
    out = tmp_path / "clinic" / "results.jsonl"
    monkeypatch.chdir(tmp_path)
    assert _score("clinic/photos", "--model", str(run_dir), "--out", "clinic/results.jsonl") == 0
    assert _score(str(photos.resolve()), "--model", str(run_dir), "--out", str(out.resolve())) == 0
    monkeypatch.chdir(photos)
    assert _score(".", "--model", str(run_dir), "--out", "../results.jsonl") == 0
    os.symlink(photos, tmp_path / "link")
    assert _score(str(tmp_path / "link"), "--model", str(run_dir), "--out", str(out)) == 0
    rows = _rows(out)
    assert len(rows) == 3  # one row per photo, not one per spelling
    assert all(r["image"].startswith("photos/") for r in rows)  # relative to the results file
    # report from yet another folder finds every photo.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert _report(str(out), "--out", "reports") == 0
    merged, _ = read_results([out])
    assert all(Path(r["image"]).is_file() for r in merged)
    for page in (elsewhere / "reports").glob("patient-*.html"):
        assert "file not found" not in page.read_text() and "data:image/" in page.read_text()
    # A moved results folder keeps working: its photo paths are relative to it.
    moved = tmp_path / "moved"
    (tmp_path / "clinic").rename(moved)
    merged, _ = read_results([moved / "results.jsonl"])
    assert all(Path(r["image"]).is_file() for r in merged)


def test_a_changed_file_is_scored_again_and_retry_errors_retries(run_dir: Path, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    good = _photo(photos / "P001_top.jpg")
    broken = photos / "P002_top.jpg"
    data = _photo(tmp_path / "full.jpg", seed=3).read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    out = tmp_path / "results.jsonl"
    args = [str(photos), "--model", str(run_dir), "--out", str(out)]
    assert _score(*args) == 1
    assert [r["status"] for r in _rows(out)] == ["ok", "error"]
    assert _score(*args) == 1 and len(_rows(out)) == 2  # unchanged: nothing scored again
    assert _score(*args, "--retry-errors") == 1
    assert "1 scored again" in capsys.readouterr().out
    assert [r["status"] for r in _rows(out)] == ["ok", "error", "error"]
    # The clinic copies the photo again: the new file is scored without being asked.
    broken.write_bytes(data)
    os.utime(broken, ns=(broken.stat().st_atime_ns, broken.stat().st_mtime_ns + 10**9))
    good.touch()
    os.utime(good, ns=(good.stat().st_atime_ns, good.stat().st_mtime_ns + 10**9))
    assert _score(*args) == 0
    assert [r["status"] for r in _rows(out)][-2:] == ["ok", "ok"]
    merged, _ = read_results([out])
    assert sorted((Path(r["image"]).name, r["status"]) for r in merged) == [("P001_top.jpg", "ok"), ("P002_top.jpg", "ok")]


def test_every_file_is_a_row_or_listed_as_skipped_and_every_format_is_read(run_dir: Path, tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    frames = [Image.fromarray(np.random.default_rng(s).integers(40, 220, (128, 128, 3), dtype=np.uint8)) for s in (1, 2)]
    photos.mkdir()
    frames[0].save(photos / "P001_anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(photos / "P002_stereo.mpo", format="MPO", save_all=True, append_images=frames[1:])
    _photo(photos / "P003_canon.hif", fmt="HEIF")
    _photo(photos / "P004_old.jfif")
    _photo(photos / "P005_noending", seed=5)  # a JPEG without a file name ending
    _photo(photos / "P006.JPE", seed=6)
    (photos / "notes.txt").write_text("call back on Monday")
    (photos / "P007_raw.dng").write_bytes(b"II*\x00 raw sensor data")
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    out = tmp_path / "results.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out)) == 0
    rows = {Path(r["image"]).name: r["status"] for r in _rows(out)}
    assert rows == dict.fromkeys(
        ["P001_anim.gif", "P002_stereo.mpo", "P003_canon.hif", "P004_old.jfif", "P005_noending", "P006.JPE"], "ok"
    )
    with (tmp_path / "results.skipped.csv").open(newline="") as handle:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(handle)}
    assert skipped == {"notes.txt": "not a photo", "P007_raw.dng": "unsupported format", ".DS_Store": "hidden"}
    summary = capsys.readouterr().out
    assert "Skipped 3 file(s)" in summary and "hidden 1, not a photo 1, unsupported format 1" in summary
    assert "P007_raw.dng: unsupported format, camera raw file (.dng)" in summary


def test_library_warnings_go_into_the_row_not_onto_stderr(run_dir: Path, tmp_path: Path, capfd) -> None:
    photos = tmp_path / "photos"
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(40, 220, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")
    photos.mkdir()
    (photos / "P001_exif.jpg").write_bytes(buffer.getvalue())
    out = tmp_path / "results.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out)) == 0
    (row,) = _rows(out)
    assert any("Corrupt EXIF data" in w for w in row["warnings"])
    assert "EXIF" not in capfd.readouterr().err
    # What C libraries print to the process's stderr is caught too.
    with decode.capture_warnings(fd=True) as caught:
        os.write(2, b"TIFFReadDirectory: Warning, Unknown field with tag 50341\n")
    assert caught == ["TIFFReadDirectory: Warning, Unknown field with tag 50341"]
    assert "50341" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("truncated", ["truncated", "copy the photo again"]),
        ("text", ["not a picture", "export it as JPEG"]),
        ("empty", ["empty", "copy the photo again"]),
        ("odd_tiff", ["TIFF picture in a compression", "save it again as JPEG"]),
    ],
)
def test_error_rows_say_what_is_wrong_and_what_to_do(run_dir: Path, tmp_path: Path, content: str, words: list[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    target = photos / ("P001_x.tif" if content == "odd_tiff" else "P001_x.jpg")
    if content == "truncated":
        data = _photo(tmp_path / "full.jpg", size=256).read_bytes()
        target.write_bytes(data[: len(data) // 3])
    elif content == "text":
        target.write_text("<html>a web page saved as .jpg</html>")
    elif content == "empty":
        target.write_bytes(b"")
    else:  # a TIFF whose compression (JPEG 2000, 34712) this Pillow cannot decode
        Image.new("RGB", (16, 16)).save(target, compression="tiff_lzw")
        data = bytearray(target.read_bytes())
        tag = data.find(b"\x03\x01\x03\x00")
        data[tag + 8 : tag + 10] = (34712).to_bytes(2, "little")
        target.write_bytes(bytes(data))
    out = tmp_path / "results.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out)) == 1
    (row,) = _rows(out)
    assert row["status"] == "error"
    for word in words:
        assert word in row["error"]
    assert "decoder error" not in row["error"]


def test_max_pixels_is_one_setting_and_the_bomb_guard_still_refuses(run_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photo(photos / "P001_big.png", size=1200, fmt="PNG")  # 1.44 MP
    out = tmp_path / "results.jsonl"
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out), "--max-pixels", "1000000") == 1
    (row,) = _rows(out)
    assert "too many pixels" in row["error"] and "--max-pixels" in row["error"]
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # Pillow's own limit follows the one setting
    assert _score(str(photos), "--model", str(run_dir), "--out", str(tmp_path / "r2.jsonl"), "--max-pixels", "2000000") == 0
    assert _score(str(photos), "--model", str(run_dir), "--out", str(out), "--max-pixels", "0") == 2
    decode.set_max_pixels(decode.DEFAULT_MAX_PIXELS)
    assert decode.DEFAULT_MAX_PIXELS >= 16320 * 12240  # a 200 MP phone photo passes by default
    # A crafted header claiming 60000 x 60000 pixels is refused before anything is decoded.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = photos / "P002_bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(decode.ImageDecodeError, match="decompression bomb"):
        decode.load_image(bomb)


def test_big_photos_are_reduced_while_decoding(tmp_path: Path) -> None:
    jpeg = _photo(tmp_path / "big.jpg", size=2048)
    assert decode.load_image(jpeg, max_side=256).shape == (256, 256, 3)
    heic = tmp_path / "big.heic"
    pixels = np.random.default_rng(1).integers(40, 220, (1024, 1536, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(heic, format="HEIF")
    assert decode.load_image(heic, max_side=300).shape == (200, 300, 3)
    # An embedded thumbnail at least max_side large is decoded instead of the full picture.
    import pillow_heif

    pillow_heif.from_pillow(Image.fromarray(pixels)).save(tmp_path / "thumb.heic", thumbnails=[400])
    with Image.open(tmp_path / "thumb.heic") as im:
        decode._reduce_while_decoding(im, 300)
        assert max(im.size) == 400
    assert decode.load_image(tmp_path / "thumb.heic", max_side=300).shape == (200, 300, 3)


def test_summary_says_what_the_model_does_not_assess(tmp_path: Path) -> None:
    summary = ScoreSummary(out=tmp_path / "r.jsonl", total=2, not_assessed={"alopecia_patch", "stage"})
    summary.counts["ok"] = 2
    text = summary.describe()
    assert "Not assessed by this model: alopecia patch, stage" in text
