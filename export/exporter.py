"""`vae export`: a trained run -> verified graphs -> calibrated threshold -> the bundle."""

import hashlib
import json
import os
import warnings
from datetime import datetime, timezone

import numpy as np
import onnx
import torch

from export.graphs import OPSET, export_graphs
from export.quantize import GateError, gate, quantize_graphs
from export.verify import PARITY_BATCHES, PARITY_SAMPLES, PARITY_TOLERANCE, check_graph, \
    check_parity, parity
from serving.core.bundle import Bundle, write_bundle
from serving.core.drift import reference as drift_reference
from serving.core.noise import DEFAULT_SAMPLES, SeededNoise
from serving.core.rows import InputError
from serving.core.runtime import VAEGraphs
from serving.core.scores import calibrate
from training.model import VAE
from training.train import load_run, saved_schema

CALIBRATION_SAMPLES = DEFAULT_SAMPLES  # the default n_samples of /anomaly_score
CALIBRATION_SEED = 0
# Shares of a row's cells kept at the calibration's observed counts (serving.core.calibration);
# a count needs MIN_LEVEL_ROWS validation rows with at least that many cells observed.
OBSERVED_SHARES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
MIN_LEVEL_ROWS = 50


# What changes an answer beside the weights: the manifest's fields that the runtime reads
ANSWER_FIELDS = ("n_features", "feature_names", "likelihood", "sampling", "normalization",
                 "precision", "opset", "calibration", "schema")
PRECISIONS = ("auto", "int8", "fp32")  # auto: int8 where it passes the gate, else fp32
SCHEME = ("static QDQ: Gemm weights int8 per output channel, their inputs uint8 per tensor "
          "(MinMax over the validation rows), each Relu folded into its Gemm's output range, "
          "the last layer's output float")


def model_version(vae: VAE, manifest: dict) -> str:
    """A digest of everything that changes an answer: the weights (with the normalization),
    the graphs' opset, the calibration (threshold, quantiles, target) and the input schema.
    Two bundles with the same version give the same answers; a new threshold is a new
    version. An int8 bundle's version ends in -int8, so every answer says which answered."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    fields = {key: manifest[key] for key in ANSWER_FIELDS if key in manifest}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    precision = manifest.get("precision", "fp32")
    return digest.hexdigest()[:12] + ("" if precision == "fp32" else f"-{precision}")


def validation_scores(graphs: VAEGraphs, x: np.ndarray, sampling: bool) -> np.ndarray:
    """Scores of the validation rows with the contract's noise, as the service would give them."""
    noise = SeededNoise(CALIBRATION_SEED, CALIBRATION_SAMPLES, graphs.latent_dim)
    return graphs.score_rows(x, noise, sampling)[0].score


def feature_medians(graphs: VAEGraphs, x: np.ndarray, sampling: bool) -> list[float]:
    """Each feature's median feature_nll over the validation rows where it is observed: what
    `explain` subtracts, so that features of every scale compare (feature_excess)."""
    noise = SeededNoise(CALIBRATION_SEED, CALIBRATION_SAMPLES, graphs.latent_dim)
    nll = graphs.score_rows(x, noise, sampling, explain=True)[0].feature_nll.astype(np.float64)
    nll[np.isnan(x)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature never observed: 0
        medians = np.nanmedian(nll, axis=0)
    return [float(v) for v in np.nan_to_num(medians, nan=0.0)]


def observed_levels(graphs: VAEGraphs, x: np.ndarray, sampling: bool,
                    target_fpr: float) -> list[dict]:
    """The calibration at observed counts: the most cells that MIN_LEVEL_ROWS validation rows
    have (all of them, when rows are complete), and that count times OBSERVED_SHARES. At each
    count, the validation rows with at least that many cells, blanked at random (seeded) down
    to exactly that many; a count with fewer than MIN_LEVEL_ROWS such rows is left out (the
    top one never is)."""
    observed = ~np.isnan(x)
    per_row = np.sort(observed.sum(axis=1))[::-1]
    top = int(per_row[min(MIN_LEVEL_ROWS, len(per_row)) - 1])
    counts = sorted({max(1, round(share * top)) for share in OBSERVED_SHARES}, reverse=True)
    levels = []
    for count in counts:
        rows = np.flatnonzero(observed.sum(axis=1) >= count)
        if count < top and len(rows) < MIN_LEVEL_ROWS:
            continue
        rng = np.random.default_rng([CALIBRATION_SEED, count])
        kept = x[rows].copy()
        # a random order of each row's observed cells; those past `count` are blanked
        order = np.argsort(np.where(observed[rows], rng.random(kept.shape), 2.0), axis=1)
        np.put_along_axis(kept, order[:, count:], np.nan, axis=1)
        quantiles, threshold = calibrate(validation_scores(graphs, kept, sampling), target_fpr)
        levels.append({"observed": count, "rows": len(rows), "quantiles": quantiles,
                       "threshold": threshold})
    return levels


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, name: str = "vae",
               target_fpr: float = 0.01, threshold: float | None = None,
               precision: str = "auto", gated: bool = True) -> Bundle:
    """Export, verify and calibrate a finished run, then write its bundle to `out`. The
    threshold is the validation scores' (1 - target_fpr) quantile, or `threshold` nats as
    given (its target_fpr is then the share of validation rows above it). With precision
    int8 the bundle's graphs are int8 (export.quantize), past its gate (GateError if not),
    and calibrated themselves; auto is int8 where the gate passes, else fp32. The manifest's
    `quantization` keeps the gate's figures, and its refusal. With gated False, int8 graphs
    the gate refuses are written all the same: for measuring them (bench/), never to serve."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision is {precision!r}; expected one of {', '.join(PRECISIONS)}")
    vae, saved = load_run(run_dir)
    schema = saved_schema(saved)
    encoder, decoder = export_graphs(vae)
    check_graph(encoder, "encoder")
    check_graph(decoder, "decoder")
    likelihood = saved["config"].get("likelihood", "gaussian") + (
        "" if schema is None or schema.all_numeric else "+categorical")
    graphs = VAEGraphs(encoder.SerializeToString(), decoder.SerializeToString(),
                       vae.n_features, vae.latent_dim, schema=schema, likelihood=likelihood)
    x_val = np.ascontiguousarray(saved["x_val"].numpy(), dtype=np.float32)
    worst = parity(vae, graphs, x_val)
    check_parity(worst)
    quantization = None
    if precision in ("int8", "auto"):
        quantized = quantize_graphs(encoder.SerializeToString(), decoder.SerializeToString(),
                                    x_val, vae.latent_dim)
        int8 = VAEGraphs(*quantized, vae.n_features, vae.latent_dim, schema=schema,
                         likelihood=likelihood)
        quantization = {"scheme": SCHEME, **gate(graphs, int8, x_val, vae.sampling)}
        refused = quantization.get("refused") if gated else None
        if refused and precision == "int8":
            raise GateError(refused)
        if refused:
            precision = "fp32"
        else:
            graphs, precision = int8, "int8"
            encoder, decoder = (onnx.load_from_string(graph) for graph in quantized)

    if threshold is not None:  # the share of validation rows above the given threshold
        complete = x_val[~np.isnan(x_val).any(axis=1)] if schema is not None else x_val
        scores = validation_scores(graphs, complete if len(complete) else x_val, vae.sampling)
        target_fpr = float(np.mean(scores > threshold))
        if not 0.0 < target_fpr < 1.0:
            where = "above" if target_fpr == 0 else "below"
            raise InputError(f"--threshold {threshold:g} is {where} every validation row's "
                             f"score ({scores.min():.6g} to "
                             f"{scores.max():.6g} nats); expected a threshold between them")
    by_observed = None
    if schema is None:
        quantiles, chosen = calibrate(validation_scores(graphs, x_val, vae.sampling),
                                      target_fpr)
        calibrated_rows = len(x_val)
    else:
        by_observed = observed_levels(graphs, x_val, vae.sampling, target_fpr)
        top = by_observed[0]
        quantiles, chosen, calibrated_rows = top["quantiles"], top["threshold"], top["rows"]
    if threshold is not None:
        chosen = float(threshold)
        if by_observed is not None:
            by_observed[0]["threshold"] = chosen
    metrics = saved["metrics"]
    config = saved["config"]
    manifest = {
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_features": vae.n_features,
        "latent_dim": vae.latent_dim,
        "feature_names": list(saved["feature_names"]),
        "likelihood": likelihood,
        "sampling": vae.sampling,
        "normalization": {"kind": "standardize", "mean": vae.x_shift.tolist(),
                          "std": vae.x_scale.tolist()},
        "precision": precision,
        "opset": OPSET,
        "training": {"dataset": saved["dataset"], "rows": metrics["train_rows"],
                     "epochs": metrics["epochs"], "seed": config["seed"],
                     "train_loss": metrics["train_loss"], "val_loss": metrics["val_loss"],
                     "val_rows": metrics["val_rows"], "best_epoch": metrics["best_epoch"],
                     "hidden": list(config["hidden"]), "beta": config["beta"]},
        "calibration": {"score": f"iwae (n_samples {CALIBRATION_SAMPLES}) on validation rows"
                        if vae.sampling else "recon_nll + ½‖mu‖² on validation rows",
                        "n_samples": CALIBRATION_SAMPLES, "seed": CALIBRATION_SEED,
                        "rows": calibrated_rows, "quantiles": quantiles,
                        "threshold": chosen, "target_fpr": target_fpr,
                        "feature_nll_median": feature_medians(graphs, x_val, vae.sampling)},
        "verification": {"batches": list(PARITY_BATCHES), "n_samples": list(PARITY_SAMPLES),
                         "tolerance": PARITY_TOLERANCE, "parity": worst},
    }
    if by_observed is not None:
        manifest["calibration"]["by_observed"] = by_observed
        manifest["schema"] = schema.model_dump(exclude_none=True)
    if quantization is not None:
        manifest["quantization"] = quantization
    mu_val = graphs.encode(x_val, np.zeros((0, len(x_val), vae.latent_dim), np.float32))[0]
    manifest["drift"] = drift_reference(x_val, mu_val, list(saved["feature_names"]))
    if saved.get("image_shape"):
        manifest["image_shape"] = list(saved["image_shape"])
    manifest = {"name": name, "version": model_version(vae, manifest),
                **{k: v for k, v in manifest.items() if k != "name"}}
    for graph in (encoder, decoder):
        _set_metadata(graph, manifest)
    return write_bundle(out, encoder.SerializeToString(), decoder.SerializeToString(), manifest)


def _set_metadata(graph: onnx.ModelProto, manifest: dict) -> None:
    """The manifest's identity in the graph's metadata_props, so a lone graph still says what
    it is (the calibration, which changes without the graph changing, stays in the manifest)."""
    keys = ("name", "version", "created_at", "n_features", "latent_dim", "feature_names",
            "likelihood", "sampling", "normalization", "precision", "training", "schema")
    del graph.metadata_props[:]
    for key in (k for k in keys if k in manifest):
        value = manifest[key]
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    graph.producer_name, graph.producer_version = "vae-service", torch.__version__
