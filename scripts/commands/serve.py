"""`scalpscan serve`: the clinic web app (patients, visits, background scoring, comparisons)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

HELP = "run the clinic web app: patients, visits, photo upload, assessments, comparisons"

EPILOG = """\
examples:
  scalpscan users add alice --data clinic/          # a staff account first
  scalpscan serve --data clinic/                    # http://127.0.0.1:8000, the shipped model
  scalpscan serve --data clinic/ --model runs/demo --port 8080
  scalpscan serve --db postgresql://scalpscan@db-host/scalpscan --data /srv/clinic --host 0.0.0.0
  scalpscan serve --data clinic/ --import results.jsonl --intake intake.csv --import-only
  scalpscan serve --data clinic/ --import photos/ --intake intake.csv

The app listens on 127.0.0.1 (this machine only) unless --host says otherwise. Photos and,
by default, the SQLite database live in --data; with --db, PostgreSQL holds the records.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan serve`."""
    add_storage_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model", default=None, help="run folder or model file (default: the model shipped in the package)")
    parser.add_argument("--rules", type=Path, default=None, help="a clinic's rules file (default: the built-in rules)")
    parser.add_argument("--import", dest="imports", action="append", type=Path, default=[], metavar="PATH",
                        help="before serving, import a results.jsonl of `scalpscan score` or photos (files, folders); "
                             "repeatable")
    parser.add_argument("--intake", type=Path, default=None, help="intake sheet (CSV) for --import")
    parser.add_argument("--subject", metavar="REGEX", default=None,
                        help="--import of photos: patient id in file names, as `scalpscan score --subject` "
                             "(default finds ids like P001 or 2024-0012); a photo no one names is a patient of its own")
    parser.add_argument("--visit-date", type=dt.date.fromisoformat, default=None,
                        help="date of the visits --import creates (YYYY-MM-DD, default today)")
    parser.add_argument("--import-only", action="store_true", help="import, then exit without serving")
    parser.add_argument("--max-photo-mb", type=float, default=25.0, help="largest photo accepted (default 25 MB)")
    parser.add_argument("--max-photos", type=int, default=12, help="most photos in one upload (default 12)")


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """--data and --db, shared with `scalpscan users`."""
    parser.add_argument("--data", type=Path, default=Path("scalpscan_data"),
                        help="the clinic's folder: photos and the SQLite database (default scalpscan_data)")
    parser.add_argument("--db", default=None,
                        help="database URL, e.g. postgresql://USER@HOST/DB (default: SQLite in --data)")


def run_imports(args: argparse.Namespace, sessions: object, store: object) -> int:
    """Import each --import path; returns 0, or 2 after printing what is wrong."""
    from scalpscan.app.importer import import_folder, import_results
    from scalpscan.inference.intake import IntakeError
    from scalpscan.inference.report.results import ResultsError
    from scalpscan.inference.inputs import DEFAULT_SUBJECT_PATTERN, InputError

    for path in args.imports:
        try:
            with sessions() as db:  # type: ignore[operator]
                if path.is_file() and path.suffix == ".jsonl":
                    summary = import_results(db, store, [path], intake=args.intake, date=args.visit_date)
                else:
                    pattern = DEFAULT_SUBJECT_PATTERN if args.subject is None else args.subject
                    summary = import_folder(db, store, [path], intake=args.intake, date=args.visit_date,
                                            subject_pattern=pattern)
        except (IntakeError, ResultsError, InputError, FileNotFoundError) as exc:
            print(f"scalpscan serve: error: --import {path}: {exc}", file=sys.stderr)
            return 2
        print(f"{path}: {summary.describe()}")
        for name in summary.unknown_patients[:20]:
            print(f"  patient unknown (a patient of its own): {name}")
        for line in summary.skipped[:20]:
            print(f"  left out: {line}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Open the database, import, load the model, then serve until interrupted."""
    from scalpscan.app import AppConfig, create_app
    from scalpscan.app.db import open_database
    from scalpscan.app.store import PhotoStore

    if not 0 < args.port < 65536:
        print(f"scalpscan serve: error: --port {args.port} is not a port number", file=sys.stderr)
        return 2
    if args.max_photos < 1 or args.max_photo_mb <= 0:
        print("scalpscan serve: error: --max-photos and --max-photo-mb must be positive", file=sys.stderr)
        return 2
    wildcard = args.host in ("0.0.0.0", "::", "")
    config = AppConfig(data_dir=args.data, db_url=args.db, model=args.model, rules=args.rules,
                       max_photo_bytes=int(args.max_photo_mb * 1024 * 1024), max_photos=args.max_photos,
                       allowed_hosts=None if wildcard else (args.host.lower(), "127.0.0.1", "localhost"))
    try:
        _, sessions = open_database(config.url)
    except Exception as exc:  # a wrong URL, an unreachable server: say which
        print(f"scalpscan serve: error: cannot open the database {config.url}: {exc}", file=sys.stderr)
        return 2
    if args.imports:
        code = run_imports(args, sessions, PhotoStore(config.data_dir))
        if code or args.import_only:
            return code
    from scalpscan.inference.predictor import Predictor

    try:
        predictor = Predictor.load(args.model) if args.model else Predictor.load()
    except TypeError:
        print("scalpscan serve: error: this scalpscan ships no model yet; pass --model RUN_FOLDER", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"scalpscan serve: error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(config, predictor=predictor)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"scalpscan clinic app on http://{shown}:{args.port}/ (data in {args.data.resolve()}); Ctrl-C stops it",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False,
                server_header=False, date_header=False)
    return 0
