"""Predictor: loading, preprocessing from model.json, decoding, flip / rotation TTA, safe weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scalpscan.data.vocab import CONDITIONS, OUTPUTS, STAGES, VIEW_MIRROR, VIEWS, ZONES
from scalpscan.inference.decoding import Geometry, decode_outputs
from scalpscan.inference.predictor import ROW_FIELDS, Predictor
from scalpscan.models import CheckpointError, create_model, inference_meta, save_checkpoint
from scalpscan.models.tta import flip_outputs, tta_outputs

SIDE = 64


def _photo(height: int = 160, width: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 220, size=(height, width, 3), dtype=np.uint8)


def test_load_reads_preprocessing_from_model_json(run_dir: Path) -> None:
    predictor = Predictor.load(run_dir)
    assert isinstance(predictor.model, torch.nn.Module)
    assert predictor.input_size == SIDE
    assert Predictor.load(run_dir / "model.safetensors").model_name == predictor.model_name
    array, geometry = predictor.transform(_photo(100, 200))
    assert array.shape == (3, SIDE, SIDE) and array.dtype == np.float32
    # 200x100 letterboxed into 64x64: 64x32, centred vertically.
    assert geometry.scale_x == pytest.approx(SIDE / 200) and geometry.scale_y == pytest.approx(SIDE / 200)
    assert (geometry.pad_x, geometry.pad_y) == (0.0, 16.0)


def test_predict_accepts_path_pil_and_array(run_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor.load(run_dir)
    photo = _photo()
    Image.fromarray(photo).save(tmp_path / "P7_top.png")
    rows = [
        predictor.predict(tmp_path / "P7_top.png").to_row(),
        predictor.predict(Image.fromarray(photo)).to_row(),
        predictor.predict(photo).to_row(),
    ]
    assert rows[0]["image"] == str(tmp_path / "P7_top.png") and rows[1]["image"] is None
    for row in rows:
        # every field in order; the mask paths only when masks were saved
        assert list(row) == [f for f in ROW_FIELDS if f != "masks"]
        assert row["status"] == "ok" and row["error"] is None
        assert (row["width"], row["height"]) == (128, 160)
        assert set(row["conditions"]) == set(CONDITIONS) and set(row["zones"]) == set(ZONES)
        assert row["stage"] in STAGES and row["view"] in VIEWS
        assert sum(row["stage_probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert row["assessment"]["decision"] in {"candidate", "caution", "not_indicated", "review"}
        assert row["model"]["id"] == predictor.model_name
    assert rows[0]["conditions"] == rows[1]["conditions"] == rows[2]["conditions"]


def test_unreadable_and_poor_photos_are_rows_not_crashes(run_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor.load(run_dir)
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    error = predictor.predict(tmp_path / "x.jpg")
    assert error.status == "error" and "x.jpg" in error.error and error.conditions is None
    dark = predictor.predict(np.zeros((200, 200, 3), np.uint8))
    assert dark.status == "recapture" and dark.error.startswith("too dark")


def test_thresholds_and_temperature_are_applied(run_dir: Path) -> None:
    base = decode_outputs(
        {
            "conditions": np.array([[2.0, -2.0, 0.2]]),
            "stage": np.array([[3.0, 2.0, 0.5, -0.5, -2.0, -3.0]]),
            "view": np.array([[0.0, 3.0, 0.0, 0.0, 0.0]]),
            "zones": np.full((1, 6, 4, 4), -5.0),
            "hairloss": np.full((1, 3, 4, 4), -5.0),
        },
        {"input_size": 16, "thresholds": {"thinning": 0.9, "alopecia_patch": 0.1, "transplant_scar": 0.5}},
        [Geometry(16, 16, 1.0, 1.0)],
    )[0]
    assert base["findings"] == ["alopecia_patch", "transplant_scar"]  # 0.88 < 0.9; 0.12 >= 0.1
    assert base["stage"] == 4 and base["view"] == "top"
    hot = decode_outputs(
        {
            "conditions": np.array([[2.0, -2.0, 0.2]]),
            "stage": np.array([[3.0, 2.0, 0.5, -0.5, -2.0, -3.0]]),
            "view": np.array([[0.0, 3.0, 0.0, 0.0, 0.0]]),
            "zones": np.full((1, 6, 4, 4), -5.0),
            "hairloss": np.full((1, 3, 4, 4), -5.0),
        },
        {"input_size": 16, "temperature": {"conditions": 100.0, "stage": 1.0, "view": 100.0}},
        [Geometry(16, 16, 1.0, 1.0)],
    )[0]
    assert abs(hot["conditions"]["thinning"] - 0.5) < 0.01
    assert max(hot["view_probabilities"].values()) < 0.21


def test_stage_is_monotone_even_for_disordered_logits() -> None:
    row = decode_outputs(
        {
            "conditions": np.zeros((1, 3)),
            "stage": np.array([[-1.0, 4.0, 4.0, -3.0, -3.0, -3.0]]),  # P(>1) < P(>2): disordered
            "view": np.zeros((1, 5)),
            "zones": np.zeros((1, 6, 2, 2)) - 9,
            "hairloss": np.zeros((1, 3, 2, 2)) - 9,
        },
        {"input_size": 8},
        [Geometry(8, 8, 1.0, 1.0)],
    )[0]
    assert row["stage"] == 1  # cumulative probabilities made non-increasing first
    assert min(row["stage_probabilities"]) >= 0 and sum(row["stage_probabilities"]) == pytest.approx(1.0)


def test_zone_boxes_are_in_photo_pixels_and_loss_fraction_counts_the_zone() -> None:
    # A 200x100 photo letterboxed into 64x64 sits in rows 16..48; masks at 16x16 (stride 4).
    zones = np.full((1, 6, 16, 16), -5.0)
    zones[0, ZONES.index("crown"), 4:8, 2:6] = 5.0  # network px x 8..24, y 16..32
    loss = np.full((1, 3, 16, 16), -5.0)
    loss[0, 0, 4:6, 2:6] = 5.0  # half the crown
    row = decode_outputs(
        {"conditions": np.zeros((1, 3)), "stage": np.zeros((1, 6)), "view": np.zeros((1, 5)), "zones": zones, "hairloss": loss},
        {"input_size": 64},
        [Geometry(width=200, height=100, scale_x=0.32, scale_y=0.32, pad_x=0.0, pad_y=16.0)],
    )[0]
    crown = row["zones"]["crown"]
    assert crown["visible"] and crown["box"] == [25, 0, 75, 50]
    assert crown["loss_fraction"] == pytest.approx(0.5)
    assert row["zones"]["hairline"] == {"visible": False, "box": None, "loss_fraction": None}


def test_flip_swaps_left_right_views_and_temples() -> None:
    zones = np.zeros((1, 6, 2, 3))
    zones[0, ZONES.index("temple_left"), :, 0] = 1.0
    outputs = {
        "conditions": np.zeros((1, 3)),
        "stage": np.zeros((1, 6)),
        "view": np.eye(5)[[VIEWS.index("left")]],
        "zones": zones,
        "hairloss": np.arange(6, dtype=float).reshape(1, 1, 2, 3).repeat(3, 1),
    }
    flipped = flip_outputs(outputs)
    assert VIEWS[int(flipped["view"][0].argmax())] == "right"
    assert flipped["zones"][0, ZONES.index("temple_right"), :, 2].tolist() == [1.0, 1.0]
    assert flipped["zones"][0, ZONES.index("temple_left")].sum() == 0
    assert flipped["hairloss"][0, 0, 0].tolist() == [2.0, 1.0, 0.0]


def test_tta_averages_with_the_mirrored_photo(run_dir: Path) -> None:
    plain, tta = Predictor.load(run_dir), Predictor.load(run_dir, tta=True)
    assert tta.tta == "flip" and plain.tta is None
    batch = torch.from_numpy(np.stack([plain.transform(_photo(seed=s))[0] for s in range(2)]))
    a, b = plain.forward(batch), plain.forward(batch.flip(-1))
    mirrored = flip_outputs(b)
    got = tta.forward(batch)
    named = Predictor.load(run_dir, tta="flip").forward(batch)
    for key in a:
        np.testing.assert_allclose(got[key], (a[key] + mirrored[key]) / 2, atol=1e-5)
        np.testing.assert_array_equal(named[key], got[key])


def _square_batch(predictor: Predictor, n: int = 2) -> np.ndarray:
    # Square photos fill the square input, so turning the batch turns the photos.
    return np.stack([predictor.transform(_photo(64, 64, seed=s))[0] for s in range(n)])


def _turn(outputs: dict[str, np.ndarray], turns: int) -> dict[str, np.ndarray]:
    """Outputs with the masks turned counter-clockwise (views and temples left alone)."""
    return {**outputs, **{key: np.rot90(outputs[key], turns, axes=(-2, -1)) for key in ("zones", "hairloss")}}


def _assert_outputs_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=key)


def test_rot_tta_is_the_mean_of_the_four_turns_turned_back(run_dir: Path) -> None:
    plain, rot = Predictor.load(run_dir), Predictor.load(run_dir, tta="rot")
    batch = _square_batch(plain)
    passes = [_turn(plain.forward(np.ascontiguousarray(np.rot90(batch, k, axes=(-2, -1)))), -k) for k in range(4)]
    expected = {key: np.mean([p[key] for p in passes], axis=0) for key in passes[0]}
    _assert_outputs_close(rot.forward(batch), expected)
    _assert_outputs_close(rot.forward(torch.from_numpy(batch)), expected)  # tensors as the scorer gives them


@pytest.mark.parametrize("mode, mirror", [("rot", False), ("d4", False), ("d4", True)])
def test_rotation_tta_gives_a_turned_photo_the_turned_outputs(run_dir: Path, mode: str, mirror: bool) -> None:
    # A quarter turn (after a mirror, for d4) of the photo: the same stage and conditions,
    # the same view (left and right swapped by the mirror) and the masks turned likewise.
    plain, tta = Predictor.load(run_dir), Predictor.load(run_dir, tta=mode)
    batch = _square_batch(plain)
    moved = batch[..., ::-1] if mirror else batch
    moved = np.ascontiguousarray(np.rot90(moved, 1, axes=(-2, -1)))

    def expected_for_moved(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _turn(flip_outputs(outputs) if mirror else outputs, 1)

    got, expected = tta.forward(moved), expected_for_moved(tta.forward(batch))
    _assert_outputs_close(got, expected)
    if mirror:
        np.testing.assert_allclose(got["view"], tta.forward(batch)["view"][:, list(VIEW_MIRROR)], atol=1e-5)
    # Without TTA the untrained network does not do this by itself: the mapping back is tested.
    bare, bare_expected = plain.forward(moved), expected_for_moved(plain.forward(batch))
    for key in ("stage", "view", "zones"):
        assert not np.allclose(bare[key], bare_expected[key], atol=1e-4), key


@pytest.mark.parametrize("mode", ["flip", "rot", "d4"])
def test_training_tta_on_tensors_equals_the_predictor_tta_on_arrays(run_dir: Path, mode: str) -> None:
    # Evaluation averages torch outputs of torch batches; the Predictor NumPy outputs of
    # NumPy batches (ONNX). Both go through models.tta, so a metric measured with --tta is
    # the model a clinic scores with --tta.
    plain, tta = Predictor.load(run_dir), Predictor.load(run_dir, tta=mode)
    batch = _square_batch(plain)
    with torch.inference_mode():
        got = tta_outputs(plain.model, torch.from_numpy(batch), mode)
    assert all(isinstance(value, torch.Tensor) for value in got.values())
    _assert_outputs_close({key: value.numpy() for key, value in got.items()}, tta.forward(batch))


def test_tta_outputs_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="'spin'.*flip, rot, d4"):
        tta_outputs(lambda batch: {}, np.zeros((1, 3, 4, 4), np.float32), "spin")


def _raw_outputs(stage: float = 4.0) -> dict[str, np.ndarray]:
    zones = np.full((1, 6, 4, 4), -5.0)
    zones[0, ZONES.index("crown"), :2] = 5.0
    hairloss = np.full((1, 3, 4, 4), 5.0)
    return {"conditions": np.array([[3.0, 3.0, -3.0]]), "stage": np.full((1, 6), -stage) + np.arange(6, 0, -1),
            "view": np.array([[0.0, 3.0, 0.0, 0.0, 0.0]]), "zones": zones, "hairloss": hairloss}


def test_outputs_not_assessed_are_none_never_guessed() -> None:
    meta, geometry = {"input_size": 16, "thresholds": {"alopecia_patch": 0.3}}, [Geometry(16, 16, 1.0, 1.0)]
    full = decode_outputs(_raw_outputs(), meta, geometry)[0]
    assert full["findings"] == ["thinning", "alopecia_patch"] and full["stage"] is not None
    assert full["zones"]["crown"]["loss_fraction"] == 1.0
    row = decode_outputs(_raw_outputs(), meta, geometry, not_assessed=["alopecia_patch", "stage", "hairloss"])[0]
    assert row["conditions"]["alopecia_patch"] is None and row["conditions"]["thinning"] == full["conditions"]["thinning"]
    assert "alopecia_patch" not in row["thresholds"] and row["findings"] == ["thinning"]
    assert row["stage"] is None and row["stage_probabilities"] is None
    assert row["zones"]["crown"]["visible"] and row["zones"]["crown"]["loss_fraction"] is None
    assert row["view"] == "top"
    bare = decode_outputs(_raw_outputs(), meta, geometry, not_assessed=["zones", "view"])[0]
    assert bare["zones"] is None and bare["view"] is None and bare["view_probabilities"] is None
    with pytest.raises(ValueError, match="'baldness'"):
        decode_outputs(_raw_outputs(), meta, geometry, not_assessed=["baldness"])


def test_scored_rows_carry_none_for_what_the_model_does_not_assess(tmp_path: Path) -> None:
    # A model whose patch and stage heads no label trained: `score` and `predict` alike give
    # None for them, never the untrained head's numbers.
    model = create_model("scalpnet", backbone="tiny", image_size=SIDE)
    meta = inference_meta(model, input_size=SIDE)
    meta["heads"] = {output: {"trained": {"real": 10}, "validated": {"real": 5}} for output in OUTPUTS}
    meta["heads"]["alopecia_patch"] = meta["heads"]["stage"] = {"trained": {}, "validated": {}}
    save_checkpoint(tmp_path / "run", model, meta)
    Image.fromarray(_photo()).save(tmp_path / "P1_top.png")
    predictor = Predictor.load(tmp_path / "run")
    for row in [*predictor.score([tmp_path / "P1_top.png"]), predictor.predict(tmp_path / "P1_top.png").to_row()]:
        assert row["status"] == "ok" and row["not_assessed"] == ["alopecia_patch", "stage"]
        assert row["conditions"]["alopecia_patch"] is None and row["conditions"]["thinning"] is not None
        assert "alopecia_patch" not in row["thresholds"] and "alopecia_patch" not in row["findings"]
        assert row["stage"] is None and row["stage_probabilities"] is None


@pytest.mark.parametrize("bad", ["rotate", "D4", "", 2])
def test_an_unknown_tta_mode_is_refused_with_the_allowed_ones(run_dir: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=rf"tta={bad!r}.*'flip', 'rot', 'd4'"):
        Predictor.load(run_dir, tta=bad)
    plain = Predictor.load(run_dir)
    with pytest.raises(ValueError, match=rf"tta={bad!r}"):
        Predictor(plain.model, plain.meta, lambda batch: {}, model_name="x", tta=bad)
    assert Predictor.load(run_dir, tta=False).tta is None
    assert Predictor.load(run_dir, tta="d4").tta == "d4"


def test_pickled_weights_are_refused_without_running_them(tmp_path: Path, run_dir: Path) -> None:
    marker = tmp_path / "pwned"

    class _Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "model.json").write_text((run_dir / "model.json").read_text())
    (bad / "model.safetensors").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="pickle"):
        Predictor.load(bad)
    with pytest.raises(CheckpointError):
        Predictor.load(bad / "model.safetensors")
    assert not marker.exists()


def test_missing_model_and_wrong_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found"):
        Predictor.load(tmp_path / "nope")
    model = create_model("scalpnet", backbone="tiny", image_size=SIDE)
    meta = inference_meta(model, input_size=SIDE)
    meta["vocab"] = {**meta["vocab"], "zones": ["crown", "hairline"]}  # type: ignore[dict-item]
    save_checkpoint(tmp_path / "odd", model, meta)
    with pytest.raises(ValueError, match="vocabulary zones"):
        Predictor.load(tmp_path / "odd")


def test_big_photos_are_decoded_reduced_but_reported_in_their_own_pixels(run_dir: Path, tmp_path: Path) -> None:
    predictor = Predictor.load(run_dir)
    photo = _photo(1000, 1400, seed=5)
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95)
    item = predictor.prepare(tmp_path / "big.jpg")
    assert (item["width"], item["height"]) == (1400, 1000)
    geometry = item["geometry"]
    # The whole 1400 px width maps onto the 64 px network input.
    assert geometry.scale_x * 1400 == pytest.approx(SIDE, abs=0.5)
    row = predictor.predict(tmp_path / "big.jpg").to_row()
    assert (row["width"], row["height"]) == (1400, 1000)
    for zone in row["zones"].values():
        if zone["visible"]:
            assert 0 <= zone["box"][0] <= zone["box"][2] <= 1400 and 0 <= zone["box"][1] <= zone["box"][3] <= 1000


def test_predict_puts_the_libraries_warnings_into_the_row(run_dir: Path, tmp_path: Path, capfd) -> None:
    # A JPEG whose EXIF block is cut short: Pillow warns "Corrupt EXIF data".
    path = tmp_path / "P001_exif.jpg"
    Image.fromarray(_photo()).save(path, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")
    prediction = Predictor.load(run_dir).predict(path)
    assert prediction.status == "ok"
    assert any("Corrupt EXIF data" in w for w in prediction.warnings)
    assert prediction.to_row()["warnings"] == prediction.warnings
    assert "EXIF" not in capfd.readouterr().err
    # A clean photo has none.
    clean = tmp_path / "P002.jpg"
    Image.fromarray(_photo(seed=1)).save(clean, "JPEG")
    assert Predictor.load(run_dir).predict(clean).warnings == []
