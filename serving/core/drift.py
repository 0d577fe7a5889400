"""Drift against the bundle's reference, in buckets whose edges are the reference's deciles.

Three views of a row (docs/monitoring.md):
- `score`: its percentile among the validation scores (the calibration, at the calibrated
  n_samples), in ten buckets of ten points: under no drift each receives 10% of the rows;
- `latent`: each latent dimension's mean code mu, cut at the validation rows' deciles;
- `feature`: each of the first FEATURES input columns, cut at the validation rows' deciles of
  its observed cells, with a bucket of its own for a missing cell.

A column whose deciles tie (a discrete or mostly constant column) has fewer buckets, so the
reference keeps each bucket's share of the validation rows rather than assuming 10%. The
population stability index of a set of rows against it is

    PSI = sum over buckets of (p - q) * ln(p / q),  p and q floored at FLOOR,

the same sum the Prometheus recording rule (deploy/monitoring/rules.yml) takes over any window
of the service's counts, and `vae drift` over a file.
"""

from dataclasses import dataclass

import numpy as np

FEATURES = 32  # features watched: the first 32 columns, in the model's order
LATENT = 32  # latent dimensions watched: the first 32
DECILES = np.linspace(0.1, 0.9, 9)
FLOOR = 1e-4  # shares below this count as this, so that an empty bucket's PSI term is finite
MISSING = "missing"
SCORE_BUCKETS = 10


def edges_of(values: np.ndarray) -> list[float]:
    """The distinct deciles of a column's observed values (at most 9 edges, 10 buckets)."""
    observed = values[~np.isnan(values)]
    if not len(observed):
        return []
    return sorted({float(v) for v in np.quantile(observed.astype(np.float64), DECILES)})


@dataclass
class View:
    """One view's columns: their names, edges and the reference shares of their buckets
    (len(edges) + 1 buckets, then the missing one when `missing`)."""

    name: str
    columns: list[str]
    edges: list[list[float]]
    shares: list[list[float]]
    missing: bool

    def __post_init__(self):
        self._padded = np.full((len(self.edges), len(DECILES)), np.inf)  # (columns, 9)
        for j, edges in enumerate(self.edges):
            self._padded[j, :len(edges)] = edges
        self._if_missing = np.asarray([len(edges) + self.missing for edges in self.edges])

    def labels(self, j: int) -> list[str]:
        return [str(b) for b in range(len(self.edges[j]) + 1)] + [MISSING] * self.missing

    def buckets(self, values: np.ndarray) -> np.ndarray:
        """(B, columns) each value's bucket in its column: how many of the column's edges lie
        below it (a value equal to an edge falls in the bucket below it); a missing value's
        is the missing bucket, or the top one in a view without it."""
        values = values.astype(np.float64)
        below = (values[:, :, None] > self._padded[None]).sum(axis=2)
        return np.where(np.isnan(values), self._if_missing, below)

    def counts(self, values: np.ndarray) -> list[np.ndarray]:
        """Per column, the rows of values (B, columns) in each of its buckets."""
        buckets = self.buckets(values)
        return [np.bincount(buckets[:, j], minlength=len(self.labels(j)))
                for j in range(len(self.columns))]


def reference(x_val: np.ndarray, mu_val: np.ndarray, feature_names: list[str]) -> dict:
    """The manifest's `drift` field, from the validation rows and their mean codes."""
    views = {}
    for name, values, names, missing in (
            ("feature", x_val[:, :FEATURES], feature_names[:FEATURES], True),
            ("latent", mu_val[:, :LATENT], [f"z{j}" for j in range(mu_val.shape[1])][:LATENT],
             False)):
        edges = [edges_of(values[:, j].astype(np.float64)) for j in range(values.shape[1])]
        view = View(name, list(names), edges, [], missing)
        shares = [(c / max(len(values), 1)).tolist() for c in view.counts(values)]
        views[name] = {"columns": view.columns, "edges": edges, "shares": shares}
    return {"rows": int(len(x_val)), **views}


class Drift:
    """The views of a bundle's drift reference, and a batch of rows' counts in them: as one
    flat vector over every bucket of every column of every view (`slots` names each), which
    is what the service adds to its counters in one step."""

    def __init__(self, drift: dict | None, calibration_samples: int):
        self.calibration_samples = calibration_samples
        score = View("score", ["score"], [[10.0 * b for b in range(1, SCORE_BUCKETS)]],
                     [[1.0 / SCORE_BUCKETS] * SCORE_BUCKETS], False)
        self.views = [score]
        for name, missing in (("feature", True), ("latent", False)):
            if drift and drift.get(name):
                part = drift[name]
                self.views.append(View(name, part["columns"], part["edges"], part["shares"],
                                       missing))
        self.slots: list[tuple[str, str, str, float]] = []  # view, column, bucket, share
        self.offsets = {}
        for view in self.views:
            self.offsets[view.name] = np.asarray(
                [len(self.slots) + sum(len(view.labels(i)) for i in range(j))
                 for j in range(len(view.columns))])
            self.slots += [(view.name, column, label, share)
                           for j, column in enumerate(view.columns)
                           for label, share in zip(view.labels(j), view.shares[j])]

    def _values(self, view: View, x: np.ndarray, mu: np.ndarray | None,
                percentile: np.ndarray | None, n_samples: int) -> np.ndarray | None:
        """What a view counts of these rows, or None. A score at another n_samples than the
        calibration's is on another scale, so it is not counted."""
        if view.name == "score":
            if percentile is None or n_samples != self.calibration_samples:
                return None
            return np.asarray(percentile)[:, None]
        if view.name == "feature":
            return x[:, :len(view.columns)]
        return None if mu is None else mu[:, :len(view.columns)]

    def flat_counts(self, x: np.ndarray, mu: np.ndarray | None, percentile: np.ndarray | None,
                    n_samples: int) -> np.ndarray:
        """The rows in each slot."""
        indices = [(view.buckets(values) + self.offsets[view.name]).ravel()
                   for view in self.views
                   if (values := self._values(view, x, mu, percentile, n_samples)) is not None]
        if not indices:
            return np.zeros(len(self.slots), np.int64)
        return np.bincount(np.concatenate(indices), minlength=len(self.slots))

    def split(self, flat: np.ndarray) -> dict[str, list[np.ndarray]]:
        """A flat vector of slots as each view's, per column."""
        return {view.name: [flat[lo:lo + len(view.labels(j))]
                            for j, lo in enumerate(self.offsets[view.name])]
                for view in self.views}

    def counts(self, x: np.ndarray, mu: np.ndarray | None, percentile: np.ndarray | None,
               n_samples: int) -> dict[str, list[np.ndarray]]:
        """Each counted view's counts of these rows, per column."""
        flat = self.split(self.flat_counts(x, mu, percentile, n_samples))
        return {view.name: flat[view.name] for view in self.views
                if self._values(view, x, mu, percentile, n_samples) is not None}


def psi(counts: np.ndarray, shares: list[float]) -> float:
    """The population stability index of bucket counts against reference shares."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = np.maximum(counts / total, FLOOR)
    q = np.maximum(np.asarray(shares, np.float64), FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))
