"""The gated linear attention layer (Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training") on (N, T, embed_dim) -> (N, T, embed_dim):

    q, k, v = x W_q, x W_k, x W_v                  (H heads of d = embed_dim / H features)
    log alpha = log sigmoid(x W_a1 W_a2 + b_a) / tau     (low-rank gate per key feature,
                                                          tau = gate_logit_normalizer)
    o_h = GLA(q_h, k_h, v_h, alpha_h) with scale d^(-1/2)    (:mod:`lamina.functional.gated_linear_attention`)
    out = (concat_h RMSNorm_d(o_h) * silu(x W_r)) W_o

The temperature tau = 16 keeps alpha near one at the start (slow forgetting). Short causal
convolutions on q, k, v are optional (off by default, as the paper). ``layer(x, state,
return_state=True)`` continues from and returns the state (conv history, memory (N, H, d, d)).
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.gated_linear_attention import gated_linear_attention_chunkwise, gated_linear_attention_recurrent
from lamina.nn.delta_net import FastWeightMixer
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.linear_attention import split_heads
from lamina.nn.module import Module

__all__ = ["GatedLinearAttention"]


@register_layer
class GatedLinearAttention(FastWeightMixer):
    """GLA's token mixer (module docstring): ``num_heads`` heads over ``embed_dim`` features,
    the forget gate through a rank ``gate_low_rank_dim`` bottleneck with temperature
    ``gate_logit_normalizer``, the SiLU output gate; the other options as
    :class:`lamina.nn.delta_net.FastWeightMixer`."""

    activate_without_conv = False

    def __init__(self, embed_dim: int, num_heads: int = 1, gate_low_rank_dim: int = 16,
                 gate_logit_normalizer: float = 16.0, use_short_conv: bool = False, conv_size: int = 4,
                 form: str = "chunkwise", chunk_size: int = 64, eps: float = 1e-5, name: str | None = None):
        super().__init__(embed_dim, num_heads, use_short_conv, conv_size, True, form, chunk_size, eps, name)
        self.gate_low_rank_dim = positive_int(gate_low_rank_dim, "GatedLinearAttention: gate_low_rank_dim")
        if not gate_logit_normalizer > 0:
            raise ValueError(f"GatedLinearAttention: gate_logit_normalizer must be positive, got "
                             f"{gate_logit_normalizer!r}")
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.gate_down = Dense(self.gate_low_rank_dim, use_bias=False, kernel_init="xavier_uniform")
        self.gate_up = Dense(self.embed_dim, use_bias=True, kernel_init="xavier_uniform")

    def _projections(self) -> list[Module]:
        return super()._projections() + [self.gate_down]

    def _build_gates(self, shape, dtype) -> None:
        if not self.gate_up.built:
            self.gate_up.build(shape[:-1] + (self.gate_low_rank_dim,))
            self.gate_up.built = True

    def _mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory):
        logits = self.gate_up(self.gate_down(x))
        log_alpha = split_heads(F.log_sigmoid(logits) * (1.0 / self.gate_logit_normalizer), self.num_heads)
        scale = self.head_dim ** -0.5
        if self.form == "recurrent":
            return gated_linear_attention_recurrent(q, k, v, log_alpha, scale, memory, return_state=True)
        return gated_linear_attention_chunkwise(q, k, v, log_alpha, self.chunk_size, scale, memory,
                                                return_state=True)

    def get_config(self) -> dict:
        return {**self._common_config(), "gate_low_rank_dim": self.gate_low_rank_dim,
                "gate_logit_normalizer": self.gate_logit_normalizer}
