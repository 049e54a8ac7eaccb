"""The optimiser and its learning-rate schedule: AdamW, linear warm-up, cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "lr_factor", "build_scheduler"]


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

