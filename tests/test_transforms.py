"""Augmentation keeps masks on the photo; evaluation is deterministic; flips swap sides."""

import numpy as np
import pytest
import torch

from scalpscan.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms, hflip_sample
from scalpscan.data.vocab import zone_bit

LEFT, RIGHT, CROWN = zone_bit("temple_left"), zone_bit("temple_right"), zone_bit("crown")


def _scene(h=48, w=80, seed=0):
    """A black photo with a white blob and a grey bar, and masks drawn on the same pixels."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    zone = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(4, h // 3), rng.integers(4, w // 3)
    image[y0 : y0 + h // 3, x0 : x0 + w // 4] = 255
    zone[y0 : y0 + h // 3, x0 : x0 + w // 4] = LEFT | CROWN
    loss = (zone > 0).astype(np.uint8) * 2
    return image, zone, loss


def _brightness(tensor: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor * std + mean).mean(0).numpy()


@pytest.mark.parametrize("seed", range(12))
def test_training_keeps_masks_aligned_with_the_photo(seed):
    image, zone, loss = _scene(seed=seed)
    transform = build_transforms(64, train=True, seed=seed, hflip_p=0.5, rotate90_p=0.5)
    out = transform(image=image, zone_mask=zone, loss_mask=loss, view="left")
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    z, l = out["zone_mask"], out["loss_mask"]
    assert z.shape == l.shape == (64, 64) and z.dtype == np.uint8
    # Nearest-neighbour sampling: bits stay bits (no blends such as 3 -> 1.5).
    assert set(np.unique(z)) <= {0, LEFT | CROWN, RIGHT | CROWN}
    assert set(np.unique(l)) <= {0, 2}
    inside = z > 0
    assert ((l > 0) == inside).all()
    bright = _brightness(out["image"])
    assert inside.sum() > 20
    # The white blob is where the mask says it is (photometric changes keep it brighter).
    blob = bright > (bright[inside].mean() + bright[~inside].mean()) / 2
    iou = (blob & inside).sum() / (blob | inside).sum()
    assert iou > 0.8, iou
    # A mirrored photo says so in its labels.
    if (z == (RIGHT | CROWN)).any():
        assert out["view"] == "right" and not (z == (LEFT | CROWN)).any()
    else:
        assert out["view"] == "left"


def test_hflip_swaps_temple_bits_and_view_only():
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, 0] = 255
    zone = np.zeros((4, 6), np.uint8)
    zone[:, 0] = LEFT | CROWN
    zone[:, 5] = RIGHT
    loss = np.zeros((4, 6), np.uint8)
    loss[:, 0] = 4
    img2, zone2, loss2, view2 = hflip_sample(image, zone, loss, "left")
    assert (img2[:, 5] == 255).all() and (img2[:, 0] == 0).all()
    assert (zone2[:, 5] == (RIGHT | CROWN)).all() and (zone2[:, 0] == LEFT).all()
    assert (loss2[:, 5] == 4).all()
    assert view2 == "right"
    assert hflip_sample(image, view="front")[3] == "front"
    assert hflip_sample(image)[1] is None


def test_evaluation_is_deterministic_and_letterboxed():
    image, zone, loss = _scene(h=30, w=90)
    transform = build_transforms(60, IMAGENET_MEAN, IMAGENET_STD, train=False)
    a = transform(image=image, zone_mask=zone, loss_mask=loss, view="left")
    b = transform(image=image, zone_mask=zone, loss_mask=loss, view="left")
    assert torch.equal(a["image"], b["image"]) and np.array_equal(a["zone_mask"], b["zone_mask"])
    assert a["view"] == "left"
    # 90x30 -> 60x20, padded top and bottom to 60x60: the padding rows are black.
    bright = _brightness(a["image"])
    assert np.allclose(bright[:15], 0, atol=1e-5) and np.allclose(bright[-15:], 0, atol=1e-5)
    assert a["zone_mask"][:20].sum() == 0


def test_normalisation_uses_mean_and_std():
    image = np.full((8, 8, 3), 255, np.uint8)
    out = build_transforms(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)(image=image)
    assert torch.allclose(out["image"], torch.full((3, 16, 16), 2.0))
    assert out["zone_mask"] is None and out["loss_mask"] is None


def test_same_seed_same_augmentation_and_reseed():
    image, zone, loss = _scene()
    t1 = build_transforms(32, train=True, seed=3)
    t2 = build_transforms(32, train=True, seed=3)
    a = t1(image=image, zone_mask=zone)["image"]
    assert torch.equal(a, t2(image=image, zone_mask=zone)["image"])
    t1.reseed(3)
    assert torch.equal(a, t1(image=image, zone_mask=zone)["image"])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"image_size": 4}, "image_size"), ({"image_size": 32, "mean": (0.5, 0.5)}, "three values"),
     ({"image_size": 32, "std": (0.2, 0.0, 0.2)}, "positive")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_transforms(train=False, **kwargs)


def test_bad_inputs_are_named():
    transform = build_transforms(32, train=False)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        transform(image=np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="zone_mask"):
        transform(image=np.zeros((8, 8, 3), np.uint8), zone_mask=np.zeros((4, 4), np.uint8))


def test_training_flips_some_photos_and_not_others():
    image, zone, _ = _scene()
    transform = build_transforms(32, train=True, seed=0, hflip_p=0.5)
    views = {transform(image=image, zone_mask=zone, view="left")["view"] for _ in range(20)}
    assert views == {"left", "right"}
    never = build_transforms(32, train=True, seed=0, hflip_p=0.0)
    assert {never(image=image, view="left")["view"] for _ in range(10)} == {"left"}
