"""`scalpscan report`: HTML candidacy reports from scoring results (one page per patient)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "EPILOG", "add_arguments", "run"]

HELP = "write one HTML report per patient, an index and patients.jsonl from results.jsonl files"
EPILOG = """\
examples:
  scalpscan report results.jsonl --out reports/
  scalpscan report results.jsonl --out reports/ --intake intake.csv
  scalpscan report shard-*/results.jsonl --out reports/ --intake intake.csv --rules clinic.yaml
  scalpscan report results.jsonl --out reports/ --pdf       # also patient-<id>.pdf (A4 and Letter)

Several results files (the shards of one scoring run) are merged: one row per photo (the
row of the newest version of the file; of one version, the last "ok" row). Photo paths in
a results file are absolute or relative to its folder, so report runs from any folder.
Besides the HTML pages, patients.jsonl holds one JSON assessment per patient with every
field its page shows. --pdf needs headless Chromium (Debian/Ubuntu: apt-get install
chromium; or set SCALPSCAN_CHROMIUM to a Chrome executable).
Exit codes: 0 written, 2 bad arguments, results, intake sheet or rules file, or no PDF engine.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan report`."""
    parser.add_argument("results", nargs="+", metavar="RESULTS.jsonl", help="results file(s) written by `scalpscan score`")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and the patient pages")
    parser.add_argument("--intake", metavar="CSV",
                        help="intake sheet: subject,sex,keloid_history,eczema_active,psoriasis_active,notes")
    parser.add_argument("--rules", metavar="FILE", help="a clinic's rules file (YAML); default: the built-in rules")
    parser.add_argument("--pdf", action="store_true", help="also write a PDF per patient (prints on A4 and Letter)")


def run(args: argparse.Namespace) -> int:
    """Merge the results, assess each patient, write the pages; returns the exit code."""
    from scalpscan.inference.intake import IntakeError, join_intake, read_intake
    from scalpscan.inference.report.pdf import PdfError, find_engine
    from scalpscan.inference.report.render import write_reports
    from scalpscan.inference.report.results import ResultsError, read_results
    from scalpscan.inference.rules import RulesError, load_rules

    if args.pdf:
        try:
            find_engine()  # before any work: one clear message when it is missing
        except PdfError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        rules = load_rules(args.rules)
    except RulesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    intake = None
    notices: list[str] = []
    if args.intake:
        try:
            intake, warnings = read_intake(args.intake)
        except FileNotFoundError:
            print(f"error: intake sheet {args.intake} not found", file=sys.stderr)
            return 2
        except IntakeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        notices += warnings
    try:
        rows, summary = read_results(args.results)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.describe())
    for line in [*summary.warnings, *notices]:
        print(f"warning: {line}", file=sys.stderr)
    notices = [summary.describe(), *summary.warnings, *notices]
    if intake is not None:
        subjects = [str(r["subject"]) for r in rows if r.get("subject") not in (None, "")]
        for line in join_intake(subjects, intake):
            print(f"warning: {line}", file=sys.stderr)
    try:
        index = write_reports(rows, args.out, intake=intake, rules=rules, notices=notices, pdf=args.pdf)
    except PdfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the reports to {args.out}: {exc}", file=sys.stderr)
        return 2
    patients = sum(1 for _ in (index.parent / "patients.jsonl").open(encoding="utf-8"))
    print(f"wrote {index} ({patients} patient page(s), patients.jsonl{', PDFs' if args.pdf else ''}), "
          f"rules {rules.name} {rules.version}")
    return 0
