"""The measures the evidence report is built on (the benchmarks themselves are not tests)."""

import numpy as np
import pytest

from bench.ablation import frechet
from bench.quality import spread


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 3))
    assert frechet(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0.0, 4.0])  # the same spread, means 5 apart: 25
    assert frechet(a, shifted) == pytest.approx(25.0, rel=1e-6)
    wider = 2 * rng.standard_normal((20_000, 3))  # tr(I + 4I - 2·2I) = 3
    assert frechet(a, wider) == pytest.approx(3.0, rel=0.05)


def test_spread_is_relative_to_the_scores_spread():
    first = np.array([0.0, 1.0, 2.0, 3.0])
    assert spread(first, first.copy()) == 0.0
    assert spread(first, first + [0, 0, 0, first.std()]) == pytest.approx(1.0)
