"""Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing"):
the experts pick their tokens instead of the tokens picking experts, so every expert gets
exactly the same load.

For the M tokens X (M, d) of a call and E experts f_e(x) = g(x W1_e + b1_e) W2_e + b2_e:

    S = softmax(X W_g)                 token-expert affinities (M, E), softmax over experts
    k = min(M, ceil(M c / E))          tokens per expert, c the capacity factor
    I_e = the k tokens of largest S[:, e]   (ties: the lower token index)
    y_t = sum_{e : t in I_e} S[t, e] f_e(x_t)

A token may be chosen by several experts or by none; one chosen by none gets y = 0 (the
residual connection around the layer carries it on). The selection is a constant of the
graph; gradients reach the router through the gate values S[I_e, e].
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.activation import activation_config, get_activation
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.soft_moe import add_expert_parameters, apply_experts

__all__ = ["ExpertChoiceMoE"]


@register_layer
class ExpertChoiceMoE(Module):
    """Expert-choice routed experts on (N, T, d) or (N, d) inputs, all N T tokens of a call
    competing for the experts (formulas in the module docstring). Parameters: the ``router``
    (a Dense d -> E without bias) and the experts' ``w1``, ``b1``, ``w2``, ``b2``.
    After a call :attr:`tokens_per_expert` (E,) counts the tokens each expert processed
    (all equal to k), :attr:`unrouted` the tokens no expert chose and :attr:`chosen` (E, k)
    the flat indices of the chosen tokens."""

    def __init__(self, d_model: int, num_experts: int, capacity_factor: float = 1.0, expert_hidden: int = 4,
                 activation="gelu", name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "ExpertChoiceMoE: d_model")
        self.num_experts = positive_int(num_experts, "ExpertChoiceMoE: num_experts")
        self.expert_hidden = positive_int(expert_hidden, "ExpertChoiceMoE: expert_hidden")
        if not float(capacity_factor) > 0:
            raise ValueError(f"ExpertChoiceMoE: capacity_factor must be > 0, got {capacity_factor!r}")
        self.capacity_factor = float(capacity_factor)
        self.activation_spec = activation
        self.activation = get_activation(activation)
        self.router = Dense(num_experts, use_bias=False, kernel_init="xavier_uniform")
        self.router.build((None, d_model))
        self.router.built = True
        add_expert_parameters(self, num_experts, d_model, expert_hidden)
        self.tokens_per_expert = self.chosen = self.unrouted = None
        self.built = True

    def capacity(self, num_tokens: int) -> int:
        """k = min(M, ceil(M c / E)) tokens per expert for a call of M tokens."""
        return min(num_tokens, math.ceil(num_tokens * self.capacity_factor / self.num_experts))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        d, e = self.d_model, self.num_experts
        if x.ndim not in (2, 3) or x.shape[-1] != d:
            raise input_error(self, x, f"(batch, {d}) or (batch, time, {d})")
        xp = backend.xp
        flat = F.reshape(x, -1, d)
        m = flat.shape[0]
        k = self.capacity(m)
        affinity = F.transpose(F.softmax(self.router(flat), axis=-1))          # (E, M)
        chosen = xp.argsort(-affinity.data, axis=1, kind="stable")[:, :k]      # (E, k)
        gates = F.gather(affinity, 1, chosen)
        picked = F.reshape(F.take_rows(flat, chosen.reshape(-1)), e, k, d)
        outputs = apply_experts(self, picked, self.activation) * F.reshape(gates, e, k, 1)
        zeros = Tensor._wrap(xp.zeros((m, d), dtype=flat.dtype))
        y = F.index_add(zeros, 0, chosen.reshape(-1), F.reshape(outputs, e * k, d))
        self.chosen = chosen
        self.tokens_per_expert = xp.asarray([xp.unique(row).size for row in chosen])
        self.unrouted = m - xp.unique(chosen).size
        return F.reshape(y, *x.shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_experts": self.num_experts,
                "capacity_factor": self.capacity_factor, "expert_hidden": self.expert_hidden,
                "activation": activation_config(self), "name": self.name}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_experts={self.num_experts}, "
                f"capacity_factor={self.capacity_factor:g}, expert_hidden={self.expert_hidden}")
