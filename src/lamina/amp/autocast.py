"""``autocast``: run the listed ops in a lower precision inside a ``with`` block.

Inside ``with autocast():`` each op whose Function class carries an ``autocast_policy``
(:mod:`lamina.amp.policy` lists them) casts its floating inputs first, on the graph, so
that the gradient of a cast input is cast back: float32 parameters get float32 gradients.
float64 inputs are never cast, as in torch. The state is per thread; blocks nest and an
inner ``autocast(enabled=False)`` turns it off for its body.
"""

from __future__ import annotations

import functools
from types import TracebackType

import numpy

from lamina import backend
from lamina.autograd import autocast_state

_LOWER_DTYPES = ("float16",)


class autocast:  # noqa: N801 - a context manager named as torch.autocast
    """Mixed precision for a block (or, as a decorator, a function).

    Parameters
    ----------
    enabled:
        ``False`` runs the block at full precision (handy to switch mixed precision by a flag
        or to keep one part of a model in float32 inside an outer autocast).
    dtype:
        The lower precision for the ``"lower"`` ops: ``float16`` (NumPy has no bfloat16);
        ``None`` means the default, float16.
    """

    def __init__(self, enabled: bool = True, dtype=numpy.float16):
        chosen = _lower_dtype(dtype)
        self.enabled = bool(enabled)
        self.dtype = chosen
        self._saved: list = []

    def __enter__(self) -> autocast:
        self._saved.append(autocast_state.state.dtype)
        autocast_state.state.dtype = self.dtype if self.enabled else None
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        autocast_state.state.dtype = self._saved.pop()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with autocast(self.enabled, self.dtype):
                return fn(*args, **kwargs)
        return wrapped


def _lower_dtype(dtype):
    """``dtype`` (None: float16) as a NumPy dtype, checked to be one autocast supports."""
    if dtype is None:
        return backend.xp.dtype(numpy.float16)
    try:
        chosen = backend.xp.dtype(dtype)
    except TypeError:
        chosen = None
    if chosen is None or chosen.name not in _LOWER_DTYPES:
        given = repr(dtype) if chosen is None else chosen
        raise TypeError(f"autocast: dtype {given} is not supported; expected one of {_LOWER_DTYPES} "
                        "(or None for float16)")
    return chosen


def is_autocast_enabled() -> bool:
    """Whether autocast is on in this thread."""
    return autocast_state.state.dtype is not None


def get_autocast_dtype():
    """The dtype the ``"lower"`` ops run in (``None`` while autocast is off)."""
    return autocast_state.state.dtype
