"""Person-bootstrap intervals for the stage: one model's, and the paired difference of two.

Photos of one person are not independent (same head, same stage), so every interval here
draws **persons** with replacement, each bringing all of their photos. Each draw scores
confusion counts, so thousands of draws cost a few matrix products.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scalpscan.data.vocab import STAGES

__all__ = ["confusion_scores", "paired_stage_differences", "stage_confidence_intervals"]


def confusion_scores(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, MAE and quadratic weighted kappa of ``[..., K, K]`` confusion counts
    (rows true, columns predicted); NaN where undefined."""
    k = conf.shape[-1]
    i, j = np.indices((k, k))
    n = conf.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = conf.sum(-1)[..., :, None] * conf.sum(-2)[..., None, :] / n[..., None, None]
        weights = (i - j) ** 2
        observed = (weights * conf).sum(axis=(-2, -1))
        chance = (weights * expected).sum(axis=(-2, -1))
        return {
            "accuracy": np.trace(conf, axis1=-2, axis2=-1) / n,
            "mae": (np.abs(i - j) * conf).sum(axis=(-2, -1)) / n,
            "qwk": np.where(chance > 0, 1.0 - observed / chance, np.nan),
        }


def _person_confusions(true: np.ndarray, subjects: Sequence[str],
                       preds: Sequence[np.ndarray],
                       persons: Sequence[Mapping[str, Mapping[str, int]] | None]
                       ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Per-person stage confusion counts ``[P, K, K]`` of each prediction in ``preds``
    (photos) and each table in ``persons`` (one row per person), over one list of names."""
    k = len(STAGES)
    true = np.asarray(true)
    ids = [s or f"#photo{i}" for i, s in enumerate(subjects)] if len(subjects) else \
        [f"#photo{i}" for i in range(len(true))]
    names = sorted(set(ids).union(*[set(p or {}) for p in persons]))
    where = {name: i for i, name in enumerate(names)}
    photo = []
    for pred in preds:
        pred = np.asarray(pred)
        conf = np.zeros((len(names), k, k))
        for i in np.flatnonzero(true >= 0):
            conf[where[ids[i]], true[i], pred[i]] += 1
        photo.append(conf)
    person = []
    for table in persons:
        conf = np.zeros((len(names), k, k))
        for name, row in (table or {}).items():
            conf[where[name], row["true"] - 1, row["pred"] - 1] = 1
        person.append(conf)
    return names, photo, person


def _person_draws(n: int, draws: int, seed: int) -> np.ndarray:
    """``[draws, n]``: how often each of ``n`` persons is drawn in each bootstrap draw."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(draws, n))
    return np.stack([np.bincount(row, minlength=n) for row in picks]).astype(float)


def _resampled(counts: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """``[draws, K, K]`` confusion counts of the persons each draw picked."""
    k = conf.shape[-1]
    return (counts @ conf.reshape(len(conf), -1)).reshape(len(counts), k, k)


def stage_confidence_intervals(pred: np.ndarray, true: np.ndarray, subjects: Sequence[str],
                               persons: Mapping[str, Mapping[str, int]] | None = None, *,
                               draws: int = 1000, level: float = 0.95,
                               seed: int = 0) -> dict[str, dict]:
    """Bootstrap intervals for stage accuracy, MAE and QWK, resampling **persons**.

    Photos of one person are not independent (same head, same stage), so the persons are
    drawn with replacement, each bringing all of their photos: the intervals show how much
    the figures would move on another set of people like these. The same draws give the
    per-person intervals.

    Args:
        pred: [N] predicted class index per photo.
        true: [N] true class index, -1 unknown (left out).
        subjects: [N] person ids (photos without one count as their own person).
        persons: subject -> {"true": stage, "pred": stage} from `person_stage`, or None.
        draws: bootstrap draws.
        level: coverage of the percentile intervals.
        seed: the draws' seed (same inputs, same intervals).

    Returns:
        ``{"stage": {...}, "stage_person": {...}}``; each holds ``level``, ``draws`` and
        ``[low, high]`` for ``accuracy``, ``mae`` and ``qwk`` (None where undefined).
    """
    names, (photo_conf,), (person_conf,) = _person_confusions(true, subjects, [pred], [persons])
    counts = _person_draws(len(names), draws, seed)
    tail = (1.0 - level) / 2 * 100

    def interval(conf: np.ndarray) -> dict:
        out: dict[str, Any] = {"level": level, "draws": draws}
        if not conf.any():
            return {**out, "accuracy": None, "mae": None, "qwk": None}
        sampled = _resampled(counts, conf)
        for key, values in confusion_scores(sampled).items():
            values = values[np.isfinite(values)]
            out[key] = ([float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
                        if values.size else None)
        return out

    return {"stage": interval(photo_conf), "stage_person": interval(person_conf)}


def paired_stage_differences(pred_a: np.ndarray, pred_b: np.ndarray, true: np.ndarray,
                             subjects: Sequence[str],
                             persons_a: Mapping[str, Mapping[str, int]] | None = None,
                             persons_b: Mapping[str, Mapping[str, int]] | None = None, *,
                             draws: int = 1000, level: float = 0.95,
                             seed: int = 0) -> dict[str, dict]:
    """Model B against model A on the same photos: B - A for stage accuracy, MAE and QWK,
    per photo and per person, with **paired** person-bootstrap intervals.

    Each draw resamples persons once and scores both models on the same draw, so what the
    two share (which persons happen to be easy) cancels out: the interval of a difference
    is narrower than the two models' own intervals side by side, the more so the more the
    two err on the same persons, and it is the one that says whether B is better on
    people like these.

    Args:
        pred_a, pred_b: [N] predicted class index per photo, same photos in the same order.
        true: [N] true class index, -1 unknown (left out).
        subjects: [N] person ids.
        persons_a, persons_b: subject -> {"true", "pred"} from `person_stage`, or None.
        draws, level, seed: as for `stage_confidence_intervals`.

    Returns:
        ``{"stage": {...}, "stage_person": {...}}``; for each of ``accuracy``, ``mae`` and
        ``qwk``: ``a``, ``b``, ``difference`` (B - A), ``ci`` ([low, high] of the
        difference) and ``b_better`` (the share of draws in which B scores better: higher
        accuracy and QWK, lower MAE). None where undefined.
    """
    names, photo, person = _person_confusions(true, subjects, [pred_a, pred_b],
                                              [persons_a, persons_b])
    counts = _person_draws(len(names), draws, seed)
    tail = (1.0 - level) / 2 * 100

    def differences(conf_a: np.ndarray, conf_b: np.ndarray) -> dict:
        out: dict[str, Any] = {"level": level, "draws": draws}
        if not conf_a.any():
            return {**out, **{key: None for key in ("accuracy", "mae", "qwk")}}
        point_a = confusion_scores(conf_a.sum(0))
        point_b = confusion_scores(conf_b.sum(0))
        drawn_a = confusion_scores(_resampled(counts, conf_a))
        drawn_b = confusion_scores(_resampled(counts, conf_b))
        for key in ("accuracy", "mae", "qwk"):
            a, b = float(point_a[key]), float(point_b[key])
            delta = drawn_b[key] - drawn_a[key]
            delta = delta[np.isfinite(delta)]
            if not (np.isfinite(a) and np.isfinite(b)) or not delta.size:
                out[key] = None
                continue
            better = delta < 0 if key == "mae" else delta > 0
            out[key] = {"a": a, "b": b, "difference": b - a,
                        "ci": [float(np.percentile(delta, tail)),
                               float(np.percentile(delta, 100 - tail))],
                        "b_better": float(better.mean())}
        return out

    return {"stage": differences(photo[0], photo[1]),
            "stage_person": differences(person[0], person[1])}
