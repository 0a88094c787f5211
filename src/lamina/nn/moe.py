"""A sparse mixture of experts (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2022;
Mixtral, Jiang et al. 2024): each token goes through a few of many feed-forward experts,
so the parameters grow with the number of experts while the cost per token does not.

For a token x (d features) and E experts f_e(x) = g(x W1_e + b1_e) W2_e + b2_e:

    p = softmax(x W_r)                        router probabilities (E,)
    S = the top_k experts of largest p_e      (ties: the lower index)
    y = sum_{e in S} (p_e / sum_{e' in S} p_e') f_e(x)     (renormalized, as Mixtral)

Tokens are dispatched: expert e runs on the rows routed to it only (gathered, then its
outputs scattered back), never on every token. With ``capacity_factor`` c each expert takes
at most ceil(c k M / E) of the M k assignments of a batch of M tokens, first choices of all
tokens first, each in token order; the assignments over capacity are dropped (they add 0,
the residual connection around the layer carries the token on).

Switch Transformer's load-balancing loss, ``layer.aux_loss`` after each call (a scalar on
the graph; add alpha * aux_loss, alpha ~ 0.01, to the training loss):

    aux = E sum_e f_e P_e,   f_e = (1/M) #{tokens whose top_k holds e},   P_e = (1/M) sum_x p_e(x)

(f is a constant count; the gradient reaches the router through P; aux = top_k when the
load is uniform.) ``z_loss=True`` also gives ST-MoE's router z-loss
``layer.z_loss = (1/M) sum_x (log sum_e exp(x W_r)_e)^2``, which keeps the logits small.

``noisy_gating`` (Shazeer et al.): in training the logits get Gaussian noise of a learned
scale, x W_r + eps softplus(x W_noise), eps ~ N(0, 1), which spreads the load early on.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.activation import activation_config, get_activation
from lamina.nn.dense import Dense, linear
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MixtureOfExperts"]


@register_layer
class MixtureOfExperts(Module):
    """Top-k routed experts on (N, T, d) or (N, d) inputs (see the module docstring).

    ``num_experts`` E, ``hidden`` the width of each expert's MLP, ``activation`` its
    activation (GELU). Parameters: the ``router`` (a Dense d -> E without bias), ``w1``
    (E, d, hidden), ``b1`` (E, hidden), ``w2`` (E, hidden, d), ``b2`` (E, d) and, with
    noisy gating, ``noise_weight`` (d, E), zero at the start.
    """

    def __init__(self, num_experts: int, hidden: int, top_k: int = 2, capacity_factor: float | None = None,
                 noisy_gating: bool = False, z_loss: bool = False, activation="gelu", name: str | None = None):
        super().__init__(name=name)
        positive_int(num_experts, "MixtureOfExperts: num_experts")
        positive_int(hidden, "MixtureOfExperts: hidden")
        positive_int(top_k, "MixtureOfExperts: top_k")
        if top_k > num_experts:
            raise ValueError(f"MixtureOfExperts: top_k {top_k} is more than the {num_experts} experts")
        if capacity_factor is not None and not float(capacity_factor) > 0:
            raise ValueError(f"MixtureOfExperts: capacity_factor must be > 0 or None, got {capacity_factor!r}")
        self.num_experts, self.hidden, self.top_k = num_experts, hidden, top_k
        self.capacity_factor = None if capacity_factor is None else float(capacity_factor)
        self.noisy_gating, self.use_z_loss = bool(noisy_gating), bool(z_loss)
        self.activation_spec = activation
        self.activation = get_activation(activation)
        self.aux_loss = self.z_loss = None
        self.dropped = 0          # assignments dropped for capacity in the last call

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) not in (2, 3) or shape[-1] is None:
            raise ValueError(f"{self._label()}: got an input shape {shape}; expected (batch, features) or "
                             "(batch, time, features) with the features known")
        d, e, h = shape[-1], self.num_experts, self.hidden
        dtype = backend.get_default_dtype()
        self.router = Dense(e, use_bias=False, kernel_init="xavier_uniform")
        self.router.build((None, d))
        self.router.built = True
        uniform = initializers.get("he_uniform")
        self.add_parameter("w1", uniform((e, d, h), d, h, dtype))
        self.add_parameter("b1", backend.xp.zeros((e, h), dtype=dtype))
        self.add_parameter("w2", uniform((e, h, d), h, d, dtype))
        self.add_parameter("b2", backend.xp.zeros((e, d), dtype=dtype))
        if self.noisy_gating:
            self.add_parameter("noise_weight", backend.xp.zeros((d, e), dtype=dtype))
        self.built = True

    def expert(self, e: int, x) -> Tensor:
        """f_e(x) = g(x W1_e + b1_e) W2_e + b2_e for rows x (m, d)."""
        hidden = self.activation(linear(x, F.getitem(self.w1, e), F.getitem(self.b1, e)))
        return linear(hidden, F.getitem(self.w2, e), F.getitem(self.b2, e))

    def route(self, flat: Tensor) -> tuple[Tensor, Tensor, object]:
        """(logits (M, E), probabilities (M, E), top-k indices (M, k), best first) of rows (M, d)."""
        xp = backend.xp
        logits = self.router(flat)
        if self.noisy_gating and self.training:
            scale = F.softplus(linear(flat, self.noise_weight))
            noise = backend.rng().standard_normal(logits.shape).astype(logits.dtype)
            logits = logits + scale * Tensor._wrap(xp.asarray(noise))
        probs = F.softmax(logits, axis=-1)
        chosen = xp.argsort(-probs.data, axis=-1, kind="stable")[:, :self.top_k]
        return logits, probs, chosen

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        d = self.w1.shape[1]
        if x.ndim not in (2, 3) or x.shape[-1] != d:
            raise input_error(self, x, f"(batch, {d}) or (batch, time, {d})")
        xp = backend.xp
        flat = F.reshape(x, -1, d)
        m, k, e = flat.shape[0], self.top_k, self.num_experts
        logits, probs, chosen = self.route(flat)
        top = F.gather(probs, 1, chosen)
        gates = top / top.sum(axis=1, keepdims=True)
        # assignment a = s M + t: slot s of token t, first choices first
        experts = chosen.T.reshape(-1)
        tokens = xp.tile(xp.arange(m), k)
        order = xp.argsort(experts, kind="stable")
        counts = xp.bincount(experts, minlength=e)
        capacity = m * k if self.capacity_factor is None else math.ceil(self.capacity_factor * m * k / e)
        outputs, row_of = [], xp.full(m * k, -1)
        start = filled = 0
        for expert in range(e):
            members = order[start:start + counts[expert]][:capacity]
            start += int(counts[expert])
            if members.size:
                outputs.append(self.expert(expert, F.take_rows(flat, tokens[members])))
                row_of[members] = filled + xp.arange(members.size)
                filled += members.size
        self.dropped = int((row_of < 0).sum())
        if self.dropped:
            outputs.append(Tensor._wrap(xp.zeros((1, d), dtype=flat.dtype)))
            row_of[row_of < 0] = filled
        per_slot = F.reshape(F.take_rows(F.concat(outputs, axis=0), row_of), k, m, d)
        y = (per_slot * F.reshape(F.transpose(gates), k, m, 1)).sum(axis=0)
        load = Tensor._wrap((counts / m).astype(flat.dtype))
        self.aux_loss = (probs.mean(axis=0) * load).sum() * e
        self.z_loss = (F.logsumexp(logits, axis=-1) ** 2).mean() if self.use_z_loss else None
        return F.reshape(y, *x.shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"num_experts": self.num_experts, "hidden": self.hidden, "top_k": self.top_k,
                "capacity_factor": self.capacity_factor, "noisy_gating": self.noisy_gating,
                "z_loss": self.use_z_loss, "activation": activation_config(self), "name": self.name}

    def extra_repr(self) -> str:
        text = f"num_experts={self.num_experts}, hidden={self.hidden}, top_k={self.top_k}"
        if self.capacity_factor is not None:
            text += f", capacity_factor={self.capacity_factor:g}"
        return text + (", noisy_gating=True" if self.noisy_gating else "")
