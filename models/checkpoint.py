"""Self-describing checkpoints: ``model.safetensors`` + ``model.json``, never a pickle.

``model.json`` says how to rebuild the network and how to use it::

    {"format_version": 1,
     "architecture": {"name": "scalpnet", "kwargs": {"backbone": "resnet18", ...}},
     "vocab": {...}, "input_size": 224, "mean": [...], "std": [...],
     "thresholds": {...}, "temperature": {...}, "config": {...},
     "data_fingerprint": "...", "metrics": {...}, "created": "2026-11-25T13:00:00+00:00"}

:func:`save_checkpoint` fills in ``format_version``, ``architecture`` (from the model)
and ``created``; the caller supplies the rest. :func:`load_checkpoint` rebuilds the network
from the architecture with ``pretrained=False`` (nothing else needs to be installed or
downloaded), checks every weight's name and shape, and refuses anything it does not
understand with a :class:`CheckpointError` that says why.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalpscan.data.files import atomic_write, write_text_atomic
from scalpscan.data.vocab import CONDITIONS, STAGES, VIEWS, ZONES
from scalpscan.models.network import MODELS, create_model
from scalpscan.models.pretrained import state_dict_problems
from scalpscan.models.registry import UnknownNameError

__all__ = ["FORMAT_VERSION", "CheckpointError", "inference_meta", "load_checkpoint", "save_checkpoint",
           "write_safetensors"]

#: Version of the on-disk layout this code writes and reads.
FORMAT_VERSION = 1

# The safetensors header is 8 bytes of little-endian length, then that much JSON.
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and the reason."""


# ----------------------------------------------------------------------------------- meta

def inference_meta(model: nn.Module, *, input_size: int | None = None,
                   thresholds: Mapping[str, float] | None = None,
                   temperature: Mapping[str, float] | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The part of ``model.json`` that inference needs, for a freshly built network.

    Vocabulary from :mod:`data.vocab`, input size and normalisation from the model's own
    ``pretrained_cfg``; thresholds default to 0.5 and temperatures to 1 (uncalibrated).
    Training adds its config, data fingerprint and metrics through ``extra``.

    Args:
        model: A network built by :func:`models.create_model`.
        input_size: Input side; defaults to the model's ``pretrained_cfg["input_size"]``.
        thresholds: Decision threshold per condition.
        temperature: Temperature per head (``conditions``, ``stage``, ``view``).
        **extra: Further keys stored as they are.
    """
    cfg = getattr(model, "pretrained_cfg", {})
    side = input_size if input_size is not None else cfg.get("input_size")
    if side is None:
        raise CheckpointError("inference_meta: the model has no pretrained_cfg['input_size']; pass input_size=")
    meta: dict[str, Any] = {
        "vocab": {"conditions": list(CONDITIONS), "stages": list(STAGES),
                  "views": list(VIEWS), "zones": list(ZONES)},
        "input_size": int(side),
        "mean": [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))],
        "thresholds": {name: 0.5 for name in CONDITIONS} | dict(thresholds or {}),
        "temperature": {"conditions": 1.0, "stage": 1.0, "view": 1.0} | dict(temperature or {}),
    }
    meta.update(extra)
    return meta


# ----------------------------------------------------------------------------------- save

def save_checkpoint(run_dir: str | os.PathLike[str], model: nn.Module, meta: Mapping[str, Any],
                    *, name: str = "model") -> None:
    """Write ``<run_dir>/<name>.safetensors`` and ``<run_dir>/<name>.json`` atomically.

    Args:
        run_dir: Folder to write into (created if missing).
        model: A network built by :func:`models.create_model` (DDP and ``torch.compile``
            wrappers are unwrapped).
        meta: The rest of ``model.json`` (vocab, input_size, mean, std, thresholds,
            temperature, config, data_fingerprint, metrics, ...). Non-finite floats are
            written as null.
        name: File stem, e.g. ``"model"`` for the best weights, ``"last"`` for the latest.

    Raises:
        CheckpointError: If the model does not say how to rebuild it, or ``meta`` is not
            JSON-serialisable.
    """
    model = _unwrap(model)
    architecture = getattr(model, "architecture", None)
    if (not isinstance(architecture, dict) or architecture.get("name") not in MODELS
            or not isinstance(architecture.get("kwargs"), dict)):
        raise CheckpointError(f"cannot save {type(model).__name__}: it has no valid "
                              f".architecture (build it with models.create_model)")
    if not name or os.sep in name or "/" in name:
        raise CheckpointError(f"checkpoint name must be a plain file stem, got {name!r}")
    given = meta.get("architecture")
    if given is not None and given != architecture:
        raise CheckpointError(f"meta['architecture'] {given!r} differs from the model's "
                              f"{architecture!r}; leave it out, save_checkpoint fills it in")
    document: dict[str, Any] = {"format_version": FORMAT_VERSION, "architecture": architecture}
    document.update({k: v for k, v in meta.items() if k not in document})
    document.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        text = json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {exc}") from exc

    folder = Path(run_dir)
    write_safetensors(folder / f"{name}.safetensors", model.state_dict(), {"format": "pt"})
    write_text_atomic(folder / f"{name}.json", text)


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` as a safetensors file, atomically (:mod:`data.files`).

    Fresh contiguous CPU copies are written: safetensors refuses shared or strided storage.
    """
    from safetensors.torch import save_file

    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=dict(metadata)))


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the network in .module, torch.compile in ._orig_mod.
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ----------------------------------------------------------------------------------- load

def load_checkpoint(path: str | os.PathLike[str], *,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network and its meta from a run folder, ``model.safetensors`` or ``model.json``.

    Args:
        path: A run folder (reads ``model.json`` + ``model.safetensors``), or either file
            (its sibling with the same stem is read too, so ``last.json`` works).
        map_location: Device to put the model on.

    Returns:
        ``(model, meta)``: the network in eval mode and the parsed ``model.json``.

    Raises:
        CheckpointError: Missing file, not a safetensors file (a pickle is refused, never
            run), unknown format version or architecture, missing, unexpected or
            wrongly-shaped weights.
    """
    weights_path, meta_path = _resolve(Path(path))
    meta = _read_meta(meta_path)
    architecture = meta["architecture"]
    state = _read_weights(weights_path)
    kwargs = dict(architecture["kwargs"])
    kwargs.pop("pretrained", None)
    try:
        model = create_model(architecture["name"], pretrained=False, **kwargs)
    except UnknownNameError as exc:
        raise CheckpointError(f"{meta_path}: unknown architecture ({exc}); was it written by "
                              f"a newer scalpscan?") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: cannot build architecture "
                              f"{architecture['name']!r} with kwargs {kwargs}: {exc}") from None
    _check_state(model, state, weights_path)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), meta


def _resolve(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        weights, meta = path / "model.safetensors", path / "model.json"
    elif path.suffix == ".safetensors":
        weights, meta = path, path.with_suffix(".json")
    elif path.suffix == ".json":
        weights, meta = path.with_suffix(".safetensors"), path
    elif not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a run folder, "
                              f"model.safetensors or model.json")
    else:
        raise CheckpointError(f"{path} is not a scalpscan checkpoint: pass a run folder, "
                              f"model.safetensors or model.json (.pt/.pth/.pkl files are "
                              f"pickles and are never loaded)")
    for needed in (meta, weights):
        if not needed.is_file():
            raise CheckpointError(f"checkpoint file {needed} is missing (a checkpoint is "
                                  f"{meta.name} + {weights.name} side by side)")
    return weights, meta


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); is it a model.json?") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            why = "written by a newer scalpscan; upgrade to read it"
        else:
            why = "not a format this scalpscan knows"
        raise CheckpointError(f"{path}: format_version {version!r} is unsupported ({why}; "
                              f"this version reads {FORMAT_VERSION})")
    architecture = meta.get("architecture")
    if (not isinstance(architecture, dict) or not isinstance(architecture.get("name"), str)
            or not isinstance(architecture.get("kwargs"), dict)):
        raise CheckpointError(f"{path}: 'architecture' must be an object with a string 'name' "
                              f"and an object 'kwargs', got {architecture!r}")
    return meta


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    with open(path, "rb") as handle:
        head = handle.read(16)
    size = path.stat().st_size
    # A safetensors file is an 8-byte little-endian header length, then a JSON header.
    # Check that shape first: the length's first byte can be anything, 0x80 (pickle's
    # PROTO opcode) included, so the pickle/zip checks below only name what else it is.
    (header_len,) = struct.unpack("<Q", head[:8]) if len(head) >= 8 else (0,)
    if not (0 < header_len <= min(_MAX_HEADER, size - 8) and head[8:9] == b"{"):
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError(f"{path} is a zip archive (a torch.save .pt file?), not "
                                  f"safetensors; scalpscan never unpickles checkpoints")
        if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):
            raise CheckpointError(f"{path} looks like a Python pickle, not safetensors; it "
                                  f"was not loaded (unpickling can run arbitrary code)")
        if len(head) < 9:
            raise CheckpointError(f"{path} is too short ({size} bytes) to be a safetensors file")
        raise CheckpointError(f"{path} is not a safetensors file (bad header)")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read safetensors ({type(exc).__name__}: "
                              f"{exc}); the file may be truncated or corrupt") from None
    # Shipped models store float16 weights to stay small; the network computes in float32.
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{path} does not match its architecture in "
                              f"{path.with_suffix('.json').name}: " + "; ".join(problems))
