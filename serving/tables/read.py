"""Whole-file reads of numeric tables: .csv (header row), .parquet and .npy, with one-line
errors."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError, printable
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
    check_regular(path, f"a {suffix} file")
    return path, suffix


def check_regular(path: Path, expected: str) -> None:
    """A one-line error unless path is a regular file: missing, or a FIFO, a device or a
    directory, each said as what it is."""
    if path.is_file():
        return
    if not path.exists():
        raise InputError(f"{path} does not exist; expected {expected}")
    kind = "a directory" if path.is_dir() else "a FIFO" if path.is_fifo() else \
        "a device" if path.is_char_device() or path.is_block_device() else "not a regular file"
    raise InputError(f"{path} is {kind}; expected {expected}")


def open_npy(path: Path) -> np.ndarray:
    """A .npy file as a read-only memory map, refused unless 2-D and numeric."""
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:  # EOFError: an empty file
        raise InputError(f"{path} is not a readable .npy array ({printable(str(e), 120)}); "
                         f"expected a 2-D numeric array saved with numpy.save") from None
    if not isinstance(x, np.ndarray):  # np.load opens an .npz archive whatever its name
        raise InputError(f"{path} is an .npz archive (numpy.savez), not a .npy array; expected "
                         f"one 2-D array saved with numpy.save")
    if x.dtype.kind not in "fiu":
        raise InputError(f"{path} holds {x.dtype} values; expected a numeric array")
    if x.ndim != 2:
        raise InputError(f"{path} has shape {list(x.shape)}; expected a 2-D array "
                         f"(rows, features)")
    return x


MAGIC = {b"\x93NUMPY": ".npy", b"PAR1": ".parquet", b"PK\x03\x04": ".npz or .zip"}


def arrow_error(path: Path, suffix: str, error: Exception) -> InputError:
    """A one-line InputError for a file pyarrow could not read; the file's own bytes are
    never echoed (a binary file named .csv would put them in the message)."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    for magic, kind in MAGIC.items():
        if head.startswith(magic) and kind != suffix:
            return InputError(f"{path} holds {kind} bytes but is named {suffix}; rename it "
                              f"{kind.split()[0]}")
    if "Empty CSV file" in first:
        if path.stat().st_size > 0:
            return InputError(f"{path} has no complete header row in its first block (4 MiB); "
                              f"expected a header row of column names shorter than that")
        return InputError(f"{path} is empty; expected a header row and numeric rows")
    if "CSV parse error" in first:  # pyarrow appends the offending row
        first = first.split(":")[0] + ": " + first.split(":")[1] if first.count(":") > 1 \
            else first
    return InputError(f"{path} could not be read as {suffix} ({printable(first, 160)})")


NULL_VALUES = ["", "?", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None",
               "#N/A"]  # CSV cells read as missing, in any column


def csv_null_options(**options):
    """pyarrow's ConvertOptions with NULL_VALUES as missing, in text columns too."""
    from pyarrow import csv
    return csv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True, **options)


def read_arrow(path: Path, suffix: str) -> pa.Table:
    try:
        return _read_arrow(path, suffix)
    except UnicodeDecodeError:
        raise InputError(f"{path} has a header or cell that is not UTF-8 text; expected a "
                         f"UTF-8 {suffix} file") from None


def _read_arrow(path: Path, suffix: str) -> pa.Table:
    try:
        if suffix == ".csv":
            from pyarrow import csv
            return csv.read_csv(path, convert_options=csv_null_options())
        from pyarrow import parquet
        return parquet.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise arrow_error(path, suffix, e) from None
