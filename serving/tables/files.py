"""Writing a file so that readers see the old one or the whole new one, never a part."""

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) to a temporary file beside path, then rename it over path; a failed write
    leaves path as it was and no temporary file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
