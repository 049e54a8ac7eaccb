"""`scalpscan synth`: render a labelled synthetic data set."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HELP = "render synthetic scalp photos with zone and loss masks, a manifest and a contact sheet"

EPILOG = """\
examples:
  scalpscan synth out/synth --n 1000 --seed 0
  scalpscan synth out/small --n 50 --size 128 --workers 2
  scalpscan synth out/women --n 200 --male-fraction 0 --rotate-prob 0

Writes OUT/images/NNNNNN.jpg, OUT/masks/NNNNNN_zones.png and NNNNNN_loss.png (8-bit,
one bit per zone / condition), OUT/manifest.csv and OUT/contact_sheet.png. The same
--seed gives byte-identical files whatever --workers.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan synth`."""
    parser.add_argument("out", type=Path, help="folder to write the data set into")
    parser.add_argument("--n", type=int, default=1000, help="number of photos (default 1000; 5 views per subject)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data set (default 0)")
    parser.add_argument("--size", type=int, default=256, help="picture side in pixels (default 256)")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="rendering processes (default: up to 4); the output does not depend on it",
    )
    parser.add_argument("--male-fraction", type=float, default=0.7, help="share of male subjects (default 0.7)")
    parser.add_argument(
        "--rotate-prob",
        type=float,
        default=0.5,
        help="share of photos turned by 90/180/270 degrees, as phones and the real data set have (default 0.5)",
    )
    parser.add_argument(
        "--condition-rate",
        type=float,
        default=1.0,
        help="multiplies the chance of alopecia patches and transplant scars (default 1)",
    )
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="photo format (default jpg)")
    parser.add_argument(
        "--contact-sheet",
        type=int,
        default=60,
        metavar="N",
        help="photos on OUT/contact_sheet.png (default 60, 0 = no sheet)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing data set in OUT (its images/ and masks/ folders are deleted first)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors and the summary")


def _fail(message: str) -> int:
    print(f"scalpscan synth: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Render the data set; returns the exit code."""
    from scalpscan.data.synth.dataset import SynthOptions, synthesize

    out: Path = args.out
    if args.n < 1:
        return _fail(f"--n must be at least 1, got {args.n}")
    if args.seed < 0:
        return _fail(f"--seed must be 0 or more, got {args.seed}")
    if args.workers < 1:
        return _fail(f"--workers must be at least 1, got {args.workers}")
    if args.contact_sheet < 0:
        return _fail(f"--contact-sheet must be 0 or more, got {args.contact_sheet}")
    if out.exists() and not out.is_dir():
        return _fail(f"{out} exists and is not a folder; choose another OUT")
    if (out / "manifest.csv").exists():
        if not args.overwrite:
            return _fail(f"{out} already holds a data set (manifest.csv); pass --overwrite to replace it")
        for sub in ("images", "masks"):
            shutil.rmtree(out / sub, ignore_errors=True)
    try:
        options = SynthOptions(
            size=args.size,
            male_fraction=args.male_fraction,
            rotate_prob=args.rotate_prob,
            condition_rate=args.condition_rate,
            image_format=args.format,
        )
    except ValueError as exc:
        return _fail(str(exc))

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"  rendered {done}/{total}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    manifest = synthesize(
        out,
        args.n,
        args.seed,
        options=options,
        workers=args.workers,
        contact_sheet=args.contact_sheet,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    print(f"wrote {args.n} photos to {out} in {seconds:.1f} s ({args.n / seconds:.1f} photos/s)")
    print(f"manifest: {manifest}")
    if args.contact_sheet:
        print(f"contact sheet: {out / 'contact_sheet.png'}")
    return 0
