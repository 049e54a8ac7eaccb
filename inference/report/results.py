"""Reading `results.jsonl` files, several shards merged into one set of rows.

Rows are deduplicated by photo (the image path resolved against its results file's
folder, so a row resolves wherever ``report`` runs): a row of a newer version of the file
(a later modification time in its ``file``) wins; among rows of the same version the last
"ok" row wins, and a photo with no "ok" row keeps its last row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ResultsError", "MergeSummary", "read_results"]


class ResultsError(ValueError):
    """Results files that cannot be read; the message names each file, line and problem."""


@dataclass
class MergeSummary:
    """What `read_results` merged.

    Attributes:
        files: the results files, in the order read.
        rows_read: rows read over all files.
        photos: distinct photos kept.
        duplicates: rows dropped because another row of the same photo won.
        replaced_by_ok: photos whose earlier non-ok row an "ok" row replaced.
        warnings: lines skipped (a truncated last line of an interrupted run).
    """

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    photos: int = 0
    duplicates: int = 0
    replaced_by_ok: int = 0
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence for the command's output and the index page."""
        text = (
            f"merged {len(self.files)} results file(s): {self.rows_read} row(s), {self.photos} photo(s)"
            f", {self.duplicates} duplicate row(s) dropped"
        )
        if self.replaced_by_ok:
            text += f" ({self.replaced_by_ok} error/recapture row(s) replaced by a later ok row)"
        return text


def _resolve_paths(row: dict[str, Any], base: Path) -> dict[str, Any]:
    """The row with its image and mask paths made absolute against ``base``."""
    row = dict(row)
    image = row.get("image")
    if isinstance(image, str) and image and not Path(image).is_absolute():
        row["image"] = str(base / image)
    masks = row.get("masks")
    if isinstance(masks, dict):
        row["masks"] = {
            k: (str(base / v) if isinstance(v, str) and v and not Path(v).is_absolute() else v) for k, v in masks.items()
        }
    return row


def _mtime(row: dict[str, Any]) -> int | None:
    info = row.get("file")
    value = info.get("mtime_ns") if isinstance(info, dict) else None
    return value if isinstance(value, int) else None


def read_results(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], MergeSummary]:
    """Read and merge results files.

    Args:
        paths: ``results.jsonl`` files (several shards of one scoring run, or several runs).

    Returns:
        The merged rows, in first-seen order, with image and mask paths made absolute; and a
        summary of what was merged.

    Raises:
        ResultsError: a missing file, or a line (other than a truncated last line) that is not a
            JSON object with an "image"; every problem listed.
    """
    summary = MergeSummary()
    problems: list[str] = []
    kept: dict[str, dict[str, Any]] = {}
    for path in map(Path, paths):
        summary.files.append(str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(f"{path}: file not found")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot be read ({exc})")
            continue
        base = path.resolve().parent
        lines = text.split("\n")
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if line_no == len(lines) and not text.endswith("\n"):
                    summary.warnings.append(f"{path}:{line_no}: incomplete last line skipped (an interrupted run?)")
                else:
                    problems.append(f"{path}:{line_no}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
                problems.append(f"{path}:{line_no}: expected a JSON object with an \"image\" path")
                continue
            summary.rows_read += 1
            row = _resolve_paths(row, base)
            key = str(Path(row["image"]).resolve())
            previous = kept.get(key)
            if previous is None:
                kept[key] = row
                continue
            summary.duplicates += 1
            is_ok = row.get("status", "ok") == "ok"
            was_ok = previous.get("status", "ok") == "ok"
            newer, older = _mtime(row), _mtime(previous)
            if newer is not None and older is not None and newer != older:
                # The file changed between the two rows: the row of the newer file wins.
                if newer > older:
                    kept[key] = row
                continue
            if is_ok or not was_ok:
                if is_ok and not was_ok:
                    summary.replaced_by_ok += 1
                kept[key] = row
    if problems:
        raise ResultsError("results cannot be read:\n  " + "\n  ".join(problems))
    summary.photos = len(kept)
    return list(kept.values()), summary
