"""The manifest: one CSV row per photo, the input of training and evaluation.

Columns are :data:`data.vocab.MANIFEST_COLUMNS` followed by any extra columns (kept in
order). Paths are relative to the manifest's folder. Reading validates every row and
reports every problem at once, each with the file, the row number, the column and what
was expected, so a broken import is fixed in one pass rather than one error at a time.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from scalpscan.data.decode import ImageDecodeError, image_size
from scalpscan.data.files import atomic_write
from scalpscan.data.vocab import CONDITIONS, MANIFEST_COLUMNS, STAGES, VIEWS

__all__ = ["ManifestRow", "ManifestError", "read_manifest", "write_manifest", "write_csv_atomic"]


@dataclass(frozen=True)
class ManifestRow:
    """One photo and its labels; every label may be unknown (None).

    Attributes:
        image: Absolute path of the photo.
        subject: Person id; splits never put one subject on two sides.
        view: One of :data:`data.vocab.VIEWS`, or None when unknown.
        conditions: Every name in :data:`data.vocab.CONDITIONS` mapped to 1, 0 or None.
        stage: Norwood stage 1-7, or None.
        zone_mask: Absolute path of the zone-bit PNG, or None when unknown.
        loss_mask: Absolute path of the loss-bit PNG, or None when unknown.
        extra: Further columns (sex, skin_tone, source, ...), in file order.
    """

    image: Path
    subject: str
    view: str | None = None
    conditions: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(CONDITIONS))
    stage: int | None = None
    zone_mask: Path | None = None
    loss_mask: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ManifestError(ValueError):
    """A manifest that cannot be used; ``problems`` lists every problem found.

    Each problem names the file, the row (the CSV line number, header = line 1), the column
    and what was expected.
    """

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        lines = [f"{self.path}: {len(self.problems)} problem(s) in the manifest:"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


def _parse_binary(value: str) -> int | None:
    return None if value == "" else int(value)


def read_manifest(path: str | Path, *, check_files: bool = True) -> list[ManifestRow]:
    """Read and validate a manifest.

    Args:
        path: The CSV file.
        check_files: Also check that every photo and mask exists and that each mask has
            the size of its photo (opens file headers only, no pixel decoding).

    Returns:
        The rows, paths resolved against the manifest's folder.

    Raises:
        ManifestError: listing every problem (missing column, image or mask, unknown view,
            label not 0/1/empty, stage outside 1-7, mask of another size, duplicate image).
        FileNotFoundError: if the manifest itself does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    folder = path.resolve().parent
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            path,
            [
                f"{path}: row 1 (header): missing required column {c!r}; "
                f"expected the columns {', '.join(MANIFEST_COLUMNS)}"
                for c in missing
            ],
        )
    extra_columns = [c for c in header if c not in MANIFEST_COLUMNS]
    problems: list[str] = []
    rows: list[ManifestRow] = []
    first_seen: dict[Path, int] = {}
    for line_no, record in enumerate(reader, start=2):
        def bad(column: str, message: str, line_no: int = line_no) -> None:
            problems.append(f"{path}: row {line_no}, column {column!r}: {message}")

        if None in record:  # more cells than header columns
            bad("(row)", f"has {len(header) + len(record[None])} cells, expected {len(header)}")
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        ok = True

        image_text = values["image"]
        image: Path | None = None
        if not image_text:
            bad("image", "is empty; expected the photo's path relative to the manifest")
            ok = False
        else:
            image = (folder / image_text).resolve()
            if image in first_seen:
                bad("image", f"duplicate image {image_text!r}, already listed on row {first_seen[image]}")
                ok = False
            else:
                first_seen[image] = line_no
            if check_files and not image.is_file():
                bad("image", f"image not found: {image_text!r} (looked for {image})")
                ok = False
                image_ok = False
            else:
                image_ok = True

        subject = values["subject"]
        if not subject:
            bad("subject", "is empty; expected a person id (splits group photos by it)")
            ok = False

        view: str | None = values["view"] or None
        if view is not None and view not in VIEWS:
            bad("view", f"unknown view {view!r}; expected one of {', '.join(VIEWS)} or empty")
            ok = False

        conditions: dict[str, int | None] = {}
        for name in CONDITIONS:
            if values[name] not in ("0", "1", ""):
                bad(name, f"label {values[name]!r} is not 0, 1 or empty (unknown)")
                ok = False
            else:
                conditions[name] = _parse_binary(values[name])

        stage: int | None = None
        if values["stage"]:
            try:
                stage = int(values["stage"])
            except ValueError:
                stage = -1
            if stage not in STAGES:
                bad("stage", f"stage {values['stage']!r} is outside 1-7; expected 1..7 or empty")
                ok = False

        masks: dict[str, Path | None] = {}
        for column in ("zone_mask", "loss_mask"):
            masks[column] = None
            if not values[column]:
                continue
            mask = (folder / values[column]).resolve()
            masks[column] = mask
            if not check_files:
                continue
            if not mask.is_file():
                bad(column, f"mask not found: {values[column]!r} (looked for {mask})")
                ok = False
                continue
            try:
                with Image.open(mask) as m:
                    mask_size, mask_mode = m.size, m.mode
            except (OSError, UnidentifiedImageError) as exc:
                bad(column, f"cannot read mask {values[column]!r}: {exc}")
                ok = False
                continue
            if mask_mode != "L":
                bad(column, f"mask {values[column]!r} has mode {mask_mode}; expected a single-channel 8-bit PNG (mode L)")
                ok = False
            if image is not None and image_ok:
                try:
                    image_wh = image_size(image)
                except ImageDecodeError as exc:
                    bad("image", f"cannot read image {image_text!r}: {exc.problem}")
                    ok = False
                    image_ok = False
                    continue
                if mask_size != image_wh:
                    bad(
                        column,
                        f"mask {values[column]!r} is {mask_size[0]}x{mask_size[1]} but the image is "
                        f"{image_wh[0]}x{image_wh[1]}; expected the same size",
                    )
                    ok = False

        if ok and image is not None:
            rows.append(
                ManifestRow(
                    image=image,
                    subject=subject,
                    view=view,
                    conditions=conditions,
                    stage=stage,
                    zone_mask=masks["zone_mask"],
                    loss_mask=masks["loss_mask"],
                    extra={c: values.get(c, "") for c in extra_columns},
                )
            )
    if problems:
        raise ManifestError(path, problems)
    return rows


def _relative(target: Path, folder: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), folder)).as_posix()


def write_csv_atomic(path: str | Path, header: Sequence[str], records: Iterable[Sequence[str]]) -> None:
    """Write a CSV file atomically (:func:`data.files.atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(records)

    atomic_write(path, write)


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> None:
    """Write rows as a manifest; paths become relative to the manifest's folder.

    Extra columns are the union of every row's ``extra`` keys, in first-seen order. The
    file is replaced atomically.
    """
    path = Path(path)
    folder = path.parent.resolve()
    rows = list(rows)
    extra_columns: list[str] = []
    for row in rows:
        for key in row.extra:
            if key not in extra_columns and key not in MANIFEST_COLUMNS:
                extra_columns.append(key)

    def cell(value: int | None) -> str:
        return "" if value is None else str(value)

    records = []
    for row in rows:
        records.append(
            [
                _relative(row.image, folder),
                row.subject,
                row.view or "",
                *(cell(row.conditions.get(name)) for name in CONDITIONS),
                cell(row.stage),
                _relative(row.zone_mask, folder) if row.zone_mask else "",
                _relative(row.loss_mask, folder) if row.loss_mask else "",
                *(row.extra.get(c, "") for c in extra_columns),
            ]
        )
    write_csv_atomic(path, [*MANIFEST_COLUMNS, *extra_columns], records)
