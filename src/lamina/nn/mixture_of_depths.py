"""Mixture-of-depths routing (Raposo et al. 2024) around a residual block.

A linear router scores every token, r_t = sigmoid(x_t w_r + b_r); in each sequence only the k
highest-scoring tokens (k = ceil(capacity * T)) go through the block, in their original order,
and the rest skip it through the residual path:

    y_t = x_t + r_t (block(x_S)_t - x_t)   for t in the selected set S
    y_t = x_t                              otherwise

``block`` is a residual block (y = x + f(x), e.g. TransformerEncoderLayer), so block(x) - x is
its update f; multiplying it by the router weight lets the router learn from the loss.

Causal caveat: the top-k of a sequence looks at every token, including later ones, so it
cannot be computed while sampling one token at a time. Train with this top-k and, for
autoregressive sampling, fit a small predictor of ``selection_mask`` from each token alone (the
paper's auxiliary router) and route with it instead.

Tokens are gathered and scattered with one-hot (k, T) matrices: the products with 0 and 1 are
exact, so unselected tokens come out bit-for-bit unchanged.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import sigmoid
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor


def check_capacity(capacity) -> float:
    """The capacity ratio as a float in (0, 1], or a ValueError."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not 0 < capacity <= 1:
        raise ValueError(f"MixtureOfDepths: capacity must be a number in (0, 1], got {capacity!r}")
    return float(capacity)


@register_layer
class MixtureOfDepths(Module):
    """Route the top ``capacity`` fraction of each sequence's tokens through ``block``.

    Input (N, T, D); output (N, T, D). After a call, ``selection_mask`` holds the (N, T) boolean
    mask of the tokens that went through the block (targets for an auxiliary causal router)
    and ``router_logits`` the (N, T) router scores.
    """

    def __init__(self, block: Module, capacity: float = 0.125, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(block, Module):
            raise TypeError(f"MixtureOfDepths: block must be a Module, got {type(block).__name__}")
        self.block = block
        self.capacity = check_capacity(capacity)
        self.selection_mask = None
        self.router_logits = None

    def build(self, input_shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ShapeError(f"{self._label()}: expects (batch, tokens, features), got {input_shape}")
        d, dtype = int(input_shape[-1]), backend.get_default_dtype()
        self.add_parameter("router_weight", initializers.get("xavier_uniform")((d, 1), d, 1, dtype))
        self.add_parameter("router_bias", backend.xp.zeros((1,), dtype=dtype))
        self.built = True

    def tokens_kept(self, length: int) -> int:
        """k = ceil(capacity * T), at least 1."""
        return max(1, min(length, math.ceil(self.capacity * length - 1e-9)))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        d = self.router_weight.shape[0]
        if x.ndim != 3 or x.shape[-1] != d:
            raise ShapeError(f"{self._label()}: expects (batch, tokens, {d}), got {x.shape}")
        n, t, _ = x.shape
        logits = linear(x, self.router_weight, self.router_bias).reshape((n, t))
        k = self.tokens_kept(t)
        xp = backend.xp
        # the k best per sequence, kept in their order along the sequence
        chosen = xp.sort(xp.argsort(-logits.data, axis=1, kind="stable")[:, :k], axis=1)
        gather = xp.zeros((n, k, t), dtype=x.dtype)
        gather[xp.arange(n)[:, None], xp.arange(k)[None, :], chosen] = 1
        gather_t = Tensor._wrap(gather)
        selected = gather_t @ x
        weights = gather_t @ sigmoid(logits).reshape((n, t, 1))
        update = weights * (self.block(selected) - selected)
        self.selection_mask = gather.sum(axis=1) > 0
        self.router_logits = logits.data
        return x + Tensor._wrap(xp.ascontiguousarray(gather.transpose(0, 2, 1))) @ update

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {"block": layer_to_config(self.block), "capacity": self.capacity, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> MixtureOfDepths:
        config = dict(config)
        return cls(layer_from_config(config.pop("block")), **config)

    def extra_repr(self) -> str:
        return f"capacity={self.capacity}"
