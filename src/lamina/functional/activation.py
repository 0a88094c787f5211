"""Activation functions (course notes, activation functions), each with its local gradient.

All are computed in forms that stay finite for |z| up to 1e4 in float32: sigmoid from
exp(-|z|), softmax and log-softmax after subtracting the row maximum.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


TRANSCENDENTAL_COST = 4
"""tanh and exp cost about four plain passes per element: worth lamina's threads
(:func:`lamina.parallel.elementwise`)."""


def _sigmoid_into(z, out):
    xp = backend.xp
    e = xp.exp(-xp.abs(z))
    out[...] = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


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
        self.a = backend.xp.maximum(z, 0)
        return self.a

    def backward(self, dy):
        return (dy * (self.a > 0),)


class LeakyReLU(Function):
    """a = z for z > 0, alpha z otherwise."""

    def forward(self, z):
        self.mask = z > 0
        return backend.xp.where(self.mask, z, self.alpha * z)

    def backward(self, dy):
        return (backend.xp.where(self.mask, dy, self.alpha * dy),)


class ELU(Function):
    """a = scale z for z > 0, scale alpha (e^z - 1) otherwise (SELU: fixed alpha and scale)."""

    def forward(self, z):
        xp = backend.xp
        self.mask = z > 0
        negative = xp.minimum(z, 0)
        self.neg = self.scale * self.alpha * xp.exp(negative)  # d/dz of the negative branch
        return xp.where(self.mask, self.scale * z, self.scale * self.alpha * xp.expm1(negative))

    def backward(self, dy):
        return (backend.xp.where(self.mask, self.scale * dy, dy * self.neg),)


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
