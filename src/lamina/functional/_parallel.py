"""Memory-bound NumPy passes split over the batch axis across the cores.

NumPy runs its element-wise loops and copies on one core (only the GEMMs, in BLAS, use
them all), but it releases the GIL inside those loops. The copies, adds and compares
around the GEMMs of convolution and pooling are therefore cut into chunks of the batch
that a few threads run at the same time; every chunk writes its own slice of the output,
so the result does not depend on the number of threads. Small passes (under
``MIN_ELEMENTS``) stay on the calling thread, where a thread hand-off would cost more than
it saves.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from lamina import backend

MIN_ELEMENTS = 1 << 18

_threads = max(1, min(os.cpu_count() or 1, 8))
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_local = threading.local()


def set_num_threads(n: int) -> None:
    """Threads for the memory-bound passes of convolution and pooling (1: none)."""
    global _threads
    if int(n) < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, got {n}")
    _threads = int(n)


def get_num_threads() -> int:
    return _threads


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():      # a forked child gets its own threads
        _pool = ThreadPoolExecutor(max_workers=max(_threads - 1, 1), thread_name_prefix="lamina")
        _pool_pid = os.getpid()
    return _pool


def _run_chunk(fn, lo: int, hi: int) -> None:
    _local.inside = True
    try:
        fn(lo, hi)
    finally:
        _local.inside = False


def split(fn, n: int, elements: int) -> None:
    """Call ``fn(lo, hi)`` on consecutive chunks covering ``range(n)``, in parallel when the
    pass touches at least MIN_ELEMENTS elements. Chunks must write disjoint outputs."""
    k = min(_threads, n)
    if (k <= 1 or elements < MIN_ELEMENTS or getattr(_local, "inside", False)
            or backend.xp.__name__ != "numpy"):
        fn(0, n)
        return
    bounds = [n * i // k for i in range(k + 1)]
    pool = _executor()
    futures = [pool.submit(_run_chunk, fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for future in futures:
            future.result()


def copy(dst, src) -> None:
    """dst[...] = src, split along the first axis (shapes must match)."""
    def chunk(lo, hi):
        dst[lo:hi] = src[lo:hi]
    split(chunk, dst.shape[0], dst.size)


def contiguous(src):
    """A C-contiguous copy of ``src`` (e.g. an as_strided view), made in parallel."""
    dst = backend.xp.empty(src.shape, dtype=src.dtype)
    copy(dst, src)
    return dst


def add(a, b, out=None):
    """a + b (b may broadcast over the trailing axes), split along the first axis."""
    xp = backend.xp
    if out is None:
        out = xp.empty(a.shape, dtype=xp.result_type(a, b))
    b_full = b.ndim == a.ndim and b.shape[0] == a.shape[0]

    def chunk(lo, hi):
        xp.add(a[lo:hi], b[lo:hi] if b_full else b, out=out[lo:hi])
    split(chunk, a.shape[0], a.size)
    return out
