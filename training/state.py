"""What lets a run continue exactly and what guards a run folder: RNG state, the resume
file, and the claim a new run makes on its folder.

Nothing here is a pickle: model, optimiser and RNG tensors go into one safetensors file,
everything else into its JSON metadata, written in one atomic step.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor, nn

from scalpscan.models.checkpoint import write_safetensors

from .distributed import unwrap
from .errors import TrainingError

__all__ = [
    "RESUME_FILE",
    "LOG_FILE",
    "RUN_FILES",
    "seed_everything",
    "save_resume_state",
    "load_resume_state",
    "previous_run_files",
    "claim_run_folder",
]

#: Resume state (model, optimiser, scheduler, RNG, epoch, early stopping): tensors in
#: safetensors, everything else JSON in the file's metadata, written in one atomic step.
RESUME_FILE = "resume.safetensors"


#: One row per epoch: losses, learning rate, validation metrics, throughput.
LOG_FILE = "train.csv"



#: Files a run writes; their presence means a folder already holds a run.
RUN_FILES = ("model.json", "model.safetensors", "last.json", "last.safetensors",
             RESUME_FILE, LOG_FILE)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def save_resume_state(path: str | os.PathLike, *, model: nn.Module,
                      optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler,
                      scaler: torch.amp.GradScaler | None, state: Mapping[str, Any]) -> None:
    """Everything needed to continue a run exactly, as one safetensors file (no pickle).

    Args:
        path: file to write (atomically).
        state: JSON-safe scalars (epoch, early-stopping state, ...).
    """
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
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
        unwrap(model).load_state_dict(model_state, strict=True)
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



def previous_run_files(run_dir: Path) -> list[str]:
    """The files of `RUN_FILES` that an earlier run left in ``run_dir``."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


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

