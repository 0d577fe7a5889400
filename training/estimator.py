"""`VAE`, the detector as a scikit-learn estimator (`from training import VAE`).

    detector = VAE().fit(frame)               # trains, exports and calibrates a bundle
    detector.decision_function(new_rows)      # -log p(x): higher is more anomalous (PyOD)
    detector.predict(new_rows)                # 1 where the calibrated threshold flags a row
    detector.save("bundles/tx")               # the bundle `vae export` writes
    serving.api.load("bundles/tx")            # the same methods, without torch

`fit` trains with `vae train`'s own function (unset sizes chosen from the table, as the CLI
chooses them), exports and verifies the bundle as `vae export` does, and scores through it
on onnxruntime: the scores equal the CLI's and the service's, bit for bit, for the same rows
and seed. Fitted state ends in `_`, as in scikit-learn and PyOD's BaseDetector.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from serving.api import DEFAULT_SAMPLES, Detector


class VAE(TransformerMixin, BaseEstimator):
    """A variational autoencoder anomaly detector. Parameters left as None are chosen from
    the table's shape (training.sizing); the others are TrainConfig's, plus:

    n_samples: K of the importance-weighted score; seed: its noise (rows are numbered from 0
    in each call, as in a request); target_fpr: the calibrated threshold's false-positive rate
    on validation rows; precision: the bundle's graphs, as `vae export --precision` (auto:
    int8 where they pass the gate, else fp32); threads: torch's threads (None:
    training.sizing's choice).

    Labels are PyOD's, 1 for an anomaly and 0 otherwise (not scikit-learn's -1/1, so this is
    not an OutlierMixin). A row's noise depends on its position in the call, as in every
    surface of the contract, so a row's score moves a little (by the Monte Carlo error of K
    samples) when it is scored at another position: scikit-learn's sample-order and subset
    invariance hold in distribution, not bit for bit.
    """

    def __init__(self, epochs=None, latent_dim=None, hidden=None, batch_size=None,
                 patience=None, beta=1.0, contamination=None, warmup_epochs=10,
                 weight_average=0.998, learning_rate=None, val_fraction=0.2, sampling=True,
                 numeric=(), categorical=(), ignore=(), n_samples=DEFAULT_SAMPLES, seed=0,
                 target_fpr=0.01, precision="auto", threads=None, outlying=None,
                 likelihood="student-t"):
        self.epochs, self.latent_dim, self.hidden = epochs, latent_dim, hidden
        self.batch_size, self.patience, self.beta = batch_size, patience, beta
        self.contamination, self.warmup_epochs = contamination, warmup_epochs
        self.outlying, self.likelihood = outlying, likelihood
        self.weight_average, self.learning_rate = weight_average, learning_rate
        self.val_fraction, self.sampling = val_fraction, sampling
        self.numeric, self.categorical, self.ignore = numeric, categorical, ignore
        self.n_samples, self.seed, self.target_fpr = n_samples, seed, target_fpr
        self.precision, self.threads = precision, threads

    def fit(self, X, y=None):
        """Train on the rows X (an array, a DataFrame or a pyarrow table; y is ignored),
        export the bundle into a directory the estimator owns, and score X."""
        from export.exporter import export_run
        from serving.store import load_runtime
        from training.config import TrainConfig
        from training.train import train

        self._check_params()
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        config = TrainConfig(
            data=X if hasattr(X, "columns") or hasattr(X, "schema") else _array(X),
            epochs=self.epochs, latent_dim=self.latent_dim,
            hidden=None if self.hidden is None else tuple(self.hidden),
            batch_size=self.batch_size, patience=self.patience, beta=self.beta,
            contamination=self.contamination, outlying=self.outlying,
            likelihood=self.likelihood, warmup_epochs=self.warmup_epochs,
            weight_average=self.weight_average, learning_rate=self.learning_rate,
            val_fraction=self.val_fraction, sampling=self.sampling, seed=self.seed,
            numeric=tuple(self.numeric), categorical=tuple(self.categorical),
            ignore=tuple(self.ignore))
        self._drop_directory()
        self.directory_ = Path(tempfile.mkdtemp(prefix="vae-estimator-"))
        self.metrics_ = train(config, self.directory_ / "run", progress=False,
                              threads=self.threads, explain=False)
        export_run(self.directory_ / "run", self.directory_ / "bundle",
                   target_fpr=self.target_fpr, precision=self.precision)
        self.detector_ = Detector(load_runtime(self.directory_ / "bundle"), self.n_samples,
                                  self.seed)
        self.n_features_in_ = len(self.detector_.feature_names) if not hasattr(
            self, "feature_names_in_") else len(self.feature_names_in_)
        scored = self.detector_.scored(self._rows(X))
        self.decision_scores_ = scored.score
        self.labels_ = scored.is_anomaly.astype(np.int64)
        self.threshold_ = self.detector_.threshold
        return self

    # -- scoring: the bundle's, through serving.api ---------------------------------------

    def decision_function(self, X) -> np.ndarray:
        """-log p(x) per row: higher is more anomalous."""
        return self._fitted().decision_function(self._rows(X))

    def score_samples(self, X) -> np.ndarray:
        """log p(x) per row: higher is more normal (scikit-learn's sense)."""
        return self._fitted().score_samples(self._rows(X))

    def predict(self, X) -> np.ndarray:
        """1 where the calibrated threshold flags the row, else 0 (PyOD's labels)."""
        return self._fitted().predict(self._rows(X))

    def fit_predict(self, X, y=None) -> np.ndarray:
        """fit(X), then the labels of X: labels_."""
        return self.fit(X).labels_

    def transform(self, X) -> np.ndarray:
        """The latent means mu, (rows, latent_dim)."""
        return self._fitted().transform(self._rows(X))

    def sample(self, n: int, seed: int = 0):
        """n new rows, decoded from z ~ N(0, I)."""
        return self._fitted().sample(n, seed)

    def save(self, path) -> Path:
        """Write the fitted bundle (the one `vae export` writes) to path; it loads with
        serving.api.load or serves with `VAE_MODEL=path bentoml serve`."""
        from serving.core.bundle import load_bundle
        self._fitted()
        path = Path(path)
        if path.exists():
            load_bundle(path)  # only a bundle is replaced
            shutil.rmtree(path)
        shutil.copytree(self.directory_ / "bundle", path)
        return path

    export = save

    # -- helpers ---------------------------------------------------------------------------

    def _fitted(self) -> Detector:
        from sklearn.exceptions import NotFittedError
        if not hasattr(self, "detector_"):
            raise NotFittedError("this VAE is not fitted yet; call fit(X) first")
        return self.detector_

    def _rows(self, X):
        """Named columns go by name; an array must have the fitted width."""
        if hasattr(X, "columns") or hasattr(X, "schema") or \
                (isinstance(X, list) and X and isinstance(X[0], dict)):
            return X
        rows = _array(X)
        if hasattr(self, "n_features_in_") and rows.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {rows.shape[1]} features, but VAE is expecting "
                             f"{self.n_features_in_} features as input")
        return rows

    def _check_params(self) -> None:
        if not (isinstance(self.n_samples, int) and self.n_samples >= 1):
            raise ValueError(f"n_samples is {self.n_samples!r}; expected a whole number ≥ 1")
        if not 0 < self.target_fpr < 1:
            raise ValueError(f"target_fpr is {self.target_fpr!r}; expected a share in (0, 1)")
        from export.exporter import PRECISIONS
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision is {self.precision!r}; expected one of "
                             f"{', '.join(PRECISIONS)}")

    def _drop_directory(self) -> None:
        if getattr(self, "directory_", None) is not None:
            shutil.rmtree(self.directory_, ignore_errors=True)

    def __del__(self):
        try:
            self._drop_directory()
        except Exception:  # at interpreter exit the modules it needs may be gone already
            pass

    def __getstate__(self):
        """Pickled with the bundle's files (the onnxruntime sessions are not picklable)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("detector_", "directory_")}
        if hasattr(self, "detector_"):
            bundle = self.directory_ / "bundle"
            state["_bundle_files"] = {p.name: p.read_bytes() for p in bundle.iterdir()}
        return state

    def __setstate__(self, state):
        files = state.pop("_bundle_files", None)
        state.setdefault("outlying", None)  # pickled before the two options: their defaults
        state.setdefault("likelihood", "gaussian")
        self.__dict__.update(state)
        if files is not None:
            from serving.store import load_runtime
            self.directory_ = Path(tempfile.mkdtemp(prefix="vae-estimator-"))
            (self.directory_ / "bundle").mkdir()
            for name, content in files.items():
                (self.directory_ / "bundle" / name).write_bytes(content)
            self.detector_ = Detector(load_runtime(self.directory_ / "bundle"), self.n_samples,
                                      self.seed)


def _array(X) -> np.ndarray:
    """X as a 2-D float32 array, or scikit-learn's ValueError saying why not."""
    from sklearn.utils.validation import check_array
    return check_array(X, dtype=np.float32, ensure_all_finite="allow-nan")
