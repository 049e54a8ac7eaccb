"""Patient report pages, the batch index and ``patients.jsonl`` (self-contained HTML and JSON),
PDFs of the pages, and merging results files."""

from __future__ import annotations

from scalpscan.inference.report.pdf import PdfError, find_engine, write_pdf
from scalpscan.inference.report.render import (
    PATIENTS_FILE,
    group_patients,
    patient_context,
    patient_filename,
    patient_record,
    render_index,
    render_patient,
    write_reports,
)
from scalpscan.inference.report.results import MergeSummary, ResultsError, read_results

__all__ = [
    "PATIENTS_FILE",
    "MergeSummary",
    "PdfError",
    "ResultsError",
    "find_engine",
    "group_patients",
    "patient_context",
    "patient_filename",
    "patient_record",
    "read_results",
    "render_index",
    "render_patient",
    "write_pdf",
    "write_reports",
]
