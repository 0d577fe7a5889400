"""The Python API of a bundle, without torch: `load(path_or_tag)` gives a detector with the
methods of scikit-learn's and PyOD's detectors, on onnxruntime.

    from serving.api import load
    detector = load("bundles/tx")           # or a model-store tag, "vae:latest"
    detector.decision_function(frame)       # -log p(x): higher is more anomalous (PyOD)
    detector.predict(frame)                 # 1 where the calibrated threshold flags the row

Rows are numpy arrays (columns by position), pandas DataFrames or pyarrow tables (columns by
name, as the CLI reads files: reordered or extra columns change nothing), or records (a list
of dicts). Every score is the one `vae score` and `/anomaly_score` give for the same rows,
positions and seed, bit for bit.
"""

import os

import numpy as np

from serving.core.noise import DEFAULT_SAMPLES, MAX_SEED
from serving.core.rows import InputError
from serving.core.runtime import ScoredRows, VAERuntime


class Detector:
    """A bundle on onnxruntime with a detector's methods; what `load` returns and what
    `training.VAE` delegates to once fitted."""

    def __init__(self, runtime: VAERuntime, n_samples: int = DEFAULT_SAMPLES, seed: int = 0):
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed {seed} is outside 0..2**63 - 1")
        self.runtime, self.n_samples, self.seed = runtime, n_samples, seed

    @property
    def threshold(self) -> float:
        """The calibrated threshold of complete rows (rows with missing cells are judged at
        their own observed count)."""
        return float(self.runtime.threshold)

    @property
    def feature_names(self) -> list[str]:
        return list(self.runtime.manifest.feature_names)

    def scored(self, x) -> ScoredRows:
        """Every score term of the rows (score, recon_nll, kl, percentile, is_anomaly,
        observed), rows numbered from 0 under this detector's seed."""
        return self.runtime.score(x, self.runtime.noise(self.seed, self.n_samples))

    def decision_function(self, x) -> np.ndarray:
        """-log p(x) per row, importance-weighted: higher is more anomalous."""
        return self.scored(x).score

    def score_samples(self, x) -> np.ndarray:
        """log p(x) per row (scikit-learn's sense: higher is more normal)."""
        return -self.scored(x).score

    def predict(self, x) -> np.ndarray:
        """1 for a row the calibrated threshold flags, else 0 (PyOD's labels)."""
        return self.scored(x).is_anomaly.astype(np.int64)

    def transform(self, x) -> np.ndarray:
        """The latent means mu (B, latent_dim): features for a next step in a Pipeline."""
        rows = self.runtime.check(x)
        empty = np.zeros((0, len(rows), self.runtime.latent_dim), np.float32)
        return self.runtime.encode(rows, empty)[0]

    def sample(self, n: int, seed: int = 0):
        """n new rows (decoder means of z ~ N(0, I)): an array, or records for a model with
        categorical columns."""
        x, _ = self.runtime.sample(n, seed)
        schema = self.runtime.schema
        return schema.to_records(x) if schema is not None and not schema.all_numeric else x

    def impute(self, x, draws: int = 0):
        """The rows with missing cells filled (serving.core.impute)."""
        return self.runtime.impute(x, self.n_samples, self.seed, draws)


def load(model: str | os.PathLike, threads: int | None = None,
         n_samples: int = DEFAULT_SAMPLES, seed: int = 0) -> Detector:
    """A detector from a bundle directory or a model-store tag such as `vae:latest`."""
    from serving.store import load_runtime
    return Detector(load_runtime(model, threads), n_samples, seed)
