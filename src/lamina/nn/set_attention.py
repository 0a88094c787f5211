"""The attention blocks of the Set Transformer (Lee et al. 2019, "Set Transformer: A Framework
for Attention-based Permutation-Invariant Neural Networks"), laid out as the authors'
reference code (``modules.py``) computes them.

MAB(X, Y), the multihead attention block, with dim the model width and h heads:

    Q = X W_q + b_q,  K = Y W_k + b_k,  V = Y W_v + b_v     (each split into h heads of dim / h)
    H = LN0(Q + concat_i softmax(Q_i K_i^T / sqrt(dim)) V_i)
    MAB(X, Y) = LN1(H + relu(H W_o + b_o))

(the reference code scales the scores by the whole width, sqrt(dim), adds the projected
queries as the residual and uses one Dense layer with a ReLU as the row-wise feed-forward
rFF; the layer norms LN0 and LN1 are there with ``ln=True`` only). Then

    SAB(X)  = MAB(X, X)                                   self-attention, equivariant
    ISAB(X) = MAB(X, MAB(I, X)),  I: m learned inducing points (m, dim); O(n m), equivariant
    PMA(Z)  = MAB(S, Z),          S: k learned seeds (k, dim); k outputs, invariant

(the reference PMA attends over Z itself, without the paper's rFF(Z)). A padding mask (batch,
n), True for the real elements, keeps the padding out of every attention over the set; the
rows of padding in an equivariant block's output are meaningless.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.set_layers import check_set, set_mask

__all__ = ["ISAB", "MAB", "PMA", "SAB", "multihead_attention"]


def multihead_attention(q, k, v, num_heads: int, key_mask=None, scale: float | None = None) -> Tensor:
    """softmax(Q_i K_i^T scale) V_i for each head i, the heads joined again: queries (N, T_q, D),
    keys (N, T_k, D), values (N, T_k, D_v) -> (N, T_q, D_v). Head i holds the features
    i D / h .. (i + 1) D / h of Q and K and the same share of V. ``key_mask`` (N, T_k): False
    for keys to leave out; ``scale`` defaults to 1 / sqrt(D / h)."""
    n, t_q, t_k = q.shape[0], q.shape[1], k.shape[1]

    def heads(x, t):
        return F.transpose(F.reshape(x, n, t, num_heads, x.shape[-1] // num_heads), 0, 2, 1, 3)

    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = scaled_dot_product_attention(heads(q, t_q), heads(k, t_k), heads(v, t_k), mask=mask, scale=scale)
    return F.reshape(F.transpose(out, 0, 2, 1, 3), n, t_q, v.shape[-1])


def _check_heads(who: str, dim: int, num_heads: int) -> None:
    positive_int(dim, f"{who}: dim")
    positive_int(num_heads, f"{who}: num_heads")
    if dim % num_heads:
        raise ValueError(f"{who}: dim {dim} is not divisible by num_heads {num_heads}; each head gets dim / "
                         "num_heads features")


def _learned_points(layer: Module, name: str, count: int, dim: int) -> None:
    """A (1, count, dim) parameter, Xavier-uniform as the reference code's."""
    shape = (1, count, dim)
    layer.add_parameter(name, initializers.xavier_uniform(shape, dim, count, backend.get_default_dtype()))


@register_layer
class MAB(Module):
    """The multihead attention block MAB(X, Y) (module docstring): queries X (batch, n_x, d_x)
    attend over Y (batch, n_y, d_y), giving (batch, n_x, ``dim``). Called as
    ``mab(x, y, mask=None)``, ``mask`` (batch, n_y) the padding mask of Y. Sub-layers
    ``fc_q``, ``fc_k``, ``fc_v``, ``fc_o`` (Dense) and, with ``ln``, ``ln0`` and ``ln1``."""

    def __init__(self, dim: int, num_heads: int, ln: bool = False, name: str | None = None):
        super().__init__(name=name)
        _check_heads("MAB", dim, num_heads)
        self.dim, self.num_heads, self.ln = dim, num_heads, bool(ln)
        self.fc_q = Dense(dim, kernel_init="xavier_uniform")
        self.fc_k = Dense(dim, kernel_init="xavier_uniform")
        self.fc_v = Dense(dim, kernel_init="xavier_uniform")
        self.fc_o = Dense(dim)
        if self.ln:
            self.ln0 = LayerNorm()
            self.ln1 = LayerNorm()

    def _check(self, dense: Dense, x, what: str) -> Tensor:
        return check_set(self, x, what, dense.weight.shape[0] if dense.built else None)

    def forward(self, x, y, mask=None) -> Tensor:
        x = self._check(self.fc_q, x, "query set X")
        y = self._check(self.fc_k, y, "key set Y")
        if x.shape[0] != y.shape[0]:
            raise ShapeError(f"{self._label()}: X {tuple(x.shape)} and Y {tuple(y.shape)} differ in batch size")
        keep = set_mask(self, mask, y)
        q = self.fc_q(x)
        attended = multihead_attention(q, self.fc_k(y), self.fc_v(y), self.num_heads, keep,
                                       scale=1.0 / math.sqrt(self.dim))
        h = q + attended
        if self.ln:
            h = self.ln0(h)
        h = h + F.relu(self.fc_o(h))
        return self.ln1(h) if self.ln else h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.dim,)

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "ln": self.ln, "name": self.name}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, ln={self.ln}"


class _SetBlock(Module):
    """What SAB, ISAB and PMA share: the width, heads, layer norms and configuration."""

    def __init__(self, dim: int, num_heads: int, ln: bool = False, name: str | None = None):
        super().__init__(name=name)
        _check_heads(type(self).__name__, dim, num_heads)
        self.dim, self.num_heads, self.ln = dim, num_heads, bool(ln)

    def _batch_of(self, points: Tensor, n: int) -> Tensor:
        return F.broadcast_to(points, (n,) + tuple(points.shape[1:]))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "ln": self.ln, "name": self.name}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, ln={self.ln}"


@register_layer
class SAB(_SetBlock):
    """The set attention block SAB(X) = MAB(X, X): sets (batch, n, d) -> (batch, n, ``dim``),
    permutation equivariant. Called as ``sab(x, mask=None)``."""

    def __init__(self, dim: int, num_heads: int, ln: bool = False, name: str | None = None):
        super().__init__(dim, num_heads, ln, name)
        self.mab = MAB(dim, num_heads, ln)

    def forward(self, x, mask=None) -> Tensor:
        return self.mab(x, x, mask=mask)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dim,)


@register_layer
class ISAB(_SetBlock):
    """The induced set attention block ISAB_m(X) = MAB(X, H), H = MAB(I, X): the set attends to
    itself through ``num_inducing`` learned points I (parameter ``inducing_points`` (1, m,
    dim)), at O(n m) cost instead of O(n^2). Sets (batch, n, d) -> (batch, n, ``dim``),
    permutation equivariant. Called as ``isab(x, mask=None)``."""

    def __init__(self, dim: int, num_heads: int, num_inducing: int, ln: bool = False, name: str | None = None):
        super().__init__(dim, num_heads, ln, name)
        self.num_inducing = positive_int(num_inducing, "ISAB: num_inducing")
        _learned_points(self, "inducing_points", self.num_inducing, dim)
        self.mab0 = MAB(dim, num_heads, ln)
        self.mab1 = MAB(dim, num_heads, ln)

    def forward(self, x, mask=None) -> Tensor:
        x = check_set(self, x, "set")
        h = self.mab0(self._batch_of(self.inducing_points, x.shape[0]), x, mask=mask)
        return self.mab1(x, h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dim,)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_inducing": self.num_inducing}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_inducing={self.num_inducing}"


@register_layer
class PMA(_SetBlock):
    """Pooling by multihead attention PMA_k(Z) = MAB(S, Z): ``num_seeds`` learned seed vectors S
    (parameter ``seeds`` (1, k, dim)) attend over the set, giving k vectors per set: (batch,
    n, d) -> (batch, k, ``dim``), permutation invariant. Called as ``pma(z, mask=None)``."""

    def __init__(self, dim: int, num_heads: int, num_seeds: int, ln: bool = False, name: str | None = None):
        super().__init__(dim, num_heads, ln, name)
        self.num_seeds = positive_int(num_seeds, "PMA: num_seeds")
        _learned_points(self, "seeds", self.num_seeds, dim)
        self.mab = MAB(dim, num_heads, ln)

    def forward(self, z, mask=None) -> Tensor:
        z = check_set(self, z, "set")
        return self.mab(self._batch_of(self.seeds, z.shape[0]), z, mask=mask)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_seeds, self.dim)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_seeds": self.num_seeds}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_seeds={self.num_seeds}"
