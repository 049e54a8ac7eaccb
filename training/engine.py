"""The engine: one forward pass, its test-time-augmented variant, one training epoch and
one evaluation pass (torchvision references' ``train_one_epoch`` / ``evaluate``).

Both passes take a model, a loader and plain values; `training.trainer.fit` decides what
runs when.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from scalpscan.data.vocab import CONDITIONS, STAGES, VIEWS, ZONES, tta_mode
from scalpscan.models.tta import tta_outputs

from .errors import TrainingError
from .losses import MultiTaskLoss
from .metrics import Predictions, mask_counts

__all__ = ["train_one_epoch", "evaluate"]


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return nullcontext()


def _progress(iterable: Iterable, *, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True,
                file=sys.stderr)


def _forward(model: nn.Module, batch: dict[str, Any], device: torch.device, *,
             channels_last: bool, amp: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Move a batch to the device and run the model; outputs come back as float32."""
    batch = _to_device(batch, device)
    images = batch["image"]
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp):
        outputs = model(images)
    return batch, {k: v.float() for k, v in outputs.items()}


def _forward_tta(model: nn.Module, batch: dict[str, Any], device: torch.device, *,
                 channels_last: bool, amp: bool, mode: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`_forward` with test-time augmentation: the mean logits of the passes of ``mode``,
    each mapped back to the photo first (`scalpscan.models.tta`, as the Predictor's ``tta``)."""
    batch = _to_device(batch, device)

    def run(images: Tensor) -> dict[str, Tensor]:
        return _forward(model, {"image": images}, device, channels_last=channels_last, amp=amp)[1]

    return batch, tta_outputs(run, batch["image"], mode)


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: MultiTaskLoss,
                    optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, *, device: torch.device,
                    amp: bool = False, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float = 0.0, channels_last: bool = False,
                    progress: bool = False, desc: str = "train") -> dict[str, float]:
    """One pass over ``loader`` with one optimiser and scheduler step per batch.

    Returns:
        Mean total loss and per-head losses (``loss``, ``loss_<head>``), ``photos`` and
        ``seconds`` of the pass.
    """
    model.train()
    sums: dict[str, float] = {}
    photos = 0
    start = time.perf_counter()
    bar = _progress(loader, enabled=progress, desc=desc, total=len(loader))
    for batch in bar:
        batch, outputs = _forward(model, batch, device, channels_last=channels_last, amp=amp)
        images = batch["image"]
        loss, parts = loss_fn(outputs, batch)
        if not torch.isfinite(loss):
            raise TrainingError(f"the training loss became {float(loss)} at {desc}; lower the "
                                "learning rate (--set lr=...) or enable gradient clipping")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        n = images.shape[0]
        photos += n
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
        for name, value in parts.items():
            sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0.0) + value * n
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{sums['loss'] / photos:.4f}")
    result = {k: v / max(photos, 1) for k, v in sums.items()}
    result["photos"] = photos
    result["seconds"] = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss_fn: MultiTaskLoss | None = None, *,
             device: torch.device, amp: bool = False, channels_last: bool = False,
             subjects: Sequence[str] | None = None, progress: bool = False,
             desc: str = "eval", tta: bool | str | None = None) -> tuple[dict[str, float], Predictions]:
    """Run ``model`` over ``loader`` and gather every output and label.

    Masks are compared at the label resolution (logits upsampled bilinearly, > 0).

    Args:
        subjects: subject id of every dataset row (by ``index``), for per-person metrics.
        tta: test-time augmentation: None/False (off), "flip" (the photo and its mirror),
            "rot" (the photo turned by 0, 90, 180 and 270 degrees) or "d4" (the four turns
            with and without the mirror); True means "flip". Each pass's outputs are mapped
            back to the photo, then the logits are averaged.

    Returns:
        Mean losses (empty without ``loss_fn``) and the gathered `Predictions`.
    """
    model.eval()
    keep: dict[str, list[np.ndarray]] = {k: [] for k in (
        "condition_logits", "condition_targets", "condition_known", "stage_logits", "stage",
        "view_logits", "view", "zone_counts", "zones_known", "hairloss_counts", "hairloss_known",
        "index")}
    sums: dict[str, float] = {}
    photos = 0
    mode = tta_mode(tta)
    forward = _forward if mode is None else partial(_forward_tta, mode=mode)
    for batch in _progress(loader, enabled=progress, desc=desc, total=len(loader)):
        batch, outputs = forward(model, batch, device, channels_last=channels_last, amp=amp)
        images = batch["image"]
        n = images.shape[0]
        photos += n
        if loss_fn is not None:
            loss, parts = loss_fn(outputs, batch)
            sums["loss"] = sums.get("loss", 0.0) + float(loss) * n
            for name, value in parts.items():
                sums[f"loss_{name}"] = sums.get(f"loss_{name}", 0.0) + value * n
        for head, target, counts_key in (("zones", "zones", "zone_counts"),
                                         ("hairloss", "hairloss", "hairloss_counts")):
            logits = outputs[head]
            size = batch[target].shape[-2:]
            if logits.shape[-2:] != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            keep[counts_key].append(mask_counts((logits > 0).cpu().numpy(),
                                                (batch[target] > 0.5).cpu().numpy()))
        keep["condition_logits"].append(outputs["conditions"].cpu().numpy())
        keep["condition_targets"].append(batch["conditions"].cpu().numpy())
        keep["condition_known"].append(batch["conditions_known"].cpu().numpy())
        keep["stage_logits"].append(outputs["stage"].cpu().numpy())
        keep["stage"].append(batch["stage"].cpu().numpy())
        keep["view_logits"].append(outputs["view"].cpu().numpy())
        keep["view"].append(batch["view"].cpu().numpy())
        keep["zones_known"].append(batch["zones_known"].cpu().numpy())
        keep["hairloss_known"].append(batch["hairloss_known"].cpu().numpy())
        keep["index"].append(batch["index"].cpu().numpy())
    arrays = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in keep.items()}
    index = arrays["index"].astype(np.int64)
    preds = Predictions(
        condition_logits=arrays["condition_logits"].reshape(-1, len(CONDITIONS)),
        condition_targets=arrays["condition_targets"].reshape(-1, len(CONDITIONS)),
        condition_known=arrays["condition_known"].reshape(-1, len(CONDITIONS)).astype(bool),
        stage_logits=arrays["stage_logits"].reshape(-1, len(STAGES) - 1),
        stage=arrays["stage"].astype(np.int64),
        view_logits=arrays["view_logits"].reshape(-1, len(VIEWS)),
        view=arrays["view"].astype(np.int64),
        zone_counts=arrays["zone_counts"].reshape(-1, len(ZONES), 3),
        zones_known=arrays["zones_known"].astype(bool),
        hairloss_counts=arrays["hairloss_counts"].reshape(-1, len(CONDITIONS), 3),
        hairloss_known=arrays["hairloss_known"].astype(bool),
        index=index,
        subjects=[subjects[i] for i in index] if subjects is not None else [],
    )
    losses = {k: v / max(photos, 1) for k, v in sums.items()}
    return losses, preds

