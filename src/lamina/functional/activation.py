"""Activation functions (course notes, activation functions), each with its local gradient.

All are computed in forms that stay finite for |z| up to 1e4 in float32: sigmoid from
exp(-|z|), softmax and log-softmax after subtracting the row maximum.
"""

from __future__ import annotations

import numpy

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.functional._util import per_channel, with_scalar
from lamina.functional.elementwise import where

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


TRANSCENDENTAL_COST = 4
"""tanh and exp cost about four plain passes per element (see
:func:`lamina.parallel.elementwise_chain`)."""


def _sigmoid_into(z, out):
    # sigma(z) = 1 / (1 + e^-z) in four passes. For z below about -88 (float32) e^-z overflows
    # to inf and 1 / inf = 0 is the right limit, so only the overflow warning is silenced; the
    # relative error stays that of exp for either sign of z.
    xp = backend.xp
    xp.negative(z, out=out)
    with numpy.errstate(over="ignore"):
        xp.exp(out, out=out)
    out += 1
    xp.reciprocal(out, out=out)


def _tanh_into(z, out):
    backend.xp.tanh(z, out=out)


def stable_sigmoid(z):
    """sigma(z) = 1 / (1 + e^-z), evaluated without overflow for either sign of z."""
    return parallel.elementwise(_sigmoid_into, z, TRANSCENDENTAL_COST)


def tanh_values(z, out=None):
    """tanh z as an array (into ``out``, which may be z itself)."""
    return parallel.elementwise(_tanh_into, z, TRANSCENDENTAL_COST, out)


def chain_into(kernel, inputs: list, cost: int = 1, out=None, channels: bool = False):
    """``out`` (by default a new C-ordered array of ``inputs[0]``'s shape and dtype) written by
    ``kernel(*input_parts, out_part)`` (:func:`lamina.parallel.elementwise_chain`, which
    also says what ``cost`` and ``channels`` mean)."""
    if out is None:
        out = backend.xp.empty(inputs[0].shape, dtype=inputs[0].dtype)
    parallel.elementwise_chain(kernel, [*inputs, out], cost, channels)
    return out


def _sigmoid_grad(dy, a, out):
    xp = backend.xp
    xp.multiply(a, a, out=out)          # a (1 - a) = a - a^2, without a temporary
    xp.subtract(a, out, out=out)
    out *= dy


class Sigmoid(Function):
    """a = sigma(z); da/dz = a (1 - a)."""
    dtype_rule = "float"

    def forward(self, z):
        self.a = stable_sigmoid(z)
        return self.a

    def backward(self, dy):
        return (chain_into(_sigmoid_grad, [dy, self.a]),)

    def backward_graph(self, dy):
        a = self.recorded_output(self.a)
        return (dy * (a - a * a),)


def _tanh_grad(dy, a, out):
    backend.xp.multiply(a, a, out=out)
    backend.xp.subtract(1, out, out=out)
    out *= dy


class Tanh(Function):
    """a = tanh z; da/dz = 1 - a^2. With ``inplace``, a is written over z's array."""
    dtype_rule = "float"

    inplace = False

    def forward(self, z):
        self.a = tanh_values(z, out=z if self.inplace else None)
        return self.a

    def backward(self, dy):
        return (chain_into(_tanh_grad, [dy, self.a]),)

    def backward_graph(self, dy):
        a = self.recorded_output(self.a)
        return (dy * (1 - a * a),)


def _relu_into(z, out):
    with_scalar(backend.xp.maximum, z, 0, out=out)


def _relu_grad(dy, a, out):
    backend.xp.multiply(dy, a > 0, out=out)


class ReLU(Function):
    """a = max(z, 0); the upstream gradient passes where z > 0 (0 at z = 0, as PyTorch),
    that is where a > 0: backward needs only the output. With ``inplace``, a is written
    over z's array."""

    inplace = False

    def forward(self, z):
        self.a = chain_into(_relu_into, [z], out=z if self.inplace else None)
        return self.a

    def backward(self, dy):
        return (chain_into(_relu_grad, [dy, self.a]),)

    def backward_graph(self, dy):
        return (dy * (self.a > 0),)


def select(mask, a, b, dtype, out=None):
    """where(mask, a, b) as an array of ``dtype`` (into ``out``), for finite a and b (numbers,
    one value per channel, or arrays): a m + b (1 - m) with m the mask as 0 and 1, which is
    exactly a or b. NumPy runs ``where`` with a branch per value, about 5 ns each against
    0.2 for an add."""
    xp = backend.xp
    if out is None:
        out = xp.empty(mask.shape, dtype=dtype)
    out[...] = mask
    if a == 1 and isinstance(b, (int, float)) and 0 <= b <= 1:
        return with_scalar(xp.maximum, out, b, out=out)     # max(m, b), with no temporary
    rest = xp.asarray(xp.subtract(1, out))      # an array even for a 0-d mask
    if isinstance(b, (int, float)):
        rest *= b
    else:
        per_channel(xp.multiply, rest, b, rest)
    if a != 1:
        out *= a
    out += rest
    return out


class LeakyReLU(Function):
    """a = z for z > 0, alpha z otherwise: max(z, alpha z) for 0 <= alpha <= 1, else
    max(z, 0) + alpha min(z, 0) (the same values, without a select)."""

    def forward(self, z):
        self.mask = backend.xp.empty(z.shape, dtype=bool)
        return chain_into(self._forward, [z, self.mask])

    def _forward(self, z, mask, out):
        xp = backend.xp
        xp.greater(z, 0, out=mask)
        if 0 <= self.alpha <= 1:
            xp.multiply(z, self.alpha, out=out)
            xp.maximum(z, out, out=out)
            return
        with_scalar(xp.maximum, z, 0, out=out)
        negative = with_scalar(xp.minimum, z, 0)
        negative *= self.alpha
        out += negative

    def backward(self, dy):
        return (chain_into(self._backward, [dy, self.mask]),)

    def _backward(self, dy, mask, out):
        select(mask, 1, self.alpha, dy.dtype, out=out)
        out *= dy

    def backward_graph(self, dy):
        return (dy * select(self.mask, 1, self.alpha, dy.dtype),)


def expm1_nonpositive(z, out=None):
    """e^z - 1 for z <= 0 as 2 t / (1 - t) with t = tanh(z / 2), into ``out`` (which may be
    z itself).

    The identity follows from e^z = (1 + t) / (1 - t). For z <= 0, 1 - t is in [1, 2] and
    nothing cancels: the result is within 3 ulp of e^z - 1, small |z| included (where
    exp(z) - 1 would lose every digit), for one tanh, about a third of the time of NumPy's
    expm1 on an AVX2 machine. (For large positive z, 1 - t cancels: not for those.)"""
    xp = backend.xp
    out = xp.multiply(z, z.dtype.type(0.5), out=out)
    xp.tanh(out, out=out)
    denominator = xp.subtract(1, out)
    out *= 2
    out /= denominator
    return out


class ELU(Function):
    """a = scale z for z > 0, scale alpha (e^z - 1) otherwise (SELU: fixed alpha and scale).

    da/dz = scale for z > 0 and scale alpha e^z = a + scale alpha otherwise, taken from the
    result (as PyTorch's in-place ELU does): e^z - 1 is the one transcendental computed."""

    def forward(self, z):
        self.slope = backend.xp.empty(z.shape, dtype=z.dtype)
        return chain_into(self._forward, [z, self.slope], 2 * TRANSCENDENTAL_COST)

    def _forward(self, z, slope, out):
        xp = backend.xp
        negative = with_scalar(xp.minimum, z, 0)
        expm1_nonpositive(negative, out=negative)
        negative *= self.scale * self.alpha      # the z <= 0 term, 0 for z > 0
        with_scalar(xp.maximum, z, 0, out=out)
        if self.scale != 1:
            out *= self.scale
        out += negative
        negative += self.scale * self.alpha      # scale alpha e^z
        select(z > 0, self.scale, negative, z.dtype, out=slope)

    def backward(self, dy):
        return (dy * self.slope,)

    def backward_graph(self, dy):
        # for z <= 0 the slope is scale alpha e^z = a + scale alpha, a the output as a tensor
        # (its value taken from the slope; where z > 0 it is not used)
        shift = self.scale * self.alpha
        a = self.recorded_output(self.slope - self.slope.dtype.type(shift))
        return (dy * where(self.inputs[0].data > 0, self.scale, a + shift),)


class Softmax(Function):
    """a_i = e^(z_i) / sum_j e^(z_j); dJ/dz_i = a_i (dJ/da_i - sum_j dJ/da_j a_j)."""

    def forward(self, z):
        if z.size == 0:                  # an empty input (along the axis or not) has an empty result
            self.a = backend.xp.empty_like(z)
            return self.a
        e = backend.xp.exp(z - z.max(axis=self.axis, keepdims=True))
        self.a = e / e.sum(axis=self.axis, keepdims=True)
        return self.a

    def backward(self, dy):
        a = self.a
        return (a * (dy - (dy * a).sum(axis=self.axis, keepdims=True)),)

    def backward_graph(self, dy):
        a = self.recorded_output(self.a)
        return (a * (dy - (dy * a).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """log a_i = z_i - log sum_j e^(z_j); dJ/dz = dJ/dy - a sum_j dJ/dy_j."""

    def forward(self, z):
        xp = backend.xp
        if z.size == 0:                  # an empty input (along the axis or not) has an empty result
            self.y = xp.empty_like(z)
            return self.y
        shifted = z - z.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, dy):
        return (dy - backend.xp.exp(self.y) * dy.sum(axis=self.axis, keepdims=True),)

    def backward_graph(self, dy):
        a = self.recorded_output(self.y).exp()
        return (dy - a * dy.sum(axis=self.axis, keepdims=True),)


def sigmoid(z) -> Tensor:
    return Sigmoid.apply(z)


def tanh(z) -> Tensor:
    return Tanh.apply(z)


def relu(z) -> Tensor:
    return ReLU.apply(z)


def overwriting(activation):
    """The form of ``activation`` (relu or tanh) that writes its result over its input's
    array, or None. Only for an input that nothing else will read, such as a layer's fresh
    pre-activation: the graph then holds one array there instead of two, and the pass
    writes no new memory."""
    return _OVERWRITING.get(activation)


def leaky_relu(z, alpha: float = 0.01) -> Tensor:
    return LeakyReLU.apply(z, alpha=alpha)


def elu(z, alpha: float = 1.0) -> Tensor:
    return ELU.apply(z, alpha=alpha, scale=1.0)


def selu(z) -> Tensor:
    return ELU.apply(z, alpha=SELU_ALPHA, scale=SELU_SCALE)


def softmax(z, axis: int = -1) -> Tensor:
    return Softmax.apply(z, axis=axis)


def log_softmax(z, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(z, axis=axis)


_OVERWRITING = {relu: lambda z: ReLU.apply(z, inplace=True), tanh: lambda z: Tanh.apply(z, inplace=True)}
