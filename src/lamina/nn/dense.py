"""The fully connected layer (course notes, Vectorized forward propagation).

The notes write one layer as Z = W X + B with W of shape (n^[l], n^[l-1]) and the samples
as the columns of X. lamina keeps samples as rows (the batch axis first, as every array
library and data loader does), so a Dense layer computes

    Z = X W + b,   X: (m, n^[l-1]),  W: (n^[l-1], n^[l]),  b: (n^[l],),  Z: (m, n^[l])

with W the transpose of the notes' matrix; b broadcasts over the rows. Any leading axes
are allowed: (..., n_in) -> (..., units).
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import PER_CHANNEL_MIN, channel_sums, per_channel
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter


class LinearFunction(Function):
    """Z = X W (+ b) as one node.

    dJ/dX = dJ/dZ W^T,  dJ/dW = X^T dJ/dZ,  dJ/db = sum over the rows of dJ/dZ
    (leading axes of X are folded into the rows first).
    """
    value_used_for = {0: (1,), 1: (0,), 2: ()}   # x serves dJ/dw, w serves dJ/dx, the bias neither

    def forward(self, x, w, b=None):
        self.in_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        self.x2, self.w = x2, w
        z = parallel.matmul(x2, w)
        if b is not None:
            if z.size < PER_CHANNEL_MIN:        # per_channel's own fallback, without its checks
                z += b
            else:
                per_channel(backend.xp.add, z, b, z)
        return z.reshape(x.shape[:-1] + (w.shape[1],)) if x.ndim != 2 else z

    def backward(self, dy):
        dy2 = dy.reshape(-1, dy.shape[-1]) if dy.ndim != 2 else dy
        needs = self.needs_grad
        dx = parallel.matmul(dy2, self.w.T).reshape(self.in_shape) if needs[0] else None
        dw = parallel.matmul(self.x2.T, dy2) if needs[1] else None
        if len(needs) == 3:
            db = channel_sums(dy2) if needs[2] else None
            return dx, dw, db
        return dx, dw

    def backward_graph(self, dy):
        x, w = self.inputs[0], self.inputs[1]
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        dy2 = dy.reshape(-1, dy.shape[-1]) if dy.ndim != 2 else dy
        needs = self.needs_grad
        dx = (dy2 @ w.T).reshape(self.in_shape) if needs[0] else None
        dw = x2.T @ dy2 if needs[1] else None
        if len(needs) == 3:
            return dx, dw, (dy2.sum(axis=0) if needs[2] else None)
        return dx, dw


def linear(x, w, b=None) -> Tensor:
    """Z = X W + b over the last axis of X (the Dense layer's op)."""
    if b is None:
        return LinearFunction.apply(x, w)
    return LinearFunction.apply(x, w, b)


def add_dense_weights(layer: Module, input_shape) -> None:
    """Give ``layer`` (with ``units``, ``use_bias``, ``kernel_init``, ``bias_init``) its ``weight``
    (n_in, units) and ``bias`` (units,) for inputs (batch, ..., n_in)."""
    shape = check_shape_ndim(layer, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
    n_in = shape[-1]
    if n_in is None:
        raise ShapeError(f"{layer._label()}: the feature (last) axis of the input shape {shape} must be known")
    dtype = backend.get_default_dtype()
    layer.add_parameter("weight", initializers.get(layer.kernel_init)((n_in, layer.units), n_in, layer.units, dtype))
    if layer.use_bias:
        layer.add_parameter("bias", initializers.get(layer.bias_init)((layer.units,), n_in, layer.units, dtype))


@register_layer
class Dense(Module):
    """A fully connected layer: a = g(x W + b), W of shape (n_in, units).

    ``activation``: None (linear), a name ('relu', 'tanh', 'sigmoid', 'softmax', ...), an
    activation layer or any callable on tensors. ``kernel_init`` defaults to He uniform
    (Var(W) = 2 / n_in, right before ReLU; prefer 'xavier_uniform' in tanh networks) and
    ``bias_init`` to zeros (a small positive constant such as 0.01 keeps ReLU units from
    starting dead, course notes).
    """

    streamable = True

    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_init="he_uniform",
                 bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)

    def build(self, input_shape) -> None:
        add_dense_weights(self, input_shape)
        self.built = True

    def forward(self, x) -> Tensor:
        return self.apply_weights(x, read_parameter(self, "weight"))

    def apply_weights(self, x, weight, activate: bool = True) -> Tensor:
        """The layer's computation with ``weight`` in place of its own (used by DropConnect);
        ``activate=False`` leaves out the activation (inference fusion applies it in place).
        Without an activation it records one node."""
        if type(x) is not Tensor:
            x = as_tensor(x)
        n_in = weight.shape[0]
        if not x.data.shape or x.data.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} "
                                       "features the layer was built for")
        if self.use_bias:
            z = LinearFunction.apply(x, weight, read_parameter(self, "bias"))
        else:
            z = LinearFunction.apply(x, weight)
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        if self.built and shape[-1] is not None and shape[-1] != self.weight.shape[0]:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the layer "
                             f"was built for {self.weight.shape[0]}")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "activation": activation_config(self),
            "use_bias": self.use_bias,
            "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        act = self.activation_spec if isinstance(self.activation_spec, str) else None
        n_in = self.weight.shape[0] if self.built else "?"
        return f"{n_in} -> {self.units}" + (f", activation={act!r}" if act else "") + (
            "" if self.use_bias else ", use_bias=False")
