"""Multi-head attention layers whose cost is linear in the sequence length: linear attention
with a fixed feature map (Katharopoulos et al. 2020) and the Performer's FAVOR+ random
features (Choromanski et al. 2021), on (N, T, embed_dim) -> (N, T, embed_dim):

    Q = x W_q, K = x W_k, V = x W_v, split into H heads of d = embed_dim / H features
    head_h = linear_attention(Q_h, K_h, V_h)     (see :mod:`lamina.functional.linear_attention`)
    out = concat(head_1 .. head_H) W_o

Step by step: a causal layer with ``stateful=True`` (or within :func:`lamina.text.carrying_states`)
continues in each call the sequence of the previous one from the carried running sums
S = sum_s phi(k_s)^T v_s and z = sum_s phi(k_s) (detached from the graph): O(1) work per new
token, the outputs of one call on the whole sequence.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.linear_attention import (
    _feature_map,
    linear_attention,
    orthogonal_random_features,
    performer_attention,
)
from lamina.functional.shape import reshape, swapaxes
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, head_split, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["LinearAttention", "PerformerAttention", "merge_heads", "split_heads"]


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(N, T, H d) -> (N, H, T, d)."""
    n, t, e = x.shape
    return swapaxes(reshape(x, (n, t, heads, e // heads)), 1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(N, H, T, d) -> (N, T, H d)."""
    n, h, t, d = x.shape
    return reshape(swapaxes(x, 1, 2), (n, t, h * d))


class _KernelAttention(Module):
    """The projections, head bookkeeping and carried state shared by the two layers.

    ``stateful`` (causal layers only): calls continue one another's sequence (module
    docstring); :meth:`reset_states` starts again, :meth:`reorder_states` keeps and reorders
    the rows of the carried state (beam search)."""

    def __init__(self, embed_dim: int, num_heads: int, causal: bool, use_bias: bool, chunk_size: int, eps: float,
                 stateful: bool, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.embed_dim, self.num_heads, self.head_dim = head_split(embed_dim, num_heads, who)
        self.causal, self.use_bias = bool(causal), bool(use_bias)
        self.chunk_size = positive_int(chunk_size, f"{who}: chunk_size")
        self.eps = float(eps)
        self.stateful = bool(stateful)
        self._carried = None
        self._check_stateful()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            Dense(embed_dim, use_bias=self.use_bias, kernel_init="xavier_uniform") for _ in range(4))

    @property
    def streamable(self) -> bool:
        """Step t's output depends on steps 1..t only: causal layers."""
        return self.causal

    def _check_stateful(self) -> None:
        if self.stateful and not self.causal:
            raise ValueError(f"{self._label()}: stateful=True needs causal=True; a non-causal layer attends over "
                             "the whole sequence at once and has no running sums to carry from call to call")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.embed_dim}), got {shape}")
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def _check(self, x, what: str) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise input_error(self, x, f"a {what} (batch, time, {self.embed_dim})")
        return x

    def forward(self, query, key=None, value=None) -> Tensor:
        """Self-attention on ``query`` (N, T, embed_dim), or, given ``key`` (and ``value``,
        default ``key``) (N, S, embed_dim), attention of the queries over them (not causal)."""
        query = self._check(query, "query")
        key = query if key is None else self._check(key, "key")
        value = key if value is None else self._check(value, "value")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ShapeError(f"{self._label()}: query {describe(query)}, key {describe(key)} and value "
                             f"{describe(value)} must share the batch, key and value the time")
        if self.causal and key is not query:
            raise ShapeError(f"{self._label()}: a causal layer attends over its own input; it takes no key/value")
        q, k, v = (split_heads(layer(x), self.num_heads)
                   for layer, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        if not self.stateful:
            return self.out_proj(merge_heads(self._attend(q, k, v)))
        self._check_stateful()
        attended, last = self._attend(q, k, v, self._state(query), return_state=True)
        self._carried = tuple(s.data for s in last)
        return self.out_proj(merge_heads(attended))

    def _state(self, x: Tensor) -> tuple[Tensor, ...] | None:
        """The sums carried from the previous call, or None."""
        if self._carried is None:
            return None
        if self._carried[0].shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of "
                             f"{self._carried[0].shape[0]}, got an input of {describe(x)}; call reset_states() "
                             "before changing the batch size")
        return tuple(Tensor._wrap(s.astype(x.dtype, copy=False)) for s in self._carried)

    def reset_states(self) -> None:
        """Forget the carried sums: the next call starts a new sequence."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried sums of the rows ``rows``, in that order (beam search)."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is not None:
            self._carried = tuple(s[index] for s in self._carried)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)

    def _common_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "causal": self.causal,
                "use_bias": self.use_bias, "chunk_size": self.chunk_size, "eps": self.eps, "stateful": self.stateful,
                "name": self.name}


@register_layer
class LinearAttention(_KernelAttention):
    """Multi-head linear attention (module docstring): each head
    phi(Q) (phi(K)^T V) / (phi(Q) sum phi(K) + eps), with ``feature_map`` 'elu+1' (the paper's),
    'relu' or 'identity'; ``causal`` uses prefix sums over ``chunk_size``-step chunks."""

    def __init__(self, embed_dim: int, num_heads: int = 1, feature_map: str = "elu+1", causal: bool = False,
                 use_bias: bool = True, chunk_size: int = 64, eps: float = 1e-6, stateful: bool = False,
                 name: str | None = None):
        super().__init__(embed_dim, num_heads, causal, use_bias, chunk_size, eps, stateful, name)
        if not isinstance(feature_map, str):
            raise ValueError(f"LinearAttention: feature_map must be a name, got {feature_map!r}")
        _feature_map("LinearAttention", feature_map)
        self.feature_map = feature_map

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, state=None, return_state: bool = False):
        return linear_attention(q, k, v, self.feature_map, self.causal, self.chunk_size, self.eps, state,
                                return_state)

    def get_config(self) -> dict:
        return {**self._common_config(), "feature_map": self.feature_map}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, feature_map={self.feature_map!r}, "
                f"causal={self.causal}")


@register_layer
class PerformerAttention(_KernelAttention):
    """Multi-head FAVOR+ attention (Performer): softmax(Q K^T / sqrt(d)) V estimated with
    ``num_features`` positive orthogonal random features per head (default d ceil(log d),
    at least d), shared by the heads and kept in the buffer ``projection`` (m, d).
    ``seed`` fixes the draw; :meth:`redraw_features` draws anew (the paper redraws them
    now and then during training)."""

    def __init__(self, embed_dim: int, num_heads: int = 1, num_features: int | None = None, causal: bool = False,
                 use_bias: bool = True, chunk_size: int = 64, eps: float = 1e-6, seed: int | None = None,
                 stateful: bool = False, name: str | None = None):
        super().__init__(embed_dim, num_heads, causal, use_bias, chunk_size, eps, stateful, name)
        if num_features is None:
            num_features = max(self.head_dim, self.head_dim * math.ceil(math.log(max(self.head_dim, 2))))
        self.num_features = positive_int(num_features, "PerformerAttention: num_features")
        self.seed = seed
        self.redraw_features(seed)

    def redraw_features(self, seed: int | None = None) -> None:
        """A new projection (num_features, head_dim) drawn with ``seed`` (None: fresh entropy)."""
        projection = orthogonal_random_features(self.num_features, self.head_dim, seed)
        self.register_buffer("projection", projection)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, state=None, return_state: bool = False):
        projection = backend.xp.asarray(self._buffers["projection"], dtype=q.dtype)
        return performer_attention(q, k, v, projection, self.causal, None, self.chunk_size, self.eps, state,
                                   return_state)

    def get_config(self) -> dict:
        return {**self._common_config(), "num_features": self.num_features, "seed": self.seed}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_features={self.num_features}, "
                f"causal={self.causal}")
