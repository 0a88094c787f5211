"""Complex numbers as (..., 2) pairs of real tensors, with gradients.

lamina has no complex dtype: a complex tensor of shape (...) is stored as a real tensor of
shape (..., 2), [..., 0] the real and [..., 1] the imaginary part, the layout of
``torch.view_as_real``. Gradients are those of a real loss of both parts, torch's convention
seen through ``view_as_real``. Every helper here is built from differentiable ops, so second
derivatives come too.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import broadcast_to, cos, sin, stack
from lamina.functional.math_more import atan2
from lamina.functional.spectral import magnitude

__all__ = [
    "abs", "angle", "check_complex", "complex", "conj", "from_real", "imag", "mul", "polar", "real",
    "view_as_complex", "view_as_real",
]


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(x, None)


def check_complex(z, op: str) -> Tensor:
    """``z`` as a tensor, checked to be a complex tensor in the (..., 2) layout with at least
    one complex axis; the errors name ``op`` and the shape."""
    z = _tensor(z)
    if z.ndim < 2 or z.shape[-1] != 2:
        raise ShapeError(f"{op}: expected a complex tensor stored as (..., 2) real and imaginary parts with at "
                         f"least one complex axis, got shape {z.shape}; build one with lamina.fft.complex(re, im) "
                         "or lamina.fft.from_real(x)")
    if z.dtype.kind != "f":
        raise TypeError(f"{op}: expected float16, float32 or float64 real and imaginary parts, got dtype {z.dtype} "
                        f"(shape {z.shape})")
    return z


def _check_pair(z, op: str) -> Tensor:
    """Like :func:`check_complex`, but a single complex number (shape (2,)) is allowed."""
    z = _tensor(z)
    if z.ndim < 1 or z.shape[-1] != 2:
        raise ShapeError(f"{op}: expected a complex tensor stored as (..., 2) real and imaginary parts, "
                         f"got shape {z.shape}")
    return z


def real(z) -> Tensor:
    """Re z: (..., 2) -> (...)."""
    return _check_pair(z, "real")[..., 0]


def imag(z) -> Tensor:
    """Im z: (..., 2) -> (...)."""
    return _check_pair(z, "imag")[..., 1]


def complex(real, imag) -> Tensor:  # noqa: A001 - torch.complex's name
    """real + i imag from two real tensors (broadcast together, as ``torch.complex``): (..., 2)."""
    real, imag = _tensor(real), _tensor(imag)
    if real.dtype != imag.dtype:
        raise TypeError(f"complex: real and imag must have the same dtype, got {real.dtype} and {imag.dtype}")
    try:
        shape = np.broadcast_shapes(real.shape, imag.shape)
    except ValueError:
        raise ShapeError(f"complex: real of shape {real.shape} and imag of shape {imag.shape} do not "
                         "broadcast together") from None
    if real.shape != shape:
        real = broadcast_to(real, shape)
    if imag.shape != shape:
        imag = broadcast_to(imag, shape)
    return stack([real, imag], axis=-1)


def from_real(x) -> Tensor:
    """x + 0i: a real tensor (...) as a complex tensor (..., 2), to feed the complex transforms
    (``fft(from_real(x))`` is torch's ``fft(x)`` on a real x)."""
    x = _tensor(x)
    zeros = Tensor._wrap(backend.xp.zeros(x.shape, dtype=x.dtype))
    return stack([x, zeros], axis=-1)


def abs(z) -> Tensor:  # noqa: A001 - torch.abs's name
    """|z| = sqrt(Re z^2 + Im z^2): (..., 2) -> (...); the gradient at z = 0 is 0, as torch's."""
    return magnitude(_check_pair(z, "abs"))


def angle(z) -> Tensor:
    """arg z = atan2(Im z, Re z) in (-pi, pi]: (..., 2) -> (...)."""
    z = _check_pair(z, "angle")
    return atan2(z[..., 1], z[..., 0])


def conj(z) -> Tensor:
    """Re z - i Im z."""
    z = _check_pair(z, "conj")
    return z * backend.xp.asarray([1.0, -1.0], dtype=z.dtype)


def mul(a, b) -> Tensor:
    """The complex product a b = (ar br - ai bi) + i (ar bi + ai br) of two (..., 2) tensors,
    broadcast over the leading axes."""
    a, b = _check_pair(a, "mul"), _check_pair(b, "mul")
    ar, ai, br, bi = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    return stack([ar * br - ai * bi, ar * bi + ai * br], axis=-1)


def polar(abs, angle) -> Tensor:  # noqa: A002 - torch.polar's argument names
    """abs (cos angle + i sin angle) from two real tensors, as ``torch.polar``."""
    radius, phase = _tensor(abs), _tensor(angle)
    return complex(radius * cos(phase), radius * sin(phase))


def view_as_real(z) -> Tensor:
    """The (..., 2) real view of a complex tensor: in this layout the tensor itself (checked)."""
    return _check_pair(z, "view_as_real")


def view_as_complex(x) -> Tensor:
    """A real (..., 2) tensor read as complex: in this layout the tensor itself (checked)."""
    return _check_pair(x, "view_as_complex")
