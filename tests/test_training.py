"""The training pipeline end to end on tiny hand-made photos (tiny backbone, 64 px).

Covers the config (file, overrides, errors), exact resume after an interruption, early
stopping, and a train -> evaluate round trip whose run folder holds no pickle.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from scalpscan.data.manifest import read_manifest
from scalpscan.data.splits import split_rows
from scalpscan.data.vocab import MANIFEST_COLUMNS, VIEWS
from scalpscan.training.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
)
from scalpscan.training.datasets import data_fingerprint
from scalpscan.training.errors import TrainingError
from scalpscan.training.evaluation import evaluate_run
from scalpscan.training.optimizer import lr_factor
from scalpscan.training.state import LOG_FILE, RESUME_FILE
from scalpscan.training.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, *, subjects: int = 4, views: int = 3, size: int = 64,
                seed: int = 0) -> Path:
    """Write a small labelled data set (photos, zone/loss masks, manifest); return the manifest.

    Labels are partly unknown on purpose; the photos carry the stage and view in their
    colours so that a network can learn something.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for s in range(subjects):
        stage = 1 + (s * 3) % 7
        for v, view in enumerate(VIEWS[:views]):
            image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            image[..., 0] += np.uint8(25 * stage)
            image[..., 1] += np.uint8(40 * v)
            name = f"s{s}_{view}.png"
            Image.fromarray(image).save(folder / name)
            zones = np.zeros((size, size), np.uint8)
            zones[: size // 2] = 1
            zones[size // 2:, : size // 2] |= 2
            loss = np.zeros((size, size), np.uint8)
            loss[: size // 4] = 1
            Image.fromarray(zones, "L").save(folder / f"zone_{name}")
            Image.fromarray(loss, "L").save(folder / f"loss_{name}")
            records.append([
                name, f"P{s}", view,
                "" if (s + v) % 4 == 0 else str(int(stage > 3)), str(int(v == 1)), "0",
                "" if s == subjects - 1 and v == 0 else str(stage),
                f"zone_{name}" if v != 2 else "", f"loss_{name}",
                ("I", "VI")[s % 2],
            ])
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*MANIFEST_COLUMNS, "skin_tone"])
        writer.writerows(records)
    return manifest


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    return {"train": make_photos(root / "train", subjects=4, seed=0),
            "val": make_photos(root / "val", subjects=2, seed=1)}


def _config(photos: dict[str, Path], out: Path, **values) -> TrainConfig:
    base = dict(data=str(photos["train"]), val=str(photos["val"]), out=str(out),
                backbone="tiny", image_size=64, batch_size=4, epochs=2, progress=False,
                seed=3, warmup_epochs=0.5, threads=1)
    base.update(values)
    return load_config(None, **base)


# --- config ------------------------------------------------------------------------------


def test_default_yaml_matches_the_dataclass_defaults() -> None:
    assert config_to_dict(load_config(DEFAULT_CONFIG_PATH)) == config_to_dict(TrainConfig())


def test_file_then_overrides_with_types(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 7\nlr: 0.01\nloss_weights:\n  zones: 0\n")
    cfg = load_config(path, overrides=["lr=3e-4", "stage_view_weights.front=5",
                                       "pretrained=true", "backbone=tiny"])
    assert cfg.epochs == 7 and cfg.lr == pytest.approx(3e-4)
    assert cfg.loss_weights["zones"] == 0.0 and cfg.loss_weights["stage"] == 1.0
    assert cfg.stage_view_weights["front"] == 5.0 and cfg.stage_view_weights["back"] == 0.5
    assert cfg.pretrained is True and cfg.backbone == "tiny"
    assert apply_overrides(cfg, ["epochs=3"]).epochs == 3
    # Overrides are checked together: one may need another.
    split = load_config(None, val="v.csv")
    assert apply_overrides(split, ["folds=3", "val="]).folds == 3
    with pytest.raises(ConfigError, match="folds and val both set"):
        apply_overrides(split, ["folds=3"])


@pytest.mark.parametrize("override, message", [
    ("epoch=3", "unknown config key 'epoch'"),
    ("epochs=three", "epochs: 'three' is not valid: Input should be a valid integer"),
    ("epochs=2.5", "epochs: 2.5 is not valid: Input should be a valid integer"),
    ("lr=fast", "--set lr=fast: lr: 'fast' is not valid: Input should be a valid number"),
    ("pretrained=maybe", "pretrained: 'maybe' is not valid: Input should be a valid boolean"),
    ("loss_weights.stages=2", "loss_weights.stages: unknown head"),
    ("stage_view_weights.side=1", "stage_view_weights.side: unknown view"),
    ("lr.x=1", "'lr' is a float, it has no sub-keys"),
    ("image_size=100", "image_size: 100 is not valid: Input should be a multiple of 32"),
    ("batch_size=0", "batch_size: 0 is not valid: Input should be greater than or equal to 1"),
    ("mask_resolution=full", "mask_resolution: 'full' is not valid: Input should be 'target' or 'logits'"),
    ("epochs", "expected key=value"),
    ("folds=1", "folds: 1 is not valid: Value error, use 0 (one run) or at least 2"),
    ("loss_weights.zones=-1", "loss_weights.zones: -1 is not valid: Input should be greater"),
    ("device=tpu", "device: 'tpu' is not valid: Value error, use auto, cpu, cuda or cuda:N"),
])
def test_override_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides=[override])


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: epochs: \[1, 2\] is not valid: Input should be a valid integer"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_lr_ratio=0.1) for s in range(21)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert factors[20] == pytest.approx(0.1)


# --- runs --------------------------------------------------------------------------------


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
        photos: dict[str, Path], tmp_path: Path) -> None:
    straight = fit(_config(photos, tmp_path / "straight"), log=lambda _: None)

    def interrupt_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        fit(_config(photos, broken), log=interrupt_after_first_epoch)
    assert (broken / RESUME_FILE).is_file() and not (broken / "last.json").read_text() == ""
    assert json.loads((broken / "last.json").read_text())["epoch"] == 1
    # Scramble the global RNG: the resume must restore it from the file.
    torch.manual_seed(12345)
    np.random.seed(999)
    messages: list[str] = []
    fit(_config(photos, broken), resume=True, log=messages.append)
    assert any(m.startswith("resuming") for m in messages)

    a, b = _tensors(straight / "last.safetensors"), _tensors(broken / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    a, b = _tensors(straight / "model.safetensors"), _tensors(broken / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with (broken / LOG_FILE).open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_same_seed_gives_the_same_cpu_run(photos: dict[str, Path], tmp_path: Path) -> None:
    one = fit(_config(photos, tmp_path / "one", epochs=1, calibrate=False), log=lambda _: None)
    two = fit(_config(photos, tmp_path / "two", epochs=1, calibrate=False), log=lambda _: None)
    a, b = (_tensors(p / "last.safetensors") for p in (one, two))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The resume state holds the same (last) weights.
    state = _tensors(one / RESUME_FILE)
    assert all(torch.equal(a[k], state[f"model.{k}"]) for k in a)


def test_a_fresh_run_never_replaces_an_old_run_unasked(photos: dict[str, Path],
                                                      tmp_path: Path) -> None:
    run = fit(_config(photos, tmp_path / "kept", epochs=1, calibrate=False), log=lambda _: None)
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(TrainingError, match=r"already holds a run.*--overwrite"):
        fit(_config(photos, run, epochs=1, calibrate=False, seed=5), log=lambda _: None)
    assert (run / "model.safetensors").read_bytes() == before


def test_overwrite_replaces_the_old_run_and_starts_a_fresh_log(photos: dict[str, Path],
                                                               tmp_path: Path) -> None:
    run = tmp_path / "again"
    fit(_config(photos, run, epochs=2, calibrate=False), log=lambda _: None)
    fit(_config(photos, run, epochs=1, calibrate=False), overwrite=True, log=lambda _: None)
    with (run / LOG_FILE).open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1"]
    fresh = fit(_config(photos, tmp_path / "fresh", epochs=1, calibrate=False), log=lambda _: None)
    a, b = (_tensors(p / "model.safetensors") for p in (run, fresh))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_stops_when_the_monitor_stalls(photos: dict[str, Path],
                                                      tmp_path: Path) -> None:
    # lr = 0 never changes the weights, so val_loss never improves after the first epoch.
    messages: list[str] = []
    run = fit(_config(photos, tmp_path / "stop", epochs=10, lr=0.0, patience=2,
                      calibrate=False), log=messages.append)
    with (run / LOG_FILE).open() as handle:
        epochs = [row["epoch"] for row in csv.DictReader(handle)]
    assert epochs == ["1", "2", "3"]
    assert any("early stopping" in m for m in messages)
    assert json.loads((run / "model.json").read_text())["epoch"] == 1


def test_train_then_evaluate_round_trip_leaves_no_pickle(photos: dict[str, Path],
                                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--data", str(photos["train"]),
         "--val", str(photos["val"]), "--out", str(run), "--backbone", "tiny",
         "--image-size", "64", "--epochs", "2", "--batch-size", "4", "--no-progress",
         "--set", "loss_weights.view=2", "--set", "seed=5", "--set", "threads=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in run.rglob("*")}
    assert {"model.safetensors", "model.json", "last.safetensors", "last.json", RESUME_FILE,
            "config.yaml", LOG_FILE, "learning_curves.png"} <= names
    assert not [p for p in run.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle")]
    meta = json.loads((run / "model.json").read_text())
    assert meta["config"]["loss_weights"]["view"] == 2.0 and meta["config"]["seed"] == 5
    assert meta["input_size"] == 64 and len(meta["data_fingerprint"]) > 64
    assert set(meta["thresholds"]) == {"thinning", "alopecia_patch", "transplant_scar"}
    assert set(meta["temperature"]) == {"conditions", "stage", "view"}

    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "evaluate", "--model", str(run), "--data",
         str(photos["val"]), "--by", "skin_tone", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "per person" in result.stdout and "by skin_tone" in result.stdout
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["metrics"]["n"] == 6
    assert set(metrics["by"]) == {"view", "skin_tone"}
    assert set(metrics["by"]["skin_tone"]) == {"I", "VI"}
    for png in ("precision_recall.png", "stage_confusion.png", "reliability.png"):
        assert (run / "eval" / png).stat().st_size > 1000
    assert metrics["tta"] is None
    assert metrics["metrics"]["stage"]["ci"]["draws"] == 1000
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "evaluate", "--model", str(run), "--data",
         str(photos["val"]), "--tta", "rot", "--out", str(run / "eval_tta"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "eval_tta" / "metrics.json").read_text())["tta"] == "rot"
    # tta=True (what a bare --tta gives, see below) is still the flip.
    assert evaluate_run(run, photos["val"], ci_draws=0, tta=True)["tta"] == "flip"


@pytest.mark.parametrize("command", ["evaluate", "score"])
def test_a_bare_tta_flag_still_means_flip(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.scripts.cli import build_parser

    parser = build_parser()
    first = ["evaluate", "--model", "m", "--data", "d.csv"] if command == "evaluate" else \
        ["score", "photos/", "--model", "m", "--out", "r.jsonl"]
    assert parser.parse_args(first).tta is None
    assert parser.parse_args([*first, "--tta"]).tta == "flip"
    assert parser.parse_args([*first, "--tta", "d4"]).tta == "d4"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*first, "--tta", "sideways"])
    assert exit_info.value.code == 2
    assert "'sideways'" in capsys.readouterr().err


def test_evaluate_run_refuses_an_unknown_tta_mode(tmp_path: Path) -> None:
    # Refused before the model or the manifest is even looked at.
    with pytest.raises(ValueError, match=r"tta='rotate'.*'flip', 'rot', 'd4'"):
        evaluate_run(tmp_path / "no_run", tmp_path / "no.csv", tta="rotate")


def test_evaluate_refuses_an_unknown_column(photos: dict[str, Path], tmp_path: Path) -> None:

    run = fit(_config(photos, tmp_path / "r", epochs=1, calibrate=False), log=lambda _: None)
    with pytest.raises(TrainingError, match="no such column.*skin_tone"):
        evaluate_run(run, photos["val"], by=["hair_length"])


def test_cli_reports_bad_arguments_with_exit_code_2(photos: dict[str, Path],
                                                    tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--data", str(photos["train"]),
         "--out", str(tmp_path / "x"), "--set", "lr=fast"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--set lr=fast: lr: 'fast' is not valid: Input should be a valid number" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--out", str(tmp_path / "nothing"),
         "--resume"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "config.yaml not found" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--out", str(tmp_path / "x"),
         "--resume", "--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "exclude each other" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "train", "--data", str(photos["train"]),
         "--out", str(tmp_path / "x"), "--train-extra", str(tmp_path / "renders.csv")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"--train-extra {tmp_path / 'renders.csv'}: no such file" in result.stderr


def test_an_unknown_monitor_is_refused_with_the_logged_names(photos: dict[str, Path],
                                                             tmp_path: Path) -> None:

    with pytest.raises(TrainingError, match="monitor='stage_kappa'.*val_stage_qwk"):
        fit(_config(photos, tmp_path / "m", epochs=1, monitor="stage_kappa"), log=lambda _: None)


def _photo_pair(run_dir: Path, tmp_path: Path, first: np.ndarray, second: np.ndarray,
                views: tuple[str, str]):
    """The run's model and a loader over two photos of one person (stage 3, given views)."""
    from scalpscan.data.dataset import ScalpDataset
    from scalpscan.data.manifest import read_manifest
    from scalpscan.data.transforms import build_transforms
    from scalpscan.models import load_checkpoint
    from scalpscan.training.datasets import make_loader

    Image.fromarray(first).save(tmp_path / "a.png")
    Image.fromarray(np.ascontiguousarray(second)).save(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text(",".join(MANIFEST_COLUMNS) + "\n"
                                    f"a.png,P1,{views[0]},,,,3,,\nb.png,P1,{views[1]},,,,3,,\n")
    model, meta = load_checkpoint(run_dir)
    dataset = ScalpDataset(read_manifest(tmp_path / "m.csv"),
                           transform=build_transforms(64, meta["mean"], meta["std"], train=False))
    return model, make_loader(dataset, batch_size=2, train=False, seed=0)


def test_evaluation_tta_treats_a_photo_and_its_mirror_alike(run_dir: Path, tmp_path: Path) -> None:
    # With flip TTA, the mirrored photo gets the same stage and conditions and the swapped
    # view; the untrained model alone (no TTA) does not, so the mapping back is what's tested.
    from scalpscan.data.vocab import VIEW_MIRROR
    from scalpscan.training.engine import evaluate

    photo = np.random.default_rng(4).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    model, loader = _photo_pair(run_dir, tmp_path, photo, photo[:, ::-1], ("left", "right"))
    device = torch.device("cpu")
    _, plain = evaluate(model, loader, device=device)
    _, tta = evaluate(model, loader, device=device, tta=True)
    assert not np.allclose(plain.view_logits[1], plain.view_logits[0][list(VIEW_MIRROR)], atol=1e-4)
    np.testing.assert_allclose(tta.view_logits[1], tta.view_logits[0][list(VIEW_MIRROR)], atol=1e-5)
    np.testing.assert_allclose(tta.stage_logits[1], tta.stage_logits[0], atol=1e-5)
    np.testing.assert_allclose(tta.condition_logits[1], tta.condition_logits[0], atol=1e-5)


@pytest.mark.parametrize("mode, mirror", [("rot", False), ("d4", False), ("d4", True)])
def test_evaluation_rotation_tta_treats_a_photo_and_its_turn_alike(
        run_dir: Path, tmp_path: Path, mode: str, mirror: bool) -> None:
    # A quarter turn (after a mirror, for d4): same stage and conditions, same view (left
    # and right swapped by the mirror); the untrained model alone does not do that.
    from scalpscan.data.vocab import VIEW_MIRROR
    from scalpscan.training.engine import evaluate

    photo = np.random.default_rng(4).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    moved = np.rot90(photo[:, ::-1] if mirror else photo)
    model, loader = _photo_pair(run_dir, tmp_path, photo, moved, ("left", "left"))
    views = list(VIEW_MIRROR) if mirror else slice(None)
    device = torch.device("cpu")
    for tta in (None, mode):
        _, preds = evaluate(model, loader, device=device, tta=tta)
        same = [np.allclose(preds.view_logits[1], preds.view_logits[0][views], atol=1e-5),
                np.allclose(preds.stage_logits[1], preds.stage_logits[0], atol=1e-5),
                np.allclose(preds.condition_logits[1], preds.condition_logits[0], atol=1e-5)]
        assert same == ([True] * 3 if tta else [False] * 3), (tta, same)


def test_evaluation_rot_tta_is_the_mean_of_the_four_turns_turned_back(run_dir: Path) -> None:
    from scalpscan.models import load_checkpoint
    from scalpscan.training.engine import _forward_tta

    model, _ = load_checkpoint(run_dir)
    model.eval()
    images = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        passes = []
        for k in range(4):
            outputs = model(images.rot90(k, dims=(-2, -1)))
            for key in ("zones", "hairloss"):
                outputs[key] = outputs[key].rot90(-k, dims=(-2, -1))
            passes.append(outputs)
        _, got = _forward_tta(model, {"image": images}, torch.device("cpu"), channels_last=False,
                              amp=False, mode="rot")
    assert set(got) == set(passes[0])
    for key in got:
        expected = torch.stack([p[key] for p in passes]).mean(0)
        torch.testing.assert_close(got[key], expected, atol=1e-5, rtol=0, msg=key)


def test_init_from_starts_the_whole_network_from_a_trained_run(photos: dict[str, Path],
                                                               tmp_path: Path) -> None:
    first = fit(_config(photos, tmp_path / "first", epochs=1, calibrate=False), log=lambda _: None)
    # lr = 0 leaves every parameter where it started (batch-norm statistics still move).
    second = fit(_config(photos, tmp_path / "second", epochs=1, calibrate=False, lr=0.0,
                         seed=9, init_from=str(first)), log=lambda _: None)
    a, b = (_tensors(p / "model.safetensors") for p in (first, second))
    learned = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(k.startswith("stage_head") for k in learned)
    assert all(torch.equal(a[k], b[k]) for k in learned)
    with pytest.raises(TrainingError, match=r"backbone 'tiny'.*--backbone tiny"):
        fit(_config(photos, tmp_path / "third", epochs=1, backbone="resnet18",
                    init_from=str(first)), log=lambda _: None)
    with pytest.raises(TrainingError, match=r"init_from: .*nowhere"):
        fit(_config(photos, tmp_path / "fourth", epochs=1, init_from=str(tmp_path / "nowhere")),
            log=lambda _: None)


def renamed_persons(manifest: Path, out: Path, prefix: str) -> Path:
    """A copy of ``manifest`` whose persons are new ones (``prefix`` + the old id)."""
    from scalpscan.data.manifest import read_manifest, write_manifest

    rows = [dataclasses.replace(r, subject=prefix + r.subject) for r in read_manifest(manifest)]
    write_manifest(rows, out)
    return out


def test_train_extra_photos_only_ever_train(photos: dict[str, Path], tmp_path: Path) -> None:
    extra = renamed_persons(photos["train"], photos["train"].parent / "extra.csv", "X")
    run = fit(_config(photos, tmp_path / "extra", epochs=1, calibrate=False,
                      train_extra=str(extra)), log=lambda _: None)
    n = {name: len(read_manifest(path)) for name, path in (*photos.items(), ("extra", extra))}
    with (run / LOG_FILE).open() as handle:
        row = next(csv.DictReader(handle))
    assert int(row["train_photos"]) == n["train"] + n["extra"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["metrics"]["val"]["n"] == n["val"]  # the validation photos alone
    assert meta["config"]["train_extra"] == str(extra)

    # Without --val, the split of --data is the one a run without extras makes.
    split = fit(_config(photos, tmp_path / "split", val="", epochs=1, calibrate=False,
                        train_extra=str(extra)), log=lambda _: None)
    with (split / LOG_FILE).open() as handle:
        assert int(next(csv.DictReader(handle))["train_photos"]) > n["extra"]
    assert json.loads((split / "model.json").read_text())["data_fingerprint"].split(":")[1] == \
        data_fingerprint(split_rows(read_manifest(photos["train"]), (0.8, 0.2),
                                                  seed=3)["val"])


def test_train_extra_sharing_a_person_with_data_is_refused(photos: dict[str, Path],
                                                           tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"manifest.csv: 4 person\(s\) of train_extra are also in"
                                            r".*\(P0, P1, P2, P3\)"):
        fit(_config(photos, tmp_path / "shared", epochs=1, train_extra=str(photos["train"])),
            log=lambda _: None)


def test_compare_runs_scores_two_runs_on_the_same_photos(photos: dict[str, Path], run_dir: Path,
                                                         tmp_path: Path) -> None:
    from scalpscan.models import create_model, inference_meta, save_checkpoint
    from scalpscan.training.evaluation import compare_runs

    torch.manual_seed(7)
    other = create_model("scalpnet", backbone="tiny", image_size=64)
    save_checkpoint(tmp_path / "b", other, inference_meta(other, input_size=64))
    data = photos["train"]
    result = compare_runs(run_dir, tmp_path / "b", data, out_dir=tmp_path / "cmp", ci_draws=200)
    for side, path in (("a", run_dir), ("b", tmp_path / "b")):
        alone = evaluate_run(path, data, ci_draws=0)["metrics"]
        assert result[side]["metrics"]["stage"] == alone["stage"]
    stage = result["difference"]["stage"]
    a, b = (result[side]["metrics"]["stage"]["accuracy"] for side in "ab")
    assert stage["accuracy"]["difference"] == pytest.approx(b - a)
    assert stage["accuracy"]["ci"][0] <= b - a <= stage["accuracy"]["ci"][1]
    assert result["photos"] == len(read_manifest(data)) and result["persons"] == 4
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["difference"]["stage"]["accuracy"]["difference"] == pytest.approx(b - a)
    itself = compare_runs(run_dir, run_dir, data, ci_draws=50)["difference"]["stage"]
    assert all(itself[k]["difference"] == 0 and itself[k]["ci"] == [0, 0]
               for k in ("accuracy", "mae"))

    printed = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "evaluate", "--model", str(run_dir), "--compare",
         str(tmp_path / "b"), "--data", str(data), "--out", str(tmp_path / "cli"), "--ci", "100",
         "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "stage acc" in printed.stdout and "95 % paired interval" in printed.stdout
    assert (tmp_path / "cli" / "compare.json").is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "evaluate", "--model", str(run_dir), "--compare",
         str(tmp_path / "nowhere"), "--data", str(data)], cwd=REPO, capture_output=True,
        text=True, timeout=120)
    assert missing.returncode == 2 and "--compare" in missing.stderr and "nowhere" in missing.stderr
    by = subprocess.run(
        [sys.executable, "-m", "scalpscan.scripts.cli", "evaluate", "--model", str(run_dir), "--compare",
         str(run_dir), "--data", str(data), "--by", "view"], cwd=REPO, capture_output=True,
        text=True, timeout=120)
    assert by.returncode == 2 and "--by" in by.stderr


def test_recalibrate_refits_a_runs_thresholds_and_keeps_its_weights(
        photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scalpscan.scripts.cli import main

    run = fit(_config(photos, tmp_path / "r", epochs=1), log=lambda _: None)
    fitted = json.loads((run / "model.json").read_text())
    weights = load_file(run / "model.safetensors")
    stale = {**fitted, "thresholds": {c: 0.01 for c in fitted["thresholds"]}}
    (run / "model.json").write_text(json.dumps(stale))

    assert main(["train", "--out", str(run), "--recalibrate"]) == 0
    meta = json.loads((run / "model.json").read_text())
    assert meta["thresholds"] == pytest.approx(fitted["thresholds"])
    for condition in meta["thresholds"]:
        figures = meta["heads"][condition]["figures"]
        assert figures["threshold_rule"] == "f1" and figures["real_negatives"] >= 1
    after = load_file(run / "model.safetensors")
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert "thresholds" in capsys.readouterr().out

    assert main(["train", "--out", str(run), "--recalibrate", "--data", str(photos["train"])]) == 2
    assert "leave out --data" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--recalibrate"]) == 2
    assert "model.json not found" in capsys.readouterr().err
