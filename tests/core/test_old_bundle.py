"""A numeric-only bundle written before column schemas (tests/fixtures, made by commit e285a97)
still loads and answers the same bits."""

import json
from pathlib import Path

import numpy as np

from serving.core.bundle import load_bundle
from serving.core.runtime import VAERuntime

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_a_bundle_from_before_the_schema_answers_the_same_bits():
    runtime = VAERuntime(load_bundle(FIXTURES / "iris-before-schema"), threads=1)
    expected = json.loads((FIXTURES / "iris-before-schema.json").read_text())
    scored = runtime.score(np.asarray(expected["x"], np.float32),
                           runtime.noise(expected["seed"], expected["n_samples"]), explain=True)
    assert [float(v).hex() for v in scored.score] == expected["score_hex"]
    assert [float(v).hex() for v in scored.percentile] == expected["percentile_hex"]
    assert [[float(v).hex() for v in r] for r in scored.feature_nll] == expected["feature_nll_hex"]
    assert scored.is_anomaly.tolist() == expected["is_anomaly"]
