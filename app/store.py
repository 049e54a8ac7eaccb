"""The photo store: files named by the SHA-256 of their content, never by what the upload called them.

``photos/ab/abcdef....jpg`` under the data folder holds the bytes as uploaded (scoring reads
them); ``display/ab/abcdef....jpg`` is what pages show: the decoded pixels re-encoded with
no EXIF, GPS, ICC or XMP block. Every file is written atomically, so a crash leaves either
the whole file or none of it.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from scalpscan.data.decode import ImageDecodeError, load_image
from scalpscan.data.files import atomic_write

__all__ = ["UploadError", "CheckedPhoto", "PhotoStore", "check_photo", "clean_name", "FORMAT_EXTENSIONS"]

#: Picture formats accepted (as Pillow names them, read from the content) -> stored extension.
FORMAT_EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic",
                                     "TIFF": "tif"}
_HASH = re.compile(r"^[0-9a-f]{64}$")
_DISPLAY_SIDE = 1280


class UploadError(ValueError):
    """An uploaded file that is refused; the message names the file and says why."""


@dataclass(frozen=True)
class CheckedPhoto:
    """An uploaded photo that passed the checks: its bytes, hash, stored extension and name (text only)."""

    data: bytes
    sha256: str
    ext: str
    name: str


def clean_name(name: str | None, limit: int = 200) -> str:
    """The upload's file name as text to show: its last path part, control characters removed.

    The name is only ever shown (escaped), never used to build a path.
    """
    text = unicodedata.normalize("NFC", str(name or ""))
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:limit] or "(unnamed)"


def check_photo(data: bytes, name: str | None, *, max_bytes: int) -> CheckedPhoto:
    """Check one uploaded file by its content: size, picture format, and that it decodes whole.

    Raises:
        UploadError: empty, too large, not a picture of an accepted format, or corrupt.
    """
    shown = clean_name(name)
    if not data:
        raise UploadError(f"{shown}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(f"{shown}: {len(data) / 1e6:.1f} MB is larger than the {max_bytes / 1e6:.0f} MB allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                kind = im.format or ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UploadError(f"{shown}: not a picture (the content is no JPEG, PNG, WebP, HEIC or TIFF image)") from None
    if kind not in FORMAT_EXTENSIONS:
        raise UploadError(f"{shown}: {kind} pictures are not accepted (use JPEG, PNG, WebP, HEIC or TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            load_image(Image.open(io.BytesIO(data)), max_side=256)
    except (ImageDecodeError, OSError, ValueError, Image.DecompressionBombError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise UploadError(f"{shown}: the picture cannot be decoded ({problem})") from None
    return CheckedPhoto(data=data, sha256=hashlib.sha256(data).hexdigest(), ext=FORMAT_EXTENSIONS[kind], name=shown)


class PhotoStore:
    """Content-addressed photos under ``root`` (the data folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def _parts(sha256: str, ext: str) -> tuple[str, str]:
        # Only a hex digest and a known extension ever reach the file system.
        if not _HASH.match(sha256) or ext not in set(FORMAT_EXTENSIONS.values()):
            raise ValueError(f"not a stored photo: {sha256!r}.{ext!r}")
        return sha256[:2], f"{sha256}.{ext}"

    def relative(self, sha256: str, ext: str) -> str:
        """The photo's path relative to the data folder (as result rows name it)."""
        folder, name = self._parts(sha256, ext)
        return f"photos/{folder}/{name}"

    def path(self, sha256: str, ext: str) -> Path:
        """The stored original."""
        return self.root / self.relative(sha256, ext)

    def display_path(self, sha256: str) -> Path:
        """The metadata-free display copy (JPEG)."""
        folder, _ = self._parts(sha256, "jpg")
        return self.root / "display" / folder / f"{sha256}.jpg"

    def put(self, photo: CheckedPhoto) -> Path:
        """Store the photo's bytes (once per content) and return the stored path."""
        target = self.path(photo.sha256, photo.ext)
        if not target.exists():
            atomic_write(target, lambda tmp: tmp.write_bytes(photo.data))
        return target

    def display(self, sha256: str, ext: str) -> Path:
        """The display copy, made on first use: upright, at most 1280 px, re-encoded without metadata.

        Raises:
            ImageDecodeError: the stored photo is missing or cannot be decoded.
        """
        target = self.display_path(sha256)
        if not target.exists():
            array = load_image(self.path(sha256, ext), max_side=_DISPLAY_SIDE)
            image = Image.fromarray(array[..., :3], "RGB")

            def write(tmp: Path) -> None:
                # A fresh image from the pixels alone: nothing of the original's metadata travels.
                image.save(tmp, "JPEG", quality=85, optimize=True)

            atomic_write(target, write)
        return target

    def delete(self, sha256: str, ext: str) -> None:
        """Remove the photo and its display copy (the caller checks no other visit uses them)."""
        self.path(sha256, ext).unlink(missing_ok=True)
        self.display_path(sha256).unlink(missing_ok=True)
