"""`scalpscan train` under torchrun: two CPU processes (gloo) train one model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import make_photos

from scalpscan.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two processes start torch and train: the longest of the training tests
def test_two_process_torchrun_trains_one_model(tmp_path: Path) -> None:
    train = make_photos(tmp_path / "train", subjects=4, seed=0)
    val = make_photos(tmp_path / "val", subjects=2, seed=1)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "scalpscan.scripts.cli", "train", "--data", str(train), "--val", str(val),
         "--out", str(run), "--backbone", "tiny", "--image-size", "64", "--epochs", "2",
         "--batch-size", "3", "--no-progress", "--set", "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Rank 0 alone talks and writes: one start line, one line per epoch, one model.
    assert result.stdout.count("2 process(es)") == 1
    assert result.stdout.count("epoch 1/2:") == 1
    with (run / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Each epoch saw every training photo once across the two processes (12 photos).
    assert [r["train_photos"] for r in rows] == ["12", "12"]
    assert sorted(p.name for p in run.glob("*.safetensors")) == [
        "last.safetensors", "model.safetensors", "resume.safetensors"]
    model, meta = load_checkpoint(run)
    assert meta["config"]["epochs"] == 2
    # The weights are a trained, loadable single (non-DDP) model: no "module." prefixes.
    state = load_file(str(run / "model.safetensors"))
    assert not any(k.startswith("module.") for k in state)
    out = model(torch.zeros(1, 3, 64, 64))
    assert out["stage"].shape == (1, 6)
    assert json.loads((run / "last.json").read_text())["epoch"] == 2
