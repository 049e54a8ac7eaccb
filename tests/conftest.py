"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalpscan.models import create_model, inference_meta, save_checkpoint

#: Input side of the tiny test model.
TINY_SIDE = 64


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding an untrained, seeded `tiny` model at 64 px (no training needed)."""
    torch.manual_seed(0)
    model = create_model("scalpnet", backbone="tiny", image_size=TINY_SIDE)
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint(folder, model, inference_meta(model, input_size=TINY_SIDE))
    return folder
