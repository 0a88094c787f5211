"""Keras's multi-head attention with its own four projections, for value heads of another width
than the key heads, or a query, key and value of different widths.

With h heads, key heads of d_k and value heads of d_v features:

    Q = q W_q + b_q  (T_q, h d_k),   K = k W_k + b_k  (T_k, h d_k),   V = v W_v + b_v  (T_k, h d_v)
    head_i = softmax(Q_i K_i^T / sqrt(d_k) + mask) V_i,   y = [head_1 ... head_h] W_o + b_o

W_o maps back to the query's width E_q, so the parameters number
E_q h d_k + E_k h d_k + E_v h d_v + h d_v E_q plus biases 2 h d_k + h d_v + E_q, as Keras counts.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.nn import Dense
from lamina.nn.attention import mask_array
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ProjectedAttention"]


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
