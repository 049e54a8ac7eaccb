"""Training configuration: one dataclass, a YAML file and ``key=value`` overrides.

The config is the only place where settings become the plain keyword arguments that the
model, the loss and the optimiser take (``model_kwargs``, ``loss_kwargs``,
``optimizer_kwargs``); those classes never read a config themselves.

Example:
    >>> cfg = load_config("my.yaml", overrides=["lr=3e-4", "loss_weights.stage=2"])
    >>> cfg.lr
    0.0003
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import VIEWS

__all__ = [
    "ConfigError",
    "TrainConfig",
    "DEFAULT_CONFIG_PATH",
    "MASK_RESOLUTIONS",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "save_config",
    "model_kwargs",
    "loss_kwargs",
    "optimizer_kwargs",
    "transform_kwargs",
]

#: The defaults as a YAML file users can copy and edit.
DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.yaml")

#: Heads the loss knows; keys of ``loss_weights``.
_HEADS: tuple[str, ...] = ("conditions", "stage", "view", "zones", "hairloss")
#: Where the zone and loss-map losses compare logits and masks (``mask_resolution``; see
#: ``training.losses.mask_loss``).
MASK_RESOLUTIONS: tuple[str, ...] = ("target", "logits")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the fix."""


def _default_loss_weights() -> dict[str, float]:
    return {head: 1.0 for head in _HEADS}


def _default_stage_view_weights() -> dict[str, float]:
    # Front and top views show the Norwood pattern; back and sides barely do.
    return {"front": 2.0, "top": 2.0, "back": 0.5, "left": 0.5, "right": 0.5}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved resolved in the run folder (``config.yaml``)."""

    # --- data -------------------------------------------------------------------------
    data: str = ""  # training manifest (CSV); required
    val: str = ""  # validation manifest; empty = subject-grouped split of `data`
    val_fraction: float = 0.2  # share of subjects held out when `val` is empty
    train_extra: str = ""  # manifest of photos for training only (e.g. renders): never validated on, never held out by a fold
    folds: int = 0  # K >= 2: person-grouped K-fold cross-validation, one run per fold; their ensemble is the model
    out: str = "runs/run"  # run folder (checkpoints, logs, plots)
    image_size: int = 224  # network input side in pixels (square)
    workers: int = 0  # DataLoader worker processes (0 = load in the main process)

    hflip_p: float = 0.5  # training: chance of a label-aware horizontal flip
    rotate90_p: float = 0.0  # training: chance of a random 90-degree turn (sideways photos)

    # --- model ------------------------------------------------------------------------
    model: str = "scalpnet"  # network name from models.list_models()
    backbone: str = "resnet18"  # backbone name from models.list_backbones()
    pretrained: bool = False  # start from ImageNet weights (offline packages / torchvision)
    weights: str = ""  # local backbone weights file instead (overrides `pretrained`)
    init_from: str = ""  # run folder or model.safetensors whose whole network (heads too) starts this run
    dropout: float = 0.2  # dropout before the image-level heads

    # --- optimisation -----------------------------------------------------------------
    epochs: int = 20  # maximum number of epochs
    batch_size: int = 32  # photos per step (per process under torchrun)
    lr: float = 1e-3  # peak learning rate of AdamW, reached after warm-up
    backbone_lr_scale: float = 1.0  # backbone LR = lr * this (e.g. 0.1 for a pretrained one)
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms and biases)
    warmup_epochs: float = 1.0  # linear warm-up length in epochs (fractions allowed)
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * this
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    amp: bool = True  # mixed precision (bfloat16/float16) when CUDA is present; ignored on CPU
    channels_last: bool = True  # channels-last memory format when CUDA is present

    # --- losses -----------------------------------------------------------------------
    loss_weights: dict[str, float] = field(default_factory=_default_loss_weights)  # per-head loss weight; 0 = off
    pos_weight: bool = True  # weight condition positives by their training frequency
    max_pos_weight: float = 20.0  # cap on a condition's pos_weight
    stage_view_weights: dict[str, float] = field(
        default_factory=_default_stage_view_weights)  # stage-loss weight per view (unknown: 1); also weighs a person's views
    label_smoothing: float = 0.0  # view cross-entropy label smoothing
    mask_resolution: str = "target"  # zone/loss-map losses at the masks' side (target) or the decoder's stride 4 (logits)

    # --- early stopping and checkpoints -----------------------------------------------
    monitor: str = "val_loss"  # metric that picks the best epoch: val_loss or a metric name
    patience: int = 5  # epochs without improvement before stopping; 0 disables
    min_delta: float = 0.0  # smallest change that counts as an improvement

    # --- calibration ------------------------------------------------------------------
    calibrate: bool = True  # fit temperatures and condition thresholds on validation

    # --- runtime ----------------------------------------------------------------------
    seed: int = 0  # seeds weights, shuffling and augmentation; same seed = same CPU run
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    threads: int = 0  # CPU threads for torch (0 = torch's default; 1 is faster on a busy machine)
    progress: bool = True  # tqdm progress bar

    def validate(self) -> None:
        """Check values that types alone do not catch.

        Raises:
            ConfigError: naming the key, the value and what is allowed.
        """
        problems: list[str] = []
        positive_ints = ("image_size", "epochs", "batch_size")
        for key in positive_ints:
            if getattr(self, key) < 1:
                problems.append(f"{key}={getattr(self, key)!r}: must be >= 1")
        for key in ("workers", "patience", "threads"):
            if getattr(self, key) < 0:
                problems.append(f"{key}={getattr(self, key)!r}: must be >= 0")
        for key in ("lr", "backbone_lr_scale", "weight_decay", "warmup_epochs", "grad_clip",
                    "min_delta", "max_pos_weight"):
            if getattr(self, key) < 0:
                problems.append(f"{key}={getattr(self, key)!r}: must be >= 0")
        if self.folds < 0 or self.folds == 1:
            problems.append(f"folds={self.folds!r}: use 0 (one run) or at least 2 "
                            "(K-fold cross-validation)")
        if self.folds and self.val:
            problems.append("folds and val both set: with folds every fold validates on its "
                            "own held-out persons; leave val empty, and evaluate the ensemble "
                            "on the other manifest afterwards (scalpscan evaluate)")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction={self.val_fraction!r}: must be between 0 and 1")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"min_lr_ratio={self.min_lr_ratio!r}: must be in [0, 1]")
        if self.image_size % 32:
            problems.append(f"image_size={self.image_size!r}: must be a multiple of 32 "
                            "(e.g. 64, 128, 224, 256)")
        for key in ("hflip_p", "rotate90_p"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                problems.append(f"{key}={getattr(self, key)!r}: must be a probability in [0, 1]")
        if self.init_from and self.weights:
            problems.append("init_from and weights both set: init_from starts the whole "
                            "network from a run, weights only the backbone; choose one")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout!r}: must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing={self.label_smoothing!r}: must be in [0, 1)")
        if self.mask_resolution not in MASK_RESOLUTIONS:
            problems.append(f"mask_resolution={self.mask_resolution!r}: use "
                            f"{' or '.join(MASK_RESOLUTIONS)}")
        for head in self.loss_weights:
            if head not in _HEADS:
                problems.append(f"loss_weights.{head}: unknown head; known: {', '.join(_HEADS)}")
        for head, weight in self.loss_weights.items():
            if weight < 0:
                problems.append(f"loss_weights.{head}={weight!r}: must be >= 0")
        for view, weight in self.stage_view_weights.items():
            if view not in VIEWS:
                problems.append(
                    f"stage_view_weights.{view}: unknown view; known: {', '.join(VIEWS)}"
                )
            elif weight < 0:
                problems.append(f"stage_view_weights.{view}={weight!r}: must be >= 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            problems.append(f"device={self.device!r}: use auto, cpu, cuda or cuda:N")
        if problems:
            raise ConfigError("invalid training config:\n  " + "\n  ".join(problems))


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a mapping of name: number"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` converted to the field type ``tp``, or ConfigError naming ``key``."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, float) for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    """Set a (possibly dotted) key in the plain-dict form of a config, type-checked."""
    name, _, sub = key.partition(".")
    if name not in _FIELDS:
        close = [k for k in _FIELDS if k.startswith(name[:3])] or sorted(_FIELDS)
        raise ConfigError(f"unknown config key {key!r}; did you mean one of: {', '.join(close)}")
    tp = _HINTS[name]
    if sub:
        if typing.get_origin(tp) is not dict:
            raise ConfigError(f"{key}: {name!r} is a {_describe(tp)}, it has no sub-keys")
        merged = dict(values.get(name) or {})
        merged[sub] = _coerce(key, value, float)
        values[name] = merged
    else:
        if typing.get_origin(tp) is dict and isinstance(value, dict):
            # A mapping merges into the defaults so that a file can set one view's weight.
            merged = dict(values.get(name) or {})
            merged.update(_coerce(key, value, tp))
            values[name] = merged
        else:
            values[name] = _coerce(key, value, tp)


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A validated config from a plain mapping (unknown keys and wrong types are errors).

    Args:
        values: keys of `TrainConfig`; missing keys keep their defaults.
        source: where the mapping came from, for error messages.

    Raises:
        ConfigError: naming the source, the key and the expected type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of key: value, got {type(values).__name__}")
    resolved = config_to_dict(TrainConfig())
    for key, value in values.items():
        try:
            _set(resolved, str(key), value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    config = TrainConfig(**resolved)
    config.validate()
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON/YAML-safe values."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lr=3e-4")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads "1e-3" as a string (it wants "1.0e-3"); numbers written either way work.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A new config with ``key=value`` overrides applied (dotted keys reach into mappings).

    Raises:
        ConfigError: for an unknown key, a value of the wrong type or a malformed override.
    """
    values = config_to_dict(config)
    for text in overrides:
        key, value = _parse_override(text)
        try:
            _set(values, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {text}: {exc}") from None
    result = TrainConfig(**values)
    result.validate()
    return result


def load_config(path: str | os.PathLike | None = None, *, overrides: list[str] | None = None,
                **values: Any) -> TrainConfig:
    """Defaults, then a YAML file, then keyword values, then ``key=value`` overrides.

    Args:
        path: YAML file with any subset of the config keys; None = defaults only.
        overrides: ``key=value`` strings (as given to ``--set``), applied last.
        **values: settings from command-line flags; None values are skipped.

    Raises:
        ConfigError: naming the file or override, the key and the fix.
    """
    config = TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        config = config_from_dict(loaded or {}, source=str(path))
    given = {k: v for k, v in values.items() if v is not None}
    if given:
        merged = config_to_dict(config)
        for key, value in given.items():
            _set(merged, key, value)
        config = TrainConfig(**merged)
        config.validate()
    return apply_overrides(config, list(overrides or []))


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


# --- config -> plain keyword arguments ---------------------------------------------------


def model_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for ``models.create_model(config.model, **kwargs)``."""
    return {
        "backbone": config.backbone,
        "pretrained": config.weights or config.pretrained,
        "image_size": config.image_size,
        "dropout": config.dropout,
    }


def transform_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for the training ``data.transforms.build_transforms``."""
    return {"hflip_p": config.hflip_p, "rotate90_p": config.rotate90_p}


def loss_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for ``training.losses.MultiTaskLoss`` (without ``pos_weight``)."""
    return {
        "weights": dict(config.loss_weights),
        "stage_view_weights": dict(config.stage_view_weights),
        "label_smoothing": config.label_smoothing,
        "mask_resolution": config.mask_resolution,
    }


def optimizer_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments for ``training.loop.build_optimizer``."""
    return {
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "backbone_lr_scale": config.backbone_lr_scale,
    }
