"""Differential attention (Ye et al. 2024, "Differential Transformer") on (N, T, d_model) ->
(N, T, d_model) with H heads of 2d query/key features and 2d value features,
d = d_model / (2 H):

    [Q1, Q2] = x W_Q,  [K1, K2] = x W_K,  V = x W_V              (per head: d, d and 2d features)
    A_h = (softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d))) V
    lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init
    lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1))                        (l = 1, 2, ..: the layer's depth)
    out = concat_h((1 - lambda_init) RMSNorm(A_h)) W_O

The difference of two softmax maps cancels the attention both give to irrelevant context
(common-mode noise). RMSNorm normalises each head alone (the paper's GroupNorm) with one
weight of 2d features shared by the heads; the four lambda vectors (d,) are shared by the
heads too. Each softmax map times V is one :func:`scaled_dot_product_attention` (the product
is linear in the map). ``rotary`` turns Q and K by their positions (RoPE), as the paper's
language models do.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.rms_norm import rms_norm
from lamina.functional.rotary import rotary_embedding
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DifferentialAttention", "differential_lambda_init"]


def differential_lambda_init(layer_index: int) -> float:
    """lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)) for the layer at depth l >= 1."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer_index - 1))


@register_layer
class DifferentialAttention(Module):
    """Differential multi-head attention (formulas in the module docstring) of ``d_model``
    features in ``num_heads`` heads, for the layer at depth ``layer_index`` (1 for the first).
    ``lambda_init``: replaces the depth's value; ``causal``: each step sees itself and the
    steps before (a call's ``causal`` overrides it); ``eps``: the heads' RMSNorm eps;
    ``rotary``: rotate queries and keys (needs d = d_model / (2 num_heads) even).

    :meth:`lambda_value` gives lambda (a scalar tensor)."""

    def __init__(self, d_model: int, num_heads: int, layer_index: int = 1, lambda_init: float | None = None,
                 causal: bool = True, eps: float = 1e-5, rotary: bool = False, rope_theta: float = 10000.0,
                 name: str | None = None):
        super().__init__(name=name)
        who = "DifferentialAttention"
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.num_heads = positive_int(num_heads, f"{who}: num_heads")
        self.layer_index = positive_int(layer_index, f"{who}: layer_index (the depth l, counted from 1)")
        if d_model % (2 * num_heads):
            raise ValueError(f"{who}: d_model {d_model} must split into num_heads {num_heads} heads of two halves "
                             f"(2 * num_heads = {2 * num_heads} must divide it)")
        self.head_dim = d_model // (2 * num_heads)
        if rotary and self.head_dim % 2:
            raise ValueError(f"{who}: rotary needs an even half-head size d = d_model / (2 num_heads), got "
                             f"{self.head_dim}")
        self.lambda_init = differential_lambda_init(self.layer_index) if lambda_init is None else float(lambda_init)
        self.causal, self.rotary, self.rope_theta = bool(causal), bool(rotary), float(rope_theta)
        if not eps > 0:
            raise ValueError(f"{who}: eps must be positive, got {eps!r}")
        self.eps = float(eps)
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layer = Dense(d_model, use_bias=False, kernel_init="xavier_uniform")
            layer.build((None, d_model))
            setattr(self, projection, layer)
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        for vector in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            self.add_parameter(vector, xp.asarray(rng.normal(0.0, 0.1, self.head_dim), dtype=dtype))
        self.add_parameter("norm_weight", xp.ones(2 * self.head_dim, dtype=dtype))
        self.built = True

    def lambda_value(self) -> Tensor:
        """lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init."""
        first = F.exp((self.lambda_q1 * self.lambda_k1).sum())
        second = F.exp((self.lambda_q2 * self.lambda_k2).sum())
        return first - second + self.lambda_init

    def _halves(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """The two query (or key) halves (N, H, T, d) of each head."""
        n, t = projected.shape[0], projected.shape[1]
        both = projected.reshape(n, t, self.num_heads, 2, self.head_dim).transpose(0, 2, 3, 1, 4)
        if self.rotary:
            both = rotary_embedding(both, base=self.rope_theta)
        return both[:, :, 0], both[:, :, 1]

    def forward(self, x, causal: bool | None = None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.d_model}) with at least one step")
        causal = self.causal if causal is None else bool(causal)
        n, t = x.shape[0], x.shape[1]
        q1, q2 = self._halves(self.q_proj(x))
        k1, k2 = self._halves(self.k_proj(x))
        v = self.v_proj(x).reshape(n, t, self.num_heads, 2 * self.head_dim).transpose(0, 2, 1, 3)
        scale = self.head_dim ** -0.5
        first = F.scaled_dot_product_attention(q1, k1, v, causal=causal, scale=scale)
        second = F.scaled_dot_product_attention(q2, k2, v, causal=causal, scale=scale)
        heads = first - self.lambda_value() * second
        heads = rms_norm(heads, 2 * self.head_dim, self.norm_weight, self.eps) * (1.0 - self.lambda_init)
        return self.out_proj(heads.transpose(0, 2, 1, 3).reshape(n, t, self.d_model))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "layer_index": self.layer_index,
                "lambda_init": self.lambda_init, "causal": self.causal, "eps": self.eps, "rotary": self.rotary,
                "rope_theta": self.rope_theta, "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.d_model}, num_heads={self.num_heads}, layer_index={self.layer_index}, "
                f"lambda_init={self.lambda_init:.4g}")
