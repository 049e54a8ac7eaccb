"""bench_stage: the ways of giving one stage per person that it compares."""

from __future__ import annotations

import numpy as np

from scalpscan.models.ordinal import combine_distributions
from scalpscan.scripts.bench_stage import AGGREGATIONS, _person_stages


def test_person_stages_compare_the_reports_median_with_the_alternatives() -> None:
    # One person: two confident photos at stage index 1 and one flat photo that leans to 4.
    dists = np.array([[0.05, 0.9, 0.05, 0.0, 0.0],
                      [0.05, 0.9, 0.05, 0.0, 0.0],
                      [0.1, 0.1, 0.1, 0.1, 0.6]])
    weights = np.array([1.0, 1.0, 1.0])
    found = _person_stages(dists, weights, np.array([1, 1, 1]), ["p", "p", "p"])
    assert list(found) == list(AGGREGATIONS)
    median = found["mixture median (the reports')"][0][0]
    assert median == combine_distributions(dists, weights)[0] == 1
    assert found["most probable of the mixture"][0][0] == 1
    # The mean is pulled up by the flat photo; the product by nothing (a 0 kills stage 4).
    assert found["rounded mean"][0][0] == 2
    assert found["product of the photos"][0][0] == 1
    assert all(true.tolist() == [1] for _, true in found.values())
