"""Checks an export must pass before it is written: a valid, self-contained, deterministic graph
pair whose onnxruntime answers match the PyTorch model's."""

import numpy as np
import onnx
import torch

from serving.core.noise import draw_eps
from serving.core.runtime import VAEGraphs
from serving.core.scores import score_terms
from training.model import VAE

RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli", "Dropout"}
PARITY_BATCHES = (1, 2, 7, 512)
PARITY_SAMPLES = (1, 16)
PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """An export that failed a check; nothing was written."""


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                yield from _nodes(sub)


def check_graph(model: onnx.ModelProto, name: str) -> None:
    """The full ONNX checker, no random operator, no external-data sidecar."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the {name} graph fails onnx.checker: {str(e).splitlines()[0]}") \
            from None
    ops = {n.op_type for n in _nodes(model.graph)}
    for function in model.functions:
        ops |= {n.op_type for n in function.node}
    if ops & RANDOM_OPS:
        raise ExportError(f"the {name} graph holds random operators {sorted(ops & RANDOM_OPS)}; "
                          f"all noise must come in through eps")
    external = [t.name for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"the {name} graph keeps {len(external)} tensors in external data "
                          f"(first: {external[0]}); expected one self-contained file")


def parity(vae: VAE, graphs: VAEGraphs, x: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Max |onnxruntime - torch| of every output and score term over PARITY_BATCHES × SAMPLES,
    with the largest |torch| value of each (the scale its float32 resolution depends on).

    The rows are x repeated to each batch size, with a model that takes missing cells a
    share of them blanked (every other row, one cell in three); the noise is the contract's
    draw for those rows. The scores are compared with PyTorch's own log-likelihood.
    """
    worst: dict[str, dict] = {}
    for batch in PARITY_BATCHES:
        rows = np.ascontiguousarray(np.resize(x, (batch, x.shape[1])), dtype=np.float32)
        if vae.layout is not None:
            blanked = rows.copy()
            blanked[::2, ::3] = np.nan
            empty = np.isnan(blanked).all(axis=1)
            blanked[empty] = rows[empty]  # every row keeps an observed cell
            rows = blanked
        for k in PARITY_SAMPLES:
            eps = draw_eps(seed, 0, batch, k, vae.latent_dim)
            ours = _outputs(rows, eps, *graphs.encode(rows, eps), graphs.decode, vae.sampling,
                            graphs.schema, graphs.student_t)
            with torch.no_grad():
                mu, logvar = vae.encode(torch.from_numpy(rows))
                z = vae.reparameterize(mu, logvar, torch.from_numpy(eps))
                decoded = vae.decode(z)
                theirs = _outputs(rows, eps, mu.numpy(), logvar.numpy(), z.numpy(),
                                  lambda _: [t.numpy() for t in decoded], vae.sampling,
                                  graphs.schema, graphs.student_t)
                if vae.sampling:  # the score from PyTorch's log-likelihood, not numpy's
                    log_px = vae.log_px(torch.from_numpy(rows), decoded).double()
                    log_w = log_px + 0.5 * (torch.from_numpy(eps).double().square().sum(-1)
                                            - z.double().square().sum(-1)
                                            + logvar.double().sum(-1))
                    theirs["score"] = -(torch.logsumexp(log_w, 0) - np.log(k)).numpy()
            for key, value in ours.items():
                if value.size == 0:  # x_mean, x_logvar of a model without numeric columns
                    continue
                entry = worst.setdefault(key, {"max_abs_diff": 0.0, "max_abs_value": 0.0})
                diff = np.abs(value.astype(np.float64) - theirs[key])
                entry["max_abs_diff"] = max(entry["max_abs_diff"], float(diff.max()))
                entry["max_abs_value"] = max(entry["max_abs_value"],
                                             float(np.abs(theirs[key]).max()))
    return worst


def _outputs(x, eps, mu, logvar, z, decode, sampling: bool, schema,
             student_t: bool) -> dict[str, np.ndarray]:
    decoded = decode(z)
    scores = score_terms(x, mu, logvar, eps, z, decoded, sampling, True, schema, student_t)
    outputs = dict(zip(("x_mean", "x_logvar", "logits"), decoded))
    return {"mu": mu, "logvar": logvar, "z": z, **outputs, "score": scores.score,
            "recon_nll": scores.recon_nll, "kl": scores.kl, "feature_nll": scores.feature_nll}


def check_parity(worst: dict[str, dict]) -> None:
    """Each difference must be ≤ PARITY_TOLERANCE × max(1, the output's largest magnitude):
    absolute for outputs of order 1, relative for those (scores in nats, raw feature units)
    whose float32 resolution is coarser than 1e-5."""
    failed = [k for k, v in worst.items()
              if v["max_abs_diff"] > PARITY_TOLERANCE * max(1.0, v["max_abs_value"])]
    if failed:
        figures = ", ".join(f"{k} {v['max_abs_diff']:.2e} (of {v['max_abs_value']:.3g})"
                            for k, v in worst.items())
        raise ExportError(f"onnxruntime differs from PyTorch beyond {PARITY_TOLERANCE:g} "
                          f"(relative above magnitude 1) on {', '.join(failed)}; "
                          f"max abs differences: {figures}")
