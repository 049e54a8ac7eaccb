"""Build the shipped model from scratch: the joint recipe on the Norwood photos plus renders.

One command, about 20-30 minutes on 2 CPU cores, reproduces ``models/shipped/<name>``:

1. import the Roboflow export's ``train/`` split (`scalpscan import roboflow`);
2. reduce its photos to 256 px once, so that CPU epochs do not decode 640 px JPEGs;
3. paint rendered alopecia patches and transplant scars onto some of them
   (`scalpscan.data.synth.composite`), so real-looking photos carry condition labels too;
4. hold out 20 % of the persons for validation and calibration;
5. render 1,000 labelled photos for training and 300 of another seed for validation
   (`scalpscan synth`): every condition, zone and loss-map label;
6. train with ``training/recipes/joint.yaml``;
7. with ``--package``, store the best epoch as float16 in ``models/shipped/<name>``.

``--real-stage`` builds the variants that teach or judge the Norwood stage on real, untouched
photos only (BENCHMARKS.md, "Recipes tried"). The renders' stage labels are left out, and
so are the painted photos', whose unpainted originals are kept beside them: ``val`` does
this in the validation set (so the best epoch and the stage calibration rest on real photos
as a clinic takes them), ``all`` in the training set too. Neither beat the shipped model on
the valid persons: with 16 held-out persons alone, the best epoch is picked by noise.

The ``valid/`` split is never read here: it measures the result
(`python -m scalpscan.scripts.bench_model`).

Example::

    python -m scalpscan.scripts.build_model --norwood PATH/TO/hairloss-norwood --out local/build --package
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scalpscan.data.manifest import ManifestRow

REPO = Path(__file__).resolve().parents[1]
NAME = "scalpscan-joint-v1"
DESCRIPTION = ("EfficientNet-Lite0 at 192 px, joint recipe: Norwood stage and view from real photos, "
               "conditions, zones and hair-loss map from renders and painted photos")
LICENSE = ("Apache-2.0; trained on the hairloss-norwood photos (Roboflow Universe project 'hair-loss' "
           "by uze, CC BY 4.0) and on renders")
CARD = "docs/model-card.md"


def without_stage(rows: list[ManifestRow]) -> list[ManifestRow]:
    """The rows with their Norwood stage unknown (None); every other label kept."""
    return [dataclasses.replace(row, stage=None) for row in rows]


def untouched_and_painted(painted: list[ManifestRow], originals: list[ManifestRow]) -> list[ManifestRow]:
    """Real rows for training or validation: untouched photos as they are; for each painted
    one, its unpainted original (stage kept, no patch or scar) and the painted copy without
    stage. A patch painted on a Norwood 2 head is not Norwood 2 any more, so a painted photo
    must not teach or judge the stage.

    ``painted`` and ``originals`` are the composite manifest and its source, row for row.
    """
    from scalpscan.models.provenance import untouched_real

    rows = []
    for row, original in zip(painted, originals, strict=True):
        if untouched_real(row):
            rows.append(row)
            continue
        conditions = {**original.conditions, "alopecia_patch": 0, "transplant_scar": 0}
        extra = {**original.extra, "composited": ""}
        rows.append(dataclasses.replace(original, conditions=conditions, extra=extra))
        rows.append(dataclasses.replace(row, stage=None))
    return rows


def build(norwood: Path, out: Path, *, seed: int = 0, renders: int = 1000, val_renders: int = 300,
          real_stage: str | None = None, overrides: list[str] | None = None, threads: int = 0) -> Path:
    """Run steps 1-6 into ``out``; returns the run folder.

    ``real_stage``: None (the shipped model's data), ``"val"`` or ``"all"`` (see above).
    """
    if real_stage not in (None, "val", "all"):
        raise ValueError(f"real_stage={real_stage!r}: expected None, 'val' or 'all'")
    from scalpscan.data.manifest import read_manifest, write_manifest
    from scalpscan.data.resize import resize_manifest
    from scalpscan.data.splits import split_rows
    from scalpscan.data.synth.composite import composite_manifest
    from scalpscan.data.synth.dataset import SynthOptions, synthesize
    from scalpscan.training.config import load_config
    from scalpscan.training.trainer import fit

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)

    imported = out / "norwood" / "manifest.csv"
    if not imported.is_file():
        subprocess.run([sys.executable, "-m", "scalpscan", "import", "roboflow", str(norwood / "train"),
                        "--out", str(out / "norwood")], check=True)
    say(f"imported {imported}")
    small = resize_manifest(imported, out / "norwood256", 256)
    say(f"reduced to 256 px: {small}")
    painted = composite_manifest(small, out / "painted", seed=seed)
    say(f"painted patches and scars: {painted}")
    painted_rows = read_manifest(painted)
    parts = split_rows(painted_rows, (0.8, 0.2), seed=seed)
    source_of = dict(zip((row.image for row in painted_rows), read_manifest(small), strict=True))

    def rendered(folder: Path, n: int, seed: int) -> list[ManifestRow]:
        """``n`` renders of ``seed``, reusing those of an earlier build when there are enough."""
        manifest = folder / "manifest.csv"
        rows = read_manifest(manifest) if manifest.is_file() else []
        if len(rows) < n:
            synthesize(folder, n, seed, options=SynthOptions(size=256), workers=2, contact_sheet=0)
            rows = read_manifest(manifest)
        return rows[:n]

    extra, val_extra = rendered(out / "renders", renders, 11), rendered(out / "renders_val", val_renders, 12)
    say("rendered")
    train, val = parts["train"], parts["val"]
    if real_stage:
        val = untouched_and_painted(val, [source_of[row.image] for row in val])
        extra, val_extra = without_stage(extra), without_stage(val_extra)
    if real_stage == "all":
        train = untouched_and_painted(train, [source_of[row.image] for row in train])
    write_manifest(train, out / "train.csv")
    write_manifest(extra, out / "renders_train.csv")
    write_manifest([*val, *val_extra], out / "val.csv")
    settings = [f"data={out / 'train.csv'}", f"val={out / 'val.csv'}",
                f"train_extra={out / 'renders_train.csv'}",
                f"out={out / 'run'}", f"seed={seed}"]
    if threads:
        settings.append(f"threads={threads}")
    config = load_config(recipe="joint", overrides=[*settings, *(overrides or [])])
    fit(config, overwrite=True)
    say(f"trained: {out / 'run'}")
    return out / "run"


def main(argv: list[str] | None = None) -> int:
    """Build (and optionally package) the shipped model."""
    parser = argparse.ArgumentParser(prog="python -m scalpscan.scripts.build_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--norwood", type=Path, required=True,
                        help="the hairloss-norwood Roboflow export (the folder holding train/ and valid/)")
    parser.add_argument("--out", type=Path, default=REPO / "local" / "build", help="working folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the recipe's)")
    parser.add_argument("--renders", type=int, default=1000, help="renders that train (default 1000)")
    parser.add_argument("--real-stage", choices=("val", "all"), default=None,
                        help="teach (all) or judge (val, all) the stage on real untouched photos only; "
                             "the variants of BENCHMARKS.md's 'Recipes tried', not the shipped model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key")
    parser.add_argument("--package", action="store_true",
                        help=f"store the result as the shipped model models/shipped/{NAME}")
    parser.add_argument("--name", default=NAME, help="shipped model name")
    args = parser.parse_args(argv)
    if not (args.norwood / "train" / "_classes.csv").is_file():
        parser.error(f"--norwood {args.norwood}: no train/_classes.csv there; give the export's folder")
    run = build(args.norwood, args.out, seed=args.seed, renders=args.renders, real_stage=args.real_stage,
                overrides=args.overrides, threads=args.threads)
    if args.package:
        from scalpscan.models.shipped import package_run

        folder = package_run(run, args.name, description=DESCRIPTION, card=CARD, license=LICENSE)
        print(f"packaged {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
