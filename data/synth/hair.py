"""Hair as strands: a direction field on the scalp and a fast, vectorised strand painter.

The direction field flows away from a crown whorl (with a swirl), turns down the sides and
back under gravity, and splits at the part line. Strands are short polylines drawn with
``cv2.polylines`` in a handful of calls, so a photo's thousands of strands cost milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from scalpscan.data.synth.subject import Subject

__all__ = ["hair_directions", "strand_polylines", "paint_strands"]

_SHIFT = 3  # fractional bits of the polyline coordinates (sub-pixel strand placement)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)


def _tangent(q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Component of the constant vector ``axis`` tangent to the unit sphere at ``q``."""
    return axis - q * (q @ axis)[:, None]


def hair_directions(q: np.ndarray, subject: Subject) -> np.ndarray:
    """Unit tangent directions (n, 3) in which the hair at cranium points ``q`` lies."""
    lat_c, sag_c = subject.crown_centre[1], subject.crown_centre[0]
    whorl = np.array(
        [np.sin(lat_c), np.cos(lat_c) * np.sin(sag_c), np.cos(lat_c) * np.cos(sag_c)]
    )
    cos_w = q @ whorl
    away = _normalise(q * cos_w[:, None] - whorl)
    swirl = np.cross(q, away)
    angle = 1.1 * np.exp(-np.arccos(np.clip(cos_w, -1, 1)) / 0.45)
    flow = away * np.cos(angle)[:, None] + swirl * np.sin(angle)[:, None]
    down = _normalise(_tangent(q, np.array([0.0, 0.0, -1.0])))
    sideways = _normalise(_tangent(q, np.array([1.0, 0.0, 0.0])))
    lateral = np.arcsin(np.clip(q[:, 0], -1, 1))
    part = subject.part if subject.part is not None else 0.0
    side = np.where(lateral >= part, 1.0, -1.0)[:, None]
    if subject.sex == "female":
        split = _normalise(side * sideways + 1.3 * down)
        near_crown = np.exp(-np.maximum(1 - cos_w, 0) / 0.05)[:, None]
        return _normalise(split * (1 - near_crown) + flow * near_crown)
    gravity = (0.8 / (1 + np.exp((q[:, 2] - 0.1) / 0.15)))[:, None]
    direction = flow + gravity * down
    if subject.part is not None:
        near = np.exp(-np.abs(lateral - part) / 0.25) * (q[:, 1] > -0.1)
        direction = direction + (2.0 * near)[:, None] * (side * sideways + 0.3 * down)
    return _normalise(direction)


def strand_polylines(
    roots: np.ndarray,
    directions: np.ndarray,
    lengths: np.ndarray,
    *,
    segments: int,
    curl: np.ndarray,
    gravity: np.ndarray,
) -> np.ndarray:
    """Polylines (n, segments + 1, 2) of fixed-point coordinates for `paint_strands`.

    Args:
        roots: (n, 2) root positions (column, row) in pixels.
        directions: (n, 2) unit image directions at the root.
        lengths: (n,) strand lengths in pixels.
        segments: polyline segments per strand.
        curl: (n,) turn per segment, radians.
        gravity: (2,) extra image displacement per segment as the strand droops (pixels).
    """
    points = np.empty((len(roots), segments + 1, 2), dtype=np.float32)
    points[:, 0] = roots
    step = (lengths / segments).astype(np.float32)[:, None]
    d = directions.astype(np.float32)
    c, s = np.cos(curl)[:, None], np.sin(curl)[:, None]
    for k in range(1, segments + 1):
        points[:, k] = points[:, k - 1] + d * step + gravity * (k - 1)
        d = np.concatenate([d[:, :1] * c - d[:, 1:] * s, d[:, :1] * s + d[:, 1:] * c], axis=1)
    return np.round(points * (1 << _SHIFT)).astype(np.int32)


def paint_strands(canvas: np.ndarray, polylines: np.ndarray, value: int) -> None:
    """Draw anti-aliased one-pixel strands onto a ``uint8`` canvas in place."""
    if len(polylines):
        cv2.polylines(canvas, polylines, False, int(value), 1, cv2.LINE_AA, _SHIFT)
