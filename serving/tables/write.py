"""Writing tables of scores as .parquet, .csv or .npy, whole or not at all."""

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError
from serving.tables.files import atomic_write
from serving.tables.sources import rechunk

ROW_GROUP_ROWS = 1 << 16  # output row groups, fixed so that bytes do not depend on chunking


def write_table(tables: Iterable[pa.Table], out: Path, rows: int | None = None) -> None:
    """Tables in row order to out (.parquet, .csv or .npy by its extension), through a
    temporary file beside it renamed once complete. `rows`, the total when known, lets a .npy
    output be written one table at a time."""
    kind = out.suffix.lower()

    def write(tmp: Path) -> None:
        if kind == ".npy":
            _write_npy(tables, tmp, rows)
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


def _write_npy(tables: Iterable[pa.Table], path: Path, rows: int | None) -> None:
    """A structured array filled table by table through a memory map. Without `rows` the
    tables are listed first to count them, so all of them are held at once."""
    if rows is None:
        tables = list(tables)
        rows = sum(t.num_rows for t in tables)
    records, start = None, 0
    for table in tables:
        if records is None:
            records = np.lib.format.open_memmap(path, mode="w+", dtype=_npy_dtype(table.schema),
                                                shape=(rows,))
        for name in table.schema.names:
            records[name][start:start + table.num_rows] = table[name].to_numpy()
        start += table.num_rows
    if records is not None:
        records.flush()
        del records


def _npy_dtype(schema: pa.Schema) -> list[tuple[str, np.dtype]]:
    for f in schema:
        if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                or pa.types.is_boolean(f.type)):
            raise InputError(f"column {f.name!r} is {f.type}; a .npy output holds numbers only "
                             f"(write .csv or .parquet to pass it through)")
    return [(f.name, f.type.to_pandas_dtype()) for f in schema]
