"""The training loop: a handful of plain functions, torchvision-references style.

- `train_one_epoch` and `evaluate` do one pass each;
- `fit` runs a whole training from a `TrainConfig`: data, model, AdamW with warm-up and
  cosine decay, mixed precision and channels-last on CUDA, gradient clipping, early
  stopping, best (``model.*``) and last (``last.*``) checkpoints, a CSV log per epoch,
  calibration on validation, and exact resume from ``resume.safetensors``;
- under ``torchrun`` the same `fit` trains with DistributedDataParallel (gloo on CPU,
  nccl on GPU); only rank 0 evaluates and writes.

Nothing in a run folder is a pickle: weights and optimiser/RNG tensors are safetensors,
everything else JSON, YAML or CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import CONDITIONS, STAGES, TTA_MODES, VIEW_MIRROR, VIEWS, ZONE_MIRROR, ZONES, tta_mode
from scalpscan.models.checkpoint import inference_meta, load_checkpoint, save_checkpoint, write_safetensors

from .calibrate import fit_calibration
from .config import (
    TrainConfig,
    config_to_dict,
    loss_kwargs,
    model_kwargs,
    optimizer_kwargs,
    save_config,
    transform_kwargs,
)
from .losses import MultiTaskLoss, compute_pos_weight
from .metrics import Predictions, compare_predictions, compute_metrics, mask_counts
from .metrics import metrics_by as compute_by
from .plots import plot_all

__all__ = [
    "RESUME_FILE",
    "LOG_FILE",
    "TrainingError",
    "seed_everything",
    "worker_init_fn",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "make_loader",
    "train_one_epoch",
    "evaluate",
    "data_fingerprint",
    "save_resume_state",
    "load_resume_state",
    "calibrated",
    "run_calibration",
    "run_outputs",
    "claim_run_folder",
    "fit",
    "recalibrate_run",
    "evaluate_run",
    "compare_runs",
    "read_train_extra",
]

#: Resume state (model, optimiser, scheduler, RNG, epoch, early stopping): tensors in
#: safetensors, everything else JSON in the file's metadata, written in one atomic step.
RESUME_FILE = "resume.safetensors"
#: One row per epoch: losses, learning rate, validation metrics, throughput.
LOG_FILE = "train.csv"

_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


class TrainingError(RuntimeError):
    """A training run that cannot start or continue; the message says why and what to do."""


# --- randomness ----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_transform(dataset: Any, seed: int) -> None:
    """Seed the dataset's albumentations pipeline (it keeps its own generators)."""
    transform = getattr(dataset, "transform", None)
    for method in ("reseed", "set_random_seed"):
        if transform is not None and callable(getattr(transform, method, None)):
            getattr(transform, method)(seed)
            return


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker from its torch seed (itself drawn from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _seed_transform(info.dataset, seed)


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy.keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.uint32).astype(np.int64)),
    }
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    scalars = {
        "numpy": {"kind": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
    }
    return tensors, scalars


def _set_rng_state(tensors: Mapping[str, Tensor], scalars: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n = scalars["numpy"]
    np.random.set_state((n["kind"], tensors["rng.numpy.keys"].numpy().astype(np.uint32),
                         n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = scalars["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


# --- optimiser and schedule --------------------------------------------------------------


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float,
                    backbone_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and biases; the backbone may get a smaller LR.

    Parameters whose name starts with ``backbone.`` form the backbone groups.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_backbone = name.split(".", 1)[0] == "backbone" or ".backbone." in f".{name}"
        decay = param.ndim > 1
        groups.setdefault((is_backbone, decay), []).append(param)
    param_groups = []
    for (is_backbone, decay), params in sorted(groups.items()):
        group_lr = lr * (backbone_lr_scale if is_backbone else 1.0)
        param_groups.append({"params": params, "lr": group_lr,
                             "weight_decay": weight_decay if decay else 0.0})
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR at ``step``: linear warm-up, then cosine down to the floor."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR following `lr_factor`."""

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps,
                         min_lr_ratio=min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- data ----------------------------------------------------------------------------------


def make_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int, epoch: int = 0,
                workers: int = 0, distributed: bool = False, device: torch.device | None = None
                ) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on ``(seed, epoch)``.

    Training loaders shuffle with a generator seeded from ``seed`` and ``epoch`` (or a
    DistributedSampler with the same seed) and re-seed the augmentation pipeline, so a run
    resumed at epoch e sees exactly the batches an uninterrupted run would.
    """
    epoch_seed = (seed * 1_000_003 + epoch) % 2**63
    generator = torch.Generator()
    generator.manual_seed(epoch_seed)
    sampler = None
    shuffle = train
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        shuffle = False
    if train and workers == 0:
        _seed_transform(dataset, epoch_seed % 2**32)
    # Drop a last batch of one: BatchNorm cannot train on a single photo.
    n = len(sampler) if sampler is not None else len(dataset)
    drop_last = train and n > batch_size and n % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        pin_memory=device is not None and device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
    )


def _row_record(row: Any) -> list[str]:
    return [
        Path(row.image).name,
        row.subject,
        row.view or "",
        *("" if row.conditions.get(c) is None else str(row.conditions[c]) for c in CONDITIONS),
        "" if row.stage is None else str(row.stage),
        "" if row.zone_mask is None else Path(row.zone_mask).name,
        "" if row.loss_mask is None else Path(row.loss_mask).name,
    ]


def data_fingerprint(rows: Sequence[Any]) -> str:
    """SHA-256 of the manifest rows' labels and file names (independent of the folder)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(_row_record(row), ensure_ascii=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# --- one pass ------------------------------------------------------------------------------


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


def _augment(images: Tensor, *, turns: int, mirror: bool) -> Tensor:
    if mirror:
        images = images.flip(-1)
    return images.rot90(turns, dims=(-2, -1)) if turns % 4 else images


def _restore(outputs: dict[str, Tensor], *, turns: int, mirror: bool) -> dict[str, Tensor]:
    mapped = dict(outputs)
    if turns % 4:
        for key in ("zones", "hairloss"):
            mapped[key] = outputs[key].rot90(-turns, dims=(-2, -1))
    if mirror:
        mapped["view"] = mapped["view"][:, list(VIEW_MIRROR)]
        mapped["zones"] = mapped["zones"][:, list(ZONE_MIRROR)].flip(-1)
        mapped["hairloss"] = mapped["hairloss"].flip(-1)
    return mapped


def _forward_tta(model: nn.Module, batch: dict[str, Any], device: torch.device, *,
                 channels_last: bool, amp: bool, mode: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`_forward` with test-time augmentation: the mean logits of the passes of ``mode``,
    each mapped back to the photo first, as the predictor's ``tta`` does."""
    batch = _to_device(batch, device)
    sums: dict[str, Tensor] = {}
    passes = TTA_MODES[mode]  # (turns, mirrored), as inference.decoding.tta_passes reads it
    for turns, mirror in passes:
        _, outputs = _forward(model, {"image": _augment(batch["image"], turns=turns, mirror=mirror)},
                              device, channels_last=channels_last, amp=amp)
        for key, value in _restore(outputs, turns=turns, mirror=mirror).items():
            sums[key] = sums[key] + value if key in sums else value
    return batch, {key: value / len(passes) for key, value in sums.items()}


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


# --- resume state --------------------------------------------------------------------------


def save_resume_state(path: str | os.PathLike, *, model: nn.Module,
                      optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler,
                      scaler: torch.amp.GradScaler | None, state: Mapping[str, Any]) -> None:
    """Everything needed to continue a run exactly, as one safetensors file (no pickle).

    Args:
        path: file to write (atomically).
        state: JSON-safe scalars (epoch, early-stopping state, ...).
    """
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in _unwrap(model).state_dict().items()}
    optim_state = optimizer.state_dict()
    for pid, entries in optim_state["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
    rng_tensors, rng_scalars = _rng_state()
    tensors.update(rng_tensors)
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    meta = {
        "format": "scalpscan-resume/1",
        "state": dict(state),
        "param_groups": optim_state["param_groups"],
        "optim_keys": {str(pid): sorted(entries) for pid, entries in optim_state["state"].items()},
        "scheduler": sched,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_scalars,
    }
    write_safetensors(path, tensors, {"json": json.dumps(meta)})


def load_resume_state(path: str | os.PathLike, *, model: nn.Module,
                      optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler,
                      scaler: torch.amp.GradScaler | None = None,
                      restore_rng: bool = True) -> dict[str, Any]:
    """Restore a state written by `save_resume_state`; returns its scalar ``state``.

    Raises:
        TrainingError: if the file is not a resume state or does not fit the model.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = json.loads((handle.metadata() or {}).get("json", "{}"))
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path}: not a readable resume state ({exc}); start without "
                            "--resume or point --out at the interrupted run") from None
    if meta.get("format") != "scalpscan-resume/1":
        raise TrainingError(f"{path}: unknown resume format {meta.get('format')!r}")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        _unwrap(model).load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"{path}: the saved weights do not fit this model ({exc}); resume "
                            "with the same backbone and config as the interrupted run") from None
    optim_state = {"state": {}, "param_groups": meta["param_groups"]}
    for pid, keys in meta["optim_keys"].items():
        optim_state["state"][int(pid)] = {k: tensors[f"optim.{pid}.{k}"] for k in keys}
    optimizer.load_state_dict(optim_state)
    sched = dict(meta["scheduler"])
    sched["lr_lambdas"] = [None] * len(optimizer.param_groups)
    scheduler.load_state_dict(sched)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if restore_rng:
        _set_rng_state(tensors, meta["rng"])
    return meta["state"]


# --- distributed -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> _Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return _Dist(rank=rank, world=world, local_rank=local_rank)


def _resolve_device(name: str, ddp: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("device=cuda but no CUDA device is available; use device=cpu")
        return torch.device("cuda", ddp.local_rank)
    return torch.device(name)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _broadcast_flag(value: bool, ddp: _Dist, device: torch.device) -> bool:
    if not ddp.enabled:
        return value
    flag = torch.tensor([1 if value else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


# --- logging and monitoring --------------------------------------------------------------


def _flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Headline metrics as flat ``head_metric`` keys (what the CSV log and `monitor` use)."""
    flat = {
        "stage_accuracy": metrics["stage"]["accuracy"],
        "stage_mae": metrics["stage"]["mae"],
        "stage_qwk": metrics["stage"]["qwk"],
        "stage_ece": metrics["stage"]["ece"],
        "view_accuracy": metrics["view"]["accuracy"],
        "conditions_macro_f1": metrics["conditions"]["macro_f1"],
        "conditions_macro_ap": metrics["conditions"]["macro_ap"],
        "zones_mean_iou": metrics["zones"]["mean_iou"],
        "hairloss_map_mean_iou": metrics["hairloss_map"]["mean_iou"],
    }
    if "stage_person" in metrics:
        flat["stage_person_accuracy"] = metrics["stage_person"]["accuracy"]
        flat["stage_person_qwk"] = metrics["stage_person"]["qwk"]
    return flat


def _lower_is_better(monitor: str) -> bool:
    name = monitor.removeprefix("val_")
    is_loss = name == "loss" or name.startswith("loss_")
    return is_loss or name.endswith(("_mae", "_ece"))


def _read_log(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_log(path: Path, rows: list[dict[str, str]]) -> None:
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def _append_log(path: Path, row: Mapping[str, Any]) -> None:
    """Append one epoch to the CSV log (rewritten atomically; header = union of columns)."""
    rows = _read_log(path)
    rows.append({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
                 for k, v in row.items()})
    _write_log(path, rows)


def _truncate_log(path: Path, keep_epochs_below: int) -> None:
    """Drop log rows of epochs a resumed run will redo (1-based ``epoch`` column)."""
    rows = _read_log(path)
    if rows:
        _write_log(path, [r for r in rows if int(r["epoch"]) <= keep_epochs_below])


# --- the whole run -----------------------------------------------------------------------


def _load_rows(config: TrainConfig) -> tuple[list[Any], list[Any]]:
    from scalpscan.data.manifest import read_manifest

    if not config.data:
        raise TrainingError("no training manifest: give --data MANIFEST (or data: in the config)")
    train_rows = read_manifest(config.data)
    if config.val:
        val_rows = read_manifest(config.val)
    else:
        from scalpscan.data.splits import split_rows

        parts = split_rows(train_rows, (1 - config.val_fraction, config.val_fraction),
                           seed=config.seed)
        train_rows, val_rows = parts["train"], parts["val"]
    if not train_rows:
        raise TrainingError(f"{config.data}: the training split is empty")
    if not val_rows:
        raise TrainingError(f"{config.val or config.data}: the validation split is empty; "
                            "give --val MANIFEST or more subjects")
    return train_rows + read_train_extra(config, train_rows + val_rows), val_rows


def read_train_extra(config: TrainConfig, rows: Sequence[Any]) -> list[Any]:
    """The rows of ``config.train_extra`` (none when it is empty), photos that only ever
    train: they join the training rows after the validation split (or, with ``folds``,
    every fold's training rows), so no metric and no calibration rests on them.

    Raises:
        TrainingError: when a person of the extra manifest is also in ``rows`` (``data``
            and ``val``): that person would be trained on and validated on at once.
    """
    from scalpscan.data.manifest import read_manifest

    if not config.train_extra:
        return []
    extra = read_manifest(config.train_extra)
    shared = sorted({r.subject for r in extra} & {r.subject for r in rows})
    if shared:
        shown = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise TrainingError(f"{config.train_extra}: {len(shared)} person(s) of train_extra are "
                            f"also in {config.data}{' / ' + config.val if config.val else ''} "
                            f"({shown}); a person there would be validated on while being "
                            "trained on. Give the extra photos their own subject ids, or move "
                            "those persons into --data")
    return extra


def _build_model(config: TrainConfig) -> nn.Module:
    from scalpscan.models import create_model

    if not config.init_from:
        return create_model(config.model, **model_kwargs(config))
    # Fine-tuning a trained scalpscan model (e.g. renders first, then real photos, or a
    # clinic's own photos): every weight, heads included, comes from that run.
    from scalpscan.models import CheckpointError, load_checkpoint
    from scalpscan.models.pretrained import state_dict_problems

    try:
        source, meta = load_checkpoint(config.init_from)
    except CheckpointError as exc:
        raise TrainingError(f"init_from: {exc}") from None
    architecture = meta["architecture"]
    if architecture["name"] == "scalpnet_ensemble":
        raise TrainingError(f"init_from {config.init_from}: that run is an ensemble of fold "
                            "models (train --folds); start from one of its fold runs instead, "
                            f"e.g. {Path(config.init_from) / 'fold_1'}")
    theirs = (architecture["name"], architecture["kwargs"].get("backbone"))
    if theirs != (config.model, config.backbone):
        raise TrainingError(f"init_from {config.init_from}: that run is a {theirs[0]} with "
                            f"backbone {theirs[1]!r}, this config builds a {config.model} with "
                            f"backbone {config.backbone!r}; pass --backbone {theirs[1]}")
    model = create_model(config.model, **{**model_kwargs(config), "pretrained": False})
    problems = state_dict_problems(model.state_dict(), source.state_dict())
    if problems:
        raise TrainingError(f"init_from {config.init_from}: its weights do not fit this "
                            f"network: {'; '.join(problems)}")
    model.load_state_dict(source.state_dict())
    return model


def _model_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the model's (pretrained) backbone expects."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = cfg.get("mean") or _DEFAULT_MEAN
    std = cfg.get("std") or _DEFAULT_STD
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def _make_datasets(config: TrainConfig, train_rows: list[Any], val_rows: list[Any],
                   mean: Sequence[float], std: Sequence[float]) -> tuple[Dataset, Dataset]:
    from scalpscan.data.dataset import ScalpDataset
    from scalpscan.data.transforms import build_transforms

    train_tf = build_transforms(config.image_size, mean, std, train=True,
                                seed=config.seed, **transform_kwargs(config))
    val_tf = build_transforms(config.image_size, mean, std, train=False)
    return (ScalpDataset(train_rows, transform=train_tf),
            ScalpDataset(val_rows, transform=val_tf))


def calibrated(calibration: Mapping[str, Any] | None,
               view_weights: Mapping[str, float] | None) -> dict[str, Any]:
    """`compute_metrics` keyword arguments for a calibration (or ``model.json``, which
    holds the same keys); None = uncalibrated."""
    calibration = calibration or {}
    return {"thresholds": calibration.get("thresholds"),
            "temperature": calibration.get("temperature"),
            "stage_offsets": calibration.get("stage_offsets"), "view_weights": view_weights}


def _meta(config: TrainConfig, model: nn.Module, mean: Sequence[float], std: Sequence[float],
          *, fingerprint: str, calibration: Mapping[str, Any] | None,
          metrics: Mapping[str, Any] | None, epoch: int | None) -> dict[str, Any]:
    calibration = dict(calibration or {})
    meta = inference_meta(
        model,
        input_size=int(config.image_size),
        thresholds=calibration.get("thresholds"),
        temperature=calibration.get("temperature"),
        stage_offsets=[float(v) for v in calibration.get("stage_offsets") or [0.0] * (len(STAGES) - 1)],
        config=config_to_dict(config),
        data_fingerprint=fingerprint,
        metrics=dict(metrics or {}),
        epoch=epoch,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    # The normalisation actually used in training (the backbone's, or a config override).
    meta["mean"], meta["std"] = list(mean), list(std)
    return meta


#: Files a run writes; their presence means ``config.out`` already holds a run.
_RUN_FILES = ("model.json", "model.safetensors", "last.json", "last.safetensors",
              RESUME_FILE, LOG_FILE)


def _previous_run_files(run_dir: Path) -> list[str]:
    return [name for name in _RUN_FILES if (run_dir / name).exists()]


def claim_run_folder(state_path: Path, found: Callable[[], list[str]], *, resume: bool,
                     overwrite: bool) -> list[str]:
    """Check that a run may start in (or resume from) the folder of ``state_path``.

    Args:
        state_path: the file a resume continues from.
        found: lists what an earlier run left in the folder.
        resume, overwrite: what the user asked for.

    Returns:
        The earlier run's files, for the caller to delete (only with ``overwrite``).

    Raises:
        TrainingError: resume without ``state_path``, or an earlier run without
            ``overwrite``: a finished model is never lost to a mistyped ``--out``.
    """
    if resume:
        if not state_path.is_file():
            raise TrainingError(f"--resume: {state_path} does not exist; nothing to resume "
                                "(train without --resume, or point --out at the interrupted "
                                "run)")
        return []
    previous = found()
    if previous and not overwrite:
        raise TrainingError(f"{state_path.parent} already holds a run ({', '.join(previous)}); "
                            "pass --resume to continue it, --overwrite to replace it, or "
                            "choose another --out")
    return previous


def fit(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
        log: Callable[[str], None] = print) -> Path:
    """Train a model from ``config`` and leave a complete run folder in ``config.out``.

    Args:
        config: validated training config.
        resume: continue the run in ``config.out`` from its ``resume.safetensors``.
        overwrite: replace a run already in ``config.out`` (otherwise that is an error, so
            a finished model is never lost to a mistyped ``--out``).
        log: where progress lines go (rank 0 only).

    Returns:
        The run folder.

    Raises:
        TrainingError: for unusable data, a diverging loss, an unusable resume state, or an
            existing run in ``config.out`` without ``resume`` or ``overwrite``.
    """
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    ddp = _init_distributed(config.device)
    device = _resolve_device(config.device, ddp)
    say = log if ddp.main else (lambda _msg: None)
    run_dir = Path(config.out)
    resume_path = run_dir / RESUME_FILE
    previous = claim_run_folder(resume_path, lambda: _previous_run_files(run_dir),
                                resume=resume, overwrite=overwrite)
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    seed_everything(config.seed)
    train_rows, val_rows = _load_rows(config)
    fingerprint = data_fingerprint(train_rows) + ":" + data_fingerprint(val_rows)
    model = _build_model(config)
    mean, std = _model_norm(model)
    train_ds, val_ds = _make_datasets(config, train_rows, val_rows, mean, std)
    cuda = device.type == "cuda"
    channels_last = config.channels_last and cuda
    amp = config.amp and cuda
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    known = np.array([[r.conditions.get(c) is not None for c in CONDITIONS] for r in train_rows])
    targets = np.array([[r.conditions.get(c) or 0 for c in CONDITIONS] for r in train_rows])
    pos_weight = (compute_pos_weight(targets, known, max_weight=config.max_pos_weight)
                  if config.pos_weight else None)
    loss_fn = MultiTaskLoss(pos_weight=pos_weight, **loss_kwargs(config))
    optimizer = build_optimizer(model, **optimizer_kwargs(config))
    steps_per_epoch = max(1, len(make_loader(train_ds, batch_size=config.batch_size,
                                             train=True, seed=config.seed,
                                             distributed=ddp.enabled)))
    scheduler = build_scheduler(
        optimizer, warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch, min_lr_ratio=config.min_lr_ratio)
    scaler = (torch.amp.GradScaler("cuda") if amp and not torch.cuda.is_bf16_supported()
              else None)

    start_epoch = 0
    lower = _lower_is_better(config.monitor)
    best_value: float | None = None
    best_epoch = -1
    bad_epochs = 0
    if resume:
        state = load_resume_state(resume_path, model=model, optimizer=optimizer,
                                  scheduler=scheduler, scaler=scaler)
        if state.get("data_fingerprint") != fingerprint:
            raise TrainingError(f"{resume_path}: the data changed since the run was interrupted "
                                "(fingerprint differs); resume with the same manifests")
        start_epoch = int(state["epoch"]) + 1
        best_value, best_epoch, bad_epochs = state["best_value"], state["best_epoch"], \
            state["bad_epochs"]
        if ddp.main:
            _truncate_log(run_dir / LOG_FILE, start_epoch)
        say(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")
        if state.get("stopped"):
            start_epoch = config.epochs
    elif ddp.main:
        # --overwrite: none of the old run may outlive the new one (a crash in the first
        # epoch must not leave the old model beside the new config).
        for name in previous:
            (run_dir / name).unlink(missing_ok=True)

    train_model: nn.Module = model
    if ddp.enabled:
        # A head switched off (weight 0) leaves parameters without gradients.
        unused = any(w == 0 for w in config.loss_weights.values())
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None, find_unused_parameters=unused)
    subjects = [r.subject for r in val_rows]
    say(f"training {config.backbone} on {len(train_rows)} photos, validating on "
        f"{len(val_rows)} ({device}, {ddp.world} process(es)); run folder {run_dir}")

    stopped = False
    epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs):
        loader = make_loader(train_ds, batch_size=config.batch_size, train=True,
                             seed=config.seed, epoch=epoch, workers=config.workers,
                             distributed=ddp.enabled, device=device)
        train_stats = train_one_epoch(
            train_model, loader, loss_fn, optimizer, scheduler, device=device, amp=amp,
            scaler=scaler, grad_clip=config.grad_clip, channels_last=channels_last,
            progress=config.progress and ddp.main, desc=f"epoch {epoch + 1}/{config.epochs}")
        improved = False
        if ddp.main:
            val_loader = make_loader(val_ds, batch_size=config.batch_size, train=False,
                                     seed=config.seed, workers=config.workers, device=device)
            val_losses, preds = evaluate(model, val_loader, loss_fn, device=device, amp=amp,
                                         channels_last=channels_last, subjects=subjects)
            metrics = compute_metrics(preds, view_weights=config.stage_view_weights)
            flat = _flatten_metrics(metrics)
            monitored = {f"val_{k}": v for k, v in {**val_losses, **flat}.items()}
            key = config.monitor if config.monitor.startswith("val_") else f"val_{config.monitor}"
            if key not in monitored:
                raise TrainingError(f"monitor={config.monitor!r} is not logged; use one of: "
                                    f"{', '.join(monitored)}")
            value = monitored[key]
            if best_epoch < 0 or value is not None and (best_value is None or (
                    value < best_value - config.min_delta if lower
                    else value > best_value + config.min_delta)):
                best_value = best_value if value is None else float(value)
                best_epoch, bad_epochs, improved = epoch, 0, True
            else:
                bad_epochs += 1
            stopped = config.patience > 0 and bad_epochs >= config.patience
            throughput = train_stats["photos"] * ddp.world / max(train_stats["seconds"], 1e-9)
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[-1]["lr"],
                   **{f"train_{k}": v for k, v in train_stats.items()
                      if k.startswith("loss")},
                   **{f"val_{k}": v for k, v in val_losses.items()},
                   **{f"val_{k}": v for k, v in flat.items()},
                   "train_photos": train_stats["photos"] * ddp.world,
                   "photos_per_s": throughput, "seconds": train_stats["seconds"]}
            _append_log(run_dir / LOG_FILE, row)
            meta = _meta(config, model, mean, std, fingerprint=fingerprint, calibration=None,
                         metrics={"val": flat, "val_loss": val_losses["loss"]}, epoch=epoch + 1)
            save_checkpoint(run_dir, model, meta, name="last")
            if improved:
                save_checkpoint(run_dir, model, meta, name="model")
            save_resume_state(resume_path, model=model, optimizer=optimizer,
                              scheduler=scheduler, scaler=scaler,
                              state={"epoch": epoch, "best_value": best_value,
                                     "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                                     "stopped": stopped, "data_fingerprint": fingerprint})
            say(f"epoch {epoch + 1}/{config.epochs}: train loss {train_stats['loss']:.4f}  "
                f"val loss {val_losses['loss']:.4f}  {config.monitor} "
                f"{'-' if value is None else f'{value:.4f}'}"
                f"{'  (best)' if improved else ''}  {throughput:.1f} photos/s")
        stopped = _broadcast_flag(stopped, ddp, device)
        if stopped:
            say(f"early stopping: no improvement of {config.monitor} for {config.patience} "
                f"epoch(s); best epoch {best_epoch + 1}")
            break
    if ddp.enabled:
        dist.barrier()

    if ddp.main:
        _finish(config, run_dir, val_ds, subjects, loss_fn, device=device, amp=amp,
                fingerprint=fingerprint, mean=mean, std=std, say=say)
    if ddp.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return run_dir


def _finish(config: TrainConfig, run_dir: Path, val_ds: Dataset, subjects: list[str],
            loss_fn: MultiTaskLoss, *, device: torch.device, amp: bool, fingerprint: str,
            mean: Sequence[float], std: Sequence[float], say: Callable[[str], None]) -> None:
    """Calibrate the best model on validation, store its metrics, write the plots."""
    best, best_meta = load_checkpoint(run_dir, map_location=device)
    best.to(device)
    loader = make_loader(val_ds, batch_size=config.batch_size, train=False, seed=config.seed,
                         workers=config.workers, device=device)
    val_losses, preds = evaluate(best, loader, loss_fn, device=device, amp=amp,
                                 channels_last=False, subjects=subjects)
    calibration = fit_calibration(preds) if config.calibrate else None
    metrics = compute_metrics(preds, **calibrated(calibration, config.stage_view_weights))
    metrics.get("stage_person", {}).pop("persons", None)
    meta = _meta(config, best, mean, std, fingerprint=fingerprint, calibration=calibration,
                 metrics={"val": metrics, "val_loss": val_losses.get("loss")},
                 epoch=int(best_meta.get("epoch", 0)))
    save_checkpoint(run_dir, best, meta, name="model")
    plot_all(preds, run_dir / "plots", log_csv=run_dir / LOG_FILE,
             temperature=meta["temperature"], stage_offsets=meta["stage_offsets"])
    flat = _flatten_metrics(metrics)
    say("best model: epoch {}  ".format(meta["epoch"]) + "  ".join(
        f"{k} {v:.3f}" for k, v in flat.items() if v is not None))
    if calibration:
        say("calibration: temperature " + ", ".join(
            f"{k} {v:.2f}" for k, v in calibration["temperature"].items()) + "; stage offsets " +
            " ".join(f"{v:+.2f}" for v in calibration["stage_offsets"]) + "; thresholds " +
            ", ".join(f"{k} {v:.2f}" for k, v in calibration["thresholds"].items()))


def recalibrate_run(run_dir: str | os.PathLike, *, batch_size: int = 32, device: str = "cpu",
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit a finished run's calibration again on its own validation split, with this code.

    The validation split is rebuilt from the run's stored config (the same subject-grouped
    split of ``data`` when ``val`` is empty) and must match the run's data fingerprint.
    ``model.json`` gets the new temperatures, stage offsets, thresholds and validation
    metrics; the weights are not touched.

    Args:
        run_dir: the run folder.
        batch_size: photos per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        log: where the summary line goes.

    Returns:
        The new calibration (`training.calibrate.fit_calibration`).

    Raises:
        TrainingError: when the manifests changed since the run was trained.
    """
    from .config import config_from_dict

    run_dir = Path(run_dir)
    torch_device = torch.device(device)
    model, meta = load_checkpoint(run_dir, map_location=torch_device)
    config = config_from_dict(dict(meta.get("config") or {}), source=str(run_dir / "model.json"))
    if config.folds:
        raise TrainingError(f"{run_dir}: a cross-validation ensemble is calibrated on its "
                            "out-of-fold outputs; `scalpscan train --out RUN --resume` refits "
                            "that calibration with this code (the finished folds are kept)")
    train_rows, val_rows = _load_rows(config)
    fingerprint = data_fingerprint(train_rows) + ":" + data_fingerprint(val_rows)
    if meta.get("data_fingerprint") and meta["data_fingerprint"] != fingerprint:
        raise TrainingError(f"{run_dir / 'model.json'}: the manifests {config.data} / "
                            f"{config.val or '(split of data)'} changed since this run was "
                            "trained; retrain instead of recalibrating")
    _, val_ds = _make_datasets(config, train_rows, val_rows, meta["mean"], meta["std"])
    loader = make_loader(val_ds, batch_size=batch_size, train=False, seed=config.seed,
                         workers=0, device=torch_device)
    _, preds = evaluate(model, loader, None, device=torch_device,
                        subjects=[r.subject for r in val_rows])
    calibration = fit_calibration(preds)
    metrics = compute_metrics(preds, **calibrated(calibration, config.stage_view_weights))
    metrics.get("stage_person", {}).pop("persons", None)
    meta = dict(meta)
    meta.update(temperature=calibration["temperature"], thresholds=calibration["thresholds"],
                stage_offsets=calibration["stage_offsets"])
    meta["metrics"] = {**dict(meta.get("metrics") or {}), "val": metrics}
    save_checkpoint(run_dir, model, meta, name="model")
    log(f"{run_dir}: stage temperature {calibration['temperature']['stage']:.3f}, offsets "
        + " ".join(f"{v:+.2f}" for v in calibration["stage_offsets"])
        + f"; validation stage ECE {metrics['stage']['ece']:.3f}")
    return calibration


def _column_values(rows: Sequence[Any], column: str) -> list[str]:
    """Each row's value of a manifest column (core or extra), as text."""
    values = []
    for row in rows:
        if column == "view":
            values.append(row.view or "")
        elif column == "subject":
            values.append(row.subject)
        elif column == "stage":
            values.append("" if row.stage is None else str(row.stage))
        elif column in CONDITIONS:
            value = row.conditions.get(column)
            values.append("" if value is None else str(value))
        elif column in row.extra:
            values.append(row.extra[column])
        else:
            known = ["view", "subject", "stage", *CONDITIONS, *row.extra]
            raise TrainingError(f"--by {column}: the manifest has no such column; "
                                f"columns: {', '.join(known)}")
    return values


def _rows_to_evaluate(manifest: str | os.PathLike) -> list[Any]:
    from scalpscan.data.manifest import read_manifest

    rows = read_manifest(manifest)
    if not rows:
        raise TrainingError(f"{manifest}: the manifest has no rows to evaluate")
    return rows


def run_outputs(model_path: str | os.PathLike, rows: Sequence[Any], *, batch_size: int = 32,
                device: str | torch.device = "cpu", workers: int = 0, progress: bool = False,
                tta: str | None = None) -> tuple[Predictions, nn.Module, dict[str, Any]]:
    """A trained run's raw outputs on manifest ``rows`` (with its own input size and
    normalisation), the loaded network and its ``model.json``."""
    from scalpscan.data.dataset import ScalpDataset
    from scalpscan.data.transforms import build_transforms

    torch_device = torch.device(device)
    model, meta = load_checkpoint(model_path, map_location=torch_device)
    transform = build_transforms(int(meta["input_size"]), meta["mean"], meta["std"], train=False)
    loader = make_loader(ScalpDataset(rows, transform=transform), batch_size=batch_size,
                         train=False, seed=0, workers=workers, device=torch_device)
    _, preds = evaluate(model, loader, None, device=torch_device,
                        subjects=[r.subject for r in rows], progress=progress, tta=tta)
    return preds, model, meta


def run_calibration(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`compute_metrics` keyword arguments of a run's stored calibration (its ``model.json``)."""
    return calibrated(meta, (meta.get("config") or {}).get("stage_view_weights"))


def evaluate_run(model_path: str | os.PathLike, manifest: str | os.PathLike, *,
                 out_dir: str | os.PathLike | None = None, by: Sequence[str] = (),
                 batch_size: int = 32, device: str = "cpu", workers: int = 0,
                 progress: bool = False, tta: bool | str | None = None,
                 ci_draws: int = 1000) -> dict[str, Any]:
    """Evaluate a trained run on a manifest; write ``metrics.json`` and plots.

    Uses the run's own input size, normalisation, temperatures and thresholds.

    Args:
        model_path: run folder, ``model.safetensors`` or ``model.json``.
        manifest: manifest CSV to evaluate on.
        out_dir: where ``metrics.json`` and the PNG plots go; None writes nothing.
        by: manifest columns to break every metric down by (``view`` is always included).
        batch_size: photos per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes.
        progress: show a progress bar.
        tta: test-time augmentation mode as for `evaluate` (None/False, True = "flip",
            "rot", "d4"), as ``Predictor(tta=...)`` and ``scalpscan score --tta`` run it
            (the temperatures and thresholds were fitted without it).
        ci_draws: person-bootstrap draws for the stage intervals (0 = none); the
            breakdowns get none.

    Returns:
        ``{"metrics": ..., "by": {column: {value: metrics}}, "model": ..., "data": ...,
        "tta": None or the mode}``.

    Raises:
        ValueError: if ``tta`` is not a mode.
    """
    tta = tta_mode(tta)  # refuse a bad mode before loading anything
    rows = _rows_to_evaluate(manifest)
    columns = ["view", *[c for c in by if c != "view"]]
    groups = {column: _column_values(rows, column) for column in columns}
    preds, _, meta = run_outputs(model_path, rows, batch_size=batch_size, device=device,
                                 workers=workers, progress=progress, tta=tta)
    kwargs = run_calibration(meta)
    metrics = compute_metrics(preds, **kwargs, ci_draws=ci_draws)
    breakdowns = {
        column: compute_by(preds, column, [values[i] for i in preds.index], **kwargs)
        for column, values in groups.items()
    }
    run_dir = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
    result = {
        "model": str(model_path),
        "data": {"manifest": str(manifest), "rows": len(rows),
                 "fingerprint": data_fingerprint(rows)},
        "model_fingerprint": meta.get("data_fingerprint"),
        "tta": tta,
        "temperature": meta.get("temperature"),
        "stage_offsets": meta.get("stage_offsets"),
        "thresholds": meta.get("thresholds"),
        "metrics": metrics,
        "by": breakdowns,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "metrics.json",
                           json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
        log_csv = run_dir / LOG_FILE
        plot_all(preds, out, log_csv=log_csv if log_csv.is_file() else None,
                 temperature=meta.get("temperature"), stage_offsets=meta.get("stage_offsets"))
    return result


def compare_runs(model_a: str | os.PathLike, model_b: str | os.PathLike,
                 manifest: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                 batch_size: int = 32, device: str = "cpu", workers: int = 0,
                 progress: bool = False, tta: bool | str | None = None,
                 ci_draws: int = 1000) -> dict[str, Any]:
    """Two runs on the same photos: each one's metrics, and B - A for the stage with
    paired person-bootstrap intervals (`training.metrics.paired_stage_differences`).

    On a small test set the two runs' own intervals overlap almost always; the paired
    interval of their difference is the honest answer to "is B better than A?".

    Args:
        model_a, model_b: run folders (or ``model.safetensors`` / ``model.json``); each
            uses its own input size, normalisation and calibration.
        manifest: manifest CSV both are evaluated on.
        out_dir: where ``compare.json`` goes; None writes nothing.
        batch_size, device, workers, progress, tta: as for `evaluate_run` (TTA for both).
        ci_draws: paired bootstrap draws (at least 1).

    Returns:
        ``{"a": {"model", "metrics"}, "b": {...}, "difference": {"stage": ...,
        "stage_person": ...}, "photos", "persons", "data", "tta", "created"}``.

    Raises:
        ValueError: for an unknown ``tta`` mode or ``ci_draws`` < 1.
        TrainingError: for an empty manifest.
        CheckpointError: for a run folder that does not hold a model.
    """
    tta = tta_mode(tta)
    if ci_draws < 1:
        raise ValueError(f"ci_draws={ci_draws}: a comparison needs at least one draw")
    rows = _rows_to_evaluate(manifest)
    outputs = [run_outputs(path, rows, batch_size=batch_size, device=device, workers=workers,
                           progress=progress, tta=tta) for path in (model_a, model_b)]
    (preds_a, _, meta_a), (preds_b, _, meta_b) = outputs
    try:
        compared = compare_predictions(preds_a, preds_b, calibration_a=run_calibration(meta_a),
                                       calibration_b=run_calibration(meta_b), draws=ci_draws)
    except ValueError as exc:
        raise TrainingError(f"{manifest}: {exc}") from None
    sides = {side: {"model": str(path), "metrics": compared[side]}
             for side, path in (("a", model_a), ("b", model_b))}
    result = {**sides, "difference": compared["difference"], "photos": len(preds_a),
              "persons": len(set(preds_a.subjects)),
              "data": {"manifest": str(manifest), "rows": len(rows),
                       "fingerprint": data_fingerprint(rows)},
              "tta": tta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "compare.json",
                          json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n")
    return result


def _json_safe(value: Any) -> Any:
    """NaN/inf become null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
