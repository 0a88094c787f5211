"""The pieces the fused recurrent cells share (see :mod:`lamina.functional.recurrent`):
the input projection of all steps, the sigmoid taken from a tanh, the weight gradients
after the backward loop, and the bookkeeping of variable lengths."""

from __future__ import annotations

from lamina import backend, parallel
from lamina.functional._util import channel_sums, per_channel

__all__ = [
    "as_dtype", "finish_padded", "half_sigmoid_columns", "padding_mask", "previous_states", "project_inputs",
    "sigmoid_from_tanh",
    "total_bias", "upstream_gradients", "weight_gradients", "where_padded"
]


def as_dtype(a, dtype):
    return None if a is None else a.astype(dtype, copy=False)


def project_inputs(x, w_x, bias):
    """(x2, Z): x (N, T, D) as (T N, D) rows, time-major, and Z = x2 W_x + bias as a fresh
    (T, N, G H) buffer: each step's block is contiguous for the elementwise passes."""
    n, steps, d = x.shape
    x2 = backend.xp.ascontiguousarray(x.transpose(1, 0, 2)).reshape(steps * n, d)
    z = parallel.matmul(x2, w_x)
    if bias is not None:
        per_channel(backend.xp.add, z, bias, z)
    return x2, z.reshape(steps, n, w_x.shape[1])


def half_sigmoid_columns(a, width: int):
    """A copy of ``a`` (weights or a bias) with its first ``width`` columns halved: those
    gates' pre-activations come out as z / 2, ready for sigma(z) = (1 + tanh(z / 2)) / 2."""
    a = a.copy()
    a[..., :width] *= 0.5
    return a


def sigmoid_from_tanh(a):
    """In place: tanh(z / 2) -> sigma(z)."""
    a *= 0.5
    a += 0.5


def weight_gradients(fn, dz, states, want):
    """(dJ/dx, dJ/dW_x, dJ/dW_h, dJ/db) from the stacked pre-activation gradients ``dz``
    (T, N, G H) and the states a^<0..T-1> (T, N, H), both time-major; ``want`` says which
    of the four are needed (``None`` for the others). The one bias gradient serves b_x and
    b_h alike; dJ/dx comes back batch first, (N, T, D)."""
    xp = backend.xp
    steps, n, gh = dz.shape
    dz2 = dz.reshape(steps * n, gh)
    dx = None
    if want[0]:
        dx = parallel.matmul(dz2, fn.w_x.T).reshape(steps, n, fn.w_x.shape[0])
        dx = xp.ascontiguousarray(dx.transpose(1, 0, 2))
    dw_x = parallel.matmul(fn.x2.T, dz2) if want[1] else None
    dw_h = None
    if want[2]:
        prev = xp.ascontiguousarray(states).reshape(steps * n, states.shape[-1])
        dw_h = parallel.matmul(prev.T, dz2)
    db = channel_sums(dz2) if want[3] else None
    return dx, dw_x, dw_h, db


def total_bias(b_x, b_h):
    if b_x is None:
        return None
    return b_x + b_h


# -- variable lengths --------------------------------------------------------------------
def padding_mask(fn, steps: int) -> int:
    """Without ``fn.lengths`` or ``fn.skipped``: T (no step is padded). With lengths: keeps
    ``fn.pad``, the (T, N) mask of the padded steps (t >= lengths[i]), and returns the first
    step where some row is padded, min(lengths). With ``fn.skipped``, a (T, N) boolean mask
    of the steps to skip anywhere in the sequence (a general mask: left padding, holes):
    keeps it as ``fn.pad`` and returns the first step where some row is skipped."""
    xp = backend.xp
    skipped = getattr(fn, "skipped", None)
    if skipped is not None:
        fn.pad = skipped
        return int(xp.argmax(skipped.any(axis=1)))
    lengths = fn.lengths
    if lengths is None:
        fn.pad = None
        return steps
    fn.pad = xp.arange(steps)[:, None] >= lengths[None, :]
    return int(lengths.min())


def finish_padded(fn, out, pad, steps: int) -> None:
    """After a forward loop with lengths: the carried final state a^<lengths[i]> into slot
    T + 1, then the outputs at the padded steps to zeros. With a general mask
    (``fn.skipped``) a real step may follow a skipped one, whose state backward needs: the
    states a^<0..T-1> are first kept as ``fn.kept_states`` (see :func:`previous_states`)."""
    if getattr(fn, "skipped", None) is not None:
        fn.kept_states = out[:steps].copy()
    out[steps + 1] = out[steps]
    backend.xp.copyto(out[1:steps + 1], 0, where=pad[:, :, None])


def previous_states(fn, steps: int):
    """The states a^<0..T-1> (T, N, H) each step started from, for backward."""
    kept = getattr(fn, "kept_states", None)
    return fn.out[:steps] if kept is None else kept


def upstream_gradients(fn, dy, steps: int):
    """(the gradient reaching the outputs a^<1..T> (T, N, H), the one reaching the final
    state (N, H) or None), from ``dy`` time-major as the output. With lengths the final
    state has its own slot T + 1 and the gradient of the (constant zero) outputs at padded
    steps is dropped."""
    if fn.pad is None:
        return dy[1:steps + 1], None
    xp = backend.xp
    dtype = fn.out.dtype
    seq = xp.where(fn.pad[:, :, None], xp.zeros((), dtype=dtype), dy[1:steps + 1])
    return seq, xp.array(dy[steps + 1], dtype=dtype)


def where_padded(pad, value, a):
    """``a`` (T, N, ...) with ``value`` at the padded steps: in place for a scalar 0 (the
    coefficients), a new array otherwise (a forget or update gate of 1)."""
    xp = backend.xp
    mask = pad.reshape(pad.shape + (1,) * (a.ndim - 2))
    if value == 0:
        xp.copyto(a, 0, where=mask)
        return a
    return xp.where(mask, xp.asarray(value, dtype=a.dtype), a)


