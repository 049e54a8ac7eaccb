"""Render a whole synthetic data set: photos, masks, manifest and contact sheet.

Photo ``i`` shows subject ``i // 5`` from view ``VIEWS[i % 5]``. The subject is drawn from
``SeedSequence(seed, spawn_key=(0, subject))`` and the photo's camera, light and strands
from ``SeedSequence(seed, spawn_key=(1, i))``, so any worker renders any photo on its own
and the files come out byte-identical whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from scalpscan.data.synth.render import Photo, render_photo
from scalpscan.data.synth.subject import Subject, sample_subject
from scalpscan.data.vocab import CONDITIONS, MANIFEST_COLUMNS, VIEWS

__all__ = [
    "SynthOptions",
    "subject_for",
    "render_index",
    "photo_record",
    "synthesize",
    "IMAGE_FORMATS",
]

#: Photo file formats the writer knows.
IMAGE_FORMATS: tuple[str, ...] = ("jpg", "png")


@dataclass(frozen=True)
class SynthOptions:
    """How to render a data set (all plain values, so workers can receive them)."""

    size: int = 256  # picture side in pixels
    male_fraction: float = 0.7  # share of male subjects
    rotate_prob: float = 0.5  # share of photos turned by 90/180/270 degrees
    condition_rate: float = 1.0  # multiplies the chance of alopecia patches and scars
    image_format: str = "jpg"  # "jpg" (with JPEG artefacts) or "png"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 32 <= self.size <= 2048:
            raise ValueError(f"size must be an integer from 32 to 2048 pixels, got {self.size!r}")
        for name in ("male_fraction", "rotate_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if not 0.0 <= self.condition_rate <= 4.0:
            raise ValueError(f"condition_rate must be between 0 and 4, got {self.condition_rate!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def subject_for(seed: int, subject_index: int, options: SynthOptions = SynthOptions()) -> Subject:
    """The subject number ``subject_index`` of the data set with this seed."""
    _check_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0, subject_index)))
    return sample_subject(
        rng,
        subject_index,
        male_fraction=options.male_fraction,
        condition_rate=options.condition_rate,
    )


def render_index(seed: int, index: int, options: SynthOptions = SynthOptions()) -> tuple[Photo, Subject, int]:
    """Render photo ``index`` of the data set; returns the photo, its subject and the
    JPEG quality it is saved with."""
    subject = subject_for(seed, index // len(VIEWS), options)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1, index)))
    photo = render_photo(subject, VIEWS[index % len(VIEWS)], rng, options.size, rotate_prob=options.rotate_prob)
    quality = int(rng.integers(60, 96))
    return photo, subject, quality


def _scar_kinds(subject: Subject) -> str:
    kinds = [
        name
        for name, present in (
            ("strip", subject.strip_scar is not None),
            ("fue", subject.fue),
            ("plugs", subject.plugs),
        )
        if present
    ]
    return "+".join(kinds)


def photo_record(seed: int, index: int, photo: Photo, subject: Subject, image_format: str) -> dict[str, str]:
    """The manifest row of one photo, as strings, paths relative to the data-set folder."""
    stem = f"{index:06d}"
    record = {
        "image": f"images/{stem}.{image_format}",
        "subject": f"synth{seed}-{subject.index:05d}",
        "view": photo.view,
        **{name: str(photo.conditions[name]) for name in CONDITIONS},
        "stage": "" if subject.stage is None else str(subject.stage),
        "zone_mask": f"masks/{stem}_zones.png",
        "loss_mask": f"masks/{stem}_loss.png",
        "sex": subject.sex,
        "skin_tone": subject.skin_tone,
        "hair_colour": subject.hair_colour,
        "source": "synth",
        "seed": str(seed),
        "index": str(index),
        "rotation": str(photo.rotation),
        "female_pattern": str(subject.female_severity) if subject.sex == "female" else "",
        "patches": str(len(subject.patches)),
        "scar_kinds": _scar_kinds(subject),
    }
    return record


def _write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode(ext: str, image: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise RuntimeError(f"could not encode a {ext} image")
    return buf.tobytes()


def _render_and_write(job: tuple[str, int, int, SynthOptions]) -> dict[str, str]:
    out, seed, index, options = job
    folder = Path(out)
    photo, subject, quality = render_index(seed, index, options)
    record = photo_record(seed, index, photo, subject, options.image_format)
    bgr = cv2.cvtColor(photo.image, cv2.COLOR_RGB2BGR)
    if options.image_format == "jpg":
        data = _encode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        data = _encode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    _write_bytes(folder / record["image"], data)
    _write_bytes(folder / record["zone_mask"], _encode(".png", photo.zones, [cv2.IMWRITE_PNG_COMPRESSION, 3]))
    _write_bytes(folder / record["loss_mask"], _encode(".png", photo.loss, [cv2.IMWRITE_PNG_COMPRESSION, 3]))
    return record


def synthesize(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    options: SynthOptions = SynthOptions(),
    workers: int = 1,
    contact_sheet: int = 60,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``n`` photos into ``out`` and return the manifest's path.

    Writes ``out/images/``, ``out/masks/`` (``*_zones.png``, ``*_loss.png``),
    ``out/manifest.csv`` and, unless ``contact_sheet`` is 0, ``out/contact_sheet.png``
    showing the first ``contact_sheet`` photos.

    Args:
        out: the data-set folder (created when missing).
        n: number of photos.
        seed: the data set's seed; the same seed gives the same bytes.
        options: rendering options.
        workers: processes rendering in parallel (does not change the output).
        contact_sheet: photos on the contact sheet (0 = no sheet).
        progress: called with (done, n) now and then.
    """
    from scalpscan.data.manifest import ManifestRow, write_manifest

    from scalpscan.data.synth.contact_sheet import write_contact_sheet

    _check_seed(seed)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of photos) must be a positive integer, got {n!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    folder = Path(out)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder), int(seed), i, options) for i in range(n)]
    records: list[dict[str, str]] = []
    step = max(1, n // 20)
    if workers == 1 or n < 8:
        for job in jobs:
            records.append(_render_and_write(job))
            if progress and (len(records) % step == 0 or len(records) == n):
                progress(len(records), n)
    else:
        chunk = max(1, min(16, n // (workers * 4)))
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for record in pool.imap(_render_and_write, jobs, chunksize=chunk):
                records.append(record)
                if progress and (len(records) % step == 0 or len(records) == n):
                    progress(len(records), n)

    folder_abs = folder.resolve()
    rows = []
    for r in records:
        rows.append(
            ManifestRow(
                image=folder_abs / r["image"],
                subject=r["subject"],
                view=r["view"],
                conditions={name: int(r[name]) for name in CONDITIONS},
                stage=int(r["stage"]) if r["stage"] else None,
                zone_mask=folder_abs / r["zone_mask"],
                loss_mask=folder_abs / r["loss_mask"],
                extra={k: v for k, v in r.items() if k not in MANIFEST_COLUMNS},
            )
        )
    manifest = folder / "manifest.csv"
    write_manifest(rows, manifest)
    if contact_sheet:
        write_contact_sheet(records[:contact_sheet], folder, folder / "contact_sheet.png")
    return manifest

