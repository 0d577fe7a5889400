"""Reading numeric tables from .csv (header row), .parquet and .npy files, with one-line errors."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError

FORMATS = (".csv", ".parquet", ".npy")


@dataclass
class Table:
    x: np.ndarray  # (N, F) float32, finite
    feature_names: list[str] | None  # None when the file has no column names (.npy)


def table_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path} has extension {suffix or '(none)'!r}; expected one of "
                         f"{', '.join(FORMATS)}")
    return suffix


def read_table(path: str | os.PathLike, feature_names: list[str] | None = None) -> Table:
    """A whole file as float32 rows; every column read must be numeric and every value finite.

    With `feature_names`, a file that names its columns must hold each of them (they are
    taken in that order, other columns are left out); a .npy file is taken by position.
    """
    path, suffix = existing_table(path)
    if suffix == ".npy":
        return Table(finite_rows(np.asarray(open_npy(path), dtype=np.float32), str(path)), None)
    arrow = read_arrow(path, suffix)
    if feature_names is not None:
        arrow = arrow.select(match_columns(arrow.column_names, feature_names, str(path)))
    return Table(arrow_to_rows(arrow, str(path)), list(arrow.column_names))


def existing_table(path: str | os.PathLike) -> tuple[Path, str]:
    """The path of a table file that exists, and its format (its lower-case extension)."""
    path = Path(path)
    suffix = table_format(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; expected a {suffix} file")
    return path, suffix


def match_columns(columns: list[str], feature_names: list[str], where: str) -> list[str]:
    """The model's feature columns, by name; a one-line error names those the file lacks."""
    present = set(columns)
    missing = [name for name in feature_names if name not in present]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"{where} lacks {len(missing)} of the model's {len(feature_names)} "
                         f"feature columns ({shown}); expected columns named as feature_names "
                         f"in the model's metadata")
    return feature_names


def open_npy(path: Path) -> np.ndarray:
    """A .npy file as a read-only memory map, refused unless 2-D and numeric."""
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path} is not a readable .npy array ({e}); expected a 2-D numeric "
                         f"array saved with numpy.save") from None
    if x.dtype.kind not in "fiu":
        raise InputError(f"{path} holds {x.dtype} values; expected a numeric array")
    if x.ndim != 2:
        raise InputError(f"{path} has shape {list(x.shape)}; expected a 2-D array "
                         f"(rows, features)")
    return x


def read_arrow(path: Path, suffix: str) -> pa.Table:
    try:
        if suffix == ".csv":
            from pyarrow import csv
            return csv.read_csv(path)
        from pyarrow import parquet
        return parquet.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Empty CSV file" in first:
            raise InputError(f"{path} is empty; expected a header row and numeric rows") from None
        raise InputError(f"{path} could not be read as {suffix} ({first})") from None


def arrow_to_rows(table: pa.Table, where: str, first_row: int = 0) -> np.ndarray:
    """Columns of a pyarrow table as float32 rows, refusing text, nulls and non-finite values;
    rows are named in errors by first_row + their index."""
    if table.num_columns == 0:
        raise InputError(f"{where} has no columns; expected numeric feature columns")
    if table.num_rows == 0:
        raise InputError(f"{where} has no rows; expected at least one row of numbers")
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise InputError(f"{where}: column {name!r} is {kind}, not numeric; expected numbers")
        if column.null_count:
            row = first_row + first_null(column)
            raise InputError(f"{where}: column {name!r} has an empty or NaN value at row {row}; "
                             f"expected numbers in every cell")
    x = np.column_stack([c.to_numpy().astype(np.float32, copy=False) for c in table.columns])
    return finite_rows(x, where, table.column_names, first_row)


def first_null(column: pa.ChunkedArray | pa.Array) -> int:
    """The index of a column's first null value (the column must have one)."""
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def finite_rows(x: np.ndarray, where: str, names: list[str] | None = None,
                first_row: int = 0) -> np.ndarray:
    """x as C-contiguous rows, or a one-line error naming the first NaN or infinity."""
    if x.shape[0] == 0:
        raise InputError(f"{where} has no rows; expected at least one row of numbers")
    finite = np.isfinite(x)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        column = repr(names[c]) if names else str(c)
        what = "NaN" if np.isnan(x[r, c]) else "infinite"
        raise InputError(f"{where}: row {first_row + r}, column {column} is {what}; "
                         f"expected finite numbers")
    return np.ascontiguousarray(x)
