"""Training learns: a short fit on a small, learnable synthetic set beats chance on every head.

Every other inference and report test uses an untrained model; this one shows that the
path from labels to weights works for each head, by comparing a trained model against an
untrained one of the same architecture on the same photos.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalpscan.data.synth.dataset import SynthOptions, synthesize
from scalpscan.models import create_model, inference_meta, save_checkpoint
from scalpscan.training import evaluate_run, fit, load_config

pytestmark = pytest.mark.slow

SIDE = 64


def _headline(metrics: dict) -> dict[str, float]:
    return {
        "conditions_auroc": metrics["conditions"]["macro_auroc"] or 0.5,
        "stage_qwk": metrics["stage"]["qwk"] or 0.0,
        "view_accuracy": metrics["view"]["accuracy"],
        "zones_iou": metrics["zones"]["mean_iou"] or 0.0,
        "hairloss_iou": metrics["hairloss_map"]["mean_iou"] or 0.0,
    }


def test_a_short_fit_beats_an_untrained_model_on_every_head(tmp_path: Path) -> None:
    manifest = synthesize(tmp_path / "synth", 100, 3, options=SynthOptions(size=SIDE, condition_rate=3.0),
                          workers=1, contact_sheet=0)
    config = load_config(overrides=[
        f"data={manifest}", f"val={manifest}", f"out={tmp_path / 'run'}", "backbone=tiny",
        f"image_size={SIDE}", "epochs=30", "batch_size=20", "lr=0.01", "warmup_epochs=1",
        "patience=0", "progress=false", "threads=1", "monitor=val_loss"])
    fit(config)
    trained = _headline(evaluate_run(tmp_path / "run", manifest, ci_draws=0)["metrics"])

    torch.manual_seed(0)
    untrained_model = create_model("scalpnet", backbone="tiny", image_size=SIDE)
    save_checkpoint(tmp_path / "untrained", untrained_model, inference_meta(untrained_model, input_size=SIDE))
    chance = _headline(evaluate_run(tmp_path / "untrained", manifest, ci_draws=0)["metrics"])

    assert trained["view_accuracy"] > max(chance["view_accuracy"], 0.2) + 0.2, (trained, chance)
    assert trained["stage_qwk"] > chance["stage_qwk"] + 0.2, (trained, chance)
    assert trained["conditions_auroc"] > chance["conditions_auroc"] + 0.1, (trained, chance)
    assert trained["zones_iou"] > chance["zones_iou"] + 0.05, (trained, chance)
    assert trained["hairloss_iou"] > chance["hairloss_iou"] + 0.02, (trained, chance)
