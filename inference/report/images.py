"""Photos for the report pages: decoded upright, overlaid, re-encoded without metadata.

Only the pixels travel: every embedded picture is a fresh image built from the decoded
array and saved as JPEG or PNG with no EXIF, GPS, ICC or XMP block, as a ``data:`` URI.
"""

from __future__ import annotations

import base64
import inspect
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from scalpscan.data.vocab import CONDITIONS, ZONES

try:  # the project's decoder (EXIF orientation, HEIC, odd modes, bomb limits)
    from scalpscan.data.decode import ImageDecodeError, load_image
except ImportError:  # pragma: no cover - data.decode is part of the project; kept for partial checkouts
    load_image = None  # type: ignore[assignment]

    class ImageDecodeError(ValueError):  # type: ignore[no-redef]
        """A picture that cannot be decoded (same signature as data.decode's)."""

        def __init__(self, path: str | Path, problem: str) -> None:
            self.path, self.problem = str(path), problem
            super().__init__(f"{path}: {problem}")


__all__ = [
    "ZONE_COLOURS",
    "LOSS_COLOURS",
    "PhotoFigure",
    "load_photo",
    "encode_data_uri",
    "photo_figure",
]

#: Outline colour of each zone (colour-blind-friendly palette, Okabe-Ito).
ZONE_COLOURS: dict[str, str] = {
    "hairline": "#0072B2",
    "crown": "#E69F00",
    "temple_left": "#009E73",
    "temple_right": "#56B4E9",
    "part": "#CC79A7",
    "donor": "#F0E442",
}
#: Fill colour of each kind of loss in mask overlays.
LOSS_COLOURS: dict[str, str] = {"thinning": "#D55E00", "alopecia_patch": "#C00000", "transplant_scar": "#7B2CBF"}

_LOSS_ALPHA = 0.45
_DISPLAY_MAX_SIDE = 1024


@dataclass
class PhotoFigure:
    """One photo as the report shows it.

    Attributes:
        name: the photo's file name (text, escaped by the template).
        src: ``data:`` URI of the re-encoded picture (overlays drawn in), or None if unreadable.
        width: width of the coordinate frame the boxes are in (the original photo's pixels).
        height: height of that frame.
        boxes: zone boxes to draw: ``{"zone", "x", "y", "w", "h", "colour", "label", "loss"}``.
        legend: ``(label, colour)`` pairs of what the overlays mean.
        error: why the photo cannot be shown, or None.
    """

    name: str
    src: str | None = None
    width: int = 0
    height: int = 0
    boxes: list[dict[str, Any]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


def load_photo(path: str | Path, *, max_side: int = _DISPLAY_MAX_SIDE) -> Image.Image:
    """Decode a photo upright as a metadata-free RGB image no bigger than ``max_side``.

    Uses `data.decode.load_image` when the project has it, else Pillow with the EXIF
    orientation applied.

    Raises:
        ImageDecodeError: the file is missing or cannot be decoded.
    """
    if load_image is not None:
        kwargs = {"max_side": max_side * 2} if "max_side" in inspect.signature(load_image).parameters else {}
        array = load_image(path, **kwargs)
    else:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (max_side * 2, max_side * 2))
                array = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except FileNotFoundError:
            raise ImageDecodeError(path, "file not found") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(path, f"cannot decode the picture: {exc}") from exc
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8), "RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def encode_data_uri(image: Image.Image, *, fmt: str = "JPEG") -> str:
    """A ``data:`` URI of the image's pixels only (no EXIF, GPS, ICC or XMP)."""
    clean = Image.fromarray(np.asarray(image.convert("RGBA" if fmt == "PNG" else "RGB")))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        clean.save(buffer, "JPEG", quality=82, optimize=True, progressive=True)
        mime = "image/jpeg"
    else:
        clean.save(buffer, "PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"mask {path} is mode {im.mode}, expected a single-channel 8-bit PNG")
        mask = im.convert("L") if im.mode != "L" else im.copy()
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return np.asarray(mask, dtype=np.uint8)


def _draw_masks(image: Image.Image, zones_path: Path | None, loss_path: Path | None) -> list[tuple[str, str]]:
    """Fill loss areas and outline zones from mask PNGs, in place. Returns the legend."""
    pixels = np.asarray(image, dtype=np.float32).copy()
    legend: list[tuple[str, str]] = []
    if loss_path is not None:
        loss = _read_mask(loss_path, image.size)
        for i, name in enumerate(CONDITIONS):
            hit = (loss & (1 << i)) > 0
            if hit.any():
                pixels[hit] = (1 - _LOSS_ALPHA) * pixels[hit] + _LOSS_ALPHA * np.array(_hex_rgb(LOSS_COLOURS[name]))
                legend.append((name.replace("_", " "), LOSS_COLOURS[name]))
    if zones_path is not None:
        zones = _read_mask(zones_path, image.size)
        thickness = max(1, round(max(image.size) / 300))
        for i, name in enumerate(ZONES):
            inside = (zones & (1 << i)) > 0
            if not inside.any():
                continue
            # Outline = inside minus its erosion (a pixel whose neighbour is outside).
            eroded = inside.copy()
            for _ in range(thickness):
                shrunk = eroded.copy()
                shrunk[1:, :] &= eroded[:-1, :]
                shrunk[:-1, :] &= eroded[1:, :]
                shrunk[:, 1:] &= eroded[:, :-1]
                shrunk[:, :-1] &= eroded[:, 1:]
                eroded = shrunk
            edge = inside & ~eroded
            pixels[edge] = np.array(_hex_rgb(ZONE_COLOURS[name]), dtype=np.float32)
            legend.append((name.replace("_", " ") + " (zone)", ZONE_COLOURS[name]))
    image.paste(Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"))
    return legend


def _resolve(path_text: Any, base: Path | None) -> Path | None:
    if not isinstance(path_text, str) or not path_text:
        return None
    path = Path(path_text)
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def photo_figure(row: Mapping[str, Any], *, base: Path | None = None, max_side: int = _DISPLAY_MAX_SIDE) -> PhotoFigure:
    """The figure for one result row: the photo with its loss and zone overlays.

    With ``masks`` paths in the row, loss areas are filled and zones outlined from the
    masks; otherwise each visible zone's ``box`` is drawn, shaded by its loss fraction.

    Args:
        row: a result row.
        base: folder that relative paths in the row are relative to (None: the working folder).
        max_side: longest side of the embedded picture.
    """
    image_text = str(row.get("image", ""))
    figure = PhotoFigure(name=Path(image_text).name or image_text)
    path = _resolve(image_text, base)
    if path is None:
        figure.error = "the row names no photo"
        return figure
    try:
        image = load_photo(path, max_side=max_side)
    except (ImageDecodeError, OSError, ValueError) as exc:
        # The decoder's message starts with the full path; the caption already names the file.
        figure.error = f"photo could not be read: {getattr(exc, 'problem', None) or exc}"
        return figure
    width, height = row.get("width"), row.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        width, height = image.size
    figure.width, figure.height = width, height

    masks = row.get("masks") if isinstance(row.get("masks"), Mapping) else {}
    zones_mask = _resolve(masks.get("zones"), base)
    loss_mask = _resolve(masks.get("hairloss"), base)
    used_masks = False
    if zones_mask is not None or loss_mask is not None:
        try:
            figure.legend = _draw_masks(image, zones_mask, loss_mask)
            used_masks = True
        except (OSError, ValueError) as exc:
            figure.error = f"masks could not be drawn ({exc}); zone boxes shown instead"

    zones = row.get("zones") if isinstance(row.get("zones"), Mapping) else {}
    for name in ZONES:
        info = zones.get(name)
        if not isinstance(info, Mapping) or not info.get("visible"):
            continue
        box = info.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        loss = info.get("loss_fraction")
        loss = float(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None
        label = name.replace("_", " ") + (f" {loss:.0%}" if loss is not None else "")
        figure.boxes.append({
            "zone": name, "x": round(x0, 1), "y": round(y0, 1), "w": round(x1 - x0, 1), "h": round(y1 - y0, 1),
            "colour": ZONE_COLOURS[name], "label": label,
            # Masks already show the loss; boxes only shade it when there are no masks.
            "loss": 0.0 if used_masks or loss is None else round(min(max(loss, 0.0), 1.0) * 0.4, 3),
            "outline": not used_masks,
        })
    if figure.boxes and not used_masks:
        figure.legend = [(b["zone"].replace("_", " "), b["colour"]) for b in figure.boxes]
        if any(b["loss"] > 0 for b in figure.boxes):  # no shading legend when the loss map is not assessed
            figure.legend.append(("loss (shading)", "#C00000"))
    figure.src = encode_data_uri(image)
    return figure
