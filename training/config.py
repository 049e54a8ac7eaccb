"""Training configuration: one dataclass, recipes, a YAML file and ``key=value`` overrides.

Settings resolve in this order: the defaults (``default.yaml`` lists them, documented),
a recipe (``recipes/NAME.yaml``: the keys it changes, each documented), a config file,
command-line flags, then ``--set key=value``. Every step is checked against one pydantic
schema through `scalpscan.data.validation.validate`, so a bad value fails with the file
(or override), the key and what is allowed.

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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, create_model, field_validator

from scalpscan.data.files import write_text_atomic
from scalpscan.data.validation import validate
from scalpscan.data.vocab import VIEWS

__all__ = [
    "ConfigError",
    "TrainConfig",
    "DEFAULT_CONFIG_PATH",
    "MASK_RESOLUTIONS",
    "RECIPES_DIR",
    "RECOMMENDED_RECIPE",
    "load_config",
    "list_recipes",
    "recipe_path",
    "recipe_name",
    "read_recipe",
    "describe_config",
    "apply_overrides",
    "parse_override",
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
    recipe: str = ""  # the recipe this config started from (training/recipes/NAME.yaml or a file); a record, set by --recipe
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
        default_factory=_default_stage_view_weights)  # stage-loss weight per labelled view (unknown: 1); training only
    label_smoothing: float = 0.0  # view cross-entropy label smoothing
    mask_resolution: str = "target"  # zone/loss-map losses at the masks' side (target) or the decoder's stride 4 (logits)

    # --- early stopping and checkpoints -----------------------------------------------
    monitor: str = "val_loss"  # metric that picks the best epoch: val_loss or a metric name
    patience: int = 5  # epochs without improvement before stopping; 0 disables
    min_delta: float = 0.0  # smallest change that counts as an improvement

    # --- calibration ------------------------------------------------------------------
    calibrate: bool = True  # fit temperatures and condition thresholds on validation
    finding_false_rate: float = 0.05  # most untouched real validation photos without a condition that may get its finding; 1 = F1 alone

    # --- runtime ----------------------------------------------------------------------
    seed: int = 0  # seeds weights, shuffling and augmentation; same seed = same CPU run
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    threads: int = 0  # CPU threads for torch (0 = torch's default; 1 is faster on a busy machine)
    progress: bool = True  # tqdm progress bar

    def validate(self) -> None:
        """Check every value against the config's schema (types, ranges, names).

        Raises:
            ConfigError: naming the key, the value and what is allowed.
        """
        _check(config_to_dict(self), source="config")


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)


# --- the schema: one pydantic model, through the project's one validation mechanism ------

def _text(value: Any) -> Any:
    """YAML gives ``null`` for an empty value and numbers for names like ``2024``."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# Strict types: YAML already typed every value, so "yes", 1 or 2.5 are never silently
# read as true, True or 2.
_Int = Annotated[int, Strict()]
_Float = Annotated[float, Strict()]
_Bool = Annotated[bool, Strict()]
_Text = Annotated[str, BeforeValidator(_text)]
_NonNegative = Annotated[float, Strict(), Field(ge=0)]
_Probability = Annotated[float, Strict(), Field(ge=0, le=1)]

#: Constraints beyond the type, by key (pydantic states each one in its message).
_CONSTRAINED: dict[str, Any] = {
    "image_size": Annotated[int, Strict(), Field(ge=32, multiple_of=32)],
    "epochs": Annotated[int, Strict(), Field(ge=1)],
    "batch_size": Annotated[int, Strict(), Field(ge=1)],
    "workers": Annotated[int, Strict(), Field(ge=0)],
    "patience": Annotated[int, Strict(), Field(ge=0)],
    "threads": Annotated[int, Strict(), Field(ge=0)],
    "folds": _Int,
    "val_fraction": Annotated[float, Strict(), Field(gt=0, lt=1)],
    "min_lr_ratio": _Probability,
    "hflip_p": _Probability,
    "finding_false_rate": Annotated[float, Strict(), Field(gt=0, le=1)],
    "rotate90_p": _Probability,
    "dropout": Annotated[float, Strict(), Field(ge=0, lt=1)],
    "label_smoothing": Annotated[float, Strict(), Field(ge=0, lt=1)],
    "mask_resolution": Literal["target", "logits"],
    "loss_weights": dict[str, _NonNegative],
    "stage_view_weights": dict[str, _NonNegative],
    **{key: _NonNegative for key in ("lr", "backbone_lr_scale", "weight_decay",
                                     "warmup_epochs", "grad_clip", "min_delta",
                                     "max_pos_weight")},
}
_PLAIN = {bool: _Bool, int: _Int, float: _Float, str: _Text}


class _Schema(BaseModel):
    """Checks of single keys that a type cannot express; `_check` adds the names in the
    mappings and the checks across keys."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("folds", check_fields=False)
    @classmethod
    def _folds(cls, value: int) -> int:
        if value < 0 or value == 1:
            raise ValueError("use 0 (one run) or at least 2 (K-fold cross-validation)")
        return value

    @field_validator("device", check_fields=False)
    @classmethod
    def _device(cls, value: str) -> str:
        if not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value


_ConfigSchema: type[BaseModel] = create_model(
    "TrainConfigSchema", __base__=_Schema,
    **{name: (_CONSTRAINED.get(name, _PLAIN.get(_HINTS[name], _HINTS[name])), ...)
       for name in _FIELDS},
)


def _check(values: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``values`` (every key of the config) checked against the schema and with each
    other; returns them typed (an integer ``lr`` becomes a float).

    Raises:
        ConfigError: one line per bad key, each naming ``source``, the key and the value.
    """
    # The names in the two mappings are checked here, so that the message names the one
    # bad entry (``loss_weights.stages``), not the whole mapping.
    for key, known, what in (("loss_weights", _HEADS, "head"), ("stage_view_weights", VIEWS, "view")):
        mapping = values.get(key)
        unknown = [name for name in mapping if name not in known] if isinstance(mapping, dict) else []
        if unknown:
            raise ConfigError(f"{source}: {key}.{unknown[0]}: unknown {what}; known: "
                              f"{', '.join(known)}")
    checked = validate(_ConfigSchema, values, source=source, error=ConfigError).model_dump()
    problems = []
    if checked["folds"] and checked["val"]:
        problems.append("folds and val both set: with folds every fold validates on its own "
                        "held-out persons; leave val empty, and evaluate the ensemble on the "
                        "other manifest afterwards (scalpscan evaluate)")
    if checked["init_from"] and checked["weights"]:
        problems.append("init_from and weights both set: init_from starts the whole network "
                        "from a run, weights only the backbone; choose one")
    if problems:
        raise ConfigError("\n".join(f"{source}: {problem}" for problem in problems))
    return checked


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is dict:
        return "mapping of name: number"
    return getattr(tp, "__name__", str(tp))


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    """Set a (possibly dotted) key in the plain-dict form of a config; the types are
    checked afterwards, by `_check`."""
    name, _, sub = key.partition(".")
    if name not in _FIELDS:
        close = [k for k in _FIELDS if k.startswith(name[:3])] or sorted(_FIELDS)
        raise ConfigError(f"unknown config key {key!r}; did you mean one of: {', '.join(close)}")
    tp = _HINTS[name]
    if sub:
        if typing.get_origin(tp) is not dict:
            raise ConfigError(f"{key}: {name!r} is a {_describe(tp)}, it has no sub-keys")
        values[name] = {**dict(values.get(name) or {}), sub: value}
    elif typing.get_origin(tp) is dict and isinstance(value, dict):
        # A mapping merges into the defaults so that a file can set one view's weight.
        values[name] = {**dict(values.get(name) or {}), **{str(k): v for k, v in value.items()}}
    else:
        values[name] = value


def _merged(config: TrainConfig, values: dict[str, Any], *, source: str) -> TrainConfig:
    """``config`` with ``values`` (keys of the config, dotted keys allowed) set and checked."""
    merged = config_to_dict(config)
    for key, value in values.items():
        try:
            _set(merged, str(key), value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return TrainConfig(**_check(merged, source=source))


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
    return _merged(TrainConfig(), values, source=source)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON/YAML-safe values."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` as given to ``--set``: the key and the value read as YAML (numbers
    such as ``1e-3`` included).

    Raises:
        ConfigError: for text without ``=`` or with an empty key.
    """
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
    if not overrides:
        return config
    values = config_to_dict(config)
    for text in overrides:
        key, value = parse_override(text)
        try:
            _set(values, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {text}: {exc}") from None
    # Checked together: one override may need another (folds=3 with val=).
    return TrainConfig(**_check(values, source="--set " + " --set ".join(overrides)))


# --- recipes -------------------------------------------------------------------------------

#: The recipe files: ``NAME.yaml``, each holding the keys it changes from the defaults.
RECIPES_DIR = Path(__file__).with_name("recipes")
#: What `scalpscan train` without a recipe points newcomers at.
RECOMMENDED_RECIPE = "real"


def _description(path: Path) -> str:
    """A recipe's first comment line (its one-line description)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def list_recipes() -> dict[str, str]:
    """The recipes that ship with the package: name -> one-line description, by name."""
    return {path.stem: _description(path) for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_path(recipe: str | os.PathLike) -> Path:
    """The file of a recipe given by name (``real``) or as a path to a YAML file.

    Raises:
        ConfigError: for a name that is no recipe (the message lists them) or a missing file.
    """
    text = str(recipe)
    if text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    path = RECIPES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {text!r}; recipes: {', '.join(list_recipes())} "
                          "(or give the path of a YAML file)")
    return path


def recipe_name(recipe: str | os.PathLike) -> str:
    """How a run records its recipe: the name of a shipped one, else the file's path."""
    path = recipe_path(recipe)
    return path.stem if path.parent.resolve() == RECIPES_DIR.resolve() else str(path)


def describe_config(config: TrainConfig) -> str:
    """One line saying what ``config`` trains: network, backbone, input side, heads, epochs."""
    start = ("every weight from the run " + config.init_from if config.init_from
             else "weights from " + config.weights if config.weights
             else "ImageNet weights" if config.pretrained else "random weights")
    heads = [head for head, weight in config.loss_weights.items() if weight > 0]
    return (f"{config.model}, backbone {config.backbone} ({start}), {config.image_size} px, "
            f"heads {', '.join(heads) or 'none'}, {config.epochs} epochs at peak lr "
            f"{config.lr:g}")


def read_recipe(recipe: str | os.PathLike) -> dict[str, Any]:
    """The keys a recipe sets, as written (checked: a bad recipe fails like a config file).

    Raises:
        ConfigError: for an unknown recipe or a bad key or value in it.
    """
    path = recipe_path(recipe)
    values = _read_yaml(path, "recipe file")
    config_from_dict(values, source=str(path))
    return values


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}")
    return loaded


def load_config(path: str | os.PathLike | None = None, *, recipe: str | os.PathLike | None = None,
                overrides: list[str] | None = None, **values: Any) -> TrainConfig:
    """Defaults, then a recipe, then a YAML file, then keyword values, then ``key=value``
    overrides.

    Args:
        path: YAML file with any subset of the config keys; None = none.
        recipe: a recipe name (`list_recipes`) or the path of a recipe file; None = none.
            The resolved config records it under ``recipe``.
        overrides: ``key=value`` strings (as given to ``--set``), applied last.
        **values: settings from command-line flags; None values are skipped.

    Raises:
        ConfigError: naming the file or override, the key and the fix.
    """
    config = TrainConfig()
    if recipe is not None:
        file = recipe_path(recipe)
        config = _merged(config, {**_read_yaml(file, "recipe file"), "recipe": recipe_name(recipe)},
                         source=str(file))
    if path is not None:
        config = _merged(config, _read_yaml(Path(path), "config file"), source=str(path))
    given = {k: v for k, v in values.items() if v is not None}
    if given:
        config = _merged(config, given, source="options")
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
    """Keyword arguments for ``training.optimizer.build_optimizer``."""
    return {
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "backbone_lr_scale": config.backbone_lr_scale,
    }
