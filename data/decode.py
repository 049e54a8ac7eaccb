"""Photos as they arrive from phones and cameras, decoded to one RGB uint8 array.

EXIF orientation is applied; greyscale, RGBA, CMYK, 16-bit and palette pictures are
converted; WebP, TIFF and HEIC/HEIF (iPhone default, through pillow-heif) are read; big
photos are reduced while decoding (JPEG draft mode, then ``Image.reduce``) so memory stays
bounded; decompression bombs are refused. Every failure is an :class:`ImageDecodeError`
whose message names the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF/AVIF photos; an optional plugin, registered once on import
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    HEIF_SUPPORTED = False

__all__ = [
    "ImageDecodeError",
    "load_image",
    "image_size",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "HEIF_SUPPORTED",
    "IMAGE_EXTENSIONS",
]

#: File name endings taken as photos when folders are searched (case-insensitive).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".avif"}
)

#: Pictures with more pixels than this are refused as decompression bombs (a 108 MP phone
#: camera is about 1.1e8 pixels).
DEFAULT_MAX_PIXELS = 150_000_000

#: Longest side after decoding; bigger photos are reduced while decoding. None keeps the
#: full size.
DEFAULT_MAX_SIDE: int | None = 4096

_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """A picture that cannot be decoded; ``path`` names it and the message says why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _check_pixels(im: Image.Image, where: str | Path, max_pixels: int) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(where, f"picture has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageDecodeError(
            where,
            f"refused as a possible decompression bomb: {w}x{h} = {w * h:,} pixels, more than "
            f"max_pixels={max_pixels:,}; raise max_pixels if the photo is genuine",
        )


def _reduce_while_decoding(im: Image.Image, max_side: int | None) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale picture when that still covers max_side."""
    if max_side is None or max(im.size) <= max_side:
        return
    if im.format == "JPEG":
        scale = max_side / max(im.size)
        im.draft(im.mode, (max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; alpha is composited over white, 16-bit scaled to 8-bit."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV


def _from_array(array: np.ndarray) -> np.ndarray:
    where = "<array>"
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise ImageDecodeError(where, f"array of shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == np.uint16:
        out = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageDecodeError(where, "array holds NaN or infinite values")
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        out = np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)
    else:
        raise ImageDecodeError(where, f"array of dtype {array.dtype}; expected uint8, uint16 or float")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(out), "RGBA")))
    return np.ascontiguousarray(out)


def _finish(im: Image.Image, max_side: int | None) -> np.ndarray:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: keep the stored orientation
        pass
    im = _to_rgb(im)
    if max_side is not None and max(im.size) > max_side:
        factor = max(im.size) // max_side
        if factor >= 2:  # cheap box reduction first, then an exact resize
            im = im.reduce(factor)
        if max(im.size) > max_side:
            scale = max_side / max(im.size)
            size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image(
    source: str | Path | Image.Image | np.ndarray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> np.ndarray:
    """Decode a photo to an ``HxWx3`` uint8 RGB array, upright.

    Args:
        source: A file path, a PIL image or an array (HxW, HxWx1/3/4; uint8, uint16 or
            float in 0-1 or 0-255).
        max_pixels: Pictures with more pixels are refused as decompression bombs.
        max_side: Longest side of the result; bigger photos are reduced while decoding
            (aspect ratio kept). None keeps the full size.

    Raises:
        ImageDecodeError: for a missing, empty, truncated, unreadable or non-image file,
            a refused bomb or an unusable array; the message names the file and the problem.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        where = getattr(source, "filename", "") or "<PIL image>"
        _check_pixels(source, where, max_pixels)
        try:
            source.load()
            return _finish(source, max_side)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(where, f"cannot decode the picture: {exc}") from exc
    if not isinstance(source, (str, Path)):
        raise ImageDecodeError(repr(source)[:80], f"expected a path, PIL image or array, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ImageDecodeError(path, "file not found")
    if path.is_dir():
        raise ImageDecodeError(path, "is a folder, expected a picture file")
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(path, "file is empty (0 bytes)")
        with warnings.catch_warnings():
            # Our own max_pixels check replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, path, max_pixels)
                _reduce_while_decoding(im, max_side)
                im.load()
                return _finish(im, max_side)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            path, f"not a picture Pillow can read (unknown or unsupported format, despite the name {path.suffix!r})"
        ) from exc
    except PermissionError as exc:
        raise ImageDecodeError(path, f"cannot read the file: permission denied ({exc.strerror})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc) or type(exc).__name__
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            raise ImageDecodeError(path, f"truncated or corrupt picture ({message})") from exc
        raise ImageDecodeError(path, f"cannot decode the picture: {message}") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height of a photo as displayed (EXIF orientation applied), from its header.

    Raises:
        ImageDecodeError: if the file cannot be opened as a picture.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(path, f"cannot read the picture's size: {exc}") from exc
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
