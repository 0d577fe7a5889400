"""The VAE on onnxruntime: the one object that the HTTP service, the CLI and the batch jobs wrap.

`VAEGraphs` holds the two sessions and turns rows and their noise into the score terms of
`serving.core.scores`; `VAERuntime` adds a verified bundle's calibration (percentile, flag)
and draws the noise by the rule of `serving.core.noise`.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from serving.core.bundle import Bundle, BundleError
from serving.core.calibration import Calibrator
from serving.core.noise import Noise, SeededNoise, draw_latent
from serving.core.rows import InputError, check_rows
from serving.core.schema import Schema
from serving.core.impute import draw_imputations, expected_rows, fill_expected
from serving.core.scores import STUDENT_T, Scores, log_weights, score_terms
from serving.core.threads import chunk_bounds, default_threads, session_options

LARGEST = np.finfo(np.float32).max


def saturate(values: np.ndarray) -> np.ndarray:
    """Scores whose float32 maths overflowed (a huge but finite input cell) as the largest
    float32: such a row is the most anomalous there is, and NaN, which compares false with
    any threshold, would have called it normal."""
    if np.isfinite(values).all():
        return values
    return np.nan_to_num(values, nan=LARGEST, posinf=LARGEST, neginf=-LARGEST)


@dataclass(kw_only=True)
class ScoredRows(Scores):
    """Score terms with the bundle's calibration: what every endpoint and job answers."""

    percentile: np.ndarray  # (B,)
    is_anomaly: np.ndarray  # (B,)
    observed: np.ndarray  # (B,) cells observed in each row
    mu: np.ndarray | None = None  # (B, D) when asked for
    # (B, F) with explain: feature_nll minus its validation median, comparable across features
    feature_excess: np.ndarray | None = None


class VAEGraphs:
    """The encoder and decoder sessions, checked against the graph contract of docs/contract.md."""

    def __init__(self, encoder: str | os.PathLike | bytes, decoder: str | os.PathLike | bytes,
                 n_features: int, latent_dim: int, threads: int | None = None,
                 schema: Schema | None = None, likelihood: str = "gaussian"):
        self.n_features, self.latent_dim = n_features, latent_dim
        self.schema = schema  # None: a bundle made before column schemas
        self.student_t = likelihood.startswith(STUDENT_T)  # the manifest's likelihood
        self.outputs = ["x_mean", "x_logvar"]
        if schema is not None and not schema.all_numeric:
            self.outputs.append("logits")
        self.threads = threads or default_threads()
        self._chunk_pool: ThreadPoolExecutor | None = None
        self.encoder = self._session(encoder, "encoder")
        self.decoder = self._session(decoder, "decoder")
        self._check_contract()

    def _session(self, graph: str | os.PathLike | bytes, name: str) -> ort.InferenceSession:
        source = graph if isinstance(graph, bytes) else str(graph)
        try:
            return ort.InferenceSession(source, session_options(),
                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BundleError(f"the {name} graph is not loadable by onnxruntime: {message}") \
                from None

    def _check_contract(self) -> None:
        f, d = self.n_features, self.latent_dim
        expected = {
            "encoder": (self.encoder, {"x": (2, 1, f), "eps": (3, 2, d)}, ["mu", "logvar", "z"]),
            "decoder": (self.decoder, {"z": (2, 1, d)}, self.outputs),
        }
        for name, (session, inputs, outputs) in expected.items():
            found = {i.name: i for i in session.get_inputs()}
            if sorted(found) != sorted(inputs):
                raise BundleError(f"the {name} graph has inputs {sorted(found)}; "
                                  f"expected {sorted(inputs)}")
            for input_name, (rank, axis, size) in inputs.items():
                shape, kind = found[input_name].shape, found[input_name].type
                if kind != "tensor(float)" or len(shape) != rank or shape[axis] != size:
                    raise BundleError(f"the {name} input {input_name} is {kind} {shape}; "
                                      f"expected float32 of rank {rank} with {size} on axis {axis}")
            names = [o.name for o in session.get_outputs()]
            if names != outputs:
                raise BundleError(f"the {name} graph has outputs {names}; expected {outputs}")

    def encode(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        """x (B, F), eps (K, B, D) -> mu (B, D), logvar (B, D), z (K, B, D)."""
        return tuple(self.encoder.run(None, {"x": x, "eps": eps}))

    def decode(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """z (..., D) -> x_mean, x_logvar (..., F_numeric) and, with categorical columns, their
        levels' logits (..., L); leading axes are flattened into one call."""
        lead = z.shape[:-1]
        flat = np.ascontiguousarray(z.reshape(-1, self.latent_dim), dtype=np.float32)
        return tuple(out.reshape(*lead, -1) for out in self.decoder.run(None, {"z": flat}))

    def score_terms(self, x: np.ndarray, eps: np.ndarray, sampling: bool = True,
                    explain: bool = False) -> tuple[Scores, np.ndarray]:
        """Score terms of checked rows x (B, F) under noise eps (K, B, D), and mu (B, D)."""
        mu, logvar, z = self.encode(x, eps)
        decoded = self.decode(z)  # one decoder call over (K·B, D)
        return score_terms(x, mu, logvar, eps, z, decoded, sampling, explain, self.schema,
                           self.student_t), mu

    def score_rows(self, x: np.ndarray, noise: Noise, sampling: bool = True,
                   explain: bool = False) -> tuple[Scores, np.ndarray]:
        """Score terms and mu of checked rows x (B, F), in the chunks of chunk_bounds: memory
        stays bounded whatever B and K are, and a row's answer does not depend on its chunk.
        With several threads the chunks run side by side, each on one thread from noise to
        score maths; the sessions run on their caller's thread, so the numpy work of one
        chunk overlaps the graphs of another (in process at K = 16 on 2 CPUs: about 35k rows/s
        fp32 and 77k int8, against 30k and 60k with both threads inside each onnxruntime
        call)."""
        parts = self.map_chunks(lambda lo, hi: self.score_terms(
            x[lo:hi], noise.rows(lo, hi), sampling, explain), len(x), noise.n_samples)
        terms, mus = zip(*parts)
        return Scores.concat(list(terms)), mus[0] if len(mus) == 1 else np.concatenate(mus)

    def map_chunks(self, work, rows: int, n_samples: int) -> list:
        """work(lo, hi) of each chunk of chunk_bounds in order, run side by side on the
        runtime's threads (a lone chunk on the caller's)."""
        bounds = chunk_bounds(rows, n_samples, self.threads)
        if len(bounds) == 1:
            return [work(*bounds[0])]
        return list(self._pool().map(lambda bound: work(*bound), bounds))

    def _pool(self) -> ThreadPoolExecutor:
        """The runtime's `threads` threads that run chunks (made when first needed)."""
        if self._chunk_pool is None:
            self._chunk_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vae-chunks")
        return self._chunk_pool


def named_table(x):
    """x as a pyarrow table if it is one or a pandas DataFrame (columns by name), else None."""
    import pyarrow as pa

    if isinstance(x, pa.Table):
        return x
    if hasattr(x, "columns") and hasattr(x, "iloc"):
        return pa.Table.from_pandas(x, preserve_index=False)
    return None


def _without_none(value):
    """A JSON value with the null fields of its objects left out (written either way)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class VAERuntime:
    """A verified bundle on onnxruntime, scoring rows by the contract's draw rule and maths."""

    def __init__(self, bundle: Bundle, threads: int | None = None):
        self.bundle = bundle
        self.manifest = manifest = bundle.manifest
        self.n_features, self.latent_dim = manifest.n_features, manifest.latent_dim
        self.schema = manifest.schema_  # None: made before column schemas (no missing cells)
        self.graphs = VAEGraphs(bundle.encoder_path, bundle.decoder_path, manifest.n_features,
                                manifest.latent_dim, threads, self.schema, manifest.likelihood)
        self._check_identity()
        self.calibrator = Calibrator(manifest.calibration)
        self.threshold = np.float32(manifest.calibration.threshold)  # of complete rows

    @property
    def version(self) -> str:
        return self.manifest.version

    def _check_identity(self) -> None:
        """The graphs carry their model's identity (ONNX metadata_props: name, version,
        feature names, normalization, schema, ...): a manifest that differs from them in any
        field they carry is refused, so an edited manifest is never served as the model."""
        fields = _without_none(self.manifest.model_dump(by_alias=True, mode="json"))
        for name, session in (("encoder", self.graphs.encoder), ("decoder", self.graphs.decoder)):
            props = session.get_modelmeta().custom_metadata_map
            for key in sorted(props, key=lambda k: (k not in ("name", "version"), k)):
                if key not in fields:
                    continue
                ours, carried = fields[key], props[key]
                if isinstance(ours, str):
                    same = carried == ours
                else:
                    try:
                        same = _without_none(json.loads(carried)) == ours
                    except (ValueError, RecursionError):
                        same = False
                if not same:
                    what = f"is {ours!r} but {name}.onnx says {carried[:80]!r}" \
                        if isinstance(ours, str) else f"differs from what {name}.onnx carries"
                    raise BundleError(f"the manifest's {key} {what}: the manifest does not "
                                      f"belong to these graphs")

    def check(self, x, field: str = "x", max_rows: int | None = None) -> np.ndarray:
        """The model's matrix of rows: an array or lists (columns by position), a pandas
        DataFrame or pyarrow table (by name: reordered or extra columns change nothing), or
        records (a list of dicts, with a column schema)."""
        table = named_table(x)
        if table is not None:
            from serving.tables.columns import arrow_to_rows, match_columns
            names = self.manifest.feature_names
            match_columns(table.column_names, names, field)
            x = arrow_to_rows(table.select(names), field) if self.schema is None \
                else self.schema.from_arrow(table, field)
        elif isinstance(x, list) and x and isinstance(x[0], dict):
            if self.schema is None:
                raise InputError(f"{field} holds records, which need a model with a column "
                                 f"schema; this one was made before them: pass rows of numbers")
            x = self.schema.from_records(x, field)
        elif self.schema is not None and not self.schema.all_numeric and \
                not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
            raise InputError(f"{field}: this model has categorical columns: pass a DataFrame, "
                             f"a pyarrow table or records, whose columns are matched by name")
        return check_rows(x, self.n_features, field, max_rows,
                          allow_missing=self.schema is not None)

    def noise(self, seed: int, n_samples: int, start: int = 0) -> SeededNoise:
        """The contract's noise for rows numbered start, start+1, ... of this model."""
        return SeededNoise(seed, n_samples, self.latent_dim, start)

    def score(self, x, noise: Noise, explain: bool = False,
              with_latent: bool = False) -> ScoredRows:
        """Scores of rows x (B, F) under the noise of their positions, with the calibration.
        Every surface scores here, with `self.noise(seed, K, start)` (the contract's draw) or
        the part of it that a merged request holds (DrawnNoise)."""
        x = self.check(x)
        with np.errstate(over="ignore", invalid="ignore"):  # saturated below
            terms, mu = self.graphs.score_rows(x, noise, self.manifest.sampling, explain)
        score = saturate(terms.score)
        observed = np.count_nonzero(~np.isnan(x), axis=1)
        share, is_anomaly = self.calibrator.judge(score, observed)
        feature_nll = None if terms.feature_nll is None else saturate(terms.feature_nll)
        medians = self.manifest.calibration.feature_nll_median
        excess = None if feature_nll is None or medians is None else \
            saturate(feature_nll - np.asarray(medians, np.float32))
        return ScoredRows(score=score, recon_nll=saturate(terms.recon_nll),
                          kl=saturate(terms.kl), feature_nll=feature_nll,
                          percentile=share, is_anomaly=is_anomaly, observed=observed,
                          mu=mu if with_latent else None, feature_excess=excess)

    def encode(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        """mu, logvar (B, D) and z (K, B, D) of checked rows x under eps (K, B, D)."""
        return self.graphs.encode(x, eps)

    def reconstruct(self, x, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The decoder's rows averaged over K samples of z (K = 0 decodes mu), and with
        categorical columns each cell's probability (tables.expected_rows)."""
        x = self.check(x)
        if n_samples == 0:
            mu, _, _ = self.graphs.encode(x, np.zeros((0, len(x), self.latent_dim), np.float32))
            return expected_rows(self.graphs.decode(mu[None]), self.schema)
        _, _, z = self.graphs.encode(x, self.noise(seed, n_samples).rows(0, len(x)))
        return expected_rows(self.graphs.decode(z), self.schema)

    def sample(self, n: int, seed: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """n draws z = temperature · N(0, I) and their decoder rows: (x (n, F), z (n, D))."""
        z = draw_latent(seed, n, self.latent_dim, temperature)
        return expected_rows(self.graphs.decode(z[None]), self.schema)[0], z

    def impute(self, x, n_samples: int, seed: int, draws: int = 0, start: int = 0) -> np.ndarray:
        """Rows numbered start, start+1, ... with their missing cells filled
        (serving.core.impute): (B, F), or with draws > 0 that many multiple imputations,
        (draws, B, F)."""
        if self.schema is None:
            raise InputError("this model was made before column schemas and takes no missing "
                             "cells, so it has none to impute; train it again to impute")
        x = self.check(x)
        noise = self.noise(seed, n_samples, start)

        def chunk(lo: int, hi: int) -> np.ndarray:
            eps = noise.rows(lo, hi)
            mu, logvar, z = self.graphs.encode(x[lo:hi], eps)
            decoded = self.graphs.decode(z)
            student_t = self.graphs.student_t
            log_w = log_weights(x[lo:hi], mu, logvar, eps, z, decoded, self.schema, student_t)
            if draws:
                return draw_imputations(x[lo:hi], decoded, log_w, self.schema, seed, draws,
                                        start + lo, student_t)
            return fill_expected(x[lo:hi], decoded, log_w, self.schema)

        return np.concatenate(self.graphs.map_chunks(chunk, len(x), n_samples),
                              axis=1 if draws else 0)

    def warm_up(self) -> None:
        """Run both graphs once at a few shapes so the first request pays no set-up cost."""
        for rows, k in ((1, 1), (64, 16)):
            self.score(np.zeros((rows, self.n_features), np.float32), self.noise(0, k))
