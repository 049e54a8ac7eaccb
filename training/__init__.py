"""Training: config and recipes, losses, metrics, the training run, evaluation,
cross-validation, calibration and plots.

What scripts use::

    from scalpscan.training import TrainConfig, load_config, fit, evaluate_run
    from scalpscan.training.metrics import compute_metrics
    from scalpscan.training.tables import format_metrics

One job per module:

- ``config``: the `TrainConfig`, YAML files, recipes (``recipes/NAME.yaml``), overrides;
- ``engine``: forward passes, one training epoch, one evaluation pass;
- ``optimizer``: AdamW and the warm-up + cosine schedule;
- ``datasets``: a run's rows, datasets and seeded loaders;
- ``state``: RNG state, the resume file, the run-folder claim;
- ``distributed``: DDP setup and teardown under torchrun;
- ``trainer``: `fit`, the whole run with its CSV log;
- ``evaluation``: `evaluate_run`, `compare_runs`, `compare_cross_validations`, recalibration;
- ``crossval``: K-fold cross-validation and the fold ensemble;
- ``losses``, ``metrics``, ``calibrate``, ``plots``.

Submodules import torch; this package's ``__init__`` imports them lazily so that
``training.config`` can be used without loading torch.
"""

from __future__ import annotations

from scalpscan._lazy import lazy_exports

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "ConfigError": "scalpscan.training.config",
    "TrainConfig": "scalpscan.training.config",
    "load_config": "scalpscan.training.config",
    "list_recipes": "scalpscan.training.config",
    "TrainingError": "scalpscan.training.errors",
    "fit": "scalpscan.training.trainer",
    "cross_validate": "scalpscan.training.crossval",
    "evaluate_run": "scalpscan.training.evaluation",
    "compare_runs": "scalpscan.training.evaluation",
    "compare_cross_validations": "scalpscan.training.evaluation",
    "recalibrate_run": "scalpscan.training.evaluation",
    "train_one_epoch": "scalpscan.training.engine",
    "evaluate": "scalpscan.training.engine",
    "MultiTaskLoss": "scalpscan.training.losses",
    "compute_metrics": "scalpscan.training.metrics",
    "fit_calibration": "scalpscan.training.calibrate",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
