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

from scalpscan import inference as _inference
from scalpscan._lazy import lazy_exports

__version__ = "0.2.0"

# The script API is scalpscan.inference's (importing that package loads no torch; each name
# is resolved through it on first use).
_EXPORTS: dict[str, str] = {name: "scalpscan.inference" for name in _inference.__all__}

__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
