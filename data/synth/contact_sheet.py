"""Contact sheet: a grid of photos, each with its labels and its loss mask outlined.

Loss outlines: thinning yellow, alopecia patch cyan, transplant scar magenta. The caption
gives the index, view, sex, Fitzpatrick type, hair colour, Norwood stage and the conditions
the photo is labelled with, so a reader checks labels against pictures at a glance.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scalpscan.data.vocab import CONDITIONS, condition_bit

__all__ = ["contact_sheet", "write_contact_sheet", "OUTLINE_COLOURS"]

#: Outline colour (RGB) of each condition's loss-mask region.
OUTLINE_COLOURS: dict[str, tuple[int, int, int]] = {
    "thinning": (255, 230, 0),
    "alopecia_patch": (0, 230, 255),
    "transplant_scar": (255, 0, 255),
}
_SHORT = {"thinning": "thin", "alopecia_patch": "patch", "transplant_scar": "scar"}
_CAPTION_LINES = 3
_LINE_HEIGHT = 12


def _caption(record: Mapping[str, str]) -> list[str]:
    found = [_SHORT[c] for c in CONDITIONS if record.get(c) == "1"]
    stage = f"N{record['stage']}" if record.get("stage") else "N-"
    return [
        f"#{record.get('index', '?')} {record.get('view', '?')} {record.get('subject', '')[-5:]}",
        f"{record.get('sex', '?')} {record.get('skin_tone', '?')} {record.get('hair_colour', '?')} {stage}",
        " ".join(found) if found else "no loss",
    ]


def _tile(record: Mapping[str, str], folder: Path, thumb: int, outline: bool) -> np.ndarray:
    image = cv2.imread(str(folder / record["image"]), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read photo {folder / record['image']} for the contact sheet")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    scale = thumb / image.shape[0]
    image = cv2.resize(image, (thumb, thumb), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if outline and record.get("loss_mask"):
        loss = cv2.imread(str(folder / record["loss_mask"]), cv2.IMREAD_GRAYSCALE)
        if loss is not None:
            loss = cv2.resize(loss, (thumb, thumb), interpolation=cv2.INTER_NEAREST)
            for name in CONDITIONS:
                region = ((loss & condition_bit(name)) > 0).astype(np.uint8)
                contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(image, contours, -1, OUTLINE_COLOURS[name], 1)
    return image


def contact_sheet(
    records: Sequence[Mapping[str, str]],
    folder: str | Path,
    *,
    thumb: int = 128,
    columns: int = 5,
    outline: bool = True,
) -> Image.Image:
    """A grid of the photos of ``records`` (manifest rows as strings, paths relative to
    ``folder``), each captioned with its labels.

    Five columns by default: a synthetic subject's five views make one row.
    """
    if not records:
        raise ValueError("the contact sheet needs at least one photo")
    folder = Path(folder)
    columns = max(1, min(columns, len(records)))
    rows = (len(records) + columns - 1) // columns
    cell_h = thumb + _CAPTION_LINES * _LINE_HEIGHT + 4
    sheet = Image.new("RGB", (columns * (thumb + 4) + 4, rows * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, record in enumerate(records):
        x = 4 + (k % columns) * (thumb + 4)
        y = 4 + (k // columns) * cell_h
        sheet.paste(Image.fromarray(_tile(record, folder, thumb, outline)), (x, y))
        for line_no, text in enumerate(_caption(record)):
            draw.text((x, y + thumb + 1 + line_no * _LINE_HEIGHT), text, fill=(0, 0, 0), font=font)
    return sheet


def write_contact_sheet(
    records: Sequence[Mapping[str, str]],
    folder: str | Path,
    path: str | Path,
    **kwargs,
) -> Path:
    """Write `contact_sheet` as a PNG at ``path`` (atomically) and return the path."""
    path = Path(path)
    sheet = contact_sheet(records, folder, **kwargs)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sheet.save(tmp, format="PNG", optimize=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
