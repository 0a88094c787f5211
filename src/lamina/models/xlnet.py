"""XLNet (Yang et al., "XLNet: Generalized autoregressive pretraining for language
understanding", 2019): permutation language modelling with two-stream self-attention, on
Transformer-XL's relative attention and segment memory.

A factorisation order z (a permutation of the positions 0 .. T-1; z_t is the position predicted
at step t, rank(j) = z^-1(j) its step) gives the likelihood prod_t p(x_{z_t} | x_{z_<t}). Two
streams share every weight:

    content  h_i^l = Layer(q = h_i^{l-1}, kv = [mem ; h^{l-1}], j visible when rank(j) <= rank(i))
    query    g_i^l = Layer(q = g_i^{l-1}, kv = [mem ; h^{l-1}], j visible when rank(j) <  rank(i))

with g_i^0 = w (a learned vector) and h_i^0 the embedding of x_i: the query stream knows the
position i (through the relative positions of its scores) but not the content x_i, and
predicts x_i from g_i^L. Relative distances i - j run both ways (a key later in the text may
come earlier in the order). Partial prediction trains only on the last 1/K steps of the order.
The identity order is left-to-right language modelling.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.transformer_xl import RelativeMultiHeadAttention, TransformerXL, TransformerXLLayer, relative_shift
from lamina.nn import init as initializers
from lamina.nn.layer import register_layer
from lamina.nn.module import as_tensor, build_on_first_call

__all__ = ["TwoStreamRelativeAttention", "XLNetLM", "XLNetLayer", "bidirectional_relative_encoding",
           "partial_prediction_mask", "permutation_masks", "sample_factorization_order"]


def _orders(perm_order, label: str) -> np.ndarray:
    """``perm_order`` as an (N, T) integer array, each row checked to be a permutation."""
    orders = np.asarray(perm_order.data if isinstance(perm_order, Tensor) else perm_order)
    orders = orders[None] if orders.ndim == 1 else orders
    if orders.ndim != 2 or orders.dtype.kind not in "iu":
        raise ShapeError(f"{label}: perm_order must be integer (T,) or (batch, T), got {orders.dtype} "
                         f"{orders.shape}")
    if not np.array_equal(np.sort(orders, axis=1), np.broadcast_to(np.arange(orders.shape[1]), orders.shape)):
        raise ValueError(f"{label}: each row of perm_order must be a permutation of 0 .. {orders.shape[1] - 1}")
    return orders


def _ranks(orders: np.ndarray) -> np.ndarray:
    """rank[n, z[n, t]] = t: the step of the order at which each position is predicted."""
    ranks = np.empty_like(orders)
    np.put_along_axis(ranks, orders, np.arange(orders.shape[1])[None, :], axis=1)
    return ranks


def permutation_masks(perm_order, mem_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (content, query) masks (N, T, mem_len + T), True = attend, of the factorisation
    orders ``perm_order`` (T,) or (N, T): position i sees j when rank(j) <= rank(i)
    (content) or rank(j) < rank(i) (query); both see every memory step. A 1-D order gives
    (T, mem_len + T) masks."""
    orders = _orders(perm_order, "permutation_masks")
    ranks = _ranks(orders)
    earlier_or_same = ranks[:, None, :] <= ranks[:, :, None]              # [n, i, j]: rank(j) <= rank(i)
    strictly_earlier = ranks[:, None, :] < ranks[:, :, None]
    memory = np.ones(ranks.shape + (int(mem_len),), bool)
    content = np.concatenate([memory, earlier_or_same], axis=-1)
    query = np.concatenate([memory, strictly_earlier], axis=-1)
    if np.asarray(perm_order.data if isinstance(perm_order, Tensor) else perm_order).ndim == 1:
        return content[0], query[0]
    return content, query


def partial_prediction_mask(perm_order, k: float = 6.0) -> np.ndarray:
    """(N, T) boolean: the positions predicted in the last 1/``k`` of each order (the last
    max(1, floor(T / k)) steps), as XLNet's partial prediction."""
    if not k >= 1:
        raise ValueError(f"partial_prediction_mask: k must be >= 1, got {k!r}")
    orders = _orders(perm_order, "partial_prediction_mask")
    t = orders.shape[1]
    return _ranks(orders) >= t - max(1, int(t // k))


def sample_factorization_order(batch: int, length: int, rng=None) -> np.ndarray:
    """(batch, length): an independent uniformly random permutation of the positions per row."""
    rng = np.random.default_rng(rng)
    return np.argsort(rng.random((batch, length)), axis=1)


def bidirectional_relative_encoding(k_len: int, t: int, dim: int, dtype=None) -> Tensor:
    """R (k_len + t - 1, dim) for the distances k_len - 1, ..., 0, ..., -(t - 1) (row r:
    distance k_len - 1 - r), the sinusoids of Transformer-XL's encoding at each distance."""
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    distances = xp.arange(k_len - 1, -t, -1, dtype="float64")
    inv_freq = 1.0 / (10000.0 ** (xp.arange(0, dim, 2, dtype="float64") / dim))
    angles = distances[:, None] * inv_freq[None, :]
    return Tensor(xp.concatenate([xp.sin(angles), xp.cos(angles)], axis=-1), dtype=dtype)


def _identity_masks(t: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    return permutation_masks(np.arange(t), mem_len=m)


@register_layer
class TwoStreamRelativeAttention(RelativeMultiHeadAttention):
    """Two-stream relative attention with Transformer-XL's weights (``RelativeMultiHeadAttention``).

    ``attention(h, g=None, memory=None, content_mask=None, query_mask=None)``: ``h`` (N, T,
    ``d_model``) the content stream, ``g`` (N, T, ``d_model``) the query stream or None,
    ``memory`` (N, M, ``d_model``) read through a stop-gradient. Both streams' queries attend
    to the keys and values of [memory ; h] with scores (q_i + u) . k_j + (q_i + v) . W_R R_{i-j}
    over distances of either sign, the masks (T, M + T) or (N, T, M + T), True = attend; they
    default to the identity order (causal content, strictly causal query). A query that sees no
    key gets a zero output. Returns the content output, or (content, query) when ``g`` is given.
    """

    def forward(self, h, g=None, memory=None, content_mask=None, query_mask=None):
        h = as_tensor(h)
        if h.ndim != 3 or h.shape[-1] != self.d_model:
            raise ShapeError(f"{self._label()}: the content stream {h.shape} must be (batch, time, {self.d_model})")
        n, t, _ = h.shape
        if g is not None:
            g = as_tensor(g)
            if g.shape != h.shape:
                raise ShapeError(f"{self._label()}: the query stream {g.shape} must match the content stream "
                                 f"{h.shape}")
        context = self._with_memory(h, memory)
        k_len = context.shape[1]
        default_content, default_query = _identity_masks(t, k_len - t)
        width = self.num_heads * self.d_head
        kv = F.matmul(context, F.getitem(self.qkv_weight, (slice(None), slice(width, None))))
        k = self._heads(F.getitem(kv, (..., slice(0, width))))                # (N, H, K, d)
        v = self._heads(F.getitem(kv, (..., slice(width, None))))
        encodings = bidirectional_relative_encoding(k_len, t, self.d_model, dtype=h.dtype)
        r = F.reshape(F.matmul(encodings, self.r_weight), k_len + t - 1, self.num_heads, self.d_head)
        r = F.transpose(r, 1, 2, 0)                                           # (H, d, K + T - 1)
        content = self._attend(h, k, v, r, k_len, self._mask(content_mask, default_content, n, t, k_len, "content"))
        if g is None:
            return content
        return content, self._attend(g, k, v, r, k_len, self._mask(query_mask, default_query, n, t, k_len, "query"))

    def _mask(self, mask, default: np.ndarray, n: int, t: int, k_len: int, stream: str) -> np.ndarray:
        """The mask as (N or 1, 1, T, K) booleans for the (N, H, T, K) scores."""
        allowed = default if mask is None else np.asarray(mask.data if isinstance(mask, Tensor) else mask, bool)
        if allowed.shape not in ((t, k_len), (1, t, k_len), (n, t, k_len)):
            raise ShapeError(f"{self._label()}: {stream}_mask {allowed.shape} must be (segment {t}, memory + "
                             f"segment {k_len}) or (batch {n}, {t}, {k_len})")
        allowed = allowed[None] if allowed.ndim == 2 else allowed
        return backend.xp.asarray(allowed[:, None])

    def _attend(self, x: Tensor, k: Tensor, v: Tensor, r: Tensor, k_len: int, allowed) -> Tensor:
        """One stream's relative attention: queries from ``x`` over the shared keys and values."""
        n, t, _ = x.shape
        width = self.num_heads * self.d_head
        q = self._heads(F.matmul(x, F.getitem(self.qkv_weight, (slice(None), slice(0, width)))))   # (N, H, T, d)
        u = F.reshape(self.r_w_bias, self.num_heads, 1, self.d_head)
        v_bias = F.reshape(self.r_r_bias, self.num_heads, 1, self.d_head)
        content = F.matmul(F.add(q, u), F.transpose(k, 0, 1, 3, 2))          # (a) + (c)
        # column c of the raw scores is distance K - 1 - c; the shift puts distance (K - T) + i - j at (i, j)
        position = F.getitem(relative_shift(F.matmul(F.add(q, v_bias), r)), (..., slice(0, k_len)))
        scores = F.masked_fill(F.mul(F.add(content, position), 1.0 / math.sqrt(self.d_head)), ~allowed, -1e30)
        sees_any = backend.xp.any(allowed, axis=-1, keepdims=True)
        weights = self.attention_dropout(F.mul(F.softmax(scores, axis=-1), sees_any.astype(x.dtype)))
        merged = F.reshape(F.transpose(F.matmul(weights, v), 0, 2, 1, 3), n, t, width)
        return F.matmul(merged, self.out_weight)


@register_layer
class XLNetLayer(TransformerXLLayer):
    """One XLNet layer: Transformer-XL's post-norm layer run on both streams with shared weights,

        y = LN(x + dropout(Attn(x; [mem ; h]))),  out = LN(y + dropout(W_2 relu(W_1 y + b_1) + b_2))

    for x = h (content mask) and x = g (query mask). ``layer(h, g=None, memory=None,
    content_mask=None, query_mask=None)`` -> the new h, or (h, g) when ``g`` is given.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, d_head: int | None = None, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, name: str | None = None):
        super().__init__(d_model, num_heads, d_ff, d_head=d_head, dropout=dropout, layer_norm_eps=layer_norm_eps,
                         name=name)
        self.attention = TwoStreamRelativeAttention(d_model, num_heads, d_head=d_head, dropout=dropout)

    def forward(self, h, g=None, memory=None, content_mask=None, query_mask=None):
        attended = self.attention(h, g, memory, content_mask=content_mask, query_mask=query_mask)
        if g is None:
            return self._finish(as_tensor(h), attended)
        return self._finish(as_tensor(h), attended[0]), self._finish(as_tensor(g), attended[1])

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        y = self.attention_norm(F.add(x, self.residual_dropout(attended)))
        return self.ff_norm(F.add(y, self.residual_dropout(self.linear2(self.linear1(y)))))


@register_layer
class XLNetLM(TransformerXL):
    """An XLNet permutation language model.

    ``model(ids, mems=None, perm_order=None)`` -> (logits, new_mems): ``logits`` (N, T,
    ``vocab_size``), row i the scores of token i given the tokens before it in the order (and
    the memories), read from the query stream; ``perm_order`` (T,) or (N, T), None = the
    identity (left-to-right: row i predicts token i from tokens < i). ``mems`` None or one (N,
    M, ``d_model``) array per layer; ``new_mems`` the last ``mem_len`` content-stream inputs of
    each layer, detached (empty when ``mem_len`` is 0).
    ``model.permutation_lm_loss(ids, perm_order, targets_mask)``: the mean cross-entropy of the
    tokens at the True entries of ``targets_mask`` (N, T).
    Embeddings are scaled by sqrt(d_model) as in Transformer-XL; ``mask_embedding`` is w, the
    query stream's input at every position.
    """

    layer_class = XLNetLayer

    def __init__(self, vocab_size: int, d_model: int = 64, num_heads: int = 2, num_layers: int = 2,
                 d_ff: int = 128, mem_len: int = 0, d_head: int | None = None, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, name: str | None = None):
        super().__init__(vocab_size, d_model=d_model, num_heads=num_heads, num_layers=num_layers, d_ff=d_ff,
                         mem_len=mem_len, d_head=d_head, dropout=dropout, layer_norm_eps=layer_norm_eps, name=name)

    def _build_own_parameters(self) -> None:
        d, dtype = self.d_model, backend.get_default_dtype()
        self.add_parameter("mask_embedding", initializers.normal(std=d ** -0.5)((d,), d, d, dtype))

    def streams(self, ids, mems=None, perm_order=None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(h, g, new_mems): the last layer's content and query streams (N, T, ``d_model``)."""
        if not self.built:
            build_on_first_call(self, np.shape(ids))
        if mems is not None and len(mems) != self.num_layers:
            raise ValueError(f"{self._label()}: expected {self.num_layers} memories (one per layer), got {len(mems)}")
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.ndim != 2:
            raise ShapeError(f"{self._label()}: ids {ids.shape} must be (batch, time)")
        n, t = ids.shape
        m = 0 if mems is None else as_tensor(mems[0]).shape[1]
        orders = np.arange(t) if perm_order is None else _orders(perm_order, self._label())
        if orders.shape[-1] != t or (orders.ndim == 2 and orders.shape[0] not in (1, n)):
            raise ShapeError(f"{self._label()}: perm_order {orders.shape} does not fit ids {ids.shape}")
        content_mask, query_mask = permutation_masks(orders, mem_len=m)
        h = self.embedding_dropout(F.mul(self.embeddings(ids), math.sqrt(self.d_model)))
        g = self.embedding_dropout(F.broadcast_to(self.mask_embedding, (n, t, self.d_model)))
        new_mems = []
        for i, layer in enumerate(self.layers):
            memory = None if mems is None else as_tensor(mems[i])
            new_mems.append(self._new_memory(memory, h))
            h, g = layer(h, g, memory, content_mask=content_mask, query_mask=query_mask)
        return h, g, [mem for mem in new_mems if mem is not None]

    def forward(self, ids, mems=None, *, perm_order=None) -> tuple[Tensor, list[Tensor]]:
        _, g, new_mems = self.streams(ids, mems, perm_order)
        return self.head(g), new_mems

    def permutation_lm_loss(self, ids, perm_order, targets_mask, mems=None) -> Tensor:
        """Mean cross-entropy of the query stream's predictions of the tokens where
        ``targets_mask`` (N, T) is True (e.g. ``partial_prediction_mask(perm_order, K)``)."""
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        targets = np.broadcast_to(np.asarray(targets_mask, bool), ids.shape)
        if not targets.any():
            raise ValueError(f"{self._label()}: targets_mask {np.shape(targets_mask)} selects no position")
        _, g, _ = self.streams(ids, mems, perm_order)
        rows, cols = np.nonzero(targets)
        logits = self.head(F.getitem(g, (rows, cols)))                        # (P, vocab)
        return F.cross_entropy(logits, ids[rows, cols])
