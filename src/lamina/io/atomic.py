"""Atomic file writes: a crash or an exception never leaves a half-written file.

The bytes go to a temporary file in the same directory, are flushed to disk, and the
temporary file is renamed over the target (an atomic replace on POSIX and Windows). The
result has the permissions a plain ``open(path, "wb")`` would give: those of the file it
replaces, or for a new file 0o666 less the process's umask (the temporary file itself starts
private, 0o600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)          # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """The permission bits ``target`` would have if it were written in place."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary file for writing that replaces ``path`` only if the block completes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path) as handle:
        handle.write(data)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure to ``path`` as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path
