"""Dynamic Tanh (Zhu, Chen, He, LeCun and Liu, "Transformers without Normalization", 2025):
an element-wise stand-in for LayerNorm,

    DyT(x) = gamma * tanh(alpha * x) + beta,

with a learnable scalar ``alpha`` and per-feature ``gamma`` (init 1) and ``beta`` (init 0).
No statistics are computed over the features: tanh squashes the extreme activations, as a
normalization layer's input-output curve does, while the centre stays about linear.
:func:`replace_norms_with_dyt` swaps every LayerNorm of an existing model for one.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["DyT", "dyt", "replace_norms_with_dyt"]


def dyt(x, alpha, weight, bias) -> Tensor:
    """gamma * tanh(alpha * x) + beta over the last axis of ``x``: ``alpha`` a scalar (or
    shape (1,)), ``weight`` (gamma) and ``bias`` (beta) of the last axis's size."""
    return F.tanh(x * alpha) * weight + bias


def _alpha_init(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"DyT: alpha_init must be a finite number, got {value!r}")
    return float(value)


@register_layer
class DyT(Module):
    """y = gamma * tanh(alpha * x) + beta over the last axis (``num_features``) of inputs
    (batch, ..., num_features). Parameters: ``alpha`` (1,), init ``alpha_init`` (0.5, the
    paper's default), ``weight`` (gamma, init 1) and ``bias`` (beta, init 0), each
    (num_features,)."""

    default_name = "dyt"
    streamable = True

    def __init__(self, num_features: int, alpha_init: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.num_features = positive_int(num_features, "DyT: num_features")
        self.alpha_init = _alpha_init(alpha_init)

    def _expected(self) -> str:
        return f"(batch, ..., {self.num_features})"

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), self._expected())
        if shape[-1] not in (None, self.num_features):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected {self._expected()}")
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.add_parameter("alpha", xp.full((1,), self.alpha_init, dtype=dtype))
        self.add_parameter("weight", xp.ones((self.num_features,), dtype=dtype))
        self.add_parameter("bias", xp.zeros((self.num_features,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 2 or x.shape[-1] != self.num_features:
            raise input_error(self, x, self._expected())
        return dyt(x, self.alpha, self.weight, self.bias)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), self._expected())
        if shape[-1] not in (None, self.num_features):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected {self._expected()}")
        return shape

    def get_config(self) -> dict:
        return {"num_features": self.num_features, "alpha_init": self.alpha_init, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha_init={self.alpha_init}"


def _replacement(norm: LayerNorm, alpha_init: float) -> DyT:
    """A DyT for a built LayerNorm over the last axis: built, its gamma and beta copied."""
    if norm.axes != (-1,) or norm.normalized_shape is None or len(norm.normalized_shape) != 1:
        raise ValueError(f"replace_norms_with_dyt: {norm._label()} normalises axes {norm.axes} of shape "
                         f"{norm.normalized_shape}; only built LayerNorms over the last axis can be replaced")
    features = norm.normalized_shape[0]
    layer = DyT(features, alpha_init=alpha_init, name=norm.name)
    layer.build((None, features))
    if norm.affine:
        layer.weight.data = backend.xp.array(norm.weight.data, copy=True)
        layer.bias.data = backend.xp.array(norm.bias.data, copy=True)
    layer.alpha.data = layer.alpha.data.astype(layer.weight.dtype)
    layer.training = norm.training
    return layer


def replace_norms_with_dyt(model: Module, alpha_init: float = 0.5) -> Module:
    """Swap every :class:`LayerNorm` of ``model`` (over the last axis) for a :class:`DyT` of
    its width, in place; returns ``model``. The model must be built (call it once, or
    ``model.build(shape)``); the LayerNorms' gamma and beta become DyT's. An architecture
    config saved afterwards still names LayerNorms: call this again after loading."""
    if not isinstance(model, Module):
        raise TypeError(f"replace_norms_with_dyt: expected a Module, got {type(model).__name__}")
    if isinstance(model, LayerNorm):
        raise TypeError("replace_norms_with_dyt: got a LayerNorm itself; pass the model that holds it")
    _alpha_init(alpha_init)
    unbuilt = [path for path, m in model.named_modules() if isinstance(m, LayerNorm) and not m.built]
    if unbuilt:
        raise ValueError(f"replace_norms_with_dyt: the LayerNorms {unbuilt} are not built; call the model once "
                         "(or build it) first")
    for _, parent in list(model.named_modules()):
        for key, child in list(parent._modules.items()):
            if isinstance(child, LayerNorm):
                parent._modules[key] = _replacement(child, alpha_init)
    return model
