"""Slot Attention (Locatello et al. 2020, "Object-Centric Learning with Slot Attention"),
Algorithm 1, as the authors' reference code computes it.

K slots of ``dim`` features compete for the n input features (batch, n, d_in) over T
iterations; the attention is normalised over the slots, so the slots share out the inputs:

    inputs = LN(inputs);  k = inputs W_k,  v = inputs W_v                (no biases)
    slots ~ N(mu, diag(sigma^2)), a learned Gaussian: slots = mu + exp(log_sigma) * noise
    repeat T times:
        slots_prev = slots;  q = LN(slots) W_q
        attn = softmax over the slots of (k q^T / sqrt(dim))              (batch, n, K)
        attn = (attn + eps) / sum over the inputs of (attn + eps)          weighted mean
        updates = attn^T v                                                 (batch, K, dim)
        slots = GRU(updates, slots_prev)
        slots = slots + MLP(LN(slots)),  MLP = Dense(hidden_dim, relu) -> Dense(dim)

Inputs left out by a padding mask (batch, n) (False) take no part: their attention weights
are set to zero after the softmax, before the weighted mean.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.cells import GRUCell
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.set_layers import check_set, set_mask

__all__ = ["SlotAttention"]


@register_layer
class SlotAttention(Module):
    """Slot Attention (module docstring): inputs (batch, n, d_in) -> slots (batch,
    ``num_slots``, ``dim``) after ``iters`` rounds.

    Called as ``slot_attention(inputs, mask=None, slots=None, seed=None)``: ``slots`` (batch,
    K, dim) replaces the sampled initial slots; otherwise they are drawn from the learned
    Gaussian, with the noise from ``numpy.random.default_rng(seed)`` when ``seed`` is given (the
    same seed, the same slots) and from lamina's generator (:func:`lamina.manual_seed`)
    otherwise. ``return_attention=True`` also returns the last round's attention (batch, n,
    K), normalised over the slots (before the weighted mean), as a constant tensor.

    Parameters ``slots_mu`` and ``slots_log_sigma`` (1, 1, dim) (Xavier-uniform, as the
    reference code's); sub-layers ``norm_inputs``, ``norm_slots``, ``norm_mlp``,
    ``project_q``, ``project_k``, ``project_v``, ``gru`` (a :class:`GRUCell`), ``mlp_hidden``
    and ``mlp_out``.
    """

    def __init__(self, num_slots: int, dim: int, iters: int = 3, hidden_dim: int = 128, eps: float = 1e-8,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_slots = positive_int(num_slots, "SlotAttention: num_slots")
        self.dim = positive_int(dim, "SlotAttention: dim")
        self.iters = positive_int(iters, "SlotAttention: iters")
        self.hidden_dim = positive_int(hidden_dim, "SlotAttention: hidden_dim")
        if not float(eps) >= 0:
            raise ValueError(f"SlotAttention: eps must be >= 0, got {eps!r}")
        self.eps = float(eps)
        dtype = backend.get_default_dtype()
        for key in ("slots_mu", "slots_log_sigma"):
            self.add_parameter(key, initializers.xavier_uniform((1, 1, dim), dim, dim, dtype))
        self.norm_inputs, self.norm_slots, self.norm_mlp = LayerNorm(), LayerNorm(), LayerNorm()
        self.project_q = Dense(dim, use_bias=False, kernel_init="xavier_uniform")
        self.project_k = Dense(dim, use_bias=False, kernel_init="xavier_uniform")
        self.project_v = Dense(dim, use_bias=False, kernel_init="xavier_uniform")
        self.gru = GRUCell(dim)
        self.mlp_hidden = Dense(self.hidden_dim, activation="relu")
        self.mlp_out = Dense(dim)

    def initial_slots(self, batch: int, seed: int | None = None, dtype=None) -> Tensor:
        """mu + exp(log_sigma) * noise (batch, K, dim), noise ~ N(0, I) from
        ``numpy.random.default_rng(seed)`` (or lamina's generator when ``seed`` is None)."""
        shape = (batch, self.num_slots, self.dim)
        generator = backend.rng() if seed is None else numpy.random.default_rng(seed)
        noise = backend.xp.asarray(generator.standard_normal(shape), dtype=dtype or self.slots_mu.dtype)
        return self.slots_mu + F.exp(self.slots_log_sigma) * noise

    def _given_slots(self, slots, batch: int) -> Tensor:
        slots = as_tensor(slots)
        expected = (batch, self.num_slots, self.dim)
        if tuple(slots.shape) != expected:
            raise ShapeError(f"{self._label()}: initial slots of shape {tuple(slots.shape)}; expected {expected} "
                             "(batch, num_slots, dim)")
        return slots

    def forward(self, inputs, mask=None, slots=None, seed: int | None = None, return_attention: bool = False):
        width = self.project_k.weight.shape[0] if self.project_k.built else None
        inputs = check_set(self, inputs, "set of input features", width)
        keep = set_mask(self, mask, inputs)
        if keep is not None and not keep.any(axis=1).all():
            raise ValueError(f"{self._label()}: the slots average over the real inputs; set(s) "
                             f"{backend.xp.flatnonzero(~keep.any(axis=1)).tolist()} of the batch have none in the mask")
        batch = inputs.shape[0]
        slots = self.initial_slots(batch, seed, inputs.dtype) if slots is None else self._given_slots(slots, batch)
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        scale = self.dim ** -0.5
        for _ in range(self.iters):
            previous = slots
            q = self.project_q(self.norm_slots(slots)) * scale
            attention = F.softmax(F.matmul(k, F.transpose(q, 0, 2, 1)), axis=-1)     # (batch, n, K)
            weights = attention + self.eps
            if keep is not None:
                weights = weights * keep[:, :, None].astype(weights.dtype)
            weights = weights / F.sum(weights, axis=1, keepdims=True)
            updates = F.matmul(F.transpose(weights, 0, 2, 1), v)                    # (batch, K, dim)
            flat = self.gru(F.reshape(updates, -1, self.dim), F.reshape(previous, -1, self.dim))
            slots = F.reshape(flat, batch, self.num_slots, self.dim)
            slots = slots + self.mlp_out(self.mlp_hidden(self.norm_mlp(slots)))
        if return_attention:
            return slots, Tensor(attention.data, dtype=attention.dtype)
        return slots

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_slots, self.dim)

    def get_config(self) -> dict:
        return {"num_slots": self.num_slots, "dim": self.dim, "iters": self.iters, "hidden_dim": self.hidden_dim,
                "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_slots={self.num_slots}, dim={self.dim}, iters={self.iters}, hidden_dim={self.hidden_dim}"
