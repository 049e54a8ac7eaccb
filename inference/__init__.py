"""Inference: Predictor, batch scoring, quality gate, candidacy rules, reports, ONNX export.

What a script may use::

    from scalpscan.inference import Predictor, Intake, assess

Names are loaded on first use, so ``import inference.rules`` (the pure rules engine)
never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "Predictor": "scalpscan.inference.predictor",
    "Prediction": "scalpscan.inference.predictor",
    "Intake": "scalpscan.inference.intake",
    "read_intake": "scalpscan.inference.intake",
    "assess": "scalpscan.inference.rules",
    "Assessment": "scalpscan.inference.rules",
    "load_rules": "scalpscan.inference.rules",
    "write_reports": "scalpscan.inference.report.render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
