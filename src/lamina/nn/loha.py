"""Weight updates of other structured forms than LoRA's A B, each adding Delta W (n_in, n_out)
to a frozen Dense weight: y = g(x (W + Delta W) + b).

LoHa (LyCORIS; Hyeon-Woo et al.'s FedPara): the Hadamard product of two low-rank products,

    Delta W = s (A1 B1) * (A2 B2),   A_i: (n_in, r),  B_i: (r, n_out),  s = alpha / r

of rank up to r^2 for 2 r (n_in + n_out) values. A1, B1, A2 start Kaiming-uniform
(U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and B2 at zero, so Delta W = 0 at first, as peft draws them.

LoKr (LyCORIS): a Kronecker product, with n_in = i1 i2 and n_out = o1 o2,

    Delta W = s kron(W1, A2 B2),   W1: (i1, o1),  A2: (i2, r),  B2: (r, o2)

(Delta W[a i2 + c, b o2 + d] = W1[a, b] (A2 B2)[c, d]); each size is split into the two
factors closest to its square root (i1 <= i2), as LyCORIS's ``factorization`` with its
default. W1 starts at zero and A2, B2 Kaiming-uniform, as peft does.

VeRA (Kopiczko et al. 2024): one pair of frozen random matrices A (n_in_max, r) and
B (r, n_out_max) shared by every adapted layer, each layer learning two vectors only,

    Delta W = A[:n_in] diag(d) B[:, :n_out] diag(b),    d: (r,) = 0.1,  b: (n_out,) = 0

(peft's ``d_initial`` 0.1 and zero ``b``; A, B Kaiming-uniform from ``projection_seed``).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.activation import activate_fresh
from lamina.nn.dense import Dense, linear
from lamina.nn.dropout import DropoutFunction
from lamina.nn.layer import dropout_rate, register_layer
from lamina.nn.lora import adapted_base_config, adapted_base_from_config
from lamina.nn.module import Module
from lamina.nn.peft_targets import ADAPTED_LAYERS, check_dense, check_rank, chosen_layers, replace_dense, swap

__all__ = ["LoHaDense", "LoKrDense", "VeRADense", "apply_loha", "apply_lokr", "apply_vera", "factorize"]


def _kaiming_uniform(shape, fan_in: int, dtype, rng=None):
    bound = 1.0 / math.sqrt(fan_in)
    rng = backend.rng() if rng is None else rng
    return backend.xp.asarray(rng.uniform(-bound, bound, shape).astype(dtype))


def factorize(n: int) -> tuple[int, int]:
    """(a, b) with a b = n, a <= b and a as close to sqrt(n) as the divisors allow."""
    a = int(math.isqrt(n))
    while n % a:
        a -= 1
    return a, n // a


class DeltaDense(Module):
    """A frozen built Dense ``base`` plus an additive weight update Delta W (``delta_weight``
    of a subclass, a tensor (n_in, n_out)): y = g(x W + b + dropout(x) Delta W)."""

    kind = "adapter"

    def __init__(self, dense: Dense, dropout: float = 0.0, name: str | None = None):
        who = type(self).__name__
        check_dense(dense, who)
        super().__init__(name=name or dense.name)
        dense.freeze()
        self.base = dense
        self.dropout = dropout_rate(dropout, who)
        self.merged = False

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.base.weight.shape)

    def adapter_config(self) -> dict:
        """The constructor arguments of a subclass other than the base layer, dropout and name."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**adapted_base_config(self.base), **self.adapter_config(), "dropout": self.dropout,
                "merged": self.merged, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> DeltaDense:
        config = dict(config)
        merged = config.pop("merged", False)
        layer = cls(adapted_base_from_config(config), **config)
        layer.merged = merged
        return layer

    def delta_weight(self) -> Tensor:
        raise NotImplementedError

    def forward(self, x) -> Tensor:
        base = self.base
        z = base.apply_weights(x, base.weight, activate=False)
        if not self.merged:
            if self.dropout and self.training:
                x = DropoutFunction.apply(x, rate=self.dropout)
            z = z + linear(x, self.delta_weight())
        return z if base.activation is None else activate_fresh(base.activation, z)

    def merge(self) -> None:
        """W <- W + Delta W (the outputs do not change)."""
        self._fold(+1)

    def unmerge(self) -> None:
        """W <- W - Delta W."""
        self._fold(-1)

    def _fold(self, sign: int) -> None:
        if self.merged == (sign > 0):
            raise ValueError(f"{self._label()}: the {self.kind} adapter is {'already' if self.merged else 'not'} "
                             "merged")
        with no_grad():
            self.base.weight.data = self.base.weight.data + sign * self.delta_weight().data
        self.merged = sign > 0

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)


@register_layer
class LoHaDense(DeltaDense):
    """LoHa on a Dense layer: Delta W = (alpha / r) (A1 B1) * (A2 B2), parameters ``A1``,
    ``B1``, ``A2``, ``B2`` (see the module docstring)."""

    kind = "LoHa"

    def __init__(self, dense: Dense, r: int = 8, alpha: float = 8.0, dropout: float = 0.0, name: str | None = None):
        super().__init__(dense, dropout, name)
        n_in, n_out = self.shape
        check_rank(r, n_in, n_out, "LoHaDense")
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        dtype = dense.weight.dtype
        self.add_parameter("A1", _kaiming_uniform((n_in, r), n_in, dtype))
        self.add_parameter("B1", _kaiming_uniform((r, n_out), r, dtype))
        self.add_parameter("A2", _kaiming_uniform((n_in, r), n_in, dtype))
        self.add_parameter("B2", backend.xp.zeros((r, n_out), dtype=dtype))
        self.built = True

    def delta_weight(self) -> Tensor:
        return F.matmul(self.A1, self.B1) * F.matmul(self.A2, self.B2) * self.scaling

    def adapter_config(self) -> dict:
        return {"r": self.r, "alpha": self.alpha}

    def extra_repr(self) -> str:
        return self.base.extra_repr() + f", LoHa r={self.r}, alpha={self.alpha:g}"


def kron(a, b) -> Tensor:
    """The Kronecker product of matrices a (p, q) and b (s, t), (p s, q t), as a composite."""
    p, q = a.shape
    s, t = b.shape
    outer = F.reshape(a, p, 1, q, 1) * F.reshape(b, 1, s, 1, t)
    return F.reshape(outer, p * s, q * t)


@register_layer
class LoKrDense(DeltaDense):
    """LoKr on a Dense layer: Delta W = (alpha / r) kron(W1, A2 B2), parameters ``W1``,
    ``A2``, ``B2`` (see the module docstring)."""

    kind = "LoKr"

    def __init__(self, dense: Dense, r: int = 4, alpha: float = 4.0, dropout: float = 0.0, name: str | None = None):
        super().__init__(dense, dropout, name)
        n_in, n_out = self.shape
        (i1, i2), (o1, o2) = factorize(n_in), factorize(n_out)
        check_rank(r, i2, o2, f"LoKrDense (the second Kronecker factor, {i2} x {o2})")
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        dtype = dense.weight.dtype
        self.add_parameter("W1", backend.xp.zeros((i1, o1), dtype=dtype))
        self.add_parameter("A2", _kaiming_uniform((i2, r), i2, dtype))
        self.add_parameter("B2", _kaiming_uniform((r, o2), r, dtype))
        self.built = True

    def delta_weight(self) -> Tensor:
        return kron(self.W1, F.matmul(self.A2, self.B2)) * self.scaling

    def adapter_config(self) -> dict:
        return {"r": self.r, "alpha": self.alpha}

    def extra_repr(self) -> str:
        return self.base.extra_repr() + f", LoKr W1 {tuple(self.W1.shape)}, r={self.r}, alpha={self.alpha:g}"


@register_layer
class VeRADense(DeltaDense):
    """VeRA on a Dense layer: Delta W = A diag(d) B diag(b) with the shared frozen ``A``
    (n_in, r) and ``B`` (r, n_out) (buffers: views of the model-wide pair) and the
    trainable vectors ``d`` (r,) and ``b`` (n_out,)."""

    kind = "VeRA"

    def __init__(self, dense: Dense, shared_a, shared_b, d_initial: float = 0.1, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(dense, dropout, name)
        n_in, n_out = self.shape
        r = shared_a.shape[1]
        if shared_a.shape[0] < n_in or shared_b.shape[1] < n_out or shared_b.shape[0] != r:
            raise ValueError(f"VeRADense: the shared A {shared_a.shape} and B {shared_b.shape} must cover the "
                             f"layer's ({n_in}, {n_out}) with one rank")
        dtype = dense.weight.dtype
        self.register_buffer("A", shared_a[:n_in])
        self.register_buffer("B", shared_b[:, :n_out])
        self.add_parameter("d", backend.xp.full((r,), d_initial, dtype=dtype))
        self.add_parameter("b", backend.xp.zeros((n_out,), dtype=dtype))
        self.built = True

    def delta_weight(self) -> Tensor:
        a = Tensor._wrap(self.A)
        b = Tensor._wrap(self.B)
        return F.matmul(a * self.d, b) * self.b

    def forward(self, x) -> Tensor:
        if self.merged:
            return super().forward(x)
        base = self.base
        z = base.apply_weights(x, base.weight, activate=False)
        if self.dropout and self.training:
            x = DropoutFunction.apply(x, rate=self.dropout)
        z = z + linear(linear(x, Tensor._wrap(self.A)) * self.d, Tensor._wrap(self.B)) * self.b
        return z if base.activation is None else activate_fresh(base.activation, z)

    def adapter_config(self) -> dict:
        return {"r": int(self.d.shape[0])}

    @classmethod
    def from_config(cls, config: dict) -> VeRADense:
        """A layer with placeholder zeros for its frozen A and B (buffers the state dict fills;
        they are then the layer's own arrays, no longer views of one model-wide pair)."""
        config = dict(config)
        merged, r = config.pop("merged", False), config.pop("r")
        base = adapted_base_from_config(config)
        n_in, n_out = base.weight.shape
        dtype = base.weight.dtype
        layer = cls(base, backend.xp.zeros((n_in, r), dtype=dtype), backend.xp.zeros((r, n_out), dtype=dtype),
                    **config)
        layer.merged = merged
        return layer

    def extra_repr(self) -> str:
        return self.base.extra_repr() + f", VeRA r={self.d.shape[0]}"


ADAPTED_LAYERS.extend([LoHaDense, LoKrDense, VeRADense])


def apply_loha(model: Module, r: int = 8, alpha: float = 8.0, target=Dense, dropout: float = 0.0) -> Module:
    """Freeze ``model`` and replace the Dense layers ``target`` chooses (as
    :func:`~lamina.nn.apply_lora`) by :class:`LoHaDense` layers. Returns the model."""
    return replace_dense(model, target, lambda dense: LoHaDense(dense, r, alpha, dropout), "apply_loha")


def apply_lokr(model: Module, r: int = 4, alpha: float = 4.0, target=Dense, dropout: float = 0.0) -> Module:
    """Freeze ``model`` and replace the Dense layers ``target`` chooses by :class:`LoKrDense`
    layers. Returns the model."""
    return replace_dense(model, target, lambda dense: LoKrDense(dense, r, alpha, dropout), "apply_lokr")


def apply_vera(model: Module, r: int = 16, target=Dense, d_initial: float = 0.1, projection_seed: int = 0,
               dropout: float = 0.0) -> Module:
    """Freeze ``model`` and replace the Dense layers ``target`` chooses by :class:`VeRADense`
    layers sharing one frozen random pair A (n_in_max, r), B (r, n_out_max), drawn
    Kaiming-uniform from ``projection_seed``. Returns the model."""
    found = chosen_layers(model, target, (Dense,), "apply_vera")
    for path, dense in found:
        check_dense(dense, "apply_vera")
        check_rank(r, *dense.weight.shape, f"apply_vera ({path or 'the model'})")
    n_in = max(dense.weight.shape[0] for _, dense in found)
    n_out = max(dense.weight.shape[1] for _, dense in found)
    dtype = found[0][1].weight.dtype
    rng = np.random.default_rng(projection_seed)
    shared_a = _kaiming_uniform((n_in, r), n_in, dtype, rng)
    shared_b = _kaiming_uniform((r, n_out), r, dtype, rng)
    model.freeze()
    result = model
    for path, dense in found:
        result = swap(model, path, VeRADense(dense, shared_a, shared_b, d_initial, dropout), "apply_vera")
    return result
