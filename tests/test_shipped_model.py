"""The model that ships in the package: it loads, matches its card, and scores real photos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scalpscan.inference.predictor import Predictor
from scalpscan.models.shipped import DEFAULT_MODEL, file_sha256, list_shipped, shipped_model_path

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "docs" / "model-card.md"
# A few real photos of persons the model never trained on (the data set's valid split),
# where the repository sits beside the shared data, as in CI.
VALID = ROOT.parent / "shared" / "datasets" / "hairloss-norwood" / "valid"


def test_the_default_model_ships_small_and_matches_its_card() -> None:
    folder = shipped_model_path()
    assert folder.name == DEFAULT_MODEL
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 10 * 1024 * 1024
    meta = json.loads((folder / "model.json").read_text())
    digest = file_sha256(weights)
    assert meta["shipped"]["sha256"] == digest
    assert digest in CARD.read_text(), "docs/model-card.md must state the shipped weights' SHA-256"
    assert [m.name for m in list_shipped() if m.default] == [DEFAULT_MODEL]


def test_the_shipped_model_says_what_it_learned_from() -> None:
    meta = json.loads((shipped_model_path() / "model.json").read_text())
    heads = meta["heads"]
    assert heads["stage"]["trained"].get("real", 0) > 500 and heads["view"]["trained"].get("real", 0) > 500
    assert heads["zones"]["trained"].get("rendered", 0) > 0 and "real" not in heads["zones"]["trained"]
    predictor = Predictor.load()
    # Stage and view were learned from real labels; zones and the loss map from renders only.
    assert "stage" not in predictor.not_assessed and "stage" not in predictor.unvalidated
    assert {"zones", "hairloss"} <= set(predictor.unvalidated)
    assert set(meta["thresholds"]) == {c for c in ("thinning", "alopecia_patch", "transplant_scar")
                                        if c not in predictor.not_assessed}


@pytest.mark.skipif(not VALID.is_dir(), reason=f"the real photos are not beside the repository ({VALID})")
def test_the_shipped_model_scores_real_photos_of_unseen_persons() -> None:
    # One front and one top photo of each of three persons of different stages.
    labels = (VALID / "_classes.csv").read_text().splitlines()[1:]
    header = (VALID / "_classes.csv").read_text().splitlines()[0].split(",")
    chosen: dict[tuple[str, str], Path] = {}
    for line in labels:
        name, *onehot = [c.strip() for c in line.split(",")]
        level = header[1 + [int(v) for v in onehot].index(1)].strip()
        view = "front" if "Front" in name else "top" if "Top" in name else None
        if view and level in ("LEVEL_2", "LEVEL_4", "LEVEL_6"):
            chosen.setdefault((level, view), VALID / name)
    assert len(chosen) == 6
    predictor = Predictor.load()
    rows = list(predictor.score([str(p) for p in chosen.values()], batch_size=6))
    assert [r["status"] for r in rows] == ["ok"] * 6
    stages = {key[0]: [] for key in chosen}
    for (level, _), row in zip(chosen, rows):
        assert 1 <= row["stage"] <= 7 and row["view"] in ("front", "top", "back", "left", "right")
        stages[level].append(row["stage"])
    # The stage rises with the Norwood level (the mean of each person's two photos).
    means = [sum(v) / len(v) for _, v in sorted(stages.items())]
    assert means[0] < means[2], stages


def test_scalpscan_models_lists_and_checks_the_shipped_model() -> None:
    out = subprocess.run([sys.executable, "-m", "scalpscan", "models", "--check"], capture_output=True,
                         text=True, check=True).stdout
    assert re.search(rf"^{re.escape(DEFAULT_MODEL)} \(default\):", out, re.M)
    assert "checksum ok" in out and "docs/model-card.md" in out
