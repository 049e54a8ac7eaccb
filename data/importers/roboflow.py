"""Roboflow classification export: a folder of photos and ``_classes.csv``.

``_classes.csv`` holds ``filename`` and one 0/1 column per class (one-hot for
multi-class, several 1s for multi-label exports; Roboflow writes the header with a
space after each comma). Class names become labels through the mapping (``LEVEL_4`` is
stage 4 by default, ``thinning`` the condition, and so on). Roboflow renames files to
``<original stem>_<ext>.rf.<hash>.<ext>``; the original name gives the view and the
subject, so the augmented (rotated, re-encoded) copies of one photo share both.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from scalpscan.data.importers._common import (
    DEFAULT_SUBJECT_PATTERN,
    IMAGE_EXTENSIONS,
    ImportFormatError,
    ImportResult,
    LabelSet,
    labels_for_name,
    subject_from_name,
    view_from_name,
)
from scalpscan.data.manifest import ManifestRow
from scalpscan.data.vocab import CONDITIONS

__all__ = ["import_roboflow", "original_name"]

_RF_NAME = re.compile(r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,5})\.rf\.[0-9a-fA-F]+\.[A-Za-z0-9]+$")


def original_name(file_name: str) -> str:
    """The photo's name before Roboflow renamed it (``17-Left_jpg.rf.ab12.jpg`` -> ``17-Left.jpg``)."""
    match = _RF_NAME.match(file_name)
    if not match:
        return file_name
    return f"{match.group('stem')}.{match.group('ext')}"


def import_roboflow(
    src: str | Path,
    *,
    mapping: dict[str, LabelSet] | None = None,
    subject_pattern: str | None = DEFAULT_SUBJECT_PATTERN,
) -> ImportResult:
    """Read one split folder of a Roboflow classification export.

    Args:
        src: The folder holding ``_classes.csv`` (e.g. ``.../hairloss-norwood/train``).
        mapping: Class name -> labels, overriding the default spellings.
        subject_pattern: Regex whose first group, searched in the original file name, is
            the person id; the subject is ``<class>:<id>`` (``LEVEL_4:17``). Without a
            match the original stem is the id.

    Returns:
        The rows (one per CSV line) and warnings (e.g. file names without a view).

    Raises:
        ImportFormatError: no ``_classes.csv``, a class name with no known meaning, a
            cell that is not 0/1, or photos listed but missing (all listed at once).
    """
    src = Path(src)
    csv_path = src / "_classes.csv"
    if not csv_path.is_file():
        splits = sorted(p.name for p in src.iterdir() if (p / "_classes.csv").is_file()) if src.is_dir() else []
        hint = (
            f"; it holds the split folders {', '.join(splits)}: import each one, e.g. {src / splits[0]}"
            if splits
            else "; expected a Roboflow classification export folder"
        )
        raise ImportFormatError(f"{csv_path} not found{hint}")
    mapping = mapping or {}
    reader = csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8-sig")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportFormatError(f"{csv_path}: the file is empty; expected a header 'filename, CLASS, ...'") from None
    if not header or header[0].lower() != "filename" or len(header) < 2:
        raise ImportFormatError(f"{csv_path}: header {header!r}; expected 'filename' then one column per class")
    classes = header[1:]
    class_labels: dict[str, LabelSet] = {}
    unknown = []
    for name in classes:
        labels = labels_for_name(name, mapping)
        if labels is None:
            unknown.append(name)
        else:
            class_labels[name] = labels
    if unknown:
        raise ImportFormatError(
            f"{csv_path}: class(es) {', '.join(map(repr, unknown))} have no known meaning; "
            f"map them, e.g. --map '{unknown[0]}=thinning' or --map '{unknown[0]}=stage:3' (or =skip)"
        )

    result = ImportResult()
    problems: list[str] = []
    listed: set[str] = set()
    for line_no, cells in enumerate(reader, start=2):
        if not cells or not any(c.strip() for c in cells):
            continue
        cells = [c.strip() for c in cells]
        where = f"{csv_path}: row {line_no}"
        if len(cells) != len(header):
            problems.append(f"{where}: {len(cells)} cells, expected {len(header)}")
            continue
        file_name, values = cells[0], cells[1:]
        if any(v not in ("0", "1") for v in values):
            problems.append(f"{where}: class cells {values}; expected 0 or 1 in each")
            continue
        if file_name in listed:
            problems.append(f"{where}: {file_name!r} listed twice")
            continue
        listed.add(file_name)
        image = src / file_name
        if not image.is_file():
            problems.append(f"{where}: image not found: {image}")
            continue
        positive = [name for name, v in zip(classes, values) if v == "1"]
        labels = LabelSet()
        try:
            for name in positive:
                labels = labels.merge(class_labels[name], where=where)
        except ImportFormatError as exc:
            problems.append(str(exc))
            continue
        if labels.skip:
            continue
        conditions: dict[str, int | None] = dict.fromkeys(CONDITIONS)
        # A multi-label export states every class on every row, so a 0 under a condition's
        # column is a known absence.
        for name, v in zip(classes, values):
            for condition, value in class_labels[name].conditions.items():
                if v == "0" and value == 1 and conditions[condition] is None:
                    conditions[condition] = 0
        conditions.update(labels.conditions)

        original = original_name(file_name)
        stem = Path(original).stem
        view = labels.view
        if view is None:
            view, problem = view_from_name(stem)
            if problem:
                result.warnings.append(f"{image}: {problem}; view left unknown")
        prefix = "+".join(positive) if positive else "none"
        result.rows.append(
            ManifestRow(
                image=image.resolve(),
                subject=subject_from_name(stem, pattern=subject_pattern, prefix=prefix),
                view=view,
                conditions=conditions,
                stage=labels.stage,
                extra={"source": "roboflow", "original": original},
            )
        )
    if problems:
        raise ImportFormatError(
            f"{csv_path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    unlisted = sorted(
        p.name for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in listed
    )
    for name in unlisted:
        result.warnings.append(f"{src / name}: photo not listed in _classes.csv; left out")
    return result
