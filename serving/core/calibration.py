"""Percentile and anomaly flag of scores, by how many cells each row had observed.

A score over fewer cells is a log-likelihood of fewer terms, so it is not on the scale of a
complete row's. A bundle with a column schema stores the validation scores at several observed
counts (the validation rows with cells blanked at random down to that count: `vae export`), and
a row is judged against the calibration at its own count, interpolated linearly between the two
stored counts around it (and the nearest one beyond them). A bundle without levels has one
calibration, for complete rows.
"""

import numpy as np

from serving.core.scores import percentile


class Calibrator:
    def __init__(self, calibration):
        levels = calibration.by_observed or []
        if levels:
            levels = sorted(levels, key=lambda level: level.observed)
            self.counts = np.asarray([level.observed for level in levels], np.float64)
            self.quantiles = [np.asarray(level.quantiles, np.float64) for level in levels]
            self.thresholds = np.asarray([level.threshold for level in levels], np.float32)
        else:
            self.counts = None
            self.quantiles = [np.asarray(calibration.quantiles, dtype=np.float64)]
            self.thresholds = np.asarray([calibration.threshold], np.float32)

    def judge(self, score: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """percentile (B,) and is_anomaly (B,) of scores of rows with `observed` cells."""
        if self.counts is None or len(self.counts) == 1:
            return percentile(score, self.quantiles[0]), score > self.thresholds[0]
        lo, hi, weight = self._between(observed)
        by_level = np.stack([percentile(score, q) for q in self.quantiles])  # (L, B)
        rows = np.arange(len(score))
        share = (1 - weight) * by_level[lo, rows] + weight * by_level[hi, rows]
        return share.astype(np.float32), score > self.threshold(observed)

    def threshold(self, observed: np.ndarray) -> np.ndarray:
        """The threshold of rows with `observed` cells, (B,) float32."""
        if self.counts is None or len(self.counts) == 1:
            return np.full(len(observed), self.thresholds[0], np.float32)
        lo, hi, weight = self._between(observed)
        return ((1 - weight) * self.thresholds[lo] + weight * self.thresholds[hi]).astype(
            np.float32)

    def _between(self, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = self.counts
        n = np.clip(np.asarray(observed, np.float64), counts[0], counts[-1])
        hi = np.clip(np.searchsorted(counts, n), 1, len(counts) - 1)
        lo = hi - 1
        weight = (n - counts[lo]) / (counts[hi] - counts[lo])
        return lo, hi, weight
