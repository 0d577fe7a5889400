"""`vae export --precision int8`: the two graphs with int8 matrix products, behind a gate.

Static quantization (onnxruntime.quantization, QDQ): each Gemm's weights per output channel in
int8, its input activations in uint8 with one scale and zero point per tensor, fixed from the
validation rows (MinMax) and stored in the graph. Dynamic quantization computes the activation
scale of each call over the whole input tensor, so a row's answer would depend on its
batch-mates, on merging and on chunking; with fixed scales it never does. uint8 activations
with int8 weights run onnxruntime's u8s8 kernels (AVX-512 VNNI's VPDPBUSD); int8 activations
ran 1.5x slower here. Activations beyond the calibrated range saturate. Relu is quantized too,
which folds it into the range of its Gemm's output: onnxruntime then chains the int8 products
(QGemm into QGemm) with no dequantize and requantize between them. The last products stay in
float (_float_results). The int8 decoder ran at 15 µs a row at K = 16 instead of 28 (fp32: 44).

The gate compares the int8 graphs with the fp32 ones on the validation rows: the largest score
difference, relative to the row's fp32 score (nats of a score below 1 count as they are), and the
AUROC of the validation rows against copies of them with each column shuffled on its own
(which keeps every feature's values and breaks their relations).
"""

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from export.verify import ExportError
from serving.core.noise import DEFAULT_SAMPLES, SeededNoise
from serving.core.runtime import VAEGraphs, saturate

MAX_SCORE_DIFFERENCE = 0.05  # |int8 - fp32| / |fp32| of a validation row's score, at most
MAX_AUROC_DROP = 0.002
SHUFFLE_SEED = 7
# Shuffled rows against the validation rows, at least: with one copy of 17 validation rows (the
# wine development split) one pair of near-tied scores (0.02% apart) moved the AUROC by 0.0035.
SHUFFLED_ROWS = 2048


class GateError(ExportError):
    """int8 graphs that do not answer closely enough to the fp32 ones. `reason` says so with
    both figures; the message adds what to do."""

    def __init__(self, reason: str):
        super().__init__(f"the {reason}; export fp32 instead")
        self.reason = reason


def quantize_graphs(encoder: bytes, decoder: bytes, x: np.ndarray, latent_dim: int,
                    seed: int = 0) -> tuple[bytes, bytes]:
    """The int8 encoder and decoder, their activation ranges taken from rows x (the encoder
    under the contract's noise for K = 1, the decoder on its codes for K = DEFAULT_SAMPLES)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Feeds(CalibrationDataReader):
        def __init__(self, feeds: list[dict]):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    chunks = range(0, len(x), 512)
    encoder_feeds = [{"x": x[i:i + 512], "eps": SeededNoise(seed, 1, latent_dim, i).rows(
        0, len(x[i:i + 512]))} for i in chunks]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(encoder, options, providers=["CPUExecutionProvider"])
    codes = [session.run(None, {"x": x[i:i + 512], "eps": SeededNoise(
        seed, DEFAULT_SAMPLES, latent_dim, i).rows(0, len(x[i:i + 512]))})[2].reshape(
        -1, latent_dim) for i in chunks]
    decoder_feeds = [{"z": z} for z in codes]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, graph, feeds in (("encoder", encoder, encoder_feeds),
                                   ("decoder", decoder, decoder_feeds)):
            source, target = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.int8.onnx"
            source.write_bytes(graph)
            with _quiet_root_logger():
                quantize_static(source, target, Feeds(feeds), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=["Gemm", "MatMul", "Relu"],
                                per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8)
            out.append(_float_results(onnx.load(target)).SerializeToString())
    return out[0], out[1]


def _float_results(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its last products left in float: the quantize-dequantize pair on a Gemm's
    output that feeds no other Gemm is dropped, and the Gemm writes the dequantized tensor
    itself (a graph output, such as logits, or the input of a Slice); onnxruntime's QGemm then
    writes float. Those outputs are x_mean and x_logvar side by side, or mu and logvar: one
    uint8 range over both cost a row up to 6.9% of its score (the ionosphere development
    split)."""
    graph = model.graph
    made_by = {name: node for node in graph.node for name in node.output}
    used_by: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            used_by.setdefault(name, []).append(node)
    for quantize in [node for node in graph.node if node.op_type == "QuantizeLinear"]:
        gemm, result = made_by.get(quantize.input[0]), quantize.input[0]
        pairs = used_by.get(quantize.output[0], [])
        if gemm is None or gemm.op_type != "Gemm" or used_by[result] != [quantize] or \
                len(pairs) != 1 or pairs[0].op_type != "DequantizeLinear" or \
                any(n.op_type == "Gemm" for n in used_by.get(pairs[0].output[0], [])):
            continue
        gemm.output[list(gemm.output).index(result)] = pairs[0].output[0]
        graph.node.remove(quantize)
        graph.node.remove(pairs[0])
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(initializer)
    return model


@contextmanager
def _quiet_root_logger():
    """quantize_static advises pre-processing through logging.warning, which would also give
    the root logger a stderr handler for the rest of the process: a null handler keeps it from
    adding one, and the warnings are not shown."""
    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(disabled)
        root.removeHandler(null)


def shuffled(x: np.ndarray, copies: int = 1, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """Copies of x one after the other, each with every column permuted on its own."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.stack([column[rng.permutation(len(column))] for column in x.T],
                                    axis=1) for _ in range(copies)])


def gate(fp32: VAEGraphs, int8: VAEGraphs, x: np.ndarray, sampling: bool) -> dict:
    """The gate's figures for validation rows x, with `refused` (GateError's reason, saying
    both figures) if either fails."""
    from sklearn.metrics import roc_auc_score

    noise = SeededNoise(0, DEFAULT_SAMPLES, fp32.latent_dim)
    other = shuffled(x, copies=-(-SHUFFLED_ROWS // len(x)))
    labels = np.r_[np.zeros(len(x)), np.ones(len(other))]
    scores = {}
    for name, graphs in (("fp32", fp32), ("int8", int8)):
        scores[name] = [saturate(graphs.score_rows(rows, noise, sampling)[0].score)
                        .astype(np.float64) for rows in (x, other)]  # as the runtime answers
    base = scores["fp32"][0]
    relative = np.abs(scores["int8"][0] - base) / np.maximum(np.abs(base), 1.0)
    difference = float(relative.max())
    auroc = {name: float(roc_auc_score(labels, np.concatenate(s))) for name, s in scores.items()}
    figures = {"max_score_difference": difference,
               "median_score_difference": float(np.median(relative)),
               "auroc_fp32": auroc["fp32"], "auroc_int8": auroc["int8"],
               "tolerance": {"max_score_difference": MAX_SCORE_DIFFERENCE,
                             "max_auroc_drop": MAX_AUROC_DROP}}
    if difference > MAX_SCORE_DIFFERENCE or auroc["int8"] < auroc["fp32"] - MAX_AUROC_DROP:
        figures["refused"] = (f"int8 graphs fail the gate: their largest validation score "
                              f"difference is {difference:.2%} of the fp32 score (at most "
                              f"{MAX_SCORE_DIFFERENCE:.0%}), and their AUROC against shuffled "
                              f"rows {auroc['int8']:.4f} against fp32's {auroc['fp32']:.4f} (at "
                              f"most {MAX_AUROC_DROP} lower)")
    return figures
