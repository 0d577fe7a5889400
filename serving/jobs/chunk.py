"""One step of every file job: a chunk of rows -> its noise -> scores -> an output table.

The local job, the Ray engine and the HTTP file endpoint all score through `score_chunk`, so
row i of a file gets the same noise and the same output row whichever of them runs it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.noise import DEFAULT_SAMPLES
from serving.core.rows import InputError
from serving.core.runtime import ScoredRows, VAERuntime
from serving.tables.formats import table_format
from serving.tables.sources import Source

SCORE_COLUMNS = ("score", "recon_nll", "kl", "percentile", "is_anomaly")


@dataclass
class ScoreJob:
    """What `vae score` is asked: a file, a model, an output and how to score."""

    input: Path
    model: str
    out: Path
    n_samples: int = DEFAULT_SAMPLES
    seed: int | None = None
    chunk_rows: int = 1 << 16
    columns: list[str] = field(default_factory=list)  # passed through from input to output
    with_latent: bool = False


def check_job(job: ScoreJob) -> None:
    """The job's own arguments; the input is checked against the model by open_source."""
    if job.n_samples < 1:
        raise InputError(f"--n-samples is {job.n_samples}; expected at least 1")
    if job.chunk_rows < 1:
        raise InputError(f"--chunk-rows is {job.chunk_rows}; expected at least 1")
    table_format(job.out, f"--out {job.out}", " (the output format follows it)")
    if Path(job.out).resolve() == Path(job.input).resolve():
        raise InputError(f"--out {job.out} is the input file; expected another path (the "
                         f"scores would replace the rows they score)")


def check_passthrough(source: Source) -> None:
    """Pass-through columns must not overwrite an output column."""
    clash = set(source.passthrough) & {"row", "observed", *SCORE_COLUMNS}
    if clash or any(c.startswith("mu_") for c in source.passthrough):
        raise InputError(f"--columns {sorted(clash)[0] if clash else 'mu_*'} would overwrite an "
                         f"output column; rename it in the input")


def score_table(first_row: int, scored: ScoredRows, passthrough: pa.Table | None,
                observed: bool = False) -> pa.Table:
    """The output rows of one chunk: row, the scores, observed (the cells each row had, for a
    model with a column schema), mu_j (with latent), pass-through columns."""
    n = len(scored.score)
    columns = {"row": np.arange(first_row, first_row + n, dtype=np.int64)}
    columns.update({name: getattr(scored, name) for name in SCORE_COLUMNS})
    if observed:
        columns["observed"] = scored.observed.astype(np.int32)
    if scored.mu is not None:
        columns.update({f"mu_{j}": scored.mu[:, j] for j in range(scored.mu.shape[1])})
    table = pa.table(columns)
    for name, column in zip(passthrough.column_names if passthrough else [],
                            passthrough.columns if passthrough else []):
        table = table.append_column(name, column)
    return table


def score_chunk(runtime: VAERuntime, first_row: int, x: np.ndarray,
                passthrough: pa.Table | None, n_samples: int, seed: int,
                with_latent: bool = False, observe=None) -> pa.Table:
    """Rows first_row, first_row+1, ... of a file, scored under the contract's noise for their
    positions, as output rows. observe(x, scored rows with mu, n_samples), when given, sees
    them first (the service's drift counters)."""
    scored = runtime.score(x, runtime.noise(seed, n_samples, first_row),
                           with_latent=with_latent or observe is not None)
    if observe is not None:
        observe(x, scored, n_samples)
        if not with_latent:
            scored.mu = None
    return score_table(first_row, scored, passthrough, runtime.schema is not None)
