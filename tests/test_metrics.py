"""Metrics against values worked out by hand, with unknown labels left out."""

from __future__ import annotations

import numpy as np
import pytest

from scalpscan.data.vocab import CONDITIONS, VIEWS, ZONES
from scalpscan.inference.decoding import Geometry, decode_outputs
from scalpscan.models.ordinal import combine_distributions, ordinal_index, ordinal_probabilities
from scalpscan.training.bootstrap import paired_stage_differences, stage_confidence_intervals
from scalpscan.training.metrics import (
    Predictions,
    binary_ece,
    compute_metrics,
    condition_metrics,
    ece_floor,
    expected_calibration_error,
    mask_counts,
    mask_metrics,
    metrics_by,
    person_stage,
    stage_metrics,
    view_metrics,
)
from scalpscan.training.tables import format_metrics


def _stage_logits(indices: list[int], margin: float = 4.0) -> np.ndarray:
    """Ordinal logits that pass exactly ``index`` thresholds."""
    return np.array([[margin if k < i else -margin for k in range(6)] for i in indices])


def test_ordinal_index_counts_thresholds_and_probabilities_sum_to_one() -> None:
    logits = np.array([[3.0, 1.0, -1.0, -2.0, -3.0, -4.0], [5.0] * 6, [-5.0] * 6])
    assert ordinal_index(logits).tolist() == [2, 6, 0]
    probs = ordinal_probabilities(logits)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs >= 0).all()
    # Non-monotone cumulative logits still give a valid distribution.
    odd = ordinal_probabilities(np.array([[-1.0, 2.0, -3.0, 0.0, 0.0, 0.0]]))
    assert (odd >= 0).all() and odd.sum() == pytest.approx(1.0)


def test_ordinal_decoding_is_one_computation_for_arrays_and_tensors() -> None:
    # Training metrics (NumPy), the Predictor (NumPy) and torch callers share one decoding.
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(0).normal(0, 3, size=(50, 6))
    offsets = np.linspace(0.3, -0.3, 6)
    for fn in (ordinal_index, ordinal_probabilities):
        array = fn(logits, 1.7, offsets)
        tensor = fn(torch.tensor(logits, dtype=torch.float32), 1.7, offsets)
        assert isinstance(tensor, torch.Tensor)
        np.testing.assert_allclose(tensor.numpy(), array, atol=1e-6)
    # Unordered logits: a threshold after a failed one never counts (no skipped order).
    assert ordinal_index(np.array([[-1.0, 2.0, 3.0, -1.0, -1.0, -1.0]])).tolist() == [0]
    # The class is the median of the class probabilities, and a temperature keeps it.
    median = (np.cumsum(ordinal_probabilities(logits), axis=-1) < 0.5).sum(-1)
    np.testing.assert_array_equal(ordinal_index(logits), median)
    np.testing.assert_array_equal(ordinal_index(logits, 5.0), median)


def test_stage_accuracy_mae_and_quadratic_kappa_by_hand() -> None:
    true = np.array([0, 1, 2, 3, -1])
    pred = np.array([0, 2, 2, 1, 6])
    m = stage_metrics(pred, true)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx((0 + 1 + 0 + 2) / 4)
    # QWK by hand over labels 0..6 (only 0..3 occur): 1 - sum(w*O) / sum(w*E).
    t, p = true[:4], pred[:4]
    n = 7
    observed = np.zeros((n, n))
    for a, b in zip(t, p):
        observed[a, b] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = np.array([[(i - j) ** 2 for j in range(n)] for i in range(n)]) / (n - 1) ** 2
    qwk = 1 - (weights * observed).sum() / (weights * expected).sum()
    assert m["qwk"] == pytest.approx(qwk)


def test_expected_calibration_error_by_hand() -> None:
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0])
    # Bin of 0.95: acc 0.75 (gap 0.2, 4 photos); bin of 0.55: acc 0.5 (gap 0.05, 2 photos).
    assert expected_calibration_error(confidence, correct) == pytest.approx((0.2 * 4 + 0.05 * 2) / 6)
    assert expected_calibration_error(np.array([]), np.array([])) is None
    # Binary: p=0.8 for 5 photos of which 4 positive is perfectly calibrated.
    assert binary_ece(np.full(5, 0.8), np.array([1, 1, 1, 1, 0])) == pytest.approx(0.0)


def test_ece_floor_is_the_sampling_noise_of_a_calibrated_model() -> None:
    # Confidence 0.5 everywhere: the accuracy of n coin flips strays from 0.5 by about
    # E|Binomial(n, 0.5)/n - 0.5| = 0.0399 for n = 100, and far less for n = 10,000.
    assert ece_floor(np.full(100, 0.5)) == pytest.approx(0.0399, abs=0.006)
    assert ece_floor(np.full(10_000, 0.5)) < 0.006
    assert ece_floor(np.full(50, 1.0)) == 0.0 and ece_floor(np.array([])) is None
    # Same inputs, same figure (seeded), and stage metrics carry it beside the ECE.
    confidence = np.random.default_rng(1).uniform(0.3, 1.0, 188)
    assert ece_floor(confidence) == ece_floor(confidence)
    probs = np.full((4, 7), 1 / 7)
    m = stage_metrics(np.zeros(4, int), np.array([0, 1, 2, -1]), probs)
    assert m["ece_floor"] == pytest.approx(ece_floor(np.full(3, 1 / 7)))


def test_stage_intervals_resample_persons_and_hold_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    subjects = [f"P{i // 5}" for i in range(100)]  # 20 persons, 5 photos each
    true = np.repeat(rng.integers(0, 7, 20), 5)
    pred = np.clip(true + rng.integers(-1, 2, 100), 0, 6)
    true[3] = -1  # an unknown stage is left out
    persons = {f"P{p}": {"true": int(true[p * 5 + 1]) + 1, "pred": int(pred[p * 5]) + 1}
               for p in range(20)}
    ci = stage_confidence_intervals(pred, true, subjects, persons, draws=500)
    point = stage_metrics(pred, true)
    # The figures of one draw come from a confusion matrix; on the data itself they match.
    from scalpscan.training.bootstrap import confusion_scores

    conf = np.zeros((7, 7))
    np.add.at(conf, (true[true >= 0], pred[true >= 0]), 1)
    for key, value in confusion_scores(conf).items():
        assert value == pytest.approx(point[key])
    for key in ("accuracy", "mae", "qwk"):
        low, high = ci["stage"][key]
        assert low < point[key] < high
        assert ci["stage_person"][key][0] <= ci["stage_person"][key][1]
    assert ci["stage"]["level"] == 0.95 and ci["stage"]["draws"] == 500
    # Same inputs, same intervals; more persons, narrower intervals.
    assert stage_confidence_intervals(pred, true, subjects, persons, draws=500) == ci
    wide = ci["stage"]["accuracy"][1] - ci["stage"]["accuracy"][0]
    many = stage_confidence_intervals(np.tile(pred, 10), np.tile(true, 10),
                                      [f"{s}-{k}" for k in range(10) for s in subjects], draws=500)
    assert many["stage"]["accuracy"][1] - many["stage"]["accuracy"][0] < wide / 2
    assert many["stage_person"]["accuracy"] is None  # no per-person results given


def test_stage_intervals_are_wider_when_a_persons_photos_agree() -> None:
    # 10 persons, 10 photos each, each person entirely right or entirely wrong: the photos
    # are not 100 independent draws, and resampling persons shows it.
    subjects = [f"P{i // 10}" for i in range(100)]
    true = np.zeros(100, int)
    pred = np.where(np.arange(100) < 50, 0, 1)
    by_person = stage_confidence_intervals(pred, true, subjects, draws=1000)["stage"]["accuracy"]
    by_photo = stage_confidence_intervals(pred, true, [str(i) for i in range(100)],
                                          draws=1000)["stage"]["accuracy"]
    assert by_person[1] - by_person[0] > 2 * (by_photo[1] - by_photo[0])


def _persons_of(pred: np.ndarray, true: np.ndarray, subjects: list[str]) -> dict:
    return {s: {"true": int(true[subjects.index(s)]) + 1, "pred": int(pred[subjects.index(s)]) + 1}
            for s in dict.fromkeys(subjects)}


def test_paired_differences_of_a_model_with_itself_are_zero() -> None:
    rng = np.random.default_rng(1)
    subjects = [f"P{i // 4}" for i in range(80)]
    true = np.repeat(rng.integers(0, 7, 20), 4)
    pred = np.clip(true + rng.integers(-2, 3, 80), 0, 6)
    persons = _persons_of(pred, true, subjects)
    same = paired_stage_differences(pred, pred, true, subjects, persons, persons, draws=300)
    for head in ("stage", "stage_person"):
        for key in ("accuracy", "mae", "qwk"):
            d = same[head][key]
            assert d["difference"] == 0 and d["ci"] == [0, 0] and d["b_better"] == 0
    point = stage_metrics(pred, true)
    assert same["stage"]["accuracy"]["a"] == pytest.approx(point["accuracy"])
    assert same["stage"]["qwk"]["b"] == pytest.approx(point["qwk"])


def test_paired_interval_finds_a_small_gain_that_the_own_intervals_hide() -> None:
    # 20 persons of very different difficulty; B fixes the photos of four persons that A
    # gets wrong and changes nothing else.
    rng = np.random.default_rng(2)
    subjects = [f"P{i // 5}" for i in range(100)]
    true = np.repeat(rng.integers(0, 7, 20), 5)
    wrong = np.repeat(rng.random(20) < 0.5, 5)
    pred_a = np.where(wrong, (true + 2) % 7, true)
    fixed = np.flatnonzero(wrong)[:20]  # the 20 photos of the first four wrong persons
    pred_b = pred_a.copy()
    pred_b[fixed] = true[fixed]
    pa, pb = _persons_of(pred_a, true, subjects), _persons_of(pred_b, true, subjects)
    diff = paired_stage_differences(pred_a, pred_b, true, subjects, pa, pb, draws=1000)
    acc = diff["stage"]["accuracy"]
    assert acc["difference"] == pytest.approx(0.20)
    assert 0 < acc["ci"][0] < 0.20 < acc["ci"][1]  # B is better on people like these
    assert acc["b_better"] > 0.95
    assert diff["stage"]["mae"]["difference"] < 0 and diff["stage"]["mae"]["b_better"] > 0.95
    assert diff["stage_person"]["accuracy"]["difference"] == pytest.approx(0.20)
    # Side by side, the two models' own intervals overlap: they cannot tell A from B.
    own_a = stage_confidence_intervals(pred_a, true, subjects, draws=1000)["stage"]["accuracy"]
    own_b = stage_confidence_intervals(pred_b, true, subjects, draws=1000)["stage"]["accuracy"]
    assert own_b[0] < own_a[1]
    assert acc["ci"][1] - acc["ci"][0] < own_a[1] - own_a[0]
    # A worse B comes out negative, with the same width.
    back = paired_stage_differences(pred_b, pred_a, true, subjects, pb, pa, draws=1000)
    assert back["stage"]["accuracy"]["ci"] == pytest.approx([-acc["ci"][1], -acc["ci"][0]])
    assert back["stage"]["accuracy"]["b_better"] == 0


def test_condition_metrics_skip_unknown_labels() -> None:
    probs = np.array([[0.9, 0.2, 0.1], [0.8, 0.7, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.1]])
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    known = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)
    m = condition_metrics(probs, targets, known, thresholds={"thinning": 0.5, "alopecia_patch": 0.5})
    thin = m["per_condition"]["thinning"]
    assert thin["ap"] == pytest.approx(1.0) and thin["auroc"] == pytest.approx(1.0)
    assert thin["f1"] == pytest.approx(1.0)
    patch = m["per_condition"]["alopecia_patch"]
    assert patch["n"] == 3 and patch["positives"] == 1  # row 2 unknown
    assert patch["auroc"] == pytest.approx(1.0)
    scar = m["per_condition"]["transplant_scar"]
    assert scar["ap"] is None and scar["auroc"] is None and scar["f1"] is None
    assert m["macro_auroc"] == pytest.approx(1.0)  # mean over conditions that have it
    lower = condition_metrics(probs, targets, known, thresholds={"thinning": 0.25})
    # At 0.25 photo 2 (p=0.3, negative) turns positive: precision 2/3, recall 1, F1 0.8.
    assert lower["per_condition"]["thinning"]["f1"] == pytest.approx(0.8)


def test_view_metrics_and_unknown_views() -> None:
    logits = np.eye(len(VIEWS))[[0, 1, 2, 2]] * 5
    m = view_metrics(logits, np.array([0, 1, 3, -1]))
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_zone_iou_and_dice_pooled_over_known_masks() -> None:
    pred = np.zeros((2, 2, 4, 4), bool)
    true = np.zeros((2, 2, 4, 4), bool)
    pred[0, 0, :2] = True  # 8 px
    true[0, 0, :1] = True  # 4 px, all inside pred
    pred[1, 0] = True  # second photo's mask is unknown: must not count
    counts = mask_counts(pred, true)
    assert counts[0, 0].tolist() == [4, 8, 4]
    m = mask_metrics(counts, np.array([True, False]), ["a", "b"])
    assert m["per_class"]["a"]["iou"] == pytest.approx(4 / 8)
    assert m["per_class"]["a"]["dice"] == pytest.approx(2 * 4 / 12)
    assert m["per_class"]["b"]["iou"] is None  # neither present nor predicted
    assert m["mean_iou"] == pytest.approx(0.5)


def test_person_stage_combines_predicted_views_with_the_reports_weights() -> None:
    # Person A: front says index 3 strongly, back says 0; front weighs 1, back 0.5 -> 3.
    logits = _stage_logits([3, 0, 1, 1])
    views = np.array([VIEWS.index("front"), VIEWS.index("back"), VIEWS.index("top"), -1])
    true, subjects = np.array([3, 3, 1, -1]), ["A", "A", "B", "B"]
    m = person_stage(logits, true, subjects, views)
    assert m["n"] == 2
    assert m["persons"]["A"] == {"true": 4, "pred": 4}
    assert m["persons"]["B"] == {"true": 2, "pred": 2}
    assert m["accuracy"] == 1.0
    # Front and back weighing the same: a tie, which goes to the lower stage.
    equal = person_stage(logits, true, subjects, views, view_weights={"back": 1.0})
    assert equal["persons"]["A"]["pred"] == 1
    # Views that weigh nothing give the person no stage, as in the reports: left out.
    none = person_stage(logits, true, subjects, views, view_weights={"front": 0.0, "back": 0.0})
    assert none["n"] == 1 and "A" not in none["persons"]


def test_combine_distributions_is_the_weighted_median() -> None:
    dists = np.eye(7)[[1, 3, 5]]  # stages 2, 4, 6
    assert combine_distributions(dists, [1, 1, 1])[0] == 3
    assert combine_distributions(dists, [3, 1, 1])[0] == 1
    assert combine_distributions(dists, [1, 1, 0])[0] == 1  # tie: the lower stage
    index, mean = combine_distributions(dists, [0.5, 1, 0.5])
    assert index == 3 and mean.tolist() == pytest.approx([0, 0.25, 0, 0.5, 0, 0.25, 0])
    assert combine_distributions(dists, [0, 0, 0]) == (None, None)
    # One photo: its own ordinal class.
    logits = np.array([[3.0, 1.0, -1.0, -2.0, -3.0, -4.0]])
    assert combine_distributions(ordinal_probabilities(logits), [1.0])[0] == int(ordinal_index(logits)[0])
    with pytest.raises(ValueError, match=">= 0"):
        combine_distributions(dists, [1, -1, 1])
    with pytest.raises(ValueError, match="weights"):
        combine_distributions(dists, [1, 1])


def _person_rows(preds: Predictions, meta: dict, not_assessed: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Each person's result rows, decoded from ``preds``' logits as the Predictor decodes them."""
    n = len(preds)
    outputs = {"conditions": preds.condition_logits, "stage": preds.stage_logits, "view": preds.view_logits,
               "zones": np.zeros((n, len(ZONES), 4, 4)), "hairloss": np.zeros((n, len(CONDITIONS), 4, 4))}
    decoded = decode_outputs(outputs, meta, [Geometry(64, 64, 1.0, 1.0)] * n, not_assessed=not_assessed)
    rows: dict[str, list[dict]] = {}
    for i, fields in enumerate(decoded):
        rows.setdefault(preds.subjects[i], []).append(
            {"image": f"{i}.jpg", "subject": preds.subjects[i], "status": "ok",
             "not_assessed": list(not_assessed), **fields})
    return rows


def test_evaluation_per_person_stage_is_the_reports_patient_stage() -> None:
    from scalpscan.inference.rules import assess

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 6, size=60)
    subjects = [f"p{p}" for p, k in enumerate(sizes) for _ in range(k)]
    n = len(subjects)
    latent = np.repeat(rng.uniform(-1, 7, size=len(sizes)), sizes) + rng.normal(0, 1.5, n)
    stage_logits = 2.0 * (latent[:, None] - np.arange(6) - 0.5)
    # Person "x": a clear Norwood 4 from the front and a Norwood 2 from the back; the true
    # views are the other way round, which only evaluation could know.
    subjects += ["x", "x"]
    stage_logits = np.vstack([stage_logits, _stage_logits([3], 3.0), _stage_logits([1], 4.0)])
    view_logits = np.vstack([rng.normal(0, 2, (n, len(VIEWS))), np.eye(len(VIEWS))[[0, 2]] * 5])
    true_view = np.concatenate([rng.integers(0, len(VIEWS), n), [2, 0]])
    stage = np.concatenate([np.clip(np.round(latent), 0, 6).astype(int), [1, 1]])
    m = len(subjects)
    preds = Predictions(
        condition_logits=rng.normal(size=(m, len(CONDITIONS))),
        condition_targets=np.zeros((m, len(CONDITIONS))), condition_known=np.ones((m, len(CONDITIONS)), bool),
        stage_logits=stage_logits, stage=stage, view_logits=view_logits, view=true_view,
        zone_counts=np.zeros((m, len(ZONES), 3)), zones_known=np.zeros(m, bool),
        hairloss_counts=np.zeros((m, len(CONDITIONS), 3)), hairloss_known=np.zeros(m, bool),
        index=np.arange(m), subjects=subjects)
    calibration = {"temperature": {"stage": 1.3, "view": 0.8, "conditions": 1.0},
                   "stage_offsets": [0.2, -0.1, 0.0, 0.3, -0.2, 0.1]}
    meta = {"input_size": 64, **calibration}
    for not_assessed in ((), ("view",)):
        persons = compute_metrics(preds, **calibration, view_assessed=not not_assessed)["stage_person"]["persons"]
        rows = _person_rows(preds, meta, not_assessed)
        if not not_assessed:  # persons with photos of different views
            assert len({s for s, r in rows.items() if len({x["view"] for x in r}) > 1}) > 10
        assert set(persons) == set(rows)
        for subject, person_rows in rows.items():
            assert persons[subject]["pred"] == assess(person_rows).stage, subject
    # The photos' own views, not their true ones: front (Norwood 4) outweighs back (by the
    # true views, Norwood 2 would win); with no view known, both weigh the same.
    assert compute_metrics(preds, **calibration)["stage_person"]["persons"]["x"]["pred"] == 4
    assert compute_metrics(preds, **calibration, view_assessed=False)["stage_person"]["persons"]["x"]["pred"] == 2


def _predictions(n: int = 6) -> Predictions:
    rng = np.random.default_rng(0)
    stage = np.array([0, 1, 2, 3, 4, -1])[:n]
    return Predictions(
        condition_logits=rng.normal(size=(n, len(CONDITIONS))),
        condition_targets=(rng.random((n, len(CONDITIONS))) > 0.5).astype(float),
        condition_known=np.ones((n, len(CONDITIONS)), bool),
        stage_logits=_stage_logits([max(s, 0) for s in stage]),
        stage=stage,
        view_logits=np.eye(len(VIEWS))[np.arange(n) % len(VIEWS)] * 3,
        view=np.arange(n) % len(VIEWS),
        zone_counts=np.tile(np.array([[4, 4, 4]]), (n, len(ZONES), 1)),
        zones_known=np.ones(n, bool),
        hairloss_counts=np.zeros((n, len(CONDITIONS), 3)),
        hairloss_known=np.zeros(n, bool),
        index=np.arange(n),
        subjects=["a", "a", "b", "b", "c", "c"][:n],
    )


def test_compute_metrics_and_breakdown_by_a_column() -> None:
    preds = _predictions()
    m = compute_metrics(preds)
    assert m["stage"]["accuracy"] == 1.0 and m["stage"]["n"] == 5
    assert m["view"]["accuracy"] == 1.0
    assert m["zones"]["mean_iou"] == 1.0
    assert m["hairloss_map"]["n"] == 0 and m["hairloss_map"]["mean_iou"] is None
    assert m["stage_person"]["n"] == 3
    by = metrics_by(preds, "skin_tone", ["I", "I", "VI", "VI", "VI", ""])
    assert set(by) == {"I", "VI", "(empty)"}
    assert by["I"]["n"] == 2 and by["VI"]["n"] == 3
    with pytest.raises(ValueError, match="skin_tone"):
        metrics_by(preds, "skin_tone", ["I"])
    text = format_metrics(m, breakdowns={"skin_tone": by})
    assert "per person" in text and "by skin_tone" in text and "VI" in text


def test_subset_keeps_rows_aligned() -> None:
    preds = _predictions()
    sub = preds.subset(np.array([False, True, False, True, False, False]))
    assert sub.index.tolist() == [1, 3]
    assert sub.subjects == ["a", "b"]
    assert sub.stage.tolist() == [1, 3]
