"""Heads of the multi-task network.

- :class:`ClassifierHead`: pooled features -> logits (conditions, view).
- :class:`OrdinalHead`: pooled features -> ``K - 1`` cumulative logits (CORAL: one shared
  weight vector, ordered biases), so ``P(stage > k)`` falls as ``k`` rises and a predicted
  stage never skips over an order.
- :class:`FPNDecoder`: four feature maps -> one stride-4 map (a light feature pyramid).
- :class:`DenseHead`: decoder map -> per-pixel logits (zones, loss map).

Decoding the ordinal head's logits lives in `scalpscan.models.ordinal`; the CORAL loss
and its cumulative targets in ``training/losses.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ClassifierHead",
    "DenseHead",
    "FPNDecoder",
    "OrdinalHead",
]


class ClassifierHead(nn.Module):
    """Dropout and a linear layer over pooled features.

    Args:
        in_features: Width of the pooled feature vector.
        num_classes: Number of logits.
        dropout: Dropout probability before the linear layer.
    """

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(pooled))


class OrdinalHead(nn.Module):
    """Cumulative-link ordinal head (CORAL, Cao et al. 2020).

    ``logit_k = w . x + b_k`` for ``k = 0 .. K-2``, with ``sigmoid(logit_k) = P(class > k)``.
    The biases are kept strictly decreasing by construction
    (``b_k = b_0 - sum_{j<k} softplus(g_j)``), so the cumulative probabilities are
    monotone for every input, not only after training.

    Args:
        in_features: Width of the pooled feature vector.
        num_classes: Number of ordered classes K (7 Norwood stages).
        dropout: Dropout probability before the projection.
    """

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"an ordinal head needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, 1, bias=False)
        # Start at the log-odds of a uniform prior, P(class > k) = (K-1-k)/K.
        k = torch.arange(num_classes - 1, dtype=torch.float32)
        prior = (num_classes - 1 - k) / num_classes
        biases = torch.log(prior / (1 - prior))
        gaps = biases[:-1] - biases[1:]
        self.bias_first = nn.Parameter(biases[:1].clone())
        # softplus^-1(gap) so that softplus(bias_gaps) reproduces the prior's gaps.
        self.bias_gaps = nn.Parameter(torch.log(torch.expm1(gaps)))

    def biases(self) -> torch.Tensor:
        """The ordered thresholds ``b_0 > b_1 > ... > b_{K-2}``."""
        steps = F.softplus(self.bias_gaps)
        return torch.cat([self.bias_first, self.bias_first - torch.cumsum(steps, dim=0)])

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(pooled)) + self.biases()


class FPNDecoder(nn.Module):
    """Light feature-pyramid decoder: lateral 1x1 convs, top-down sum, 3x3 smoothing.

    Args:
        in_channels: Channels of the backbone's maps, shallow (stride 4) to deep.
        channels: Width of the decoder.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1])
        for index in range(len(features) - 2, -1, -1):
            skip = self.lateral[index](features[index])
            # Size taken from the skip map (as torchvision's FPN does): exact for any input
            # side, and traced as a shape op, so ONNX export keeps dynamic sizes.
            x = skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.smooth(x)


class DenseHead(nn.Module):
    """Per-pixel logits from the decoder map: a 3x3 conv block and a 1x1 classifier.

    Args:
        in_channels: Decoder width.
        num_classes: Output channels (zones or conditions).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        # Start with masks mostly off (most pixels are outside any one zone): prior 0.1.
        nn.init.constant_(self.classifier.bias, -math.log(9.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block(x))
