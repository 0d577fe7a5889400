"""The detectors the report compares, each fitted on normal rows and scoring rows (higher =
more anomalous).

This project's VAE goes the way a user's does: `training.VAE().fit(rows)`, which trains,
exports and loads the bundle on onnxruntime as `vae train` and `vae export` do. The peers run with
their library defaults; the distance-based ones see standardized features (fitted on the
training rows), as they would in practice.
"""

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.core.runtime import ScoredRows, VAERuntime
from training.data import fit_normalization


def train_and_export(config, directory: Path, precision: str = "auto") -> tuple[dict, float]:
    """`vae train` into directory/run, then `vae export` to directory/bundle: the run's metrics
    and the wall-clock seconds of its training."""
    import time

    from export.exporter import export_run
    from training.train import train

    started = time.perf_counter()
    metrics = train(config, directory / "run", progress=False)
    seconds = time.perf_counter() - started
    with contextlib.redirect_stdout(io.StringIO()):  # torch.onnx's progress lines
        export_run(directory / "run", directory / "bundle", precision=precision)
    return metrics, seconds


@dataclass
class OurVAE:
    """This project's VAE as a user's notebook runs it: `training.VAE` (train, export, load
    on onnxruntime), scored by the bundle."""
    sampling: bool = True
    beta: float = 1.0  # the KL weight; 1, the ELBO, as `vae train`
    seed: int = 0
    options: dict = field(default_factory=dict)  # other parameters of training.VAE
    runtime: VAERuntime | None = None
    metrics: dict | None = None  # the run's (metrics.json)

    def fit(self, x: np.ndarray) -> "OurVAE":
        from training import VAE

        with contextlib.redirect_stdout(io.StringIO()):  # torch.onnx's progress lines
            estimator = VAE(sampling=self.sampling, beta=self.beta, seed=self.seed,
                            **self.options).fit(x)
        self.runtime, self.metrics = estimator.detector_.runtime, estimator.metrics_
        self._estimator = estimator  # owns the bundle's directory
        return self

    def scored(self, x: np.ndarray, n_samples: int = 16, seed: int = 0) -> ScoredRows:
        return self.runtime.score(x, self.runtime.noise(seed, n_samples))


class Peer:
    """A PyOD detector with its library defaults (only the seed and silence are set), on
    features standardized by the rows it is fitted on, as it would be used in practice."""

    def __init__(self, make, seed: int):
        self.model = make(seed)

    def fit(self, x: np.ndarray) -> "Peer":
        self.mean, self.std = fit_normalization(x)
        self.model.fit(self._z(x))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores of new rows (the semi-supervised protocol); higher = more anomalous."""
        return self.model.decision_function(self._z(x))

    def fitted_scores(self) -> np.ndarray:
        """Scores of the rows it was fitted on (the unsupervised protocol): for k-NN and LOF
        each row's own point is left out of its neighbours."""
        return self.model.decision_scores_

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _pyod(name: str, **options):
    def make(seed: int):
        import importlib
        module, cls = {"IForest": ("iforest", "IForest"), "KNN": ("knn", "KNN"),
                       "LOF": ("lof", "LOF"), "ECOD": ("ecod", "ECOD"),
                       "COPOD": ("copod", "COPOD"), "VAE": ("vae", "VAE"),
                       "AutoEncoder": ("auto_encoder", "AutoEncoder")}[name]
        model = getattr(importlib.import_module(f"pyod.models.{module}"), cls)
        seeded = {"random_state": seed} if name in ("IForest", "VAE", "AutoEncoder") else {}
        quiet = {"verbose": 0} if name in ("VAE", "AutoEncoder") else {}
        return model(**seeded, **quiet, **options)
    return make


class _MeanDistance:
    """Euclidean distance to the fitted rows' mean (in standardized units: the origin)."""

    def fit(self, x: np.ndarray) -> "_MeanDistance":
        self.decision_scores_ = self.decision_function(x)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(x, axis=1)


PEERS = {
    "PyOD VAE": _pyod("VAE"),
    "IsolationForest": _pyod("IForest"),
    "ECOD": _pyod("ECOD"),
    "COPOD": _pyod("COPOD"),
    "LOF": _pyod("LOF"),
    "k-NN distance (k = 5)": _pyod("KNN"),  # PyOD's default: the distance to the 5th neighbour
    "distance to training mean": lambda seed: _MeanDistance(),
}
