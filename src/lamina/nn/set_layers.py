"""Layers on sets (Zaheer et al. 2017, "Deep Sets"): a set of n elements is a (batch, n, d)
array whose row order carries no meaning, and sets of different sizes share one batch padded to
the largest, with a padding mask (batch, n) of booleans, True for the real elements.

* :class:`DeepSetsPooling` sums (or averages, or takes the maximum of) the elements: a function
  of the set that no reordering of the rows changes (permutation invariant).
* :class:`PermEquivariant` maps each element with the same weights plus a term of the whole
  set: reordering the rows of the input reorders the rows of the output the same way.

Padding rows count for nothing: they are left out of every pooled value, so the outputs of the
real elements do not depend on what the padding holds.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.activation import get_activation
from lamina.nn.attention import mask_array
from lamina.nn.dense import linear
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DeepSetsPooling", "PermEquivariant", "check_set", "pool_set", "set_mask"]

POOLS = ("sum", "mean", "max")


def check_set(layer: Module, x, what: str = "input", features: int | None = None) -> Tensor:
    """``x`` as a tensor, checked to be a batch of sets (batch, n, d) (with d = ``features``
    when given); the ShapeError names ``layer``."""
    x = as_tensor(x)
    d = "features" if features is None else str(features)
    if x.ndim != 3 or (features is not None and x.shape[-1] != features):
        raise input_error(layer, x, f"a {what} of shape (batch, set size, {d})")
    return x


def set_mask(layer: Module, mask, x: Tensor):
    """The padding mask of the sets ``x`` (batch, n) as a boolean array (None stays None),
    checked to be (batch, n) booleans; the ShapeError names ``layer``."""
    m = mask_array(mask)
    if m is None:
        return None
    if m.dtype != bool or m.shape != tuple(x.shape[:2]):
        raise ShapeError(f"{layer._label()}: mask of {describe(m)} for sets of shape {tuple(x.shape)}; expected "
                         f"booleans of shape {tuple(x.shape[:2])} (batch, set size), True for the real elements")
    return m


def pool_set(x: Tensor, pool: str, mask=None, keepdims: bool = False, who: str = "pool_set") -> Tensor:
    """The sum, mean or max of the sets ``x`` (batch, n, d) over their elements (axis 1), the
    padding rows (``mask`` False) left out. A mean or max of a set with no element is refused."""
    if mask is None:
        return {"sum": F.sum, "mean": F.mean, "max": F.max}[pool](x, axis=1, keepdims=keepdims)
    counts = mask.sum(axis=1)
    if pool != "sum" and not counts.all():
        raise ValueError(f"{who}: the {pool} of an empty set is undefined; set(s) "
                         f"{backend.xp.flatnonzero(counts == 0).tolist()} of the batch have no element in the mask")
    keep = mask[:, :, None]
    if pool == "max":
        return F.max(F.where(keep, x, -backend.xp.inf), axis=1, keepdims=keepdims)
    total = F.sum(x * keep.astype(x.dtype), axis=1, keepdims=keepdims)
    if pool == "sum":
        return total
    counts = counts.astype(x.dtype)[:, None]
    return total / (counts[:, :, None] if keepdims else counts)


def _check_pool(pool, who: str) -> str:
    if pool not in POOLS:
        raise ValueError(f"{who}: pool must be one of {POOLS}, got {pool!r}")
    return pool


@register_layer
class DeepSetsPooling(Module):
    """The permutation-invariant pooling of Deep Sets: sets (batch, n, d) -> (batch, d),

        sum:  y = sum_i x_i,    mean:  y = (1 / n) sum_i x_i,    max:  y_j = max_i x_ij

    over the real elements i (``mask`` (batch, n), True for them; None: all rows are real).
    Called as ``pool(x, mask=None)``."""

    def __init__(self, pool: str = "sum", name: str | None = None):
        super().__init__(name=name)
        self.pool = _check_pool(pool, "DeepSetsPooling")

    def forward(self, x, mask=None) -> Tensor:
        x = check_set(self, x, "set")
        return pool_set(x, self.pool, set_mask(self, mask, x), who=self._label())

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict:
        return {"pool": self.pool, "name": self.name}

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


@register_layer
class PermEquivariant(Module):
    """The permutation-equivariant layer of Deep Sets (the lambda/gamma form): each element is
    mapped by the same weights, minus a term of the pooled set,

        y_i = g(x_i Lambda + b - pool(x) Gamma),      Lambda, Gamma: (d, units),  b: (units,)

    (the paper's f(x) = sigma(x Lambda - 1 pool(x) Gamma) with a bias; ``pool`` 'sum', 'mean'
    or 'max' over the real elements). Parameters ``lambda_weight``, ``gamma_weight`` and
    ``bias``; ``activation`` g as :class:`Dense`'s (None: linear). Called as
    ``layer(x, mask=None)``; the padding rows of the output are computed as if they were
    elements, and are meaningless."""

    def __init__(self, units: int, pool: str = "mean", activation=None, use_bias: bool = True,
                 kernel_init="xavier_uniform", bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "PermEquivariant: units")
        self.pool = _check_pool(pool, "PermEquivariant")
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.use_bias = bool(use_bias)
        self.kernel_init, self.bias_init = kernel_init, bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape) if input_shape is not None else ()
        if len(shape) != 3 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: got an input shape {shape if shape else None}; expected sets "
                             "(batch, set size, features) with a known feature count")
        d, dtype = shape[-1], backend.get_default_dtype()
        kernel = initializers.get(self.kernel_init)
        self.add_parameter("lambda_weight", kernel((d, self.units), d, self.units, dtype))
        self.add_parameter("gamma_weight", kernel((d, self.units), d, self.units, dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.get(self.bias_init)((self.units,), d, self.units, dtype))
        self.built = True

    def forward(self, x, mask=None) -> Tensor:
        x = check_set(self, x, "set", self.lambda_weight.shape[0])
        pooled = pool_set(x, self.pool, set_mask(self, mask, x), keepdims=True, who=self._label())
        y = linear(x, self.lambda_weight, self.bias if self.use_bias else None) - linear(pooled, self.gamma_weight)
        return y if self.activation is None else self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self) -> dict:
        if self.activation is not None and self.activation_spec is None:
            raise ValueError(f"{self._label()}: an activation given as a layer cannot be saved in a config; "
                             "pass it by name")
        return {"units": self.units, "pool": self.pool, "activation": self.activation_spec,
                "use_bias": self.use_bias, "kernel_init": initializers.serialize(self.kernel_init),
                "bias_init": initializers.serialize(self.bias_init), "name": self.name}

    def extra_repr(self) -> str:
        return f"units={self.units}, pool={self.pool!r}"
