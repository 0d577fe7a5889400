"""The HTTP service of docs/contract.md: one BentoML service whose workers each hold the onnxruntime
sessions of the bundle.

A request is checked, its noise drawn by the contract's rule, and its rows handed to a Merger that
runs the rows of concurrent requests in shared graph calls; no request crosses a process.
This module only defines: serving/http/app.py, which `bentoml serve` imports, builds the
service from the settings and the bundle (serving/http/assemble.py).
"""

import asyncio
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from serving.core.noise import DEFAULT_SAMPLES as K, DrawnNoise, seed_or_new
from serving.core.rows import InputError
from serving.http.api_models import (DecodeAnswer, EncodeAnswer, Explain, ImputeAnswer,
                                     ReconstructAnswer, RequestTypes, SampleAnswer, ScoreAnswer,
                                     Seed, Temperature)
from serving.http.guard import Budget
from serving.http.inputs import request_rows
from serving.http.merger import Job, Merger
from serving.http.metrics import DriftCounters, count
from serving.http.uploads import score_upload
from serving.http.settings import Settings
from serving.core.bundle import Bundle
from serving.core.drift import Drift
from serving.core.runtime import VAERuntime, saturate
from serving.store import is_model_tag
from serving.tables.sources import file_columns, open_source

DESCRIPTION = """A variational autoencoder served on onnxruntime: anomaly scores (an
importance-weighted −log p(x) with its reconstruction and KL terms, a percentile among
validation rows and an anomaly flag), latent codes, reconstructions and samples. Every random
draw comes from the request's `seed` (returned when not given), so any answer can be replayed
bit for bit. Errors are HTTP 4xx with `{"error": "..."}`. The Open Inference Protocol (KServe
V2) is served under /v2."""
MAX_CODE = 1e4  # |z| accepted by /decode: 1e4 standard deviations of the prior
MEDIA_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet",
               ".npy": "application/octet-stream"}


def service_class(settings: Settings, bundle: Bundle) -> type:
    """The service's class for these settings and this (verified) bundle: its request types
    take their widths and limits from both. serving.http.assemble decorates it."""
    T = RequestTypes(settings, bundle.manifest.n_features, bundle.manifest.latent_dim,
                     missing=bundle.manifest.schema_ is not None)

    class VAE:
        """A variational autoencoder on onnxruntime: encode, decode, sample, reconstruct and
        anomaly scores, reproducible from the returned seed."""

        def __init__(self) -> None:
            self.settings = settings
            self.runtime = VAERuntime(bundle, settings.ort_threads)  # verified by assemble
            self.runtime.warm_up()
            self.manifest = self.runtime.manifest
            self.version = self.runtime.version
            self.threshold = float(self.runtime.threshold)
            calibration = self.manifest.calibration
            reference = self.manifest.drift.model_dump() if self.manifest.drift else None
            self.drift = DriftCounters(Drift(reference, calibration.n_samples),
                                       calibration.target_fpr)
            # Every graph call of the process runs on this one thread: onnxruntime's threads are
            # never oversubscribed, and the arrays come and go in one allocator arena.
            self.graph_thread = ThreadPoolExecutor(1, thread_name_prefix="graphs")
            self.budget = Budget(settings.max_inflight_row_samples)
            self.scorer = Merger(self._score_rows, self.graph_thread, settings.merge_max_rows)
            self.encoder = Merger(self._encode_rows, self.graph_thread, settings.merge_max_rows)

        def __is_ready__(self) -> bool:
            return True  # __init__ has loaded, verified and warmed up both graphs

        # -- graph calls, run on graph_thread ------------------------------------------------------

        def _score_rows(self, x: np.ndarray, eps: np.ndarray, explain: bool) -> dict:
            scored = self.runtime.score(x, DrawnNoise(eps), explain, with_latent=True)
            self.drift.observe(x, scored.mu, scored.percentile, eps.shape[0])
            return {k: v for k, v in vars(scored).items() if v is not None and k != "mu"}

        def _encode_rows(self, x: np.ndarray, eps: np.ndarray, _: bool) -> dict:
            return dict(zip(("mu", "logvar", "z"), self.runtime.encode(x, eps)))

        async def _on_graph_thread(self, func, *args):
            return await asyncio.get_running_loop().run_in_executor(self.graph_thread, func, *args)

        # -- checks shared by the endpoints ---------------------------------------------------

        def _rows(self, x, field: str = "x", records=None) -> np.ndarray:
            return request_rows(self.runtime, settings.max_rows, x, field, records)

        def _noise(self, seed: int | None, rows: int, n_samples: int) -> tuple[int, np.ndarray]:
            self._bound(rows, n_samples)
            seed = seed_or_new(seed)
            return seed, self.runtime.noise(seed, n_samples).rows(0, rows)  # the one draw rule

        def _bound(self, rows: int, n_samples: int) -> None:
            """rows × n_samples within VAE_MAX_ROW_SAMPLES: the noise, the graph work and the
            answer of a request grow with it."""
            if rows * max(1, n_samples) > settings.max_row_samples:
                raise InputError(
                    f"{rows} rows × n_samples {n_samples} is {rows * n_samples} row-samples; at "
                    f"most {settings.max_row_samples} are accepted per request (send fewer rows "
                    f"or samples, or use the file endpoint or `vae score`)")

        async def score_request(self, x, n_samples: int, seed: int | None, endpoint: str,
                                explain: bool = False,
                                records=None) -> tuple[int, dict[str, np.ndarray]]:
            """The seed and the scores of one request's rows: checked, noised, merged."""
            rows = self._rows(x, records=records)
            async with self.budget.hold(len(rows) * n_samples):
                seed, eps = self._noise(seed, len(rows), n_samples)
                scored = await self.scorer.submit(Job(rows, eps, explain))
            self._count(endpoint, len(rows), scored["is_anomaly"], scored["score"])
            return seed, scored

        def _count(self, endpoint: str, rows: int, is_anomaly: np.ndarray | None = None,
                   score: np.ndarray | None = None) -> None:
            count(endpoint, rows, is_anomaly, score)

        def _observe_drift(self, x: np.ndarray, scored, n_samples: int) -> None:
            self.drift.observe(x, scored.mu, scored.percentile, n_samples)

        # -- endpoints ------------------------------------------------------------------------

        @bentoml.api
        async def encode(self, x: T.Rows = None, n_samples: T.samples(0) = 0,
                         seed: Seed = None, records: T.Records = None) -> EncodeAnswer:
            """mu and logvar of q(z|x) and, with n_samples > 0, z = mu + sigma * eps."""
            rows = self._rows(x, records=records)
            async with self.budget.hold(len(rows) * max(1, n_samples)):
                seed, eps = self._noise(seed, len(rows), n_samples)
                out = await self.encoder.submit(Job(rows, eps))
            self._count("encode", len(rows))
            return EncodeAnswer.model_construct(
                mu=out["mu"].tolist(), logvar=out["logvar"].tolist(),
                z=out["z"].tolist() if n_samples else None, seed=seed, model_version=self.version)

        @bentoml.api
        async def decode(self, z: T.Latents) -> DecodeAnswer:
            """Mean and log-variance of p(x|z) for each code, in raw feature units (of a
            student-t bundle: the location and the log of the scale's square)."""
            codes = self._rows(z, "z")
            far = np.argwhere(np.abs(codes) > MAX_CODE)
            if len(far):
                r, c = far[0]
                raise InputError(f"z[{r}][{c}] is {float(codes[r, c]):g}; expected codes "
                                 f"within ±{MAX_CODE:g} (the prior is N(0, I))")
            decoded = await self._on_graph_thread(self.runtime.graphs.decode, codes)
            x_mean, x_logvar = saturate(decoded[0]), saturate(decoded[1])
            self._count("decode", len(codes))
            return DecodeAnswer.model_construct(x_mean=x_mean.tolist(), x_logvar=x_logvar.tolist(),
                                                model_version=self.version)

        @bentoml.api
        async def sample(self, n: T.SampleCount = 16, seed: Seed = None,
                         temperature: Temperature = 1.0) -> SampleAnswer:
            """n new rows: decoder means of z = temperature * N(0, I) (with categorical columns, as
            records with each one's most likely level)."""
            seed = seed_or_new(seed)
            x, z = await self._on_graph_thread(self.runtime.sample, n, seed, temperature)
            self._count("sample", n)
            schema = self.runtime.schema
            if schema is not None and not schema.all_numeric:
                return SampleAnswer.model_construct(records=schema.to_records(x), z=z.tolist(),
                                                    seed=seed, model_version=self.version)
            return SampleAnswer.model_construct(x=x.tolist(), z=z.tolist(), seed=seed,
                                                model_version=self.version)

        @bentoml.api
        async def reconstruct(self, x: T.Rows = None, n_samples: T.samples(0) = 1,
                              seed: Seed = None, records: T.Records = None) -> ReconstructAnswer:
            """Decoder means averaged over n_samples codes z; n_samples 0 decodes mu. With
            categorical columns, records: each column's mean or most likely level, and the
            levels' probabilities."""
            rows = self._rows(x, records=records)
            self._bound(len(rows), n_samples)
            seed = seed_or_new(seed)
            async with self.budget.hold(len(rows) * max(1, n_samples)):
                x_mean, chance = await self._on_graph_thread(self.runtime.reconstruct, rows,
                                                             n_samples, seed)
            self._count("reconstruct", len(rows))
            if chance is not None:
                return ReconstructAnswer.model_construct(
                    records=self.runtime.schema.to_records(x_mean),
                    probability=self.runtime.schema.level_chances(chance), seed=seed,
                    model_version=self.version)
            return ReconstructAnswer.model_construct(x_mean=x_mean.tolist(), seed=seed,
                                                     model_version=self.version)

        @bentoml.api
        async def impute(self, x: T.Rows = None, records: T.Records = None,
                         n_samples: T.samples(1) = K, draws: T.Draws = 0,
                         seed: Seed = None) -> ImputeAnswer:
            """The rows with their missing cells filled with E[x_mis | x_obs] under the model
            (importance-weighted over n_samples codes), or with draws > 0 that many multiple
            imputations (each a draw from p(x_mis | x_obs)); observed cells come back as sent."""
            rows = self._rows(x, records=records)
            self._bound(len(rows), n_samples * max(1, draws))
            seed = seed_or_new(seed)
            async with self.budget.hold(len(rows) * n_samples * max(1, draws)):
                filled = await self._on_graph_thread(self.runtime.impute, rows, n_samples, seed,
                                                     draws)
            self._count("impute", len(rows))
            schema = self.runtime.schema
            if records is not None:
                answer = [schema.to_records(f) for f in filled] if draws else \
                    schema.to_records(filled)
                return ImputeAnswer.model_construct(records=answer, seed=seed,
                                                    model_version=self.version)
            return ImputeAnswer.model_construct(x=filled.tolist(), seed=seed,
                                                model_version=self.version)

        @bentoml.api
        async def anomaly_score(self, x: T.Rows = None, n_samples: T.samples(1) = K,
                                seed: Seed = None, explain: Explain = False,
                                records: T.Records = None) -> ScoreAnswer:
            """-log p(x) per row (importance-weighted, K = n_samples; over its observed cells),
            its terms, percentile among validation rows with as many observed cells and the
            anomaly flag; with explain, each feature's share."""
            seed, scored = await self.score_request(x, n_samples, seed, "anomaly_score", explain,
                                                    records)
            return ScoreAnswer.model_construct(
                score=scored["score"].tolist(), recon_nll=scored["recon_nll"].tolist(),
                kl=scored["kl"].tolist(), percentile=scored["percentile"].tolist(),
                is_anomaly=scored["is_anomaly"].tolist(), threshold=self.threshold,
                observed=scored["observed"].tolist() if self.runtime.schema else None,
                feature_nll=scored["feature_nll"].tolist() if explain else None,
                feature_excess=scored["feature_excess"].tolist()
                if explain and "feature_excess" in scored else None, seed=seed,
                model_version=self.version)

        @bentoml.api
        async def anomaly_score_file(self, file: Path, n_samples: T.samples(1) = K,
                                     seed: Seed = None, ctx: bentoml.Context = None) -> Path:
            """A .npy, .csv or .parquet file in; the same format out, one row of scores per row
            (row, score, recon_nll, kl, percentile, is_anomaly). Named columns are matched to
            the model's feature_names; a .npy file is taken by position."""
            seed = seed_or_new(seed)
            fd, out = tempfile.mkstemp(suffix=Path(file).suffix.lower())
            os.close(fd)
            try:
                schema = self.runtime.schema
                kept = [c for c in file_columns(file) if schema and c in schema.ignored]
                source = open_source(file, self.manifest.feature_names, kept, schema)
                await score_upload(self, source, n_samples, seed, ctx.request, Path(out))
            except BaseException as e:
                os.unlink(out)
                if isinstance(e, InputError):
                    raise InputError(str(e).replace(str(file), "the uploaded file")) from None
                raise
            return FileResponse(out, media_type=MEDIA_TYPES[source.kind],
                                filename=f"scores{source.kind}",
                                headers={"X-VAE-Seed": str(seed),
                                         "X-VAE-Model-Version": self.version},
                                background=BackgroundTask(os.unlink, out))

        @bentoml.api
        def metadata(self) -> dict:
            """The bundle's manifest without its long per-feature and per-quantile lists."""
            return self.manifest.public()

    if is_model_tag(settings.model):
        VAE.bento_model = bentoml.models.BentoModel(settings.model)  # `bentoml build` packs it
    return VAE
