"""`vae impute`: a file's missing cells filled by the model, chunk by chunk, written atomically.

The output has the model's columns (numbers, and level names in categorical columns) and the
input's ignored columns passed through; with --draws N, N multiple imputations one after the
other, with a `draw` column. Row i's draws depend only on (seed, i), as every score does.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.noise import DEFAULT_SAMPLES, seed_or_new
from serving.core.rows import InputError
from serving.store import load_runtime
from serving.tables.formats import table_format
from serving.tables.sources import chunks, file_columns, open_source
from serving.tables.write import write_table


def impute_file(input: Path, model: str, out: Path, n_samples: int = DEFAULT_SAMPLES,
                draws: int = 0, seed: int | None = None, chunk_rows: int = 1 << 14,
                threads: int | None = None) -> tuple[int, int]:
    """(rows written, seed)."""
    table_format(out, f"--out {out}", " (the output format follows it)")
    if out.suffix.lower() == ".npy":
        raise InputError(f"--out {out}: imputed rows carry text levels; expected a .csv or "
                         f".parquet output")
    runtime = load_runtime(model, threads)
    if runtime.schema is None:
        raise InputError(f"{model} was made before column schemas and takes no missing cells; "
                         f"train it again to impute")
    schema = runtime.schema
    kept = [c for c in file_columns(input) if c in schema.ignored]
    source = open_source(input, schema.names, kept, schema)
    seed = seed_or_new(seed)
    counted = [0]

    def tables() -> Iterator[pa.Table]:
        for first, x, passthrough in chunks(source, chunk_rows):
            filled = runtime.impute(x, n_samples, seed, draws, start=first)
            for d, rows in enumerate(filled if draws else [filled]):
                columns = {"row": np.arange(first, first + len(x), dtype=np.int64)}
                if draws:
                    columns["draw"] = np.full(len(x), d, np.int32)
                table = pa.Table.from_pylist(schema.to_records(rows))
                for name in table.column_names:
                    columns[name] = table.column(name)
                for name in passthrough.column_names if passthrough else []:
                    columns[name] = passthrough.column(name)
                counted[0] += len(x)
                yield pa.table(columns)

    write_table(tables(), out)
    return counted[0], seed
