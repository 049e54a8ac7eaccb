"""One validation mechanism for the project's YAML files (training config, recipes, rules).

Both are described by pydantic models; this module turns pydantic's errors into one
message per bad key, naming the file, the dotted key, the value and what is expected, so
that every file a user edits fails the same way.

Example:
    >>> from pydantic import BaseModel
    >>> class Cfg(BaseModel, extra="forbid"):
    ...     lr: float
    >>> validate(Cfg, {"lr": "fast"}, source="my.yaml", error=ValueError)
    Traceback (most recent call last):
    ...
    ValueError: my.yaml: lr: 'fast' is not valid: Input should be a valid number, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["format_errors", "validate"]

M = TypeVar("M", bound=BaseModel)


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top>"


def format_errors(exc: ValidationError, *, source: str) -> str:
    """One line per problem: ``SOURCE: KEY: VALUE is not valid: WHY``."""
    lines = []
    for err in exc.errors(include_url=False):
        key = _key(tuple(err.get("loc", ())))
        kind = err.get("type", "")
        msg = str(err.get("msg", "invalid"))
        if kind == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}")
        elif kind == "missing":
            lines.append(f"{source}: {key}: required key is missing")
        else:
            lines.append(f"{source}: {key}: {err.get('input')!r} is not valid: {msg}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, *, source: str, error: type[Exception] = ValueError) -> M:
    """``model`` built from ``data``; raises ``error`` with `format_errors`' message if it does not fit."""
    if not isinstance(data, Mapping):
        raise error(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise error(format_errors(exc, source=source)) from None
