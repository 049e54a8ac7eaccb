"""Raw network outputs to findings: probabilities, stage, view, zone boxes, loss per zone.

The network returns raw logits (see ``models``); everything that turns them into what a
clinic reads lives here, in NumPy, so the PyTorch and ONNX Runtime backends share it.
Temperatures and decision thresholds come from the model's ``model.json``.

Conventions:

* conditions: ``sigmoid(logit / T_conditions)``; a finding is a condition whose
  probability reaches its threshold.
* stage: ordinal cumulative logits, ``c_k = sigmoid(logit_k / T_stage) = P(Norwood > k+1)``,
  made non-increasing; the stage is ``1 + count(c_k > 0.5)`` and the seven stage
  probabilities are the differences of the cumulative ones.
* view: ``softmax(logit / T_view)``.
* an output the model cannot assess (a head no label trained) is None, never a guess.
* zones: a zone is visible when at least :data:`MIN_ZONE_FRACTION` of the mask's pixels
  have ``sigmoid > 0.5``; its box is the bounding box of those pixels in the original
  photo's pixel coordinates; its loss fraction is the share of its pixels where any
  loss channel has ``sigmoid > 0.5``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from scalpscan.data.vocab import CONDITIONS, OUTPUTS, STAGES, VIEWS, ZONES
from scalpscan.models.ordinal import ordinal_index, ordinal_probabilities

__all__ = [
    "MIN_ZONE_FRACTION",
    "MASK_THRESHOLD",
    "Geometry",
    "decode_outputs",
    "mask_images",
]

#: Smallest share of the mask a zone must cover to count as visible (drops speckle).
MIN_ZONE_FRACTION: float = 0.002

#: Probability above which a mask pixel belongs to a zone or shows loss.
MASK_THRESHOLD: float = 0.5



@dataclass(frozen=True)
class Geometry:
    """Where the original photo sits in the network input.

    A network-input pixel coordinate is ``orig * scale + pad`` on each axis.

    Attributes:
        width: original photo width in pixels.
        height: original photo height in pixels.
        scale_x: horizontal scale from photo to network input.
        scale_y: vertical scale from photo to network input.
        pad_x: left padding in network-input pixels.
        pad_y: top padding in network-input pixels.
    """

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0


def _stage(cumulative_logits: np.ndarray, temperature: float,
           offsets: np.ndarray | None = None) -> tuple[int, list[float]]:
    index = int(ordinal_index(cumulative_logits, temperature, offsets))
    probabilities = ordinal_probabilities(cumulative_logits, temperature, offsets)
    return STAGES[index], [round(float(p), 6) for p in probabilities]


def _zones(zone_logits: np.ndarray, loss_logits: np.ndarray, input_size: int, geometry: Geometry) -> dict[str, Any]:
    zone_on = zone_logits > 0  # sigmoid > 0.5
    loss_any = (loss_logits > 0).any(axis=0)
    mask_h, mask_w = zone_on.shape[1:]
    step_x, step_y = input_size / mask_w, input_size / mask_h
    min_pixels = max(1, int(MIN_ZONE_FRACTION * mask_h * mask_w))
    zones: dict[str, Any] = {}
    for index, name in enumerate(ZONES):
        on = zone_on[index]
        count = int(np.count_nonzero(on))
        if count < min_pixels:
            zones[name] = {"visible": False, "box": None, "loss_fraction": None}
            continue
        rows = np.flatnonzero(on.any(axis=1))
        cols = np.flatnonzero(on.any(axis=0))
        # Mask cell edges in network-input pixels, then back into the photo.
        x0 = (cols[0] * step_x - geometry.pad_x) / geometry.scale_x
        x1 = ((cols[-1] + 1) * step_x - geometry.pad_x) / geometry.scale_x
        y0 = (rows[0] * step_y - geometry.pad_y) / geometry.scale_y
        y1 = ((rows[-1] + 1) * step_y - geometry.pad_y) / geometry.scale_y
        box = [
            int(np.clip(round(x0), 0, geometry.width)),
            int(np.clip(round(y0), 0, geometry.height)),
            int(np.clip(round(x1), 0, geometry.width)),
            int(np.clip(round(y1), 0, geometry.height)),
        ]
        loss_fraction = float(np.count_nonzero(on & loss_any)) / count
        zones[name] = {"visible": True, "box": box, "loss_fraction": round(loss_fraction, 4)}
    return zones


def _loss_grid(loss_logits: np.ndarray, zone_logits: np.ndarray) -> np.ndarray:
    """Resample loss logits to the zone mask grid when the heads differ in resolution."""
    if loss_logits.shape[-2:] == zone_logits.shape[-2:]:
        return loss_logits
    h, w = zone_logits.shape[-2:]
    rows = (np.arange(h) * loss_logits.shape[-2] // h).astype(int)
    cols = (np.arange(w) * loss_logits.shape[-1] // w).astype(int)
    return loss_logits[:, rows][:, :, cols]


def decode_outputs(
    outputs: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    geometries: Sequence[Geometry],
    *,
    not_assessed: Collection[str] = (),
) -> list[dict[str, Any]]:
    """Decode one batch of raw outputs into result-row fields, one dict per photo.

    Args:
        outputs: ``conditions [B,3]``, ``stage [B,6]``, ``view [B,5]``,
            ``zones [B,6,h,w]``, ``hairloss [B,3,h,w]`` logits as NumPy arrays.
        meta: the model's ``model.json`` (``input_size``, ``thresholds``, ``temperature``,
            optional ``stage_offsets``).
        geometries: where each photo sits in the network input.
        not_assessed: outputs the model cannot assess (names from
            `scalpscan.data.vocab.OUTPUTS`): their values are None, never guessed. A
            condition gets no probability, threshold or finding; ``stage`` nulls the stage
            and its probabilities; ``view`` the view; ``zones`` every zone; ``hairloss``
            each zone's loss fraction.

    Returns:
        Per photo: ``view``, ``view_probabilities``, ``conditions``, ``thresholds``,
        ``findings``, ``stage``, ``stage_probabilities`` and ``zones``.

    Raises:
        ValueError: for a name in ``not_assessed`` that is not in ``OUTPUTS``.
    """
    unknown = sorted(set(not_assessed) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"not_assessed names unknown outputs {unknown}; known: {', '.join(OUTPUTS)}")
    temperature = {"conditions": 1.0, "stage": 1.0, "view": 1.0, **(meta.get("temperature") or {})}
    thresholds = {name: 0.5 for name in CONDITIONS}
    thresholds.update(meta.get("thresholds") or {})
    assessed = [name for name in CONDITIONS if name not in not_assessed]
    input_size = int(meta["input_size"])
    conditions = expit(np.asarray(outputs["conditions"], dtype=np.float64) / temperature["conditions"])
    views = softmax(np.asarray(outputs["view"], dtype=np.float64) / temperature["view"], axis=-1)
    stages = np.asarray(outputs["stage"], dtype=np.float64)
    offsets = meta.get("stage_offsets")
    offsets = None if offsets is None else np.asarray(offsets, dtype=np.float64)
    zone_logits = np.asarray(outputs["zones"], dtype=np.float32)
    loss_logits = np.asarray(outputs["hairloss"], dtype=np.float32)
    decoded = []
    for i, geometry in enumerate(geometries):
        probs = {name: round(float(conditions[i, j]), 6) if name in assessed else None
                 for j, name in enumerate(CONDITIONS)}
        stage, stage_probabilities = (None, None) if "stage" in not_assessed else \
            _stage(stages[i], temperature["stage"], offsets)
        zones = None if "zones" in not_assessed else \
            _zones(zone_logits[i], _loss_grid(loss_logits[i], zone_logits[i]), input_size, geometry)
        if zones is not None and "hairloss" in not_assessed:
            zones = {name: {**zone, "loss_fraction": None} for name, zone in zones.items()}
        view_assessed = "view" not in not_assessed
        decoded.append(
            {
                "view": VIEWS[int(views[i].argmax())] if view_assessed else None,
                "view_probabilities": {name: round(float(views[i, j]), 6) for j, name in enumerate(VIEWS)}
                if view_assessed else None,
                "conditions": probs,
                "thresholds": {name: float(thresholds[name]) for name in assessed},
                "findings": [name for name in assessed if probs[name] >= thresholds[name]],
                "stage": stage,
                "stage_probabilities": stage_probabilities,
                "zones": zones,
            }
        )
    return decoded


def mask_images(
    outputs: Mapping[str, np.ndarray], index: int, geometry: Geometry, input_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Zone and loss masks of one photo as bit-coded uint8 arrays at the photo's size.

    Bit i of the zone mask is ``ZONES[i]``, bit i of the loss mask ``CONDITIONS[i]``, as
    in the manifest's mask PNGs.
    """
    import cv2

    def _bits(logits: np.ndarray) -> np.ndarray:
        on = (logits > 0).astype(np.uint8)
        packed = np.zeros(on.shape[1:], dtype=np.uint8)
        for bit in range(on.shape[0]):
            packed |= on[bit] << bit
        return packed

    def _to_photo(packed: np.ndarray) -> np.ndarray:
        full = cv2.resize(packed, (input_size, input_size), interpolation=cv2.INTER_NEAREST)
        x0, y0 = round(geometry.pad_x), round(geometry.pad_y)
        x1 = min(input_size, x0 + max(1, round(geometry.scale_x * geometry.width)))
        y1 = min(input_size, y0 + max(1, round(geometry.scale_y * geometry.height)))
        return cv2.resize(full[y0:y1, x0:x1], (geometry.width, geometry.height), interpolation=cv2.INTER_NEAREST)

    return (
        _to_photo(_bits(np.asarray(outputs["zones"][index]))),
        _to_photo(_bits(np.asarray(outputs["hairloss"][index]))),
    )
