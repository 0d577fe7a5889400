"""The HTTP service of SPEC.md, as two BentoML services that `bentoml serve` runs together.

VAE       the public API: checks each request, draws its noise by SPEC.md's rule (so before any
          merging), calls VAEModel, and shapes the answer. It never runs a graph.
VAEModel  holds the onnxruntime sessions. Its batchable methods let BentoML's adaptive batcher
          merge the rows of concurrent requests into few graph calls; a row's answer does not
          depend on its batch-mates, because its noise came with it.
"""

import asyncio
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import aiohttp
import anyio
import bentoml
import numpy as np
import prometheus_client
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from serving.http.api_models import (DecodeAnswer, EncodeAnswer, Latents, ReconstructAnswer,
                                Rows, SampleAnswer, SampleCount, ScoreAnswer, Seed, Temperature,
                                samples)
from serving.jobs.local import score_table, write_scores
from serving.core.bundle import is_model_tag, load_bundle, locate_bundle
from serving.http.errors import JSONErrorMiddleware
from serving.core.rows import InputError, check_rows
from serving.core.noise import draw_eps, draw_latent, new_seed
from serving.core.runtime import ScoredRows, VAERuntime
from serving.http.settings import SETTINGS
from serving.tables.sources import chunks, open_source
MEDIA_TYPES = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet",
               ".npy": "application/octet-stream"}

# BentoML serves these at /metrics beside its own (in multiprocess mode it sets
# PROMETHEUS_MULTIPROC_DIR before the service module is imported).
ROWS = prometheus_client.Counter("vae_rows", "rows answered, per endpoint", ["endpoint"])
ANOMALIES = prometheus_client.Counter("vae_anomalies", "rows flagged is_anomaly, per endpoint",
                                      ["endpoint"])
SCORES = prometheus_client.Histogram(
    "vae_anomaly_score", "anomaly scores answered (nats)",
    buckets=(-100, -20, 0, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, float("inf")))


async def _first_done(tasks: set):
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    task = done.pop()
    tasks.discard(task)
    return task.result()


def _merged(jobs: list[dict], run) -> list[dict]:
    """Run jobs alike in everything but their rows as one call: concatenate x along rows and
    eps along its batch axis, then cut every output back at the jobs' boundaries."""
    groups = defaultdict(list)
    for i, job in enumerate(jobs):
        groups[(job["eps"].shape[0], job.get("explain", False))].append(i)
    results: list[dict] = [{}] * len(jobs)
    for (_, explain), members in groups.items():
        x = np.concatenate([jobs[i]["x"] for i in members])
        eps = np.concatenate([jobs[i]["eps"] for i in members], axis=1)
        outputs = run(x, eps, explain)  # name -> array whose first axis (or axis 1 for z) is rows
        bounds = np.cumsum([0] + [len(jobs[i]["x"]) for i in members])
        for i, lo, hi in zip(members, bounds[:-1], bounds[1:]):
            results[i] = {name: value[:, lo:hi] if name == "z" else value[lo:hi]
                          for name, value in outputs.items()}
    return results


@bentoml.service(name="vae-model", workers=SETTINGS.model_workers,
                 traffic={"timeout": SETTINGS.timeout})
class VAEModel:
    """onnxruntime sessions of one bundle; called by VAE only."""

    if is_model_tag(SETTINGS.model):
        bento_model = bentoml.models.BentoModel(SETTINGS.model)  # `bentoml build` packages it

    def __init__(self) -> None:
        self.runtime = VAERuntime.load(SETTINGS.model, SETTINGS.ort_threads)
        self.runtime.warm_up()
        # Graph calls run one at a time in a worker thread: the event loop stays free to
        # gather the next batch, and onnxruntime's threads are never oversubscribed.
        self.graph_calls = anyio.CapacityLimiter(1)

    async def _in_thread(self, func, *args):
        return await anyio.to_thread.run_sync(func, *args, limiter=self.graph_calls)

    def __is_ready__(self) -> bool:
        return True  # __init__ has loaded, verified and warmed up both graphs

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.batch_max_size,
                 max_latency_ms=SETTINGS.batch_max_latency_ms)
    async def score(self, jobs: list[dict]) -> list[dict]:
        """Jobs {x (B, F), eps (K, B, D), explain} -> score, recon_nll, kl, percentile, ..."""
        def run(x, eps, explain):
            scored = self.runtime.score_with_eps(x, eps, explain)
            return {k: v for k, v in vars(scored).items() if v is not None}
        return await self._in_thread(_merged, jobs, run)

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.batch_max_size,
                 max_latency_ms=SETTINGS.batch_max_latency_ms)
    async def encode(self, jobs: list[dict]) -> list[dict]:
        """Jobs {x (B, F), eps (K, B, D)} -> mu, logvar (B, D), z (K, B, D)."""
        def run(x, eps, _):
            return dict(zip(("mu", "logvar", "z"), self.runtime.graphs.encode(x, eps)))
        return await self._in_thread(_merged, jobs, run)

    @bentoml.api
    async def decode(self, z: np.ndarray) -> dict:
        """z (..., D) -> x_mean, x_logvar (..., F), in one decoder call."""
        x_mean, x_logvar = await self._in_thread(self.runtime.graphs.decode, z)
        return {"x_mean": x_mean, "x_logvar": x_logvar}


def _keep_model_session(proxy) -> None:
    """BentoML 1.4's client to a dependency replaces its aiohttp session every 100 requests or
    300 s by closing the old one, which drops or stalls the calls still in flight on it (seen
    here as requests hanging until the 120 s timeout under load; BentoML issue #5540). One
    session for the worker's life avoids that; stale pooled connections are retried in _call."""
    manager = getattr(getattr(proxy, "_async", None), "_session_manager", None)
    if manager is not None:
        manager.max_requests, manager.max_age = sys.maxsize, float("inf")


@bentoml.service(name="vae", workers=SETTINGS.workers, traffic={"timeout": SETTINGS.timeout})
class VAE:
    """A variational autoencoder on onnxruntime: encode, decode, sample, reconstruct and
    anomaly scores, reproducible from the returned seed."""

    model = bentoml.depends(VAEModel)

    def __init__(self) -> None:
        _keep_model_session(self.model)
        self.manifest = load_bundle(locate_bundle(SETTINGS.model)).manifest
        self.version = self.manifest.version
        self.threshold = float(np.float32(self.manifest.calibration.threshold))

    # -- checks shared by the endpoints ---------------------------------------------------

    def _rows(self, x, field: str = "x", width: int | None = None) -> np.ndarray:
        try:
            return check_rows(x, width or self.manifest.n_features, field, SETTINGS.max_rows)
        except InputError as e:
            raise bentoml.exceptions.InvalidArgument(str(e)) from None

    def _noise(self, seed: int | None, rows: int, n_samples: int) -> tuple[int, np.ndarray]:
        seed = new_seed() if seed is None else seed
        return seed, draw_eps(seed, 0, rows, n_samples, self.manifest.latent_dim)

    async def _call(self, method: str, *args):
        """Call VAEModel. A pooled connection that the model's server closed meanwhile is
        retried once: BentoML's client keeps idle connections 15 s, the server 5 s (BentoML
        issue #4971); every call here is idempotent."""
        try:
            return await getattr(self.model, method)(*args)
        except aiohttp.ClientConnectionError:
            return await getattr(self.model, method)(*args)

    async def _score(self, x: np.ndarray, eps: np.ndarray, explain: bool, endpoint: str) -> dict:
        scored = (await self._call("score", [{"x": x, "eps": eps, "explain": explain}]))[0]
        ROWS.labels(endpoint=endpoint).inc(len(x))
        ANOMALIES.labels(endpoint=endpoint).inc(int(scored["is_anomaly"].sum()))
        for value in scored["score"][:1000]:  # a bounded sample keeps the hot path cheap
            SCORES.observe(float(value))
        return scored

    # -- endpoints ------------------------------------------------------------------------

    @bentoml.api
    async def encode(self, x: Rows, n_samples: samples(0) = 0, seed: Seed = None) -> EncodeAnswer:
        """mu and logvar of q(z|x) and, with n_samples > 0, z = mu + sigma * eps."""
        rows = self._rows(x)
        seed, eps = self._noise(seed, len(rows), n_samples)
        out = (await self._call("encode", [{"x": rows, "eps": eps}]))[0]
        ROWS.labels(endpoint="encode").inc(len(rows))
        return EncodeAnswer.model_construct(
            mu=out["mu"].tolist(), logvar=out["logvar"].tolist(),
            z=out["z"].tolist() if n_samples else None, seed=seed, model_version=self.version)

    @bentoml.api
    async def decode(self, z: Latents) -> DecodeAnswer:
        """Mean and log-variance of p(x|z) for each code, in raw feature units."""
        codes = self._rows(z, "z", self.manifest.latent_dim)
        out = await self._call("decode", codes)
        ROWS.labels(endpoint="decode").inc(len(codes))
        return DecodeAnswer.model_construct(x_mean=out["x_mean"].tolist(),
                                            x_logvar=out["x_logvar"].tolist(),
                                            model_version=self.version)

    @bentoml.api
    async def sample(self, n: SampleCount = 16, seed: Seed = None,
                     temperature: Temperature = 1.0) -> SampleAnswer:
        """n new rows: decoder means of z = temperature * N(0, I)."""
        seed = new_seed() if seed is None else seed
        z = draw_latent(seed, n, self.manifest.latent_dim, temperature)
        out = await self._call("decode", z)
        ROWS.labels(endpoint="sample").inc(n)
        return SampleAnswer.model_construct(x=out["x_mean"].tolist(), z=z.tolist(), seed=seed,
                                            model_version=self.version)

    @bentoml.api
    async def reconstruct(self, x: Rows, n_samples: samples(0) = 1,
                          seed: Seed = None) -> ReconstructAnswer:
        """Decoder means averaged over n_samples codes z; n_samples 0 decodes mu."""
        rows = self._rows(x)
        seed, eps = self._noise(seed, len(rows), n_samples)
        out = (await self._call("encode", [{"x": rows, "eps": eps}]))[0]
        codes = out["z"] if n_samples else out["mu"]
        x_mean = (await self._call("decode", codes))["x_mean"]
        ROWS.labels(endpoint="reconstruct").inc(len(rows))
        return ReconstructAnswer.model_construct(
            x_mean=(x_mean.mean(axis=0) if n_samples else x_mean).tolist(), seed=seed,
            model_version=self.version)

    @bentoml.api
    async def anomaly_score(self, x: Rows, n_samples: samples(1) = 16, seed: Seed = None,
                            explain: bool = False) -> ScoreAnswer:
        """-log p(x) per row (importance-weighted, K = n_samples), its terms, percentile
        among validation rows and the anomaly flag; with explain, each feature's share."""
        rows = self._rows(x)
        seed, eps = self._noise(seed, len(rows), n_samples)
        scored = await self._score(rows, eps, explain, "anomaly_score")
        return ScoreAnswer.model_construct(
            score=scored["score"].tolist(), recon_nll=scored["recon_nll"].tolist(),
            kl=scored["kl"].tolist(), percentile=scored["percentile"].tolist(),
            is_anomaly=scored["is_anomaly"].tolist(), threshold=self.threshold,
            feature_nll=scored["feature_nll"].tolist() if explain else None, seed=seed,
            model_version=self.version)

    @bentoml.api
    async def anomaly_score_file(self, file: Path, n_samples: samples(1) = 16,
                                 seed: Seed = None) -> Path:
        """A .npy, .csv or .parquet file in; the same format out, one row of scores per row
        (row, score, recon_nll, kl, percentile, is_anomaly). Named columns are matched to
        the model's feature_names; a .npy file is taken by position."""
        in_flight: set = set()  # the model scores one chunk while the next is read and drawn
        try:
            source = open_source(file, self.manifest.feature_names)
            seed = new_seed() if seed is None else seed
            tables = []
            for first, rows, _ in chunks(source, SETTINGS.file_chunk_rows):
                eps = draw_eps(seed, first, first + len(rows), n_samples,
                               self.manifest.latent_dim)
                in_flight.add(asyncio.create_task(self._score_part(first, rows, eps)))
                if len(in_flight) >= 2:
                    tables.append(await _first_done(in_flight))
            while in_flight:
                tables.append(await _first_done(in_flight))
            if not tables:
                raise InputError(f"{file} has no rows; expected at least one row to score")
        except InputError as e:
            for task in in_flight:
                task.cancel()
            raise bentoml.exceptions.InvalidArgument(
                str(e).replace(str(file), "the uploaded file")) from None
        suffix = source.kind
        fd, out = tempfile.mkstemp(suffix=suffix)
        os.close(fd)
        tables.sort(key=lambda t: t["row"][0].as_py())
        await anyio.to_thread.run_sync(write_scores, tables, Path(out))
        return FileResponse(out, media_type=MEDIA_TYPES[suffix], filename=f"scores{suffix}",
                            headers={"X-VAE-Seed": str(seed), "X-VAE-Model-Version": self.version},
                            background=BackgroundTask(os.unlink, out))

    async def _score_part(self, first: int, rows: np.ndarray, eps: np.ndarray):
        scored = await self._score(rows, eps, False, "anomaly_score_file")
        return score_table(first, ScoredRows(**scored), None)

    @bentoml.api
    def metadata(self) -> dict:
        """The bundle's manifest without its long per-feature and per-quantile lists."""
        return self.manifest.public()


VAE.add_asgi_middleware(JSONErrorMiddleware, max_json_bytes=SETTINGS.max_json_bytes,
                        max_file_bytes=SETTINGS.max_file_bytes, readable=("/metadata",))
