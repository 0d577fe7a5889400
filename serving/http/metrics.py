"""The service's own Prometheus metrics."""

import threading
import time

import numpy as np
import prometheus_client

from serving.core.drift import Drift

# BentoML serves these at /metrics beside its own (in multiprocess mode it sets
# PROMETHEUS_MULTIPROC_DIR before the service module is imported).
ROWS = prometheus_client.Counter("vae_rows", "rows answered, per endpoint", ["endpoint"])
ANOMALIES = prometheus_client.Counter("vae_anomalies", "rows flagged is_anomaly, per endpoint",
                                      ["endpoint"])
SCORES = prometheus_client.Histogram(
    "vae_anomaly_score", "anomaly scores answered (nats)",
    buckets=(-100, -20, 0, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, float("inf")))


def count(endpoint: str, rows: int, is_anomaly: np.ndarray | None = None,
          score: np.ndarray | None = None) -> None:
    """Rows answered by an endpoint, those flagged, and a bounded sample of their scores."""
    ROWS.labels(endpoint=endpoint).inc(rows)
    if is_anomaly is not None:
        ANOMALIES.labels(endpoint=endpoint).inc(int(is_anomaly.sum()))
    if score is not None:
        for value in score[:1000]:  # a bounded sample keeps the hot path cheap
            SCORES.observe(float(value))


# Drift (serving.core.drift; deploy/monitoring/rules.yml turns these into PSIs over a window)
DRIFT_ROWS = prometheus_client.Counter(
    "vae_drift_rows", "rows scored, in each bucket of the bundle's drift reference, per view "
    "(score, latent, feature) and column", ["view", "name", "bucket"])
DRIFT_REFERENCE = prometheus_client.Gauge(
    "vae_drift_reference_share", "the validation rows' share of each drift bucket",
    ["view", "name", "bucket"], multiprocess_mode="max")
NOMINAL_RATE = prometheus_client.Gauge(
    "vae_nominal_anomaly_rate", "the share of normal rows the threshold flags "
    "(calibration.target_fpr)", multiprocess_mode="max")


class DriftCounters:
    """A process's drift counters. Every bucket's series is made at start (so that an empty
    bucket counts 0 rather than being absent from the PSI's sum), with the reference beside.
    A scored batch's counts are added to a numpy vector (tens of microseconds); a daemon
    thread moves them into the counters every FLUSH_S seconds, so that a one-row request
    does not pay one counter call per column."""

    FLUSH_S = 1.0

    def __init__(self, drift: Drift, nominal_rate: float):
        self.drift = drift
        self.children = [DRIFT_ROWS.labels(view, column, bucket)
                         for view, column, bucket, _ in drift.slots]
        for view, column, bucket, share in drift.slots:
            DRIFT_REFERENCE.labels(view, column, bucket).set(share)
        NOMINAL_RATE.set(nominal_rate)
        self.pending = np.zeros(len(drift.slots), np.int64)
        self.lock = threading.Lock()
        threading.Thread(target=self._flush_every, daemon=True, name="drift-counters").start()

    def observe(self, x: np.ndarray, mu: np.ndarray | None, percentile: np.ndarray | None,
                n_samples: int) -> None:
        counts = self.drift.flat_counts(x, mu, percentile, n_samples)
        with self.lock:
            self.pending += counts

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, np.zeros_like(self.pending)
        for i in np.flatnonzero(pending):
            self.children[i].inc(int(pending[i]))

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()
