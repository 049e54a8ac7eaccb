"""Exports: all of a patient's data as JSON, and a visit's report page as PDF (headless Chromium)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from scalpscan.app.db import Patient
from scalpscan.app.records import assess_visit, newest_first, visit_intake
from scalpscan.inference.rules import Rules

__all__ = ["ExportError", "patient_json", "html_to_pdf", "EXPORT_FORMAT"]

#: Version of the JSON export's layout.
EXPORT_FORMAT = 1


class ExportError(RuntimeError):
    """An export that cannot be made (e.g. no Chromium for PDF); the message says what to install."""


def patient_json(patient: Patient, rules: Rules) -> dict[str, Any]:
    """Everything stored about a patient: visits with intake, photos (hash, name, result row) and assessments."""
    visits = []
    for visit in newest_first(patient.visits):
        pending = any(p.status == "pending" for p in visit.photos)
        intake = visit_intake(visit)
        visits.append({
            "id": visit.id,
            "date": visit.date.isoformat(),
            "created_by": visit.created_by,
            "intake": {"sex": intake.sex, "keloid_history": intake.keloid_history,
                       "eczema_active": intake.eczema_active, "psoriasis_active": intake.psoriasis_active,
                       "notes": intake.notes},
            "photos": [{"id": p.id, "sha256": p.sha256, "name": p.original_name, "status": p.status,
                        "subject_source": p.subject_source, "result": p.result} for p in visit.photos],
            "assessment": None if pending else assess_visit(visit, rules).to_dict(),
        })
    # "known": False marks a patient of unknown identity (one imported photo that nothing named).
    return {"format": EXPORT_FORMAT, "patient": {"id": patient.id, "key": patient.key, "name": patient.name,
                                                 "known": patient.known,
                                                 "created_at": patient.created_at.isoformat()},
            "rules": {"name": rules.name, "version": rules.version}, "visits": visits}


def html_to_pdf(html: str, *, chromium: str | None = None, timeout: float = 120.0) -> bytes:
    """Print a self-contained HTML page to PDF with the reports' headless Chromium path
    (`inference.report.pdf.write_pdf`); the page loads nothing, so nothing goes to the network.

    Raises:
        ExportError: no Chromium, or it failed or timed out.
    """
    from scalpscan.inference.report.pdf import PdfError, write_pdf

    with tempfile.TemporaryDirectory(prefix="scalpscan-pdf-") as tmp:
        page, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        try:
            write_pdf(page, out, engine=chromium, timeout=timeout)
        except PdfError as exc:
            raise ExportError(str(exc)) from None
        return out.read_bytes()
