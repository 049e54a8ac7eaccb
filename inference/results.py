"""The results file: one row per photo, appended, flushed and resumable after any crash.

* :class:`ResultsFile` appends rows (JSON lines or a flat CSV, :data:`CSV_COLUMNS`) and
  flushes each one; a torn last line from a kill is cut off on resume.
* A row's ``image`` is a path that ``report`` can resolve from anywhere
  (:func:`stored_path`): relative to the results file's folder when the photo lies below
  it, absolute otherwise. ``file`` holds the photo's size and modification time, so
  :meth:`ResultsFile.resume` knows each photo by its file (resolved path, size, mtime)
  however the input was spelled, and a changed file is scored again.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.inference.inputs import InputError, photo_key

__all__ = [
    "FORMATS",
    "CSV_COLUMNS",
    "DoneRow",
    "Resumed",
    "ResultsFile",
    "flatten_row",
    "read_rows",
    "stored_path",
    "resolve_stored_path",
    "row_key",
]

#: Output formats: one JSON object per line, or a flat CSV (see :data:`CSV_COLUMNS`).
FORMATS: tuple[str, ...] = ("jsonl", "csv")


def stored_path(image: str | Path, results_dir: str | Path) -> str:
    """The ``image`` a row stores: relative to ``results_dir`` when the photo is below it
    (the folder can move as a whole), else absolute; either way ``report`` resolves it."""
    resolved = Path(image).resolve()
    try:
        return resolved.relative_to(Path(results_dir).resolve()).as_posix()
    except ValueError:
        return str(resolved)


def resolve_stored_path(image: str, results_dir: str | Path) -> Path:
    """A row's ``image`` as an absolute path (relative ones are relative to ``results_dir``)."""
    path = Path(image)
    return path if path.is_absolute() else Path(results_dir).resolve() / path


def row_key(row: Mapping[str, Any], results_dir: str | Path) -> tuple[str, int | None, int | None]:
    """The photo a row is of: ``(resolved path, size, mtime_ns)`` (size and mtime None for
    rows written before they were recorded)."""
    info = row.get("file") if isinstance(row.get("file"), Mapping) else {}
    size, mtime = info.get("size"), info.get("mtime_ns")
    return photo_key(
        resolve_stored_path(str(row["image"]), results_dir),
        int(size) if isinstance(size, int) else None,
        int(mtime) if isinstance(mtime, int) else None,
    )


@dataclass(frozen=True)
class DoneRow:
    """A photo's latest row in a results file: its status and the file version it scored."""

    status: str
    size: int | None
    mtime_ns: int | None


@dataclass
class Resumed:
    """What a results file already holds.

    Attributes:
        rows: latest row per resolved photo path.
        not_assessed: outputs the rows list as not assessed by the model.
    """

    rows: dict[str, DoneRow] = field(default_factory=dict)
    not_assessed: set[str] = field(default_factory=set)

    def status_of(self, key: tuple[str, int | None, int | None]) -> str | None:
        """The status of the row scored from this very file version, or None (not scored, or
        the file changed since: different size or modification time)."""
        done = self.rows.get(key[0])
        if done is None:
            return None
        if done.size is None and done.mtime_ns is None:  # an older row without file facts
            return done.status
        return done.status if (done.size, done.mtime_ns) == (key[1], key[2]) else None


#: Columns of the CSV format, a flattened result row (lists joined with ``;``; reasons
#: and cautions as JSON).
CSV_COLUMNS: tuple[str, ...] = (
    "image",
    "subject",
    "subject_source",
    "status",
    "error",
    "view",
    *(f"conditions.{name}" for name in CONDITIONS),
    *(f"thresholds.{name}" for name in CONDITIONS),
    "findings",
    "stage",
    *(f"zones.{zone}.{key}" for zone in ZONES for key in ("visible", "box", "loss_fraction")),
    "assessment.decision",
    "assessment.recommendations",
    "assessment.focus_zones",
    "assessment.cautions",
    "assessment.reasons",
    "model.id",
    "model.rules_version",
    "width",
    "height",
    "stage_probabilities",
    *(f"view_probabilities.{name}" for name in VIEWS),
    "quality.reasons",
    "masks.zones",
    "masks.hairloss",
    "not_assessed",
    "unvalidated",
    "warnings",
    "file.size",
    "file.mtime_ns",
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ";".join(value)  # findings, recommendations, focus zones
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return " ".join(str(v) for v in value)  # boxes, stage probabilities
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)  # reasons, cautions
    # One record per line keeps the resume logic the same as for JSON lines.
    return str(value).replace("\r", " ").replace("\n", " ")


def flatten_row(row: Mapping[str, Any]) -> dict[str, str]:
    """A result row as a flat ``{column: text}`` for :data:`CSV_COLUMNS`."""
    flat: dict[str, str] = {}
    for column in CSV_COLUMNS:
        value: Any = row
        for part in column.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        flat[column] = _cell(value)
    return flat


class ResultsFile:
    """An append-only results file that survives being killed mid-write.

    Args:
        path: the ``.jsonl`` or ``.csv`` file (created with its folder when missing).
        fmt: "jsonl" or "csv".
    """

    def __init__(self, path: str | Path, fmt: str = "jsonl") -> None:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.path = Path(path)
        self.fmt = fmt
        self._handle: io.TextIOWrapper | None = None
        self._csv: Any = None

    def resume(self) -> Resumed:
        """Read the rows already written (the latest row of each photo); cut off a torn last line.

        Raises:
            InputError: if the file is not a results file of this format.
        """
        done = Resumed()
        if not self.path.exists():
            return done
        if self.path.is_dir():
            raise InputError(f"--out {self.path} is a folder; give a file name such as results.jsonl")
        self._truncate_torn_tail()
        base = self.path.resolve().parent
        for row in self._rows():
            if not row.get("image"):
                continue
            path, size, mtime = row_key(row, base)
            done.rows[path] = DoneRow(str(row.get("status")), size, mtime)
            listed = row.get("not_assessed")
            if isinstance(listed, list):
                done.not_assessed.update(str(name) for name in listed)
        return done

    def _rows(self) -> Iterator[dict[str, Any]]:
        if self.fmt == "jsonl":
            with self.path.open("r", encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(
                            f"{self.path} line {number} is not a JSON result row ({exc.msg}); "
                            "is it a results file? Give another --out or repair the line"
                        ) from exc
                    if isinstance(row, dict):
                        yield row
            return
        with self.path.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            if tuple(header) != CSV_COLUMNS:
                raise InputError(
                    f"{self.path} has other columns than this scalpscan's CSV results (written by another "
                    "version, or not a results file); give another --out"
                )
            for record in reader:
                if len(record) != len(CSV_COLUMNS):
                    continue
                flat = dict(zip(CSV_COLUMNS, record))
                size, mtime = flat["file.size"], flat["file.mtime_ns"]
                yield {
                    "image": flat["image"],
                    "status": flat["status"],
                    "not_assessed": [n for n in flat["not_assessed"].split(";") if n],
                    "file": {"size": int(size) if size.isdigit() else None,
                             "mtime_ns": int(mtime) if mtime.lstrip("-").isdigit() else None},
                }

    def _truncate_torn_tail(self) -> None:
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            # Walk back to the last complete line and cut everything after it.
            position, block = size, 1 << 16
            cut = 0
            while position > 0:
                start = max(0, position - block)
                handle.seek(start)
                chunk = handle.read(position - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                position = start
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())

    def open(self) -> None:
        """Open for appending (writing the CSV header to a new file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._handle = self.path.open("a", encoding="utf-8", newline="")
        if self.fmt == "csv":
            self._csv = csv.writer(self._handle, lineterminator="\n")
            if new:
                self._csv.writerow(CSV_COLUMNS)
                self._handle.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row and flush it to the operating system."""
        assert self._handle is not None, "open() first"
        if self.fmt == "jsonl":
            self._handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            self._csv.writerow([flatten_row(row)[c] for c in CSV_COLUMNS])
        self._handle.flush()

    def sync(self) -> None:
        """Force the written rows to disk (survives a power cut, not only a kill)."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Sync and close."""
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ResultsFile:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of a ``.jsonl`` results file."""
    with Path(path).open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


