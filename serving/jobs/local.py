"""`vae score`: a file scored in chunks by the service's own runtime, resumable, written whole.

Row i of the input gets the noise of SPEC.md's rule at position i, so the output is the same
whatever --chunk-rows is, and the same as /anomaly_score for those rows, positions and seed.
Each finished chunk is saved as a part in `.OUT.parts/` beside the output; an interrupted job
run again with the same arguments skips the parts it has, and the output appears under its
name only once complete (assembled at a temporary name, then renamed).
"""

import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute
from pyarrow import feather

from serving.tables.files import atomic_write
from serving.core.rows import InputError
from serving.core.noise import new_seed
from serving.core.runtime import ScoredRows, VAERuntime
from serving.tables.sources import Source, chunks, open_source, rechunk
from serving.tables.read import FORMATS

SCORE_COLUMNS = ("score", "recon_nll", "kl", "percentile", "is_anomaly")
ROW_GROUP_ROWS = 1 << 16  # output row groups, fixed so that bytes do not depend on chunking


@dataclass
class ScoreJob:
    input: Path
    model: str
    out: Path
    n_samples: int = 16
    seed: int | None = None
    chunk_rows: int = 1 << 16
    columns: list[str] = field(default_factory=list)  # passed through from input to output
    with_latent: bool = False


@dataclass
class Summary:
    rows: int
    anomalies: int
    seconds: float
    seed: int
    resumed_rows: int = 0

    def line(self, out: Path) -> str:
        rate = (self.rows - self.resumed_rows) / max(self.seconds, 1e-9)
        share = self.anomalies / max(self.rows, 1)
        return (f"scored {self.rows} rows, {self.anomalies} anomalies ({share:.2%}) in "
                f"{self.seconds:.1f} s, {rate:.0f} rows/s, seed {self.seed} -> {out}")


def score_table(first_row: int, scored: ScoredRows, passthrough: pa.Table | None) -> pa.Table:
    """The output rows of one chunk: row, the scores, mu_j (with latent), pass-through columns."""
    n = len(scored.score)
    columns = {"row": np.arange(first_row, first_row + n, dtype=np.int64)}
    columns.update({name: getattr(scored, name) for name in SCORE_COLUMNS})
    if scored.mu is not None:
        columns.update({f"mu_{j}": scored.mu[:, j] for j in range(scored.mu.shape[1])})
    table = pa.table(columns)
    for name, column in zip(passthrough.column_names if passthrough else [],
                            passthrough.columns if passthrough else []):
        table = table.append_column(name, column)
    return table


def output_format(out: Path, source: Source) -> str:
    kind = out.suffix.lower()
    if kind not in FORMATS:
        raise InputError(f"--out {out} has extension {kind or '(none)'!r}; expected one of "
                         f"{', '.join(FORMATS)} (the output format follows it)")
    clash = set(source.passthrough) & {"row", *SCORE_COLUMNS}
    if clash or any(c.startswith("mu_") for c in source.passthrough):
        raise InputError(f"--columns {sorted(clash)[0] if clash else 'mu_*'} would overwrite an "
                         f"output column; rename it in the input")
    return kind


def write_scores(tables: Iterable[pa.Table], out: Path) -> None:
    """Tables of scores, in row order, to out (.parquet, .csv or .npy), through a temporary file
    beside it renamed once complete."""
    kind = out.suffix.lower()

    def write(tmp: Path) -> None:
        if kind == ".npy":
            _write_npy(list(tables), tmp)
            return
        writer = None
        for table in _regroup(tables):
            if writer is None:
                writer = _writer(kind, tmp, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    atomic_write(out, write)


def _writer(kind: str, path: Path, schema: pa.Schema):
    if kind == ".csv":
        from pyarrow import csv
        return csv.CSVWriter(path, schema)
    from pyarrow import parquet
    return parquet.ParquetWriter(path, schema)


def _regroup(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    return rechunk((b for t in tables for b in t.to_batches()), ROW_GROUP_ROWS)


def _write_npy(tables: list[pa.Table], path: Path) -> None:
    """A structured array, filled part by part through a memory map (constant memory)."""
    total = sum(t.num_rows for t in tables)
    schema = tables[0].schema
    for f in schema:
        if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                or pa.types.is_boolean(f.type)):
            raise InputError(f"column {f.name!r} is {f.type}; a .npy output holds numbers only "
                             f"(write .csv or .parquet to pass it through)")
    dtype = [(f.name, f.type.to_pandas_dtype()) for f in schema]
    records = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(total,))
    start = 0
    for table in tables:
        for name in schema.names:
            records[name][start:start + table.num_rows] = table[name].to_numpy()
        start += table.num_rows
    records.flush()
    del records


class Parts:
    """Finished chunks of one job in `.OUT.parts/`, keyed by the job's arguments."""

    def __init__(self, out: Path, job: dict):
        self.dir = out.with_name(f".{out.name}.parts")
        self.job = job

    def resume(self) -> dict | None:
        """The saved job if it matches this one (its parts are then kept), else a fresh start."""
        state = self.dir / "job.json"
        if state.is_file():
            saved = json.loads(state.read_text())
            wanted_seed = self.job["seed"]
            if {**saved, "seed": None} == {**self.job, "seed": None} and \
                    wanted_seed in (None, saved["seed"]):
                return saved
        shutil.rmtree(self.dir, ignore_errors=True)
        return None

    def start(self, job: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / "job.json", lambda tmp: tmp.write_text(json.dumps(job, indent=2)))

    def done(self) -> list[Path]:
        """The consecutive finished parts from the first."""
        parts = []
        while (path := self.dir / f"part-{len(parts):07d}.arrow").is_file():
            parts.append(path)
        return parts

    def save(self, index: int, table: pa.Table) -> None:
        atomic_write(self.dir / f"part-{index:07d}.arrow",
                     lambda tmp: feather.write_feather(table, tmp, compression="uncompressed"))

    def tables(self) -> Iterator[pa.Table]:
        for path in self.done():
            yield feather.read_table(path, memory_map=False)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def fingerprint(job: ScoreJob, runtime: VAERuntime) -> dict:
    """What must match for a restarted job to continue: input, model, arguments."""
    path = Path(job.input).resolve()
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    stamp = hashlib.sha256("".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                                   for f in files).encode()).hexdigest()[:16]
    return {"input": str(path), "input_stamp": stamp, "model_version": runtime.version,
            "n_samples": job.n_samples, "seed": job.seed, "chunk_rows": job.chunk_rows,
            "columns": list(job.columns), "with_latent": job.with_latent,
            "out": str(Path(job.out).resolve())}


def prepare(job: ScoreJob, runtime: VAERuntime) -> tuple[Source, Parts, dict]:
    """Every check that can run before scoring, and the job's state (resumed or new)."""
    if job.n_samples < 1:
        raise InputError(f"--n-samples is {job.n_samples}; expected at least 1")
    if job.chunk_rows < 1:
        raise InputError(f"--chunk-rows is {job.chunk_rows}; expected at least 1")
    source = open_source(job.input, runtime.manifest.feature_names, job.columns)
    output_format(Path(job.out), source)
    parts = Parts(Path(job.out), fingerprint(job, runtime))
    state = parts.resume()
    if state is None:
        state = {**parts.job, "seed": new_seed() if job.seed is None else job.seed}
        parts.start(state)
    return source, parts, state


def run_local(job: ScoreJob, threads: int | None = None, progress: bool = True) -> Summary:
    """Score job.input into job.out on this machine, resuming from finished parts."""
    from tqdm import tqdm

    started = time.perf_counter()
    runtime = VAERuntime.load(job.model, threads)
    source, parts, state = prepare(job, runtime)
    done = parts.done()
    resumed = sum(feather.read_table(p, columns=["row"]).num_rows for p in done)
    bar = tqdm(total=source.rows, initial=resumed, unit="row", unit_scale=True, desc="score",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    for index, (first, x, passthrough) in enumerate(
            chunks(source, job.chunk_rows, resumed), start=len(done)):
        scored = runtime.score(x, job.n_samples, state["seed"], start=first,
                               with_latent=job.with_latent)
        parts.save(index, score_table(first, scored, passthrough))
        bar.update(len(x))
    bar.close()
    return finish(parts, Path(job.out), state["seed"], resumed, started)


def finish(parts: Parts, out: Path, seed: int, resumed: int, started: float) -> Summary:
    """Assemble the parts into the output, remove them, and sum up."""
    rows = anomalies = 0
    for table in parts.tables():
        rows += table.num_rows
        anomalies += int(pyarrow.compute.sum(table["is_anomaly"]).as_py() or 0)
    if rows == 0:
        parts.remove()
        raise InputError("the input has no rows; expected at least one row to score")
    write_scores(parts.tables(), out)
    parts.remove()
    return Summary(rows, anomalies, time.perf_counter() - started, seed, resumed)
