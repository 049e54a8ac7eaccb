"""Person-grouped K-fold cross-validation, and the ensemble of its fold models.

``scalpscan train --folds K`` (config key ``folds``) deals the persons of ``data`` into K
folds (`data.splits.fold_subjects`) and trains K ordinary runs with `training.trainer.fit`,
each on K-1 folds and validated (best epoch, calibration) on the fold it never saw. Then:

- every photo has been predicted by a model that never saw its person: these
  **out-of-fold** predictions cover all persons of ``data``, so their metrics (with
  person-bootstrap intervals) rest on K times more persons than one validation split;
- the K fold models become one network (`models.ScalpEnsemble`, mean of their logits),
  calibrated on the out-of-fold outputs, and saved as the run's ``model.*``: every person
  of ``data`` trained K-1 of its members.

The run folder::

    RUN/config.yaml             the resolved config (folds: K), for --resume
    RUN/cv.json                 fold of every subject, data fingerprint, finished folds and
                                the wall-clock seconds each one's training took
    RUN/splits/fold_N.{train,val}.csv
    RUN/fold_N/                 an ordinary run folder per fold (N = 1..K)
    RUN/oof/metrics.json        out-of-fold metrics, and their plots
    RUN/model.safetensors/json  the fold ensemble

An interrupted cross-validation resumes with ``scalpscan train --out RUN --resume``:
finished folds are kept, the interrupted fold resumes from its ``resume.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalpscan.data.manifest import read_manifest, write_manifest
from scalpscan.data.splits import fold_subjects
from scalpscan.models.checkpoint import save_checkpoint
from scalpscan.models.network import ensemble_of
from scalpscan.models.provenance import head_provenance, with_figures

from . import trainer
from .calibrate import fit_calibration, untouched_mask
from .config import TrainConfig, save_config
from .datasets import data_fingerprint, read_train_extra
from .distributed import DistInfo, resolve_device
from .errors import TrainingError
from .evaluation import calibrated, column_values, run_calibration, run_outputs, write_json
from .state import claim_run_folder, previous_run_files
from .metrics import Predictions, compute_metrics, metrics_by
from .plots import plot_all

__all__ = ["CV_FILE", "OOF_DIR", "cross_validate", "concat_predictions", "out_of_fold"]

#: The cross-validation's own state: folds, data fingerprint, finished folds.
CV_FILE = "cv.json"
#: Where the out-of-fold metrics and plots go.
OOF_DIR = "oof"
#: Headline figures summarised across folds (mean and spread of each fold's own split).
_FOLD_FIGURES = (("stage", "accuracy"), ("stage", "mae"), ("stage", "qwk"),
                 ("stage_person", "accuracy"), ("view", "accuracy"),
                 ("conditions", "macro_f1"), ("zones", "mean_iou"))


def concat_predictions(parts: Sequence[Predictions]) -> Predictions:
    """One `Predictions` holding every photo of ``parts``, in order."""
    names = [f.name for f in dataclasses.fields(Predictions) if f.name != "subjects"]
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in names}
    return Predictions(**arrays, subjects=[s for p in parts for s in p.subjects])


def _fold_dir(run_dir: Path, fold: int) -> Path:
    return run_dir / f"fold_{fold + 1}"


def _cv_files(run_dir: Path) -> list[str]:
    """What a previous run left in ``run_dir`` (cross-validation or a single run)."""
    found = previous_run_files(run_dir)
    found += [name for name in (CV_FILE, OOF_DIR, "splits") if (run_dir / name).exists()]
    found += sorted(p.name for p in run_dir.glob("fold_*") if p.is_dir())
    return found


def _clear(run_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def cross_validate(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """K-fold cross-validation of ``config`` (``config.folds`` = K) into ``config.out``.

    Args:
        config: validated training config with ``folds >= 2`` and no ``val``.
        resume: keep the finished folds of the run in ``config.out`` and resume the
            interrupted one.
        overwrite: replace a run already in ``config.out`` (all its folds).
        log: where progress lines go.

    Returns:
        The run folder, holding the ensemble as ``model.*`` and ``oof/metrics.json``.

    Raises:
        TrainingError: for a config without folds, too few persons, an existing run
            without ``resume``/``overwrite``, or a resume whose data or folds changed.
    """
    config.validate()
    if config.folds < 2:
        raise TrainingError(f"cross_validate needs folds >= 2, got folds={config.folds}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainingError("folds: cross-validation runs its folds one after another in one "
                            "process; start it without torchrun (each fold can use all local "
                            "threads or one GPU)")
    run_dir = Path(config.out)
    state_path = run_dir / CV_FILE
    _clear(run_dir, claim_run_folder(state_path, lambda: _cv_files(run_dir), resume=resume,
                                     overwrite=overwrite))

    if not config.data:
        raise TrainingError("no training manifest: give --data MANIFEST (or data: in the config)")
    rows = read_manifest(config.data)
    try:
        assignment = fold_subjects(rows, config.folds, seed=config.seed)
    except ValueError as exc:
        raise TrainingError(f"{config.data}: {exc}") from None
    fingerprint = data_fingerprint(rows)
    # Photos for training only (e.g. renders) join every fold's training rows; checked here,
    # before any fold trains, for persons that are also in `data`.
    extra = read_train_extra(config, rows)
    state = {"folds": config.folds, "seed": config.seed, "data": config.data,
             "data_fingerprint": fingerprint, "subjects": assignment,
             "train_extra": config.train_extra or None,
             "train_extra_fingerprint": data_fingerprint(extra) if extra else None,
             "done": [], "fold_seconds": {}, "finished": False}
    if resume:
        saved = json.loads(state_path.read_text())
        for key in ("folds", "seed", "data_fingerprint", "subjects", "train_extra_fingerprint"):
            if saved.get(key) != state[key]:
                raise TrainingError(f"{state_path}: the {key.replace('_', ' ')} changed since "
                                    "the run was interrupted; resume with the same manifests, "
                                    "folds and seed")
        state["done"] = list(saved.get("done", []))
        state["fold_seconds"] = dict(saved.get("fold_seconds", {}))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(state_path, state)

    for fold in range(config.folds):
        train_csv = run_dir / "splits" / f"fold_{fold + 1}.train.csv"
        val_csv = run_dir / "splits" / f"fold_{fold + 1}.val.csv"
        if fold in state["done"]:
            log(f"[fold {fold + 1}/{config.folds}] finished before; kept")
            continue
        train_csv.parent.mkdir(parents=True, exist_ok=True)
        write_manifest([r for r in rows if assignment[r.subject] != fold], train_csv)
        write_manifest([r for r in rows if assignment[r.subject] == fold], val_csv)
        fold_config = dataclasses.replace(config, folds=0, data=str(train_csv),
                                          val=str(val_csv), out=str(_fold_dir(run_dir, fold)))
        fold_resume = resume and (_fold_dir(run_dir, fold) / "resume.safetensors").is_file()
        start = time.perf_counter()
        trainer.fit(fold_config, resume=fold_resume, overwrite=not fold_resume,
                    log=lambda message, n=fold: log(f"[fold {n + 1}/{config.folds}] {message}"))
        state["done"] = sorted(set(state["done"]) | {fold})
        state["fold_seconds"][str(fold + 1)] = round(time.perf_counter() - start, 1)
        write_json(state_path, state)

    _finish_cv(config, run_dir, rows, extra, assignment, fingerprint=fingerprint, log=log)
    state["finished"] = True
    write_json(state_path, state)
    return run_dir


def _oof_predictions(run_dir: Path, rows: Sequence[Any], assignment: dict[str, int],
                     folds: int, device: torch.device
                     ) -> tuple[Predictions, list[torch.nn.Module], list[dict[str, Any]]]:
    """Each fold model's raw outputs on its own held-out fold, concatenated; ``index`` is
    the photo's row in ``rows`` (the whole manifest)."""
    parts, models, metas = [], [], []
    for fold in range(folds):
        where = np.array([i for i, r in enumerate(rows) if assignment[r.subject] == fold])
        preds, model, meta = run_outputs(_fold_dir(run_dir, fold), [rows[i] for i in where],
                                         device=device)
        preds.index = where[preds.index]
        parts.append(preds)
        models.append(model.cpu())
        metas.append(meta)
    return concat_predictions(parts), models, metas


def out_of_fold(run_dir: str | os.PathLike, *, device: str = "cpu"
                ) -> tuple[Predictions, dict[str, Any]]:
    """The out-of-fold outputs of a finished cross-validation, for analyses of your own
    (e.g. `training.metrics.compare_predictions` between two runs on the same folds).

    Returns:
        The raw outputs of every photo of the run's ``data`` from the fold model that never
        saw its person, in manifest order (``index`` = row), and the `compute_metrics`
        arguments of the ensemble's calibration (fitted on these outputs).

    Raises:
        TrainingError: when ``run_dir`` is not a finished cross-validation, or its manifest
            changed since.
    """
    from .config import load_config

    run_dir = Path(run_dir)
    state_path = run_dir / CV_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if not state.get("finished"):
        raise TrainingError(f"{run_dir}: not a finished cross-validation (no finished "
                            f"{CV_FILE}); train it with --folds, or resume it")
    config = load_config(run_dir / "config.yaml")
    rows = read_manifest(config.data)
    if data_fingerprint(rows) != state["data_fingerprint"]:
        raise TrainingError(f"{config.data}: the manifest changed since {run_dir} was trained")
    preds, _, _ = _oof_predictions(run_dir, rows, state["subjects"], state["folds"],
                                   torch.device(device))
    preds = preds.take(np.argsort(preds.index, kind="stable"))  # manifest order
    return preds, run_calibration(json.loads((run_dir / "model.json").read_text()))


def _fold_summary(metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each fold's own validation figures (as ``model.json`` stores them), mean and SD."""
    summary: dict[str, Any] = {}
    for head, name in _FOLD_FIGURES:
        values = [((m.get("metrics") or {}).get("val") or {}).get(head, {}).get(name)
                  for m in metas]
        if any(v is None for v in values):
            continue
        summary[f"{head}_{name}"] = {"folds": [float(v) for v in values],
                                     "mean": float(np.mean(values)),
                                     "sd": float(np.std(values, ddof=1))}
    return summary


def _finish_cv(config: TrainConfig, run_dir: Path, rows: Sequence[Any], extra: Sequence[Any],
               assignment: dict[str, int], *, fingerprint: str,
               log: Callable[[str], None]) -> None:
    """Out-of-fold metrics, the ensemble and its calibration."""
    device = resolve_device(config.device, DistInfo())
    oof, models, metas = _oof_predictions(run_dir, rows, assignment, config.folds, device)
    # The ensemble is calibrated on the out-of-fold outputs: every photo of `data`,
    # each predicted by a member that never saw its person.
    calibration = (fit_calibration(oof, untouched=untouched_mask(oof, rows),
                                   max_false_rate=config.finding_false_rate)
                   if config.calibrate else None)
    kwargs = calibrated(calibration, metas[0].get("heads") if metas else None)
    metrics = compute_metrics(oof, **kwargs, ci_draws=1000)
    metrics.get("stage_person", {}).pop("persons", None)
    views = column_values(rows, "view")
    by_view = metrics_by(oof, "view", [views[i] for i in oof.index], **kwargs)
    folds = _fold_summary(metas)
    out = run_dir / OOF_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", {
        "folds": config.folds, "photos": len(oof), "persons": len(set(oof.subjects)),
        "calibration": "fitted on these out-of-fold outputs (the ensemble's)",
        "metrics": metrics, "by": {"view": by_view}, "per_fold": folds,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    plot_all(oof, out, temperature=kwargs["temperature"], stage_offsets=kwargs["stage_offsets"])

    ensemble = ensemble_of(models)
    # Every photo trains K-1 folds and validates one: the ensemble learned from them all.
    heads = head_provenance([*rows, *extra], rows, config.loss_weights)
    meta = trainer.run_meta(config, ensemble, metas[0]["mean"], metas[0]["std"],
                            fingerprint=fingerprint, calibration=calibration,
                            metrics={"oof": metrics, "per_fold": folds}, epoch=None,
                            heads=with_figures(heads, metrics, (calibration or {}).get("threshold_rule")))
    meta["fold_epochs"] = [m.get("epoch") for m in metas]
    save_checkpoint(run_dir, ensemble, meta, name="model")
    stage, person = metrics.get("stage", {}), metrics.get("stage_person", {})
    shown = "  ".join(f"{label} {value:.3f}" for label, value in (
        ("stage acc", stage.get("accuracy")), ("MAE", stage.get("mae")),
        ("QWK", stage.get("qwk")), ("person acc", person.get("accuracy")),
        ("view acc", metrics.get("view", {}).get("accuracy")),
        ("conditions F1", metrics.get("conditions", {}).get("macro_f1")),
        ("zone IoU", metrics.get("zones", {}).get("mean_iou"))) if value is not None)
    log(f"out-of-fold ({len(oof)} photos, {len(set(oof.subjects))} persons, "
        f"{config.folds} folds): {shown or 'no labelled figures'}")
    log(f"ensemble of {config.folds} fold models written to {run_dir / 'model.safetensors'}; "
        f"out-of-fold metrics in {out / 'metrics.json'}")

