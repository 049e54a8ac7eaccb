"""Ordinal (Norwood stage) decoding: cumulative logits to probabilities, class and mean.

The stage head gives ``K - 1`` cumulative logits, ``sigmoid(logit_k) = P(class > k)``
(see `scalpscan.models.heads.OrdinalHead`). Training metrics, calibration, the Predictor
and the ONNX path all decode them here, so they cannot disagree. A calibrated logit is
``logit_k / temperature + offsets[k]`` (`scalpscan.training.calibrate` fits both).

A person's photos give one stage through `combine_distributions`, the one computation
behind the reports' patient stage (the rules engine) and the per-person figures of
evaluation and benchmarks; `PERSON_VIEW_WEIGHTS` are its default view weights.

The maths is NumPy (``scipy.special.expit``). A torch tensor is accepted too and the
result comes back as a tensor on its device, without gradient: decoding is never trained
through (the CORAL loss lives in ``training/losses.py``).

    >>> ordinal_index(np.array([[3.0, 1.0, -1.0, -2.0, -3.0, -4.0]]))
    array([2])
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

__all__ = [
    "PERSON_UNKNOWN_VIEW_WEIGHT",
    "PERSON_VIEW_WEIGHTS",
    "combine_distributions",
    "cumulative_to_probabilities",
    "ordinal_cumulative",
    "ordinal_expected_index",
    "ordinal_index",
    "ordinal_probabilities",
]

Offsets = Sequence[float] | np.ndarray | None

#: How much a photo of each view counts towards its person's stage. Front and top show the
#: hairline and crown, where the Norwood scale is read; the back and sides show less of it.
#: The default rules file's ``photos.view_weights`` holds these same values (a test keeps
#: them equal); a clinic's own rules file may change them for its reports.
PERSON_VIEW_WEIGHTS: dict[str, float] = {"front": 1.0, "top": 1.0, "back": 0.5, "left": 0.5, "right": 0.5}
#: Weight of a photo whose view is unknown (the model does not assess the view).
PERSON_UNKNOWN_VIEW_WEIGHT: float = 0.5

# Float noise in a weighted mean must not turn an exact tie into the higher stage.
_TIE = 1e-9


def _torch_tensor(value: Any) -> Any:
    """The torch module when ``value`` is a tensor, else None (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(value, torch.Tensor) else None


def _as_input(logits: Any) -> tuple[np.ndarray, Any]:
    """``(float64 array, tensor it came from or None)``."""
    if _torch_tensor(logits) is not None:
        return logits.detach().cpu().double().numpy(), logits
    return np.asarray(logits, dtype=np.float64), None


def _as_output(value: np.ndarray, like: Any) -> Any:
    """``value`` as ``like`` holds its numbers: a tensor (same device, float dtype) or NumPy."""
    torch = _torch_tensor(like)
    if torch is None:
        return value
    dtype = like.dtype if value.dtype.kind == "f" else torch.int64
    return torch.as_tensor(value, dtype=dtype, device=like.device)


def _calibrated(z: np.ndarray, temperature: float, offsets: Offsets) -> np.ndarray:
    z = z / temperature
    return z if offsets is None else z + np.asarray(offsets, dtype=np.float64)


def _cumulative(z: np.ndarray) -> np.ndarray:
    # P(class > k) can only fall as k rises; a running minimum keeps any logits a distribution.
    return np.minimum.accumulate(expit(z), axis=-1)


def ordinal_cumulative(logits: Any, temperature: float = 1.0, offsets: Offsets = None) -> Any:
    """``P(class > k)`` per threshold ``[..., K-1]``, made non-increasing in ``k``.

    Args:
        logits: cumulative logits ``[..., K-1]`` (array or tensor).
        temperature: divides the logits (calibration); 1 leaves them unchanged.
        offsets: calibrated shift per threshold, added after the temperature (None: zeros).
    """
    z, like = _as_input(logits)
    return _as_output(_cumulative(_calibrated(z, temperature, offsets)), like)


def ordinal_probabilities(logits: Any, temperature: float = 1.0, offsets: Offsets = None) -> Any:
    """Class probabilities ``[..., K]``: ``P(= k) = P(> k-1) - P(> k)``, always a distribution.

    Args:
        logits: cumulative logits ``[..., K-1]`` (array or tensor).
        temperature: as for `ordinal_cumulative`.
        offsets: as for `ordinal_cumulative`.
    """
    z, like = _as_input(logits)
    return _as_output(cumulative_to_probabilities(_cumulative(_calibrated(z, temperature, offsets))), like)


def cumulative_to_probabilities(cumulative: np.ndarray) -> np.ndarray:
    """Class probabilities ``[..., K]`` from non-increasing ``P(class > k)`` ``[..., K-1]``
    (say a mean of several photos' `ordinal_cumulative`)."""
    cumulative = np.asarray(cumulative, dtype=np.float64)
    edge = np.ones(cumulative.shape[:-1] + (1,))
    bounds = np.concatenate([edge, cumulative, 0.0 * edge], axis=-1)
    return np.clip(bounds[..., :-1] - bounds[..., 1:], 0.0, 1.0)


def ordinal_index(logits: Any, temperature: float = 1.0, offsets: Offsets = None) -> Any:
    """Predicted class index ``[...]`` (0 = Norwood 1): the thresholds passed, in order.

    A threshold counts when its calibrated logit and every earlier one are positive
    (``P(> k) > 0.5`` after the running minimum), so the class never skips an order. A
    temperature keeps every logit's sign and never changes the class; offsets can.

    Args:
        logits: cumulative logits ``[..., K-1]`` (array or tensor).
        temperature: as for `ordinal_cumulative`.
        offsets: as for `ordinal_cumulative`.
    """
    z, like = _as_input(logits)
    passed = np.minimum.accumulate(_calibrated(z, temperature, offsets), axis=-1) > 0
    return _as_output(passed.sum(axis=-1), like)


def ordinal_expected_index(logits: Any, temperature: float = 1.0, offsets: Offsets = None) -> Any:
    """Expected class index ``[...]``, ``sum_k P(> k)`` (add 1 for the Norwood stage).

    Args:
        logits: cumulative logits ``[..., K-1]`` (array or tensor).
        temperature: as for `ordinal_cumulative`.
        offsets: as for `ordinal_cumulative`.
    """
    z, like = _as_input(logits)
    return _as_output(_cumulative(_calibrated(z, temperature, offsets)).sum(axis=-1), like)


def combine_distributions(distributions: Any, weights: Any) -> tuple[int | None, np.ndarray | None]:
    """One person's stage from their photos: the weighted median of the photos' stages.

    The photos' class distributions are averaged with their weights; the class is the
    number of thresholds the average's ``P(class > k)`` passes (above 0.5), which is the
    weighted median. Averaging distributions and averaging `ordinal_cumulative` give the
    same mean, so this is also a single photo's `ordinal_index`. A tie (``P(class > k)``
    exactly 0.5, say two equally weighted photos a stage apart) goes to the lower class:
    a recommendation never rests on a coin toss towards more loss.

    Args:
        distributions: ``[N, K]`` class probabilities, one row per photo (each sums to 1).
        weights: ``[N]`` weight of each photo (>= 0; a photo of weight 0 is left out).

    Returns:
        ``(class index, [K] weighted mean distribution)``; ``(None, None)`` when no photo
        has a positive weight.

    Raises:
        ValueError: shapes that do not match, or a negative or non-finite weight.
    """
    p = np.asarray(distributions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or w.shape != (p.shape[0],):
        raise ValueError(f"combine_distributions needs [N, K] distributions and [N] weights, "
                         f"got {p.shape} and {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"photo weights must be finite and >= 0, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        return None, None
    mean = (p * w[:, None]).sum(axis=0) / total
    # P(class > k) as a sum over the tail, not 1 - cumsum, so that it carries no cancellation.
    above = np.cumsum(mean[::-1])[::-1][1:]
    return int((above > 0.5 + _TIE).sum()), mean
