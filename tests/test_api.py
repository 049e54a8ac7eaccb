"""The Python API exactly as docs/scripts.md shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalpscan.models import create_model, inference_meta, save_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    model = create_model("scalpnet", backbone="tiny", image_size=64)
    folder = tmp_path_factory.mktemp("runs") / "demo"
    meta = inference_meta(model, input_size=64)
    save_checkpoint(folder, model, meta)
    return folder


def test_design_example(run_dir: Path, tmp_path: Path) -> None:
    from scalpscan.inference import Intake, Predictor, assess

    paths = []
    for i in range(3):
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(30, 230, (140, 120, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))

    predictor = Predictor.load(run_dir)  # run folder or model.safetensors
    prediction = predictor.predict(paths[0])  # one photo (path, PIL image or array)
    rows = []
    for row in predictor.score(paths, batch_size=32):  # streaming rows
        rows.append(row)
    assessment = assess(
        [prediction, *rows[1:]],
        Intake(keloid_history=False, eczema_active=False, psoriasis_active=False, sex="male"),
    )

    assert isinstance(predictor.model, torch.nn.Module)
    assert predictor.input_size == 64
    assert Predictor.load(run_dir / "model.safetensors").input_size == 64
    assert prediction.to_row()["conditions"] == rows[0]["conditions"]
    assert [r["image"] for r in rows] == paths
    design_keys = {"image", "subject", "status", "error", "view", "conditions", "findings", "stage", "zones",
                   "assessment", "model"}
    assert design_keys <= set(rows[0])
    assert set(rows[0]["assessment"]) >= {"decision", "recommendations", "focus_zones", "cautions", "reasons"}
    assert set(rows[0]["model"]) == {"id", "rules_version"}
    assert assessment.decision in {"candidate", "caution", "not_indicated", "review"}
    assert assessment.to_dict()["decision"] == assessment.decision
    # A caution on the intake reaches the assessment.
    keloid = assess(rows, Intake(keloid_history=True, sex="male"))
    assert keloid.decision in {"caution", "review", "not_indicated"}


def test_public_names() -> None:
    from scalpscan import inference

    assert {"Predictor", "Prediction", "Intake", "assess"} <= set(inference.__all__)
