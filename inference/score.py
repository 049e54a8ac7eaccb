"""Batch scoring: photos in, one result row per photo out, resumable and shardable.

The driver behind ``scalpscan score`` and ``Predictor.score``. What to score (files,
folders, manifests, each photo's patient, the files skipped) comes from
:mod:`scalpscan.inference.inputs`; the results file (appending, resuming, CSV) is
:mod:`scalpscan.inference.results`. This module runs the model over the photos:

* **Decoding** (``load_image``), the quality gate and the evaluation transform run in
  worker processes (a torch ``DataLoader``, forked), so the model does not wait for photo
  decoding; the workers exit when this process dies, however it dies. A file that cannot
  be read becomes an ``error`` row in plain words; the batch goes on. The libraries'
  warnings are captured into the row's ``warnings``, never printed.
* **Output** rows are appended and flushed as they are made (and fsync'd after each
  batch). Run the same command again after a crash or ``kill -9``: photos whose file
  already has a row are skipped, a changed file (other size or modification time) is
  scored again, and ``retry_errors`` scores the ``error`` rows again.
* **Rows** carry, beyond ``Prediction.to_row()``: ``subject_source`` (how the patient was
  found), ``warnings`` and ``file`` (``size``, ``mtime_ns``).
* Memory stays flat: photos are decoded a few batches ahead and rows are written, not
  kept; only the list of jobs and the finished keys are held.
"""

from __future__ import annotations

import csv
import hashlib
import io
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalpscan.data.files import atomic_write, write_text_atomic
from scalpscan.inference.decoding import mask_images
from scalpscan.inference.inputs import InputError, PhotoJob, SkippedFile
from scalpscan.inference.results import ResultsFile, stored_path

__all__ = [
    "ScoreSummary",
    "default_workers",
    "score_jobs",
    "run_score",
    "sharded_out",
]


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
        from scalpscan.data.decode import capture_warnings

        job = self.jobs[index]
        # The libraries' warnings (libtiff, EXIF, ICC) go into the row, not onto the terminal.
        with capture_warnings() as caught:
            item = self.prepare(job.image)
        return {"job": job, **item, "warnings": caught}


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


def _row(prediction: Any, job: PhotoJob, warnings: Sequence[str]) -> dict[str, Any]:
    """The prediction's row with what only the batch knows: how the patient was found, the
    captured warnings and the file facts that make resume independent of the path's spelling."""
    row: dict[str, Any] = {}
    for key, value in prediction.to_row().items():
        row[key] = value
        if key == "subject":
            row["subject_source"] = job.subject_source
    row["warnings"] = list(warnings)
    if job.size is not None:
        row["file"] = {"size": job.size, "mtime_ns": job.mtime_ns}
    return row


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
        # The predictor's decode: what its model cannot assess stays None in the rows.
        decoded = predictor.decode(outputs, [i["geometry"] for i in ok_items]) if ok_items else []
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
                yield _row(prediction, job, item["warnings"])
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
            yield _row(prediction, job, item["warnings"])


# -- the command -------------------------------------------------------------------------


@dataclass
class ScoreSummary:
    """What a scoring run did.

    Attributes:
        out: the results file.
        total: photos in this run's inputs (this shard).
        skipped: photos that already had a row for the same file (resumed).
        rescored: photos scored again: changed since their row, or error rows retried.
        counts: rows per status over all of the inputs' photos, resumed ones included.
        seconds: time spent scoring.
        report: the report index page, when reports were written.
        skipped_files: files under the input folders that are not photos, with reasons.
        skipped_list: the CSV listing every skipped file, when there are any.
        unknown_patients: photos whose patient could not be known (each its own patient).
        not_assessed: outputs the model does not assess (from the rows).
    """

    out: Path
    total: int = 0
    skipped: int = 0
    rescored: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    report: Path | None = None
    skipped_files: list[SkippedFile] = field(default_factory=list)
    skipped_list: Path | None = None
    unknown_patients: list[str] = field(default_factory=list)
    not_assessed: set[str] = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        """0 when every photo is ``ok``, 1 when some are ``error`` or ``recapture``."""
        return 0 if all(status == "ok" for status in self.counts.elements()) else 1

    def describe(self) -> str:
        """A closing summary for the terminal."""
        scored = self.total - self.skipped
        rate = scored / self.seconds if self.seconds > 0 else 0.0
        parts = ", ".join(f"{status} {self.counts[status]}" for status in ("ok", "recapture", "error"))
        lines = [
            f"{self.total} photos: {parts}. Scored {scored} in {self.seconds:.1f} s ({rate:.1f} photos/s)"
            + (f", {self.skipped} already in {self.out}" if self.skipped else "")
            + (f", {self.rescored} scored again (file changed or error retried)" if self.rescored else "")
            + f". Results: {self.out}"
        ]
        if self.skipped_files:
            counts = Counter(s.reason for s in self.skipped_files)
            lines.append(
                f"Skipped {len(self.skipped_files)} file(s) that are not photos: "
                + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
                + (f" (all listed in {self.skipped_list})" if self.skipped_list else "")
            )
            for item in self.skipped_files[:10]:
                lines.append(f"  {item.path}: {item.reason}" + (f", {item.detail}" if item.detail else ""))
            if len(self.skipped_files) > 10:
                lines.append(f"  ... and {len(self.skipped_files) - 10} more")
        if self.unknown_patients:
            names = ", ".join(Path(p).name for p in self.unknown_patients[:5])
            more = f" and {len(self.unknown_patients) - 5} more" if len(self.unknown_patients) > 5 else ""
            lines.append(
                f"Patient unknown for {len(self.unknown_patients)} photo(s) ({names}{more}): each is assessed "
                "as a patient of its own. Put each patient's photos in a folder named after the patient, "
                "list them on the intake sheet, or give --subject REGEX"
            )
        if self.not_assessed:
            lines.append(
                "Not assessed by this model: " + ", ".join(sorted(n.replace("_", " ") for n in self.not_assessed))
                + " (no labelled photos trained them; the rows leave them empty)"
            )
        if self.report is not None:
            lines.append(f"Reports: open {self.report}")
        return "\n".join(lines)


def sharded_out(out: Path, index: int, count: int) -> Path:
    """``results.jsonl`` -> ``results.shard0of4.jsonl`` (one output per torchrun rank)."""
    return out.with_name(f"{out.stem}.shard{index}of{count}{out.suffix}")


def _write_skipped(out: Path, skipped: Sequence[SkippedFile]) -> Path:
    """``results.skipped.csv`` beside the results: every file skipped, with its reason."""
    path = out.with_name(f"{out.stem}.skipped.csv")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason", "detail"])
    for item in skipped:
        writer.writerow([item.path, item.reason, item.detail])
    write_text_atomic(path, buffer.getvalue())
    return path


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
    retry_errors: bool = False,
    skipped_files: Sequence[SkippedFile] = (),
    pdf: bool = False,
) -> ScoreSummary:
    """Score the photos that have no row for their current file yet, append their rows.

    Args:
        predictor: a loaded ``Predictor``.
        jobs: the photos (already sharded), e.g. ``discover_inputs(...).jobs``.
        out: results file; rows already there are kept and their photos skipped unless
            the file changed since (other size or modification time).
        fmt: "jsonl" or "csv".
        batch_size: photos per forward pass.
        workers: decoding processes; :func:`default_workers` when None.
        intakes: ``Intake`` per subject.
        report_dir: when given, patient reports and ``patients.jsonl`` are written there
            at the end (needs ``fmt="jsonl"``).
        save_masks: save zone/loss mask PNGs beside ``out`` (always on with reports).
        progress: show a progress bar on stderr.
        retry_errors: score photos whose row is an ``error`` again.
        skipped_files: files the input search skipped, for the summary and its list.
        pdf: with ``report_dir``, also write a PDF per patient.
    """
    from tqdm import tqdm

    out = Path(out)
    results = ResultsFile(out, fmt)
    done = results.resume()
    summary = ScoreSummary(out=out, total=len(jobs), skipped_files=list(skipped_files))
    summary.not_assessed |= done.not_assessed
    summary.unknown_patients = [job.image for job in jobs if job.subject is None]
    todo = []
    for job in jobs:
        status = done.status_of(job.key())
        if status is None or (retry_errors and status == "error"):
            todo.append(job)
            if done.rows.get(job.key()[0]) is not None:
                summary.rescored += 1
        else:
            summary.counts[status] += 1
    summary.skipped = len(jobs) - len(todo)
    if skipped_files:
        summary.skipped_list = _write_skipped(out, skipped_files)
    mask_dir = out.parent / f"{out.stem}_masks" if (save_masks or report_dir) else None
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
            results_dir=out.parent,
        ):
            # The stored path resolves from the results file, wherever report runs.
            row["image"] = stored_path(row["image"], out.parent)
            results.write(row)
            summary.counts[row["status"]] += 1
            summary.not_assessed.update(row.get("not_assessed") or [])
            bar.update(1)
            rows_in_batch += 1
            if rows_in_batch >= batch_size:
                results.sync()
                rows_in_batch = 0
    bar.close()
    summary.seconds = time.perf_counter() - start
    if report_dir is not None:
        summary.report = _write_reports(summary.out, fmt, jobs, report_dir, intakes, predictor, pdf)
    return summary


def _write_reports(
    out: Path, fmt: str, jobs: Sequence[PhotoJob], report_dir: str | Path, intakes: Any, predictor: Any, pdf: bool
) -> Path:
    from scalpscan.inference.report.render import write_reports
    from scalpscan.inference.report.results import read_results

    if fmt != "jsonl":
        raise InputError("--report-dir needs --format jsonl (reports read the full rows)")
    wanted = {job.key()[0] for job in jobs}
    rows, _ = read_results([out])
    rows = [row for row in rows if os.path.normcase(str(Path(row["image"]).resolve())) in wanted]
    return Path(write_reports(rows, report_dir, intake=intakes, rules=predictor.rules, pdf=pdf))
