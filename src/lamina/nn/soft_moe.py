"""Soft mixture of experts (Puigcerver et al. 2024, "From Sparse to Soft Mixtures of Experts").

Every token of a sequence X (m tokens, d features) reaches every one of the n p slots
(n experts, p slots each) through soft weights, so nothing is dropped and all is differentiable:

    L = X Phi                                  logits (m, n p); Phi (d, n p) learned slots
    D = softmax over tokens of L  (columns)    dispatch weights, each slot sums to 1 over tokens
    X~ = D^T X                                 slot inputs (n p, d); expert i takes its p slots
    Y~_i = f_i(X~_i)                           f_i(x) = g(x W1_i + b1_i) W2_i + b2_i
    C = softmax over slots of L  (rows)        combine weights, each token sums to 1 over slots
    Y = C Y~                                   outputs (m, d)

With ``normalize`` (the paper's fix for large d) the logits are l2(X) (s l2(Phi)), the rows of X
and the columns of Phi scaled to unit length and s a learned scalar (1 at the start).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.activation import activation_config, get_activation
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["SoftMoE", "add_expert_parameters", "apply_experts"]


def add_expert_parameters(layer: Module, num_experts: int, d_model: int, hidden: int) -> None:
    """Give ``layer`` the expert MLP weights of :class:`lamina.nn.MixtureOfExperts`: ``w1``
    (E, d, hidden), ``b1`` (E, hidden), ``w2`` (E, hidden, d), ``b2`` (E, d)."""
    dtype = backend.get_default_dtype()
    uniform = initializers.get("he_uniform")
    layer.add_parameter("w1", uniform((num_experts, d_model, hidden), d_model, hidden, dtype))
    layer.add_parameter("b1", backend.xp.zeros((num_experts, hidden), dtype=dtype))
    layer.add_parameter("w2", uniform((num_experts, hidden, d_model), hidden, d_model, dtype))
    layer.add_parameter("b2", backend.xp.zeros((num_experts, d_model), dtype=dtype))


def apply_experts(layer: Module, x: Tensor, activation) -> Tensor:
    """Expert e on its rows: x (..., E, r, d) -> g(x W1_e + b1_e) W2_e + b2_e, same shape."""
    experts = layer.w1.shape[0]
    hidden = activation(F.einsum("...erd,edh->...erh", x, layer.w1) + F.reshape(layer.b1, experts, 1, -1))
    return F.einsum("...erh,ehd->...erd", hidden, layer.w2) + F.reshape(layer.b2, experts, 1, -1)


def _unit(x: Tensor, axis: int, eps: float = 1e-6) -> Tensor:
    return x / F.sqrt((x * x).sum(axis=axis, keepdims=True) + eps)


@register_layer
class SoftMoE(Module):
    """Soft MoE on (N, T, d) inputs, each sequence mixed on its own (formulas in the module
    docstring). Parameters: ``phi`` (d, n p), the experts' ``w1``, ``b1``, ``w2``, ``b2`` and,
    with ``normalize``, the scalar ``scale``. :attr:`dispatch_weights` and
    :attr:`combine_weights` hold D and C (N, T, n p) of the last call."""

    def __init__(self, d_model: int, num_experts: int, slots_per_expert: int, expert_hidden: int,
                 normalize: bool = True, activation="gelu", name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "SoftMoE: d_model")
        self.num_experts = positive_int(num_experts, "SoftMoE: num_experts")
        self.slots_per_expert = positive_int(slots_per_expert, "SoftMoE: slots_per_expert")
        self.expert_hidden = positive_int(expert_hidden, "SoftMoE: expert_hidden")
        self.normalize = bool(normalize)
        self.activation_spec = activation
        self.activation = get_activation(activation)
        slots = num_experts * slots_per_expert
        dtype = backend.get_default_dtype()
        phi = backend.rng().standard_normal((d_model, slots)) / d_model ** 0.5
        self.add_parameter("phi", backend.xp.asarray(phi, dtype=dtype))
        if self.normalize:
            self.add_parameter("scale", backend.xp.ones((), dtype=dtype))
        add_expert_parameters(self, num_experts, d_model, expert_hidden)
        self.dispatch_weights = self.combine_weights = None
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        d, n, p = self.d_model, self.num_experts, self.slots_per_expert
        if x.ndim != 3 or x.shape[-1] != d:
            raise input_error(self, x, f"(batch, tokens, {d})")
        if self.normalize:
            logits = F.matmul(_unit(x, -1), _unit(self.phi, 0) * self.scale)
        else:
            logits = F.matmul(x, self.phi)
        dispatch = F.softmax(logits, axis=1)
        combine = F.softmax(logits, axis=2)
        self.dispatch_weights, self.combine_weights = dispatch, combine
        slots = F.einsum("nts,ntd->nsd", dispatch, x)
        outputs = apply_experts(self, F.reshape(slots, x.shape[0], n, p, d), self.activation)
        return F.einsum("nts,nsd->ntd", combine, F.reshape(outputs, x.shape[0], n * p, d))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_experts": self.num_experts,
                "slots_per_expert": self.slots_per_expert, "expert_hidden": self.expert_hidden,
                "normalize": self.normalize, "activation": activation_config(self), "name": self.name}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_experts={self.num_experts}, "
                f"slots_per_expert={self.slots_per_expert}, expert_hidden={self.expert_hidden}, "
                f"normalize={self.normalize}")
