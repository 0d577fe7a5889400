"""serving.core.drift: the reference's buckets, a batch's counts in them, and the PSI."""

import numpy as np

from serving.core.drift import Drift, View, edges_of, psi, reference


def test_a_continuous_column_fills_each_decile_with_a_tenth_of_its_rows():
    x = np.random.default_rng(0).normal(size=(10_000, 1))
    edges = edges_of(x[:, 0])
    assert len(edges) == 9
    view = View("feature", ["a"], [edges], [], missing=True)
    counts = view.counts(x)[0]
    assert counts[:10].tolist() == [1000] * 10 and counts[10] == 0  # none missing


def test_ties_merge_buckets_and_the_reference_keeps_their_shares():
    x = np.zeros((100, 2), np.float32)
    x[70:, 1] = np.arange(1, 31)  # 70% zeros, then distinct values
    x[5:10, 0] = np.nan  # five missing cells
    ref = reference(x, np.zeros((100, 1), np.float32), ["constant", "mostly zero"])
    feature = ref["feature"]
    assert feature["edges"][0] == [0.0] and feature["shares"][0] == [0.95, 0.0, 0.05]
    assert feature["edges"][1][0] == 0.0 and abs(sum(feature["shares"][1]) - 1) < 1e-12
    assert feature["shares"][1][0] == 0.7  # every zero in the first bucket


def test_the_reference_rows_themselves_have_no_drift_and_shifted_rows_do():
    rng = np.random.default_rng(1)
    x, mu = rng.gamma(2.0, size=(5000, 3)), rng.normal(size=(5000, 2))
    drift = Drift(reference(x, mu, ["a", "b", "c"]), calibration_samples=16)
    same = drift.counts(x, mu, None, 16)
    for view in drift.views[1:]:
        assert all(psi(n, s) == 0.0 for n, s in zip(same[view.name], view.shares))
    moved = drift.counts(x + 1.0, mu, None, 16)
    assert psi(moved["feature"][0], drift.views[1].shares[0]) > 0.25


def test_the_score_view_counts_only_at_the_calibrated_n_samples():
    drift = Drift(None, calibration_samples=16)  # a bundle from before drift references
    assert [view.name for view in drift.views] == ["score"]
    percentile = np.linspace(0.5, 99.5, 100, dtype=np.float32)
    counts = drift.counts(np.zeros((100, 4)), None, percentile, 16)["score"][0]
    assert counts.tolist() == [10] * 10
    assert drift.counts(np.zeros((100, 4)), None, percentile, 1) == {}
