"""Calibration: temperature fixes an over-confident model; thresholds maximise F1 and hold
false findings on untouched real photos."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import f1_score

from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.models.ordinal import ordinal_cumulative, ordinal_index, ordinal_probabilities
from scalpscan.training.calibrate import (
    MIN_REAL_NEGATIVES,
    false_rate_threshold,
    fit_calibration,
    fit_stage_calibration,
    fit_temperature,
    fit_thresholds,
    stage_nll,
    view_nll,
)
from scalpscan.training.metrics import Predictions, binary_ece, compute_metrics, stage_metrics


def _overconfident(n: int = 3000, scale: float = 4.0, seed: int = 0) -> Predictions:
    """Labels drawn from calibrated probabilities; the logits given are ``scale`` times too big."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, len(CONDITIONS)))
    cond_targets = (rng.random(z.shape) < expit(z)).astype(float)
    # Ordinal: a latent score with logistic noise gives a calibrated cumulative model.
    latent = rng.normal(0, 2, size=n)
    cuts = np.linspace(-2.5, 2.5, 6)
    stage = ((latent + rng.logistic(size=n))[:, None] > cuts).sum(1)
    stage_logits = latent[:, None] - cuts
    view_z = rng.normal(0, 2, size=(n, len(VIEWS)))
    view = np.array([rng.choice(len(VIEWS), p=p) for p in softmax(view_z, axis=-1)])
    return Predictions(
        condition_logits=z * scale,
        condition_targets=cond_targets,
        condition_known=np.ones_like(z, dtype=bool),
        stage_logits=stage_logits * scale,
        stage=stage,
        view_logits=view_z * scale,
        view=view,
        zone_counts=np.zeros((n, len(ZONES), 3)),
        zones_known=np.zeros(n, bool),
        hairloss_counts=np.zeros((n, len(CONDITIONS), 3)),
        hairloss_known=np.zeros(n, bool),
        index=np.arange(n),
    )


def test_temperature_recovers_the_overconfidence_factor_and_improves_ece() -> None:
    preds = _overconfident()
    calibration = fit_calibration(preds)
    t = calibration["temperature"]
    for head in ("conditions", "stage", "view"):
        assert t[head] == pytest.approx(4.0, rel=0.15), (head, t)
    before = compute_metrics(preds)
    after = compute_metrics(preds, temperature=t)
    assert after["conditions"]["ece"] < before["conditions"]["ece"] / 2
    assert after["view"]["ece"] < before["view"]["ece"] / 2
    assert after["stage"]["ece"] < before["stage"]["ece"]
    assert after["conditions"]["ece"] < 0.03


def test_temperature_leaves_a_calibrated_model_alone() -> None:
    preds = _overconfident(scale=1.0, seed=1)
    t = fit_calibration(preds)["temperature"]
    assert all(v == pytest.approx(1.0, abs=0.15) for v in t.values()), t


def test_fit_temperature_finds_the_minimum_of_a_known_curve() -> None:
    assert fit_temperature(lambda t: (np.log(t) - np.log(2.5)) ** 2) == pytest.approx(2.5, rel=1e-3)
    # Bounded search: the optimum beyond the range gives the bound.
    assert fit_temperature(lambda t: -t) == pytest.approx(20.0, rel=1e-3)


def test_view_nll_ignores_unknown_views() -> None:
    logits = np.array([[5.0, 0, 0, 0, 0], [0, 0, 0, 0, 9.0]])
    assert view_nll(logits, np.array([0, -1]), 1.0) == pytest.approx(
        -np.log(softmax(logits[:1], axis=-1)[0, 0]))


def test_thresholds_maximise_f1_on_known_labels() -> None:
    rng = np.random.default_rng(2)
    probs = rng.random((400, len(CONDITIONS))) * 0.5  # every score below 0.5
    targets = (probs + rng.normal(0, 0.05, probs.shape) > 0.3).astype(float)
    known = np.ones_like(targets, dtype=bool)
    known[:, 2] = False  # no label at all: keeps 0.5
    thresholds = fit_thresholds(probs, targets, known)
    assert thresholds["transplant_scar"] == 0.5
    for c, name in enumerate(CONDITIONS[:2]):
        best = f1_score(targets[:, c], probs[:, c] >= thresholds[name])
        assert best > f1_score(targets[:, c], probs[:, c] >= 0.5)
        for other in np.linspace(0.05, 0.45, 41):
            assert best >= f1_score(targets[:, c], probs[:, c] >= other) - 1e-9


def test_binary_ece_of_overconfident_logits_is_large() -> None:
    preds = _overconfident(n=2000)
    raw = expit(preds.condition_logits).ravel()
    assert binary_ece(raw, preds.condition_targets.ravel()) > 0.1


_CUTS = np.linspace(-2.5, 2.5, 6)


def _squeezed_stage(n: int = 4000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Stages from a calibrated cumulative model ``f - cuts``; the logits given have the
    thresholds squeezed together (``0.4 * cuts``) and half the slope: flat middle classes,
    which one temperature cannot fix."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(0, 2, size=n)
    stage = ((latent + rng.logistic(size=n))[:, None] > _CUTS).sum(1)
    return 0.5 * (latent[:, None] - 0.4 * _CUTS), stage


def _stage_ece(logits: np.ndarray, stage: np.ndarray, temperature: float,
               offsets: list[float] | None = None) -> float:
    probs = ordinal_probabilities(logits, temperature, offsets)
    pred = ordinal_index(logits, temperature, offsets)
    return stage_metrics(pred, stage, probs)["ece"]


def test_stage_offsets_lower_class_probability_ece_where_one_temperature_cannot() -> None:
    logits, stage = _squeezed_stage()
    t_only = fit_temperature(lambda t: stage_nll(logits, stage, t))
    temperature, offsets = fit_stage_calibration(logits, stage)
    # Recovers the construction: z / T + offsets = latent - cuts.
    assert temperature == pytest.approx(0.5, rel=0.1)
    np.testing.assert_allclose(offsets, -0.6 * _CUTS, atol=0.25)
    before = _stage_ece(logits, stage, t_only)
    after = _stage_ece(logits, stage, temperature, offsets)
    assert before > 0.05
    assert after < before / 2
    assert after < 0.03
    assert stage_nll(logits, stage, temperature, np.array(offsets)) < stage_nll(logits, stage, t_only)
    # Still a distribution: cumulative probabilities fall with the threshold.
    cumulative = ordinal_cumulative(logits, temperature, offsets)
    assert (np.diff(cumulative, axis=1) <= 0).all()


def test_stage_offsets_stay_near_zero_for_a_calibrated_model_and_are_stored() -> None:
    preds = _overconfident(scale=1.0, seed=4)
    calibration = fit_calibration(preds)
    assert len(calibration["stage_offsets"]) == preds.stage_logits.shape[1]
    assert max(abs(v) for v in calibration["stage_offsets"]) < 0.3
    # The metrics use them: the same numbers as applying them by hand.
    metrics = compute_metrics(preds, temperature=calibration["temperature"],
                              stage_offsets=calibration["stage_offsets"])
    assert metrics["stage"]["ece"] == pytest.approx(_stage_ece(
        preds.stage_logits, preds.stage, calibration["temperature"]["stage"],
        calibration["stage_offsets"]))


def test_stage_calibration_keeps_order_of_unordered_offsets_and_handles_no_labels() -> None:
    logits, stage = _squeezed_stage(n=300, seed=5)
    temperature, offsets = fit_stage_calibration(logits, stage, prior_sd=100.0)
    reference = logits.mean(0) / temperature + np.array(offsets)
    assert (np.diff(reference) < 0).all()
    assert fit_stage_calibration(logits, np.full(len(stage), -1)) == (1.0, [0.0] * 6)


def test_decoder_applies_the_stage_offsets_like_the_metrics() -> None:
    from scalpscan.inference.decoding import Geometry, decode_outputs

    logits, _ = _squeezed_stage(n=20, seed=6)
    temperature, offsets = 0.5, list(-0.6 * _CUTS)
    meta = {"input_size": 64, "temperature": {"stage": temperature}, "stage_offsets": offsets}
    n = len(logits)
    outputs = {
        "conditions": np.zeros((n, len(CONDITIONS))),
        "view": np.zeros((n, len(VIEWS))),
        "stage": logits,
        "zones": np.full((n, len(ZONES), 16, 16), -5.0),
        "hairloss": np.full((n, len(CONDITIONS), 16, 16), -5.0),
    }
    rows = decode_outputs(outputs, meta, [Geometry(64, 64, 1.0, 1.0)] * n)
    probs = ordinal_probabilities(logits, temperature, offsets)
    pred = ordinal_index(logits, temperature, offsets)
    for row, p, k in zip(rows, probs, pred):
        np.testing.assert_allclose(row["stage_probabilities"], p, atol=1e-5)
        assert row["stage"] == k + 1
    # Without offsets the decoder is unchanged (older model.json files).
    plain = decode_outputs(outputs, {"input_size": 64, "temperature": {"stage": temperature}},
                           [Geometry(64, 64, 1.0, 1.0)] * n)
    assert [r["stage"] for r in plain] == list(ordinal_index(logits) + 1)


def test_false_rate_threshold_lets_at_most_the_share_through() -> None:
    rng = np.random.default_rng(5)
    negatives = rng.random(100)
    for rate in (0.0, 0.01, 0.05, 0.2):
        threshold = false_rate_threshold(negatives, rate)
        assert (negatives >= threshold).sum() == int(np.floor(rate * 100 + 1e-9))
    # Ties with the highest excluded score stay below the threshold with it.
    tied = np.array([0.9, 0.8, 0.8, 0.8, 0.1] + [0.05] * 15)
    assert (tied >= false_rate_threshold(tied, 0.1)).sum() == 1
    assert false_rate_threshold(tied, 1.0) == 0.0


def _with_real_negatives(n_real: int, seed: int = 0) -> tuple[Predictions, np.ndarray]:
    """Renders where patch scores separate well, plus ``n_real`` untouched real photos without
    a patch whose scores run high (the bald crowns a renderer never showed the model)."""
    rng = np.random.default_rng(seed)
    n_render = 300
    y = (rng.random(n_render) < 0.4).astype(float)
    z = np.where(y == 1, rng.normal(2.5, 1, n_render), rng.normal(-2.5, 1, n_render))
    real_z = rng.normal(0.5, 1.5, n_real)
    logits = np.zeros((n_render + n_real, len(CONDITIONS)))
    logits[:, 1] = np.concatenate([z, real_z])
    targets = np.zeros_like(logits)
    targets[:n_render, 1] = y
    known = np.zeros_like(logits, dtype=bool)
    known[:, 1] = True
    n = len(logits)
    preds = Predictions(
        condition_logits=logits, condition_targets=targets, condition_known=known,
        stage_logits=np.zeros((n, 6)), stage=np.full(n, -1), view_logits=np.zeros((n, len(VIEWS))),
        view=np.full(n, -1), zone_counts=np.zeros((n, len(ZONES), 3)), zones_known=np.zeros(n, bool),
        hairloss_counts=np.zeros((n, len(CONDITIONS), 3)), hairloss_known=np.zeros(n, bool),
        index=np.arange(n))
    untouched = np.arange(n) >= n_render
    return preds, untouched


def test_a_threshold_is_raised_until_few_real_photos_without_the_condition_get_the_finding() -> None:
    preds, untouched = _with_real_negatives(200)
    f1_only = fit_calibration(preds, untouched=untouched, max_false_rate=1.0)
    held = fit_calibration(preds, untouched=untouched, max_false_rate=0.05)
    probs = expit(preds.condition_logits[:, 1] / held["temperature"]["conditions"])
    real = probs[untouched]
    assert f1_only["threshold_rule"]["alopecia_patch"]["rule"] == "f1"
    assert (real >= f1_only["thresholds"]["alopecia_patch"]).mean() > 0.05
    rule = held["threshold_rule"]["alopecia_patch"]
    assert rule["rule"] == "false_rate" and rule["real_negatives"] == 200
    assert held["thresholds"]["alopecia_patch"] > f1_only["thresholds"]["alopecia_patch"]
    assert (real >= held["thresholds"]["alopecia_patch"]).mean() == pytest.approx(rule["false_rate"])
    assert rule["false_rate"] <= 0.05
    # Conditions without real negatives keep their F1 rule and record none.
    assert held["threshold_rule"]["transplant_scar"] == {"rule": "f1", "real_negatives": 0,
                                                         "false_rate": None}


def test_too_few_real_negatives_leave_the_f1_threshold_and_say_so() -> None:
    preds, untouched = _with_real_negatives(MIN_REAL_NEGATIVES - 1)
    f1_only = fit_calibration(preds)
    held = fit_calibration(preds, untouched=untouched, max_false_rate=0.05)
    assert held["thresholds"] == f1_only["thresholds"]
    rule = held["threshold_rule"]["alopecia_patch"]
    assert rule["rule"] == "f1" and rule["real_negatives"] == MIN_REAL_NEGATIVES - 1
    assert rule["false_rate"] is not None  # measured, though not held


def test_untouched_real_photos_are_neither_rendered_nor_painted() -> None:
    from scalpscan.data.manifest import ManifestRow
    from scalpscan.models.provenance import untouched_real

    def row(**extra: str) -> ManifestRow:
        return ManifestRow(image="a.jpg", subject="p1", extra=extra)

    assert untouched_real(row())
    assert untouched_real(row(source="roboflow", composited=""))
    assert not untouched_real(row(source="synth"))
    assert not untouched_real(row(source="composite", composited="patch"))
    assert not untouched_real(row(source="roboflow", composited="scar"))
