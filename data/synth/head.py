"""Head geometry: a few ellipsoids ray-cast through an orthographic camera.

World coordinates are the person's own: ``x`` points to the person's LEFT, ``y`` forward
(out of the nose), ``z`` up; the cranium's centre is near the origin and its half-length
is about 1. Every photo of one subject uses the same shape, so a scalp point has the same
coordinates in every view; that is what keeps zones and conditions consistent across views.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PARTS",
    "BACKGROUND",
    "CRANIUM",
    "FACE",
    "NOSE",
    "EAR_LEFT",
    "EAR_RIGHT",
    "NECK",
    "SHOULDERS",
    "HeadShape",
    "Camera",
    "Scene",
    "head_shape",
    "make_camera",
    "cast",
]

#: Part ids of the `Scene.part` map, in order.
PARTS: tuple[str, ...] = (
    "background",
    "cranium",
    "face",
    "nose",
    "ear_left",
    "ear_right",
    "neck",
    "shoulders",
)
BACKGROUND, CRANIUM, FACE, NOSE, EAR_LEFT, EAR_RIGHT, NECK, SHOULDERS = range(len(PARTS))

# Far-away distance of the camera plane from the target point, in world units.
_CAMERA_DISTANCE = 10.0


@dataclass(frozen=True)
class HeadShape:
    """Centres and semi-axes of the ellipsoids, one row per part after background."""

    centres: np.ndarray  # (7, 3)
    axes: np.ndarray  # (7, 3)

    @property
    def cranium_centre(self) -> np.ndarray:
        """Centre of the cranium ellipsoid (scalp coordinates are relative to it)."""
        return self.centres[CRANIUM - 1]

    @property
    def cranium_axes(self) -> np.ndarray:
        """Semi-axes of the cranium ellipsoid."""
        return self.axes[CRANIUM - 1]


def head_shape(width: float = 1.0, length: float = 1.0, height: float = 1.0) -> HeadShape:
    """The ellipsoids of one head; the factors scale the cranium (about 0.9-1.1)."""
    cranium_axes = np.array([0.78 * width, 1.0 * length, 0.9 * height])
    centres = np.array(
        [
            [0.0, 0.0, 0.0],  # cranium
            [0.0, 0.46 * length, -0.52],  # face and jaw (forward: no jowl behind the cheek)
            [0.0, 1.0 * length, -0.47],  # nose
            [0.73 * width, -0.04, -0.3],  # ear, person's left
            [-0.73 * width, -0.04, -0.3],  # ear, person's right
            [0.0, -0.18, -1.25],  # neck
            [0.0, -0.1, -2.35],  # shoulders and chest
        ]
    )
    axes = np.array(
        [
            cranium_axes,
            [0.55 * width, 0.5, 0.76],
            [0.085, 0.21, 0.17],
            [0.09, 0.19, 0.31],
            [0.09, 0.19, 0.31],
            [0.5, 0.47, 0.75],  # thinner front to back than the jaw above it
            [1.75, 0.85, 1.0],
        ]
    )
    return HeadShape(centres=centres, axes=axes)


@dataclass(frozen=True)
class Camera:
    """An orthographic camera.

    ``back`` is the unit vector from the head towards the camera; ``right`` and ``up`` span
    the image plane; ``scale`` is pixels per world unit; ``target`` lands at the image centre.
    """

    right: np.ndarray
    up: np.ndarray
    back: np.ndarray
    target: np.ndarray
    scale: float
    size: int
    aspect: float = 1.0  # horizontal / vertical pixels per unit (phone photos stretched square)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) to pixel coordinates (..., 2) as (column, row)."""
        rel = points - self.target
        col = rel @ self.right * self.scale * self.aspect + self.size / 2 - 0.5
        row = -(rel @ self.up) * self.scale + self.size / 2 - 0.5
        return np.stack([col, row], axis=-1)

    def vector_to_pixels(self, vectors: np.ndarray) -> np.ndarray:
        """World direction vectors (..., 3) to image displacements (..., 2) in pixels."""
        return np.stack([vectors @ self.right * self.aspect, -(vectors @ self.up)], axis=-1) * self.scale


def make_camera(
    azimuth: float,
    elevation: float,
    roll: float,
    target: np.ndarray,
    extent: float,
    size: int,
    aspect: float = 1.0,
) -> Camera:
    """A camera looking at ``target``.

    Args:
        azimuth: angle of the camera around the head, radians; 0 = in front of the face,
            +pi/2 = at the person's left, pi = behind.
        elevation: angle above the horizontal, radians (pi/2 = straight above).
        roll: rotation of the picture about the viewing axis, radians.
        target: world point at the image centre.
        extent: half the image side, in world units.
        size: image side in pixels.
        aspect: horizontal stretch of the picture (1 = none).
    """
    back = np.array(
        [
            np.sin(azimuth) * np.cos(elevation),
            np.cos(azimuth) * np.cos(elevation),
            np.sin(elevation),
        ]
    )
    right = np.cross(back, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    right = right / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
    up = np.cross(right, back)
    c, s = np.cos(roll), np.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    return Camera(
        right=right,
        up=up,
        back=back,
        target=np.asarray(target, dtype=float),
        scale=size / (2.0 * extent),
        size=size,
        aspect=aspect,
    )


@dataclass
class Scene:
    """What each pixel sees: the part id, the 3-D surface point and its unit normal."""

    part: np.ndarray  # (S, S) uint8, index into PARTS
    point: np.ndarray  # (S, S, 3) float32 world coordinates (0 on background)
    normal: np.ndarray  # (S, S, 3) float32 unit normals (0 on background)
    camera: Camera


def cast(shape: HeadShape, camera: Camera) -> Scene:
    """Ray-cast every ellipsoid of ``shape`` and keep the nearest hit per pixel."""
    size = camera.size
    coords = ((np.arange(size, dtype=np.float64) + 0.5) - size / 2) / camera.scale
    depth = np.full((size, size), np.inf, dtype=np.float32)
    part = np.zeros((size, size), dtype=np.uint8)
    d = -camera.back
    origin0 = camera.target + _CAMERA_DISTANCE * camera.back
    for k in range(len(shape.centres)):
        centre, axes = shape.centres[k], shape.axes[k]
        # Pixel box around the projected ellipsoid; skip what is off the picture.
        col, row = camera.project(centre)
        radius = float(axes.max()) * camera.scale * max(camera.aspect, 1.0) + 2
        c0, c1 = max(int(col - radius), 0), min(int(col + radius) + 2, size)
        r0, r1 = max(int(row - radius), 0), min(int(row + radius) + 2, size)
        if c0 >= c1 or r0 >= r1:
            continue
        x = (coords[c0:c1] / camera.aspect).astype(np.float32)[None, :]
        y = (-coords[r0:r1]).astype(np.float32)[:, None]
        k0 = (origin0 - centre) / axes
        k1 = camera.right / axes
        k2 = camera.up / axes
        dd = d / axes
        a = float(dd @ dd)
        f32 = np.float32
        # Ray-ellipsoid quadratic a t^2 + b t + c = 0, with b and c polynomials in (x, y).
        b = f32(2.0 * (k0 @ dd)) + x * f32(2.0 * (k1 @ dd)) + y * f32(2.0 * (k2 @ dd))
        c = (
            f32(k0 @ k0 - 1.0)
            + x * (x * f32(k1 @ k1) + f32(2.0 * (k0 @ k1)))
            + y * (y * f32(k2 @ k2) + f32(2.0 * (k0 @ k2)) + x * f32(2.0 * (k1 @ k2)))
        )
        disc = b * b - f32(4.0 * a) * c
        t = (-b - np.sqrt(np.maximum(disc, f32(0.0)))) * f32(0.5 / a)
        region = depth[r0:r1, c0:c1]
        nearer = (disc > 0) & (t < region)
        region[nearer] = t[nearer]
        part[r0:r1, c0:c1][nearer] = k + 1
    # Surface points and normals of the winning ellipsoids.
    xs = (coords / camera.aspect).astype(np.float32)
    ys = -coords.astype(np.float32)
    along = np.where(np.isfinite(depth), _CAMERA_DISTANCE - depth, 0.0).astype(np.float32)
    right = camera.right.astype(np.float32)
    up = camera.up.astype(np.float32)
    back = camera.back.astype(np.float32)
    point = (
        camera.target.astype(np.float32)
        + xs[None, :, None] * right
        + ys[:, None, None] * up
        + along[..., None] * back
    )
    centres = np.vstack([np.zeros(3), shape.centres]).astype(np.float32)
    inv_sq = np.vstack([np.zeros(3), 1.0 / shape.axes**2]).astype(np.float32)
    grad = (point - centres[part]) * inv_sq[part]
    norm = np.sqrt((grad * grad).sum(-1, keepdims=True))
    normal = grad / np.maximum(norm, 1e-6)
    background = part == BACKGROUND
    point[background] = 0.0
    return Scene(part=part, point=point, normal=normal, camera=camera)
