"""Position-dependent masks and biases for attention scores (batch axes first, as
:func:`lamina.functional.scaled_dot_product_attention` takes them).

ALiBi (Press et al. 2022, "Train short, test long") gives no position to the embeddings;
each head h adds a penalty proportional to the distance between query and key to its
scores, with a head-specific slope m_h:

    bias[h, i, j] = -m_h |p_i - p_j|          (p_i = offset + i for the queries, p_j = j)

For n heads, n a power of two, the slopes are the geometric sequence m_h = r^(h + 1) with
r = 2^(-8 / n) (1/2, 1/4, ..., 1/256 for 8 heads). For other n, the paper's code takes the
slopes of the largest power of two c < n and then every other slope of 2c heads, n - c of
them. In causal use only the keys j <= p_i are kept, where the bias is -m_h (p_i - j).

Sliding-window causal attention (Longformer, Mistral): query i sees the ``window`` most
recent keys, itself included:

    keep[i, j] = p_i - window < j <= p_i
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor

__all__ = ["alibi_bias", "alibi_slopes", "sliding_window_mask"]


def _count(value, what: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{who}: {what} must be an int >= {low}, got {value!r}")
    return value


def _power_of_two_slopes(n: int) -> list[float]:
    ratio = 2.0 ** (-8.0 / n)
    return [ratio ** (h + 1) for h in range(n)]


def alibi_slopes(num_heads: int) -> list[float]:
    """The heads' ALiBi slopes m_0 .. m_{n-1} (see the module docstring)."""
    _count(num_heads, "num_heads", "alibi_slopes")
    if num_heads & (num_heads - 1) == 0:
        return _power_of_two_slopes(num_heads)
    below = 2 ** int(math.floor(math.log2(num_heads)))
    return _power_of_two_slopes(below) + _power_of_two_slopes(2 * below)[0::2][:num_heads - below]


def _positions(t_q: int, t_k: int, offset: int, who: str):
    _count(t_q, "t_q", who)
    _count(t_k, "t_k", who)
    _count(offset, "offset", who, low=0)
    xp = backend.xp
    return offset + xp.arange(t_q)[:, None], xp.arange(t_k)[None, :]


def alibi_bias(num_heads: int, t_q: int, t_k: int, offset: int = 0, dtype=None) -> Tensor:
    """The ALiBi bias (num_heads, t_q, t_k), bias[h, i, j] = -m_h |offset + i - j|, to add to
    the scores of heads (..., num_heads, t_q, t_k) (pass it as a float ``mask``). Query i is
    at position ``offset + i`` and key j at j: with s steps read before, ``offset = s`` and
    the keys of all s + t_q steps. A constant tensor of ``dtype`` (default: the default dtype)."""
    queries, keys = _positions(t_q, t_k, offset, "alibi_bias")
    xp = backend.xp
    slopes = xp.asarray(alibi_slopes(num_heads))[:, None, None]
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap((-slopes * xp.abs(queries - keys)[None]).astype(dtype))


def sliding_window_mask(t_q: int, t_k: int, window: int, offset: int = 0) -> Tensor:
    """The boolean mask (t_q, t_k) of sliding-window causal attention, True where query i (at
    position ``offset + i``) sees key j: offset + i - window < j <= offset + i."""
    _count(window, "window", "sliding_window_mask")
    queries, keys = _positions(t_q, t_k, offset, "sliding_window_mask")
    return Tensor._wrap((keys <= queries) & (keys > queries - window))
