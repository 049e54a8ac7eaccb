"""Inference: Predictor, batch scoring, quality gate, candidacy rules, reports, ONNX export.

What a script may use::

    from scalpscan.inference import Predictor, Intake, assess

Names are loaded on first use, so ``import scalpscan.inference.rules`` (the pure rules
engine) never imports torch.
"""

from __future__ import annotations

from scalpscan._lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
