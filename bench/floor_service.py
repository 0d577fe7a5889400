"""The framework's floor: the smallest BentoML service that runs the same two graphs.

One service, the sessions in-process (one onnxruntime thread), no validation, no merging, no
dependency, numpy noise; it answers one number per row. bench/bench_service.py serves it
beside the real service, so the ratios measure what our code adds to BentoML's own cost.

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
