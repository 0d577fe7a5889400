"""Benchmark of the HTTP service against the in-process runtime, side by side in one run.

    .venv/bin/python bench/bench_service.py [--model bundles/digits] [--seconds 5]

/anomaly_score at n_samples 16 for 1, 100 and 1000 rows per request at concurrency 1, 8 and
32 (rows/s, p50 and p99 latency), and the file endpoint; each beside the in-process runtime
on the same rows. Also the runtime against the two graphs called alone, and the mean batch
size the adaptive batcher formed (from /metrics). The load generator runs on the same machine
and takes CPU from the service: the ratios are conservative.
"""

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import DEFAULT_MODEL, digits_rows, metric_sum, rate, served  # noqa: E402
from serving.core.runtime import VAERuntime  # noqa: E402
from serving.store import load_runtime  # noqa: E402

K = 16


def in_process(runtime: VAERuntime, x: np.ndarray, seconds: float) -> dict:
    """Rows/s of the runtime and of the two graphs alone, per request size."""
    figures = {}
    for rows in (1, 100, 1000):
        part = x[:rows]
        eps = runtime.noise(0, K, 0).rows(0, rows)

        def graphs_alone():
            _, _, z = runtime.graphs.encode(part, eps)
            runtime.graphs.decode(z)
        figures[rows] = {"runtime": rate(lambda: runtime.score(part, K, 0), rows, seconds),
                         "graphs": rate(graphs_alone, rows, seconds)}
    return figures


async def load(url: str, x: np.ndarray, rows: int, concurrency: int, seconds: float) -> dict:
    body = json.dumps({"x": x[:rows].tolist(), "n_samples": K, "seed": 1}).encode()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker():
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post("/anomaly_score", content=body,
                                             headers={"content-type": "application/json"})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"rows_per_s": len(latencies) * rows / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(latencies)}


def file_rate(url: str, x: np.ndarray, suffix: str) -> float:
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, x)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({f"pixel_{i // 8}_{i % 8}": x[:, i] for i in range(64)}), buffer)
    content = buffer.getvalue()
    with httpx.Client(base_url=url, timeout=600) as client:
        def once():
            response = client.post("/anomaly_score_file", files={"file": (f"rows{suffix}", content)},
                                   data={"n_samples": str(K), "seed": "1"})
            response.raise_for_status()
        return rate(once, len(x), 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--file-rows", type=int, default=50_000)
    args = parser.parse_args()

    runtime = load_runtime(args.model, threads=1)  # as one model worker runs it
    x = digits_rows(max(1000, args.file_rows))
    local = in_process(runtime, x, args.seconds / 2)
    file_local = rate(lambda: runtime.score(x[:args.file_rows], K, 1), args.file_rows, 3.0)
    print(f"model {runtime.version} ({args.model}), n_samples {K}, onnxruntime 1 thread\n")
    print("in-process runtime vs the two graphs alone (target ≥ 70%)")
    for rows, f in local.items():
        print(f"  {rows:>5} rows/call  runtime {f['runtime']:>9.0f} rows/s  graphs "
              f"{f['graphs']:>9.0f} rows/s  ratio {f['runtime'] / f['graphs']:.0%}")

    print("\n/anomaly_score over HTTP (JSON) vs in-process on the same rows")
    print(f"  {'rows':>5} {'conc':>4} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'in-process':>10} {'ratio':>6}")
    with served(args.model) as url:
        for rows in (1, 100, 1000):
            for concurrency in (1, 8, 32):
                before = httpx.get(f"{url}/metrics").text
                r = asyncio.run(load(url, x, rows, concurrency, args.seconds))
                after = httpx.get(f"{url}/metrics").text
                batches = [metric_sum(t, "bentoml_service_adaptive_batch_size_" + part,
                                      'method_name="score"') for t in (before, after)
                           for part in ("sum", "count")]
                mean_batch = (batches[2] - batches[0]) / max(1.0, batches[3] - batches[1])
                ratio = r["rows_per_s"] / local[rows]["runtime"]
                print(f"  {rows:>5} {concurrency:>4} {r['rows_per_s']:>9.0f} {r['p50_ms']:>8.1f} "
                      f"{r['p99_ms']:>8.1f} {local[rows]['runtime']:>10.0f} {ratio:>6.0%}"
                      f"   mean batch {mean_batch:.1f} requests")
        print(f"\n/anomaly_score_file, {args.file_rows} rows per upload, vs in-process "
              f"{file_local:.0f} rows/s (target ≥ 80%)")
        for suffix in (".npy", ".parquet"):
            served_rate = file_rate(url, x[:args.file_rows], suffix)
            print(f"  {suffix:<8} {served_rate:>9.0f} rows/s  ratio {served_rate / file_local:.0%}")


if __name__ == "__main__":
    main()
