"""The multi-task scalp network and the public ``create_model`` / ``list_models``.

One registered network, ``"scalpnet"``, takes the backbone as an argument::

    model = create_model("scalpnet", backbone="efficientnet_lite0", pretrained=True,
                         image_size=320)
    out = model(images)        # dict of raw tensors, see ScalpNet.forward

``create_model`` builds the network with random weights (constructors do no I/O), then
loads pretrained backbone weights with :func:`models.pretrained.load_backbone_weights`,
and records ``model.architecture = {"name": ..., "kwargs": ...}`` so that a checkpoint
can rebuild it (with ``pretrained=False``).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from torch import nn

from scalpscan.data.vocab import CONDITIONS, STAGES, VIEWS, ZONES
from scalpscan.models.backbones import create_backbone
from scalpscan.models.heads import ClassifierHead, DenseHead, FPNDecoder, OrdinalHead
from scalpscan.models.pretrained import load_backbone_weights
from scalpscan.models.registry import Registry

__all__ = ["MODELS", "ScalpEnsemble", "ScalpNet", "create_model", "ensemble_of", "list_models"]

#: The registry of whole networks; factories take keyword-only arguments.
MODELS = Registry("model")

#: Input sides must be a multiple of the deepest stride so every pyramid level lines up.
_STRIDE = 32


@MODELS.register("scalpnet")
class ScalpNet(nn.Module):
    """Backbone + image-level heads (conditions, stage, view) + FPN dense heads (zones, loss).

    Args:
        backbone: Registered backbone name (see :func:`models.list_backbones`).
        image_size: Side of the square input the model is trained for (a multiple of 32).
            Recorded in :attr:`pretrained_cfg`; the network itself accepts other sides.
        decoder_channels: Width of the FPN decoder and dense heads; None takes the
            backbone's suggestion (64, or 16 for ``tiny``).
        dropout: Dropout before the image-level classifiers.
        num_conditions: Multi-label condition logits.
        num_stages: Ordered stage classes (the head gives ``num_stages - 1`` logits).
        num_views: View logits.
        num_zones: Zone mask channels.
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        image_size: int = 224,
        decoder_channels: int | None = None,
        dropout: float = 0.2,
        num_conditions: int = len(CONDITIONS),
        num_stages: int = len(STAGES),
        num_views: int = len(VIEWS),
        num_zones: int = len(ZONES),
    ) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size < _STRIDE or image_size % _STRIDE:
            raise ValueError(f"image_size must be a multiple of {_STRIDE} (at least {_STRIDE}), "
                             f"got {image_size!r}; e.g. 64, 224, 256, 320")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone)
        if decoder_channels is None:
            decoder_channels = self.backbone.decoder_channels
        if not isinstance(decoder_channels, int) or decoder_channels < 1:
            raise ValueError(f"decoder_channels must be a positive int, got {decoder_channels!r}")
        #: Arguments whose default depends on the backbone, resolved (for checkpoints).
        self.resolved_kwargs = {"decoder_channels": decoder_channels}
        width = self.backbone.channels[-1]
        self.conditions_head = ClassifierHead(width, num_conditions, dropout=dropout)
        self.stage_head = OrdinalHead(width, num_stages, dropout=dropout)
        self.view_head = ClassifierHead(width, num_views, dropout=dropout)
        self.decoder = FPNDecoder(self.backbone.channels, decoder_channels)
        self.zones_head = DenseHead(decoder_channels, num_zones)
        self.hairloss_head = DenseHead(decoder_channels, num_conditions)
        #: Preprocessing the model expects (timm's ``pretrained_cfg``): input side and the
        #: normalisation of its backbone's pretrained weights.
        self.pretrained_cfg: dict[str, Any] = {
            "input_size": image_size,
            "mean": tuple(self.backbone.mean),
            "std": tuple(self.backbone.std),
        }

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps at strides 4, 8, 16, 32."""
        return self.backbone(x)

    def forward_head(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw outputs from the feature maps (see :meth:`forward`)."""
        pooled = features[-1].mean(dim=(2, 3))
        decoded = self.decoder(features)
        return {
            "conditions": self.conditions_head(pooled),
            "stage": self.stage_head(pooled),
            "view": self.view_head(pooled),
            "zones": self.zones_head(decoded),
            "hairloss": self.hairloss_head(decoded),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw logits for a batch ``x`` of shape ``[B, 3, S, S]`` (normalised).

        Returns:
            ``conditions [B, 3]`` multi-label logits; ``stage [B, 6]`` cumulative ordinal
            logits, ``sigmoid(stage[:, k]) = P(Norwood > k + 1)``; ``view [B, 5]`` logits;
            ``zones [B, 6, S/4, S/4]`` and ``loss [B, 3, S/4, S/4]`` per-pixel logits.
        """
        return self.forward_head(self.forward_features(x))


@MODELS.register("scalpnet_ensemble")
class ScalpEnsemble(nn.Module):
    """Several networks of one architecture whose raw outputs are averaged.

    ``scalpscan train --folds K`` builds one from its K fold models (`ensemble_of`): each
    was trained without one fold of the persons, and their mean logits are the model. The
    outputs have the members' keys and shapes, so decoding, calibration, scoring and ONNX
    export treat it as any other network; it costs K forward passes.

    Args:
        members: Number of member networks (at least 2).
        member: The members' architecture, ``{"name": ..., "kwargs": {...}}`` as a
            checkpoint stores it (the kwargs of a registered network other than this one).
    """

    def __init__(self, *, members: int = 2, member: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(members, int) or members < 2:
            raise ValueError(f"members must be an int of at least 2, got {members!r}")
        member = member or {"name": "scalpnet", "kwargs": {}}
        if (not isinstance(member, dict) or not isinstance(member.get("kwargs", {}), dict)
                or member.get("name") == "scalpnet_ensemble"):
            raise ValueError("member must be {'name': NETWORK, 'kwargs': {...}} naming a "
                             f"network other than scalpnet_ensemble, got {member!r}")
        kwargs = {k: v for k, v in member.get("kwargs", {}).items() if k != "pretrained"}
        self.members = nn.ModuleList(
            create_model(member.get("name", "scalpnet"), **kwargs) for _ in range(members))
        first = self.members[0]
        self.resolved_kwargs = {"member": dict(first.architecture)}
        self.pretrained_cfg = dict(first.pretrained_cfg)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mean of the members' raw outputs (see :meth:`ScalpNet.forward`)."""
        outputs = [member(x) for member in self.members]
        return {key: torch.stack([o[key] for o in outputs]).mean(dim=0) for key in outputs[0]}


def ensemble_of(models: list[nn.Module]) -> ScalpEnsemble:
    """A `ScalpEnsemble` holding copies of the weights of ``models`` (one architecture).

    Raises:
        ValueError: for fewer than two models or models of different architectures.
    """
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
    architectures = [getattr(m, "architecture", None) for m in models]
    if any(a != architectures[0] for a in architectures) or architectures[0] is None:
        raise ValueError("ensemble members must share one architecture (name and kwargs); got "
                         + "; ".join(map(str, architectures)))
    ensemble = create_model("scalpnet_ensemble", members=len(models), member=architectures[0])
    for target, source in zip(ensemble.members, models):
        target.load_state_dict(source.state_dict())
    return ensemble


def create_model(name: str = "scalpnet", *,
                 pretrained: bool | str | os.PathLike[str] | None = False,
                 **kwargs: Any) -> nn.Module:
    """Build a registered network, then load pretrained backbone weights if asked.

    Args:
        name: Registered network name (see :func:`list_models`).
        pretrained: Backbone weights: False, True (the backbone's default), ``"package"``,
            a torchvision weights name, or a file path (see :mod:`models.pretrained`).
        **kwargs: Keyword arguments of the network (for ``"scalpnet"``: ``backbone``,
            ``image_size``, ``decoder_channels``, ``dropout``, ...).

    Returns:
        The network, in training mode, with ``.architecture`` (name and kwargs to rebuild
        it) and ``.pretrained_report`` (a :class:`~models.pretrained.LoadReport` or None).

    Raises:
        UnknownNameError: For an unknown network or backbone name.
        PretrainedError: If pretrained weights cannot be found or do not fit.
    """
    factory = MODELS.get(name)
    try:
        bound = inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"create_model({name!r}): {exc}") from None
    bound.apply_defaults()
    model = factory(**kwargs)
    report = None
    if pretrained and not hasattr(model, "backbone"):
        raise ValueError(f"create_model({name!r}): pretrained weights load into a network's "
                         "backbone and this one has none; build its members with them")
    if pretrained:
        report = load_backbone_weights(model.backbone, model.backbone_name, pretrained)
    # Every argument, defaults included, so a checkpoint rebuilds the same network even if
    # a default changes later.
    arguments = dict(bound.arguments)
    arguments.update(getattr(model, "resolved_kwargs", {}))
    model.architecture = {"name": name, "kwargs": arguments}
    model.pretrained_report = report
    return model


def list_models() -> list[str]:
    """Names of the registered networks, sorted."""
    return MODELS.names()

