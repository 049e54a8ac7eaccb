"""Bring work done with the command line into the app's database.

- A folder of photos: one new visit per patient, photos pending, scored in the background.
  Each photo's patient is found as `scalpscan score` finds it
  (:func:`scalpscan.inference.inputs.discover_inputs`): the manifest's subject, the intake
  sheet, the per-patient folder directly under the input folder, or a patient id in the
  file name (``subject_pattern``, as ``--subject``).
- The results of `scalpscan score` (``results.jsonl``, several shards merged) and optionally
  its intake sheet: one new visit per patient with the rows as they were scored (no second
  scoring) and the intake answers; rows are grouped into patients as the reports group them
  (:func:`scalpscan.inference.report.group_patients`).

A photo whose patient cannot be known is a patient of its own, flagged (``Patient.known``
False, named after its photo): two patients' photos are never pooled by a guess. Photos are
copied into the store by content hash; a photo already in the patient's visit is not added
twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scalpscan.app.db import AuditEntry, Patient, Photo, Visit, utcnow
from scalpscan.app.store import CheckedPhoto, PhotoStore, UploadError, check_photo
from scalpscan.inference.inputs import DEFAULT_SUBJECT_PATTERN
from scalpscan.inference.intake import Intake, read_intake

__all__ = ["ImportSummary", "import_folder", "import_results", "unknown_patient_key"]


def unknown_patient_key(sha256: str) -> str:
    """The patient id of a photo whose patient is unknown: named by the photo's content, so
    it is its own patient, and the same file imported again is that same patient."""
    return f"unknown-{sha256[:16]}"


@dataclass
class ImportSummary:
    """What an import added, and what it left out and why.

    Attributes:
        patients_created: new patients (unknown ones included).
        visits: new visits.
        photos: photos added.
        unknown_patients: names of the photos whose patient could not be known (each
            imported as a flagged patient of its own).
        skipped: files left out, each with why.
    """

    patients_created: int = 0
    visits: int = 0
    photos: int = 0
    unknown_patients: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the command's output."""
        text = (f"imported {self.photos} photo(s) in {self.visits} visit(s); "
                f"{self.patients_created} new patient(s)")
        if self.unknown_patients:
            text += (f"; patient unknown for {len(self.unknown_patients)} photo(s), each a patient of its own "
                     "(flagged; name patients by folder, intake sheet or --subject to group them)")
        return text + (f"; {len(self.skipped)} left out" if self.skipped else "")


def _patient(db: Session, key: str, summary: ImportSummary, *, known: bool = True, name: str = "") -> Patient:
    patient = db.scalar(select(Patient).where(Patient.key == key))
    if patient is None:
        patient = Patient(key=key, name=name, known=known)
        db.add(patient)
        db.flush()
        summary.patients_created += 1
    return patient


def _visit(patient: Patient, intake: Intake | None, date: dt.date, user: str) -> Visit:
    intake = intake or Intake()
    # Linked to its patient only once it holds a photo (see _link): an empty visit is never saved.
    return Visit(patient_id=patient.id, date=date, sex=intake.sex, keloid_history=intake.keloid_history,
                 eczema_active=intake.eczema_active, psoriasis_active=intake.psoriasis_active,
                 notes=intake.notes or "", created_by=user)


def _read(path: Path, max_bytes: int, summary: ImportSummary) -> CheckedPhoto | None:
    """The photo's checked bytes, or None after noting why it is left out."""
    try:
        return check_photo(path.read_bytes(), path.name, max_bytes=max_bytes)
    except OSError as exc:
        summary.skipped.append(f"{path}: cannot be read ({exc.strerror or exc})")
    except UploadError as exc:
        summary.skipped.append(f"{path}: {exc}")
    return None


class _Visits:
    """The import's new visits, one per patient, made when the patient's first photo is read."""

    def __init__(self, db: Session, summary: ImportSummary, intakes: dict[str, Intake], date: dt.date,
                 user: str) -> None:
        self.db, self.summary, self.intakes, self.date, self.user = db, summary, intakes, date, user
        self.by_key: dict[str, Visit] = {}

    def of(self, subject: str | None, photo: CheckedPhoto) -> Visit:
        """The visit of ``subject``'s patient; None: the photo's own, flagged, patient."""
        if subject is None:
            key = unknown_patient_key(photo.sha256)
            self.summary.unknown_patients.append(photo.name)
        else:
            key = subject
        if key not in self.by_key:
            patient = _patient(self.db, key, self.summary, known=subject is not None,
                               name="" if subject is not None else f"Unknown patient · {photo.name}")
            intake = self.intakes.get(subject) if subject is not None else None
            self.by_key[key] = _visit(patient, intake, self.date, self.user)
        return self.by_key[key]

    def link(self) -> int:
        """Save the visits that hold photos; returns how many."""
        kept = [v for v in self.by_key.values() if v.photos]
        self.db.add_all(kept)
        return len(kept)


def _add_photo(store: PhotoStore, visit: Visit, path: Path, photo: CheckedPhoto, summary: ImportSummary,
               result: dict[str, Any] | None, subject_source: str | None) -> None:
    if any(p.sha256 == photo.sha256 for p in visit.photos):
        summary.skipped.append(f"{path}: the same photo is already in this visit")
        return
    store.put(photo)
    status = "pending"
    if result is not None:
        result = {k: v for k, v in result.items() if k != "masks"}  # masks stay with the CLI's results
        result["image"] = store.relative(photo.sha256, photo.ext)
        status = result.get("status") or "ok"
    visit.photos.append(Photo(sha256=photo.sha256, ext=photo.ext, original_name=photo.name, status=status,
                              subject_source=subject_source, result=result,
                              scored_at=utcnow() if result is not None else None))
    summary.photos += 1


def import_folder(db: Session, store: PhotoStore, inputs: Sequence[str | Path], *, intake: str | Path | None = None,
                  subject_pattern: str | re.Pattern[str] | None = DEFAULT_SUBJECT_PATTERN,
                  date: dt.date | None = None, user: str = "import", max_bytes: int = 25 * 1024 * 1024
                  ) -> ImportSummary:
    """Import photos (files, folders, manifests) as one new visit per patient, to be scored in the background.

    Args:
        db: a database session (committed here).
        store: the photo store.
        inputs: photo files, folders (searched recursively) and ``.csv`` manifests.
        intake: the intake sheet; its subjects name patients by folder or file name, and
            its answers become each visit's intake.
        subject_pattern: the patient-id pattern for file names (``--subject``; the default
            reads ids such as ``P001`` or ``2024-0012``, never camera names or dates); None
            reads no ids from file names.
        date: the visits' date (default today).
        user: who imported, for the visits and the audit log.
        max_bytes: the largest photo taken.

    Raises:
        scalpscan.inference.inputs.InputError: an input that does not exist, or a bad pattern.
        scalpscan.inference.intake.IntakeError: an intake sheet with problems.
    """
    from scalpscan.inference.inputs import discover_inputs

    intakes = read_intake(intake)[0] if intake is not None else {}
    found = discover_inputs(list(inputs), subjects=intakes.keys() if intakes else None,
                            subject_pattern=subject_pattern)
    summary = ImportSummary(skipped=[f"{s.path}: {s.reason}" + (f" ({s.detail})" if s.detail else "")
                                     for s in found.skipped])
    visits = _Visits(db, summary, intakes, date or dt.date.today(), user)
    for job in found.jobs:
        path = Path(job.image)
        photo = _read(path, max_bytes, summary)
        if photo is not None:
            _add_photo(store, visits.of(job.subject, photo), path, photo, summary, None, job.subject_source)
    summary.visits = visits.link()
    db.add(AuditEntry(user=user, action="import photos", target=", ".join(map(str, inputs))[:200],
                      detail=summary.describe()))
    db.commit()
    return summary


def import_results(db: Session, store: PhotoStore, results: Sequence[str | Path], *,
                   intake: str | Path | None = None, date: dt.date | None = None, user: str = "import",
                   max_bytes: int = 25 * 1024 * 1024) -> ImportSummary:
    """Import `scalpscan score` results (and its intake sheet) as one new visit per patient, as scored.

    A row without a subject is a patient of its own (flagged), as on the report pages.

    Raises:
        scalpscan.inference.report.ResultsError: a results file that cannot be read.
        scalpscan.inference.intake.IntakeError: an intake sheet with problems.
    """
    from scalpscan.inference.report import group_patients
    from scalpscan.inference.report.results import read_results

    rows, _ = read_results(list(results))
    intakes = read_intake(intake)[0] if intake is not None else {}
    summary = ImportSummary()
    visits = _Visits(db, summary, intakes, date or dt.date.today(), user)
    for group in group_patients(rows):
        for row in group["rows"]:
            path = Path(row["image"])
            photo = _read(path, max_bytes, summary)
            if photo is None:
                continue
            source = row.get("subject_source") if group["known"] else "unknown"
            _add_photo(store, visits.of(group["subject"], photo), path, photo, summary,
                       dict(row, subject=group["subject"]), str(source) if source else None)
    summary.visits = visits.link()
    db.add(AuditEntry(user=user, action="import results", target=", ".join(map(str, results))[:200],
                      detail=summary.describe()))
    db.commit()
    return summary
