"""Benchmark of `vae score` against the in-process runtime, side by side in one run.

    .venv/bin/python bench/bench_batch.py [--model bundles/digits] [--rows 1000000]

Writes a digits-shaped Parquet file of --rows rows (and one of a tenth of them), runs the
local job on each in a fresh process (its peak resident memory, VmHWM), and measures
the in-process runtime on the same rows in chunks of the same size. Targets: the job reaches
at least 80% of the in-process rate; its peak memory for the large file is within 1.2× of
that for the small one.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import DEFAULT_MODEL, ROOT, digits_rows  # noqa: E402
from serving.store import load_runtime  # noqa: E402

# Peak memory is the job's own VmHWM: getrusage's ru_maxrss survives execve on Linux, so a
# child would report the larger of its own peak and that of the parent it was forked from.
JOB = """
import json, sys, time
from vae_service import cli
started = time.perf_counter()
code = cli.main(sys.argv[1:])
seconds = time.perf_counter() - started
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
print(json.dumps({"code": code, "seconds": seconds, "peak_mib": peak_kib / 1024}))
"""


def write_rows(path: Path, n: int, names: list[str], block: int = 100_000) -> None:
    writer = None
    for start in range(0, n, block):
        x = digits_rows(min(block, n - start), seed=start)
        table = pa.table({name: x[:, i] for i, name in enumerate(names)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run_job(source: Path, out: Path, model: Path, chunk_rows: int) -> dict:
    result = subprocess.run([sys.executable, "-c", JOB, "score", str(source), "--model",
                             str(model), "--out", str(out), "--seed", "1", "--chunk-rows",
                             str(chunk_rows), "--quiet"], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f"vae score failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1 << 16)
    args = parser.parse_args()
    runtime = load_runtime(args.model, threads=1)
    names = runtime.manifest.feature_names
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        figures = {}
        for n in (args.rows // 10, args.rows):
            source = tmp / f"rows-{n}.parquet"
            write_rows(source, n, names)
            job = run_job(source, tmp / f"scores-{n}.parquet", args.model, args.chunk_rows)
            # the in-process runtime on the same rows, read the same way, in the same chunks
            started = time.perf_counter()
            for batch in pq.ParquetFile(source).iter_batches(batch_size=args.chunk_rows):
                x = np.column_stack([c.to_numpy() for c in batch.columns]).astype(np.float32)
                runtime.score(x, runtime.noise(1, 16))
            local = n / (time.perf_counter() - started)
            figures[n] = {"job_rows_per_s": n / job["seconds"], "in_process_rows_per_s": local,
                          "peak_mib": job["peak_mib"]}
    print(f"model {runtime.version}, n_samples 16, chunk {args.chunk_rows} rows, "
          f"onnxruntime 1 thread\n")
    print(f"  {'rows':>9} {'job rows/s':>11} {'in-process':>11} {'ratio':>6} {'peak MiB':>9}")
    for n, f in figures.items():
        print(f"  {n:>9} {f['job_rows_per_s']:>11.0f} {f['in_process_rows_per_s']:>11.0f} "
              f"{f['job_rows_per_s'] / f['in_process_rows_per_s']:>6.0%} {f['peak_mib']:>9.0f}")
    small, large = figures[args.rows // 10], figures[args.rows]
    print(f"\npeak memory {args.rows} rows / {args.rows // 10} rows: "
          f"{large['peak_mib'] / small['peak_mib']:.2f}× (target ≤ 1.2×)")


if __name__ == "__main__":
    main()
