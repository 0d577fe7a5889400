"""The detectors the report compares, each fitted on normal rows and scoring rows (higher =
more anomalous).

This project's VAE goes the way a user's does: `vae train` → `vae export` → the onnxruntime
runtime (the Python functions behind the commands, called in-process). The peers run with
their library defaults; the distance-based ones see standardized features (fitted on the
training rows), as they would in practice.
"""

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.core.runtime import ScoredRows, VAERuntime
from serving.store import load_runtime
from training.data import fit_normalization


def train_and_export(config, directory: Path) -> tuple[dict, float]:
    """`vae train` into directory/run, then `vae export` to directory/bundle: the run's metrics
    and the wall-clock seconds of its training."""
    import time

    from export.exporter import export_run
    from training.train import train

    started = time.perf_counter()
    metrics = train(config, directory / "run", progress=False)
    seconds = time.perf_counter() - started
    with contextlib.redirect_stdout(io.StringIO()):  # torch.onnx's progress lines
        export_run(directory / "run", directory / "bundle")
    return metrics, seconds


@dataclass
class OurVAE:
    """A run of this project's VAE: trained on rows, exported, loaded on onnxruntime."""
    sampling: bool = True
    beta: float = 1.0
    seed: int = 0
    options: dict = field(default_factory=dict)  # other TrainConfig fields
    workdir: Path | None = None
    runtime: VAERuntime | None = None

    def fit(self, x: np.ndarray) -> "OurVAE":
        from training.config import TrainConfig

        workdir = Path(self.workdir or tempfile.mkdtemp(prefix="vae-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        np.save(workdir / "train.npy", x)
        config = TrainConfig(data=str(workdir / "train.npy"), sampling=self.sampling,
                             beta=self.beta, seed=self.seed, **self.options)
        train_and_export(config, workdir)
        self.workdir, self.runtime = workdir, load_runtime(workdir / "bundle", threads=1)
        return self

    def scored(self, x: np.ndarray, n_samples: int = 16, seed: int = 0) -> ScoredRows:
        return self.runtime.score(x, n_samples, seed)


class Standardized:
    """A scikit-learn-style detector on features standardized by the training rows."""

    def __init__(self, make):
        self.make = make

    def fit(self, x: np.ndarray) -> "Standardized":
        self.mean, self.std = fit_normalization(x)
        self.model = self.make().fit((x - self.mean) / self.std)
        return self

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class IsolationForestDetector(Standardized):
    def __init__(self, seed: int):
        from sklearn.ensemble import IsolationForest
        super().__init__(lambda: IsolationForest(random_state=seed))

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(self._z(x))


class LOFDetector(Standardized):
    def __init__(self, seed: int):
        from sklearn.neighbors import LocalOutlierFactor
        super().__init__(lambda: LocalOutlierFactor(novelty=True))

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(self._z(x))


class KNNDetector(Standardized):
    """Distance to the k-th nearest training row (PyOD's KNN 'largest', k = 5)."""
    k = 5

    def __init__(self, seed: int):
        from sklearn.neighbors import NearestNeighbors
        super().__init__(lambda: NearestNeighbors(n_neighbors=self.k))

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.kneighbors(self._z(x))[0][:, -1]


class MeanDistanceDetector(Standardized):
    """Euclidean distance to the training mean: the floor any detector should clear."""

    def __init__(self, seed: int):
        super().__init__(lambda: _Fitted())

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self._z(x), axis=1)


class _Fitted:
    def fit(self, x):
        return self


class PyODDetector:
    """PyOD's deep detectors with their defaults (only the seed and silence are set)."""

    def __init__(self, kind: str, seed: int):
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.vae import VAE
        self.model = {"vae": VAE, "autoencoder": AutoEncoder}[kind](random_state=seed, verbose=0)

    def fit(self, x: np.ndarray) -> "PyODDetector":
        self.model.fit(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x)


PEERS = {
    "PyOD VAE": lambda seed: PyODDetector("vae", seed),
    "PyOD AutoEncoder": lambda seed: PyODDetector("autoencoder", seed),
    "IsolationForest": IsolationForestDetector,
    "LOF (novelty)": LOFDetector,
    "k-NN distance (k = 5)": KNNDetector,
    "distance to training mean": MeanDistanceDetector,
}
