"""PyTorch's ``multi_head_attention_forward``: the whole multi-head attention of
``torch.nn.MultiheadAttention`` as one function of its weights, in PyTorch's layout (sequences
first: query (L, N, E), key and value (S, N, E_k) and (S, N, E_v), or unbatched (L, E)).

With h heads of d = E / h features, Q = query W_q^T + b_q, K = key W_k^T + b_k, V = value W_v^T + b_v,
each head attends with A = softmax(Q_i K_i^T / sqrt(d) + mask) and the heads' A V_i, joined,
go through the output projection W_o. ``bias_k``/``bias_v`` append one learned key and value,
``add_zero_attn`` one zero key and value, ``static_k``/``static_v`` (N h, S, d) replace the
projected keys and values; masks follow PyTorch: a boolean True (or -inf) hides a key, a float
mask is added to the scores.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer_functions import dropout, linear
from lamina.nn.module import as_tensor

__all__ = ["multi_head_attention_forward"]

OP = "multi_head_attention_forward"


def _additive(mask, dtype, what: str):
    """A mask as an array to add to the scores: True -> -inf, False -> 0; floats as they are."""
    if mask is None:
        return None
    xp = backend.xp
    values = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
    if values.dtype == bool:
        return xp.where(values, -xp.inf, 0.0).astype(dtype)
    if values.dtype.kind != "f":
        raise TypeError(f"{OP}: {what} must be boolean or floating, got {values.dtype}")
    return values.astype(dtype, copy=False)


def _pad_key_axis(mask):
    """One more key (a 0 column: visible) at the end of a mask's last axis."""
    if mask is None:
        return None
    xp = backend.xp
    return xp.concatenate([mask, xp.zeros((*mask.shape[:-1], 1), dtype=mask.dtype)], axis=-1)


def _static(value, what: str, rows: int, head_dim: int) -> Tensor:
    t = as_tensor(value)
    if t.ndim != 3 or t.shape[0] != rows or t.shape[2] != head_dim:
        raise ShapeError(f"{OP}: {what} must be (N num_heads, S, head_dim) = ({rows}, S, {head_dim}), got {t.shape}")
    return t


def multi_head_attention_forward(query, key, value, embed_dim_to_check: int, num_heads: int, in_proj_weight,
                                 in_proj_bias, bias_k, bias_v, add_zero_attn: bool, dropout_p: float,
                                 out_proj_weight, out_proj_bias, training: bool = True, key_padding_mask=None,
                                 need_weights: bool = True, attn_mask=None, use_separate_proj_weight: bool = False,
                                 q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights: bool = True,
                                 is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """(attention output (L, N, E), weights (N, L, S) averaged over the heads, (N, h, L, S) with
    ``average_attn_weights=False``, or None without ``need_weights``), PyTorch's arguments and
    order. ``is_causal`` is PyTorch's hint that ``attn_mask`` is the causal mask (it must be given)."""
    q_in, k_in, v_in = as_tensor(query), as_tensor(key), as_tensor(value)
    batched = q_in.ndim == 3
    if q_in.ndim not in (2, 3) or k_in.ndim != q_in.ndim or v_in.ndim != q_in.ndim:
        raise ShapeError(f"{OP}: query, key and value must all be (L, N, E) or all unbatched (L, E), got "
                         f"{q_in.shape}, {k_in.shape} and {v_in.shape}")
    if not batched:
        q_in, k_in, v_in = (F.expand_dims(t, 1) for t in (q_in, k_in, v_in))
        if key_padding_mask is not None:
            key_padding_mask = backend.xp.asarray(getattr(key_padding_mask, "data", key_padding_mask))[None]
    tgt_len, bsz, embed_dim = q_in.shape
    if embed_dim != embed_dim_to_check:
        raise ShapeError(f"{OP}: query has {embed_dim} features, expected embed_dim_to_check={embed_dim_to_check}")
    if embed_dim % num_heads:
        raise ValueError(f"{OP}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if k_in.shape[:2] != v_in.shape[:2] or k_in.shape[1] != bsz:
        raise ShapeError(f"{OP}: key {k_in.shape} and value {v_in.shape} must share (S, N) with N = {bsz} "
                         f"(query {q_in.shape})")
    if is_causal and attn_mask is None:
        raise RuntimeError(f"{OP}: is_causal is a hint that attn_mask is the causal mask; give attn_mask too")
    head_dim = embed_dim // num_heads
    dtype = q_in.dtype

    if use_separate_proj_weight:
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
        if any(w is None for w in weights):
            raise ValueError(f"{OP}: use_separate_proj_weight needs q_proj_weight, k_proj_weight and v_proj_weight")
    else:
        if in_proj_weight is None:
            raise ValueError(f"{OP}: in_proj_weight is None; give it, or use_separate_proj_weight with its three "
                             "weights")
        in_proj_weight = as_tensor(in_proj_weight)
        if in_proj_weight.shape != (3 * embed_dim, embed_dim):
            raise ShapeError(f"{OP}: in_proj_weight must be (3 E, E) = ({3 * embed_dim}, {embed_dim}), got "
                             f"{in_proj_weight.shape}")
        weights = F.chunk(in_proj_weight, 3, axis=0)
    biases = (None,) * 3
    if in_proj_bias is not None:
        in_proj_bias = as_tensor(in_proj_bias)
        if in_proj_bias.shape != (3 * embed_dim,):
            raise ShapeError(f"{OP}: in_proj_bias must be (3 E,) = ({3 * embed_dim},), got {in_proj_bias.shape}")
        biases = F.chunk(in_proj_bias, 3, axis=0)
    q, k, v = (linear(t, w, b) for t, w, b in zip((q_in, k_in, v_in), weights, biases))

    mask = _additive(attn_mask, dtype, "attn_mask")
    if mask is not None:
        expected = {2: (tgt_len, k_in.shape[0]), 3: (bsz * num_heads, tgt_len, k_in.shape[0])}.get(mask.ndim)
        if mask.shape != expected:
            raise ShapeError(f"{OP}: attn_mask must be (L, S) = {(tgt_len, k_in.shape[0])} or (N num_heads, L, S) = "
                             f"{(bsz * num_heads, tgt_len, k_in.shape[0])}, got {mask.shape}")
        if mask.ndim == 2:
            mask = mask[None]                                # (1, L, S): the same for every batch and head
    padding = _additive(key_padding_mask, dtype, "key_padding_mask")
    if bias_k is not None and bias_v is not None:
        k, v = (F.concat([t, F.tile(F.reshape(as_tensor(extra), (1, 1, embed_dim)), (1, bsz, 1))], axis=0)
                for t, extra in ((k, bias_k), (v, bias_v)))      # one more key and value for every sequence
        mask, padding = _pad_key_axis(mask), _pad_key_axis(padding)
    elif (bias_k is None) != (bias_v is None):
        raise ValueError(f"{OP}: bias_k and bias_v come together (both or neither)")

    def heads(t):                                            # (S, N, E) -> (N h, S, d)
        return F.transpose(F.reshape(t, (t.shape[0], bsz * num_heads, head_dim)), (1, 0, 2))

    q = heads(q)
    k = heads(k) if static_k is None else _static(static_k, "static_k", bsz * num_heads, head_dim)
    v = heads(v) if static_v is None else _static(static_v, "static_v", bsz * num_heads, head_dim)
    if add_zero_attn:
        zeros = Tensor(backend.xp.zeros((bsz * num_heads, 1, head_dim)), dtype=dtype)
        k, v = F.concat([k, zeros], axis=1), F.concat([v, zeros], axis=1)
        mask, padding = _pad_key_axis(mask), _pad_key_axis(padding)
    src_len = k.shape[1]
    if padding is not None:
        if padding.shape != (bsz, src_len):
            raise ShapeError(f"{OP}: key_padding_mask must be (N, S) = ({bsz}, {src_len}), got {padding.shape}")
        per_head = backend.xp.repeat(padding, num_heads, axis=0)[:, None, :]    # (N h, 1, S)
        mask = per_head if mask is None else mask + per_head

    scores = F.matmul(q * (1.0 / math.sqrt(head_dim)), F.transpose(k, (0, 2, 1)))    # (N h, L, S)
    hidden = None                # rows whose every key is masked: zeros without need_weights (PyTorch's SDPA)
    if mask is not None:
        scores = scores + Tensor(mask, dtype=dtype)
        if not need_weights:
            hidden = backend.xp.broadcast_to(backend.xp.isneginf(mask).all(axis=-1, keepdims=True),
                                             (bsz * num_heads, tgt_len, 1))
            hidden = hidden if hidden.any() else None
    if hidden is not None:
        attention = F.softmax(F.where(hidden, 0.0, scores), axis=-1) * Tensor(~hidden, dtype=dtype)
    else:
        attention = F.softmax(scores, axis=-1)
    if training and dropout_p > 0.0:
        attention = dropout(attention, p=dropout_p, training=True)
    out = F.transpose(F.matmul(attention, v), (1, 0, 2))                          # (L, N h, d)
    out = linear(F.reshape(out, (tgt_len, bsz, embed_dim)), out_proj_weight, out_proj_bias)
    weights_out = None
    if need_weights:
        weights_out = F.reshape(attention, (bsz, num_heads, tgt_len, src_len))
        if average_attn_weights:
            weights_out = F.mean(weights_out, axis=1)
        if not batched:
            weights_out = F.squeeze(weights_out, 0)
    if not batched:
        out = F.squeeze(out, 1)
    return out, weights_out
