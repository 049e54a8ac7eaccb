"""Post-hoc calibration on validation outputs: one temperature per head, F1 thresholds.

Temperatures divide a head's logits so that probabilities match observed frequencies
(fitted by minimising the negative log-likelihood with a 1-D search over log T). Decision
thresholds per condition maximise F1 on the calibrated validation probabilities. Both go
into ``model.json`` ("temperature", "thresholds") and inference applies them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import precision_recall_curve

from data.vocab import CONDITIONS

from .metrics import Predictions, ordinal_probabilities, sigmoid

__all__ = [
    "condition_nll",
    "stage_nll",
    "view_nll",
    "fit_temperature",
    "fit_thresholds",
    "fit_calibration",
]

_LOG_T_RANGE = (np.log(0.05), np.log(20.0))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def condition_nll(logits: np.ndarray, targets: np.ndarray, known: np.ndarray,
                  temperature: float) -> float:
    """Mean binary NLL over known condition labels at ``temperature``."""
    known = np.asarray(known, dtype=bool)
    z = np.asarray(logits, dtype=np.float64)[known] / temperature
    y = np.asarray(targets, dtype=np.float64)[known]
    return float(-(y * _log_sigmoid(z) + (1 - y) * _log_sigmoid(-z)).mean())


def stage_nll(logits: np.ndarray, stage: np.ndarray, temperature: float) -> float:
    """Mean NLL of the true stage under the ordinal class probabilities, known stages only.

    The class probabilities (not each threshold on its own) are what the reliability of a
    predicted stage is judged on, so the temperature is fitted on them.
    """
    known = np.asarray(stage) >= 0
    probs = ordinal_probabilities(np.asarray(logits, dtype=np.float64)[known], temperature)
    p_true = probs[np.arange(len(probs)), np.asarray(stage)[known]]
    return float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean())


def view_nll(logits: np.ndarray, view: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy over photos with a known view."""
    known = np.asarray(view) >= 0
    z = np.asarray(logits, dtype=np.float64)[known] / temperature
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(z)), np.asarray(view)[known]].mean())


def fit_temperature(nll: Callable[[float], float], *, iterations: int = 40) -> float:
    """Temperature minimising ``nll(T)``: a coarse grid over log T, then golden-section.

    The search stays in [0.05, 20]; NLL is smooth and unimodal in log T for these heads.
    """
    lo, hi = _LOG_T_RANGE
    grid = np.linspace(lo, hi, 61)
    values = [nll(float(np.exp(g))) for g in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(float(np.exp(c))), nll(float(np.exp(d)))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(float(np.exp(d)))
    candidates = [(values[best], grid[best]), (fc, c), (fd, d)]
    return float(np.exp(min(candidates)[1]))


def fit_thresholds(probs: np.ndarray, targets: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """Per-condition threshold maximising F1 over known labels (0.5 when it cannot be fitted)."""
    thresholds: dict[str, float] = {}
    for c, name in enumerate(CONDITIONS):
        k = np.asarray(known[:, c], dtype=bool)
        y, p = np.asarray(targets)[k, c].astype(int), np.asarray(probs)[k, c]
        if len(np.unique(y)) < 2:
            thresholds[name] = 0.5
            continue
        precision, recall, cut = precision_recall_curve(y, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = int(np.argmax(f1))
        # Halfway to the next lower score, so that the boundary photo stays on its side.
        lower = p[p < cut[best]]
        value = (cut[best] + lower.max()) / 2 if lower.size else cut[best]
        thresholds[name] = float(np.clip(value, 1e-4, 1 - 1e-4))
    return thresholds


def fit_calibration(preds: Predictions) -> dict[str, dict[str, float]]:
    """Temperatures (conditions, stage, view) and condition thresholds from validation outputs.

    A head with no known label on validation keeps temperature 1.

    Returns:
        ``{"temperature": {head: T}, "thresholds": {condition: threshold}}``.
    """
    temperature = {"conditions": 1.0, "stage": 1.0, "view": 1.0}
    known = np.asarray(preds.condition_known, dtype=bool)
    if known.any():
        temperature["conditions"] = fit_temperature(
            lambda t: condition_nll(preds.condition_logits, preds.condition_targets, known, t))
    if (preds.stage >= 0).any():
        temperature["stage"] = fit_temperature(
            lambda t: stage_nll(preds.stage_logits, preds.stage, t))
    if (preds.view >= 0).any():
        temperature["view"] = fit_temperature(
            lambda t: view_nll(preds.view_logits, preds.view, t))
    probs = sigmoid(preds.condition_logits / temperature["conditions"])
    thresholds = fit_thresholds(probs, preds.condition_targets, known)
    return {"temperature": temperature, "thresholds": thresholds}
