"""Writing a file so that readers see the old one or the whole new one, never a part."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) to a temporary file beside path, then rename it over path; a failed write
    leaves path as it was and no temporary file behind. The temporary file is created
    exclusively under a fresh name (O_EXCL): a symlink planted beside the output is never
    followed."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
