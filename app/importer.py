"""Bring work done with the command line into the app's database.

- A folder of photos (per-patient folders or patient ids in the names, as `scalpscan score`
  reads them): one new visit per patient, photos pending, scored in the background.
- The results of `scalpscan score` (``results.jsonl``, several shards merged) and optionally
  its intake sheet: one new visit per patient with the rows as they were scored (no second
  scoring) and the intake answers.

Photos are copied into the store by content hash; a photo already in the patient's visit is
not added twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scalpscan.app.db import AuditEntry, Patient, Photo, Visit, utcnow
from scalpscan.app.store import PhotoStore, UploadError, check_photo
from scalpscan.inference.intake import Intake, read_intake

__all__ = ["ImportSummary", "import_folder", "import_results"]

_UNKNOWN = "(no subject)"


@dataclass
class ImportSummary:
    """What an import added, and what it left out and why."""

    patients_created: int = 0
    visits: int = 0
    photos: int = 0
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the command's output."""
        text = (f"imported {self.photos} photo(s) in {self.visits} visit(s); "
                f"{self.patients_created} new patient(s)")
        return text + (f"; {len(self.skipped)} left out" if self.skipped else "")


def _patient(db: Session, key: str, summary: ImportSummary) -> Patient:
    patient = db.scalar(select(Patient).where(Patient.key == key))
    if patient is None:
        patient = Patient(key=key, name="")
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


def _add_photo(store: PhotoStore, visit: Visit, path: Path, max_bytes: int, summary: ImportSummary,
               result: dict[str, Any] | None) -> None:
    try:
        data = path.read_bytes()
        photo = check_photo(data, path.name, max_bytes=max_bytes)
    except OSError as exc:
        summary.skipped.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return
    except UploadError as exc:
        summary.skipped.append(f"{path}: {exc}")
        return
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
                              result=result, scored_at=utcnow() if result is not None else None))
    summary.photos += 1


def _link(db: Session, visits: Any) -> int:
    """Save the visits that hold photos; returns how many."""
    kept = [v for v in visits if v.photos]
    db.add_all(kept)
    return len(kept)


def import_folder(db: Session, store: PhotoStore, inputs: Sequence[str | Path], *, intake: str | Path | None = None,
                  date: dt.date | None = None, user: str = "import", max_bytes: int = 25 * 1024 * 1024
                  ) -> ImportSummary:
    """Import photos (files and folders) as one new visit per patient, to be scored in the background.

    Raises:
        scalpscan.inference.inputs.InputError: an input that does not exist.
        scalpscan.inference.intake.IntakeError: an intake sheet with problems.
    """
    from scalpscan.inference.inputs import discover_inputs

    intakes = read_intake(intake)[0] if intake is not None else {}
    found = discover_inputs(list(inputs), subjects=intakes.keys() if intakes else None)
    summary = ImportSummary(skipped=[f"{s.path}: {s.reason}" for s in found.skipped])
    visits: dict[str, Visit] = {}
    for job in found.jobs:
        key = job.subject or _UNKNOWN
        if key not in visits:
            visits[key] = _visit(_patient(db, key, summary), intakes.get(key), date or dt.date.today(), user)
        _add_photo(store, visits[key], Path(job.image), max_bytes, summary, None)
    summary.visits = _link(db, visits.values())
    db.add(AuditEntry(user=user, action="import photos", target=", ".join(map(str, inputs))[:200],
                      detail=summary.describe()))
    db.commit()
    return summary


def import_results(db: Session, store: PhotoStore, results: Sequence[str | Path], *,
                   intake: str | Path | None = None, date: dt.date | None = None, user: str = "import",
                   max_bytes: int = 25 * 1024 * 1024) -> ImportSummary:
    """Import `scalpscan score` results (and its intake sheet) as one new visit per patient, as scored.

    Raises:
        scalpscan.inference.report.ResultsError: a results file that cannot be read.
        scalpscan.inference.intake.IntakeError: an intake sheet with problems.
    """
    from scalpscan.inference.report.results import read_results

    rows, _ = read_results(list(results))
    intakes = read_intake(intake)[0] if intake is not None else {}
    summary = ImportSummary()
    visits: dict[str, Visit] = {}
    for row in rows:
        key = str(row.get("subject") or _UNKNOWN)
        if key not in visits:
            visits[key] = _visit(_patient(db, key, summary), intakes.get(key), date or dt.date.today(), user)
        _add_photo(store, visits[key], Path(row["image"]), max_bytes, summary, dict(row, subject=key))
    summary.visits = _link(db, visits.values())
    db.add(AuditEntry(user=user, action="import results", target=", ".join(map(str, results))[:200],
                      detail=summary.describe()))
    db.commit()
    return summary
