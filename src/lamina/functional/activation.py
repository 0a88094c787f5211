"""Activation functions (course notes, activation functions), each with its local gradient.

All are computed in forms that stay finite for |z| up to 1e4 in float32: sigmoid from
exp(-|z|), softmax and log-softmax after subtracting the row maximum.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.functional._util import per_channel, with_scalar

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


TRANSCENDENTAL_COST = 4
"""tanh and exp cost about four plain passes per element: worth lamina's threads
(:func:`lamina.parallel.elementwise`)."""


def _sigmoid_into(z, out):
    # sigma(z) = n / (1 + e) with e = exp(-|z|) and n = 1 for z >= 0, e for z < 0; as e <= 1,
    # n = max(e, [z >= 0]): no select, which NumPy runs a branch per value (8x slower here)
    xp = backend.xp
    e = xp.abs(z)
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    xp.greater_equal(z, 0, out=out)
    xp.maximum(e, out, out=out)
    e += 1
    xp.divide(out, e, out=out)


def _tanh_into(z, out):
    backend.xp.tanh(z, out=out)


def stable_sigmoid(z):
    """sigma(z) = 1 / (1 + e^-z), evaluated without overflow for either sign of z."""
    return parallel.elementwise(_sigmoid_into, z, TRANSCENDENTAL_COST)


def tanh_values(z, out=None):
    """tanh z as an array (into ``out``, which may be z itself)."""
    return parallel.elementwise(_tanh_into, z, TRANSCENDENTAL_COST, out)


class Sigmoid(Function):
    """a = sigma(z); da/dz = a (1 - a)."""

    def forward(self, z):
        self.a = stable_sigmoid(z)
        return self.a

    def backward(self, dy):
        a = self.a
        return (dy * a * (1 - a),)


def _tanh_grad(dy, a, out):
    backend.xp.multiply(a, a, out=out)
    backend.xp.subtract(1, out, out=out)
    out *= dy


class Tanh(Function):
    """a = tanh z; da/dz = 1 - a^2."""

    def forward(self, z):
        self.a = tanh_values(z)
        return self.a

    def backward(self, dy):
        grad = backend.xp.empty_like(dy)
        _tanh_grad(dy, self.a, grad)
        return (grad,)


class ReLU(Function):
    """a = max(z, 0); the upstream gradient passes where z > 0 (0 at z = 0, as PyTorch),
    that is where a > 0: backward needs only the output."""

    def forward(self, z):
        self.a = with_scalar(backend.xp.maximum, z, 0)
        return self.a

    def backward(self, dy):
        return (dy * (self.a > 0),)


def select(mask, a, b, dtype):
    """where(mask, a, b) as an array of ``dtype``, for finite a and b (numbers, one value per
    channel, or arrays): a m + b (1 - m) with m the mask as 0 and 1, which is exactly a or b.
    NumPy runs ``where`` with a branch per value, about 5 ns each against 0.2 for an add."""
    xp = backend.xp
    m = mask.astype(dtype)
    rest = xp.subtract(1, m)
    if isinstance(b, (int, float)):
        rest *= b
    else:
        per_channel(xp.multiply, rest, b, rest)
    if a != 1:
        m *= a
    m += rest
    return m


class LeakyReLU(Function):
    """a = z for z > 0, alpha z otherwise: max(z, 0) + alpha min(z, 0), or max(z, alpha z)
    for 0 <= alpha <= 1 (the same values, without a select)."""

    def forward(self, z):
        xp = backend.xp
        self.mask = z > 0
        if 0 <= self.alpha <= 1:
            return xp.maximum(z, self.alpha * z)
        out = with_scalar(xp.maximum, z, 0)
        negative = with_scalar(xp.minimum, z, 0)
        negative *= self.alpha
        out += negative
        return out

    def backward(self, dy):
        return (dy * select(self.mask, 1, self.alpha, dy.dtype),)


class ELU(Function):
    """a = scale z for z > 0, scale alpha (e^z - 1) otherwise (SELU: fixed alpha and scale)."""

    def forward(self, z):
        xp = backend.xp
        negative = with_scalar(xp.minimum, z, 0)
        # da/dz: scale where z > 0, scale alpha e^z elsewhere
        grad_negative = xp.exp(negative)
        grad_negative *= self.scale * self.alpha
        self.slope = select(z > 0, self.scale, grad_negative, z.dtype)
        # a = scale max(z, 0) + scale alpha (e^min(z, 0) - 1): each term is 0 on the other side
        out = xp.expm1(negative, out=negative)
        out *= self.scale * self.alpha
        positive = with_scalar(xp.maximum, z, 0)
        if self.scale != 1:
            positive *= self.scale
        out += positive
        return out

    def backward(self, dy):
        return (dy * self.slope,)


class Softmax(Function):
    """a_i = e^(z_i) / sum_j e^(z_j); dJ/dz_i = a_i (dJ/da_i - sum_j dJ/da_j a_j)."""

    def forward(self, z):
        e = backend.xp.exp(z - z.max(axis=self.axis, keepdims=True))
        self.a = e / e.sum(axis=self.axis, keepdims=True)
        return self.a

    def backward(self, dy):
        a = self.a
        return (a * (dy - (dy * a).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """log a_i = z_i - log sum_j e^(z_j); dJ/dz = dJ/dy - a sum_j dJ/dy_j."""

    def forward(self, z):
        xp = backend.xp
        shifted = z - z.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, dy):
        return (dy - backend.xp.exp(self.y) * dy.sum(axis=self.axis, keepdims=True),)


def sigmoid(z) -> Tensor:
    return Sigmoid.apply(z)


def tanh(z) -> Tensor:
    return Tanh.apply(z)


def relu(z) -> Tensor:
    return ReLU.apply(z)


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
