"""Batch scoring: photos in, one result row per photo out, resumable and shardable.

The driver behind ``scalpscan score`` and ``Predictor.score``:

* **Inputs** are photo files, folders (searched recursively for :data:`IMAGE_EXTENSIONS`,
  hidden folders skipped, in sorted order) or manifests (``.csv``, see ``data.manifest``).
  A photo reached twice is scored once.
* **Subject** of a photo: the manifest's ``subject`` column; otherwise the leading token
  of the file name before the first ``_``, ``-``, ``.`` or space (``P001_top.jpg`` ->
  ``P001``). When an intake sheet is given and that token is not on it but the name of
  one of the photo's folders (below the input folder) is, that folder name is used
  (``photos/P001/IMG_4411.jpg`` -> ``P001``).
* **Decoding** (``load_image``), the quality gate and the evaluation transform run in
  worker processes (a torch ``DataLoader``, forked), so the model does not wait for JPEG
  decoding; the workers exit when this process dies, however it dies.
  A file that cannot be read becomes an ``error`` row; the batch goes on.
* **Output** rows are appended and flushed as they are made (and fsync'd after each
  batch). Run the same command again after a crash or ``kill -9``: the existing rows are
  read, a torn last line is cut off, photos that already have a row are skipped, so the
  file ends with exactly one row per photo.
* **Sharding**: ``shard=(k, n)`` keeps the photos whose stable hash (SHA-1 of the path
  relative to its input folder or manifest) is ``k`` modulo ``n``; under ``torchrun``
  the rank and world size are read from ``RANK`` / ``WORLD_SIZE``.
* Memory stays flat: photos are decoded a few batches ahead and rows are written, not
  kept; only the list of paths and the set of finished names are held.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalpscan.data.decode import IMAGE_EXTENSIONS
from scalpscan.data.files import atomic_write
from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.inference.decoding import decode_outputs, mask_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "FORMATS",
    "CSV_COLUMNS",
    "InputError",
    "PhotoJob",
    "ScoreSummary",
    "subject_from_name",
    "discover_inputs",
    "jobs_from_paths",
    "parse_shard",
    "shard_from_env",
    "select_shard",
    "sharded_out",
    "default_workers",
    "ResultsFile",
    "flatten_row",
    "read_rows",
    "score_jobs",
    "run_score",
]


#: Output formats: one JSON object per line, or a flat CSV (see :data:`CSV_COLUMNS`).
FORMATS: tuple[str, ...] = ("jsonl", "csv")

_SUBJECT_SPLIT = re.compile(r"[_\-. ]")


class InputError(ValueError):
    """A bad input, shard or output argument; the message names it and the fix."""


@dataclass(frozen=True)
class PhotoJob:
    """One photo to score.

    Attributes:
        image: the path as written to the row's ``image`` (also the resume key).
        subject: patient id, or None when unknown.
        shard_key: path relative to its input folder or manifest, hashed for sharding.
    """

    image: str
    subject: str | None
    shard_key: str


def subject_from_name(path: str | Path) -> str:
    """Leading token of a file name: ``P001_top.jpg`` -> ``P001``; ``scan.jpg`` -> ``scan``."""
    stem = Path(path).name
    token = _SUBJECT_SPLIT.split(stem, maxsplit=1)[0]
    return token or Path(path).stem


def _subject(path: Path, root: Path | None, known: Iterable[str] | None) -> str:
    token = subject_from_name(path)
    if known is None:
        return token
    known_set = set(known)
    if token in known_set or root is None:
        return token
    for parent in path.relative_to(root).parents:
        if parent.name and parent.name in known_set:
            return parent.name
    return token


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(root) / name


def _manifest_jobs(path: Path) -> Iterator[PhotoJob]:
    from scalpscan.data.manifest import ManifestError, read_manifest

    try:
        rows = read_manifest(path, check_files=False)
    except ManifestError as exc:
        raise InputError(f"manifest {path} cannot be read:\n{exc}") from exc
    base = path.resolve().parent
    for row in rows:
        try:
            key = row.image.resolve().relative_to(base).as_posix()
        except ValueError:
            key = row.image.as_posix()
        yield PhotoJob(image=str(row.image), subject=row.subject or None, shard_key=key)


def discover_inputs(inputs: Sequence[str | Path], *, subjects: Iterable[str] | None = None) -> list[PhotoJob]:
    """The photos named by files, folders and manifests, each once, in a stable order.

    Args:
        inputs: photo files, folders (recursive) and ``.csv`` manifests.
        subjects: subjects on the intake sheet, to match folder names against.

    Raises:
        InputError: for an input that does not exist, or a manifest that cannot be read.
    """
    known = set(subjects) if subjects is not None else None
    jobs: list[PhotoJob] = []
    seen: set[str] = set()

    def add(job: PhotoJob) -> None:
        key = os.path.normcase(os.path.abspath(job.image))
        if key not in seen:
            seen.add(key)
            jobs.append(job)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for photo in _walk(path):
                rel = photo.relative_to(path)
                add(PhotoJob(image=str(photo), subject=_subject(photo, path, known), shard_key=rel.as_posix()))
        elif path.is_file() and path.suffix.lower() == ".csv":
            for job in _manifest_jobs(path):
                add(job)
        elif path.is_file():
            add(PhotoJob(image=str(path), subject=_subject(path, None, known), shard_key=path.name))
        else:
            raise InputError(f"input not found: {path} (give photo files, folders or a manifest .csv)")
    return jobs


def jobs_from_paths(paths: Iterable[str | Path]) -> list[PhotoJob]:
    """One job per path, as given (the subject read from the file name)."""
    return [PhotoJob(image=str(p), subject=subject_from_name(p), shard_key=Path(p).name) for p in paths]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``; K counts from 0 (``0/4`` .. ``3/4``), like torchrun ranks.

    Raises:
        InputError: if the text is not ``K/N`` with ``0 <= K < N``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise InputError(f"--shard {text!r}: expected K/N, e.g. 0/4 (K counts from 0)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise InputError(f"--shard {text!r}: need N >= 1 and 0 <= K < N (K counts from 0, e.g. 0/4 .. 3/4)")
    return index, count


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when running under torchrun with more than one process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        return None
    if world > 1 and 0 <= rank < world:
        return rank, world
    return None


def _shard_of(key: str, count: int) -> int:
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(jobs: Iterable[PhotoJob], index: int, count: int) -> list[PhotoJob]:
    """The jobs of shard ``index`` of ``count``; every job lands in exactly one shard."""
    return [job for job in jobs if _shard_of(job.shard_key, count) == index]


# -- output ------------------------------------------------------------------------------

#: Columns of the CSV format, a flattened result row (lists joined with ``;``; reasons
#: and cautions as JSON).
CSV_COLUMNS: tuple[str, ...] = (
    "image",
    "subject",
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
    "masks.loss",
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

    def resume(self) -> dict[str, str]:
        """Read the rows already written: ``{image: status}``; cut off a torn last line.

        Raises:
            InputError: if the file is not a results file of this format.
        """
        done: dict[str, str] = {}
        if not self.path.exists():
            return done
        if self.path.is_dir():
            raise InputError(f"--out {self.path} is a folder; give a file name such as results.jsonl")
        self._truncate_torn_tail()
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
                    if isinstance(row, dict) and "image" in row:
                        done[str(row["image"])] = str(row.get("status"))
            return done
        with self.path.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return done
            if tuple(header) != CSV_COLUMNS:
                raise InputError(
                    f"{self.path} has other columns than scalpscan's CSV results; give another --out"
                )
            for record in reader:
                if len(record) == len(CSV_COLUMNS):
                    done[record[0]] = record[2]
        return done

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


# -- decoding workers --------------------------------------------------------------------


class _PhotoDataset:
    """Map-style dataset: job index -> decoded, quality-checked, preprocessed photo.

    Runs inside DataLoader worker processes, so it holds only picklable plain values.
    """

    def __init__(self, jobs: Sequence[PhotoJob], prepare: Any) -> None:
        self.jobs = jobs
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        job = self.jobs[index]
        return {"job": job, **self.prepare(job.image)}


def _collate(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
    import torch

    arrays = [item.pop("array") for item in items]
    ok = [a for a in arrays if a is not None]
    batch = torch.from_numpy(np.stack(ok)) if ok else None
    return items, batch


def _worker_init(_: int) -> None:
    import cv2

    # Each worker decodes one photo at a time; more threads only fight the model's (the
    # DataLoader already gives each worker one torch thread).
    cv2.setNumThreads(1)


# Forked workers start at once and exit when this process dies (even by kill -9); the
# spawn-based methods would leave them waiting on a parent that is gone.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def default_workers() -> int:
    """Decoding processes: one per spare core, at least one, at most four."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _batches(
    jobs: Sequence[PhotoJob], predictor: Any, batch_size: int, workers: int, pin_memory: bool
) -> Iterator[tuple[list[dict[str, Any]], Any]]:
    import cv2
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _PhotoDataset(jobs, predictor.prepare),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        pin_memory=pin_memory,
        multiprocessing_context=_START_METHOD if workers else None,
    )
    # Forked workers inherit OpenCV's thread pool without its threads; if this process
    # has used it (training before scoring, as in the demo), the first OpenCV call in a
    # worker deadlocks. Shut the pool down while the workers are forked, then restore it.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        iterator = iter(loader)
    finally:
        cv2.setNumThreads(threads)
    yield from iterator


def _mask_name(image: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image).stem)[:60]
    return f"{stem}-{hashlib.sha1(image.encode('utf-8')).hexdigest()[:10]}"


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(array, "L").save(tmp, format="PNG"))


def _intake_for(subject: str | None, intakes: Mapping[str, Any] | None) -> Any:
    if not intakes or subject is None:
        return None
    if subject in intakes:
        return intakes[subject]
    folded = subject.casefold()
    for key, value in intakes.items():
        if key.casefold() == folded:
            return value
    return None


def score_jobs(
    predictor: Any,
    jobs: Sequence[PhotoJob],
    *,
    batch_size: int = 32,
    workers: int = 0,
    intakes: Mapping[str, Any] | None = None,
    mask_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Score jobs in order, yielding one result row per job as soon as its batch is done.

    Args:
        predictor: a loaded ``Predictor``.
        jobs: the photos.
        batch_size: photos per forward pass.
        workers: decoding worker processes (0 decodes in this process).
        intakes: ``Intake`` per subject, for the photo-level assessments.
        mask_dir: when given, zone and loss masks are saved there as PNGs and the rows
            carry their paths (relative to ``results_dir``).
        results_dir: folder the mask paths are written relative to.

    Raises:
        ValueError: if ``batch_size`` or ``workers`` is out of range.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers!r}")
    if not jobs:
        return
    masks_to = Path(mask_dir) if mask_dir is not None else None
    if masks_to is not None:
        masks_to.mkdir(parents=True, exist_ok=True)
    relative_to = Path(results_dir) if results_dir is not None else Path.cwd()
    pin = str(getattr(predictor, "device", "cpu")).startswith("cuda")
    for items, batch in _batches(jobs, predictor, batch_size, workers, pin):
        outputs = predictor.forward(batch) if batch is not None else None
        ok_items = [item for item in items if item["status"] == "ok"]
        decoded = decode_outputs(outputs, predictor.meta, [i["geometry"] for i in ok_items]) if ok_items else []
        position = 0  # index of the next ok photo in the batch outputs
        for item in items:
            job: PhotoJob = item["job"]
            intake = _intake_for(job.subject, intakes)
            if item["status"] != "ok":
                prediction = predictor.failed(
                    image=job.image,
                    subject=job.subject,
                    status=item["status"],
                    error=item["error"],
                    width=item["width"],
                    height=item["height"],
                    quality=item["quality"],
                    intake=intake,
                )
                yield prediction.to_row()
                continue
            n, position = position, position + 1
            prediction = predictor.finish(
                decoded[n],
                image=job.image,
                subject=job.subject,
                width=item["width"],
                height=item["height"],
                quality=item["quality"],
                intake=intake,
            )
            if masks_to is not None:
                zones_png, loss_png = mask_images(outputs, n, item["geometry"], predictor.input_size)
                name = _mask_name(job.image)
                zone_path, loss_path = masks_to / f"{name}.zones.png", masks_to / f"{name}.loss.png"
                _write_png(zones_png, zone_path)
                _write_png(loss_png, loss_path)
                prediction.masks = {
                    "zones": os.path.relpath(zone_path, relative_to),
                    "hairloss": os.path.relpath(loss_path, relative_to),
                }
            yield prediction.to_row()


# -- the command -------------------------------------------------------------------------


@dataclass
class ScoreSummary:
    """What a scoring run did.

    Attributes:
        out: the results file.
        total: photos in this run's inputs (this shard).
        skipped: photos that already had a row (resumed).
        counts: rows per status over all of the inputs' photos, resumed ones included.
        seconds: time spent scoring.
        report: the report index page, when reports were written.
    """

    out: Path
    total: int = 0
    skipped: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    report: Path | None = None

    @property
    def exit_code(self) -> int:
        """0 when every photo is ``ok``, 1 when some are ``error`` or ``recapture``."""
        return 0 if all(status == "ok" for status in self.counts.elements()) else 1

    def describe(self) -> str:
        """A closing summary for the terminal."""
        scored = self.total - self.skipped
        rate = scored / self.seconds if self.seconds > 0 else 0.0
        parts = ", ".join(f"{status} {self.counts[status]}" for status in ("ok", "recapture", "error"))
        text = (
            f"{self.total} photos: {parts}. Scored {scored} in {self.seconds:.1f} s ({rate:.1f} photos/s)"
            + (f", {self.skipped} already in {self.out}" if self.skipped else "")
            + f". Results: {self.out}"
        )
        if self.report is not None:
            text += f"\nReports: open {self.report}"
        return text


def sharded_out(out: Path, index: int, count: int) -> Path:
    """``results.jsonl`` -> ``results.shard0of4.jsonl`` (one output per torchrun rank)."""
    return out.with_name(f"{out.stem}.shard{index}of{count}{out.suffix}")


def run_score(
    predictor: Any,
    jobs: Sequence[PhotoJob],
    out: str | Path,
    *,
    fmt: str = "jsonl",
    batch_size: int = 32,
    workers: int | None = None,
    intakes: Mapping[str, Any] | None = None,
    report_dir: str | Path | None = None,
    save_masks: bool = False,
    progress: bool = True,
) -> ScoreSummary:
    """Score the jobs that have no row in ``out`` yet, append their rows, summarise.

    Args:
        predictor: a loaded ``Predictor``.
        jobs: the photos (already sharded).
        out: results file; rows already there are kept and their photos skipped.
        fmt: "jsonl" or "csv".
        batch_size: photos per forward pass.
        workers: decoding processes; :func:`default_workers` when None.
        intakes: ``Intake`` per subject.
        report_dir: when given, patient reports are written there at the end (needs
            ``fmt="jsonl"`` or reads the rows back from the JSON lines file).
        save_masks: save zone/loss mask PNGs beside ``out`` (always on with reports).
        progress: show a progress bar on stderr.
    """
    from tqdm import tqdm

    results = ResultsFile(out, fmt)
    done = results.resume()
    summary = ScoreSummary(out=Path(out), total=len(jobs))
    todo = [job for job in jobs if job.image not in done]
    summary.skipped = len(jobs) - len(todo)
    for job in jobs:
        if job.image in done:
            summary.counts[done[job.image]] += 1
    mask_dir = Path(out).parent / f"{Path(out).stem}_masks" if (save_masks or report_dir) else None
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="photo", desc="scoring", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with results:
        rows_in_batch = 0
        for row in score_jobs(
            predictor,
            todo,
            batch_size=batch_size,
            workers=default_workers() if workers is None else workers,
            intakes=intakes,
            mask_dir=mask_dir,
            results_dir=Path(out).parent,
        ):
            results.write(row)
            summary.counts[row["status"]] += 1
            bar.update(1)
            rows_in_batch += 1
            if rows_in_batch >= batch_size:
                results.sync()
                rows_in_batch = 0
    bar.close()
    summary.seconds = time.perf_counter() - start
    if report_dir is not None:
        summary.report = _write_reports(summary.out, fmt, jobs, report_dir, intakes, predictor)
    return summary


def _write_reports(
    out: Path, fmt: str, jobs: Sequence[PhotoJob], report_dir: str | Path, intakes: Any, predictor: Any
) -> Path:
    from scalpscan.inference.report.render import write_reports

    wanted = {job.image for job in jobs}
    if fmt == "jsonl":
        rows = [row for row in read_rows(out) if row.get("image") in wanted]
    else:
        raise InputError("--report-dir needs --format jsonl (reports read the full rows)")
    return Path(write_reports(rows, report_dir, intake=intakes, rules=predictor.rules, results_dir=out.parent))
