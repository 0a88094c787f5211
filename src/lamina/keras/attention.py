"""Keras's attention layers: ``Attention`` (Luong's dot product) and ``AdditiveAttention``
(Bahdanau's) with Keras 3's masks and formulas, and multi-head attention with its own four
projections (:class:`ProjectedAttention`).

``Attention`` and ``AdditiveAttention`` take ``[query, value]`` or ``[query, value, key]``,
query (N, T_q, d), value (N, T_v, d_v), key (N, T_v, d) (the value when not given), and score
every query against every key:

    dot:       e = s (q k^T)                       (s: the learned scalar ``scale`` with
                                                    ``use_scale``, 1 otherwise)
    concat:    e = w sum_d tanh(s (q_t + k_t'))   (``score_mode="concat"``; w the learned
                                                    scalar ``concat_score_weight``)
    additive:  e = sum_d v_d tanh(q_t + k_t')_d   (``AdditiveAttention``: v the learned
                                                    vector ``scale`` (d,), 1 without use_scale)

then, with the mask M (N, T_q, T_v) of the allowed pairs (the value's mask over the keys,
and-ed with the causal mask t' <= t under ``use_causal_mask``), as Keras writes it:

    e~ = e - 1e9 (1 - M),   alpha = softmax over t' of e~ (dropout on alpha in training),
    y = (alpha v) * m_q

with m_q (N, T_q, 1) the query's mask, which zeroes the output rows of masked queries and
passes on as the output's mask. The masks are ``mask=[query_mask, value_mask]`` or the ones
the tensors carry (:mod:`lamina.keras.masking`). ``return_attention_scores=True`` also
returns alpha. These are not lamina's :class:`lamina.nn.Attention` and
:class:`lamina.nn.AdditiveAttention` (no learned projections in Keras's additive layer).

With h heads, key heads of d_k and value heads of d_v features:

    Q = q W_q + b_q  (T_q, h d_k),   K = k W_k + b_k  (T_k, h d_k),   V = v W_v + b_v  (T_k, h d_v)
    head_i = softmax(Q_i K_i^T / sqrt(d_k) + mask) V_i,   y = [head_1 ... head_h] W_o + b_o

W_o maps back to the query's width E_q, so the parameters number
E_q h d_k + E_k h d_k + E_v h d_v + h d_v E_q plus biases 2 h d_k + h d_v + E_q, as Keras counts.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.keras.masking import mask_of
from lamina.nn import Dense
from lamina.nn import init as initializers
from lamina.nn.attention import mask_array
from lamina.nn.dropout import dropout_mask
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AdditiveAttention", "Attention", "ProjectedAttention"]


@register_layer(name="KerasProjectedAttention")
class ProjectedAttention(Module):
    """h heads attending with separate Dense projections of the query, key and value (each
    built on its input's width) and an output projection back to the query's width."""

    def __init__(self, num_heads: int, key_dim: int, value_dim: int, dropout: float = 0.0, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name: str | None = None):
        super().__init__(name=name)
        self.num_heads, self.key_dim, self.value_dim = int(num_heads), int(key_dim), int(value_dim)
        self.dropout, self.use_bias = float(dropout), bool(use_bias)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        heads = self.num_heads
        self.query_dense = self._dense(heads * self.key_dim)
        self.key_dense = self._dense(heads * self.key_dim)
        self.value_dense = self._dense(heads * self.value_dim)
        self.output_dense = None                # its width, the query's, is known on the first call

    def _dense(self, units: int) -> Dense:
        return Dense(units, use_bias=self.use_bias, kernel_init=self.kernel_initializer,
                     bias_init=self.bias_initializer)

    def build(self, input_shape) -> None:
        shape = input_shape[0] if input_shape and isinstance(input_shape[0], (tuple, list)) else input_shape
        self.output_dense = self._dense(shape[-1])
        self.built = True

    def _heads(self, x: Tensor, dense: Dense, width: int) -> Tensor:
        """(N, T, E) -> projected and split into heads (N, h, T, width)."""
        n, t = x.shape[0], x.shape[1]
        return F.transpose(F.reshape(dense(x), n, t, self.num_heads, width), 0, 2, 1, 3)

    def _check(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        for what, x in (("query", query), ("key", key), ("value", value)):
            if x.ndim != 3:
                raise ShapeError(f"MultiHeadAttention: the {what} must be (batch, time, features), got shape "
                                 f"{tuple(x.shape)}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ShapeError(f"MultiHeadAttention: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} must share the batch size, and key and value the number of steps")

    def _mask(self, mask, t_q: int, t_k: int):
        m = mask_array(mask)
        if m is None:
            return None
        if m.ndim == 3:
            m = m[:, None]
        if m.ndim not in (2, 4) or m.shape[-2:] != (t_q, t_k):
            raise ShapeError(f"MultiHeadAttention: attention_mask of shape {tuple(m.shape)}; expected "
                             f"(batch, {t_q}, {t_k})")
        return m

    def forward(self, query, value, key=None, attention_mask=None, return_attention_scores: bool = False,
                use_causal_mask: bool = False, training=None):
        query, value = as_tensor(query), as_tensor(value)
        key = value if key is None else as_tensor(key)
        self._check(query, key, value)
        q = self._heads(query, self.query_dense, self.key_dim)
        k = self._heads(key, self.key_dense, self.key_dim)
        v = self._heads(value, self.value_dense, self.value_dim)
        drop = self.dropout if self.training else 0.0
        out = scaled_dot_product_attention(q, k, v, mask=self._mask(attention_mask, q.shape[2], k.shape[2]),
                                           causal=use_causal_mask, dropout=drop,
                                           return_weights=return_attention_scores)
        heads, weights = out if return_attention_scores else (out, None)
        n, t_q = query.shape[0], query.shape[1]
        y = self.output_dense(F.reshape(F.transpose(heads, 0, 2, 1, 3), n, t_q, self.num_heads * self.value_dim))
        return (y, weights) if return_attention_scores else y

    def get_config(self) -> dict:
        return {"num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
                "dropout": self.dropout, "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, "name": self.name}


MASKED_SCORE = 1.0e9
"""What Keras subtracts from the score of a pair the mask leaves out."""


def _array(mask) -> np.ndarray | None:
    if mask is None:
        return None
    return np.asarray(backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask)).astype(bool)


@register_layer(name="KerasAttention")
class Attention(Module):
    """Keras's ``Attention``: dot-product (or ``score_mode="concat"``) attention with no
    projections, reading the query's and value's masks (see the module notes)."""

    supports_masking = True

    def __init__(self, use_scale: bool = False, score_mode: str = "dot", dropout: float = 0.0, seed=None,
                 name: str | None = None):
        super().__init__(name=name)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"{type(self).__name__}: score_mode must be 'dot' or 'concat', got {score_mode!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must lie in [0, 1), got {dropout!r}")
        self.use_scale, self.score_mode, self.dropout = bool(use_scale), score_mode, float(dropout)

    def build(self, input_shape) -> None:
        self._check_shapes(input_shape)
        dtype = backend.get_default_dtype()
        if self.use_scale:
            self.add_parameter("scale", backend.xp.ones((), dtype=dtype))
        if self.score_mode == "concat":
            self.add_parameter("concat_score_weight", backend.xp.ones((), dtype=dtype))
        self.built = True

    def _check_shapes(self, shapes) -> None:
        if (not isinstance(shapes, (list, tuple)) or len(shapes) not in (2, 3)
                or not all(isinstance(s, (list, tuple)) and len(s) == 3 for s in shapes)):
            raise ShapeError(f"{type(self).__name__}: expected the list [query, value] or [query, value, key], "
                             f"each (batch, time, features), got shapes {shapes!r}")
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) == 3 else value
        if query[-1] != key[-1] or tuple(key[:2]) != tuple(value[:2]) or query[0] != key[0]:
            raise ShapeError(f"{type(self).__name__}: query {tuple(query)} and key {tuple(key)} must share the "
                             f"batch and the features, key and value {tuple(value)} the batch and the steps")

    def scores(self, query: Tensor, key: Tensor) -> Tensor:
        """e (N, T_q, T_v) before masking."""
        if self.score_mode == "dot":
            e = F.matmul(query, F.swapaxes(key, 1, 2))
            return e * self.scale if self.use_scale else e
        pairs = F.expand_dims(query, 2) + F.expand_dims(key, 1)                # (N, T_q, T_v, d)
        if self.use_scale:
            pairs = pairs * self.scale
        return F.sum(F.tanh(pairs), axis=-1) * self.concat_score_weight

    def forward(self, inputs, mask=None, training=None, return_attention_scores: bool = False,
                use_causal_mask: bool = False):
        if not isinstance(inputs, (list, tuple)):
            raise ShapeError(f"{type(self).__name__}: call it on the list [query, value] or [query, value, key]")
        xs = [as_tensor(x) for x in inputs]
        self._check_shapes([tuple(x.shape) for x in xs])
        query, value = xs[0], xs[1]
        key = xs[2] if len(xs) == 3 else value
        if mask is not None and (not isinstance(mask, (list, tuple)) or len(mask) not in (2, 3)):
            raise ValueError(f"{type(self).__name__}: mask must be the list [query_mask, value_mask], got {mask!r}")
        q_mask, v_mask = (_array(m) for m in mask[:2]) if mask is not None else (
            _array(mask_of(inputs[0])), _array(mask_of(inputs[1])))
        e = self.scores(query, key)
        keep = self._allowed(v_mask, use_causal_mask, query.shape[1], key.shape[1])
        if keep is not None:
            e = e - Tensor(backend.xp.asarray((~keep).astype(e.dtype) * MASKED_SCORE))
        weights = F.softmax(e, axis=-1)
        training = self.training if training is None else bool(training)
        if training and self.dropout > 0:
            weights = weights * Tensor(dropout_mask(tuple(weights.shape), self.dropout, weights.dtype))
        out = F.matmul(weights, value)
        if q_mask is not None:
            out = out * Tensor(backend.xp.asarray(q_mask[:, :, None].astype(out.dtype)))
        return (out, weights) if return_attention_scores else out

    @staticmethod
    def _allowed(v_mask, causal: bool, t_q: int, t_v: int) -> np.ndarray | None:
        """M: the value's mask over the keys (N, 1, T_v) and-ed with the causal t' <= t."""
        keep = None if v_mask is None else v_mask[:, None, :]
        if causal:
            lower = np.tril(np.ones((1, t_q, t_v), dtype=bool))
            keep = lower if keep is None else keep & lower
        return keep

    def compute_mask(self, inputs, mask=None):
        """The query's mask."""
        return mask

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape[0])[:-1], tuple(input_shape[1])[-1])

    def get_config(self) -> dict:
        return {"use_scale": self.use_scale, "score_mode": self.score_mode, "dropout": self.dropout,
                "name": self.name}


@register_layer(name="KerasAdditiveAttention")
class AdditiveAttention(Attention):
    """Keras's ``AdditiveAttention``: e = sum_d v_d tanh(q_t + k_t')_d with the learned
    ``scale`` v (d,) (Glorot uniform; ``use_scale=True`` by default), no projections."""

    def __init__(self, use_scale: bool = True, dropout: float = 0.0, seed=None, name: str | None = None):
        super().__init__(use_scale=use_scale, dropout=dropout, name=name)

    def build(self, input_shape) -> None:
        self._check_shapes(input_shape)
        if self.use_scale:
            d, dtype = input_shape[0][-1], backend.get_default_dtype()
            self.add_parameter("scale", initializers.get("glorot_uniform")((d,), d, d, dtype))
        self.built = True

    def scores(self, query: Tensor, key: Tensor) -> Tensor:
        hidden = F.tanh(F.expand_dims(query, 2) + F.expand_dims(key, 1))     # (N, T_q, T_v, d)
        return F.sum(hidden * self.scale if self.use_scale else hidden, axis=-1)

    def get_config(self) -> dict:
        return {"use_scale": self.use_scale, "dropout": self.dropout, "name": self.name}
