"""Measuring trained runs: on a manifest (`evaluate_run`), two runs on the same photos
(`compare_runs`), two cross-validations on the same folds (`compare_cross_validations`),
and refitting a finished run's calibration (`recalibrate_run`).

Every function uses the run's own input size, normalisation and calibration, as stored in
its ``model.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scalpscan.data.files import write_text_atomic
from scalpscan.data.vocab import CONDITIONS, tta_mode
from scalpscan.models.checkpoint import load_checkpoint, save_checkpoint
from scalpscan.models.provenance import assessed_outputs, with_figures

from .calibrate import fit_calibration, untouched_mask
from .config import config_from_dict
from .datasets import data_fingerprint, load_rows, make_datasets, make_loader
from .engine import evaluate
from .errors import TrainingError
from .metrics import Predictions, compare_predictions, compute_metrics
from .metrics import metrics_by as compute_by
from .plots import plot_all
from .state import LOG_FILE

__all__ = [
    "calibrated",
    "run_calibration",
    "run_outputs",
    "evaluate_run",
    "compare_runs",
    "compare_cross_validations",
    "recalibrate_run",
    "column_values",
    "json_safe",
    "write_json",
]


def calibrated(calibration: Mapping[str, Any] | None,
               heads: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`compute_metrics` keyword arguments for a calibration (or ``model.json``, which
    holds the same keys); None = uncalibrated.

    Args:
        calibration: `fit_calibration`'s result or a ``model.json``.
        heads: the run's head record (model.json ``"heads"``); a view head that no label
            trained gives rows no view, so a person's photos weigh as unknown views, as in
            the reports. None: the view is assessed.
    """
    calibration = calibration or {}
    view_assessed = heads is None or "view" not in assessed_outputs({"heads": heads})[0]
    return {"thresholds": calibration.get("thresholds"),
            "temperature": calibration.get("temperature"),
            "stage_offsets": calibration.get("stage_offsets"), "view_assessed": view_assessed}


def run_calibration(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`compute_metrics` keyword arguments of a run's stored calibration (its ``model.json``)."""
    return {**calibrated(meta), "view_assessed": "view" not in assessed_outputs(meta)[0]}


def _rows_to_evaluate(manifest: str | os.PathLike) -> list[Any]:
    """The rows of ``manifest``; an empty one is an error."""
    from scalpscan.data.manifest import read_manifest

    rows = read_manifest(manifest)
    if not rows:
        raise TrainingError(f"{manifest}: the manifest has no rows to evaluate")
    return rows


def column_values(rows: Sequence[Any], column: str) -> list[str]:
    """Each row's value of a manifest column (core or extra), as text.

    Raises:
        TrainingError: for a column the manifest does not have (it lists the known ones).
    """
    values = []
    for row in rows:
        if column == "view":
            values.append(row.view or "")
        elif column == "subject":
            values.append(row.subject)
        elif column == "stage":
            values.append("" if row.stage is None else str(row.stage))
        elif column in CONDITIONS:
            value = row.conditions.get(column)
            values.append("" if value is None else str(value))
        elif column in row.extra:
            values.append(row.extra[column])
        else:
            known = ["view", "subject", "stage", *CONDITIONS, *row.extra]
            raise TrainingError(f"--by {column}: the manifest has no such column; "
                                f"columns: {', '.join(known)}")
    return values


def run_outputs(model_path: str | os.PathLike, rows: Sequence[Any], *, batch_size: int = 32,
                device: str | torch.device = "cpu", workers: int = 0, progress: bool = False,
                tta: str | None = None, input_size: int | None = None,
                ) -> tuple[Predictions, nn.Module, dict[str, Any]]:
    """A trained run's raw outputs on manifest ``rows`` (with its own input size, or
    ``input_size``, and its normalisation), the loaded network and its ``model.json``."""
    from scalpscan.data.dataset import ScalpDataset
    from scalpscan.data.transforms import build_transforms

    torch_device = torch.device(device)
    model, meta = load_checkpoint(model_path, map_location=torch_device)
    transform = build_transforms(int(input_size or meta["input_size"]), meta["mean"], meta["std"], train=False)
    loader = make_loader(ScalpDataset(rows, transform=transform), batch_size=batch_size,
                         train=False, seed=0, workers=workers, device=torch_device)
    _, preds = evaluate(model, loader, None, device=torch_device,
                        subjects=[r.subject for r in rows], progress=progress, tta=tta)
    return preds, model, meta


def evaluate_run(model_path: str | os.PathLike, manifest: str | os.PathLike, *,
                 out_dir: str | os.PathLike | None = None, by: Sequence[str] = (),
                 batch_size: int = 32, device: str = "cpu", workers: int = 0,
                 progress: bool = False, tta: bool | str | None = None,
                 ci_draws: int = 1000) -> dict[str, Any]:
    """Evaluate a trained run on a manifest; write ``metrics.json`` and plots.

    Uses the run's own input size, normalisation, temperatures and thresholds.

    Args:
        model_path: run folder, ``model.safetensors`` or ``model.json``.
        manifest: manifest CSV to evaluate on.
        out_dir: where ``metrics.json`` and the PNG plots go; None writes nothing.
        by: manifest columns to break every metric down by (``view`` is always included).
        batch_size: photos per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes.
        progress: show a progress bar.
        tta: test-time augmentation mode as for `evaluate` (None/False, True = "flip",
            "rot", "d4"), as ``Predictor(tta=...)`` and ``scalpscan score --tta`` run it
            (the temperatures and thresholds were fitted without it).
        ci_draws: person-bootstrap draws for the stage intervals (0 = none); the
            breakdowns get none.

    Returns:
        ``{"metrics": ..., "by": {column: {value: metrics}}, "model": ..., "data": ...,
        "tta": None or the mode}``.

    Raises:
        ValueError: if ``tta`` is not a mode.
    """
    tta = tta_mode(tta)  # refuse a bad mode before loading anything
    rows = _rows_to_evaluate(manifest)
    columns = ["view", *[c for c in by if c != "view"]]
    groups = {column: column_values(rows, column) for column in columns}
    preds, _, meta = run_outputs(model_path, rows, batch_size=batch_size, device=device,
                                 workers=workers, progress=progress, tta=tta)
    kwargs = run_calibration(meta)
    metrics = compute_metrics(preds, **kwargs, ci_draws=ci_draws)
    breakdowns = {
        column: compute_by(preds, column, [values[i] for i in preds.index], **kwargs)
        for column, values in groups.items()
    }
    run_dir = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
    result = {
        "model": str(model_path),
        "data": {"manifest": str(manifest), "rows": len(rows),
                 "fingerprint": data_fingerprint(rows)},
        "model_fingerprint": meta.get("data_fingerprint"),
        "tta": tta,
        "temperature": meta.get("temperature"),
        "stage_offsets": meta.get("stage_offsets"),
        "thresholds": meta.get("thresholds"),
        "metrics": metrics,
        "by": breakdowns,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if out_dir is not None:
        out = write_json(Path(out_dir) / "metrics.json", result).parent
        log_csv = run_dir / LOG_FILE
        plot_all(preds, out, log_csv=log_csv if log_csv.is_file() else None,
                 temperature=meta.get("temperature"), stage_offsets=meta.get("stage_offsets"))
    return result


def compare_runs(model_a: str | os.PathLike, model_b: str | os.PathLike,
                 manifest: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                 batch_size: int = 32, device: str = "cpu", workers: int = 0,
                 progress: bool = False, tta: bool | str | None = None,
                 ci_draws: int = 1000) -> dict[str, Any]:
    """Two runs on the same photos: each one's metrics, and B - A for the stage with
    paired person-bootstrap intervals (`training.metrics.paired_stage_differences`).

    On a small test set the two runs' own intervals overlap almost always; the paired
    interval of their difference is the honest answer to "is B better than A?".

    Args:
        model_a, model_b: run folders (or ``model.safetensors`` / ``model.json``); each
            uses its own input size, normalisation and calibration.
        manifest: manifest CSV both are evaluated on.
        out_dir: where ``compare.json`` goes; None writes nothing.
        batch_size, device, workers, progress, tta: as for `evaluate_run` (TTA for both).
        ci_draws: paired bootstrap draws (at least 1).

    Returns:
        ``{"a": {"model", "metrics"}, "b": {...}, "difference": {"stage": ...,
        "stage_person": ...}, "photos", "persons", "data", "tta", "created"}``.

    Raises:
        ValueError: for an unknown ``tta`` mode or ``ci_draws`` < 1.
        TrainingError: for an empty manifest.
        CheckpointError: for a run folder that does not hold a model.
    """
    tta = tta_mode(tta)
    if ci_draws < 1:
        raise ValueError(f"ci_draws={ci_draws}: a comparison needs at least one draw")
    rows = _rows_to_evaluate(manifest)
    outputs = [run_outputs(path, rows, batch_size=batch_size, device=device, workers=workers,
                           progress=progress, tta=tta) for path in (model_a, model_b)]
    (preds_a, _, meta_a), (preds_b, _, meta_b) = outputs
    try:
        compared = compare_predictions(preds_a, preds_b, calibration_a=run_calibration(meta_a),
                                       calibration_b=run_calibration(meta_b), draws=ci_draws)
    except ValueError as exc:
        raise TrainingError(f"{manifest}: {exc}") from None
    sides = {side: {"model": str(path), "metrics": compared[side]}
             for side, path in (("a", model_a), ("b", model_b))}
    result = {**sides, "difference": compared["difference"], "photos": len(preds_a),
              "persons": len(set(preds_a.subjects)),
              "data": {"manifest": str(manifest), "rows": len(rows),
                       "fingerprint": data_fingerprint(rows)},
              "tta": tta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if out_dir is not None:
        write_json(Path(out_dir) / "compare.json", result)
    return result


def compare_cross_validations(run_a: str | os.PathLike, run_b: str | os.PathLike,
                              manifest: str | os.PathLike | None = None, *,
                              out_dir: str | os.PathLike | None = None, batch_size: int = 32,
                              device: str = "cpu", workers: int = 0, progress: bool = False,
                              ci_draws: int = 1000) -> dict[str, Any]:
    """Two finished cross-validations on the same folds: B - A out of fold, with paired
    person-bootstrap intervals, and (with ``manifest``) their two ensembles on it.

    Out of fold, every person of the runs' ``data`` is predicted by the fold model that
    never saw them, each run under its own ensemble calibration: a comparison over K times
    more persons than one validation split holds, and paired person by person (the two
    runs must have dealt the same persons into the same folds: same data, ``folds`` and
    ``seed``). This is how a recipe change (renders, a learning rate) is judged.

    Args:
        run_a, run_b: cross-validation run folders (``scalpscan train --folds K``).
        manifest: also compare the two ensembles on these photos (`compare_runs`);
            None compares out of fold only.
        out_dir: where ``compare.json`` goes; None writes nothing.
        batch_size, device, workers, progress: as for `compare_runs`.
        ci_draws: paired bootstrap draws (at least 1).

    Returns:
        The out-of-fold comparison in `compare_runs`' shape (``a``, ``b``, ``difference``,
        ``photos``, ``persons``, ``data``) with ``"out_of_fold": True`` and ``folds``, and
        under ``"on_data"`` the comparison on ``manifest`` (None without one).

    Raises:
        ValueError: ``ci_draws`` < 1.
        TrainingError: a run that is not a finished cross-validation, or two runs whose
            folds differ.
    """
    from .crossval import CV_FILE, out_of_fold  # crossval builds on this module

    if ci_draws < 1:
        raise ValueError(f"ci_draws={ci_draws}: a comparison needs at least one draw")
    states = []
    for run in (Path(run_a), Path(run_b)):
        state_path = run / CV_FILE
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        if not state.get("finished"):
            raise TrainingError(f"{run}: not a finished cross-validation (no finished "
                                f"{CV_FILE}); --out-of-fold compares runs trained with --folds")
        states.append(state)
    if states[0]["subjects"] != states[1]["subjects"]:
        raise TrainingError(f"{run_b}: its folds are not those of {run_a}; compare "
                            "cross-validations of the same data, folds and seed")
    (preds_a, calibration_a), (preds_b, calibration_b) = (out_of_fold(run, device=device)
                                                          for run in (run_a, run_b))
    compared = compare_predictions(preds_a, preds_b, calibration_a=calibration_a,
                                   calibration_b=calibration_b, draws=ci_draws)
    sides = {side: {"model": str(path), "metrics": compared[side]}
             for side, path in (("a", run_a), ("b", run_b))}
    result = {**sides, "difference": compared["difference"], "photos": len(preds_a),
              "persons": len(set(preds_a.subjects)), "out_of_fold": True,
              "folds": states[0]["folds"],
              "data": {"manifest": states[0].get("data"), "rows": len(preds_a),
                       "fingerprint": states[0].get("data_fingerprint")},
              "tta": None, "on_data": None,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if manifest is not None:
        result["on_data"] = compare_runs(run_a, run_b, manifest, batch_size=batch_size,
                                         device=device, workers=workers, progress=progress,
                                         ci_draws=ci_draws)
    if out_dir is not None:
        write_json(Path(out_dir) / "compare.json", result)
    return result


def recalibrate_run(run_dir: str | os.PathLike, *, batch_size: int = 32, device: str = "cpu",
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit a finished run's calibration again on its own validation split, with this code.

    The validation split is rebuilt from the run's stored config (the same subject-grouped
    split of ``data`` when ``val`` is empty) and must match the run's data fingerprint.
    ``model.json`` gets the new temperatures, stage offsets, thresholds and validation
    metrics; the weights are not touched.

    Args:
        run_dir: the run folder.
        batch_size: photos per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        log: where the summary line goes.

    Returns:
        The new calibration (`training.calibrate.fit_calibration`).

    Raises:
        TrainingError: when the manifests changed since the run was trained.
    """
    run_dir = Path(run_dir)
    torch_device = torch.device(device)
    model, meta = load_checkpoint(run_dir, map_location=torch_device)
    config = config_from_dict(dict(meta.get("config") or {}), source=str(run_dir / "model.json"))
    if config.folds:
        raise TrainingError(f"{run_dir}: a cross-validation ensemble is calibrated on its "
                            "out-of-fold outputs; `scalpscan train --out RUN --resume` refits "
                            "that calibration with this code (the finished folds are kept)")
    train_rows, val_rows = load_rows(config)
    fingerprint = data_fingerprint(train_rows) + ":" + data_fingerprint(val_rows)
    if meta.get("data_fingerprint") and meta["data_fingerprint"] != fingerprint:
        raise TrainingError(f"{run_dir / 'model.json'}: the manifests {config.data} / "
                            f"{config.val or '(split of data)'} changed since this run was "
                            "trained; retrain instead of recalibrating")
    _, val_ds = make_datasets(config, train_rows, val_rows, meta["mean"], meta["std"])
    loader = make_loader(val_ds, batch_size=batch_size, train=False, seed=config.seed,
                         workers=0, device=torch_device)
    _, preds = evaluate(model, loader, None, device=torch_device,
                        subjects=[r.subject for r in val_rows])
    calibration = fit_calibration(preds, untouched=untouched_mask(preds, val_rows),
                                  max_false_rate=config.finding_false_rate)
    metrics = compute_metrics(preds, **calibrated(calibration, meta.get("heads")))
    metrics.get("stage_person", {}).pop("persons", None)
    meta = dict(meta)
    meta.update(temperature=calibration["temperature"], thresholds=calibration["thresholds"],
                stage_offsets=calibration["stage_offsets"])
    meta["metrics"] = {**dict(meta.get("metrics") or {}), "val": metrics}
    if meta.get("heads"):
        meta["heads"] = with_figures(meta["heads"], metrics, calibration["threshold_rule"])
        meta["thresholds"] = {c: v for c, v in meta["thresholds"].items()
                              if sum((meta["heads"].get(c) or {}).get("validated", {}).values())}
    save_checkpoint(run_dir, model, meta, name="model")
    log(f"{run_dir}: stage temperature {calibration['temperature']['stage']:.3f}, offsets "
        + " ".join(f"{v:+.2f}" for v in calibration["stage_offsets"])
        + f"; validation stage ECE {metrics['stage']['ece']:.3f}; thresholds "
        + ", ".join(f"{c} {v:.3f} ({calibration['threshold_rule'][c]['rule']})"
                    for c, v in calibration["thresholds"].items()))
    return calibration


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON (NaN/inf as null), atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """NaN/inf become null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

