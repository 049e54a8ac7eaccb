"""Training and evaluation pipelines (albumentations 2.x), side by side.

Both resize the photo so its longest side is ``image_size`` and pad it to a square
(aspect ratio kept, so a head is never squashed), then normalise and return a
``[3, S, S]`` float tensor. Training adds geometric (affine) and photometric (light,
colour, blur, noise, JPEG) changes; zone and loss masks go through the same geometric
changes with nearest-neighbour sampling, so their bits stay bits and stay on the photo.

Horizontal flips are done, and done correctly: a mirrored head swaps its left and right,
so the flip also swaps the ``temple_left``/``temple_right`` bits of the zone mask and the
``left``/``right`` view label (see :func:`hflip_sample`). Albumentations' own
``HorizontalFlip`` cannot do that, so it is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from scalpscan.data.vocab import zone_bit

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ScalpTransform", "build_transforms", "hflip_sample"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_LEFT, _RIGHT = zone_bit("temple_left"), zone_bit("temple_right")
_MIRROR_VIEW = {"left": "right", "right": "left"}


def hflip_sample(
    image: np.ndarray,
    zone_mask: np.ndarray | None = None,
    loss_mask: np.ndarray | None = None,
    view: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str | None]:
    """Mirror a photo and its labels: pixels, temple zone bits and the left/right view.

    Returns:
        (image, zone_mask, loss_mask, view), flipped left to right.
    """
    image = np.ascontiguousarray(image[:, ::-1])
    if zone_mask is not None:
        flipped = zone_mask[:, ::-1]
        swapped = flipped & ~np.uint8(_LEFT | _RIGHT)
        swapped |= np.where(flipped & _LEFT, np.uint8(_RIGHT), np.uint8(0))
        swapped |= np.where(flipped & _RIGHT, np.uint8(_LEFT), np.uint8(0))
        zone_mask = np.ascontiguousarray(swapped.astype(np.uint8))
    if loss_mask is not None:  # condition bits have no side
        loss_mask = np.ascontiguousarray(loss_mask[:, ::-1])
    return image, zone_mask, loss_mask, _MIRROR_VIEW.get(view, view) if view else view


class ScalpTransform:
    """A photo pipeline that carries the masks and the view label along.

    Call it with keywords: ``transform(image=rgb_uint8, zone_mask=..., loss_mask=...,
    view=...)``; the masks (``HxW`` uint8 bit masks, same size as the image) and the view
    may be omitted. Returns ``{"image": float tensor [3,S,S], "zone_mask": uint8 [S,S] or
    None, "loss_mask": ..., "view": ...}``.

    Args:
        compose: The albumentations pipeline (ends with Normalize and ToTensorV2).
        hflip_p: Probability of a label-aware horizontal flip (0 for evaluation).
    """

    def __init__(self, compose: A.Compose, *, hflip_p: float = 0.0) -> None:
        self.compose = compose
        self.hflip_p = hflip_p

    def reseed(self, seed: int) -> None:
        """Restart the random stream (flips and every albumentations draw) from ``seed``."""
        self.compose.set_random_seed(seed)

    def __call__(
        self,
        *,
        image: np.ndarray,
        zone_mask: np.ndarray | None = None,
        loss_mask: np.ndarray | None = None,
        view: str | None = None,
    ) -> dict[str, Any]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}; expected HxWx3 uint8 RGB")
        for name, mask in (("zone_mask", zone_mask), ("loss_mask", loss_mask)):
            if mask is not None and mask.shape != image.shape[:2]:
                raise ValueError(f"{name} of shape {mask.shape} does not match the image {image.shape[:2]}")
        if self.hflip_p > 0 and self.compose.py_random.random() < self.hflip_p:
            image, zone_mask, loss_mask, view = hflip_sample(image, zone_mask, loss_mask, view)
        empty = np.zeros(image.shape[:2], dtype=np.uint8)
        masks = [zone_mask if zone_mask is not None else empty, loss_mask if loss_mask is not None else empty]
        out = self.compose(image=image, masks=masks)
        zone, loss = (np.asarray(m, dtype=np.uint8) for m in out["masks"])
        return {
            "image": out["image"],
            "zone_mask": zone if zone_mask is not None else None,
            "loss_mask": loss if loss_mask is not None else None,
            "view": view,
        }

    def __repr__(self) -> str:
        return f"ScalpTransform(hflip_p={self.hflip_p}, compose={self.compose!r})"


def _check(image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size={image_size!r}; expected an int of at least 16 pixels")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean={tuple(mean)} std={tuple(std)}; expected three values each (R, G, B)")
    if any(s <= 0 for s in std):
        raise ValueError(f"std={tuple(std)}; every value must be positive")


def build_transforms(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    train: bool,
    hflip_p: float = 0.5,
    rotate90_p: float = 0.0,
    seed: int | None = None,
) -> ScalpTransform:
    """The training or evaluation pipeline.

    Args:
        image_size: Side ``S`` of the square output.
        mean: Per-channel mean (0-1 scale) subtracted after scaling pixels to 0-1.
        std: Per-channel standard deviation divided by.
        train: Random augmentation (True) or the deterministic evaluation pipeline.
        hflip_p: Training only: probability of the label-aware horizontal flip.
        rotate90_p: Training only: probability of a random 90° rotation (photos such as
            Roboflow's rotated copies arrive sideways; upright phone photos do not).
        seed: Seed of the random stream; None draws one.

    Raises:
        ValueError: for a bad size, mean or std.
    """
    _check(image_size, mean, std)
    fit = [
        A.LongestMaxSize(max_size=image_size, area_for_downscale="image"),
        A.PadIfNeeded(
            min_height=image_size,
            min_width=image_size,
            position="center",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
        ),
    ]
    finish = [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    if not train:
        return ScalpTransform(A.Compose([*fit, *finish], seed=seed), hflip_p=0.0)

    geometric = [
        A.RandomRotate90(p=rotate90_p),
        A.Affine(
            scale=(0.85, 1.15),
            translate_percent=(-0.06, 0.06),
            rotate=(-15, 15),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.8,
        ),
    ]
    photometric = [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.6),
        # Small hue shifts only: hair colour is a real attribute, not noise.
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=20, val_shift_limit=10, p=0.4),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.2),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
        A.ImageCompression(quality_range=(50, 95), p=0.3),
    ]
    compose = A.Compose([*fit, *geometric, *photometric, *finish], seed=seed)
    return ScalpTransform(compose, hflip_p=hflip_p)

