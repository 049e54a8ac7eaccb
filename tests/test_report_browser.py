"""Report pages as a browser lays them out: headless Chromium renders a patient page and the index.

Set UPDATE_SCREENSHOTS=1 to also write the README's screenshots (docs/report_patient.png,
docs/report_index.png) from the same pages; that is a deliberate act, never automatic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from scalpscan.inference.intake import Intake
from scalpscan.inference.report import patient_filename, read_results, write_reports

CHROMIUM = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else None
if CHROMIUM is None and shutil.which("chromium"):
    CHROMIUM = Path(shutil.which("chromium"))  # type: ignore[arg-type]
DOCS = Path(__file__).resolve().parents[1] / "docs"
HEADER_RGB = (31, 59, 87)  # header.top background in report.css: proves the inline style applied

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not found at /usr/bin/chromium (`make browser` installs it)"),
]


def _chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def screenshot(page: Path, out: Path, width: int, height: int) -> np.ndarray:
    result = _chromium(f"--screenshot={out}", f"--window-size={width},{height}", page.as_uri())
    assert out.exists(), f"chromium wrote no screenshot (rc={result.returncode}): {result.stderr[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def dom_ids(page: Path) -> set[str]:
    result = _chromium("--dump-dom", page.as_uri())
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]

    class Ids(HTMLParser):
        ids: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.ids |= {v for k, v in attrs if k == "id" and v}

    parser = Ids()
    parser.ids = set()
    parser.feed(result.stdout)
    return parser.ids


def content_height(pixels: np.ndarray) -> int:
    """Rows down to the last one that differs from the page background (bottom-left colour)."""
    background = pixels[-1, 0].astype(int)
    differs = np.abs(pixels.astype(int) - background).sum(axis=2).max(axis=1) > 24
    rows = np.nonzero(differs)[0]
    return int(rows[-1]) + 1 if rows.size else 0


# --------------------------------------------------------------------------- sample pages


def _head_photo(path: Path, *, view: str, loss: dict[str, tuple[float, float, float, float]], seed: int,
                size: int = 360) -> None:
    """A synthetic scalp photo: a head with hair strands, thinner inside the ``loss`` ellipses."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (214, 222, 230))
    draw = ImageDraw.Draw(image)
    head = (40, 30, size - 40, size - 10) if view == "top" else (60, 20, size - 60, size + 80)
    draw.ellipse(head, fill=(226, 180, 150))
    strands = Image.new("L", (size, size), 0)
    sd = ImageDraw.Draw(strands)
    cx, cy = (head[0] + head[2]) / 2, (head[1] + head[3]) / 2
    rx, ry = (head[2] - head[0]) / 2, (head[3] - head[1]) / 2
    for _ in range(9000):
        x, y = rng.uniform(head[0], head[2]), rng.uniform(head[1], head[3])
        if ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 > 0.97:
            continue
        if view == "front" and y < head[1] + 0.22 * (head[3] - head[1]):
            continue  # forehead
        keep = 1.0
        for x0, y0, x1, y1 in loss.values():
            ex, ey = (x0 + x1) / 2, (y0 + y1) / 2
            d = ((x - ex) / ((x1 - x0) / 2)) ** 2 + ((y - ey) / ((y1 - y0) / 2)) ** 2
            keep = min(keep, 0.12 + 0.88 * min(1.0, d ** 2))
        if rng.random() > keep:
            continue
        angle = rng.normal(np.arctan2(y - cy, x - cx), 0.35)
        length = rng.uniform(5, 11)
        sd.line((x, y, x + length * np.cos(angle), y + length * np.sin(angle)), fill=int(rng.uniform(150, 255)), width=1)
    hair = Image.new("RGB", (size, size), (52, 36, 28))
    image.paste(hair, (0, 0), strands.filter(ImageFilter.GaussianBlur(0.4)))
    image.save(path, "JPEG", quality=88)


def _sample(base: Path) -> tuple[list[dict[str, Any]], dict[str, Intake]]:
    photos = base / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    model = {"id": "efficientnet_lite0-demo-2026.11", "rules_version": "1.0.0"}
    crown, hairline, temple_l = (130, 110, 250, 220), (95, 50, 265, 125), (70, 70, 130, 150)
    _head_photo(photos / "P-1042_top.jpg", view="top", loss={"crown": crown}, seed=1)
    _head_photo(photos / "P-1042_front.jpg", view="front", loss={"hairline": hairline, "t": temple_l}, seed=2)
    _head_photo(photos / "P-1042_back.jpg", view="back", loss={}, seed=3)

    def zones(**z: tuple[list[float], float | None]) -> dict[str, Any]:
        return {k: {"visible": True, "box": box, "loss_fraction": lf} for k, (box, lf) in z.items()}

    rows = [
        {"image": "photos/P-1042_top.jpg", "subject": "P-1042", "status": "ok", "error": None, "view": "top",
         "conditions": {"thinning": 0.93, "alopecia_patch": 0.04, "transplant_scar": 0.02}, "findings": ["thinning"],
         "stage": 4, "stage_probabilities": [0.0, 0.02, 0.18, 0.52, 0.23, 0.05, 0.0], "width": 360, "height": 360,
         "zones": zones(crown=([125, 105, 255, 225], 0.58), part=([170, 40, 195, 200], 0.12)), "model": model},
        {"image": "photos/P-1042_front.jpg", "subject": "P-1042", "status": "ok", "error": None, "view": "front",
         "conditions": {"thinning": 0.81, "alopecia_patch": 0.03, "transplant_scar": 0.01}, "findings": ["thinning"],
         "stage": 4, "width": 360, "height": 360, "model": model,
         "zones": zones(hairline=([95, 50, 265, 125], 0.41), temple_left=([65, 70, 135, 150], 0.33),
                        temple_right=([225, 70, 295, 150], 0.09))},
        {"image": "photos/P-1042_back.jpg", "subject": "P-1042", "status": "ok", "error": None, "view": "back",
         "conditions": {"thinning": 0.22, "alopecia_patch": 0.02, "transplant_scar": 0.04}, "findings": [],
         "stage": 3, "width": 360, "height": 360, "model": model, "zones": zones(donor=([90, 200, 270, 330], 0.03))},
        {"image": "photos/P-1042_left.jpg", "subject": "P-1042", "status": "recapture",
         "error": "too blurred to judge (sharpness 11, needs 40)", "view": "left", "model": model},
    ]
    others = [("P-1043", "caution", 0.88, 0.91, 2), ("P-1044", "ok", 0.08, 0.03, 1), ("P-1045", "scar", 0.12, 0.96, 2),
              ("P-1046", "ok", 0.91, 0.02, 6), ("<b>P-1047</b>", "ok", 0.7, 0.02, 3)]
    for i, (subject, _, thinning, scar, stage) in enumerate(others):
        name = f"photos/{subject.strip('<>b/')}_top.jpg"
        _head_photo(base / name, view="top", loss={"crown": crown} if thinning > 0.5 else {}, seed=10 + i, size=200)
        rows.append({"image": name, "subject": subject, "status": "ok", "error": None, "view": "top",
                     "conditions": {"thinning": thinning, "alopecia_patch": 0.03, "transplant_scar": scar},
                     "stage": stage, "width": 200, "height": 200, "model": model, "zones": {}})
    rows.append({"image": "photos/missing.jpg", "subject": "P-1048", "status": "error",
                 "error": "cannot decode the picture: truncated JPEG", "view": None})
    intake = {
        "P-1042": Intake(sex="male", notes="Thinning at the crown for three years, stable since last spring.", subject="P-1042"),
        "P-1043": Intake(sex="female", keloid_history=True, subject="P-1043"),
        "P-1045": Intake(sex="male", subject="P-1045"),
    }
    return rows, intake


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    rows, intake = _sample(base / "scored")
    path = base / "scored" / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    merged, summary = read_results([path])
    return write_reports(merged, base / "reports", intake=intake, notices=[summary.describe()]).parent


def test_patient_page_is_laid_out(pages: Path, tmp_path: Path) -> None:
    page = pages / patient_filename("P-1042")
    ids = dom_ids(page)
    assert {"summary", "decision", "photos", "findings", "recommendations", "focus-zones", "cautions",
            "reasons", "disclaimers", "provenance"} <= ids
    pixels = screenshot(page, tmp_path / "patient.png", 1280, 3000)
    assert pixels.std() > 20, "the page renders blank"
    assert np.abs(pixels[5, 5].astype(int) - HEADER_RGB).max() < 8, "styles did not apply (CSP hash?)"
    assert content_height(pixels) > 1400, "the page collapsed: less content than expected"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        _save_doc(pixels, DOCS / "report_patient.png")


def test_index_is_laid_out(pages: Path, tmp_path: Path) -> None:
    index = pages / "index.html"
    assert {"overview", "counts", "charts", "patients", "disclaimers"} <= dom_ids(index)
    pixels = screenshot(index, tmp_path / "index.png", 1280, 1600)
    assert pixels.std() > 20
    assert np.abs(pixels[5, 5].astype(int) - HEADER_RGB).max() < 8
    assert content_height(pixels) > 900
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        _save_doc(pixels, DOCS / "report_index.png")


def test_patient_page_on_a_phone(pages: Path, tmp_path: Path) -> None:
    pixels = screenshot(pages / patient_filename("P-1042"), tmp_path / "phone.png", 390, 1800)
    assert pixels.std() > 20
    # The header spans the phone's width: the layout adapts instead of overflowing.
    assert np.abs(pixels[5, -5].astype(int) - HEADER_RGB).max() < 8

def test_pdf_per_patient_prints_on_a4_and_letter(pages: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from scalpscan.inference.report import pdf

    monkeypatch.setenv(pdf.ENGINE_ENV, str(CHROMIUM))
    path = pdf.write_pdf(pages / patient_filename("P-1042"), tmp_path / "P-1042.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    boxes = {tuple(round(float(v)) for v in m) for m in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)}
    # 210 x 279 mm: the width of A4 and the height of Letter, so it prints unscaled on both.
    assert boxes == {(595, 791)}
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # the page flows onto more sheets, not shrunk
    # Through write_reports: one PDF per patient, named like its page, listed in patients.jsonl.
    rows, intake = _sample(tmp_path / "scored")
    index = write_reports(rows, tmp_path / "reports", intake=intake, results_dir=tmp_path / "scored", pdf=True)
    records = [json.loads(line) for line in (index.parent / "patients.jsonl").read_text().splitlines()]
    assert records and all((index.parent / r["pdf"]).read_bytes().startswith(b"%PDF-") for r in records)
    assert all(r["pdf"] == Path(r["page"]).with_suffix(".pdf").name for r in records)


def _save_doc(pixels: np.ndarray, path: Path) -> None:
    """Crop to the content, shrink, and keep under 400 KB (README screenshots)."""
    image = Image.fromarray(pixels[: content_height(pixels) + 24])
    path.parent.mkdir(parents=True, exist_ok=True)
    for scale in (1.0, 0.85, 0.7, 0.6):
        small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        tmp = path.with_suffix(".tmp.png")
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(tmp, optimize=True)
        if tmp.stat().st_size < 400_000:
            os.replace(tmp, path)
            return
    os.replace(tmp, path)
