"""Patient report pages and the batch index (self-contained HTML), and merging results files."""

from __future__ import annotations

from scalpscan.inference.report.render import patient_filename, render_index, render_patient, write_reports
from scalpscan.inference.report.results import MergeSummary, ResultsError, read_results

__all__ = [
    "MergeSummary",
    "ResultsError",
    "patient_filename",
    "read_results",
    "render_index",
    "render_patient",
    "write_reports",
]
