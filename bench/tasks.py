"""The detection tasks of the report: which rows a detector is fitted on, which it scores, and
which of those are anomalies.

Two protocols, as in ODDS and ADBench:
- unsupervised: fit on all rows, a share (1%, 5%, 10%) of them anomalies nobody labelled, and
  score those same rows;
- semi-supervised: fit on 70% of the normal rows only, score the other 30% plus anomalies;
  for digits, bench/quality.py's hold-one-out: fit on 70% of the other nine classes, score the
  other 30% plus every row of the held-out class.

Data: the embedded tables (digits with one class as the anomaly, in turn; WDBC's malignant
rows; wine's class 2; iris's virginica) and a synthetic family with ADBench's four anomaly
types (Han et al. 2022, §3.2) around one normal distribution: local, global, clustered,
dependency.
"""

from dataclasses import dataclass

import numpy as np

from bench import real_tables

SHARES = (0.01, 0.05, 0.10)
TEST_SHARE = 0.3  # semi-supervised: the share of the normal rows held out for scoring
SYNTHETIC_KINDS = ("local", "global", "clustered", "dependency")
TABLES = ("breast-cancer", "wine", "iris")
DATASETS = ("digits", *TABLES, *(f"synthetic-{k}" for k in SYNTHETIC_KINDS))


@dataclass
class Task:
    dataset: str
    protocol: str  # "unsupervised" | "semi-supervised" | "hold-one-out"
    share: float | None  # unsupervised: the anomalies' share of the fitted rows
    seed: int
    fit: np.ndarray  # (n, F) float32: the rows a detector is fitted on
    score: np.ndarray  # (m, F) float32: the rows it scores
    anomalous: np.ndarray  # (m,) bool

    @property
    def name(self) -> str:
        share = "" if self.share is None else f" {self.share:.0%}"
        return f"{self.dataset} {self.protocol}{share} seed {self.seed}"


def pools(dataset: str, seed: int, digit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(normal rows, anomalous rows) of a data set; the synthetic ones are drawn by seed."""
    if dataset.startswith("synthetic-"):
        return synthetic(dataset.removeprefix("synthetic-"), seed)
    from sklearn import datasets

    if dataset == "digits":
        bunch = datasets.load_digits()
        x, anomalous = bunch.data, bunch.target == digit
    else:
        load, anomaly = {"breast-cancer": (datasets.load_breast_cancer, 0),
                         "wine": (datasets.load_wine, 2), "iris": (datasets.load_iris, 2)}[dataset]
        bunch = load()
        x, anomalous = bunch.data, bunch.target == anomaly
    x = x.astype(np.float32)
    return x[~anomalous], x[anomalous]


def synthetic(kind: str, seed: int, n_normal: int = 1000, n_anomalous: int = 300,
              n_features: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Normal rows from a mixture of three correlated Gaussians; anomalies of one of ADBench's
    types (its generator's constants): local from the same mixture with each covariance scaled
    by 5, global uniform over 1.1 × the normal rows' range, clustered from the mixture with its
    means scaled by 5, dependency with each feature drawn independently from its normal
    marginal (the dependence between features broken)."""
    rng = np.random.default_rng([seed, 7])
    k = 3
    means = rng.normal(0.0, 3.0, (k, n_features))
    factors = [rng.normal(0.0, 1.0, (n_features, 3)) for _ in range(k)]  # low-rank dependence
    covs = [f @ f.T + 0.1 * np.eye(n_features) for f in factors]

    def mixture(n: int, mean_scale: float = 1.0, cov_scale: float = 1.0) -> np.ndarray:
        which = rng.integers(0, k, n)
        return np.stack([rng.multivariate_normal(mean_scale * means[c], cov_scale * covs[c])
                         for c in which])

    normal = mixture(n_normal)
    if kind == "local":
        anomalous = mixture(n_anomalous, cov_scale=5.0)
    elif kind == "global":
        low, high = normal.min(0), normal.max(0)
        centre, half = (low + high) / 2, 1.1 * (high - low) / 2
        anomalous = rng.uniform(centre - half, centre + half, (n_anomalous, n_features))
    elif kind == "clustered":
        anomalous = mixture(n_anomalous, mean_scale=5.0)
    elif kind == "dependency":
        fresh = mixture(n_anomalous)
        anomalous = np.stack([rng.permutation(fresh[:, j]) for j in range(n_features)], 1)
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; expected one of {SYNTHETIC_KINDS}")
    return normal.astype(np.float32), anomalous.astype(np.float32)


def unsupervised(dataset: str, share: float, seed: int, digit: int = 0) -> Task:
    """All normal rows plus anomalies drawn to `share` of the whole; fitted and scored alike."""
    normal, anomalies = pools(dataset, seed, digit)
    rng = np.random.default_rng([seed, 11, round(share * 1000)])
    n = max(2, round(len(normal) * share / (1 - share)))
    drawn = anomalies[rng.choice(len(anomalies), min(n, len(anomalies)), replace=False)]
    rows = np.concatenate([normal, drawn])
    anomalous = np.arange(len(rows)) >= len(normal)
    order = rng.permutation(len(rows))  # so a detector cannot tell anything from the order
    rows = rows[order]
    name = f"digits {digit}" if dataset == "digits" else dataset
    return Task(name, "unsupervised", share, seed, rows, rows, anomalous[order])


def real_unsupervised(table: str, seed: int) -> Task:
    """A real table as it is (bench/real_tables.py), fitted and scored whole; the seed is the
    detectors' only."""
    rows, anomalous = real_tables.load(table)
    return Task(table, "unsupervised", None, seed, rows, rows, anomalous)


def one_class_digits(seed: int, digit: int, n_fit: int = 125) -> Task:
    """Clean rows of one digit: fit on n_fit of them, score the rest of that digit (normal) and
    a sample of the other nine digits as large as those rest (anomalous)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target
    rng = np.random.default_rng([seed, 17, digit])
    own = rng.permutation(np.flatnonzero(y == digit))
    fit, rest = own[:n_fit], own[n_fit:]
    others = rng.choice(np.flatnonzero(y != digit), len(rest), replace=False)
    scored = np.concatenate([rest, others])
    return Task(f"digits {digit}", "one-class", None, seed, x[fit], x[scored],
                np.arange(len(scored)) >= len(rest))


def semi_supervised(dataset: str, seed: int, digit: int = 0, real: bool = False) -> Task:
    """Fit on 70% of the normal rows; score the other 30% and every anomaly (synthetic: as
    many anomalies as a tenth of the scored normal rows). real: one of bench/real_tables.py's
    tables (whose names may be those of embedded ones: wine)."""
    normal, anomalies = real_tables.pools(dataset) if real else pools(dataset, seed, digit)
    rng = np.random.default_rng([seed, 13])
    order = rng.permutation(len(normal))
    n_test = round(TEST_SHARE * len(normal))
    test, fit = normal[order[:n_test]], normal[order[n_test:]]
    if dataset.startswith("synthetic-"):
        anomalies = anomalies[: max(2, n_test // 10)]
    rows = np.concatenate([test, anomalies])
    name = f"digits {digit}" if dataset == "digits" else dataset
    return Task(name, "semi-supervised", None, seed, fit, rows,
                np.arange(len(rows)) >= len(test))


def hold_one_out(seed: int, digit: int) -> Task:
    """Digits with one class held out as the anomaly: fit on 70% of the other nine classes'
    rows, score the other 30% and every row of the held-out class."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data.astype(np.float32), bunch.target
    order = np.random.default_rng([seed, digit]).permutation(np.flatnonzero(y != digit))
    n_fit = round(0.7 * len(order))
    scored = np.concatenate([order[n_fit:], np.flatnonzero(y == digit)])
    return Task(f"digits {digit}", "hold-one-out", None, seed, x[order[:n_fit]], x[scored],
                y[scored] == digit)
