"""`fit`: a whole training run from a `TrainConfig` into a run folder.

Data, model, AdamW with warm-up and cosine decay, mixed precision and channels-last on
CUDA, gradient clipping, early stopping, best (``model.*``) and last (``last.*``)
checkpoints, a CSV log per epoch (``train.csv``), calibration on validation, and exact
resume from ``resume.safetensors``. Under ``torchrun`` the same `fit` trains with
DistributedDataParallel; only rank 0 evaluates and writes.

The pieces live beside it: `training.engine` (the passes), `training.optimizer`,
`training.state` (resume, run folder), `training.distributed`, `training.datasets`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import CONDITIONS, STAGES
from scalpscan.models.checkpoint import inference_meta, load_checkpoint, save_checkpoint
from scalpscan.models.provenance import head_provenance, with_figures

from .calibrate import fit_calibration, untouched_mask
from .config import TrainConfig, config_to_dict, loss_kwargs, model_kwargs, optimizer_kwargs, save_config
from .datasets import data_fingerprint, load_rows, make_datasets, make_loader
from .distributed import broadcast_flag, barrier, init_distributed, resolve_device, shutdown
from .engine import evaluate, train_one_epoch
from .errors import TrainingError
from .evaluation import calibrated
from .losses import MultiTaskLoss, compute_pos_weight
from .metrics import compute_metrics
from .optimizer import build_optimizer, build_scheduler
from .plots import plot_all
from .state import (
    LOG_FILE,
    RESUME_FILE,
    claim_run_folder,
    load_resume_state,
    previous_run_files,
    save_resume_state,
    seed_everything,
)

__all__ = ["fit", "build_model", "model_norm", "run_meta", "flatten_metrics"]

#: ImageNet normalisation, for backbones that do not name their own.
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


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
    ddp = init_distributed(config.device)
    device = resolve_device(config.device, ddp)
    say = log if ddp.main else (lambda _msg: None)
    run_dir = Path(config.out)
    resume_path = run_dir / RESUME_FILE
    previous = claim_run_folder(resume_path, lambda: previous_run_files(run_dir),
                                resume=resume, overwrite=overwrite)
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    seed_everything(config.seed)
    train_rows, val_rows = load_rows(config)
    fingerprint = data_fingerprint(train_rows) + ":" + data_fingerprint(val_rows)
    # What each output learns from (model.json "heads"): what no label trains is not reported.
    heads = head_provenance(train_rows, val_rows, config.loss_weights)
    model = build_model(config)
    mean, std = model_norm(model)
    train_ds, val_ds = make_datasets(config, train_rows, val_rows, mean, std)
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
            metrics = compute_metrics(preds)
            flat = flatten_metrics(metrics)
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
            meta = run_meta(config, model, mean, std, fingerprint=fingerprint, calibration=None,
                            metrics={"val": flat, "val_loss": val_losses["loss"]}, epoch=epoch + 1,
                            heads=heads)
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
        stopped = broadcast_flag(stopped, ddp, device)
        if stopped:
            say(f"early stopping: no improvement of {config.monitor} for {config.patience} "
                f"epoch(s); best epoch {best_epoch + 1}")
            break
    barrier(ddp)

    if ddp.main:
        _finish(config, run_dir, val_ds, subjects, loss_fn, device=device, amp=amp,
                fingerprint=fingerprint, mean=mean, std=std, say=say, heads=heads)
    shutdown(ddp)
    return run_dir


def _finish(config: TrainConfig, run_dir: Path, val_ds: Dataset, subjects: list[str],
            loss_fn: MultiTaskLoss, *, device: torch.device, amp: bool, fingerprint: str,
            mean: Sequence[float], std: Sequence[float], say: Callable[[str], None],
            heads: Mapping[str, Any]) -> None:
    """Calibrate the best model on validation, store its metrics, write the plots."""
    best, best_meta = load_checkpoint(run_dir, map_location=device)
    best.to(device)
    loader = make_loader(val_ds, batch_size=config.batch_size, train=False, seed=config.seed,
                         workers=config.workers, device=device)
    val_losses, preds = evaluate(best, loader, loss_fn, device=device, amp=amp,
                                 channels_last=False, subjects=subjects)
    calibration = (fit_calibration(preds, untouched=untouched_mask(preds, val_ds.rows),
                                   max_false_rate=config.finding_false_rate)
                   if config.calibrate else None)
    metrics = compute_metrics(preds, **calibrated(calibration, heads))
    metrics.get("stage_person", {}).pop("persons", None)
    meta = run_meta(config, best, mean, std, fingerprint=fingerprint, calibration=calibration,
                    metrics={"val": metrics, "val_loss": val_losses.get("loss")},
                    epoch=int(best_meta.get("epoch", 0)),
                    heads=with_figures(heads, metrics, (calibration or {}).get("threshold_rule")))
    save_checkpoint(run_dir, best, meta, name="model")
    plot_all(preds, run_dir / "plots", log_csv=run_dir / LOG_FILE,
             temperature=meta["temperature"], stage_offsets=meta["stage_offsets"])
    flat = flatten_metrics(metrics)
    say("best model: epoch {}  ".format(meta["epoch"]) + "  ".join(
        f"{k} {v:.3f}" for k, v in flat.items() if v is not None))
    if calibration:
        say("calibration: temperature " + ", ".join(
            f"{k} {v:.2f}" for k, v in calibration["temperature"].items()) + "; stage offsets " +
            " ".join(f"{v:+.2f}" for v in calibration["stage_offsets"]) + "; thresholds " +
            ", ".join(f"{k} {v:.2f}" + (" (held to the false-finding rate on real photos)"
                                        if calibration["threshold_rule"][k]["rule"] == "false_rate" else "")
                      for k, v in calibration["thresholds"].items()))


def build_model(config: TrainConfig) -> nn.Module:
    """The network of ``config``: new (maybe pretrained backbone) or, with ``init_from``,
    every weight from a trained run.

    Raises:
        TrainingError: an ``init_from`` that is no run, an ensemble, or another network.
    """
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


def model_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation the model's (pretrained) backbone expects."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = cfg.get("mean") or _DEFAULT_MEAN
    std = cfg.get("std") or _DEFAULT_STD
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def run_meta(config: TrainConfig, model: nn.Module, mean: Sequence[float], std: Sequence[float],
             *, fingerprint: str, calibration: Mapping[str, Any] | None,
             metrics: Mapping[str, Any] | None, epoch: int | None,
             heads: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``model.json`` of a run's network: `models.checkpoint.inference_meta` with the
    resolved config, the data fingerprint, a calibration (None = uncalibrated), metrics,
    the epoch (None for an ensemble), the normalisation used in training and what each
    output learned from (`models.provenance.head_provenance`; None = not recorded)."""
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
    if heads is not None:
        meta["heads"] = dict(heads)
        # A decision threshold exists only where validation labels calibrated it.
        if meta.get("thresholds"):
            meta["thresholds"] = {c: v for c, v in meta["thresholds"].items()
                                  if sum((heads.get(c) or {}).get("validated", {}).values())}
    return meta


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
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

