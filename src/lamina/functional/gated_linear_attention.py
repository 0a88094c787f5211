"""Gated linear attention (Yang et al., "Gated Linear Attention Transformers with
Hardware-Efficient Training", 2024): linear attention whose state decays by a data-dependent
gate per key feature. Per head, with S (d_k, d_v) and alpha_t = exp(log_alpha_t) in (0, 1]^d_k,

    S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,      o_t = S_t^T (scale q_t)

Chunkwise (C steps from S_0, b_t = log alpha_1 + .. + log alpha_t inside the chunk, all in
log space so that no factor exceeds one):

    o_t = (scale q_t * exp(b_t)) S_0 + sum_{i <= t} (scale q_t * exp(b_t - b_i) . k_i) v_i
    S_C = diag(exp(b_C)) S_0 + sum_i (k_i * exp(b_C - b_i)) v_i^T

Inputs: q, k and log_alpha (N, H, T, d_k), v (N, H, T, d_v), state (N, H, d_k, d_v).
Composites of primitive ops: first and second derivatives come with them.
"""

from __future__ import annotations

from lamina.functional.arithmetic import matmul
from lamina.functional.delta_rule import (
    as_tensor,
    check_chunk_size,
    check_sequence_inputs,
    chunked,
    lower_mask,
    zero_state,
)
from lamina.functional.elementwise import exp
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat, swapaxes

__all__ = ["gated_linear_attention_chunkwise", "gated_linear_attention_recurrent"]


def _inputs(who: str, q, k, v, log_alpha, state):
    q, k, v, log_alpha = (as_tensor(x) for x in (q, k, v, log_alpha))
    state = None if state is None else as_tensor(state)
    check_sequence_inputs(who, q, k, v, {"log_alpha": (log_alpha, (q.shape[-1],) if q.ndim == 4 else ())}, state)
    return q, k, v, log_alpha, state


def gated_linear_attention_recurrent(q, k, v, log_alpha, scale: float = 1.0, state=None,
                                     return_state: bool = False):
    """GLA one step at a time: S_t = diag(exp(log_alpha_t)) S_{t-1} + k_t v_t^T,
    o_t = S_t^T (scale q_t), from ``state`` (N, H, d_k, d_v) (default zeros). Returns
    O (N, H, T, d_v), or with ``return_state`` the pair (O, the last S)."""
    q, k, v, log_alpha, state = _inputs("gated_linear_attention_recurrent", q, k, v, log_alpha, state)
    s = zero_state(q, v) if state is None else state
    outputs = []
    for t in range(q.shape[2]):
        s = s * exp(log_alpha[:, :, t, :, None]) + matmul(swapaxes(k[:, :, t:t + 1], -1, -2), v[:, :, t:t + 1])
        outputs.append(matmul(q[:, :, t:t + 1] * scale, s))
    out = concat(outputs, axis=2)
    return (out, s) if return_state else out


def gated_linear_attention_chunkwise(q, k, v, log_alpha, chunk_size: int = 64, scale: float = 1.0, state=None,
                                     return_state: bool = False):
    """GLA ``chunk_size`` steps at a time (module docstring; T need not be a multiple): the
    same outputs and last state as :func:`gated_linear_attention_recurrent`. The scores inside
    a chunk are formed per key feature, (N, H, T / C, C, C, d_k) at once."""
    who = "gated_linear_attention_chunkwise"
    q, k, v, log_alpha, state = _inputs(who, q, k, v, log_alpha, state)
    steps = q.shape[2]
    size = min(check_chunk_size(who, chunk_size), steps)
    qc, kc, vc = (chunked(x, size) for x in (q * scale, k, v))
    cumulative = cumsum(chunked(log_alpha, size), axis=-2)                   # b_t, (N, H, n, C, d_k)
    inclusive = lower_mask(size, v.dtype)
    gaps = (cumulative[..., :, None, :] - cumulative[..., None, :, :]) * inclusive[:, :, None]
    scores = reduce_sum(qc[..., :, None, :] * exp(gaps) * kc[..., None, :, :], axis=-1) * inclusive
    within = matmul(scores, vc)                                              # (N, H, n, C, d_v)
    s = zero_state(q, v) if state is None else state
    outputs = []
    for c in range(qc.shape[2]):
        b = cumulative[:, :, c]                                              # (N, H, C, d_k)
        outputs.append(within[:, :, c] + matmul(qc[:, :, c] * exp(b), s))
        last = b[:, :, -1:]
        s = s * exp(swapaxes(last, -1, -2)) + matmul(swapaxes(kc[:, :, c] * exp(last - b), -1, -2), vc[:, :, c])
    out = concat(outputs, axis=2)
    if out.shape[2] != steps:
        out = out[:, :, :steps]
    return (out, s) if return_state else out
