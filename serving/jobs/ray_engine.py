"""`vae score --engine ray`: the same scoring as a Ray Data pipeline.

read_* -> zip with each row's position -> map_batches(Scorer) -> write_parquet, then the
parts are assembled into the output exactly as the local engine does. The Scorer holds the
onnxruntime sessions and calls the same runtime, so row i gets the same noise and the same
answer as with the local engine or the service. Ray is the optional extra `pip install .[ray]`.
The bundle directory must be readable by the workers (on a cluster: shared storage).
"""

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.noise import seed_or_new
from serving.core.rows import InputError
from serving.jobs.chunk import ScoreJob, score_chunk
from serving.jobs.local import Summary, count_anomalies, open_job, output_lock
from serving.store import load_runtime
from serving.tables.sources import csv_convert_options
from serving.tables.write import write_table


class ClusterError(RuntimeError):
    """The Ray cluster could not be used (not the input's fault): one line, exit 1."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its task errors
POSITION = "__vae_row__"  # the column carrying each row's position through the pipeline


class Scorer:
    """One onnxruntime runtime per Ray actor; scores batches carrying their row positions."""

    def __init__(self, bundle: str, n_samples: int, seed: int, with_latent: bool,
                 feature_names: list[str], passthrough: list[str], threads: int):
        self.runtime = load_runtime(bundle, threads)
        self.n_samples, self.seed, self.with_latent = n_samples, seed, with_latent
        self.feature_names, self.passthrough = feature_names, passthrough

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        positions = batch[POSITION].astype(np.int64)
        if "data" in batch:  # read_numpy: one tensor column
            x = np.asarray(batch["data"], dtype=np.float32)
        elif self.runtime.schema is not None:  # the one conversion of every entry point
            x = self.runtime.schema.from_arrow(
                pa.table({n: _arrow(batch[n]) for n in self.feature_names}),
                f"rows {positions[0]}..{positions[-1]}", int(positions[0]))
        else:
            x = np.column_stack([batch[n] for n in self.feature_names]).astype(np.float32)
        x = self.runtime.check(x, field=f"rows {positions[0]}..{positions[-1]}")
        passthrough = pa.table({name: batch[name] for name in self.passthrough}) \
            if self.passthrough else None
        # each run of consecutive positions is a chunk of the file, scored as the local job does
        cuts = [0, *(np.flatnonzero(np.diff(positions) != 1) + 1), len(positions)]
        return pa.concat_tables([
            score_chunk(self.runtime, int(positions[lo]), x[lo:hi],
                        passthrough.slice(lo, hi - lo) if passthrough else None,
                        self.n_samples, self.seed, self.with_latent)
            for lo, hi in zip(cuts[:-1], cuts[1:])])


def _arrow(values: np.ndarray) -> pa.Array:
    """A numpy batch column as arrow: text columns arrive as object arrays, None missing."""
    return pa.array(values, from_pandas=True) if values.dtype == object else pa.array(values)


def _read(source, ray):
    if source.kind == ".npy":
        return ray.data.read_numpy(str(source.path))
    if source.kind == ".csv":
        options = csv_convert_options(source.feature_names, source.passthrough, source.schema)
        return ray.data.read_csv(str(source.path), convert_options=options)
    return ray.data.read_parquet([str(f) for f in source.files],
                                 columns=source.feature_names + source.passthrough)


def join_ray(ray, address: str | None, packages: tuple[str, ...] = ("serving",)) -> None:
    """A local Ray of this machine's CPUs, or the cluster at `address` (its GCS address
    HOST:PORT, as `ray start --head` prints it), whose workers get these packages' code."""
    if address is None:
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 num_cpus=os.cpu_count())
        return
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ClusterError(f"--ray-address {address} is a Ray Client address, which needs "
                         f"pip install 'ray[client]'; or give the cluster's GCS address "
                         f"HOST:PORT (6379 by default), which joins without it")
    root = Path(__file__).resolve().parent.parent.parent
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"py_modules": [str(root / name) for name in packages]})
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClusterError(f"could not join the Ray cluster at {address} ({first}); expected "
                         f"the address `ray start --head` printed, such as HOST:6379") from None


def run_ray(job: ScoreJob, address: str | None = None, threads: int | None = None,
            progress: bool = True) -> Summary:
    try:
        import ray
    except ImportError:
        raise ClusterError("--engine ray needs Ray: pip install '.[ray]'") from None
    started = time.perf_counter()
    runtime = load_runtime(job.model, threads)
    source = open_job(job, runtime)
    with output_lock(Path(job.out)):
        try:
            return _run(ray, job, runtime, source, address, threads, progress, started)
        except Exception as e:
            if (message := client_error(e)) is not None:
                raise InputError(message) from None  # one line, as the local engine says it
            raise


def client_error(error: BaseException) -> str | None:
    """The message of the InputError a Ray task raised, found through Ray's wrappers (a task
    error, a user-code exception, their causes), or None if there is none."""
    seen, pending = set(), [error]
    while pending:
        error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        lines = [ANSI.sub("", line).strip() for line in str(error).splitlines()]
        for line in reversed(lines):  # Ray's task error ends with the original's own line
            if line.startswith(f"{InputError.__module__}.InputError: "):
                return line.split("InputError: ", 1)[1]
        if isinstance(error, InputError) and len(lines) == 1:
            return lines[0]
        pending += [getattr(error, "cause", None), error.__cause__, error.__context__]
    return None


def _run(ray, job: ScoreJob, runtime, source, address: str | None, threads: int | None,
         progress: bool, started: float) -> Summary:
    seed = seed_or_new(job.seed)  # Ray Data has no resumable writes: a Ray job starts over
    join_ray(ray, address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows keep their file order for zip
    context.enable_progress_bars = progress
    out_dir = Path(job.out).with_name(f".{Path(job.out).name}.ray")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        data = _read(source, ray)
        rows = data.count()
        positions = ray.data.range(rows).rename_columns({"id": POSITION})
        data = data.zip(positions)  # each row's position in the file
        data = data.map_batches(
            Scorer, batch_size=job.chunk_rows, batch_format="numpy",
            fn_constructor_kwargs=dict(bundle=str(runtime.bundle.path.resolve()),
                                       n_samples=job.n_samples, seed=seed,
                                       with_latent=job.with_latent,
                                       feature_names=source.feature_names,
                                       passthrough=source.passthrough, threads=threads or 1),
            # leave CPU for the read tasks: actors holding every CPU starve them and the job hangs
            concurrency=1, num_cpus=0.5)
        data.write_parquet(str(out_dir))
        tables = _in_row_order([_read_part(p) for p in out_dir.glob("*.parquet")], rows)
        anomalies = sum(count_anomalies(t) for t in tables)
        write_table(tables, Path(job.out), rows)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return Summary(rows, anomalies, time.perf_counter() - started, seed)


def _in_row_order(tables: list[pa.Table], rows: int) -> list[pa.Table]:
    """The written rows as runs of consecutive positions, in order. Ray's write tasks may put
    any rows in any file, so each file is sorted and cut where its positions jump; the runs
    must then cover 0..rows-1 exactly, or nothing is written."""
    runs = []
    for table in tables:
        table = table.sort_by("row")
        positions = table["row"].to_numpy()
        cuts = [0, *(np.flatnonzero(np.diff(positions) != 1) + 1), len(positions)]
        runs += [table.slice(lo, hi - lo) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
    runs.sort(key=lambda run: run["row"][0].as_py())
    expected = 0
    for run in runs:
        if run["row"][0].as_py() != expected:
            raise RuntimeError(f"the Ray job wrote rows from {run['row'][0].as_py()} where row "
                               f"{expected} was expected; no output was written")
        expected += run.num_rows
    if expected != rows:
        raise RuntimeError(f"the Ray job wrote {expected} rows of {rows}; no output was written")
    return runs


def _read_part(path: Path) -> pa.Table:
    from pyarrow import parquet
    return parquet.read_table(path)
