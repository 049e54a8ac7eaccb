"""Photos as they arrive from phones and cameras, decoded to one RGB uint8 array.

* **Formats**: every format Pillow and pillow-heif read (JPEG/JFIF, PNG, HEIC/HEIF/HIF,
  AVIF, WebP, TIFF, GIF and MPO (their first frame), BMP, ...); :data:`IMAGE_EXTENSIONS`
  lists the file name endings a folder search takes as photos.
* **Big photos in bounded memory**: a photo larger than ``max_side`` is decoded at reduced
  size where the format allows it (JPEG DCT scaling through ``draft``; an embedded HEIF
  thumbnail that is still large enough), otherwise decoded and reduced at once, before any
  colour conversion or rotation copies it. A HEIF photo without such a thumbnail is
  decoded straight into one buffer that the reduced copy replaces.
* **Pixel limit**: :func:`set_max_pixels` is the one setting behind ``--max-pixels``; it
  also sets Pillow's ``Image.MAX_IMAGE_PIXELS``, so the two limits cannot disagree. A
  picture whose header claims more pixels is refused before it is decoded (a crafted
  "decompression bomb" costs nothing).
* **Plain messages**: every failure is an :class:`ImageDecodeError` whose message names the
  file, says what is wrong in an operator's words (truncated, not a picture, unsupported
  compression, ...) and what to do. :func:`capture_warnings` keeps the libraries' warnings
  (Python warnings and what C libraries such as libtiff print) off the terminal and
  returns them, so a batch can store them in its rows.

EXIF orientation is applied; greyscale, RGBA, CMYK, 16-bit and palette pictures are
converted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
    "is_photo_name",
    "is_photo_format",
    "set_max_pixels",
    "get_max_pixels",
    "capture_warnings",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "HEIF_SUPPORTED",
    "IMAGE_EXTENSIONS",
]

# Formats Pillow registers that are not photos, or that it cannot decode on its own:
# vector and document formats (EPS needs Ghostscript, PDF is write-only, WMF/EMF only on
# Windows), scientific containers Pillow only identifies (HDF5, BUFR, GRIB, FITS), video
# (MPEG) and the icon/texture formats no camera writes.
_NOT_PHOTO_FORMATS = frozenset(
    {"EPS", "PDF", "WMF", "HDF5", "BUFR", "GRIB", "FITS", "MPEG", "GBR", "FTEX", "XPM", "XBM", "IPTC"}
)


def _photo_extensions() -> frozenset[str]:
    Image.init()
    readable = set(Image.OPEN)
    found = {ext.lower() for ext, fmt in Image.registered_extensions().items()
             if fmt in readable and fmt not in _NOT_PHOTO_FORMATS}
    if "JPEG" in readable:  # MPO (multi-picture JPEG from 3D and some phone cameras) opens as JPEG
        found.add(".mpo")
    if HEIF_SUPPORTED:  # pillow-heif's endings, HIF (Canon, Fujifilm) included
        found |= {".heic", ".heif", ".hif", ".avif", ".heics", ".heifs", ".avifs"}
    return frozenset(found)


#: File name endings taken as photos when folders are searched (case-insensitive): every
#: format Pillow and pillow-heif can read, e.g. .jpg .jpeg .jfif .jpe .png .heic .heif .hif
#: .avif .webp .tif .tiff .gif .mpo .bmp.
IMAGE_EXTENSIONS: frozenset[str] = _photo_extensions()

#: Default pixel limit: the largest phone cameras (200 MP, 16320x12240 = 2.0e8 pixels) fit
#: with room to spare; a crafted file claiming more is refused before decoding.
DEFAULT_MAX_PIXELS = 250_000_000

#: Longest side after decoding; bigger photos are reduced while decoding. None keeps the
#: full size.
DEFAULT_MAX_SIDE: int | None = 4096

_EXIF_ORIENTATION = 0x0112
_max_pixels = DEFAULT_MAX_PIXELS


def set_max_pixels(max_pixels: int) -> None:
    """Set the pixel limit of every decode in this process (and processes forked after).

    Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is set from the same
    value, so a photo under the limit is never refused by Pillow first.

    Raises:
        ValueError: if ``max_pixels`` is not a positive integer.
    """
    global _max_pixels
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
    _max_pixels = max_pixels
    # Pillow warns above the limit and raises above twice it; our own check (from the header,
    # before decoding) refuses everything above it with a clearer message.
    Image.MAX_IMAGE_PIXELS = max_pixels


def get_max_pixels() -> int:
    """The pixel limit in force (see :func:`set_max_pixels`)."""
    return _max_pixels


set_max_pixels(DEFAULT_MAX_PIXELS)


def is_photo_format(fmt: str | None) -> bool:
    """Whether a Pillow format name (``JPEG``, ``HEIF``, ``GIF``...) is a photo format read here."""
    return bool(fmt) and (fmt in Image.OPEN or fmt == "MPO") and fmt not in _NOT_PHOTO_FORMATS


def is_photo_name(path: str | Path) -> bool:
    """Whether a file name ends in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageDecodeError(ValueError):
    """A picture that cannot be decoded; ``path`` names it and the message says why.

    Attributes:
        path: the file (or ``<array>`` / ``<PIL image>``).
        problem: what is wrong and what to do, in an operator's words.
        kind: a short machine-readable name of the problem (``not_found``, ``empty``,
            ``truncated``, ``not_a_picture``, ``unsupported``, ``damaged``, ``too_large``,
            ``permission``, ``bad_input``).
    """

    def __init__(self, path: str | Path, problem: str, kind: str = "damaged") -> None:
        self.path = str(path)
        self.problem = problem
        self.kind = kind
        super().__init__(f"{path}: {problem}")


@contextlib.contextmanager
def capture_warnings(fd: bool | None = None) -> Iterator[list[str]]:
    """Collect the libraries' warnings instead of printing them.

    Python warnings (Pillow's ``UserWarning``s, EXIF and ICC complaints) and what C
    libraries write to the process's standard error while the block runs (libtiff's
    "Unknown field with tag ...", libjpeg's "Corrupt JPEG data") are gathered, one line
    each, without duplicates, into the yielded list. Use it around one photo's decode.

    Args:
        fd: also capture the process's standard error (file descriptor 2), where C
            libraries write. None: only when this process runs a single Python thread
            (a decoding worker), since another thread's output (a web server's log, a
            progress bar) would be caught too.
    """
    import sys
    import threading

    if fd is None:
        fd = threading.active_count() == 1
    caught: list[str] = []
    saved_fd: int | None = None
    capture = None
    if fd:
        try:
            sys.stderr.flush()
            capture = tempfile.TemporaryFile(mode="w+b")
            saved_fd = os.dup(2)
            os.dup2(capture.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (e.g. a notebook): Python warnings only
            if saved_fd is not None:
                os.close(saved_fd)
            saved_fd = None
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            yield caught
    finally:
        if saved_fd is not None and capture is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            caught.extend(line.strip() for line in text.splitlines() if line.strip())
        if capture is not None:
            capture.close()
        caught.extend(f"{r.category.__name__}: {r.message}" for r in records)
        caught[:] = list(dict.fromkeys(caught))


def _check_pixels(im: Image.Image, where: str | Path, max_pixels: int) -> None:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(where, f"the picture has no pixels ({w}x{h}); export the photo again", "damaged")
    if w * h > max_pixels:
        raise ImageDecodeError(
            where,
            f"too many pixels: {w}x{h} = {w * h:,}, more than the limit of {max_pixels:,} "
            "(refused as a possible decompression bomb, a crafted file that would exhaust memory); "
            "if this is a genuine photo, "
            "raise the limit with --max-pixels",
            "too_large",
        )


def _reduce_while_decoding(im: Image.Image, max_side: int | None) -> None:
    """Ask the decoder for a smaller picture that still covers ``max_side``.

    JPEG (and MPO) decode at 1/2, 1/4 or 1/8 scale; HEIF picks an embedded thumbnail at
    least that large. Other formats ignore the request (``Image.draft`` does nothing).
    """
    if max_side is None or max(im.size) <= max_side:
        return
    scale = max_side / max(im.size)
    target = (max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale)))
    with contextlib.suppress(ValueError, OSError):
        im.draft("RGB" if im.mode not in ("L", "RGB", "CMYK") else im.mode, target)


def _shrink(im: Image.Image, max_side: int | None) -> Image.Image:
    """Reduce to ``max_side`` (box reduction by a whole factor first: cheap, little memory)."""
    if max_side is None or max(im.size) <= max_side:
        return im
    factor = max(im.size) // max_side
    if factor >= 2:
        try:
            im = im.reduce(factor)
        except ValueError:  # a mode reduce() does not take (palette, 1-bit): convert first
            im = _to_rgb(im).reduce(factor)
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        im = im.resize(size, Image.Resampling.BILINEAR)
    return im


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
        raise ImageDecodeError(where, f"array of shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4", "bad_input")
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == np.uint16:
        out = (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageDecodeError(where, "array holds NaN or infinite values", "bad_input")
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        out = np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8)
    else:
        raise ImageDecodeError(where, f"array of dtype {array.dtype}; expected uint8, uint16 or float", "bad_input")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(out), "RGBA")))
    return np.ascontiguousarray(out)


_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: keep the stored orientation
        return 1
    return value if value in _TRANSPOSE else 1


def _finish(im: Image.Image, max_side: int | None, orientation: int | None = None) -> np.ndarray:
    """Reduce first (the full-size picture is never copied), then convert and turn upright."""
    if orientation is None:
        orientation = _orientation(im)
    im = _shrink(im, max_side)
    im = _to_rgb(im)
    for method in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(method)
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _decode_heif_reduced(path: Path, im: Image.Image, max_side: int | None) -> np.ndarray | None:
    """A big HEIF photo without a large enough thumbnail: decode into one buffer, reduce.

    Pillow's plugin copies libheif's decoded buffer into a new image (two full-size copies
    at once); wrapping the buffer instead halves the peak. Returns None when the picture
    is small, not HEIF, or a thumbnail was chosen (the plugin's draft) – the usual path.
    """
    if not HEIF_SUPPORTED or max_side is None or max(im.size) <= max_side:
        return None
    if getattr(im, "format", None) not in ("HEIF", "AVIF"):
        return None
    orientation = _orientation(im)
    heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=True)
    frame = heif[heif.primary_index] if hasattr(heif, "primary_index") else heif
    if frame.mode not in ("RGB", "RGBA", "L"):
        return None
    if tuple(frame.size) != tuple(im.size):  # a thumbnail was drafted: the plugin path is small
        return None
    full = Image.frombuffer(frame.mode, frame.size, frame.data, "raw", frame.mode, frame.stride, 1)
    small = _shrink(full, max_side)
    if small is full:
        small = full.copy()
    del full, frame, heif  # let the full-size buffer go before converting
    return _finish(small, None, orientation)


_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"GIF8", 0, "GIF"),
    (b"WEBP", 8, "WebP"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"BM", 0, "BMP"),
)


def _magic_format(path: Path) -> str | None:
    """The picture format a file's first bytes announce, even when no decoder here takes it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    for magic, offset, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _plain_problem(path: Path, exc: BaseException) -> ImageDecodeError:
    """A library's exception as an operator reads it: what is wrong, and what to do."""
    message = str(exc) or type(exc).__name__
    lower = message.lower()
    if isinstance(exc, Image.DecompressionBombError):
        return ImageDecodeError(
            path,
            f"too many pixels, refused as a possible decompression bomb ({message}); if this is a genuine photo, raise the limit with --max-pixels",
            "too_large",
        )
    if isinstance(exc, UnidentifiedImageError):
        known = _magic_format(path)
        if known is not None:
            return ImageDecodeError(
                path,
                f"a {known} picture in a compression or variant this installation cannot decode; open it "
                "and save it again as JPEG or PNG",
                "unsupported",
            )
        return ImageDecodeError(
            path,
            "not a picture: its contents are not in any image format scalpscan reads (JPEG, PNG, "
            f"HEIC, WebP, TIFF, GIF, ...), whatever its name ({path.suffix or 'no ending'}) says; "
            "open it on the computer it came from and export it as JPEG",
            "not_a_picture",
        )
    if isinstance(exc, PermissionError):
        return ImageDecodeError(
            path,
            "cannot be read: permission denied; give the account that runs scalpscan read access to it",
            "permission",
        )
    if "truncated" in lower or isinstance(exc, EOFError) or "premature end" in lower or "unexpected end" in lower:
        return ImageDecodeError(
            path,
            "the file is truncated (it ends before the picture does, as after an interrupted copy or "
            f"upload); copy the photo again from the phone or camera [{message}]",
            "truncated",
        )
    if ("decoder" in lower and "not available" in lower) or "unsupported" in lower or "compression" in lower:
        return ImageDecodeError(
            path,
            "the picture uses a compression or variant this installation cannot decode; save it "
            f"again as JPEG or PNG [{message}]",
            "unsupported",
        )
    return ImageDecodeError(
        path,
        "the picture data is damaged and cannot be decoded; copy the photo again, or open it and "
        f"export it as JPEG [{message}]",
        "damaged",
    )


def load_image(
    source: str | Path | Image.Image | np.ndarray,
    *,
    max_pixels: int | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> np.ndarray:
    """Decode a photo to an ``HxWx3`` uint8 RGB array, upright.

    GIF, MPO and other multi-frame files give their first frame.

    Args:
        source: A file path, a PIL image or an array (HxW, HxWx1/3/4; uint8, uint16 or
            float in 0-1 or 0-255).
        max_pixels: Pictures with more pixels are refused before decoding; None uses the
            limit set by :func:`set_max_pixels` (``--max-pixels``).
        max_side: Longest side of the result; bigger photos are reduced while decoding
            (aspect ratio kept). None keeps the full size.

    Raises:
        ImageDecodeError: for a missing, empty, truncated, unreadable or non-image file,
            a refused bomb or an unusable array; the message names the file, the problem
            and what to do.
    """
    limit = _max_pixels if max_pixels is None else max_pixels
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        where = getattr(source, "filename", "") or "<PIL image>"
        _check_pixels(source, where, limit)
        try:
            source.load()
            return _finish(source, max_side)
        except (OSError, ValueError) as exc:
            raise _plain_problem(Path(str(where)), exc) from exc
    if not isinstance(source, (str, Path)):
        raise ImageDecodeError(
            repr(source)[:80], f"expected a path, PIL image or array, got {type(source).__name__}", "bad_input"
        )
    path = Path(source)
    if not path.exists():
        raise ImageDecodeError(
            path, "file not found (moved, renamed or deleted since it was listed?); check the path", "not_found"
        )
    if path.is_dir():
        raise ImageDecodeError(path, "is a folder, expected a picture file", "bad_input")
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(
                path, "the file is empty (0 bytes): the copy or upload did not finish; copy the photo again", "empty"
            )
        with warnings.catch_warnings():
            # Our own pixel check (before decoding) replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, path, limit)
                _reduce_while_decoding(im, max_side)
                reduced = _decode_heif_reduced(path, im, max_side)
                if reduced is not None:
                    return reduced
                im.load()
                return _finish(im, max_side)
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, Image.DecompressionBombError) as exc:
        raise _plain_problem(path, exc) from exc


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
                orientation = _orientation(im)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise _plain_problem(path, exc) from exc
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
