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

from serving.core.rows import InputError, printable
from serving.core.schema import Schema, observed_rows
from serving.tables.columns import arrow_to_rows, check_numeric, finite_rows, match_columns
from serving.tables.formats import table_format
from serving.tables.read import NULL_VALUES, arrow_error, check_regular, open_npy


@dataclass
class Source:
    path: Path
    kind: str  # .csv, .parquet, .npy, or "dir" for a directory of .parquet files
    feature_names: list[str]
    passthrough: list[str] = field(default_factory=list)
    rows: int | None = None  # known up front for .npy and .parquet; None for .csv
    files: list[Path] = field(default_factory=list)
    schema: Schema | None = None  # None: a model made before schemas (numbers, no missing cell)

    def rows_of(self, table: pa.Table, first_row: int) -> np.ndarray:
        """The model's matrix of a table of this source's columns."""
        if self.schema is None:
            return arrow_to_rows(table.select(self.feature_names), str(self.path), first_row)
        return self.schema.from_arrow(table, str(self.path), first_row)

    def array_rows(self, x: np.ndarray, first_row: int) -> np.ndarray:
        """The model's matrix of rows of a .npy file (by position)."""
        if self.schema is None:
            return finite_rows(x, str(self.path), None, first_row)
        infinite = np.argwhere(np.isinf(x))
        if len(infinite):
            r, c = infinite[0]
            raise InputError(f"{self.path}: row {first_row + r}, column {c} is infinite; "
                             f"expected finite numbers or NaN for a missing cell")
        return observed_rows(np.ascontiguousarray(x), str(self.path), first_row)


def open_source(path: str | os.PathLike, feature_names: list[str],
                passthrough: list[str] = (), schema: Schema | None = None) -> Source:
    """Check a file (or directory) against the model before any row is scored. With a
    schema, categorical columns may hold text and any column missing cells."""
    source = _open_source(path, feature_names, passthrough, schema)
    source.schema = schema
    return source


def _open_source(path: str | os.PathLike, feature_names: list[str], passthrough: list[str],
                 schema: Schema | None) -> Source:
    path = Path(path)
    passthrough = list(passthrough)
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError(f"{path} is a directory without .parquet files; expected a "
                             f"directory of .parquet files or one .csv, .parquet or .npy file")
        rows = sum(_parquet_schema(f, feature_names, passthrough, schema) for f in files)
        return Source(path, "dir", feature_names, passthrough, rows, files)
    kind = table_format(path, also=" or a directory of .parquet files")
    check_regular(path, f"a {kind} file")
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
        rows = _parquet_schema(path, feature_names, passthrough, schema)
        return Source(path, kind, feature_names, passthrough, rows, [path])
    _csv_reader(path, feature_names, passthrough, schema).close()  # the header, a first block
    return Source(path, kind, feature_names, passthrough)


def file_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a .csv or .parquet file (or the first file of a directory), [] for
    .npy or what cannot be read (open_source then says why)."""
    path = Path(path)
    try:
        if path.is_dir():
            files = sorted(path.glob("*.parquet"))
            path = files[0] if files else path
        if path.suffix.lower() == ".parquet":
            from pyarrow import parquet
            return list(parquet.ParquetFile(path).schema_arrow.names)
        if path.suffix.lower() == ".csv":
            from pyarrow import csv
            reader = csv.open_csv(path, convert_options=csv.ConvertOptions(
                null_values=NULL_VALUES, strings_can_be_null=True))
            names = list(reader.schema.names)
            reader.close()
            return names
    except (pa.ArrowInvalid, OSError, IndexError):
        pass
    return []


def chunks(source: Source, chunk_rows: int, start_row: int = 0
           ) -> Iterator[tuple[int, np.ndarray, pa.Table | None]]:
    """(first_row, x (B, F) float32, passthrough columns or None), B = chunk_rows but the last."""
    if source.kind == ".npy":
        for start, x in npy_chunks(source.path, chunk_rows, start_row):
            yield start, source.array_rows(x, start), None
        return
    if source.kind == ".csv":
        reader = _csv_reader(source.path, source.feature_names, source.passthrough,
                             source.schema)
        batches = _csv_batches(reader, source.path)
    else:
        batches = (batch for f in source.files for batch in parquet_batches(
            f, source.feature_names + source.passthrough, chunk_rows))
    start = 0
    for table in rechunk(batches, chunk_rows):
        end = start + table.num_rows
        if end > start_row:
            skip = max(0, start_row - start)
            table = table.slice(skip)
            x = source.rows_of(table, start + skip)
            yield start + skip, x, table.select(source.passthrough) if source.passthrough else None
        start = end


def npy_chunks(path: Path, chunk_rows: int, start_row: int) -> Iterator[tuple[int, np.ndarray]]:
    """Rows of a .npy file read with plain reads, not a memory map: a file truncated while it
    is read gives a one-line error here, where a mapped page would have killed the process
    with SIGBUS."""
    array = open_npy(path)  # checks dtype and shape
    rows, width = array.shape
    if np.isfortran(array):  # columns first: rows are not contiguous, read as mapped
        for start in range(start_row, rows, chunk_rows):
            yield start, np.asarray(array[start:start + chunk_rows], dtype=np.float32)
        return
    dtype, offset = array.dtype, array.offset
    del array
    row_bytes = width * dtype.itemsize
    with open(path, "rb") as f:
        for start in range(start_row, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            f.seek(offset + start * row_bytes)
            block = f.read(n * row_bytes)
            if len(block) < n * row_bytes:
                raise InputError(f"{path} ends before row {start + len(block) // row_bytes} of "
                                 f"its {rows}: it was truncated while it was read")
            yield start, np.frombuffer(block, dtype).reshape(n, width).astype(np.float32)


def _check_columns(columns: pa.Schema, where: str, feature_names: list[str],
                   passthrough: list[str], schema: Schema | None) -> None:
    match_columns(columns.names, feature_names, where)
    missing = [c for c in passthrough if c not in columns.names]
    if missing:
        raise InputError(f"{where} has no column {missing[0]!r} to pass through (--columns); "
                         f"its columns are {', '.join(columns.names[:8])}"
                         f"{', ...' if len(columns.names) > 8 else ''}")
    numeric = feature_names if schema is None else [schema.names[j]
                                                    for j in schema.numeric_index]
    for name in numeric:
        check_numeric(name, columns.field(name).type, where, allow_null=True)


def _parquet_schema(path: Path, feature_names: list[str], passthrough: list[str],
                    schema: Schema | None) -> int:
    from pyarrow import parquet
    try:
        metadata = parquet.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, ".parquet", e) from None
    _check_columns(metadata.schema_arrow, str(path), feature_names, passthrough, schema)
    return metadata.metadata.num_rows


def parquet_batches(path: Path, columns: list[str], batch_rows: int,
                    row_groups: list[int] | None = None) -> Iterator[pa.RecordBatch]:
    """The file's rows (or those of the given row groups), batch_rows at a time."""
    from pyarrow import parquet
    # pre_buffer (pyarrow's default) keeps every row group read so far alive until the file is
    # closed: the memory of a job grew with its input. Without it, memory stays flat.
    try:
        reader = parquet.ParquetFile(path, pre_buffer=False)
        yield from reader.iter_batches(batch_size=batch_rows, row_groups=row_groups,
                                       columns=columns)
    except (pa.ArrowException, OSError) as e:  # a corrupt page, found when it is read
        raise arrow_error(path, ".parquet", e) from None


def _csv_reader(path: Path, feature_names: list[str], passthrough: list[str],
                schema: Schema | None):
    from pyarrow import csv
    try:
        header = csv.open_csv(path, convert_options=csv.ConvertOptions(
            null_values=NULL_VALUES, strings_can_be_null=True))
        _check_columns(header.schema, str(path), feature_names, passthrough, schema)
        header.close()
        options = csv_convert_options(feature_names, passthrough, schema)
        return csv.open_csv(path, convert_options=options,
                            read_options=csv.ReadOptions(block_size=1 << 22))
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, ".csv", e) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} has a header that is not UTF-8 text; expected a UTF-8 "
                         f".csv file") from None


def csv_convert_options(feature_names: list[str], passthrough: list[str],
                        schema: Schema | None = None):
    """Numeric features as float32, categorical ones as text; pass-through columns as the
    text they hold, never re-typed (a timestamp 2024-01-01T00:00:00 stays that text, not
    pyarrow's 2024-01-01 00:00:00). With a schema, the cells of serving.tables.read's
    NULL_VALUES are missing."""
    from pyarrow import csv
    text = set(passthrough)
    if schema is not None:
        text |= {schema.names[j] for j in schema.categorical_index}
    types = {name: pa.string() if name in text else pa.float32()
             for name in feature_names + passthrough}
    if schema is None:
        return csv.ConvertOptions(include_columns=feature_names + passthrough, column_types=types)
    return csv.ConvertOptions(include_columns=feature_names + passthrough, column_types=types,
                              null_values=NULL_VALUES, strings_can_be_null=True)


def _csv_batches(reader, path: Path) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise InputError(f"{path}: {printable(str(e).splitlines()[0], 200)}; expected "
                             f"numbers in every feature column") from None
        except UnicodeDecodeError:
            raise InputError(f"{path} has a cell that is not UTF-8 text; expected a UTF-8 "
                             f".csv file") from None
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
