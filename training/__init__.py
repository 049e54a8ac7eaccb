"""Training: config, losses, metrics, the train/evaluate loop, calibration and plots.

What scripts use::

    from scalpscan.training import TrainConfig, load_config, fit, evaluate_run
    from scalpscan.training.metrics import compute_metrics, format_metrics

Submodules import torch; this package's ``__init__`` imports them lazily so that
``training.config`` can be used without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "load_config",
    "fit",
    "evaluate_run",
    "train_one_epoch",
    "evaluate",
    "MultiTaskLoss",
    "compute_metrics",
    "fit_calibration",
]

_EXPORTS: dict[str, str] = {
    "ConfigError": "scalpscan.training.config",
    "TrainConfig": "scalpscan.training.config",
    "load_config": "scalpscan.training.config",
    "TrainingError": "scalpscan.training.loop",
    "fit": "scalpscan.training.loop",
    "evaluate_run": "scalpscan.training.loop",
    "train_one_epoch": "scalpscan.training.loop",
    "evaluate": "scalpscan.training.loop",
    "MultiTaskLoss": "scalpscan.training.losses",
    "compute_metrics": "scalpscan.training.metrics",
    "fit_calibration": "scalpscan.training.calibrate",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
