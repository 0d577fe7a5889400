"""Which table format a path is: its lower-case extension, one of FORMATS."""

import os
from pathlib import Path

from serving.core.rows import InputError

FORMATS = (".csv", ".parquet", ".npy")


def table_format(path: str | os.PathLike, name: str | None = None, also: str = "") -> str:
    """The format of a table file from its extension; `name` is how errors call the path
    (default: the path itself), `also` adds to what is expected."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{name or path} has extension {suffix or '(none)'!r}; expected one of "
                         f"{', '.join(FORMATS)}{also}")
    return suffix
