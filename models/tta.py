"""Test-time augmentation: run a model on turned and mirrored copies of a batch and average.

One implementation for training's evaluation (torch tensors, maybe on the GPU) and for the
Predictor (NumPy arrays from ONNX Runtime, or torch tensors from the scorer's loader): the
functions below work on either and return what they were given. The passes of each mode
come from the table `scalpscan.data.vocab.TTA_MODES`: ``(quarter turns, mirrored first)``.

A pass turns (after mirroring) the batch, runs the model, and maps its outputs back to the
photo as given (`restore`): the masks are turned back, then a mirror is undone by flipping
the masks and swapping the left/right views and temple zones. A turn leaves the view,
stage and condition logits as they are (a turned left profile is still the left view).

    >>> outputs = tta_outputs(model_fn, images, "flip")   # mean over the photo and its mirror
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from scalpscan.data.vocab import TTA_MODES, VIEW_MIRROR, ZONE_MIRROR

__all__ = ["MASK_KEYS", "augment", "flip_outputs", "restore", "tta_outputs"]

#: Output keys that are masks ``[B, C, H, W]`` (turned and flipped with the photo).
MASK_KEYS: tuple[str, ...] = ("zones", "hairloss")

Array = TypeVar("Array")  # a NumPy array or a torch tensor; each function returns the same kind


def _is_tensor(value: Any) -> bool:
    # Tensors have rot90 and flip as methods; NumPy arrays do not (no torch import needed).
    return hasattr(value, "rot90") and hasattr(value, "flip")


def _mirror(value: Array) -> Array:
    return value.flip(-1) if _is_tensor(value) else np.asarray(value)[..., ::-1]


def _turn(value: Array, turns: int) -> Array:
    if not turns % 4:
        return value
    if _is_tensor(value):
        return value.rot90(turns, dims=(-2, -1))
    return np.rot90(value, turns, axes=(-2, -1))


def augment(images: Array, *, turns: int, mirror: bool) -> Array:
    """The batch ``[B, 3, S, S]`` mirrored (first) and turned ``turns`` quarter turns
    counter-clockwise. A NumPy batch comes back contiguous (runtimes refuse negative strides)."""
    moved = _turn(_mirror(images) if mirror else images, turns)
    if moved is images or _is_tensor(moved):
        return moved
    return np.ascontiguousarray(moved)


def flip_outputs(outputs: Mapping[str, Array]) -> dict[str, Array]:
    """The outputs of a mirrored batch mapped back to the unmirrored photo: masks flipped
    back, left/right views and temple zones swapped."""
    mapped = dict(outputs)
    mapped["view"] = outputs["view"][:, list(VIEW_MIRROR)]
    mapped["zones"] = _mirror(outputs["zones"][:, list(ZONE_MIRROR)])
    mapped["hairloss"] = _mirror(outputs["hairloss"])
    return mapped


def restore(outputs: Mapping[str, Array], *, turns: int, mirror: bool) -> dict[str, Array]:
    """The outputs of an `augment`-ed batch mapped back to the photo as given."""
    mapped = {key: _turn(value, -turns) if key in MASK_KEYS else value
              for key, value in outputs.items()}
    return flip_outputs(mapped) if mirror else mapped


def tta_outputs(run: Callable[[Array], Mapping[str, Array]], images: Array,
                mode: str) -> dict[str, Array]:
    """Mean outputs of ``run`` over the passes of ``mode``, each mapped back to the photo.

    Args:
        run: the model: a batch ``[B, 3, S, S]`` to a dict of raw outputs (arrays or tensors).
        images: the batch as given.
        mode: a key of `scalpscan.data.vocab.TTA_MODES` (``flip``, ``rot``, ``d4``).

    Raises:
        ValueError: for an unknown mode (the known ones are listed).
    """
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation mode {mode!r}; known: {', '.join(TTA_MODES)}")
    passes = TTA_MODES[mode]
    sums: dict[str, Any] = {}
    for turns, mirror in passes:
        outputs = restore(run(augment(images, turns=turns, mirror=mirror)), turns=turns, mirror=mirror)
        for key, value in outputs.items():
            # float32 sums for NumPy outputs (ONNX may give float16); tensors keep their dtype.
            value = value if _is_tensor(value) else np.asarray(value, dtype=np.float32)
            sums[key] = sums[key] + value if key in sums else value
    return {key: value / len(passes) for key, value in sums.items()}
