"""What a model learned decides what it reports: provenance in model.json, not-assessed outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS
from scalpscan.inference.predictor import Predictor
from scalpscan.models import create_model, inference_meta, save_checkpoint
from scalpscan.models.provenance import OUTPUTS, assessed_outputs, head_provenance, label_counts
from scalpscan.models.shipped import resolve_model, shipped_model_path

SIDE = 64


def _row(source: str, *, stage: int | None = None, patch: int | None = None, zones: bool = False) -> ManifestRow:
    conditions = dict.fromkeys(CONDITIONS)
    conditions["alopecia_patch"] = patch
    return ManifestRow(image=Path("x.jpg"), subject="s", view="top", conditions=conditions, stage=stage,
                       zone_mask=Path("z.png") if zones else None, extra={"source": source})


def test_labels_are_counted_per_output_and_source() -> None:
    rows = [_row("roboflow", stage=3), _row("composite", stage=4, patch=1), _row("synth", stage=2, patch=0, zones=True)]
    counts = label_counts(rows)
    assert counts["stage"] == {"real": 2, "rendered": 1}  # a painted photo's stage is its own, real
    assert counts["alopecia_patch"] == {"composited": 1, "rendered": 1}
    assert counts["zones"] == {"rendered": 1}
    assert counts["thinning"] == {} and counts["hairloss"] == {}


def test_an_unpainted_photo_of_a_painted_set_is_no_real_patch_label() -> None:
    unpainted = ManifestRow(image=Path("x.jpg"), subject="s", view="top",
                            conditions={**dict.fromkeys(CONDITIONS), "alopecia_patch": 0}, stage=3,
                            extra={"source": "roboflow", "composited": ""})
    counts = label_counts([unpainted])
    assert counts["alopecia_patch"] == {"composited": 1} and counts["stage"] == {"real": 1}


def test_a_head_weighted_zero_learned_nothing_whatever_its_labels() -> None:
    rows = [_row("synth", stage=2, patch=1, zones=True)]
    heads = head_provenance(rows, rows, {"conditions": 0.0, "stage": 1.0, "view": 1.0, "zones": 1.0, "hairloss": 1.0})
    assert heads["alopecia_patch"]["trained"] == {} and heads["alopecia_patch"]["validated"] == {"rendered": 1}
    assert heads["zones"]["trained"] == {"rendered": 1}
    not_assessed, unvalidated = assessed_outputs({"heads": heads})
    assert "alopecia_patch" in not_assessed and "thinning" in not_assessed and "hairloss" in not_assessed
    assert "zones" in unvalidated and "stage" in unvalidated  # rendered labels only


def test_real_labels_validate_and_uncalibrated_conditions_are_not_assessed() -> None:
    heads = {o: {"trained": {}, "validated": {}} for o in OUTPUTS}
    heads["stage"] = {"trained": {"real": 10}, "validated": {"real": 3}}
    heads["thinning"] = {"trained": {"rendered": 10}, "validated": {}}  # no threshold can be fitted
    heads["alopecia_patch"] = {"trained": {"composited": 4, "rendered": 9}, "validated": {"composited": 2}}
    not_assessed, unvalidated = assessed_outputs({"heads": heads})
    assert "stage" not in not_assessed and "stage" not in unvalidated
    assert "thinning" in not_assessed
    assert "alopecia_patch" in unvalidated and "alopecia_patch" not in not_assessed


def test_a_model_json_without_heads_is_judged_by_its_loss_weights() -> None:
    weights = {"conditions": 0.0, "stage": 1.0, "view": 0.3, "zones": 0.0, "loss": 0.0}  # the old key too
    not_assessed, unvalidated = assessed_outputs({"config": {"loss_weights": weights}})
    assert not_assessed == [*CONDITIONS, "zones", "hairloss"] and unvalidated == []
    assert assessed_outputs({}) == ([], [])


@pytest.fixture(scope="module")
def stage_only_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose record says only stage and view were trained (as the stage-only recipe)."""
    torch.manual_seed(0)
    model = create_model("scalpnet", backbone="tiny", image_size=SIDE)
    rows = [_row("roboflow", stage=3)]
    heads = head_provenance(rows, rows, {"conditions": 0.0, "stage": 1.0, "view": 1.0, "zones": 0.0, "hairloss": 0.0})
    heads["view"] = {"trained": {"real": 1}, "validated": {"real": 1}}
    folder = tmp_path_factory.mktemp("stage_only")
    save_checkpoint(folder, model, {**inference_meta(model, input_size=SIDE), "heads": heads})
    return folder


def test_rows_carry_null_and_not_assessed_for_what_was_never_learned(stage_only_run: Path) -> None:
    predictor = Predictor.load(stage_only_run)
    photo = np.random.default_rng(0).integers(40, 220, (160, 128, 3), dtype=np.uint8)
    row = predictor.predict(photo).to_row()
    assert row["status"] == "ok", row["error"]
    assert row["not_assessed"] == [*CONDITIONS, "zones", "hairloss"]
    assert all(value is None for value in row["conditions"].values())
    assert row["findings"] == [] and row["thresholds"] == {} and row["zones"] is None
    assert row["stage"] in range(1, 8) and row["view"] is not None
    # The photo-level assessment recommends nothing that rests on a condition never learned.
    recommendations = set(row["assessment"]["recommendations"])
    assert not recommendations & {"scar_camouflage", "patch_camouflage"}
    assert json.loads(json.dumps(row))["not_assessed"] == row["not_assessed"]


def test_a_bare_name_resolves_to_a_shipped_model_and_an_unknown_one_is_named(tmp_path: Path) -> None:
    assert resolve_model(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="no shipped model named 'no-such-model'"):
        shipped_model_path("no-such-model")
