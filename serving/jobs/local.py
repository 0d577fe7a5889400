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
            yield feather.read_table(path, memory_map=True)

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


def open_job(job: ScoreJob, runtime: VAERuntime) -> Source:
    """Every check that can run before scoring: the arguments, the input against the model."""
    check_job(job)
    source = open_source(job.input, runtime.manifest.feature_names, job.columns)
    check_passthrough(source)
    return source


def resume_or_start(job: ScoreJob, runtime: VAERuntime) -> tuple[Parts, dict]:
    """The job's parts directory and state: resumed when it matches, else started anew."""
    parts = Parts(Path(job.out), fingerprint(job, runtime))
    state = parts.resume()
    if state is None:
        state = {**parts.job, "seed": seed_or_new(job.seed)}
        parts.start(state)
    return parts, state


def run_local(job: ScoreJob, threads: int | None = None, progress: bool = True) -> Summary:
    """Score job.input into job.out on this machine, resuming from finished parts."""
    from tqdm import tqdm

    started = time.perf_counter()
    runtime = load_runtime(job.model, threads)
    source = open_job(job, runtime)
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
