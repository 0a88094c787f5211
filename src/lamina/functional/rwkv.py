"""RWKV-4's WKV operator (Peng et al., "RWKV: Reinventing RNNs for the Transformer Era", 2023),
per channel c, with decay w = exp(time_decay) > 0 and bonus u = time_first:

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
            / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})

a weighted mean of the values, the weights softmax_i(l_ti) over the logits l_ti = k_i - (t-1-i) w
(i < t), u + k_t (i = t). Two equivalent forms:

* parallel (training): the (T, T) logits per channel, masked above the diagonal, through a
  softmax (stable by its max subtraction); O(T^2) per channel.
* recurrent (generation): the state (a, b, p), numerator and denominator scaled by e^{-p}
  (the "max trick" keeps every exponent <= 0):

      q = max(p, u + k_t);  wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q})
      q' = max(p - w, k_t); a = e^{p-w-q'} a + e^{k_t-q'} v_t; b = e^{p-w-q'} b + e^{k_t-q'}; p = q'

Both start from a ``state`` (a, b, p), each (N, C), or from nothing (a = b = 0, p = -inf), and
return the state after the last step. Composites of primitive ops.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.elementwise import exp, log, maximum
from lamina.functional.reduce import max as reduce_max
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.shape import concat, stack

__all__ = ["rwkv_wkv_parallel", "rwkv_wkv_recurrent"]

NO_HISTORY = -1e38
"""p of the empty state: e^{p - q} is 0 for any logit q met (finite in float32 too)."""


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))


def _check(who: str, time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor, state) -> None:
    if k.ndim != 3 or k.shape != v.shape:
        raise ShapeError(f"{who}: expected k and v of one shape (N, T, C), got {tuple(k.shape)} and "
                         f"{tuple(v.shape)}")
    channels = k.shape[-1]
    if tuple(time_decay.shape) != (channels,) or tuple(time_first.shape) != (channels,):
        raise ShapeError(f"{who}: time_decay and time_first must be ({channels},) for {channels} channels, got "
                         f"{tuple(time_decay.shape)} and {tuple(time_first.shape)}")
    if state is not None and (len(state) != 3 or any(tuple(s.shape) != (k.shape[0], channels) for s in state)):
        raise ShapeError(f"{who}: state must be (a, b, p), each (N, C) = {(k.shape[0], channels)}, got "
                         f"{[tuple(getattr(s, 'shape', ())) for s in state]}")


def _state_tensors(state) -> tuple[Tensor, Tensor, Tensor] | None:
    return None if state is None else tuple(_as_tensor(s) for s in state)


def rwkv_wkv_recurrent(time_decay, time_first, k, v, state=None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """wkv (N, T, C) step by step with the max trick (module docstring), from ``state``;
    returns (wkv, (a, b, p))."""
    who = "rwkv_wkv_recurrent"
    time_decay, time_first, k, v = (_as_tensor(x) for x in (time_decay, time_first, k, v))
    state = _state_tensors(state)
    _check(who, time_decay, time_first, k, v, state)
    if state is None:
        zeros = backend.xp.zeros((k.shape[0], k.shape[-1]), dtype=k.dtype)
        state = (Tensor._wrap(zeros), Tensor._wrap(zeros), Tensor._wrap(zeros + NO_HISTORY))
    a, b, p = state
    w = exp(time_decay)
    outputs = []
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]
        now = time_first + kt
        top = maximum(p, now)
        old, new = exp(p - top), exp(now - top)
        outputs.append((old * a + new * vt) / (old * b + new))
        decayed = p - w
        top = maximum(decayed, kt)
        old, new = exp(decayed - top), exp(kt - top)
        a, b, p = old * a + new * vt, old * b + new, top
    return stack(outputs, axis=1), (a, b, p)


def rwkv_wkv_parallel(time_decay, time_first, k, v, state=None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """wkv (N, T, C) for all steps at once: softmax over the masked (T, T) logits of each
    channel (module docstring); a ``state`` enters as one more key, of logit p + log b - t w
    at step t and value a / b. Returns (wkv, (a, b, p)), the state after the last step."""
    who = "rwkv_wkv_parallel"
    time_decay, time_first, k, v = (_as_tensor(x) for x in (time_decay, time_first, k, v))
    state = _state_tensors(state)
    _check(who, time_decay, time_first, k, v, state)
    xp, steps, dtype = backend.xp, k.shape[1], k.dtype
    w = exp(time_decay)
    t, i = np.arange(steps)[:, None], np.arange(steps)[None, :]
    gaps = xp.asarray((t - 1 - i)[..., None], dtype=dtype)                         # (T, T, 1)
    diagonal = xp.asarray(np.eye(steps)[..., None], dtype=dtype)
    future = xp.asarray(np.where(i > t, -np.inf, 0.0)[..., None], dtype=dtype)
    logits = k[:, None] - gaps * w + diagonal * (time_first - w) + future      # (N, T, T, C)
    values = v[:, None]                                                         # (N, 1, T, C)
    last_logits = k - xp.asarray(np.arange(steps - 1, -1, -1)[:, None], dtype=dtype) * w   # (N, T, C)
    last_values = v
    if state is not None:
        a, b, p = state
        carried = p + log(b)                                                    # (N, C)
        elapsed = xp.asarray(np.arange(steps)[:, None], dtype=dtype)           # (T, 1)
        logits = concat([(carried[:, None] - elapsed * w)[:, :, None], logits], axis=2)
        values = concat([(a / b)[:, None, None], values], axis=2)
        last_logits = concat([(carried - w * float(steps))[:, None], last_logits], axis=1)
        last_values = concat([(a / b)[:, None], last_values], axis=1)
    wkv = reduce_sum(softmax(logits, axis=2) * values, axis=2)
    top = reduce_max(last_logits, axis=1)
    weights = exp(last_logits - top[:, None])
    return wkv, (reduce_sum(weights * last_values, axis=1), reduce_sum(weights, axis=1), top)
