"""Post-hoc calibration on validation outputs: temperatures, stage offsets, thresholds.

Temperatures divide a head's logits so that probabilities match observed frequencies
(fitted by minimising the negative log-likelihood with scipy's bounded scalar search over
log T). Decision thresholds per condition maximise F1 on the calibrated validation
probabilities. Where the validation split holds enough untouched real photos known to be
without a condition (at least `MIN_REAL_NEGATIVES`; `models.provenance.untouched_real`),
the threshold is raised when needed so that at most ``max_false_rate`` of them get the
finding: F1 over renders and painted photos says little about how often a real head
without the condition gets it, and a false finding is what turns into a wrong
recommendation.

The ordinal stage head gets more than one temperature: its reliability is judged on the
class probabilities ``P(stage = j) = P(> j-1) - P(> j)``, and one temperature on the
cumulative logits scales the sharp end stages and the flat middle ones alike. So the
stage is calibrated as ``z_k / T + offsets[k]`` (a temperature plus one shift per
threshold), fitted jointly by minimising the NLL of the true class's probability, with a
Gaussian prior (SD `STAGE_OFFSET_PRIOR_SD` logits) keeping the shifts small on a small
validation split. The shifted thresholds are kept in order (the shifted mean cumulative
logits stay strictly decreasing), so the probabilities stay a distribution and the
predicted stage (thresholds passed) never jumps order; it may move by the shifts.

Everything goes into ``model.json`` ("temperature", "stage_offsets", "thresholds") and
inference applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit, log_softmax
from sklearn.metrics import precision_recall_curve

from scalpscan.data.vocab import CONDITIONS
from scalpscan.models.ordinal import ordinal_probabilities
from scalpscan.models.provenance import untouched_real

from .metrics import Predictions

__all__ = [
    "condition_nll",
    "stage_nll",
    "fit_stage_calibration",
    "STAGE_OFFSET_PRIOR_SD",
    "view_nll",
    "fit_temperature",
    "fit_thresholds",
    "false_rate_threshold",
    "MIN_REAL_NEGATIVES",
    "untouched_mask",
    "fit_calibration",
]

_LOG_T_RANGE = (np.log(0.05), np.log(20.0))
# Prior SD (in logits) of each stage threshold's calibrated offset: shifts much beyond one
# logit should come from training, not from a validation split of a few hundred photos.
STAGE_OFFSET_PRIOR_SD = 0.5
_MIN_GAP = 1e-3
#: Fewest untouched real negatives of a condition on which its false-finding rate is held.
MIN_REAL_NEGATIVES = 20


def condition_nll(logits: np.ndarray, targets: np.ndarray, known: np.ndarray,
                  temperature: float) -> float:
    """Mean binary NLL over known condition labels at ``temperature``."""
    known = np.asarray(known, dtype=bool)
    z = np.asarray(logits, dtype=np.float64)[known] / temperature
    y = np.asarray(targets, dtype=np.float64)[known]
    return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).mean())


def stage_nll(logits: np.ndarray, stage: np.ndarray, temperature: float,
              offsets: np.ndarray | None = None) -> float:
    """Mean NLL of the true stage under the ordinal class probabilities, known stages only.

    The class probabilities (not each threshold on its own) are what the reliability of a
    predicted stage is judged on, so the calibration is fitted on them.
    """
    known = np.asarray(stage) >= 0
    probs = ordinal_probabilities(np.asarray(logits, dtype=np.float64)[known], temperature,
                                  offsets)
    p_true = probs[np.arange(len(probs)), np.asarray(stage)[known]]
    return float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean())


def view_nll(logits: np.ndarray, view: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy over photos with a known view."""
    known = np.asarray(view) >= 0
    log_p = log_softmax(np.asarray(logits, dtype=np.float64)[known] / temperature, axis=1)
    return float(-log_p[np.arange(len(log_p)), np.asarray(view)[known]].mean())


def fit_temperature(nll: Callable[[float], float], *, tolerance: float = 1e-5) -> float:
    """Temperature minimising ``nll(T)``: scipy's bounded scalar search over log T.

    The search stays in [0.05, 20]; NLL is smooth and unimodal in log T for these heads,
    so a bounded Brent search finds its minimum (or the bound it falls towards).

    Args:
        nll: the validation NLL at a temperature.
        tolerance: how close in log T the search stops.
    """
    result = minimize_scalar(lambda log_t: nll(float(np.exp(log_t))), bounds=_LOG_T_RANGE,
                             method="bounded", options={"xatol": tolerance})
    return float(np.exp(result.x))


def fit_stage_calibration(logits: np.ndarray, stage: np.ndarray, *,
                          prior_sd: float = STAGE_OFFSET_PRIOR_SD) -> tuple[float, list[float]]:
    """Stage temperature and per-threshold offsets minimising the class-probability NLL.

    Calibrated cumulative logit ``k`` = ``logits[:, k] / T + offsets[k]``. Parametrised so
    that the calibrated mean logits ``a_k`` stay strictly decreasing in k (``a_{k+1} = a_k
    - exp(g_k)``), hence the thresholds keep their order. The objective is the mean NLL of
    the true class plus ``sum(offsets**2) / (2 * prior_sd**2 * n)`` (a Gaussian prior on
    the offsets); it starts from the best single temperature with zero offsets and only
    keeps the joint fit where it lowers the objective.

    Args:
        logits: [N, K] cumulative logits.
        stage: [N] true class index, -1 unknown (left out).
        prior_sd: prior SD of each offset in logits.

    Returns:
        ``(temperature, offsets)``; ``(1.0, zeros)`` when no stage is known.
    """
    logits = np.asarray(logits, dtype=np.float64)
    stage = np.asarray(stage)
    known = stage >= 0
    n_thresholds = logits.shape[1] if logits.ndim == 2 else 0
    if not known.any() or n_thresholds == 0:
        return 1.0, [0.0] * n_thresholds
    z, y = logits[known], stage[known]
    n = len(y)
    t0 = fit_temperature(lambda t: stage_nll(z, y, t))
    reference = z.mean(0)
    rows = np.arange(n)

    def unpack(x: np.ndarray) -> tuple[float, np.ndarray]:
        scale = float(np.exp(x[0]))
        a = x[1] - np.concatenate([[0.0], np.cumsum(np.exp(x[2:]))])
        return scale, a - reference * scale

    def objective(x: np.ndarray) -> float:
        scale, offsets = unpack(x)
        probs = ordinal_probabilities(z * scale + offsets)
        nll = -np.log(np.clip(probs[rows, y], 1e-12, 1.0)).mean()
        return float(nll + (offsets ** 2).sum() / (2 * prior_sd ** 2 * n))

    a0 = reference / t0
    gaps = np.maximum(a0[:-1] - a0[1:], _MIN_GAP)
    x0 = np.concatenate([[-np.log(t0), a0[0]], np.log(gaps)])
    lo, hi = _LOG_T_RANGE
    bounds = [(-hi, -lo)] + [(None, None)] + [(np.log(_MIN_GAP), None)] * (n_thresholds - 1)
    result = minimize(objective, x0, method="L-BFGS-B", bounds=bounds)
    x = result.x if np.isfinite(result.fun) and result.fun < objective(x0) else x0
    scale, offsets = unpack(x)
    if x is x0:
        offsets = np.zeros(n_thresholds)
    return float(1.0 / scale), [float(v) for v in offsets]


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


def false_rate_threshold(negatives: np.ndarray, max_false_rate: float) -> float:
    """The lowest threshold at which at most ``max_false_rate`` of ``negatives`` (the
    probabilities of photos without the condition) reach it.

    It lies halfway between the highest score that must stay below it and the next higher
    one (or 1), like the F1 threshold.
    """
    scores = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    if scores.size == 0:
        return 0.0
    allowed = int(np.floor(max_false_rate * scores.size + 1e-9))
    if allowed >= scores.size:
        return 0.0
    # Ties with the highest excluded score are excluded with it.
    higher = scores[scores > scores[allowed]]
    above = higher.min() if higher.size else 1.0
    return float(max((scores[allowed] + above) / 2, 1e-4))


def untouched_mask(preds: Predictions, rows: Any) -> np.ndarray:
    """``[N]`` whether each output's photo (``rows[preds.index[i]]``) is an untouched real one."""
    return np.array([untouched_real(rows[int(i)]) for i in np.asarray(preds.index)], dtype=bool)


def fit_calibration(preds: Predictions, *, untouched: np.ndarray | None = None,
                    max_false_rate: float = 1.0) -> dict[str, Any]:
    """Temperatures, stage offsets and condition thresholds from validation outputs.

    A head with no known label on validation keeps temperature 1 (and zero stage offsets).

    Args:
        preds: the validation outputs.
        untouched: ``[N]`` whether each photo is a real one as a clinic takes it
            (`models.provenance.untouched_real`); None: none is.
        max_false_rate: the largest share of untouched real photos known to be without a
            condition that may get its finding; 1 leaves the F1 thresholds as they are.

    Returns:
        ``{"temperature": {head: T}, "stage_offsets": [K floats],
        "thresholds": {condition: threshold}, "threshold_rule": {condition: {"rule":
        "f1" or "false_rate", "real_negatives": n, "false_rate": share at the threshold}}}``.
    """
    temperature = {"conditions": 1.0, "stage": 1.0, "view": 1.0}
    stage_offsets = [0.0] * int(np.asarray(preds.stage_logits).shape[-1])
    known = np.asarray(preds.condition_known, dtype=bool)
    if known.any():
        temperature["conditions"] = fit_temperature(
            lambda t: condition_nll(preds.condition_logits, preds.condition_targets, known, t))
    if (preds.stage >= 0).any():
        temperature["stage"], stage_offsets = fit_stage_calibration(preds.stage_logits,
                                                                    preds.stage)
    if (preds.view >= 0).any():
        temperature["view"] = fit_temperature(
            lambda t: view_nll(preds.view_logits, preds.view, t))
    probs = expit(preds.condition_logits / temperature["conditions"])
    thresholds = fit_thresholds(probs, preds.condition_targets, known)
    untouched = (np.zeros(len(probs), dtype=bool) if untouched is None
                 else np.asarray(untouched, dtype=bool))
    rules: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(CONDITIONS):
        negative = untouched & known[:, c] & (np.asarray(preds.condition_targets)[:, c] == 0)
        rule = {"rule": "f1", "real_negatives": int(negative.sum()), "false_rate": None}
        if negative.sum():
            if negative.sum() >= MIN_REAL_NEGATIVES and max_false_rate < 1:
                floor = false_rate_threshold(probs[negative, c], max_false_rate)
                if floor > thresholds[name]:
                    thresholds[name] = floor
                    rule["rule"] = "false_rate"
            rule["false_rate"] = float((probs[negative, c] >= thresholds[name]).mean())
        rules[name] = rule
    return {"temperature": temperature, "stage_offsets": stage_offsets, "thresholds": thresholds,
            "threshold_rule": rules}
