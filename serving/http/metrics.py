"""The service's own Prometheus metrics."""

import numpy as np
import prometheus_client

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
