"""Whole-file reads of numeric tables: .csv (header row), .parquet and .npy, with one-line
errors."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError
from serving.tables.columns import arrow_to_rows, finite_rows, match_columns
from serving.tables.formats import table_format


@dataclass
class Table:
    x: np.ndarray  # (N, F) float32, finite
    feature_names: list[str] | None  # None when the file has no column names (.npy)


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


def open_npy(path: Path) -> np.ndarray:
    """A .npy file as a read-only memory map, refused unless 2-D and numeric."""
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:  # EOFError: an empty file
        raise InputError(f"{path} is not a readable .npy array ({e}); expected a 2-D numeric "
                         f"array saved with numpy.save") from None
    if x.dtype.kind not in "fiu":
        raise InputError(f"{path} holds {x.dtype} values; expected a numeric array")
    if x.ndim != 2:
        raise InputError(f"{path} has shape {list(x.shape)}; expected a 2-D array "
                         f"(rows, features)")
    return x


def arrow_error(path: Path, suffix: str, error: Exception) -> InputError:
    """A one-line InputError for a file pyarrow could not read."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "Empty CSV file" in first:
        return InputError(f"{path} is empty; expected a header row and numeric rows")
    return InputError(f"{path} could not be read as {suffix} ({first})")


NULL_VALUES = ["", "?", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None",
               "#N/A"]  # CSV cells read as missing, in any column


def csv_null_options(**options):
    """pyarrow's ConvertOptions with NULL_VALUES as missing, in text columns too."""
    from pyarrow import csv
    return csv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True, **options)


def read_arrow(path: Path, suffix: str) -> pa.Table:
    try:
        if suffix == ".csv":
            from pyarrow import csv
            return csv.read_csv(path, convert_options=csv_null_options())
        from pyarrow import parquet
        return parquet.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, suffix, e) from None
