"""Broken and awkward photo files: a clear error for each broken one, a correct RGB array for
each awkward one."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scalpscan.data.decode import HEIF_SUPPORTED, ImageDecodeError, image_size, load_image


def _gradient(w=64, h=48) -> np.ndarray:
    """An RGB picture whose every pixel says where it is (red = x, green = y)."""
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=2)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("awkward")
    rgb = Image.fromarray(_gradient())
    files = {}
    files["greyscale"] = d / "grey.png"
    rgb.convert("L").save(files["greyscale"])
    files["rgba"] = d / "rgba.png"
    rgba = rgb.convert("RGBA")
    rgba.putalpha(255)
    rgba.save(files["rgba"])
    files["cmyk"] = d / "cmyk.jpg"
    rgb.convert("CMYK").save(files["cmyk"], quality=95)
    files["palette"] = d / "palette.png"
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(files["palette"])
    files["16bit"] = d / "sixteen.png"
    Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)).save(files["16bit"])
    files["webp"] = d / "photo.webp"
    rgb.save(files["webp"], quality=95)
    files["tiff"] = d / "photo.tiff"
    rgb.save(files["tiff"])
    files["jpeg"] = d / "photo.jpg"
    rgb.save(files["jpeg"], quality=95)
    if HEIF_SUPPORTED:
        try:
            files["heic"] = d / "iphone.heic"
            rgb.save(files["heic"], quality=95)
        except (OSError, KeyError, ValueError):  # a pillow-heif build without an encoder
            files.pop("heic")
    return files


@pytest.mark.parametrize("kind", ["greyscale", "rgba", "cmyk", "palette", "16bit", "webp", "tiff", "jpeg", "heic"])
def test_awkward_files_decode_to_rgb_uint8(awkward, kind):
    if kind not in awkward:
        pytest.skip("pillow-heif cannot write HEIC here")
    arr = load_image(awkward[kind])
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8
    expected = _gradient()
    if kind in ("greyscale", "16bit"):
        grey = np.asarray(Image.fromarray(expected).convert("L"))
        assert np.abs(arr[..., 0].astype(int) - grey).max() <= 1
        assert (arr[..., 0] == arr[..., 1]).all()
    else:
        tolerance = 40 if kind in ("cmyk", "heic", "palette") else 12
        assert np.abs(arr.astype(int) - expected).mean() < tolerance / 3
        assert np.abs(arr.astype(int) - expected).max() <= tolerance * 2


def test_transparent_pixels_become_white(tmp_path):
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    path = tmp_path / "clear.png"
    im.save(path)
    assert (load_image(path) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    stored = _gradient(64, 48)  # landscape as stored; orientation 6 = rotate 90° clockwise to view
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=95)
    arr = load_image(path)
    assert arr.shape == (64, 48, 3)
    upright = np.rot90(stored, k=-1)
    assert np.abs(arr.astype(int) - upright).mean() < 4
    assert image_size(path) == (48, 64)


def test_huge_photo_is_reduced_while_decoding(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.fromarray(_gradient(64, 48)).resize((4000, 3000)).save(path, quality=80)
    arr = load_image(path, max_side=500)
    assert max(arr.shape[:2]) <= 500 and arr.shape[2] == 3
    assert abs(arr.shape[1] / arr.shape[0] - 4 / 3) < 0.02
    full = load_image(path, max_side=None)
    assert full.shape == (3000, 4000, 3)


def test_reduction_applies_to_non_jpeg_too(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(_gradient(64, 48)).resize((1200, 900)).save(path)
    assert load_image(path, max_side=300).shape == (225, 300, 3)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims a huge picture (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(60000, 60000))
    with pytest.raises(ImageDecodeError, match="decompression bomb") as info:
        load_image(path)
    assert info.value.path == str(path)
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    with pytest.raises(ImageDecodeError, match="--max-pixels"):
        load_image(small, max_pixels=1000)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"this is not a picture\n" * 20, "not a picture"),
        ("truncated.jpg", None, "truncated"),
    ],
)
def test_broken_files_raise_one_clear_error(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:
        good = tmp_path / "good.jpg"
        Image.fromarray(_gradient(256, 256)).save(good, quality=90)
        data = good.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="is a folder"):
        load_image(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (8, 8)).save(path)

    def refuse(*args, **kwargs):  # chmod 000 does not stop root, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("scalpscan.data.decode.Image.open", refuse)
    with pytest.raises(ImageDecodeError, match="permission denied") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_arrays_and_pil_images_are_accepted():
    grey16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    assert load_image(grey16).shape == (48, 64, 3)
    assert load_image(np.ones((4, 4, 3), np.float32)).max() == 255
    assert load_image(Image.new("LA", (5, 4))).shape == (4, 5, 3)
    with pytest.raises(ImageDecodeError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, np.float32))
