"""Attention with soft-capped scores (Gemma 2, Riviere et al. 2024): each score is squashed
smoothly into (-c, c) before the mask and the softmax,

    S = Q K^T scale,   S' = c tanh(S / c),   C = softmax(S' + mask) V,

so that no logit grows without bound. Built from recorded ops (matmul, tanh, softmax), it has
first and second derivatives like every composite.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax, tanh
from lamina.functional.indexing import repeat_interleave
from lamina.functional.shape import transpose

__all__ = ["softcapped_attention"]


def softcapped_attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None,
                         cap: float = 50.0) -> Tensor:
    """C = softmax(cap tanh(Q K^T scale / cap) + mask) V for q (N, h, T_q, d), k (N, g, T_k, d)
    and v (N, g, T_k, d_v), g dividing h (query head i reads key/value head i // (h / g), as in
    grouped-query attention). ``scale`` defaults to 1 / sqrt(d); ``mask``: boolean (True =
    attend) or float (added), broadcastable to (N, h, T_q, T_k); ``causal`` hides the keys
    after each query (query i sees keys j <= i + T_k - T_q). A score a boolean mask hides
    becomes the dtype's lowest value, so a row with every key hidden gives a uniform average,
    not NaN."""
    q, k, v = (x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x)) for x in (q, k, v))
    grouped = q.ndim == 4 and k.ndim == 4 and q.shape[1] % k.shape[1] == 0
    if not grouped or v.ndim != 4 or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"softcapped_attention: expected q (N, h, T_q, d), k (N, g, T_k, d) and v (N, g, T_k, d_v) "
                         f"with g dividing h, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not cap > 0:
        raise ValueError(f"softcapped_attention: cap must be > 0, got {cap!r}")
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = repeat_interleave(k, group, axis=1), repeat_interleave(v, group, axis=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = tanh((q @ transpose(k, 0, 1, 3, 2)) * (scale / cap)) * cap
    t_q, t_k = q.shape[2], k.shape[2]
    keep = None
    if causal:
        keep = np.arange(t_k)[None, :] <= (t_k - t_q + np.arange(t_q))[:, None]
    xp = backend.xp
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
        if m.dtype == bool:
            keep = m if keep is None else m & xp.asarray(keep)
        else:
            scores = scores + Tensor._wrap(m.astype(scores.dtype))
    if keep is not None:
        lowest = np.finfo(scores.dtype).min
        bias = xp.where(xp.asarray(keep), 0.0, lowest).astype(scores.dtype)
        scores = scores + Tensor._wrap(bias)
    return softmax(scores, axis=-1) @ v
