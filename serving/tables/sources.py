"""Streaming reads of the files a batch job scores: .csv, .parquet, a directory of .parquet
files, or .npy, in chunks of a fixed number of rows, never whole.

`open_source` checks everything that can be checked before scoring starts (format, feature
columns by name or width by position, their types, pass-through columns); `chunks` then yields
(first_row, x, passthrough) with the model's features as float32 rows, one-line errors naming
the row of any empty or non-finite value.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError
from serving.tables.columns import arrow_to_rows, check_numeric, finite_rows, match_columns
from serving.tables.formats import table_format
from serving.tables.read import arrow_error, open_npy


@dataclass
class Source:
    path: Path
    kind: str  # .csv, .parquet, .npy, or "dir" for a directory of .parquet files
    feature_names: list[str]
    passthrough: list[str] = field(default_factory=list)
    rows: int | None = None  # known up front for .npy and .parquet; None for .csv
    files: list[Path] = field(default_factory=list)


def open_source(path: str | os.PathLike, feature_names: list[str],
                passthrough: list[str] = ()) -> Source:
    """Check a file (or directory) against the model before any row is scored."""
    path = Path(path)
    passthrough = list(passthrough)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError(f"{path} is a directory without .parquet files; expected a "
                             f"directory of .parquet files or one .csv, .parquet or .npy file")
        rows = sum(_parquet_schema(f, feature_names, passthrough) for f in files)
        return Source(path, "dir", feature_names, passthrough, rows, files)
    kind = table_format(path, also=" or a directory of .parquet files")
    if not path.is_file():
        raise InputError(f"{path} does not exist; expected a {kind} file")
    if kind == ".npy":
        if passthrough:
            raise InputError(f"{path} has no column names; --columns needs a .csv or .parquet "
                             f"input")
        array = open_npy(path)
        if array.shape[1] != len(feature_names):
            raise InputError(f"{path} has {array.shape[1]} columns; this model expects "
                             f"{len(feature_names)} (taken by position from a .npy file)")
        return Source(path, kind, feature_names, passthrough, array.shape[0])
    if kind == ".parquet":
        rows = _parquet_schema(path, feature_names, passthrough)
        return Source(path, kind, feature_names, passthrough, rows, [path])
    _csv_reader(path, feature_names, passthrough).close()  # reads the header and first block
    return Source(path, kind, feature_names, passthrough)


def chunks(source: Source, chunk_rows: int, start_row: int = 0
           ) -> Iterator[tuple[int, np.ndarray, pa.Table | None]]:
    """(first_row, x (B, F) float32, passthrough columns or None), B = chunk_rows but the last."""
    if source.kind == ".npy":
        array = open_npy(source.path)
        for start in range(start_row, array.shape[0], chunk_rows):
            x = np.asarray(array[start:start + chunk_rows], dtype=np.float32)
            yield start, finite_rows(x, str(source.path), None, start), None
        return
    if source.kind == ".csv":
        reader = _csv_reader(source.path, source.feature_names, source.passthrough)
        batches = _csv_batches(reader, source.path)
    else:
        batches = (batch for f in source.files for batch in _parquet_batches(
            f, source.feature_names + source.passthrough, chunk_rows))
    start = 0
    for table in rechunk(batches, chunk_rows):
        end = start + table.num_rows
        if end > start_row:
            skip = max(0, start_row - start)
            table = table.slice(skip)
            x = arrow_to_rows(table.select(source.feature_names), str(source.path), start + skip)
            yield start + skip, x, table.select(source.passthrough) if source.passthrough else None
        start = end


def _check_columns(schema: pa.Schema, where: str, feature_names: list[str],
                   passthrough: list[str]) -> None:
    match_columns(schema.names, feature_names, where)
    missing = [c for c in passthrough if c not in schema.names]
    if missing:
        raise InputError(f"{where} has no column {missing[0]!r} to pass through (--columns); "
                         f"its columns are {', '.join(schema.names[:8])}"
                         f"{', ...' if len(schema.names) > 8 else ''}")
    for name in feature_names:
        check_numeric(name, schema.field(name).type, where, allow_null=True)


def _parquet_schema(path: Path, feature_names: list[str], passthrough: list[str]) -> int:
    from pyarrow import parquet
    try:
        metadata = parquet.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, ".parquet", e) from None
    _check_columns(metadata.schema_arrow, str(path), feature_names, passthrough)
    return metadata.metadata.num_rows


def _parquet_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    from pyarrow import parquet
    # pre_buffer (pyarrow's default) keeps every row group read so far alive until the file is
    # closed: the memory of a job grew with its input. Without it, memory stays flat.
    reader = parquet.ParquetFile(path, pre_buffer=False)
    yield from reader.iter_batches(batch_size=batch_rows, columns=columns)


def _csv_reader(path: Path, feature_names: list[str], passthrough: list[str]):
    from pyarrow import csv
    try:
        header = csv.open_csv(path)
        _check_columns(header.schema, str(path), feature_names, passthrough)
        header.close()
        options = csv_convert_options(feature_names, passthrough)
        return csv.open_csv(path, convert_options=options,
                            read_options=csv.ReadOptions(block_size=1 << 22))
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, ".csv", e) from None


def csv_convert_options(feature_names: list[str], passthrough: list[str]):
    """Features as float32; pass-through columns as the text they hold, never re-typed (a
    timestamp 2024-01-01T00:00:00 stays that text, not pyarrow's 2024-01-01 00:00:00)."""
    from pyarrow import csv
    return csv.ConvertOptions(include_columns=feature_names + passthrough,
                              column_types={**{name: pa.float32() for name in feature_names},
                                            **{name: pa.string() for name in passthrough}})


def _csv_batches(reader, path: Path) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise InputError(f"{path}: {str(e).splitlines()[0]}; expected numbers in every "
                             f"feature column") from None
        yield batch


def rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last may be shorter), whatever the batches' sizes."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)
