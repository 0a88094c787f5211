"""Modified Bessel functions of the first kind of orders 0 and 1, I_0 and I_1, and their
exponentially scaled forms i0e(x) = e^(-|x|) I_0(x) and i1e(x) = e^(-|x|) I_1(x) (PyTorch's
``torch.special.i0``, ``i0e``, ``i1``, ``i1e``), each an op with its derivative, itself made
of these ops (so second derivatives exist):

    I_0'(x) = I_1(x),                    I_1'(x) = I_0(x) - I_1(x) / x    (1/2 at x = 0),
    i0e'(x) = i1e(x) - sign(x) i0e(x),   i1e'(x) = i0e(x) - i1e(x) (sign(x) + 1 / x)   (1/2 at 0).

The scaled forms stay finite where I_0 and I_1 overflow (|x| above about 700 in float64, 90
in float32). Values come from SciPy (CuPy's on the GPU) in the input's precision.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional.elementwise import where
from lamina.functional.math_more import sign
from lamina.functional.special import _in_dtype_of, _Unary, scipy_special

__all__ = ["i0", "i0e", "i1", "i1e"]


def _over_x(values, x):
    """values / x, with x = 0 taken as 1 (the callers' limits at 0 replace those entries)."""
    xp = backend.xp
    return values / xp.where(x == 0, xp.ones((), dtype=x.dtype), x)


class I0(_Unary):
    """y = I_0(x); dy/dx = I_1(x)."""

    def value(self, x):
        return scipy_special("i0")(x)

    def slope(self, x, y):
        return _in_dtype_of(scipy_special("i1")(x), x)

    def slope_of(self, x, y):
        return i1(x)


class I0e(_Unary):
    """y = i0e(x) = e^(-|x|) I_0(x); dy/dx = i1e(x) - sign(x) y."""

    def value(self, x):
        return scipy_special("i0e")(x)

    def slope(self, x, y):
        return _in_dtype_of(scipy_special("i1e")(x), x) - backend.xp.sign(x) * y

    def slope_of(self, x, y):
        return i1e(x) - sign(x) * y


class I1(_Unary):
    """y = I_1(x); dy/dx = I_0(x) - y / x, 1/2 at x = 0."""

    def value(self, x):
        return scipy_special("i1")(x)

    def slope(self, x, y):
        slope = _in_dtype_of(scipy_special("i0")(x), x) - _over_x(y, x)
        return backend.xp.where(x == 0, slope.dtype.type(0.5), slope)

    def slope_of(self, x, y):
        at_zero = x.data == 0
        return where(at_zero, 0.5, i0(x) - y / where(at_zero, 1.0, x))


class I1e(_Unary):
    """y = i1e(x) = e^(-|x|) I_1(x); dy/dx = i0e(x) - y (sign(x) + 1 / x), 1/2 at x = 0."""

    def value(self, x):
        return scipy_special("i1e")(x)

    def slope(self, x, y):
        slope = _in_dtype_of(scipy_special("i0e")(x), x) - backend.xp.sign(x) * y - _over_x(y, x)
        return backend.xp.where(x == 0, slope.dtype.type(0.5), slope)

    def slope_of(self, x, y):
        at_zero = x.data == 0
        return where(at_zero, 0.5, i0e(x) - y * sign(x) - y / where(at_zero, 1.0, x))


def i0(x) -> Tensor:
    """I_0(x), the modified Bessel function of the first kind of order 0, element-wise."""
    return I0.apply(x)


def i0e(x) -> Tensor:
    """e^(-|x|) I_0(x), element-wise (finite where I_0 overflows)."""
    return I0e.apply(x)


def i1(x) -> Tensor:
    """I_1(x), the modified Bessel function of the first kind of order 1, element-wise."""
    return I1.apply(x)


def i1e(x) -> Tensor:
    """e^(-|x|) I_1(x), element-wise (finite where I_1 overflows)."""
    return I1e.apply(x)
