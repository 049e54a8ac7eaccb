"""Calibration: temperature fixes an over-confident model; thresholds maximise F1."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from data.vocab import CONDITIONS, VIEWS, ZONES
from training.calibrate import fit_calibration, fit_temperature, fit_thresholds, view_nll
from training.metrics import Predictions, binary_ece, compute_metrics, sigmoid, softmax


def _overconfident(n: int = 3000, scale: float = 4.0, seed: int = 0) -> Predictions:
    """Labels drawn from calibrated probabilities; the logits given are ``scale`` times too big."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, len(CONDITIONS)))
    cond_targets = (rng.random(z.shape) < sigmoid(z)).astype(float)
    # Ordinal: a latent score with logistic noise gives a calibrated cumulative model.
    latent = rng.normal(0, 2, size=n)
    cuts = np.linspace(-2.5, 2.5, 6)
    stage = ((latent + rng.logistic(size=n))[:, None] > cuts).sum(1)
    stage_logits = latent[:, None] - cuts
    view_z = rng.normal(0, 2, size=(n, len(VIEWS)))
    view = np.array([rng.choice(len(VIEWS), p=p) for p in softmax(view_z)])
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
        loss_counts=np.zeros((n, len(CONDITIONS), 3)),
        loss_known=np.zeros(n, bool),
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
        -np.log(softmax(logits[:1])[0, 0]))


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
    raw = sigmoid(preds.condition_logits).ravel()
    assert binary_ece(raw, preds.condition_targets.ravel()) > 0.1
