"""Importers: labelled photos as they really arrive, turned into manifest rows.

Each format is one module with one function returning an :class:`ImportResult`:
``imagefolder`` (a class per folder), ``roboflow`` (classification export with
``_classes.csv``) and ``coco`` (COCO JSON with polygons, rasterised into mask bits).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from scalpscan.data.importers._common import (
    ImportFormatError,
    ImportResult,
    LabelSet,
    parse_labels,
    parse_mapping,
    subject_from_name,
    view_from_name,
)

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "ImportResult",
    "LabelSet",
    "get_importer",
    "parse_labels",
    "parse_mapping",
    "subject_from_name",
    "view_from_name",
]

#: Format name -> (module, function). Modules load on first use.
FORMATS: dict[str, tuple[str, str]] = {
    "imagefolder": ("scalpscan.data.importers.imagefolder", "import_imagefolder"),
    "roboflow": ("scalpscan.data.importers.roboflow", "import_roboflow"),
    "coco": ("scalpscan.data.importers.coco", "import_coco"),
}


def get_importer(name: str) -> Callable[..., ImportResult]:
    """The import function of a format.

    Raises:
        ImportFormatError: for an unknown format, listing the known ones.
    """
    if name not in FORMATS:
        raise ImportFormatError(f"unknown import format {name!r}; expected one of {', '.join(FORMATS)}")
    module_name, function = FORMATS[name]
    module: Any = importlib.import_module(module_name)
    return getattr(module, function)
