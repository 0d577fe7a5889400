"""The encoder and decoder of a trained VAE as two ONNX graphs, with `eps` as an input.

encoder(x (batch, F), eps (n_samples, batch, D)) -> mu, logvar (batch, D), z (n_samples, batch, D)
decoder(z (batch, D)) -> x_mean, x_logvar (batch, F_numeric) [, logits (batch, L)]
Normalization is inside both (the model's buffers); `batch` and `n_samples` are dynamic. With a
column schema, x holds NaN for missing cells and level indices in categorical columns (the
encoder computes the mask and the one-hot levels itself), and the decoder adds the logits of
the categorical columns' levels when there are any.
"""

import functools
import importlib
import logging
import warnings

import onnx
import torch
from torch import nn
from torch.onnx._internal._lazy_import import onnxscript_apis

from training.model import VAE

OPSET = 18


class EncoderGraph(nn.Module):
    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        mu, logvar = self.vae.encode(x)
        return mu, logvar, self.vae.reparameterize(mu, logvar, eps)


class DecoderGraph(nn.Module):
    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor):
        return self.vae.decode(z)


logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"

# torch.onnx's exporter rebuilds its registry of onnxscript's ~1,000 ATen functions on every
# export, and onnxscript parses each function's source again to list them: about 40% of a small
# model's export. The list is onnxscript's own and the same for the life of the process (the
# exporter makes a new registry from it each time), so it is listed once. The module is the one
# the pinned torch calls (its lazy import's name).
torchlib_api = importlib.import_module(onnxscript_apis._name)
torchlib_api.get_torchlib_ops = functools.cache(torchlib_api.get_torchlib_ops)


def _to_onnx(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
             dynamic_shapes: dict) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not our concern
        program = torch.onnx.export(module, args, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes,
                                    opset_version=OPSET, dynamo=True, external_data=False,
                                    optimize=True, verbose=False)
    return program.model_proto


def export_graphs(vae: VAE) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(encoder, decoder) as self-contained ONNX models."""
    vae = vae.eval()
    batch = torch.export.Dim("batch", min=1)
    n_samples = torch.export.Dim("n_samples", min=1)
    d, f = vae.latent_dim, vae.n_features
    example = torch.randn(3, f)
    if vae.layout is not None:  # level indices in categorical columns, a missing cell
        example[:, vae.layout.categorical] = 0.0
        example[0, 0] = float("nan")
    encoder = _to_onnx(EncoderGraph(vae), (example, torch.randn(2, 3, d)),
                       ["x", "eps"], ["mu", "logvar", "z"],
                       {"x": {0: batch}, "eps": {0: n_samples, 1: batch}})
    outputs = ["x_mean", "x_logvar"]
    if vae.layout is not None and vae.layout.levels:
        outputs.append("logits")
    decoder = _to_onnx(DecoderGraph(vae), (torch.randn(3, d),), ["z"], outputs,
                       {"z": {0: batch}})
    return encoder, decoder
