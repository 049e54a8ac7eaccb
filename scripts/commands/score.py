"""`scalpscan score`: score photos with a trained model, one result row per photo."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scalpscan.data.vocab import TTA_MODES

HELP = "score photos (files, folders, manifests) into results.jsonl, resumable and shardable"

EPILOG = """\
examples:
  scalpscan score photos/ --model runs/demo --out results.jsonl
  scalpscan score photos/ --model runs/demo --out results.jsonl --intake intake.csv --report-dir reports/
  scalpscan score day1/ day2/*.heic --model model.onnx --out results.csv
  scalpscan score photos/ --model runs/demo --out part0.jsonl --shard 0/4     # machine 1 of 4
  torchrun --nproc-per-node 4 -m scalpscan.scripts.cli score photos/ --model runs/demo --out results.jsonl --device cuda
  scalpscan score photos/ --model runs/demo --out results.jsonl --tta rot        # sideways phone photos
  scalpscan score photos/ --out results.jsonl --report-dir reports/ --pdf --subject 'case(\\d+)'
  scalpscan score photos/ --out results.jsonl --retry-errors --max-pixels 300000000

Run the same command again after a crash or interruption: photos whose file already has a
row are skipped, however the inputs are spelled; a changed file is scored again, and
--retry-errors scores error rows again. Every file under a folder is either scored or listed
as skipped (hidden, not a photo, unsupported) in the summary and in RESULTS.skipped.csv.
Exit code: 0 when every photo is ok, 1 when some are error or recapture, 2 for bad
arguments (missing input or model, bad intake sheet, bad --shard or --subject).
A photo's patient is the manifest's subject column, else a name on the intake sheet (a
folder or a file name token), else the folder directly under the input folder
(photos/P001/IMG_4411.HEIC -> P001; date and camera folders such as 2024-11-25 or DCIM
are passed over), else a patient id in the file name (--subject REGEX;
the default finds P001 or 2024-0012 and never camera names like IMG_4411 or dates). A photo
whose patient is unknown is a patient of its own, never pooled with others.
--tta averages each photo's logits with those of its mirror (flip, the default), of its
90-degree turns (rot: 4 passes) or of both (d4: 8 passes), mapped back first; the
temperatures and thresholds stay the ones fitted without TTA. Give the inputs before a
bare --tta (or name the mode), since a word after it is read as the mode.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan score`."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files, folders (recursive) or manifest .csv")
    parser.add_argument("--model", default=None,
                        help="run folder, model.safetensors or exported model.onnx (default: the model that ships "
                             "with scalpscan)")
    parser.add_argument("--out", required=True, help="results file (.jsonl or .csv); appended to and resumed")
    parser.add_argument("--intake", help="intake sheet CSV (subject, sex, keloid_history, eczema_active, ...)")
    parser.add_argument("--report-dir", help="write one HTML report per patient and an index page here")
    parser.add_argument("--save-masks", action="store_true", help="save zone/loss mask PNGs beside the results")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per forward pass (default 32)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: spare cores, 1-4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of the model on the CPU (default: the cores the decoding workers leave, at least 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); default cpu")
    parser.add_argument("--format", choices=("jsonl", "csv"), default=None, help="default: from --out's suffix")
    parser.add_argument("--shard", help="K/N: score only shard K (0..N-1) of N; default from torchrun's RANK/WORLD_SIZE")
    parser.add_argument("--tta", nargs="?", const="flip", choices=list(TTA_MODES), metavar="MODE",
                        help="test-time augmentation: flip (the default: average with the mirrored photo), "
                             "rot (the photo turned by 0/90/180/270 degrees) or d4 (the four turns with "
                             "and without the mirror)")
    parser.add_argument("--subject", metavar="REGEX", default=None,
                        help="patient id in file names: a regular expression whose group 'subject' (or first "
                             "group, or whole match) is the id; default finds ids like P001 or 2024-0012")
    parser.add_argument("--retry-errors", action="store_true", help="score photos whose row is an error again")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse pictures with more pixels than this (default 250,000,000: 200 MP photos "
                             "pass, crafted decompression bombs do not)")
    parser.add_argument("--pdf", action="store_true", help="with --report-dir: also a PDF per patient (A4 and Letter)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"scalpscan score: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Validate every argument (intake sheet included) before scoring a photo."""
    from scalpscan.data.decode import set_max_pixels
    from scalpscan.inference.inputs import (
        DEFAULT_SUBJECT_PATTERN,
        InputError,
        discover_inputs,
        parse_shard,
        select_shard,
        shard_from_env,
    )
    from scalpscan.inference.score import sharded_out

    out = Path(args.out)
    fmt = args.format or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
    if args.batch_size < 1:
        return _fail(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers is not None and args.workers < 0:
        return _fail(f"--workers {args.workers}: must be 0 (decode in this process) or more")
    if args.threads is not None and args.threads < 1:
        return _fail(f"--threads {args.threads}: must be at least 1")
    if args.report_dir and fmt != "jsonl":
        return _fail("--report-dir needs JSON lines results (--format jsonl / --out results.jsonl)")
    if args.pdf and not args.report_dir:
        return _fail("--pdf needs --report-dir (the PDFs go beside the HTML pages)")
    if args.pdf:
        from scalpscan.inference.report.pdf import PdfError, find_engine

        try:
            find_engine()  # before scoring for hours: the PDFs come at the end
        except PdfError as exc:
            return _fail(str(exc))
    if args.max_pixels is not None:
        if args.max_pixels < 1:
            return _fail(f"--max-pixels {args.max_pixels}: must be a positive number of pixels, e.g. 250000000")
        set_max_pixels(args.max_pixels)
    device = args.device
    if not (device == "cpu" or device.startswith("cuda")):
        return _fail(f"--device {device!r}: expected cpu, cuda or cuda:N")

    intakes = None
    if args.intake:
        from scalpscan.inference.intake import IntakeError, read_intake

        try:
            intakes, warnings = read_intake(args.intake)
        except (IntakeError, OSError) as exc:
            return _fail(f"intake sheet {args.intake}: {exc}")
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)

    try:
        shard = parse_shard(args.shard) if args.shard else None
        env_shard = shard_from_env() if shard is None else None
        if env_shard is not None:
            shard = env_shard
            out = sharded_out(out, *env_shard)
        found = discover_inputs(
            args.inputs,
            subjects=intakes.keys() if intakes else None,
            subject_pattern=DEFAULT_SUBJECT_PATTERN if args.subject is None else args.subject,
        )
    except InputError as exc:
        return _fail(str(exc))
    jobs = found.jobs
    if not jobs:
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(found.skipped_counts().items()))
        return _fail(
            f"no photos found in {' '.join(args.inputs)}"
            + (f" (skipped: {skipped}; e.g. {found.skipped[0].path})" if found.skipped else " (the folders are empty)")
        )
    if shard is not None:
        jobs = select_shard(jobs, *shard)

    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return _fail(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if env_shard is not None and device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"

    from scalpscan.inference.predictor import Predictor
    from scalpscan.inference.score import default_workers
    from scalpscan.models.checkpoint import CheckpointError

    workers = default_workers() if args.workers is None else args.workers
    # Model threads and decoding processes share the cores; oversubscribing them slows both.
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - workers))

    try:
        predictor = Predictor.load(args.model, device=device, tta=args.tta)
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        return _fail(f"--model {args.model or '(the shipped model)'}: {exc}")

    from scalpscan.inference.report.pdf import PdfError
    from scalpscan.inference.score import run_score

    try:
        summary = run_score(
            predictor,
            jobs,
            out,
            fmt=fmt,
            batch_size=args.batch_size,
            workers=workers,
            intakes=intakes,
            report_dir=args.report_dir,
            save_masks=args.save_masks,
            progress=not args.no_progress,
            retry_errors=args.retry_errors,
            skipped_files=found.skipped,
            pdf=args.pdf,
        )
    except (InputError, PdfError) as exc:
        return _fail(str(exc))
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]}: {len(jobs)} photos")
    print(summary.describe())
    return summary.exit_code
