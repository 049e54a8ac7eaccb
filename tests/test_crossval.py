"""Person-grouped K-fold cross-validation (`scalpscan train --folds K`) and fold ensembles.

Tiny backbone, 64 px, hand-made photos: folds keep persons apart, out-of-fold metrics
cover every photo once, the ensemble is the mean of its fold models and travels as an
ordinary checkpoint, and an interrupted cross-validation resumes to the same result.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_training import make_photos, renamed_persons

from scalpscan.data.manifest import ManifestRow, read_manifest
from scalpscan.data.splits import fold_subjects
from scalpscan.models import ScalpEnsemble, create_model, ensemble_of, load_checkpoint, save_checkpoint
from scalpscan.models.checkpoint import inference_meta
from scalpscan.training import trainer
from scalpscan.training.config import ConfigError, load_config
from scalpscan.training.crossval import CV_FILE, OOF_DIR, cross_validate
from scalpscan.training.errors import TrainingError
from scalpscan.training.evaluation import evaluate_run
from scalpscan.training.state import LOG_FILE

FOLDS = 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("cv_photos"), subjects=6, views=3, seed=0)


def _config(manifest: Path, out: Path, **values):
    base = dict(data=str(manifest), out=str(out), folds=FOLDS, backbone="tiny", image_size=64,
                batch_size=4, epochs=1, progress=False, seed=3, warmup_epochs=0.5, threads=1)
    base.update(values)
    return load_config(None, **base)


@pytest.fixture(scope="module")
def cv_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "run"
    cross_validate(_config(manifest, out), log=lambda _m: None)
    return out


# --- folds -------------------------------------------------------------------------------


def _rows(subjects: int, photos: int = 3) -> list[ManifestRow]:
    return [ManifestRow(image=Path(f"p{s}_{i}.jpg"), subject=f"S{s}", stage=2 + s % 6)
            for s in range(subjects) for i in range(photos)]


def test_folds_keep_each_person_in_one_fold_and_fill_every_fold() -> None:
    rows = _rows(30)
    folds = fold_subjects(rows, 5, seed=1)
    assert sorted(folds) == sorted({r.subject for r in rows})
    assert sorted(Counter(folds.values())) == [0, 1, 2, 3, 4]
    assert set(Counter(folds.values()).values()) == {6}
    # Stratified: with 5 persons of each stage, every fold sees every stage.
    for fold in range(5):
        assert len({r.stage for r in rows if folds[r.subject] == fold}) == 6
    assert fold_subjects(rows, 5, seed=1) == folds
    assert fold_subjects(rows, 5, seed=2) != folds


@pytest.mark.parametrize("folds, message", [(1, "at least 2 folds"), (4, "cannot fill 4 folds")])
def test_impossible_folds_are_refused(folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fold_subjects(_rows(3), folds)


@pytest.mark.parametrize("values, message", [
    ({"folds": 1}, "folds: 1 is not valid: Value error, use 0"),
    ({"folds": 3, "val": "v.csv"}, "folds and val both set"),
])
def test_config_refuses_unusable_folds(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, **values)


# --- the ensemble network ----------------------------------------------------------------


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("scalpnet", backbone="tiny", image_size=64).eval()


def test_ensemble_outputs_are_the_mean_of_its_members(tmp_path: Path) -> None:
    members = [_tiny(0), _tiny(1), _tiny(2)]
    ensemble = ensemble_of(members).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = ensemble(x)
        outs = [m(x) for m in members]
    for key, value in got.items():
        assert value.shape == outs[0][key].shape
        torch.testing.assert_close(value, sum(o[key] for o in outs) / 3)
    assert not torch.equal(got["stage"], outs[0]["stage"])
    save_checkpoint(tmp_path, ensemble, inference_meta(ensemble, input_size=64))
    loaded, meta = load_checkpoint(tmp_path)
    assert isinstance(loaded, ScalpEnsemble) and len(loaded.members) == 3
    assert meta["architecture"]["kwargs"]["member"]["kwargs"]["backbone"] == "tiny"
    with torch.no_grad():
        again = loaded.eval()(x)
    for key in got:
        torch.testing.assert_close(again[key], got[key], rtol=0, atol=0)


def test_ensemble_refuses_mixed_or_too_few_members() -> None:
    other = create_model("scalpnet", backbone="tiny", image_size=64, dropout=0.1)
    with pytest.raises(ValueError, match="share one architecture"):
        ensemble_of([_tiny(0), other])
    with pytest.raises(ValueError, match="at least 2 models"):
        ensemble_of([_tiny(0)])
    with pytest.raises(ValueError, match="has none"):
        create_model("scalpnet_ensemble", members=2, pretrained=True,
                     member={"name": "scalpnet", "kwargs": {"backbone": "tiny"}})


def test_ensemble_scores_through_the_predictor(cv_run: Path, manifest: Path) -> None:
    from scalpscan.inference import Predictor
    from scalpscan.inference.quality import QualityThresholds

    # The hand-made 64 px photos are below the clinic quality gate; judge them anyway.
    gate = QualityThresholds(min_side=32, dark_highlight=0, blur_variance=0)
    predictor = Predictor.load(cv_run, quality=gate)
    row = read_manifest(manifest)[0]
    prediction = predictor.predict(row.image)
    assert prediction.status == "ok", prediction.error
    assert prediction.stage in range(1, 8)
    assert prediction.view in ("front", "top", "back", "left", "right")


# --- cross-validation --------------------------------------------------------------------


def test_every_fold_validates_on_persons_it_never_trained_on(cv_run: Path, manifest: Path) -> None:
    rows = read_manifest(manifest)
    state = json.loads((cv_run / CV_FILE).read_text())
    assert state["finished"] is True and state["done"] == list(range(FOLDS))
    assert sorted(state["fold_seconds"]) == [str(k) for k in range(1, FOLDS + 1)]
    seen_in_val: list[str] = []
    for fold in range(1, FOLDS + 1):
        train = {r.subject for r in read_manifest(cv_run / "splits" / f"fold_{fold}.train.csv")}
        val = {r.subject for r in read_manifest(cv_run / "splits" / f"fold_{fold}.val.csv")}
        assert val and not train & val and train | val == {r.subject for r in rows}
        assert all(state["subjects"][s] == fold - 1 for s in val)
        seen_in_val += sorted(val)
        assert (cv_run / f"fold_{fold}" / "model.safetensors").is_file()
    assert sorted(seen_in_val) == sorted({r.subject for r in rows})


def test_out_of_fold_metrics_cover_every_photo_once(cv_run: Path, manifest: Path) -> None:
    rows = read_manifest(manifest)
    oof = json.loads((cv_run / OOF_DIR / "metrics.json").read_text())
    assert oof["photos"] == len(rows) and oof["persons"] == len({r.subject for r in rows})
    assert oof["metrics"]["n"] == len(rows)
    assert oof["metrics"]["stage"]["n"] == sum(r.stage is not None for r in rows)
    assert "ci" in oof["metrics"]["stage"]
    assert len(oof["per_fold"]["stage_accuracy"]["folds"]) == FOLDS
    assert (cv_run / OOF_DIR / "stage_confusion.png").is_file()


def test_out_of_fold_outputs_come_back_in_manifest_order(cv_run: Path, manifest: Path,
                                                          tmp_path: Path) -> None:
    from scalpscan.training.crossval import out_of_fold
    from scalpscan.training.metrics import compute_metrics

    preds, kwargs = out_of_fold(cv_run)
    rows = read_manifest(manifest)
    assert list(preds.index) == list(range(len(rows)))
    assert preds.subjects == [r.subject for r in rows]
    saved = json.loads((cv_run / OOF_DIR / "metrics.json").read_text())["metrics"]
    again = compute_metrics(preds, **kwargs)
    for key in ("accuracy", "mae", "qwk"):
        assert again["stage"][key] == pytest.approx(saved["stage"][key])
    with pytest.raises(TrainingError, match="not a finished cross-validation"):
        out_of_fold(tmp_path)


def test_the_ensemble_is_the_fold_models_and_is_calibrated(cv_run: Path, manifest: Path) -> None:
    meta = json.loads((cv_run / "model.json").read_text())
    assert meta["architecture"]["name"] == "scalpnet_ensemble"
    assert meta["architecture"]["kwargs"]["members"] == FOLDS
    assert meta["config"]["folds"] == FOLDS and len(meta["fold_epochs"]) == FOLDS
    assert meta["temperature"]["stage"] != 1.0  # fitted on the out-of-fold outputs
    assert meta["metrics"]["oof"]["n"] == len(read_manifest(manifest))
    weights = load_file(cv_run / "model.safetensors")
    for fold in range(FOLDS):
        member = load_file(cv_run / f"fold_{fold + 1}" / "model.safetensors")
        for key, value in member.items():
            assert torch.equal(weights[f"members.{fold}.{key}"], value)
    assert not list(cv_run.rglob("*.pt")) and not list(cv_run.rglob("*.pkl"))
    result = evaluate_run(cv_run, manifest, ci_draws=0)
    assert result["metrics"]["n"] == len(read_manifest(manifest))


class _MachineLost(Exception):
    """Stands in for a crash or a killed job in the middle of a fold."""


def test_an_interrupted_cross_validation_resumes_to_the_same_ensemble(
        cv_run: Path, manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    real_fit = trainer.fit
    calls: list[str] = []

    def failing_fit(config, **kwargs):
        calls.append(Path(config.out).name)
        if calls == ["fold_1", "fold_2"]:
            raise _MachineLost  # the machine went away during fold 2
        return real_fit(config, **kwargs)

    monkeypatch.setattr("scalpscan.training.trainer.fit", failing_fit)
    with pytest.raises(_MachineLost):
        cross_validate(_config(manifest, out), log=lambda _m: None)
    assert json.loads((out / CV_FILE).read_text())["done"] == [0]
    assert not (out / "model.json").exists()
    with pytest.raises(TrainingError, match="already holds a run"):
        cross_validate(_config(manifest, out), log=lambda _m: None)
    calls.clear()
    cross_validate(_config(manifest, out), resume=True, log=lambda _m: None)
    assert calls == ["fold_2", "fold_3"]  # fold 1 was kept, not trained again
    theirs, ours = load_file(cv_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert torch.equal(theirs[key], ours[key]), key


def test_resume_refuses_changed_data_and_overwrite_replaces(
        cv_run: Path, manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cross_validate(_config(manifest, out, epochs=1), log=lambda _m: None)
    other = make_photos(tmp_path / "other", subjects=7, views=3, seed=5)
    with pytest.raises(TrainingError, match="changed since the run was interrupted"):
        cross_validate(_config(other, out), resume=True, log=lambda _m: None)
    (out / "fold_1" / "stale.txt").write_text("left over")
    cross_validate(_config(manifest, out, folds=2), overwrite=True, log=lambda _m: None)
    assert not (out / "fold_3").exists() and not (out / "fold_1" / "stale.txt").exists()
    assert json.loads((out / "model.json").read_text())["architecture"]["kwargs"]["members"] == 2


def test_train_extra_joins_every_fold_but_never_a_held_out_one(
        manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_photos(tmp_path / "extra", subjects=2, views=3, seed=7)
    extra = renamed_persons(made, made.parent / "extra.csv", "R")
    other = renamed_persons(made, made.parent / "other.csv", "Q")
    out = tmp_path / "run"
    real_fit = trainer.fit

    def failing_fit(config, **kwargs):
        if Path(config.out).name == "fold_2":
            raise _MachineLost
        return real_fit(config, **kwargs)

    monkeypatch.setattr("scalpscan.training.trainer.fit", failing_fit)
    with pytest.raises(_MachineLost):
        cross_validate(_config(manifest, out, train_extra=str(extra)), log=lambda _m: None)
    monkeypatch.setattr("scalpscan.training.trainer.fit", real_fit)
    with pytest.raises(TrainingError, match="train extra fingerprint changed"):
        cross_validate(_config(manifest, out, train_extra=str(other)), resume=True,
                       log=lambda _m: None)
    cross_validate(_config(manifest, out, train_extra=str(extra)), resume=True,
                   log=lambda _m: None)

    extras = {r.subject for r in read_manifest(extra)}
    for fold in range(1, FOLDS + 1):
        assert not extras & {r.subject for r in read_manifest(
            out / "splits" / f"fold_{fold}.val.csv")}
        trained = len(read_manifest(out / "splits" / f"fold_{fold}.train.csv")) + len(extras) * 3
        with (out / f"fold_{fold}" / LOG_FILE).open() as handle:
            assert int(next(csv.DictReader(handle))["train_photos"]) == trained
    oof = json.loads((out / OOF_DIR / "metrics.json").read_text())
    assert oof["photos"] == len(read_manifest(manifest))
    assert not extras & set(json.loads((out / CV_FILE).read_text())["subjects"])


def test_too_few_persons_for_the_folds(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="cannot fill 7 folds"):
        cross_validate(_config(manifest, tmp_path / "run", folds=7), log=lambda _m: None)


def test_train_command_runs_and_resumes_cross_validation(manifest: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from scalpscan.scripts.cli import main

    out = tmp_path / "run"
    argv = ["train", "--data", str(manifest), "--out", str(out), "--backbone", "tiny",
            "--image-size", "64", "--epochs", "1", "--folds", "2", "--no-progress",
            "--set", "batch_size=4", "--set", "threads=1"]
    assert main(argv) == 0
    assert "out-of-fold" in capsys.readouterr().out
    assert main(argv) == 2  # a second fresh run into the same folder is refused
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "finished before; kept" in capsys.readouterr().out
    assert main(["train", "--data", str(manifest), "--val", str(manifest), "--out",
                 str(tmp_path / "x"), "--folds", "2", "--backbone", "tiny"]) == 2
    assert "folds and val both set" in capsys.readouterr().err


def test_the_ensemble_exports_to_onnx_with_the_same_outputs(cv_run: Path, tmp_path: Path) -> None:
    from scalpscan.inference import Predictor
    from scalpscan.inference.export import export_onnx

    path = export_onnx(cv_run, tmp_path / "ensemble.onnx")  # checks ORT against PyTorch
    batch = torch.randn(2, 3, 64, 64)
    eager = Predictor.load(cv_run).forward(batch)
    onnx = Predictor.load(path).forward(batch.numpy())
    for key, value in eager.items():
        np.testing.assert_allclose(onnx[key], value, atol=1e-4)


def test_out_of_fold_photos_keep_their_manifest_rows(cv_run: Path, manifest: Path) -> None:
    from scalpscan.training.crossval import _oof_predictions

    rows = read_manifest(manifest)
    assignment = json.loads((cv_run / CV_FILE).read_text())["subjects"]
    preds, models, _ = _oof_predictions(cv_run, rows, assignment, FOLDS, torch.device("cpu"))
    assert sorted(preds.index.tolist()) == list(range(len(rows))) and len(models) == FOLDS
    assert [rows[i].subject for i in preds.index] == preds.subjects
    assert [rows[i].stage for i in preds.index] == [
        None if s < 0 else s + 1 for s in preds.stage.tolist()]
    oof = json.loads((cv_run / OOF_DIR / "metrics.json").read_text())
    assert {v: m["n"] for v, m in oof["by"]["view"].items()} == dict(Counter(r.view for r in rows))


def test_an_ensemble_run_is_not_recalibrated_or_fine_tuned_as_one_model(
        cv_run: Path, manifest: Path, tmp_path: Path) -> None:
    from scalpscan.training.evaluation import recalibrate_run
    from scalpscan.training.trainer import fit

    with pytest.raises(TrainingError, match="calibrated on its out-of-fold outputs"):
        recalibrate_run(cv_run)
    config = load_config(None, data=str(manifest), out=str(tmp_path / "ft"), backbone="tiny",
                         image_size=64, epochs=1, progress=False, init_from=str(cv_run))
    with pytest.raises(TrainingError, match="start from one of its fold runs"):
        fit(config, log=lambda _m: None)


# --- two cross-validations on the same folds ------------------------------------------------


@pytest.fixture(scope="module")
def cv_run_b(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second cross-validation on the same folds (same data, folds and seed), another recipe."""
    out = tmp_path_factory.mktemp("cv_b") / "run"
    cross_validate(_config(manifest, out, epochs=2, lr=3e-3), log=lambda _m: None)
    return out


def test_two_cross_validations_compare_out_of_fold_person_by_person(
        cv_run: Path, cv_run_b: Path, manifest: Path, tmp_path: Path) -> None:
    from scalpscan.training.evaluation import compare_cross_validations

    rows = read_manifest(manifest)
    result = compare_cross_validations(cv_run, cv_run_b, out_dir=tmp_path / "cmp", ci_draws=50)
    assert result["out_of_fold"] and result["folds"] == FOLDS and result["on_data"] is None
    assert result["photos"] == len(rows) and result["persons"] == len({r.subject for r in rows})
    # A's side is A's own out-of-fold figures, under its ensemble's calibration.
    saved = json.loads((cv_run / OOF_DIR / "metrics.json").read_text())["metrics"]
    assert result["a"]["metrics"]["stage"]["accuracy"] == pytest.approx(saved["stage"]["accuracy"])
    accuracy = result["difference"]["stage"]["accuracy"]
    assert accuracy["difference"] == pytest.approx(accuracy["b"] - accuracy["a"])
    assert accuracy["ci"][0] <= accuracy["difference"] <= accuracy["ci"][1]
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["folds"] == FOLDS
    # With a manifest, the two ensembles are compared on it too.
    both = compare_cross_validations(cv_run, cv_run_b, manifest, ci_draws=20)
    assert both["on_data"]["photos"] == len(rows) and both["on_data"]["b"]["model"] == str(cv_run_b)


def test_cross_validations_on_other_folds_or_unfinished_are_refused(cv_run: Path,
                                                                    tmp_path: Path) -> None:
    import shutil

    from scalpscan.training.evaluation import compare_cross_validations

    other = tmp_path / "other"
    shutil.copytree(cv_run, other)
    state = json.loads((other / CV_FILE).read_text())
    folds = state["subjects"]  # two persons of different folds swap folds
    first = next(iter(folds))
    second = next(person for person in folds if folds[person] != folds[first])
    folds[first], folds[second] = folds[second], folds[first]
    (other / CV_FILE).write_text(json.dumps(state))
    with pytest.raises(TrainingError, match="its folds are not those of"):
        compare_cross_validations(cv_run, other)
    with pytest.raises(TrainingError, match="not a finished cross-validation"):
        compare_cross_validations(cv_run, tmp_path / "nothing")


def test_evaluate_compares_cross_validations_from_the_command_line(
        cv_run: Path, cv_run_b: Path, manifest: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from scalpscan.scripts.cli import main

    out = tmp_path / "cmp"
    assert main(["evaluate", "--model", str(cv_run), "--compare", str(cv_run_b), "--out-of-fold",
                 "--out", str(out), "--ci", "20", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"Out of fold ({FOLDS} folds" in printed and "stage acc" in printed
    assert (out / "compare.json").is_file()
    assert main(["evaluate", "--model", str(cv_run), "--compare", str(cv_run_b), "--out-of-fold",
                 "--data", str(manifest), "--ci", "20", "--no-progress",
                 "--out", str(out)]) == 0
    assert "The two ensembles on" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(cv_run), "--out-of-fold"]) == 2
    assert "give --compare RUN_B" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(cv_run), "--compare", str(cv_run_b)]) == 2
    assert "--data MANIFEST is required" in capsys.readouterr().err
