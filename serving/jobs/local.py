"""`vae score`: a file scored in chunks by the service's own runtime, resumable, written whole.

Row i of the input gets the contract's noise for position i, so the output is the same
whatever --chunk-rows is, and the same as /anomaly_score for those rows, positions and seed.
Each finished chunk is saved as a part in `.OUT.parts/` beside the output; an interrupted job
run again with the same arguments skips the parts it has, and the output appears under its
name only once complete (assembled at a temporary name, then renamed).
"""

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
from pyarrow import feather

from serving.core.noise import seed_or_new
from serving.core.rows import InputError
from serving.core.runtime import VAERuntime
from serving.jobs.chunk import ScoreJob, check_job, check_passthrough, score_chunk
from serving.store import load_runtime
from serving.tables.files import atomic_write
from serving.tables.sources import Source, chunks, open_source
from serving.tables.write import write_table


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


def count_anomalies(table: pa.Table) -> int:
    return int(pyarrow.compute.sum(table["is_anomaly"]).as_py() or 0)



class Parts:
    """Finished chunks of one job in `.OUT.parts/`, keyed by the job's arguments."""

    def __init__(self, out: Path, job: dict):
        self.dir = out.with_name(f".{out.name}.parts")
        self.job = job

    def resume(self) -> tuple[dict | None, str | None]:
        """The saved job if it matches this one (its parts are then kept), else a fresh start;
        and, when saved parts are dropped, why."""
        state = self.dir / "job.json"
        if not state.is_file():
            shutil.rmtree(self.dir, ignore_errors=True)
            return None, None
        saved = json.loads(state.read_text())
        wanted_seed = self.job["seed"]
        differ = [key for key in sorted(set(saved) | set(self.job)) if key != "seed"
                  and saved.get(key) != self.job.get(key)]
        if wanted_seed not in (None, saved.get("seed")):
            differ.append("seed")
        if not differ:
            return saved, None
        shutil.rmtree(self.dir, ignore_errors=True)
        return None, f"the saved parts were of another job ({', '.join(differ)} changed)"

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
            yield feather.read_table(path, memory_map=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def content_hash(path: Path) -> str:
    """sha256 of a file's bytes (of each .parquet file of a directory, with their names): a
    job's input is known by what it holds, not by its size and time, which a rewrite in place
    can keep."""
    digest = hashlib.sha256()
    for f in sorted(path.glob("*.parquet")) if path.is_dir() else [path]:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def file_stats(path: Path) -> list:
    """(name, size, mtime, inode) of the input's files: what a rewrite almost always changes."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    return [[f.name, s.st_size, s.st_mtime_ns, s.st_ino] for f, s in zip(files, stats)]


def check_unchanged(path: Path, stats: list, sha256: str) -> None:
    """A one-line error if the input changed while it was scored (its stats differ, and then
    its content does too: a touch alone is no change)."""
    if file_stats(path) == stats or content_hash(path) == sha256:
        return
    raise InputError(f"{path} changed while it was scored (its content differs from when the "
                     f"job began); no output was written: run the job again, which starts over")


def fingerprint(job: ScoreJob, runtime: VAERuntime) -> dict:
    """What must match for a restarted job to continue: input, model, arguments."""
    path = Path(job.input).resolve()
    return {"input": str(path), "input_sha256": content_hash(path),
            "model_version": runtime.version,
            "n_samples": job.n_samples, "seed": job.seed, "chunk_rows": job.chunk_rows,
            "columns": list(job.columns), "with_latent": job.with_latent,
            "out": str(Path(job.out).resolve())}


@contextmanager
def output_lock(out: Path):
    """Hold `.OUT.lock` beside the output for the job's life: a second job on the same --out
    is refused at once instead of racing the first over its parts and its output."""
    path = out.with_name(f".{out.name}.lock")
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another vae score is writing {out} (it holds {path}); wait for "
                             f"it to finish, or choose another --out") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_job(job: ScoreJob, runtime: VAERuntime) -> Source:
    """Every check that can run before scoring: the arguments, the input against the model,
    the output's place."""
    check_job(job)
    out = Path(job.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; expected a file name such as "
                         f"{out / 'scores.parquet'}")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"--out {out}: the directory {out.parent} is not writable")
    source = open_source(job.input, runtime.manifest.feature_names, job.columns, runtime.schema)
    check_passthrough(source)
    return source


def resume_or_start(job: ScoreJob, runtime: VAERuntime) -> tuple[Parts, dict]:
    """The job's parts directory and state: resumed when it matches, else started anew (and
    a line on stderr says why the saved parts were dropped)."""
    parts = Parts(Path(job.out), fingerprint(job, runtime))
    state, dropped = parts.resume()
    if dropped is not None:
        print(f"vae score: starting over: {dropped}", file=sys.stderr)
    if state is None:
        state = {**parts.job, "seed": seed_or_new(job.seed)}
        parts.start(state)
    return parts, state


def run_local(job: ScoreJob, threads: int | None = None, progress: bool = True) -> Summary:
    """Score job.input into job.out on this machine, resuming from finished parts."""
    started = time.perf_counter()
    runtime = load_runtime(job.model, threads)
    source = open_job(job, runtime)
    with output_lock(Path(job.out)):
        return _score_parts(job, runtime, source, started, progress)


def _score_parts(job: ScoreJob, runtime: VAERuntime, source: Source, started: float,
                 progress: bool) -> Summary:
    from tqdm import tqdm

    stats = file_stats(Path(job.input))  # before the hash: a change after it is seen
    parts, state = resume_or_start(job, runtime)
    done = parts.done()
    resumed = sum(feather.read_table(p, columns=["row"]).num_rows for p in done)
    bar = tqdm(total=source.rows, initial=resumed, unit="row", unit_scale=True, desc="score",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    try:
        for index, (first, x, passthrough) in enumerate(
                chunks(source, job.chunk_rows, resumed), start=len(done)):
            parts.save(index, score_chunk(runtime, first, x, passthrough, job.n_samples,
                                          state["seed"], job.with_latent))
            bar.update(len(x))
    except InputError:  # a bad row: the input must change, and with it the job, so the
        parts.remove()  # parts can never be resumed
        raise
    finally:
        bar.close()  # an error is then printed on a line of its own, not on the bar's
    check_unchanged(Path(job.input), stats, state["input_sha256"])  # parts kept, for a look
    return finish(parts, Path(job.out), state["seed"], resumed, started)


def finish(parts: Parts, out: Path, seed: int, resumed: int, started: float) -> Summary:
    """Assemble the parts into the output, remove them, and sum up."""
    rows = anomalies = 0
    for table in parts.tables():
        rows += table.num_rows
        anomalies += count_anomalies(table)
    if rows == 0:
        parts.remove()
        raise InputError("the input has no rows; expected at least one row to score")
    write_table(parts.tables(), out, rows)
    parts.remove()
    return Summary(rows, anomalies, time.perf_counter() - started, seed, resumed)
