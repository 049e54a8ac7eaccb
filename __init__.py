"""scalpscan: scalp-photo analysis and scalp micropigmentation (SMP) candidacy assessment.

What a script may use::

    from scalpscan import Predictor, Intake, assess

    predictor = Predictor.load()                  # the model that ships in the package
    prediction = predictor.predict("P001_top.jpg")
    assessment = assess([prediction], Intake(sex="male"))

The subpackages (``scalpscan.data``, ``scalpscan.models``, ``scalpscan.training``,
``scalpscan.inference``, ``scalpscan.scripts``) hold the rest. Names are loaded on first
use, so ``import scalpscan`` is cheap and imports no torch.
"""

from __future__ import annotations

from scalpscan._lazy import lazy_exports

__version__ = "0.2.0"

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

__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
