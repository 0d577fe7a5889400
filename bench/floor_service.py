"""The framework's floor: the smallest BentoML service that runs the same two graphs.

One service, the sessions in-process (one onnxruntime thread), no validation, no merging, no
dependency, numpy noise; it answers one number per row. bench/bench_service.py serves it
beside the real service, so the ratios measure what our code adds to BentoML's own cost.
`anomaly_score_batched` is the same graphs behind BentoML's adaptive batching
(`batchable=True`), against which bench_service measures the service's own merger.

    VAE_MODEL=bundles/digits bentoml serve bench.floor_service:Floor
"""

import os

import bentoml
import numpy as np
import onnxruntime as ort


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@bentoml.service(name="floor", workers=1)
class Floor:
    def __init__(self) -> None:
        bundle = os.environ["VAE_MODEL"]
        self.encoder = session(os.path.join(bundle, "encoder.onnx"))
        self.decoder = session(os.path.join(bundle, "decoder.onnx"))
        self.latent_dim = self.encoder.get_inputs()[1].shape[2]

    @bentoml.api
    def anomaly_score(self, x: list[list[float]], n_samples: int = 16,
                      seed: int | None = None) -> dict:
        rows = np.asarray(x, dtype=np.float32)
        eps = np.random.default_rng(seed).standard_normal(
            (n_samples, len(rows), self.latent_dim), dtype=np.float32)
        _, _, z = self.encoder.run(None, {"x": rows, "eps": eps})
        x_mean, _ = self.decoder.run(None, {"z": z.reshape(-1, self.latent_dim)})
        return {"score": x_mean.reshape(n_samples, len(rows), -1).mean(axis=(0, 2)).tolist()}

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=4096, max_latency_ms=1000)
    def anomaly_score_batched(self, x: np.ndarray) -> np.ndarray:
        """K = 16, the noise of the merged batch (a row's answer depends on its batch-mates:
        per-request n_samples and seeds cannot ride along a batchable API)."""
        rows = np.ascontiguousarray(x, dtype=np.float32)
        eps = np.random.default_rng(0).standard_normal((16, len(rows), self.latent_dim),
                                                       dtype=np.float32)
        _, _, z = self.encoder.run(None, {"x": rows, "eps": eps})
        x_mean, _ = self.decoder.run(None, {"z": z.reshape(-1, self.latent_dim)})
        return x_mean.reshape(16, len(rows), -1).mean(axis=(0, 2))
