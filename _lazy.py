"""Names a package exports, imported on first use (PEP 562 module ``__getattr__``).

The packages' ``__init__`` files use it so that ``import scalpscan`` (and the subpackages)
stays cheap and imports no torch until a name that needs it is asked for::

    _EXPORTS = {"Predictor": "scalpscan.inference.predictor"}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for names defined in other modules.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value  # later lookups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
