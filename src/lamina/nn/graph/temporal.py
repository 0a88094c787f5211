"""Temporal graph layers of TGAT (Xu et al., 2020), as used by TGN (Rossi et al., 2020).

``TimeEncoder``: phi(t) = cos(t w + b), w_j initialised to 1 / 10^(9 j / (dim - 1)) (the
frequencies 1 / 10^linspace(0, 9, dim)) and b to 0; learnable or fixed.

``TemporalGraphAttention``: node i at time t attends over its sampled earlier neighbours j
(interaction times t_j, messages e_j) with H heads of C features,

    q   = [x_i, phi(0)] W_q,     k_j = [x_j, e_j, phi(t - t_j)] W_k,   v_j = [x_j, e_j, phi(t - t_j)] W_v
    a_j = softmax over the valid neighbours of q^h . k^h_j / sqrt(C)  (per head h)
    h_i = sum_j a_j v_j          (0 when i has no valid neighbour)
    out = W_2 relu(W_1 [h_i, x_i] + b_1) + b_2                          (TGAT's merge layer)
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["TemporalGraphAttention", "TimeEncoder"]


@register_layer
class TimeEncoder(Module):
    """phi(t) = cos(t w + b) for times t of any shape: output shape t.shape + (dim,)."""

    def __init__(self, dim: int, learnable: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "TimeEncoder: dim")
        self.learnable = bool(learnable)
        dtype = backend.get_default_dtype()
        frequencies = 1.0 / 10.0 ** np.linspace(0, 9, self.dim)
        self.add_parameter("weight", frequencies.astype(dtype), trainable=self.learnable)
        self.add_parameter("bias", np.zeros(self.dim, dtype=dtype), trainable=self.learnable)
        self.built = True

    def forward(self, t):
        t = t if isinstance(t, Tensor) else Tensor(np.asarray(t, dtype=self.weight.dtype))
        return F.cos(F.reshape(t, (*t.shape, 1)) * self.weight + self.bias)

    def get_config(self) -> dict:
        return {"dim": self.dim, "learnable": self.learnable, "name": self.name}


@register_layer
class TemporalGraphAttention(Module):
    """TGAT attention (module docstring). ``forward(x, neighbor_x, neighbor_msg, delta_t, mask)``
    takes x (B, node_dim), neighbor_x (B, k, node_dim), neighbor_msg (B, k, msg_dim), the
    elapsed times t - t_j (B, k) and a boolean mask (B, k) of real neighbours; returns (B, out_dim)."""

    def __init__(self, node_dim: int, msg_dim: int, time_dim: int, out_dim: int, heads: int = 2,
                 learnable_time: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.node_dim = positive_int(node_dim, "TemporalGraphAttention: node_dim")
        self.msg_dim = int(msg_dim)
        self.out_dim = positive_int(out_dim, "TemporalGraphAttention: out_dim")
        self.heads = positive_int(heads, "TemporalGraphAttention: heads")
        self.time_encoder = TimeEncoder(time_dim, learnable=learnable_time)
        dtype = backend.get_default_dtype()
        width = self.heads * self.out_dim
        query_in, key_in = self.node_dim + time_dim, self.node_dim + self.msg_dim + time_dim
        for part, n_in in (("query", query_in), ("key", key_in), ("value", key_in)):
            self.add_parameter(f"{part}_kernel", initializers.xavier_uniform((n_in, width), dtype=dtype))
        self.add_parameter("merge1_kernel", initializers.xavier_uniform((width + self.node_dim, self.out_dim),
                                                                          dtype=dtype))
        self.add_parameter("merge1_bias", initializers.zeros((self.out_dim,), dtype=dtype))
        self.add_parameter("merge2_kernel", initializers.xavier_uniform((self.out_dim, self.out_dim), dtype=dtype))
        self.add_parameter("merge2_bias", initializers.zeros((self.out_dim,), dtype=dtype))
        self.built = True

    def get_config(self) -> dict:
        return {"node_dim": self.node_dim, "msg_dim": self.msg_dim, "time_dim": self.time_encoder.dim,
                "out_dim": self.out_dim, "heads": self.heads, "learnable_time": self.time_encoder.learnable,
                "name": self.name}

    def forward(self, x, neighbor_x, neighbor_msg, delta_t, mask):
        mask = np.asarray(mask, dtype=bool)
        b, k = mask.shape
        if tuple(x.shape) != (b, self.node_dim) or tuple(neighbor_x.shape) != (b, k, self.node_dim) \
                or tuple(neighbor_msg.shape) != (b, k, self.msg_dim) or tuple(delta_t.shape) != (b, k):
            raise ShapeError(f"TemporalGraphAttention: got x {tuple(x.shape)}, neighbor_x {tuple(neighbor_x.shape)}, "
                             f"neighbor_msg {tuple(neighbor_msg.shape)}, delta_t {tuple(delta_t.shape)} for mask "
                             f"{mask.shape}; expected ({b}, {self.node_dim}), ({b}, {k}, {self.node_dim}), "
                             f"({b}, {k}, {self.msg_dim}), ({b}, {k})")
        h, c = self.heads, self.out_dim
        zero_time = self.time_encoder(np.zeros(b, dtype=self.query_kernel.dtype))
        query = F.reshape(linear(F.concat([x, zero_time], axis=1), self.query_kernel), (b, 1, h, c))
        keys_in = F.concat([neighbor_x, neighbor_msg, self.time_encoder(delta_t)], axis=2)
        key = F.reshape(linear(keys_in, self.key_kernel), (b, k, h, c))
        value = F.reshape(linear(keys_in, self.value_kernel), (b, k, h, c))
        scores = F.sum(query * key, axis=-1) / math.sqrt(c)                      # (B, k, H)
        scores = F.masked_fill(scores, ~mask[:, :, None], -1e9)
        alpha = F.softmax(scores, axis=1) * mask[:, :, None].astype(scores.dtype)  # empty rows give 0
        attended = F.reshape(F.sum(value * F.reshape(alpha, (b, k, h, 1)), axis=1), (b, h * c))
        hidden = F.relu(linear(F.concat([attended, x], axis=1), self.merge1_kernel, self.merge1_bias))
        return linear(hidden, self.merge2_kernel, self.merge2_bias)
