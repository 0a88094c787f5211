"""The one home of the array library, the default dtype and the random source.

Ops reach the array module through ``backend.xp`` at call time, never by importing
NumPy themselves, so a CuPy backend can be switched in with :func:`use` (Chainer's
``xp`` idiom).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

import numpy

xp: ModuleType = numpy
"""The active array module (NumPy by default)."""

_default_dtype = numpy.dtype(numpy.float32)
_rng = numpy.random.default_rng()


def use(name: str) -> ModuleType:
    """Select the array module: ``'numpy'`` or ``'cupy'``; returns the module."""
    global xp
    if name == "numpy":
        xp = numpy
    elif name == "cupy":
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError("backend.use('cupy'): CuPy is not installed") from exc
        xp = cupy
    else:
        raise ValueError(f"backend.use: unknown array library {name!r}; expected 'numpy' or 'cupy'")
    return xp


def to_numpy(array) -> numpy.ndarray:
    """Return ``array`` as a host NumPy array (a no-op on the NumPy backend)."""
    if isinstance(array, numpy.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else numpy.asarray(array)


def get_default_dtype() -> numpy.dtype:
    """The floating dtype new tensors and parameters get (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Set the floating dtype for new tensors: ``float32`` or ``float64``."""
    global _default_dtype
    dt = numpy.dtype(dtype)
    if dt not in (numpy.float32, numpy.float64):
        raise ValueError(f"set_default_dtype: expected float32 or float64, got {dt}")
    _default_dtype = dt


def manual_seed(seed: int) -> None:
    """Seed every random source lamina uses (its generator, NumPy's and Python's)."""
    global _rng
    _rng = numpy.random.default_rng(seed)
    numpy.random.seed(seed % 2**32)
    random.seed(seed)


class _RandomScope(threading.local):
    """The per-thread scope opened by :func:`random_scope`: its seed, key and generator."""

    seed: int | None = None
    key: tuple[int, ...] | None = None
    generator: numpy.random.Generator | None = None


_scope = _RandomScope()


def rng() -> numpy.random.Generator:
    """The generator behind every random draw in lamina (initializers, dropout, shuffling).

    Inside :func:`random_scope` on the same thread, the scope's own generator instead.
    """
    if _scope.seed is None:
        return _rng
    if _scope.generator is None:
        _scope.generator = numpy.random.default_rng(numpy.random.SeedSequence(_scope.seed, spawn_key=_scope.key))
    return _scope.generator


@contextlib.contextmanager
def random_scope(seed: int, key: tuple[int, ...]) -> Iterator[None]:
    """Within the block, :func:`rng` on this thread draws from a generator seeded with
    ``SeedSequence(seed, spawn_key=key)``, made on first use; other threads are unaffected.

    The data loader makes each batch in such a scope, keyed by (epoch, batch index), so
    that random transforms give the same batch whichever thread makes it and in whatever
    order; a transform with a seed of its own reads :func:`random_scope_key` to key its
    generator in the same way.
    """
    previous = (_scope.seed, _scope.key, _scope.generator)
    _scope.seed, _scope.key, _scope.generator = int(seed), tuple(int(k) for k in key), None
    try:
        yield
    finally:
        _scope.seed, _scope.key, _scope.generator = previous


def random_scope_key() -> tuple[int, ...] | None:
    """The key of the :func:`random_scope` open on this thread, or None outside one."""
    return _scope.key


def get_rng_state() -> dict:
    """The generator's state, to be saved with a training checkpoint."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _rng.bit_generator.state = state


def tune_malloc(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Keep freed activation buffers in the process for reuse (glibc only).

    By default glibc serves each array above 128 KiB with a fresh mmap and returns it to
    the system when freed, so every training step pays page faults again for the same
    buffers. Raising the mmap and trim thresholds lets the heap reuse them. Disable with
    the environment variable ``LAMINA_MALLOC_TUNING=0``. Returns whether it was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(
            libc.mallopt(m_trim_threshold, trim_threshold))
    except (OSError, AttributeError):
        return False


if os.environ.get("LAMINA_MALLOC_TUNING", "1") != "0":
    tune_malloc()
