"""Pre-resizing a manifest's photos and masks, so that training epochs do not decode
full-size photos again and again.

A 640 px (or 12 MP) JPEG costs far more to decode than the network's 160-224 px input
needs; on a CPU that decoding can take most of an epoch. `resize_manifest` writes each
photo once, reduced so that its longest side is ``side``, with its masks reduced to the
same size (nearest neighbour, so every pixel keeps its bits), and a manifest pointing at
the copies with the same labels and extra columns. File names are kept, so a run's data
fingerprint is the same on the copies as on the originals.

    scalpscan train --recipe real --data local/norwood/train/manifest.csv --cache local/cache
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from PIL import Image

from scalpscan.data.decode import ImageDecodeError, load_image
from scalpscan.data.files import atomic_write, file_sha256, write_text_atomic
from scalpscan.data.manifest import ManifestRow, read_manifest, write_manifest

__all__ = ["STAMP_FILE", "resize_manifest", "cached_manifest"]

#: What a resized copy was made from (source manifest, its content hash, side); a copy
#: whose stamp matches is reused as it is.
STAMP_FILE = "resize.json"


def _target(source: Path, root: Path, out: Path, index: int) -> Path:
    """Where the copy of ``source`` goes: its path under ``root`` if it lies there, else a
    numbered folder; the file name is kept either way."""
    try:
        return out / source.resolve().relative_to(root.resolve())
    except ValueError:
        return out / "external" / f"{index:05d}" / source.name


def _save(image: Image.Image, target: Path) -> None:
    # JPEG stays JPEG (quality 95); anything else is written losslessly as PNG under its
    # own name (the decoder reads the content, not the extension).
    fmt = "JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    options = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(target, lambda tmp: image.save(tmp, format=fmt, **options))


def _resize_mask(source: Path, size: tuple[int, int], target: Path) -> None:
    try:
        with Image.open(source) as mask:
            if mask.mode != "L":
                raise ImageDecodeError(source, f"mask has mode {mask.mode}; expected a "
                                               "single-channel 8-bit PNG (mode L)")
            reduced = mask.resize(size, Image.Resampling.NEAREST)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(source, f"cannot read the mask: {exc}") from exc
    atomic_write(target, lambda tmp: reduced.save(tmp, format="PNG"))


def resize_manifest(manifest: str | os.PathLike, out: str | os.PathLike, side: int) -> Path:
    """Copy a manifest's photos and masks, reduced to a longest side of ``side`` pixels,
    into ``out``, and write ``out/manifest.csv`` pointing at the copies.

    Photos already no larger than ``side`` are copied at their size. A copy made earlier
    from the same manifest content at the same side is reused without reading a photo.

    Args:
        manifest: the manifest CSV whose photos to copy.
        out: folder for the copies, their masks and the new manifest.
        side: longest side of the copies, in pixels (at least 32).

    Returns:
        The new manifest (same rows, labels and extra columns, in the same order).

    Raises:
        ValueError: ``side`` below 32.
        ManifestError: an unreadable manifest.
        ImageDecodeError: a photo or mask that cannot be read (the message names it).
    """
    if side < 32:
        raise ValueError(f"side={side}: photos smaller than 32 px cannot be trained on")
    manifest, out = Path(manifest), Path(out)
    stamp = {"source": str(manifest.resolve()), "sha256": file_sha256(manifest), "side": int(side)}
    out_manifest, stamp_path = out / "manifest.csv", out / STAMP_FILE
    if out_manifest.is_file() and stamp_path.is_file():
        try:
            if {k: v for k, v in json.loads(stamp_path.read_text()).items() if k in stamp} == stamp:
                return out_manifest
        except json.JSONDecodeError:
            pass  # a damaged stamp: make the copy again
    rows = read_manifest(manifest)
    root = manifest.parent
    copies: list[ManifestRow] = []
    for index, row in enumerate(rows):
        reduced = Image.fromarray(load_image(row.image, max_side=side))
        image = _target(Path(row.image), root, out, index)
        _save(reduced, image)
        masks = {}
        for key in ("zone_mask", "loss_mask"):
            source = getattr(row, key)
            if source is not None:
                masks[key] = _target(Path(source), root, out, index)
                _resize_mask(Path(source), reduced.size, masks[key])
        copies.append(dataclasses.replace(row, image=image, **masks))
    write_manifest(copies, out_manifest)
    write_text_atomic(stamp_path, json.dumps({**stamp, "photos": len(copies)}, indent=2) + "\n")
    return out_manifest


def cached_manifest(manifest: str | os.PathLike, cache: str | os.PathLike, side: int) -> Path:
    """`resize_manifest` into a folder of ``cache`` named after the manifest and ``side``,
    so that one cache folder serves many manifests and sides."""
    manifest = Path(manifest)
    key = hashlib.sha256(str(manifest.resolve()).encode()).hexdigest()[:8]
    name = f"{manifest.parent.name or 'data'}_{manifest.stem}_{key}_{side}px"
    return resize_manifest(manifest, Path(cache) / name, side)
