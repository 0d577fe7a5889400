"""Issue 28: `explain` names the feature that is unusual for the model, not the one with the
largest scale."""

import numpy as np

from export.exporter import export_run
from serving.core.runtime import VAERuntime
from training.config import TrainConfig
from training.train import train

SCALES = np.array([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0])


def table(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(2, 6))
    return ((rng.normal(size=(n, 2)) @ mixing + 0.3 * rng.normal(size=(n, 6)))
            * SCALES).astype(np.float32)


def test_feature_excess_names_the_injected_feature_whatever_its_scale(tmp_path):
    train(TrainConfig(data=table(3000, 1), epochs=40, hidden=(32, 32), latent_dim=2,
                      patience=40), tmp_path / "run", progress=False, threads=1)
    runtime = VAERuntime(export_run(tmp_path / "run", tmp_path / "bundle"), threads=1)
    rows = table(600, 2)
    injected = np.arange(len(rows)) % 6
    spread = rows.std(axis=0)
    rows[np.arange(len(rows)), injected] += 1.5 * spread[injected]  # one unusual cell a row
    scored = runtime.score(rows, runtime.noise(0, 16), explain=True)
    named = np.mean(scored.feature_excess.argmax(axis=1) == injected)
    raw = np.mean(scored.feature_nll.argmax(axis=1) == injected)
    assert named >= 0.8, (named, raw)
    assert raw < named - 0.2, (named, raw)  # feature_nll alone points at the scale
    medians = runtime.manifest.calibration.feature_nll_median
    assert len(medians) == 6 and medians[5] > medians[0]  # in raw units, wider is costlier
