"""Checks of table columns against the model: names present, types numeric, cells finite."""

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError, first_nonfinite


def match_columns(columns: list[str], feature_names: list[str], where: str) -> list[str]:
    """The model's feature columns, by name; a one-line error names those the file lacks."""
    present = set(columns)
    twice = sorted({name for name in feature_names if columns.count(name) > 1})
    if twice:
        raise InputError(f"{where} has {len(twice)} feature columns more than once "
                         f"({', '.join(repr(n) for n in twice[:3])}); expected each column once")
    missing = [name for name in feature_names if name not in present]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise InputError(f"{where} lacks {len(missing)} of the model's {len(feature_names)} "
                         f"feature columns ({shown}); expected columns named as feature_names "
                         f"in the model's metadata")
    return feature_names


def check_numeric(name: str, kind: pa.DataType, where: str, allow_null: bool = False) -> None:
    """A one-line error unless a feature column's type is a number (or, before any value has
    been seen, as for a CSV header alone, null)."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or \
            (allow_null and pa.types.is_null(kind)):
        return
    raise InputError(f"{where}: column {name!r} is {kind}, not numeric; expected numbers")


def first_null(column: pa.ChunkedArray | pa.Array) -> int:
    """The index of a column's first null value (the column must have one)."""
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def arrow_to_rows(table: pa.Table, where: str, first_row: int = 0) -> np.ndarray:
    """Columns of a pyarrow table as float32 rows, refusing text, nulls and non-finite values;
    rows are named in errors by first_row + their index."""
    if table.num_columns == 0:
        raise InputError(f"{where} has no columns; expected numeric feature columns")
    if table.num_rows == 0:
        raise InputError(f"{where} has no rows; expected at least one row of numbers")
    for name, column in zip(table.column_names, table.columns):
        check_numeric(name, column.type, where)
        if column.null_count:
            row = first_row + first_null(column)
            raise InputError(f"{where}: column {name!r} has an empty or NaN value at row {row}; "
                             f"expected numbers in every cell")
    x = np.column_stack([c.to_numpy().astype(np.float32, copy=False) for c in table.columns])
    return finite_rows(x, where, table.column_names, first_row)


def finite_rows(x: np.ndarray, where: str, names: list[str] | None = None,
                first_row: int = 0) -> np.ndarray:
    """x as C-contiguous rows, or a one-line error naming the first NaN or infinity."""
    if x.shape[0] == 0:
        raise InputError(f"{where} has no rows; expected at least one row of numbers")
    if (bad := first_nonfinite(x)) is not None:
        r, c, what = bad
        column = repr(names[c]) if names else str(c)
        raise InputError(f"{where}: row {first_row + r}, column {column} is {what}; "
                         f"expected finite numbers")
    return np.ascontiguousarray(x)
