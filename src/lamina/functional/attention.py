"""Scaled dot-product attention (course notes, Attention models).

For each query position t the notes weigh the activations a^<t'> of the attended sequence
by attention weights that sum to one over t', and take the weighted sum as the context:

    alpha^<t,t'> = exp(e^<t,t'>) / sum_t'' exp(e^<t,t''>),   c^<t> = sum_t' alpha^<t,t'> a^<t'>

Here the scores e come from dot products of a query with keys, and the vectors summed are
values (all three are rows, batch axes first):

    e = Q K^T / sqrt(d),   alpha = softmax of e over the keys,   C = alpha V
    Q: (..., T_q, d),  K: (..., T_k, d),  V: (..., T_k, d_v),  C: (..., T_q, d_v)

One node computes it, with the backward in closed form (dJ/dC written dC):

    dV = alpha^T dC,   dalpha = dC V^T,   de = alpha * (dalpha - sum_t' dalpha * alpha)
    dQ = de K / sqrt(d),   dK = de^T Q / sqrt(d)

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask keeps the
scores where it is True (the others get weight 0); a float mask is added to the scores;
``causal=True`` lets query t attend to keys t' <= t only (aligned at the first positions when
T_q != T_k). A query whose every key is masked gets all-zero weights, hence a zero context
(PyTorch gives NaN there).

``block_size`` (an int, or "auto") computes the same attention block by block
(:mod:`lamina.functional.attention_blockwise`): memory grows as T block instead of T_q T_k.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.activation import softmax
from lamina.functional.attention_blockwise import AUTO_BLOCK, BlockwiseAttention
from lamina.functional.elementwise import where

__all__ = ["ScaledDotProductAttention", "scaled_dot_product_attention"]


def _mm(a, b):
    return parallel.matmul(a, b)


def _swap(a):
    return a.swapaxes(-1, -2)


def _grouped_shapes(q_shape, k_shape, v_shape, group: int) -> tuple:
    """The shapes of grouped-query attention's operands seen by one broadcast product: Q
    (..., h_q, T_q, d) as (..., h_kv, group, T_q, d), K and V (..., h_kv, T_k, d) as
    (..., h_kv, 1, T_k, d); no values move."""
    h_kv = q_shape[-3] // group
    return (q_shape[:-3] + (h_kv, group) + q_shape[-2:], k_shape[:-2] + (1,) + k_shape[-2:],
            v_shape[:-2] + (1,) + v_shape[-2:])


def _merged_heads_shape(grouped_shape) -> tuple:
    """(..., h_kv, group, T, d) -> (..., h_kv group, T, d)."""
    return grouped_shape[:-4] + (grouped_shape[-4] * grouped_shape[-3],) + grouped_shape[-2:]


class ScaledDotProductAttention(Function):
    """C = softmax(Q K^T scale + mask) V as one node (see the module docstring).

    Inputs (Q, K, V) or (Q, K, V, B) with B a float mask that requires grad: an additive bias
    broadcastable to the scores whose gradient is dJ/dB = de summed over its broadcast axes.
    Hyperparameters: ``scale``; ``keep`` (a boolean array broadcastable to the scores, or
    None); ``bias`` (an additive float array, or None; B's values when B is an input); ``dropout`` (the probability of
    zeroing a weight, with the kept weights scaled by 1 / (1 - dropout)); ``group`` (0, or
    grouped-query attention's h_q / h_kv: the node then takes Q (..., h_q, T_q, d) and K, V
    (..., h_kv, T_k, d) and computes on the views of :func:`_grouped_shapes`, with ``keep``
    and ``bias`` broadcastable to the grouped scores (..., h_kv, group, T_q, T_k); the
    gradients of K and V sum over each group).
    """

    keep = None
    bias = None
    dropout = 0.0
    group = 0

    def forward(self, q, k, v, bias=None):
        xp = backend.xp
        if bias is not None:
            self.bias = bias.astype(q.dtype, copy=False)
        elif self.bias is not None and self.bias.dtype != q.dtype:     # autocast lowered q, k and v
            self.bias = self.bias.astype(q.dtype)
        if self.group:
            self.shapes = (q.shape, k.shape, v.shape) + (() if bias is None else (bias.shape,))
            grouped = _grouped_shapes(q.shape, k.shape, v.shape, self.group)
            q, k, v = (x.reshape(shape) for x, shape in zip((q, k, v), grouped))
        self.q, self.k, self.v = q, k, v
        e = _mm(q, _swap(k))
        e *= self.scale
        if self.bias is not None:
            e = e + self.bias
        if self.keep is not None:
            e = xp.where(self.keep, e, -xp.inf)
        if e.shape[-1]:
            top = e.max(axis=-1, keepdims=True)
        else:                                             # no keys: every query's context is 0
            top = xp.full(e.shape[:-1] + (1,), -xp.inf, dtype=e.dtype)
        masked_rows = ~xp.isfinite(top)
        any_masked = bool(masked_rows.any())             # a query with every key masked
        if any_masked:
            top = xp.where(masked_rows, 0, top)
        e -= top
        xp.exp(e, out=e)
        total = e.sum(axis=-1, keepdims=True)
        if any_masked:
            total = xp.where(total == 0, 1, total)
        e /= total
        self.alpha = e
        self.drop = None
        if self.dropout > 0:
            keep = backend.rng().random(e.shape) >= self.dropout
            self.drop = keep.astype(e.dtype) / e.dtype.type(1 - self.dropout)
            e = e * self.drop
        self.weights = e
        out = _mm(e, v)
        return out.reshape(_merged_heads_shape(out.shape)) if self.group else out

    def backward(self, dc):
        if self.group:
            dc = dc.reshape(dc.shape[:-3] + (dc.shape[-3] // self.group, self.group) + dc.shape[-2:])
            grads = self._backward_on_views(dc)
            return tuple(None if g is None else g.reshape(shape) for g, shape in zip(grads, self.shapes))
        return self._backward_on_views(dc)

    def _backward_on_views(self, dc):
        need_q, need_k, need_v = self.needs_grad[:3]
        need_bias = len(self.needs_grad) == 4 and self.needs_grad[3]
        q, k, v = self.q, self.k, self.v
        dv = unbroadcast(_mm(_swap(self.weights), dc), v.shape) if need_v else None
        dq = dk = dbias = None
        if need_q or need_k or need_bias:
            alpha = self.alpha
            da = _mm(dc, _swap(v))
            if self.drop is not None:
                da *= self.drop
            de = da
            de -= (da * alpha).sum(axis=-1, keepdims=True)
            de *= alpha
            if need_bias:
                dbias = unbroadcast(de, self.bias.shape).copy()   # the bias is added after the scale
            de *= self.scale
            if need_q:
                dq = unbroadcast(_mm(de, k), q.shape)
            if need_k:
                dk = unbroadcast(_mm(_swap(de), q), k.shape)
        return (dq, dk, dv) if len(self.needs_grad) == 3 else (dq, dk, dv, dbias)

    def backward_graph(self, dc):
        """The same VJP by tensor ops. alpha depends on Q and K, so it is computed again from
        the input tensors by recorded ops; the boolean mask and the dropout mask are constants,
        the float mask too unless it is the input B."""
        q, k, v = self.inputs[:3]
        bias = self.inputs[3] if len(self.inputs) == 4 else self.bias
        if self.group:
            grouped = _grouped_shapes(q.shape, k.shape, v.shape, self.group)
            q, k, v = (x.reshape(shape) for x, shape in zip((q, k, v), grouped))
            dc = dc.reshape(dc.shape[:-3] + (dc.shape[-3] // self.group, self.group) + dc.shape[-2:])
        need_q, need_k, need_v = self.needs_grad[:3]
        need_bias = len(self.needs_grad) == 4 and self.needs_grad[3]
        alpha = self._weights_tensor(q, k, bias)
        weights = alpha if self.drop is None else alpha * self.drop
        dv = sum_to(_swap(weights) @ dc, v.shape) if need_v else None
        dq = dk = dbias = None
        if need_q or need_k or need_bias:
            da = dc @ _swap(v)
            if self.drop is not None:
                da = da * self.drop
            de = alpha * (da - (da * alpha).sum(axis=-1, keepdims=True))
            dbias = sum_to(de, bias.shape) if need_bias else None
            de = de * self.scale
            dq = sum_to(de @ k, q.shape) if need_q else None
            dk = sum_to(_swap(de) @ q, k.shape) if need_k else None
        grads = (dq, dk, dv) if len(self.inputs) == 3 else (dq, dk, dv, dbias)
        if self.group:
            originals = [x.shape for x in self.inputs]
            return tuple(None if g is None else g.reshape(shape) for g, shape in zip(grads, originals))
        return grads

    def _weights_tensor(self, q, k, bias) -> Tensor:
        """alpha = softmax(Q K^T scale + bias) over the kept keys, by recorded ops: masked
        scores are set to half the dtype's lowest value before the softmax (a weight of
        exactly 0 there), and the result is multiplied by the mask, which also gives the
        all-zero weights of a query whose every key is masked."""
        xp = backend.xp
        e = (q @ _swap(k)) * self.scale
        if bias is not None:
            e = e + bias
        if self.keep is None:
            return softmax(e, axis=-1)
        keep = xp.broadcast_to(self.keep, e.shape)
        e = where(keep, e, float(xp.finfo(e.dtype).min) / 2)     # e - max(e) stays finite
        return softmax(e, axis=-1) * keep


def _default_scale(d: int) -> float:
    """1 / sqrt(d); with d = 0 the scores are all 0 whatever the scale, so 1."""
    return 1.0 / math.sqrt(d) if d else 1.0


def _is_learned_mask(mask) -> bool:
    """Whether ``mask`` is a float tensor that requires grad (an additive bias being learned)."""
    return isinstance(mask, Tensor) and mask.requires_grad and mask.dtype.kind == "f"


def _mask_arrays(mask, causal: bool, t_q: int, t_k: int, dtype):
    """(keep, bias): the boolean and additive parts of the mask, each None when absent."""
    xp = backend.xp
    keep = bias = None
    if mask is not None:
        m = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if m.dtype == bool:
            keep = m
        elif m.dtype.kind == "f":
            bias = m.astype(dtype, copy=False)
        else:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = attend) or float "
                            f"(added to the scores), got dtype {m.dtype}")
        if m.ndim > 0 and m.shape[-1] not in (1, t_k) or m.ndim > 1 and m.shape[-2] not in (1, t_q):
            raise ShapeError(f"scaled_dot_product_attention: a mask of shape {tuple(m.shape)} does not "
                             f"broadcast to the scores (..., {t_q}, {t_k})")
    if causal:
        lower = xp.tril(xp.ones((t_q, t_k), dtype=bool))
        keep = lower if keep is None else keep & lower
    return keep, bias


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False, dropout: float = 0.0,
                                 scale: float | None = None, return_weights: bool = False,
                                 enable_gqa: bool = False, block_size: int | str | None = None, *,
                                 attn_mask=None, dropout_p: float | None = None, is_causal: bool | None = None):
    """C = softmax(Q K^T / sqrt(d) + mask) V for Q (..., T_q, d), K (..., T_k, d),
    V (..., T_k, d_v); leading axes broadcast. Returns C (..., T_q, d_v).

    ``mask``: boolean (True = attend) or float (added to the scores), broadcastable to
    (..., T_q, T_k); a float mask tensor that requires grad (a learned bias, relative
    positions) gets its gradient, dJ/dmask = de summed over its broadcast axes.
    ``causal``: query t sees keys t' <= t. ``dropout``: probability of
    zeroing each attention weight (pass 0 outside training). ``scale``: replaces
    1 / sqrt(d). ``return_weights``: also return alpha (..., T_q, T_k), after masking and
    before dropout, as a constant tensor (for inspection; no gradient flows through it).

    ``enable_gqa``: grouped-query attention, as PyTorch's. The heads axis (-3) of Q has
    h_q entries and that of K and V h_kv, h_q a multiple of h_kv; query head i attends with
    key/value head i // (h_q / h_kv). The K/V heads are not copied: inside one node Q is
    viewed as (..., h_kv, h_q / h_kv, T_q, d) against K and V (..., h_kv, 1, T_k, d), so each
    K/V head's gradient sums over its group.

    ``block_size``: None computes the weights alpha (..., T_q, T_k) at once. An int, or
    "auto" (256), computes the same result block by block with the online softmax, keeping
    for backward only C and the log-sum-exp of each query row (FlashAttention's recurrence,
    :class:`lamina.functional.attention_blockwise.BlockwiseAttention`): memory for the
    scores is (..., block, block) instead of (..., T_q, T_k), and blocks that ``causal`` or a
    boolean mask removes entirely are skipped. It needs ``dropout=0`` and
    ``return_weights=False``.

    PyTorch's keyword names are accepted too: ``attn_mask`` for ``mask``, ``dropout_p`` for
    ``dropout`` and ``is_causal`` for ``causal`` (the same meanings).
    """
    mask = _torch_keyword("attn_mask", attn_mask, "mask", mask, None)
    dropout = _torch_keyword("dropout_p", dropout_p, "dropout", dropout, 0.0)
    causal = _torch_keyword("is_causal", is_causal, "causal", causal, False)
    q, k, v = (x if isinstance(x, Tensor) else Tensor(x) for x in (q, k, v))
    if enable_gqa:
        return _grouped_query_attention(q, k, v, mask, causal, dropout, scale, return_weights, block_size)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ShapeError(f"scaled_dot_product_attention: q, k and v need at least 2 axes (..., T, d), got "
                         f"shapes {q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: q {q.shape} and k {k.shape} must share the feature "
                         f"size d, and k and v {v.shape} the number of keys T_k")
    return _attention_node(q, k, v, mask, causal, dropout, scale, return_weights, group=0, block_size=block_size)


def _torch_keyword(torch_name: str, torch_value, name: str, value, default):
    """The argument given under PyTorch's keyword ``torch_name`` or lamina's ``name``, not both."""
    if torch_value is None:
        return value
    if value is not default and value is not None and not (isinstance(value, (bool, float, int))
                                                           and value == default):
        raise TypeError(f"scaled_dot_product_attention: got both {name}= and {torch_name}= (the same argument); "
                        "give one")
    return torch_value


def _attention_node(q, k, v, mask, causal, dropout, scale, return_weights, group: int, block_size=None):
    """The checked call as one ScaledDotProductAttention node (``group``: see the class), or
    with ``block_size`` as one BlockwiseAttention node."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout must be in [0, 1), got {dropout}")
    if block_size is not None:
        return _blockwise_node(q, k, v, mask, causal, dropout, scale, return_weights, group, block_size)
    keep, bias = _mask_arrays(mask, causal, q.shape[-2], k.shape[-2], q.dtype)
    scale = _default_scale(q.shape[-1]) if scale is None else float(scale)
    learned = (mask,) if _is_learned_mask(mask) else ()
    out = ScaledDotProductAttention.apply(q, k, v, *learned, scale=scale, keep=keep, bias=bias,
                                          dropout=float(dropout), group=group)
    if not return_weights:
        return out
    node = out._ctx
    if node is not None:
        weights = node.alpha
    else:  # computed without a graph: recompute the weights alone
        probe = ScaledDotProductAttention()
        probe.__dict__.update(scale=scale, keep=keep, bias=bias, dropout=0.0, group=group)
        probe.forward(q.data, k.data, v.data)
        weights = probe.alpha
    if group:
        weights = weights.reshape(_merged_heads_shape(weights.shape))
    return out, Tensor._wrap(weights.copy())


def _block_rows(block_size) -> int:
    if block_size == "auto":
        return AUTO_BLOCK
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"scaled_dot_product_attention: block_size must be None, a positive int or 'auto', "
                         f"got {block_size!r}")
    return block_size


def _blockwise_node(q, k, v, mask, causal, dropout, scale, return_weights, group: int, block_size):
    """The checked call as one BlockwiseAttention node; with ``group``, on the grouped views
    of :func:`_grouped_shapes` (reshapes on the graph: no values move)."""
    block = _block_rows(block_size)
    if dropout > 0 or return_weights:
        raise ValueError(f"scaled_dot_product_attention(block_size={block_size!r}): the blockwise path never "
                         f"holds the weights, so it supports neither dropout (got {dropout}) nor "
                         f"return_weights (got {return_weights}); use block_size=None for them")
    if _is_learned_mask(mask):
        raise ValueError(f"scaled_dot_product_attention(block_size={block_size!r}): the blockwise path takes the "
                         f"float mask (shape {tuple(mask.shape)}) as a constant, but it requires grad; use "
                         "block_size=None to learn it")
    keep, bias = _mask_arrays(mask, False, q.shape[-2], k.shape[-2], q.dtype)
    scale = _default_scale(q.shape[-1]) if scale is None else float(scale)
    if group:
        grouped = _grouped_shapes(q.shape, k.shape, v.shape, group)
        q, k, v = (x.reshape(shape) for x, shape in zip((q, k, v), grouped))
    out = BlockwiseAttention.apply(q, k, v, scale=scale, keep=keep, bias=bias, causal=bool(causal), block=block)
    return out.reshape(_merged_heads_shape(out.shape)) if group else out


def _grouped_query_attention(q, k, v, mask, causal, dropout, scale, return_weights, block_size=None):
    """scaled_dot_product_attention with h_q query heads sharing h_kv key/value heads."""
    if q.ndim < 3 or k.ndim < 3 or v.ndim < 3:
        raise ShapeError(f"scaled_dot_product_attention(enable_gqa=True): q, k and v need a heads axis "
                         f"(..., heads, T, d), got shapes {q.shape}, {k.shape}, {v.shape}")
    h_q, h_kv = q.shape[-3], k.shape[-3]
    if v.shape[-3] != h_kv or h_q % h_kv:
        raise ShapeError(f"scaled_dot_product_attention(enable_gqa=True): q has {h_q} heads, k {h_kv} and v "
                         f"{v.shape[-3]} (shapes {q.shape}, {k.shape}, {v.shape}); expected k and v to share "
                         "a number of heads that divides the number of query heads")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention(enable_gqa=True): q {q.shape} and k {k.shape} must share "
                         f"the feature size d, and k and v {v.shape} the number of keys T_k")
    return _attention_node(q, k, v, _grouped_mask(mask, h_q, h_kv), causal, dropout, scale, return_weights,
                           group=h_q // h_kv, block_size=block_size)


def _grouped_mask(mask, h_q: int, h_kv: int):
    """A mask broadcastable to the scores (..., h_q, T_q, T_k) reshaped to broadcast to the
    grouped scores (..., h_kv, h_q / h_kv, T_q, T_k)."""
    if mask is None:
        return None
    m = mask if _is_learned_mask(mask) else backend.xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if m.ndim >= 3 and m.shape[-3] == h_q:
        return m.reshape(m.shape[:-3] + (h_kv, h_q // h_kv) + m.shape[-2:])
    if m.ndim >= 3 and m.shape[-3] != 1:
        raise ShapeError(f"scaled_dot_product_attention(enable_gqa=True): a mask of shape {tuple(m.shape)} has "
                         f"{m.shape[-3]} heads; expected {h_q} (the query heads) or 1")
    return m.reshape(m.shape[:-2] + (1,) + m.shape[-2:]) if m.ndim >= 2 else m
