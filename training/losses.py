"""Per-head losses that learn from what is known and ignore what is not.

Every label may be unknown for a photo (``*_known`` masks, stage/view ``-1``). An unknown
entry contributes neither to the loss nor to the gradient: it is masked out before the
mean, and the mean is taken over known entries only.

The network's output dict and the batch dict follow the tensor contract of
``data.dataset.ScalpDataset`` and ``models``' ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scalpscan.data.vocab import CONDITIONS, VIEWS
from scalpscan.training.config import MASK_RESOLUTIONS

__all__ = [
    "HEADS",
    "MASK_RESOLUTIONS",
    "condition_loss",
    "ordinal_targets",
    "ordinal_stage_loss",
    "view_loss",
    "mask_loss",
    "dice_loss",
    "compute_pos_weight",
    "MultiTaskLoss",
]

#: Heads of the multi-task network, in the order losses are reported.
HEADS: tuple[str, ...] = ("conditions", "stage", "view", "zones", "hairloss")


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean; zero (with a gradient path) when every weight is zero."""
    weights = weights.to(values.dtype)
    # where() rather than multiply so that a NaN/inf in an unknown entry cannot leak in.
    total = torch.where(weights > 0, values * weights, torch.zeros_like(values)).sum()
    return total / weights.sum().clamp_min(1e-12)


def condition_loss(logits: Tensor, targets: Tensor, known: Tensor,
                   pos_weight: Tensor | None = None) -> Tensor:
    """Multi-label BCE over known (photo, condition) entries.

    Args:
        logits: [B, C] raw scores.
        targets: [B, C] 0/1.
        known: [B, C] bool, False where the label is unknown.
        pos_weight: [C] weight of positives (class-imbalance correction), or None.
    """
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=logits.device, dtype=logits.dtype)
    # Unknown entries are replaced before the loss, so even a NaN there gets zero gradient.
    logits = torch.where(known, logits, torch.zeros_like(logits))
    per_entry = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )
    return _masked_mean(per_entry, known)


def ordinal_targets(stage: Tensor, n_thresholds: int) -> Tensor:
    """Cumulative targets: ``[B, K]`` with entry k = 1 when class index > k.

    Class index 0 (Norwood 1) gives all zeros, index K gives all ones.
    """
    thresholds = torch.arange(n_thresholds, device=stage.device)
    return (stage.unsqueeze(1) > thresholds).float()


def ordinal_stage_loss(logits: Tensor, stage: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cumulative-link BCE over the K = classes-1 thresholds ("is the stage above k?").

    A prediction three stages off gets three thresholds wrong, one stage off gets one, so
    the loss grows with the distance between stages (3 is closer to 4 than to 7).

    Args:
        logits: [B, K] ordinal logits, ``sigmoid(logits[:, k]) = P(index > k)``.
        stage: [B] class index 0..K, -1 unknown.
        weights: [B] per-photo weights (e.g. by view), or None for 1.
    """
    known = stage >= 0
    targets = ordinal_targets(stage.clamp_min(0), logits.shape[1]).to(logits.dtype)
    per_photo = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
    w = known.to(logits.dtype)
    if weights is not None:
        w = w * weights.to(device=logits.device, dtype=logits.dtype)
    return _masked_mean(per_photo, w)


def view_loss(logits: Tensor, view: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over photos whose view is known (``view == -1`` is ignored)."""
    known = view >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, view, ignore_index=-1, label_smoothing=label_smoothing)


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss per channel over the whole batch: ``[C]``, 0 = perfect overlap.

    Pixels of all photos are pooled per channel (a "batch Dice"). Per photo, every photo
    that does not show a thin, rare zone (the part line) would reward marking nothing
    and outvote the few that show it; pooled, that zone's Dice is decided where it is.
    """
    probs = torch.sigmoid(logits)
    inter = (probs * targets).transpose(0, 1).flatten(1).sum(-1)
    total = probs.transpose(0, 1).flatten(1).sum(-1) + targets.transpose(0, 1).flatten(1).sum(-1)
    return 1.0 - (2.0 * inter + eps) / (total + eps)


def mask_loss(logits: Tensor, targets: Tensor, known: Tensor, *, dice_weight: float = 1.0,
              resolution: str = "target") -> Tensor:
    """BCE + soft Dice over photos whose mask is known.

    Args:
        logits: [B, C, h, w] raw per-pixel scores (the decoder's stride-4 map).
        targets: [B, C, H, W] 0/1 masks.
        known: [B] bool.
        dice_weight: weight of the Dice term against the BCE term.
        resolution: where the two meet. ``"target"``: the logits are upsampled bilinearly
            to the masks' size, exactly as evaluation and inference read them, so a zone
            narrower than the stride (the part line) is learnt where it is scored.
            ``"logits"``: the masks are shrunk to the logits' size by area averaging
            (cheaper; a thin zone becomes a faint soft target).
    """
    if resolution not in MASK_RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(MASK_RESOLUTIONS)}, "
                         f"got {resolution!r}")
    if not bool(known.any()):
        return logits.sum() * 0.0
    logits = logits[known]
    targets = targets[known].to(logits.dtype)
    if targets.shape[-2:] != logits.shape[-2:]:
        if targets.shape[-1] < logits.shape[-1]:  # masks coarser than the logits
            targets = F.interpolate(targets, size=logits.shape[-2:], mode="nearest")
        elif resolution == "target":
            logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear",
                                   align_corners=False)
        else:
            targets = F.interpolate(targets, size=logits.shape[-2:], mode="area")
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")
    return bce + dice_weight * dice_loss(logits, targets).mean()


def compute_pos_weight(targets: np.ndarray | Tensor, known: np.ndarray | Tensor, *,
                       max_weight: float = 20.0) -> Tensor:
    """Weight of positives per condition, ``negatives / positives`` among known labels.

    Conditions with no known positive or no known negative get weight 1. The weight is
    clipped to ``[1 / max_weight, max_weight]`` so that a rare condition cannot swamp the rest.

    Args:
        targets: [N, C] 0/1 training labels.
        known: [N, C] bool.
        max_weight: clip bound.
    """
    targets = np.asarray(targets, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    pos = (targets * known).sum(0)
    neg = ((1 - targets) * known).sum(0)
    weight = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(weight, 1.0 / max_weight, max_weight), dtype=torch.float32)


class MultiTaskLoss:
    """Weighted sum of the per-head losses, skipping unknown labels.

    Args:
        weights: head name -> weight (missing heads weigh 1; 0 switches a head off).
        pos_weight: [C] condition positive weights (see `compute_pos_weight`), or None.
        stage_view_weights: view name -> weight of the stage loss for photos of that view.
        label_smoothing: view cross-entropy label smoothing.
        mask_resolution: where the zone and loss-map losses are computed (see
            :func:`mask_loss`): ``"target"`` (the masks' resolution) or ``"logits"``.
    """

    def __init__(self, *, weights: Mapping[str, float] | None = None,
                 pos_weight: Tensor | Sequence[float] | None = None,
                 stage_view_weights: Mapping[str, float] | None = None,
                 label_smoothing: float = 0.0,
                 mask_resolution: str = "target") -> None:
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {', '.join(MASK_RESOLUTIONS)}, "
                             f"got {mask_resolution!r}")
        self.mask_resolution = mask_resolution
        weights = dict(weights or {})
        unknown = set(weights) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown loss head(s) {sorted(unknown)}; known: {', '.join(HEADS)}")
        self.weights = {head: float(weights.get(head, 1.0)) for head in HEADS}
        self.pos_weight = None if pos_weight is None else torch.as_tensor(pos_weight,
                                                                          dtype=torch.float32)
        if self.pos_weight is not None and self.pos_weight.shape != (len(CONDITIONS),):
            raise ValueError(f"pos_weight must have {len(CONDITIONS)} entries, "
                             f"got shape {tuple(self.pos_weight.shape)}")
        view_weights = dict(stage_view_weights or {})
        bad = set(view_weights) - set(VIEWS)
        if bad:
            raise ValueError(f"unknown view(s) {sorted(bad)} in stage_view_weights; "
                             f"known: {', '.join(VIEWS)}")
        # Index len(VIEWS) is the weight of photos whose view is unknown.
        self.view_weight_table = torch.tensor(
            [float(view_weights.get(v, 1.0)) for v in VIEWS] + [1.0], dtype=torch.float32
        )
        self.label_smoothing = float(label_smoothing)

    def stage_weights(self, view: Tensor) -> Tensor:
        """[B] stage-loss weight of each photo from its view index (-1 = unknown view)."""
        table = self.view_weight_table.to(view.device)
        return table[torch.where(view >= 0, view, torch.full_like(view, len(VIEWS)))]

    def __call__(self, outputs: Mapping[str, Tensor],
                 batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Total loss and each head's (unweighted) value as floats for logging."""
        parts: dict[str, Tensor] = {}
        w = self.weights
        if w["conditions"] > 0:
            parts["conditions"] = condition_loss(outputs["conditions"], batch["conditions"],
                                                 batch["conditions_known"], self.pos_weight)
        if w["stage"] > 0:
            parts["stage"] = ordinal_stage_loss(outputs["stage"], batch["stage"],
                                                self.stage_weights(batch["view"]))
        if w["view"] > 0:
            parts["view"] = view_loss(outputs["view"], batch["view"],
                                      label_smoothing=self.label_smoothing)
        if w["zones"] > 0:
            parts["zones"] = mask_loss(outputs["zones"], batch["zones"], batch["zones_known"],
                                      resolution=self.mask_resolution)
        if w["hairloss"] > 0:
            parts["hairloss"] = mask_loss(outputs["hairloss"], batch["hairloss"], batch["hairloss_known"],
                                     resolution=self.mask_resolution)
        total = sum((w[name] * value.float() for name, value in parts.items()),
                    start=torch.zeros((), device=outputs["stage"].device))
        return total, {name: float(value.detach()) for name, value in parts.items()}
