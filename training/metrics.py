"""Honest evaluation: every head's metrics, per person, and broken down by any column.

All functions here work on numpy arrays gathered over a data set (`Predictions`), so a
new metric is a few lines and needs no model. Metrics come from scikit-learn where it has
them (AP, AUROC, F1, quadratic weighted kappa). Entries whose label is unknown are left
out of every metric; a metric that cannot be computed (say AUROC with one class) is None.
Stage logits are decoded by `scalpscan.models.ordinal`, as inference decodes them;
person-bootstrap intervals live in `training.bootstrap`, terminal tables in
`training.tables`.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from scalpscan.data.vocab import CONDITIONS, STAGES, VIEWS, ZONES
from scalpscan.models.ordinal import (
    PERSON_UNKNOWN_VIEW_WEIGHT,
    PERSON_VIEW_WEIGHTS,
    combine_distributions,
    ordinal_index,
    ordinal_probabilities,
)

from .bootstrap import paired_stage_differences, stage_confidence_intervals

__all__ = [
    "Predictions",
    "reliability_bins",
    "expected_calibration_error",
    "binary_ece",
    "ece_floor",
    "condition_metrics",
    "stage_metrics",
    "compare_predictions",
    "predicted_stages",
    "person_stage",
    "view_metrics",
    "mask_counts",
    "mask_metrics",
    "compute_metrics",
    "metrics_by",
]

_N_BINS = 15


@dataclass
class Predictions:
    """Raw outputs and labels of every photo of a data set, in row order.

    Attributes:
        condition_logits: [N, C] condition logits.
        condition_targets: [N, C] 0/1 labels (0 where unknown).
        condition_known: [N, C] bool.
        stage_logits: [N, K] ordinal logits.
        stage: [N] class index, -1 unknown.
        view_logits: [N, V] view logits.
        view: [N] view index, -1 unknown.
        zone_counts: [N, Z, 3] per photo and zone: (intersection, predicted, true) pixels.
        zones_known: [N] bool.
        hairloss_counts: [N, C, 3] the same for the loss map.
        hairloss_known: [N] bool.
        index: [N] manifest row index of each photo.
        subjects: subject id per photo ("" when not given).
    """

    condition_logits: np.ndarray
    condition_targets: np.ndarray
    condition_known: np.ndarray
    stage_logits: np.ndarray
    stage: np.ndarray
    view_logits: np.ndarray
    view: np.ndarray
    zone_counts: np.ndarray
    zones_known: np.ndarray
    hairloss_counts: np.ndarray
    hairloss_known: np.ndarray
    index: np.ndarray
    subjects: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stage)

    def subset(self, mask: np.ndarray) -> Predictions:
        """The photos where ``mask`` is True."""
        return self.take(np.flatnonzero(np.asarray(mask, dtype=bool)))

    def take(self, positions: np.ndarray) -> Predictions:
        """The photos at ``positions`` (0-based, into these arrays), in that order."""
        positions = np.asarray(positions, dtype=int)
        subjects = [self.subjects[i] for i in positions] if self.subjects else []
        arrays = {
            name: getattr(self, name)[positions]
            for name in self.__dataclass_fields__
            if name != "subjects"
        }
        return Predictions(**arrays, subjects=subjects)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray,
                     n_bins: int = _N_BINS) -> dict[str, np.ndarray]:
    """Equal-width confidence bins: mean confidence, accuracy and count per bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges,
            "confidence": np.where(count > 0, conf_sum / count, np.nan),
            "accuracy": np.where(count > 0, acc_sum / count, np.nan),
            "count": count,
        }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               n_bins: int = _N_BINS) -> float | None:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width bins."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.size == 0:
        return None
    bins = reliability_bins(confidence, correct, n_bins)
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float((gap * bins["count"][used]).sum() / bins["count"].sum())


def ece_floor(confidence: np.ndarray, n_bins: int = _N_BINS, *, draws: int = 200,
              seed: int = 0) -> float | None:
    """The ECE a perfectly calibrated model would still show on these photos.

    ECE is biased upwards on small sets: even when every confidence is exactly right,
    the accuracy within a bin of a few photos scatters around it. This is the mean ECE
    over ``draws`` label sets drawn so that each prediction is right with probability
    equal to its confidence; an ECE near it is calibration as good as the set can show.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.size == 0:
        return None
    rng = np.random.default_rng(seed)
    values = [expected_calibration_error(confidence, rng.random(confidence.size) < confidence,
                                         n_bins) for _ in range(draws)]
    return float(np.mean(values))


def binary_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = _N_BINS) -> float | None:
    """ECE of binary decisions at 0.5 (confidence = max(p, 1 - p))."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = np.maximum(probs, 1.0 - probs)
    correct = (probs >= 0.5) == (labels > 0.5)
    return expected_calibration_error(confidence, correct, n_bins)


def _safe(fn, *args, **kwargs) -> float | None:
    """A scikit-learn metric, or None where it is undefined (one class, no pairs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(fn(*args, **kwargs))
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def condition_metrics(probs: np.ndarray, targets: np.ndarray, known: np.ndarray,
                      thresholds: Mapping[str, float] | None = None) -> dict:
    """AP, AUROC and F1 per condition over known labels, their macro means and ECE.

    Args:
        probs: [N, C] probabilities.
        targets: [N, C] 0/1.
        known: [N, C] bool.
        thresholds: condition -> decision threshold for F1 (default 0.5).
    """
    thresholds = dict(thresholds or {})
    per: dict[str, dict] = {}
    for c, name in enumerate(CONDITIONS):
        k = np.asarray(known[:, c], dtype=bool)
        y, p = targets[k, c].astype(int), probs[k, c]
        both = len(np.unique(y)) == 2
        threshold = float(thresholds.get(name, 0.5))
        per[name] = {
            "n": int(k.sum()),
            "positives": int(y.sum()),
            "ap": _safe(average_precision_score, y, p) if both else None,
            "auroc": _safe(roc_auc_score, y, p) if both else None,
            "f1": float(f1_score(y, p >= threshold, zero_division=0)) if y.sum() > 0 else None,
            "threshold": threshold,
        }
    flat_known = np.asarray(known, dtype=bool)
    return {
        "per_condition": per,
        "macro_ap": _mean([m["ap"] for m in per.values()]),
        "macro_auroc": _mean([m["auroc"] for m in per.values()]),
        "macro_f1": _mean([m["f1"] for m in per.values()]),
        "ece": binary_ece(probs[flat_known], targets[flat_known]),
    }


def stage_metrics(pred: np.ndarray, true: np.ndarray, probs: np.ndarray | None = None) -> dict:
    """Accuracy, MAE (in stages), quadratic weighted kappa and ECE of stage predictions.

    Args:
        pred: [N] predicted class index.
        true: [N] true class index, -1 unknown (left out).
        probs: [N, K+1] class probabilities for ECE, or None.
    """
    true = np.asarray(true)
    known = true >= 0
    pred, true = np.asarray(pred)[known], true[known]
    if len(true) == 0:
        return {"n": 0, "accuracy": None, "mae": None, "qwk": None, "ece": None,
                "ece_floor": None}
    labels = list(range(len(STAGES)))
    ece = floor = None
    if probs is not None:
        probs = np.asarray(probs)[known]
        confidence = probs[np.arange(len(pred)), pred]
        ece = expected_calibration_error(confidence, pred == true)
        floor = ece_floor(confidence)
    return {
        "n": int(len(true)),
        "accuracy": float((pred == true).mean()),
        "mae": float(np.abs(pred - true).mean()),
        "qwk": _safe(cohen_kappa_score, true, pred, weights="quadratic", labels=labels),
        "ece": ece,
        "ece_floor": floor,
    }


def person_stage(stage_logits: np.ndarray, true: np.ndarray, subjects: Sequence[str],
                 views: np.ndarray, *, view_weights: Mapping[str, float] | None = None,
                 unknown_view_weight: float = PERSON_UNKNOWN_VIEW_WEIGHT,
                 temperature: float = 1.0,
                 offsets: Sequence[float] | np.ndarray | None = None) -> dict:
    """One stage per person from all their photos, as the reports give it, and its metrics.

    A person's stage is `combine_distributions` over their photos, each weighted by its
    *predicted* view: the computation and the default weights of the rules engine's patient
    stage, so these figures are the reports' figures. The true stage is the person's most
    frequent known stage. A person whose photos all weigh 0 gets no stage (the reports give
    none) and is left out.

    Args:
        stage_logits: [N, K] ordinal logits.
        true: [N] class index, -1 unknown.
        subjects: [N] person ids.
        views: [N] predicted view index, -1 unknown (the model does not assess the view).
        view_weights: view name -> weight (None: `PERSON_VIEW_WEIGHTS`, the default rules').
        unknown_view_weight: weight of a photo whose view is unknown.
        temperature: stage temperature.
        offsets: calibrated per-threshold offsets (None = zeros).
    """
    view_weights = {**PERSON_VIEW_WEIGHTS, **dict(view_weights or {})}
    table = np.array([float(view_weights[v]) for v in VIEWS] + [float(unknown_view_weight)])
    views = np.asarray(views, dtype=int)
    weights = table[np.where(views >= 0, views, len(VIEWS))]
    dists = ordinal_probabilities(stage_logits, temperature, offsets)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, subject in enumerate(subjects):
        groups[subject].append(i)
    person_pred, person_true, person_probs, ids = [], [], [], []
    for subject, rows in groups.items():
        known = [int(true[i]) for i in rows if true[i] >= 0]
        if not known:
            continue
        index, mean = combine_distributions(dists[rows], weights[rows])
        if index is None:
            continue
        person_true.append(Counter(known).most_common(1)[0][0])
        person_pred.append(index)
        person_probs.append(mean)
        ids.append(subject)
    if not ids:
        return {"n": 0, "accuracy": None, "mae": None, "qwk": None, "ece": None,
                "ece_floor": None}
    result = stage_metrics(np.array(person_pred), np.array(person_true), np.array(person_probs))
    result["persons"] = {s: {"true": index_true + 1, "pred": index_pred + 1}
                         for s, index_true, index_pred in zip(ids, person_true, person_pred)}
    return result


def compare_predictions(preds_a: Predictions, preds_b: Predictions, *,
                        calibration_a: Mapping[str, Any] | None = None,
                        calibration_b: Mapping[str, Any] | None = None,
                        draws: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Two models' outputs on the same photos, each under its own calibration: both
    models' metrics and B - A for the stage (`paired_stage_differences`).

    Args:
        preds_a, preds_b: outputs on the same photos in the same order (same ``index``).
        calibration_a, calibration_b: `compute_metrics` keyword arguments of each model.
        draws, seed: paired person-bootstrap draws and their seed.

    Returns:
        ``{"a": metrics, "b": metrics, "difference": {"stage": ..., "stage_person": ...}}``.

    Raises:
        ValueError: when the two hold different photos.
    """
    if not np.array_equal(preds_a.index, preds_b.index):
        raise ValueError("the two sets of outputs hold different photos (or another order)")
    metrics, stages, persons = [], [], []
    for preds, calibration in ((preds_a, calibration_a), (preds_b, calibration_b)):
        calibration = dict(calibration or {})
        result = compute_metrics(preds, **calibration)
        persons.append((result.get("stage_person") or {}).pop("persons", None))
        stages.append(predicted_stages(preds, **calibration))
        metrics.append(result)
    difference = paired_stage_differences(stages[0], stages[1], preds_a.stage,
                                          preds_a.subjects, persons[0], persons[1],
                                          draws=draws, seed=seed)
    return {"a": metrics[0], "b": metrics[1], "difference": difference}


def view_metrics(logits: np.ndarray, true: np.ndarray) -> dict:
    """View accuracy and ECE over photos with a known view."""
    true = np.asarray(true)
    known = true >= 0
    if not known.any():
        return {"n": 0, "accuracy": None, "ece": None}
    probs = softmax(logits[known], axis=-1)
    pred = probs.argmax(1)
    return {
        "n": int(known.sum()),
        "accuracy": float((pred == true[known]).mean()),
        "ece": expected_calibration_error(probs.max(1), pred == true[known]),
    }


def mask_counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per photo and channel: (intersection, predicted, true) pixel counts, ``[N, C, 3]``.

    Args:
        pred: [N, C, H, W] bool predicted masks.
        target: [N, C, H, W] bool true masks, same size.
    """
    pred = np.asarray(pred, dtype=bool)
    target = np.asarray(target, dtype=bool)
    inter = (pred & target).reshape(*pred.shape[:2], -1).sum(-1)
    return np.stack([inter, pred.reshape(*pred.shape[:2], -1).sum(-1),
                     target.reshape(*target.shape[:2], -1).sum(-1)], axis=-1)


def mask_metrics(counts: np.ndarray, known: np.ndarray, names: Sequence[str]) -> dict:
    """IoU and Dice per channel, pooled over the photos whose mask is known.

    A channel that is neither present nor predicted anywhere has IoU/Dice None.
    """
    known = np.asarray(known, dtype=bool)
    if not known.any():
        return {"n": 0, "per_class": {}, "mean_iou": None, "mean_dice": None}
    inter, pred, true = counts[known].sum(0).astype(np.float64).T
    per: dict[str, dict] = {}
    for c, name in enumerate(names):
        union = pred[c] + true[c] - inter[c]
        per[name] = {
            "iou": float(inter[c] / union) if union > 0 else None,
            "dice": float(2 * inter[c] / (pred[c] + true[c])) if pred[c] + true[c] > 0 else None,
        }
    return {
        "n": int(known.sum()),
        "per_class": per,
        "mean_iou": _mean([m["iou"] for m in per.values()]),
        "mean_dice": _mean([m["dice"] for m in per.values()]),
    }


def predicted_stages(preds: Predictions, *, temperature: Mapping[str, float] | None = None,
                     stage_offsets: Sequence[float] | None = None, **_: Any) -> np.ndarray:
    """[N] predicted stage class index of each photo under a calibration (the keyword
    arguments of `compute_metrics`; the ones a stage does not depend on are ignored)."""
    t = float((temperature or {}).get("stage", 1.0))
    return ordinal_index(preds.stage_logits, t, stage_offsets)


def compute_metrics(preds: Predictions, *, thresholds: Mapping[str, float] | None = None,
                    temperature: Mapping[str, float] | None = None,
                    view_weights: Mapping[str, float] | None = None,
                    view_assessed: bool = True,
                    stage_offsets: Sequence[float] | None = None,
                    ci_draws: int = 0) -> dict:
    """Every metric of every head, plus per-person stage, as a JSON-ready dict.

    Args:
        preds: gathered outputs and labels.
        thresholds: condition -> decision threshold (default 0.5).
        temperature: head -> temperature (conditions, stage, view; default 1).
        view_weights: predicted view -> weight when combining one person's photos (None:
            `PERSON_VIEW_WEIGHTS`, the default rules'; see `person_stage`).
        view_assessed: False for a model whose view head is not assessed: its rows carry no
            view, so every photo weighs as an unknown view, as in the reports.
        stage_offsets: calibrated offset per stage threshold, added to the tempered
            cumulative logits (model.json ``"stage_offsets"``; None = zeros).
        ci_draws: when > 0, add 95 % person-bootstrap intervals (``"ci"``) to the stage
            and per-person stage metrics (`stage_confidence_intervals`).
    """
    t = {"conditions": 1.0, "stage": 1.0, "view": 1.0, **dict(temperature or {})}
    cond_probs = expit(preds.condition_logits / t["conditions"])
    stage_probs = ordinal_probabilities(preds.stage_logits, t["stage"], stage_offsets)
    stage_pred = predicted_stages(preds, temperature=t, stage_offsets=stage_offsets)
    # The predicted view, as the Predictor writes it in each row (the reports cannot know
    # the true one).
    views = preds.view_logits.argmax(1) if view_assessed and len(preds) \
        else np.full(len(preds), -1)
    result = {
        "n": len(preds),
        "conditions": condition_metrics(cond_probs, preds.condition_targets,
                                        preds.condition_known, thresholds),
        "stage": stage_metrics(stage_pred, preds.stage, stage_probs),
        "view": view_metrics(preds.view_logits / t["view"], preds.view),
        "zones": mask_metrics(preds.zone_counts, preds.zones_known, ZONES),
        "hairloss_map": mask_metrics(preds.hairloss_counts, preds.hairloss_known, CONDITIONS),
    }
    if preds.subjects:
        result["stage_person"] = person_stage(preds.stage_logits, preds.stage, preds.subjects,
                                              views, view_weights=view_weights,
                                              temperature=t["stage"],
                                              offsets=stage_offsets)
    if ci_draws > 0:
        intervals = stage_confidence_intervals(
            stage_pred, preds.stage, preds.subjects,
            (result.get("stage_person") or {}).get("persons"), draws=ci_draws)
        result["stage"]["ci"] = intervals["stage"]
        if "stage_person" in result:
            result["stage_person"]["ci"] = intervals["stage_person"]
    return result


def metrics_by(preds: Predictions, column: str, values: Sequence[str], **kwargs) -> dict:
    """`compute_metrics` for each distinct value of a per-photo column.

    Args:
        preds: gathered outputs and labels.
        column: the column's name (for error messages).
        values: the column's value for each photo, in the same order as ``preds``.
        **kwargs: passed to `compute_metrics`.
    """
    if len(values) != len(preds):
        raise ValueError(f"column {column!r} has {len(values)} values for {len(preds)} photos")
    values = np.asarray([v if v not in (None, "") else "(empty)" for v in values], dtype=object)
    out = {}
    for value in sorted(set(values.tolist())):
        sub = compute_metrics(preds.subset(values == value), **kwargs)
        sub.get("stage_person", {}).pop("persons", None)
        out[str(value)] = sub
    return out
