"""`vae score --engine ray`: the same scoring as a Ray Data pipeline.

The input is cut into parts whose first row's position is known (a Parquet row group, a range
of .npy rows, a whole CSV file); Ray tasks read them through the local engine's conversion,
each batch carrying its rows' positions, into map_batches(Scorer) and write_parquet. The
parts written are then assembled into the output exactly as the local engine does. The Scorer
holds the onnxruntime sessions and calls the same runtime, so row i gets the same noise and the
same answer as with the local engine or the service. Ray is the optional extra `pip install
.[ray]`. The input and the bundle directory must be readable by the workers (on a cluster:
shared storage).
"""

import importlib.util
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.noise import seed_or_new
from serving.core.rows import InputError
from serving.jobs.chunk import ScoreJob, score_chunk
from serving.jobs.local import Summary, count_anomalies, open_job, output_lock
from serving.store import load_runtime
from serving.tables.read import arrow_error
from serving.tables.sources import Source, chunks, npy_chunks, parquet_batches, rechunk
from serving.tables.write import write_table


class ClusterError(RuntimeError):
    """The Ray cluster could not be used (not the input's fault): one line, exit 1."""


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its task errors
POSITION = "__vae_row__"  # the column carrying each row's position through the pipeline


class Scorer:
    """One onnxruntime runtime per Ray actor; scores batches of the model's matrix carrying
    their row positions. Its settings are class attributes (see scorer_class): constructor
    arguments would sit in the object store, which Ray warns about for restartable actors."""

    settings: dict = {}

    def __init__(self):
        settings = self.settings
        self.runtime = load_runtime(settings["bundle"], settings["threads"])
        self.n_samples, self.seed = settings["n_samples"], settings["seed"]
        self.with_latent, self.passthrough = settings["with_latent"], settings["passthrough"]

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        positions = batch[POSITION].astype(np.int64)
        x = np.asarray(batch["x"], dtype=np.float32)
        passthrough = pa.table({name: _arrow(batch[name]) for name in self.passthrough}) \
            if self.passthrough else None
        # each run of consecutive positions is a chunk of the file, scored as the local job does
        cuts = [0, *(np.flatnonzero(np.diff(positions) != 1) + 1), len(positions)]
        return pa.concat_tables([
            score_chunk(self.runtime, int(positions[lo]), x[lo:hi],
                        passthrough.slice(lo, hi - lo) if passthrough else None,
                        self.n_samples, self.seed, self.with_latent)
            for lo, hi in zip(cuts[:-1], cuts[1:])])


def scorer_class(**settings) -> type:
    return type("Scorer", (Scorer,), {"settings": settings})


def _arrow(values: np.ndarray) -> pa.Array:
    """A numpy batch column as arrow: text columns arrive as object arrays, None missing."""
    return pa.array(values, from_pandas=True) if values.dtype == object else pa.array(values)


@dataclass(frozen=True)
class Part:
    """A piece of the input that one Ray read task reads, and its first row's position."""

    path: str
    first: int
    group: int | None = None  # a Parquet file's row group
    rows: int | None = None  # a range of a .npy file's rows (None with group: a CSV file)


def parts_of(source: Source, chunk_rows: int) -> list[Part]:
    if source.kind == ".npy":
        return [Part(str(source.path), lo, rows=min(chunk_rows, source.rows - lo))
                for lo in range(0, source.rows, chunk_rows)]
    if source.kind == ".csv":  # read in order from its start: one part
        return [Part(str(source.path), 0)]
    from pyarrow import parquet
    parts, first = [], 0
    for path in source.files:
        try:
            metadata = parquet.ParquetFile(path).metadata
        except (pa.ArrowException, OSError) as e:
            raise arrow_error(path, ".parquet", e) from None
        for group in range(metadata.num_row_groups):
            parts.append(Part(str(path), first, group=group))
            first += metadata.row_group(group).num_rows
    return parts


def read_part(source: Source, part: Part, chunk_rows: int
              ) -> Iterator[tuple[int, np.ndarray, pa.Table | None]]:
    """(first row, the model's matrix, pass-through columns) of a part, chunk_rows at a time,
    converted and checked as the local engine's chunks are (so a bad cell is the same line)."""
    if part.group is None and part.rows is None:
        yield from chunks(source, chunk_rows)
        return
    if part.rows is not None:
        first, x = next(npy_chunks(Path(part.path), part.rows, part.first))
        yield first, source.array_rows(x, first), None
        return
    first = part.first
    batches = parquet_batches(Path(part.path), source.feature_names + source.passthrough,
                              chunk_rows, [part.group])
    for table in rechunk(batches, chunk_rows):
        yield first, source.rows_of(table, first), \
            table.select(source.passthrough) if source.passthrough else None
        first += table.num_rows


def read_parts(ray, source: Source, chunk_rows: int):
    """The input as a Ray Dataset of the model's matrix ("x"), each row's position and the
    pass-through columns, read by Ray tasks a part at a time."""
    parts = parts_of(source, chunk_rows)

    def read(batch: dict) -> Iterator[dict]:
        for index in batch["part"]:
            for first, x, passthrough in read_part(source, parts[index], chunk_rows):
                columns = {"x": x, POSITION: np.arange(first, first + len(x), dtype=np.int64)}
                for name in source.passthrough:
                    columns[name] = passthrough[name].to_numpy(zero_copy_only=False)
                yield columns

    return ray.data.from_items([{"part": i} for i in range(len(parts))]) \
        .map_batches(read, batch_size=1)


def join_ray(ray, address: str | None, packages: tuple[str, ...] = ("serving",)) -> None:
    """A local Ray of this machine's CPUs, or the cluster at `address` (its GCS address
    HOST:PORT, as `ray start --head` prints it), whose workers get these packages' code."""
    # A job's output is its own lines: Ray's INFO lines (about 60 a job) are left out, and so
    # is Ray Data's console (a task's error comes back as the job's one line); everything is
    # still in the session's log files.
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray").setLevel(logging.WARNING)
    import ray.data  # it sets up its own console handler
    for handler in logging.getLogger("ray.data").handlers:
        if not hasattr(handler, "baseFilename") and "File" not in type(handler).__name__:
            handler.setLevel(logging.CRITICAL)
    if address is None:
        ray.init(include_dashboard=False, ignore_reinit_error=True, num_cpus=os.cpu_count(),
                 **quiet)
        return
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ClusterError(f"--ray-address {address} is a Ray Client address, which needs "
                         f"pip install 'ray[client]'; or give the cluster's GCS address "
                         f"HOST:PORT (6379 by default), which joins without it")
    root = Path(__file__).resolve().parent.parent.parent
    try:
        ray.init(address=address, ignore_reinit_error=True, **quiet,
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
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    out_dir = Path(job.out).with_name(f".{Path(job.out).name}.ray")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        data = read_parts(ray, source, job.chunk_rows).map_batches(
            scorer_class(bundle=str(runtime.bundle.path.resolve()), n_samples=job.n_samples,
                         seed=seed, with_latent=job.with_latent,
                         passthrough=source.passthrough, threads=threads or 1),
            batch_size=job.chunk_rows, batch_format="numpy",
            # leave CPU for the read tasks: actors holding every CPU starve them and the job hangs
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5)
        data.write_parquet(str(out_dir))
        tables = [_read_written(p) for p in out_dir.glob("*.parquet")]
        rows = source.rows if source.rows is not None else sum(t.num_rows for t in tables)
        tables = _in_row_order(tables, rows)
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


def _read_written(path: Path) -> pa.Table:
    from pyarrow import parquet
    return parquet.read_table(path)
