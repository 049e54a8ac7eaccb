"""Rendered alopecia patches and transplant scars painted onto real photos.

Renders alone teach conditions that do not transfer to real photos (a model trained on
them is at chance on real ones), and real data sets of pattern loss label no patch or
scar. Painting a patch or a scar onto a real photo gives the network positives whose
context is real, so it cannot learn the shortcut "a real-looking photo has no patch".

A patch is a bald, irregular ellipse in the skin tone of the photo's own scalp, keeping
the photo's low-frequency shading; a scar is either a pale linear strip (the donor strip
of an FUT transplant) or a field of small pale dots (FUE extraction sites). Both are placed
where the photo's view puts the scalp (the centre of a top view, the lower back of the
head for donor scars). The photo's other labels (view, stage) stay as they are; the loss
map stays unknown, because the hair loss already in the photo is not mapped.

Example:
    >>> import numpy as np
    >>> photo = np.full((64, 64, 3), 60, np.uint8)
    >>> out = composite(photo, view="top", patch=True, scar=False, rng=np.random.default_rng(0))
    >>> out.image.shape, bool(out.mask.any()), out.mask.dtype.name
    ((64, 64, 3), True, 'uint8')
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scalpscan.data.vocab import condition_bit

__all__ = ["Composite", "composite", "composite_manifest", "hair_mask"]

_PATCH = condition_bit("alopecia_patch")
_SCAR = condition_bit("transplant_scar")

# Where the scalp usually is, per view, as (x0, y0, x1, y1) fractions of the photo. The
# export holds rotated copies of each photo, so the regions stay near the centre.
_PATCH_REGION: dict[str | None, tuple[float, float, float, float]] = {
    "top": (0.3, 0.3, 0.7, 0.7),
    "back": (0.3, 0.2, 0.7, 0.55),
    "left": (0.3, 0.2, 0.7, 0.5),
    "right": (0.3, 0.2, 0.7, 0.5),
    "front": (0.35, 0.12, 0.65, 0.35),
    None: (0.35, 0.3, 0.65, 0.6),
}
_SCAR_REGION: dict[str | None, tuple[float, float, float, float]] = {
    "back": (0.25, 0.45, 0.75, 0.75),
    "left": (0.3, 0.35, 0.75, 0.65),
    "right": (0.25, 0.35, 0.7, 0.65),
    "top": (0.3, 0.3, 0.7, 0.7),
    "front": (0.35, 0.12, 0.65, 0.35),
    None: (0.3, 0.35, 0.7, 0.65),
}

# A neutral scalp skin (RGB, 0..255) used when the photo shows too little skin to measure.
_FALLBACK_SKIN = np.array([196.0, 150.0, 128.0])


@dataclass(frozen=True)
class Composite:
    """A photo with painted conditions.

    Attributes:
        image: uint8 RGB, the same size as the input.
        mask: uint8 condition bits of the painted pixels (0 elsewhere).
    """

    image: np.ndarray
    mask: np.ndarray


def _skin_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo's skin tone: the median of skin-coloured pixels (YCrCb box), else a default."""
    skin = _skin_mask(image)
    if skin.sum() > 0.01 * skin.size:
        colour = np.median(image[skin].astype(np.float64), axis=0)
    else:
        colour = _FALLBACK_SKIN * rng.uniform(0.6, 1.05)
    return colour


def _skin_mask(image: np.ndarray) -> np.ndarray:
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    return (ycrcb[..., 1] > 135) & (ycrcb[..., 1] < 175) & (ycrcb[..., 2] > 80) & (ycrcb[..., 2] < 130) \
        & (ycrcb[..., 0] > 60)


def hair_mask(image: np.ndarray) -> np.ndarray:
    """Where the photo probably shows hair: fine texture that is not skin-coloured.

    The largest such region, smoothed; a rough guide for placing a painting on the scalp
    (it finds a head of hair in most photos, and beards or busy backgrounds in some).
    """
    h, w = image.shape[:2]
    side = min(h, w)
    grey = image.astype(np.float32).mean(axis=2)
    k = max(int(side * 0.03) | 1, 3)
    energy = cv2.GaussianBlur(np.abs(cv2.Laplacian(grey, cv2.CV_32F)), (k, k), 0)
    texture = energy > np.percentile(energy, 45)
    hair = (texture & ~_skin_mask(image)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    hair = cv2.morphologyEx(cv2.morphologyEx(hair, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hair, connectivity=8)
    if count <= 1:
        return np.zeros((h, w), bool)
    # The largest region, weighted towards the centre (backgrounds sit at the edges).
    yy, xx = np.mgrid[0:h, 0:w]
    centrality = 1.0 - np.hypot(xx / w - 0.5, yy / h - 0.5)
    scores = [(stats[i, cv2.CC_STAT_AREA] * centrality[labels == i].mean(), i) for i in range(1, count)]
    return labels == max(scores)[1]


def _centre(image: np.ndarray, region: tuple[float, float, float, float], margin: float,
            rng: np.random.Generator) -> tuple[float, float]:
    """A centre inside the hair, at least ``margin`` pixels from its edge; else in ``region``."""
    h, w = image.shape[:2]
    hair = hair_mask(image).astype(np.uint8)
    if hair.any() and margin >= 1:
        inner = cv2.distanceTransform(hair, cv2.DIST_L2, 3) >= margin
        ys, xs = np.nonzero(inner)
        if len(xs):
            i = int(rng.integers(len(xs)))
            return float(xs[i]), float(ys[i])
    x0, y0, x1, y1 = region
    return rng.uniform(x0, x1) * w, rng.uniform(y0, y1) * h


def _blend(image: np.ndarray, paint: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(image * (1.0 - a) + paint * a, 0, 255)


def _patch(image: np.ndarray, view: str | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    side = min(h, w)
    rx, ry = rng.uniform(0.05, 0.13) * side, rng.uniform(0.05, 0.13) * side
    cx, cy = _centre(image, _PATCH_REGION.get(view, _PATCH_REGION[None]), 0.8 * max(rx, ry), rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / rx
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ry
    # An irregular edge: the radius wobbles with low-frequency noise around the ellipse.
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(0.02, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    r = np.sqrt(u * u + v * v) / (1.0 + wobble)
    soft = max(side * 0.012, 1.0) / max(rx, ry)
    alpha = np.clip((1.0 - r) / soft, 0.0, 1.0)
    skin = _skin_colour(image, rng)
    # Keep the photo's shading (light and curvature), not its hair texture.
    grey = image.astype(np.float64).mean(axis=2)
    k = int(side * 0.08) | 1
    shade = cv2.GaussianBlur(grey, (k, k), 0)
    shade = shade / max(float(np.median(shade[alpha > 0.5])) if (alpha > 0.5).any() else shade.mean(), 1.0)
    shade = np.clip(0.55 + 0.45 * shade, 0.5, 1.3)
    mottle = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)), (k, k), 0)
    mottle = 8.0 * mottle / max(float(np.abs(mottle).max()), 1e-6)
    grain = rng.normal(0.0, 3.0, (h, w)) + mottle
    paint = skin[None, None, :] * shade[..., None] + grain[..., None]
    out = _blend(image.astype(np.float64), paint, alpha)
    # A few stubs of broken hair near the edge (as at the margin of a real patch).
    ring = (r > 0.75) & (r < 1.0)
    stubs = ring & (rng.random((h, w)) < 0.01)
    out[stubs] = out[stubs] * 0.35
    return out, alpha > 0.5


def _scar(image: np.ndarray, view: str | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    side = min(h, w)
    skin = _skin_colour(image, rng)
    pale = np.clip(skin * rng.uniform(1.08, 1.25) + np.array([10.0, 0.0, 0.0]), 0, 255)
    cx, cy = _centre(image, _SCAR_REGION.get(view, _SCAR_REGION[None]), 0.06 * side, rng)
    canvas = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:  # FUT strip: a thin curved line across the donor area
        length = rng.uniform(0.25, 0.55) * side
        thickness = max(int(rng.uniform(0.008, 0.02) * side), 1)
        bend = rng.uniform(-0.08, 0.08) * side
        xs = np.linspace(cx - length / 2, cx + length / 2, 40)
        ys = cy + bend * (1 - ((xs - cx) / (length / 2)) ** 2)
        points = np.stack([xs, ys], axis=1).astype(np.int32)
        cv2.polylines(canvas, [points], False, 1.0, thickness=thickness, lineType=cv2.LINE_AA)
    else:  # FUE: small pale dots scattered over the donor area
        n = int(rng.integers(25, 120))
        spread_x, spread_y = rng.uniform(0.1, 0.22) * side, rng.uniform(0.06, 0.14) * side
        radius = max(int(round(side * rng.uniform(0.004, 0.008))), 1)
        for x, y in zip(rng.normal(cx, spread_x, n), rng.normal(cy, spread_y, n)):
            cv2.circle(canvas, (int(x), int(y)), radius, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    alpha = np.clip(canvas, 0.0, 1.0).astype(np.float64) * rng.uniform(0.75, 1.0)
    out = _blend(image.astype(np.float64), pale[None, None, :], alpha)
    return out, canvas > 0.5


def composite(image: np.ndarray, *, view: str | None, patch: bool, scar: bool,
              rng: np.random.Generator) -> Composite:
    """Paint an alopecia patch and/or a transplant scar onto a real photo.

    Args:
        image: uint8 RGB photo (H, W, 3).
        view: the photo's view (places the painting where that view shows the scalp).
        patch: paint an alopecia patch.
        scar: paint a transplant scar (a strip or FUE dots).
        rng: the random stream (same seed, same painting).

    Raises:
        ValueError: for an image that is not uint8 RGB.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"composite needs a uint8 RGB image, got {image.dtype} {image.shape}")
    out = image.astype(np.float64)
    mask = np.zeros(image.shape[:2], np.uint8)
    if patch:
        out, where = _patch(out.astype(np.uint8), view, rng)
        mask[where] |= 1 << _PATCH
    if scar:
        out, where = _scar(out.astype(np.uint8), view, rng)
        mask[where] |= 1 << _SCAR
    return Composite(out.round().astype(np.uint8), mask)


def composite_manifest(manifest: str | Path, out_dir: str | Path, *, seed: int = 0,
                       patch_p: float = 0.35, scar_p: float = 0.3,
                       views: Sequence[str] | None = None) -> Path:
    """A copy of a real manifest where some photos carry painted patches or scars.

    Every photo is kept once, with its view and stage. Each one independently gets a patch
    with probability ``patch_p`` and a scar with ``scar_p``; its ``alopecia_patch`` and
    ``transplant_scar`` labels say what was painted (0 for an untouched photo: the source
    must be one whose persons have neither, such as a pattern-loss data set). ``thinning``
    and the masks stay as the source has them. The column ``source`` becomes
    ``composite`` for painted photos; ``composited`` records what was painted.

    Args:
        manifest: the real manifest (e.g. written by ``scalpscan import``).
        out_dir: folder for the new photos and ``manifest.csv``.
        seed: seeds the choice and the painting.
        patch_p: share of photos with a painted patch.
        scar_p: share of photos with a painted scar.
        views: paint only photos of these views (None: every view).

    Returns:
        The path of the new manifest.

    Raises:
        ValueError: for probabilities outside [0, 1].
    """
    from PIL import Image

    from scalpscan.data.decode import load_image
    from scalpscan.data.files import atomic_write
    from scalpscan.data.manifest import read_manifest, write_manifest

    for name, p in (("patch_p", patch_p), ("scar_p", scar_p)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p!r}: must be a probability in [0, 1]")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    picker = random.Random(seed)
    rows = []
    for i, row in enumerate(read_manifest(manifest)):
        eligible = views is None or row.view in views
        patch = eligible and picker.random() < patch_p
        scar = eligible and picker.random() < scar_p
        conditions = dict(row.conditions)
        conditions["alopecia_patch"] = int(patch)
        conditions["transplant_scar"] = int(scar)
        extra = dict(row.extra)
        extra["composited"] = "+".join(n for n, on in (("patch", patch), ("scar", scar)) if on)
        if patch or scar:
            extra["source"] = "composite"
            target = out_dir / "images" / f"{i:05d}_{Path(row.image).stem[:40]}.jpg"
            if not target.is_file():
                painted = composite(load_image(row.image), view=row.view, patch=patch, scar=scar,
                                    rng=np.random.default_rng([seed, i]))
                picture = Image.fromarray(painted.image)
                atomic_write(target, lambda tmp: picture.save(tmp, format="JPEG", quality=92))
            row = dataclasses.replace(row, image=target)
        rows.append(dataclasses.replace(row, conditions=conditions, extra=extra))
    path = out_dir / "manifest.csv"
    write_manifest(rows, path)
    return path
