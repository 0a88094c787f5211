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
import warnings
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


class _Deterministic:
    """The switch of :func:`use_deterministic_algorithms` and the modules told of a change."""

    enabled = False
    warn_only = False
    listeners: list = []


def use_deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """Make every op's result depend only on its inputs and the thread count (as PyTorch's switch).

    On, lamina's threads never hand work to a route chosen by timing: products take one
    route fixed by their shapes and :func:`lamina.set_num_threads` (see :mod:`lamina.parallel`),
    and every BLAS library is held on one thread (NumPy code outside lamina included) until
    the mode is turned off. Off (the default), products use OpenBLAS's own threads while
    lamina's are idle, and float32 results may differ in the last bits from run to run.
    An op that cannot be made deterministic calls :func:`alert_not_deterministic`: an error,
    or with ``warn_only`` a warning.

    Results still differ between thread counts, NumPy/BLAS builds and CPUs (each picks its
    own kernels). On a GPU (CuPy) the accumulating scatters (``xp.add.at``: scatter_add and
    the backward passes of indexing, embedding and adaptive pooling) add in an order set by
    the hardware; the mode does not change them, nor does it alert for them yet.
    """
    if not isinstance(mode, bool) or not isinstance(warn_only, bool):
        raise TypeError(f"use_deterministic_algorithms: expected bools for mode and warn_only, "
                        f"got {mode!r} and {warn_only!r}")
    _Deterministic.enabled, _Deterministic.warn_only = mode, warn_only
    for listener in _Deterministic.listeners:
        listener(mode)


def are_deterministic_algorithms_enabled() -> bool:
    """Whether :func:`use_deterministic_algorithms` is on."""
    return _Deterministic.enabled


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    """Whether the deterministic mode only warns about ops that cannot follow it."""
    return _Deterministic.warn_only


def on_deterministic_change(listener) -> None:
    """Call ``listener(mode)`` at each :func:`use_deterministic_algorithms` (for modules above this one)."""
    _Deterministic.listeners.append(listener)


def alert_not_deterministic(op: str) -> None:
    """For an op with no deterministic implementation: under the deterministic mode, a
    RuntimeError naming ``op`` (a warning with ``warn_only``); nothing otherwise."""
    if not _Deterministic.enabled:
        return
    message = (f"{op} has no deterministic implementation on {xp.__name__}, but "
               f"use_deterministic_algorithms(True) is on; turn it off, or pass warn_only=True to be warned only")
    if _Deterministic.warn_only:
        warnings.warn(message, UserWarning, stacklevel=2)
    else:
        raise RuntimeError(message)


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
