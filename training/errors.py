"""The error every training step raises for a run that cannot start or continue."""

from __future__ import annotations

__all__ = ["TrainingError"]


class TrainingError(RuntimeError):
    """A training run that cannot start or continue; the message says why and what to do."""
