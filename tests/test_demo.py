"""`scalpscan demo`, the whole path: render, train, evaluate, score with an intake sheet, reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_where_the_reports_are(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [sys.executable, "-m", "scalpscan.scripts.cli", "demo", "--out", str(out), "--n", "60", "--size", "96",
            "--backbone", "tiny", "--image-size", "64", "--epochs", "1", "--held-out", "12"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    index = out / "reports" / "index.html"
    assert f"open the reports: {index.resolve()}" in done.stdout
    assert index.is_file() and (out / "run" / "model.safetensors").is_file()
    assert any((out / "eval").iterdir())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and len({r["image"] for r in rows}) == 12
    subjects = {r["subject"] for r in rows}
    intake = (out / "intake.csv").read_text().splitlines()
    assert intake[0].startswith("subject,sex,keloid_history") and len(intake) - 1 == len(subjects)
    assert all(r["status"] in {"ok", "recapture"} for r in rows)
    pages = list((out / "reports").glob("*.html"))
    assert len(pages) >= len(subjects) + 1  # one per patient and the index
