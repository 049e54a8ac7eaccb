"""`scalpscan evaluate`: measure a trained run on a manifest, honestly and in detail."""

from __future__ import annotations

import argparse
import sys

from scalpscan.data.vocab import TTA_MODES

HELP = "evaluate a run on a manifest: metrics.json, a metrics table and plots"

EPILOG = """\
examples:
  scalpscan evaluate --data local/norwood/valid/manifest.csv --out eval_shipped   # the shipped model
  scalpscan evaluate --model runs/demo --data out/synth_test/manifest.csv
  scalpscan evaluate --model runs/lite0 --data local/norwood/valid/manifest.csv --out runs/lite0/eval_valid
  scalpscan evaluate --model runs/demo --data test.csv --by skin_tone --by hair_colour --by sex
  scalpscan evaluate --model runs/lite0 --data valid.csv --tta --out runs/lite0/eval_valid_tta
  scalpscan evaluate --model runs/lite0 --data valid.csv --tta d4 --out runs/lite0/eval_valid_d4
  scalpscan evaluate --model runs/lite0 --compare runs/cv5 --data valid.csv   # is cv5 better?
  scalpscan evaluate --model runs/cv5 --compare runs/cv5_renders --out-of-fold   # same folds, every person
  scalpscan evaluate --model runs/cv5 --compare runs/cv5_renders --out-of-fold --data valid.csv

Prints per-condition AP / AUROC / F1 (at the run's calibrated thresholds) and macro
means, stage accuracy / MAE / quadratic weighted kappa / ECE per photo and per person
(all views of one subject combined) with 95 % intervals from resampling the persons
(--ci draws), view accuracy, zone and loss-map IoU and Dice, and
the same broken down by view and by every --by column (any manifest column: sex,
skin_tone, hair_colour, source, ...). Writes metrics.json and PNG plots (learning curves,
precision-recall, stage confusion, reliability) to --out (default: RUN/eval).
--tta measures the model as `scalpscan score --tta` runs it: each photo's logits averaged
with those of its mirror (flip, the default), of its 90-degree turns (rot) or of both (d4),
mapped back first; the temperatures and thresholds stay the ones fitted without TTA.
--compare RUN_B evaluates a second run on the same photos and prints B - A for stage
accuracy, MAE and QWK, per photo and per person, with paired person-bootstrap intervals
(both runs scored on the same resampled persons, so the interval says whether B is
better on people like these) and the share of draws in which B is better; it writes
compare.json to --out (default: RUN/compare).
--out-of-fold (with --compare, both runs cross-validations of the same data, folds and
seed: `scalpscan train --folds`) compares them out of fold instead: every person of their
data, each predicted by the fold model that never saw them, paired person by person, each
run under its own ensemble calibration; --data is then optional and, when given, the two
ensembles are also compared on it.
Exit code 2 = bad arguments or unreadable model/manifest.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan evaluate`."""
    parser.add_argument("--model", default=None,
                        help="run folder, model.safetensors, model.json or a shipped model's name "
                             "(default: the shipped model)")
    parser.add_argument("--data", help="manifest (CSV) to evaluate on (optional with --out-of-fold)")
    parser.add_argument("--out", help="folder for metrics.json and plots (default: RUN/eval)")
    parser.add_argument("--by", action="append", default=[], metavar="COLUMN",
                        help="also break metrics down by this manifest column (repeatable)")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per forward pass (default 32)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default 0)")
    parser.add_argument("--ci", type=int, default=1000, metavar="DRAWS",
                        help="person-bootstrap draws for the 95%% stage intervals (default 1000; 0 = none)")
    parser.add_argument("--tta", nargs="?", const="flip", choices=list(TTA_MODES), metavar="MODE",
                        help="test-time augmentation, as score --tta: flip (the default: average with "
                             "the mirrored photo), rot (the photo turned by 0/90/180/270 degrees) or "
                             "d4 (the four turns with and without the mirror)")
    parser.add_argument("--compare", metavar="RUN_B",
                        help="also evaluate this run on the same photos and report the "
                             "difference (RUN_B - --model) with paired person-bootstrap intervals")
    parser.add_argument("--out-of-fold", action="store_true",
                        help="with --compare: compare two cross-validations on the same folds, "
                             "out of fold (every person of their data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"scalpscan evaluate: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write metrics.json and plots."""
    from pathlib import Path

    from scalpscan.data.manifest import ManifestError
    from scalpscan.models.checkpoint import CheckpointError
    from scalpscan.training.errors import TrainingError
    from scalpscan.training.evaluation import evaluate_run
    from scalpscan.training.tables import format_metrics

    from scalpscan.models.shipped import SHIPPED_DIR, resolve_model

    try:
        model = resolve_model(args.model)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    if not model.exists():
        return _fail(f"--model {model}: no such run folder or file")
    # A shipped model's folder is part of the installed package: never write into it.
    shipped = SHIPPED_DIR.resolve() in model.resolve().parents
    if args.out_of_fold and not args.compare:
        return _fail("--out-of-fold compares two cross-validations: give --compare RUN_B")
    if args.out_of_fold and args.tta:
        return _fail("--out-of-fold compares the fold models' own outputs; leave out --tta")
    if args.data is None and not args.out_of_fold:
        return _fail("--data MANIFEST is required (except with --compare --out-of-fold)")
    if args.data is not None and not Path(args.data).is_file():
        return _fail(f"--data {args.data}: no such file")
    if args.batch_size < 1:
        return _fail(f"--batch-size {args.batch_size}: must be at least 1")
    if args.ci < 0:
        return _fail(f"--ci {args.ci}: must be 0 (no intervals) or a number of draws")
    if args.compare:
        try:
            args.compare = str(resolve_model(args.compare))
        except FileNotFoundError as exc:
            return _fail(str(exc))
    if args.compare and not Path(args.compare).exists():
        return _fail(f"--compare {args.compare}: no such run folder or file")
    if args.compare and args.by:
        return _fail("--by breaks down one run's metrics; with --compare, evaluate each run "
                     "with --by on its own")
    run_dir = model if model.is_dir() else model.parent
    args.model = str(model)
    if shipped and not args.out:
        return _fail(f"--model {model.name} ships in the package: give --out DIR for the results")
    if args.compare:
        return _compare(args, run_dir)
    out = Path(args.out) if args.out else run_dir / "eval"
    try:
        result = evaluate_run(model, args.data, out_dir=out, by=args.by,
                              batch_size=args.batch_size, device=args.device,
                              workers=args.workers, progress=not args.no_progress,
                              tta=args.tta, ci_draws=args.ci)
    except (CheckpointError, ManifestError, TrainingError) as exc:
        return _fail(str(exc))
    print(format_metrics(result["metrics"], breakdowns=result["by"]))
    print(f"\nwrote {out / 'metrics.json'} and plots in {out}")
    return 0


def _compare(args: argparse.Namespace, run_dir) -> int:
    from pathlib import Path

    from scalpscan.data.manifest import ManifestError
    from scalpscan.models.checkpoint import CheckpointError
    from scalpscan.training.errors import TrainingError
    from scalpscan.training.evaluation import compare_cross_validations, compare_runs
    from scalpscan.training.tables import format_comparison

    if args.ci < 1:
        return _fail(f"--ci {args.ci}: a comparison needs at least one bootstrap draw")
    out = Path(args.out) if args.out else run_dir / "compare"
    options = dict(out_dir=out, batch_size=args.batch_size, device=args.device,
                   workers=args.workers, progress=not args.no_progress, ci_draws=args.ci)
    try:
        if args.out_of_fold:
            result = compare_cross_validations(args.model, args.compare, args.data, **options)
        else:
            result = compare_runs(args.model, args.compare, args.data, tta=args.tta, **options)
    except (CheckpointError, ManifestError, TrainingError) as exc:
        return _fail(str(exc))
    if args.out_of_fold:
        print(f"Out of fold ({result['folds']} folds, the same for both runs):")
    print(format_comparison(result))
    if result.get("on_data"):
        print(f"\nThe two ensembles on {args.data}:")
        print(format_comparison(result["on_data"]))
    print(f"\nwrote {out / 'compare.json'}")
    return 0
