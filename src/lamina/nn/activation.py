"""Activation layers (course notes, Activation functions) and the name -> function table
that ``Dense(..., activation='relu')`` and ``Conv2D(..., activation=...)`` use.

* ReLU: a = max(z, 0); ReLU6: a = min(max(z, 0), 6) (MobileNet); LeakyReLU: a = max(z, alpha z);
  PReLU: the same with a learned slope per channel (last axis); ELU: a = z for z > 0,
  alpha (e^z - 1) otherwise; SELU: lambda times ELU with the fixed alpha, lambda of
  self-normalising networks; Tanh; Sigmoid; Softmax a_i = e^(z_i) / sum_j e^(z_j) along an axis.
* Beyond the notes (:mod:`lamina.functional.smooth_activation`): GELU a = z Phi(z), SiLU (swish)
  a = z sigma(z), Softplus a = log(1 + e^z), Mish a = z tanh(softplus(z)), and MobileNet v3's
  HardSigmoid a = relu6(z + 3) / 6 and HardSwish a = z relu6(z + 3) / 6.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina import functional as F
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import channel_sums, per_channel, sum_to, with_scalar
from lamina.functional.activation import chain_into, select
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor


def identity(z):
    """The identity ('linear') activation, a = z."""
    return z


def quick_gelu(z) -> Tensor:
    """a = z sigma(1.702 z): CLIP's sigmoid approximation of GELU (a composite of existing ops)."""
    z = as_tensor(z)
    return F.mul(z, F.sigmoid(F.mul(z, 1.702)))


def _relu6_into(z, out):
    backend.xp.clip(z, 0, 6, out=out)


def _relu6_grad(dy, a, out):                 # 0 < z < 6 exactly where 0 < a < 6
    backend.xp.multiply(dy, (a > 0) & (a < 6), out=out)


class ReLU6Function(Function):
    """a = min(max(z, 0), 6) (MobileNet's bounded ReLU); the upstream gradient passes where
    0 < z < 6 (0 at both kinks, as PyTorch's hardtanh). Both passes run on lamina's threads
    when large (:func:`lamina.functional.activation.chain_into`)."""

    def forward(self, z):
        self.a = chain_into(_relu6_into, [z])
        return self.a

    def backward(self, dy):
        return (chain_into(_relu6_grad, [dy, self.a]),)

    def backward_graph(self, dy):
        return (dy * ((self.a > 0) & (self.a < 6)),)       # a constant mask: piecewise linear in z


def relu6(z) -> Tensor:
    """a = min(max(z, 0), 6)."""
    return ReLU6Function.apply(z)


ACTIVATIONS: dict[str, Callable] = {
    "linear": identity,
    "relu": F.relu,
    "relu6": relu6,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "selu": F.selu,
    "tanh": F.tanh,
    "sigmoid": F.sigmoid,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    "gelu": F.gelu,
    "gelu_tanh": F.smooth_activation.gelu_tanh,
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "swish": F.silu,
    "softplus": F.softplus,
    "mish": F.mish,
    "hard_sigmoid": F.hard_sigmoid,
    "hard_swish": F.hard_swish,
    "hardtanh": F.hardtanh,
    "softsign": F.softsign,
    "log_sigmoid": F.log_sigmoid,
    "celu": F.celu,
    "tanhshrink": F.tanhshrink,
    "hardshrink": F.hardshrink,
    "softshrink": F.softshrink,
}


def get_activation(spec) -> Callable | None:
    """An activation given as None, a name from ``ACTIVATIONS``, a layer or a callable."""
    if spec is None:
        return None
    if isinstance(spec, str):
        fn = ACTIVATIONS.get(spec.lower())
        if fn is None:
            raise ValueError(f"unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)}")
        return None if fn is identity else fn
    if isinstance(spec, dict):
        return layer_from_config(spec)
    if callable(spec):
        return spec
    raise TypeError(f"activation: expected a name, a layer or a callable, got {type(spec).__name__}")


def activate_fresh(activation, z) -> Tensor:
    """``activation(z)`` for z a layer's own fresh pre-activation, which nothing else holds:
    written over z's array where the activation has such a form (relu, tanh)."""
    overwrite = F.activation.overwriting(activation)
    return overwrite(z) if overwrite is not None else activation(z)


def serialize_activation(spec):
    """A JSON-compatible description of an activation (None, a name, or a layer config)."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, Module):
        return layer_to_config(spec)
    for name, fn in ACTIVATIONS.items():
        if spec is fn:
            return name
    raise ValueError(
        f"cannot serialise the activation {spec!r}: give it by name ({sorted(ACTIVATIONS)}) or as "
        "a registered activation layer"
    )


def activation_config(layer: Module):
    """The serialised ``activation`` of a layer that keeps ``activation`` (the callable or
    sub-layer) and ``activation_spec`` (what the user passed, unless it was a layer)."""
    act = layer.activation
    return serialize_activation(act if isinstance(act, Module) else layer.activation_spec)


class _Elementwise(Module):
    """An activation layer without weights: shape in = shape out."""

    streamable = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class ReLU(_Elementwise):
    """a = max(z, 0)."""

    default_name = "relu"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.relu(as_tensor(x))


@register_layer
class ReLU6(_Elementwise):
    """a = min(max(z, 0), 6): ReLU capped at 6 (MobileNet v1/v2, Keras ``ReLU(6.)``)."""

    default_name = "relu6"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return relu6(as_tensor(x))


@register_layer
class LeakyReLU(_Elementwise):
    """a = max(z, alpha z) (alpha = 0.01 in the notes): negative inputs keep a small slope."""

    default_name = "leaky_relu"

    def __init__(self, alpha: float = 0.01, name: str | None = None):
        super().__init__(name=name)
        self.alpha = float(alpha)

    def forward(self, x) -> Tensor:
        return F.leaky_relu(as_tensor(x), alpha=self.alpha)

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "name": self.name}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_layer
class ELU(_Elementwise):
    """a = z for z > 0, alpha (e^z - 1) otherwise."""

    default_name = "elu"

    def __init__(self, alpha: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.alpha = float(alpha)

    def forward(self, x) -> Tensor:
        return F.elu(as_tensor(x), alpha=self.alpha)

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "name": self.name}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_layer
class SELU(_Elementwise):
    """a = lambda z for z > 0, lambda alpha (e^z - 1) otherwise (alpha ~ 1.6733, lambda ~ 1.0507)."""

    default_name = "selu"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.selu(as_tensor(x))


@register_layer
class Tanh(_Elementwise):
    """a = tanh z = 2 sigma(2z) - 1."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.tanh(as_tensor(x))


@register_layer
class Sigmoid(_Elementwise):
    """a = 1 / (1 + e^-z)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.sigmoid(as_tensor(x))


@register_layer
class Softmax(_Elementwise):
    """a_i = e^(z_i) / sum_j e^(z_j) along ``axis``."""

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name=name)
        self.axis = int(axis)

    @property
    def streamable(self) -> bool:
        return self.axis == -1

    def forward(self, x) -> Tensor:
        return F.softmax(as_tensor(x), axis=self.axis)

    def get_config(self) -> dict:
        return {"axis": self.axis, "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register_layer
class GELU(_Elementwise):
    """a = z Phi(z), Phi the standard normal CDF; ``approximate='tanh'`` for
    z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) / 2."""

    default_name = "gelu"

    def __init__(self, approximate: str = "none", name: str | None = None):
        super().__init__(name=name)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x) -> Tensor:
        return F.gelu(as_tensor(x), approximate=self.approximate)

    def get_config(self) -> dict:
        return {"approximate": self.approximate, "name": self.name}

    def extra_repr(self) -> str:
        return "approximate='tanh'" if self.approximate == "tanh" else ""


@register_layer
class SiLU(_Elementwise):
    """a = z sigma(z) (swish, Keras's ``swish`` and PyTorch's ``SiLU``)."""

    default_name = "silu"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.silu(as_tensor(x))


@register_layer
class Softplus(_Elementwise):
    """a = log(1 + e^(beta z)) / beta, a smooth ReLU; a = z where beta z > threshold."""

    default_name = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, name: str | None = None):
        super().__init__(name=name)
        if not beta > 0:
            raise ValueError(f"Softplus: beta must be positive, got {beta!r}")
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x) -> Tensor:
        return F.softplus(as_tensor(x), beta=self.beta, threshold=self.threshold)

    def get_config(self) -> dict:
        return {"beta": self.beta, "threshold": self.threshold, "name": self.name}

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


@register_layer
class Mish(_Elementwise):
    """a = z tanh(softplus(z))."""

    default_name = "mish"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.mish(as_tensor(x))


@register_layer
class HardSigmoid(_Elementwise):
    """a = relu6(z + 3) / 6, the piecewise-linear sigmoid of MobileNet v3."""

    default_name = "hard_sigmoid"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.hard_sigmoid(as_tensor(x))


@register_layer
class HardSwish(_Elementwise):
    """a = z relu6(z + 3) / 6, the piecewise-quadratic swish of MobileNet v3."""

    default_name = "hard_swish"

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return F.hard_swish(as_tensor(x))


@register_layer
class Activation(_Elementwise):
    """Any activation from ``ACTIVATIONS`` by name, as a layer (Keras's ``Activation``)."""

    def __init__(self, activation: str, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(activation, str):
            raise TypeError(f"Activation: expected the name of an activation, got {activation!r}")
        self.fn = get_activation(activation) or identity
        self.activation = activation

    def forward(self, x) -> Tensor:
        return self.fn(as_tensor(x))

    def get_config(self) -> dict:
        return {"activation": self.activation, "name": self.name}

    def extra_repr(self) -> str:
        return repr(self.activation)


class PReLUFunction(Function):
    """a = z for z > 0, alpha_c z otherwise, alpha_c one slope per channel (last axis).

    dJ/dz = dJ/da where z > 0 and alpha_c dJ/da elsewhere;
    dJ/dalpha_c = sum over every position of channel c with z <= 0 of dJ/da z.
    """

    def forward(self, z, alpha):
        xp = backend.xp
        self.z, self.alpha = z, alpha
        self.positive = xp.empty(z.shape, dtype=bool)
        return chain_into(self._forward, [z, self.positive], channels=True)

    def _forward(self, z, positive, out):
        # max(z, 0) + alpha min(z, 0): each term is 0 on the other side (no select: see
        # functional.activation.select)
        xp = backend.xp
        xp.greater(z, 0, out=positive)
        negative = with_scalar(xp.minimum, z, 0)
        per_channel(xp.multiply, negative, self.alpha, negative)
        with_scalar(xp.maximum, z, 0, out=out)
        out += negative

    def backward(self, dy):
        dz = dalpha = None
        if self.needs_grad[0]:
            dz = chain_into(self._input_grad, [dy, self.positive], channels=True)
        if self.needs_grad[1]:
            contributions = chain_into(self._slope_terms, [dy, self.z])   # dJ/da z where z <= 0
            dalpha = channel_sums(contributions)
            if self.alpha.size == 1:
                dalpha = dalpha.sum(keepdims=True)
        return dz, dalpha

    def _input_grad(self, dy, positive, out):
        select(positive, 1, self.alpha, dy.dtype, out=out)
        out *= dy

    def backward_graph(self, dy):
        """The same VJP by tensor ops: where z > 0 is a constant mask, alpha a tensor."""
        z, alpha = self.inputs
        negative = ~self.positive
        dz = F.where(self.positive, dy, dy * alpha) if self.needs_grad[0] else None
        dalpha = sum_to(dy * z * negative, alpha.shape) if self.needs_grad[1] else None
        return dz, dalpha

    @staticmethod
    def _slope_terms(dy, z, out):
        with_scalar(backend.xp.minimum, z, 0, out=out)
        out *= dy


@register_layer
class PReLU(Module):
    """Parametric ReLU, a = max(z, alpha z) with alpha learned: one slope per channel (the
    last axis, NHWC) or a single one (``shared=True``); slopes start at ``alpha_init`` = 0.25."""

    streamable = True

    default_name = "prelu"

    def __init__(self, alpha_init: float = 0.25, shared: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.alpha_init = float(alpha_init)
        self.shared = bool(shared)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "an input with a channel (last) axis")
        n = 1 if self.shared else shape[-1]
        if n is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        self.add_parameter("alpha", initializers.constant(self.alpha_init)((n,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n = self.alpha.shape[0]
        if x.ndim == 0 or (not self.shared and x.shape[-1] != n):
            raise input_error(self, x, f"the last (channel) axis of size {n}, as when the layer was built")
        return PReLUFunction.apply(x, self.alpha)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"alpha_init": self.alpha_init, "shared": self.shared, "name": self.name}

    def extra_repr(self) -> str:
        return f"alpha_init={self.alpha_init}" + (", shared=True" if self.shared else "")
