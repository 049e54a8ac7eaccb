"""The quality gate: dark, overexposed, blurred and small photos are sent back, good ones pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scalpscan.inference.quality import QualityThresholds, check_quality


def _textured(height: int = 160, width: int = 128, seed: int = 0) -> np.ndarray:
    """A mid-grey photo with hair-like fine texture (sharp, well exposed)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
    return base


def test_textured_photo_passes() -> None:
    report = check_quality(_textured())
    assert report.ok, report.reasons
    assert report.to_dict()["reasons"] == []
    assert set(report.measures) == {"brightness", "highlight", "clipped", "sharpness", "min_side"}


def test_dark_skin_and_black_hair_is_not_too_dark() -> None:
    # Mostly very dark pixels (mean ~30) with some highlights: a correctly exposed photo.
    rng = np.random.default_rng(4)
    photo = rng.integers(10, 40, size=(160, 160, 3), dtype=np.uint8)
    photo[rng.random((160, 160)) < 0.03] = 110
    report = check_quality(photo)
    assert report.measures["brightness"] < 35
    assert report.ok, report.reasons


def test_odd_shape_passes() -> None:
    assert check_quality(_textured(97, 1001, seed=3)).ok


def test_dark_photo_is_too_dark() -> None:
    dark = (_textured() // 8).astype(np.uint8)
    report = check_quality(dark)
    assert not report.ok
    assert report.reasons[0].startswith("too dark")
    assert len(report.reasons) == 1  # no extra "blurred": the cause is the darkness


def test_overexposed_photo() -> None:
    bright = np.full((160, 128, 3), 255, dtype=np.uint8)
    bright[::7] = 200
    report = check_quality(bright)
    assert [r.split(":")[0] for r in report.reasons] == ["overexposed"]


def test_blurred_photo() -> None:
    # Large smooth shapes plus fine texture, then a heavy Gaussian blur.
    sharp = _textured(256, 256, seed=1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)
    assert check_quality(sharp).ok
    report = check_quality(blurred)
    assert [r.split(":")[0] for r in report.reasons] == ["blurred"]
    assert report.measures["sharpness"] < check_quality(sharp).measures["sharpness"]


def test_small_photo() -> None:
    report = check_quality(_textured(40, 300))
    assert report.reasons[0].startswith("too small: 300x40")


def test_thresholds_are_configurable() -> None:
    photo = _textured(64, 64)
    assert not check_quality(photo).ok  # 64 px is under the default MIN_SIDE
    assert check_quality(photo, QualityThresholds(min_side=32)).ok


@pytest.mark.parametrize(
    "kwargs",
    [{"min_side": 0}, {"dark_highlight": 200, "bright_mean": 100}, {"clipped_fraction": 0}, {"blur_variance": -1}],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        QualityThresholds(**kwargs)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "photo.jpg"])
def test_bad_input_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        check_quality(bad)  # type: ignore[arg-type]
