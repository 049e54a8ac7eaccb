"""PNG plots of a run: learning curves, precision-recall, stage confusion, reliability.

matplotlib with the Agg backend (no display needed). Each function writes one PNG
atomically and returns its path, or None when there is nothing to plot.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import expit, softmax  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve  # noqa: E402

from scalpscan.data.files import atomic_write  # noqa: E402
from scalpscan.data.vocab import CONDITIONS, STAGES  # noqa: E402
from scalpscan.models.ordinal import ordinal_index, ordinal_probabilities  # noqa: E402

from .metrics import Predictions, reliability_bins  # noqa: E402

__all__ = [
    "plot_learning_curves",
    "plot_precision_recall",
    "plot_stage_confusion",
    "plot_reliability",
    "plot_all",
]


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight",
                                                          format="png"))
    finally:
        plt.close(fig)


def _unit_axes(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, a legend and a grid for a plot of two quantities between 0 and 1."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title)


def plot_learning_curves(log_csv: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Loss per epoch (train and validation) and the validation metrics logged beside it."""
    log_csv = Path(log_csv)
    if not log_csv.is_file():
        return None
    with log_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("train_loss", "val_loss"):
        if name in rows[0]:
            ax_loss.plot(epochs, column(name), marker="o", label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for name in ("val_stage_accuracy", "val_stage_qwk", "val_view_accuracy",
                 "val_conditions_macro_f1", "val_zones_mean_iou"):
        if name in rows[0] and not np.all(np.isnan(column(name))):
            ax_metric.plot(epochs, column(name), marker="o", label=name[4:])
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylim(-0.05, 1.05)
    ax_metric.legend(fontsize=8)
    ax_metric.grid(alpha=0.3)
    fig.suptitle("learning curves")
    return _save(fig, Path(path))


def plot_precision_recall(preds: Predictions, path: str | os.PathLike, *,
                          temperature: float = 1.0) -> Path | None:
    """One precision-recall curve per condition with known positives and negatives."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    drawn = 0
    probs = expit(preds.condition_logits / temperature)
    for c, name in enumerate(CONDITIONS):
        known = preds.condition_known[:, c].astype(bool)
        y = preds.condition_targets[known, c].astype(int)
        if len(np.unique(y)) < 2:
            continue
        precision, recall, _ = precision_recall_curve(y, probs[known, c])
        ax.plot(recall, precision, label=f"{name} (n={known.sum()}, pos={y.sum()})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    _unit_axes(ax, "recall", "precision", "precision-recall per condition")
    return _save(fig, Path(path))


def plot_stage_confusion(preds: Predictions, path: str | os.PathLike, *,
                         temperature: float = 1.0,
                         offsets: Sequence[float] | None = None) -> Path | None:
    """Norwood stage confusion matrix (rows true, columns predicted) over known stages.

    The prediction uses the stage calibration (``temperature``, ``offsets``) when given.
    """
    known = preds.stage >= 0
    if not known.any():
        return None
    labels = list(range(len(STAGES)))
    pred = ordinal_index(preds.stage_logits[known], temperature, offsets)
    matrix = confusion_matrix(preds.stage[known], pred, labels=labels)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(matrix, cmap="Blues")
    for i in labels:
        for j in labels:
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black", fontsize=8)
    ax.set_xticks(labels, [str(s) for s in STAGES])
    ax.set_yticks(labels, [str(s) for s in STAGES])
    ax.set_xlabel("predicted Norwood stage")
    ax.set_ylabel("true Norwood stage")
    fig.colorbar(image, ax=ax)
    ax.set_title(f"stage confusion (n={int(known.sum())})")
    return _save(fig, Path(path))


def plot_reliability(preds: Predictions, path: str | os.PathLike, *,
                     temperature: Mapping[str, float] | None = None,
                     stage_offsets: Sequence[float] | None = None) -> Path | None:
    """Reliability diagram (accuracy vs confidence) for conditions, stage and view."""
    t = {"conditions": 1.0, "stage": 1.0, "view": 1.0, **dict(temperature or {})}
    series = []
    known = preds.condition_known.astype(bool)
    if known.any():
        p = expit(preds.condition_logits / t["conditions"])[known]
        y = preds.condition_targets[known] > 0.5
        series.append(("conditions", np.maximum(p, 1 - p), (p >= 0.5) == y))
    sk = preds.stage >= 0
    if sk.any():
        probs = ordinal_probabilities(preds.stage_logits[sk], t["stage"], stage_offsets)
        pred = ordinal_index(preds.stage_logits[sk], t["stage"], stage_offsets)
        series.append(("stage", probs[np.arange(len(pred)), pred], pred == preds.stage[sk]))
    vk = preds.view >= 0
    if vk.any():
        probs = softmax(preds.view_logits[vk] / t["view"], axis=-1)
        series.append(("view", probs.max(1), probs.argmax(1) == preds.view[vk]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
    for name, confidence, correct in series:
        bins = reliability_bins(confidence, correct)
        used = bins["count"] > 0
        ax.plot(bins["confidence"][used], bins["accuracy"][used], marker="o",
                label=f"{name} (n={len(confidence)})")
    _unit_axes(ax, "confidence", "accuracy", "reliability diagram")
    return _save(fig, Path(path))


def plot_all(preds: Predictions, out_dir: str | os.PathLike, *,
             log_csv: str | os.PathLike | None = None,
             temperature: Mapping[str, float] | None = None,
             stage_offsets: Sequence[float] | None = None) -> list[Path]:
    """Every plot that has data, written into ``out_dir``; returns the written paths.

    ``temperature`` and ``stage_offsets`` are the model's calibration (``model.json``).
    """
    out_dir = Path(out_dir)
    t = dict(temperature or {})
    written = [
        plot_learning_curves(log_csv, out_dir / "learning_curves.png") if log_csv else None,
        plot_precision_recall(preds, out_dir / "precision_recall.png",
                              temperature=t.get("conditions", 1.0)),
        plot_stage_confusion(preds, out_dir / "stage_confusion.png",
                             temperature=t.get("stage", 1.0), offsets=stage_offsets),
        plot_reliability(preds, out_dir / "reliability.png", temperature=t,
                         stage_offsets=stage_offsets),
    ]
    return [p for p in written if p is not None]
