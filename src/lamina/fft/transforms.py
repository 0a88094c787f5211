"""Discrete Fourier transforms with gradients, with ``torch.fft``'s names and arguments.

A complex tensor is a real tensor whose last axis of size 2 holds the real and the imaginary
part (``torch.view_as_real``'s layout); ``dim`` counts the complex axes only. Over the
transformed axes (sizes n_1 .. n_d, N = n_1 ... n_d) the forward transform is

    X[k] = c sum_t x[t] exp(-2 pi i sum_j k_j t_j / n_j),   c = 1, N^-1/2, 1/N

for ``norm`` = "backward" (the default), "ortho", "forward"; the inverse has exp(+...) and
c = 1/N, N^-1/2, 1. ``n`` / ``s`` cut each axis or zero-extend it at the end first.

Every transform is linear, and its gradient (for a real loss of the real and imaginary
parts, torch's convention) is the adjoint map: the adjoint of a DFT is the inverse DFT with
the scale of the other norm ("backward" <-> "forward"), and the adjoint of the cut or
zero-extension is the zero-extension or cut back to the input's size. The real transforms
(rfft keeps the n // 2 + 1 non-negative frequencies of the last axis; irfft reads them as the
half of a Hermitian spectrum) need the half-spectrum weights of :func:`_bin_weights`. The
second derivatives are the same linear maps again.

SciPy has no half-precision FFT: float16 inputs (what the products return inside
``amp.autocast()``) are transformed in float32 and give float32 results, as torch's CPU autocast
runs its FFTs; the gradient reaching a float16 input is cast back to float16.
"""

from __future__ import annotations

import numbers

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.fft.pairs import check_complex, conj

__all__ = [
    "fft", "fft2", "fftn", "hfft", "hfft2", "hfftn", "ifft", "ifft2", "ifftn", "ihfft", "ihfft2", "ihfftn",
    "irfft", "irfft2", "irfftn", "rfft", "rfft2", "rfftn",
]

NORMS = ("backward", "ortho", "forward")
_ADJOINT_NORM = {"backward": "forward", "ortho": "ortho", "forward": "backward"}


def _fft_module():
    """SciPy's FFT module, or CuPy's on CuPy arrays."""
    if backend.xp.__name__ != "numpy":  # pragma: no cover - depends on the machine
        import cupyx.scipy.fft

        return cupyx.scipy.fft
    import scipy.fft

    return scipy.fft


def _threads() -> dict:
    """SciPy's ``workers`` option: lamina's thread count (CuPy's FFTs take none)."""
    return {"workers": parallel.get_num_threads()} if backend.xp.__name__ == "numpy" else {}


# -- array helpers ----------------------------------------------------------------------------


def _to_complex(pair):
    """(..., 2) real array -> complex array (...), a view where the memory allows."""
    xp = backend.xp
    complex_dtype = xp.complex64 if pair.dtype == xp.float32 else xp.complex128
    return xp.ascontiguousarray(pair).view(complex_dtype)[..., 0]


def _to_pair(z, dtype):
    """complex array (...) -> (..., 2) real array of ``dtype``."""
    xp = backend.xp
    complex_dtype = xp.complex64 if dtype == xp.float32 else xp.complex128
    z = xp.ascontiguousarray(z, dtype=complex_dtype)
    return z.view(dtype).reshape(z.shape + (2,))


def _fit(a, axes, sizes):
    """``a`` cut, or zero-extended at the end, along each of ``axes`` to ``sizes``."""
    index, padding = [slice(None)] * a.ndim, [(0, 0)] * a.ndim
    for axis, size in zip(axes, sizes):
        if size < a.shape[axis]:
            index[axis] = slice(0, size)
        elif size > a.shape[axis]:
            padding[axis] = (0, size - a.shape[axis])
    a = a[tuple(index)]
    return backend.xp.pad(a, padding) if any(after for _, after in padding) else a


def _bin_weights(n: int, axis: int, ndim: int, dtype, reciprocal: bool = False):
    """How often irfft counts each of the n // 2 + 1 stored bins of a length-n axis in the
    Hermitian spectrum it sums over: once for the zero frequency and (n even) the Nyquist
    bin, twice for the others (the bin and its mirror), shaped to broadcast along ``axis``;
    with ``reciprocal`` their inverses (a product is cheaper than a complex division)."""
    xp = backend.xp
    w = xp.full(n // 2 + 1, 0.5 if reciprocal else 2.0, dtype=dtype)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w.reshape((-1,) + (1,) * (ndim - axis - 1))


# -- the three linear maps --------------------------------------------------------------------


class FFTN(Function):
    """Complex -> complex DFT (``inverse``: the inverse DFT) over ``axes`` with output ``sizes``.
    Backward: the opposite-direction DFT with the adjoint norm, fitted back to the input."""

    def forward(self, z):
        fft = _fft_module()
        self.in_sizes = tuple(z.shape[a] for a in self.axes)
        transform = fft.ifftn if self.inverse else fft.fftn
        out = transform(_to_complex(z), s=self.sizes, axes=self.axes, norm=self.norm, **_threads())
        return _to_pair(out, z.dtype)

    def backward(self, dy):
        fft = _fft_module()
        adjoint = fft.fftn if self.inverse else fft.ifftn
        g = adjoint(_to_complex(dy), axes=self.axes, norm=_ADJOINT_NORM[self.norm], **_threads())
        return (_to_pair(_fit(g, self.axes, self.in_sizes), dy.dtype),)

    backward_graph = Function.linear_backward_graph


class RFFTN(Function):
    """Real -> half spectrum over ``axes`` (the last one keeps sizes[-1] // 2 + 1 bins).

    Backward: dJ/dx = Re sum over the kept bins of G[k] exp(+2 pi i k.t / n) (times the
    adjoint norm's scale), an irfftn of G divided by the bin weights (irfftn counts every bin
    but the zero and Nyquist ones twice, through its mirror), fitted back to the input."""

    def forward(self, x):
        fft = _fft_module()
        self.in_sizes = tuple(x.shape[a] for a in self.axes)
        return _to_pair(fft.rfftn(x, s=self.sizes, axes=self.axes, norm=self.norm, **_threads()), x.dtype)

    def backward(self, dy):
        fft = _fft_module()
        g = _to_complex(dy)
        g = g * _bin_weights(self.sizes[-1], self.axes[-1], g.ndim, dy.dtype, reciprocal=True)
        x = fft.irfftn(g, s=self.sizes, axes=self.axes, norm=_ADJOINT_NORM[self.norm], **_threads())
        return (backend.xp.ascontiguousarray(_fit(x, self.axes, self.in_sizes), dtype=dy.dtype),)

    backward_graph = Function.linear_backward_graph


class IRFFTN(Function):
    """Half spectrum -> real signal of ``sizes`` over ``axes``: the input is first cut or
    zero-extended to sizes (the last axis to sizes[-1] // 2 + 1 bins), then read as the half
    of a Hermitian spectrum (the imaginary parts of the zero and Nyquist bins of the last axis
    drop out), so x[t] = c Re sum_k w[k] Z[k] exp(+2 pi i k.t / n) with w the bin weights.

    Backward: dJ/dZ[k] = c w[k] sum_t dJ/dx[t] exp(-2 pi i k.t / n), an rfftn with the adjoint
    norm times the weights, fitted back to the input."""

    def forward(self, z):
        fft = _fft_module()
        self.in_sizes = tuple(z.shape[a] for a in self.axes)
        out = fft.irfftn(_to_complex(z), s=self.sizes, axes=self.axes, norm=self.norm, **_threads())
        return backend.xp.asarray(out, dtype=z.dtype)

    def backward(self, dy):
        fft = _fft_module()
        g = fft.rfftn(dy, axes=self.axes, norm=_ADJOINT_NORM[self.norm], **_threads())
        g *= _bin_weights(self.sizes[-1], self.axes[-1], g.ndim, dy.dtype)
        return (_to_pair(_fit(g, self.axes, self.in_sizes), dy.dtype),)

    backward_graph = Function.linear_backward_graph


# -- argument checks --------------------------------------------------------------------------


def _check_norm(norm, op: str, shape: tuple) -> str:
    if norm is None:
        return "backward"
    if norm not in NORMS:
        raise ValueError(f"{op}: norm must be one of {NORMS} or None, got {norm!r} (input shape {shape})")
    return norm


def _working_precision(x: Tensor, op: str) -> Tensor:
    """``x`` in the precision its transform runs in: float16 goes up to float32 (on the graph)."""
    name = x.dtype.name
    if name == "float16":
        return cast(x, backend.xp.float32)
    if name not in ("float32", "float64"):
        raise TypeError(f"{op}: expected a float16, float32 or float64 tensor, got dtype {x.dtype} "
                        f"(shape {x.shape})")
    return x


def _real_input(x, op: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    if x.ndim < 1:
        raise ShapeError(f"{op}: expected a real tensor with at least one axis, got shape {x.shape}")
    return _working_precision(x, op)


def _complex_input(z, op: str) -> Tensor:
    return _working_precision(check_complex(z, op), op)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _size_list(s, op: str):
    """``s`` as a tuple of sizes (an int: one size), or None."""
    if s is None:
        return None
    if _is_int(s):
        return (s,)
    if not isinstance(s, (tuple, list)):
        raise TypeError(f"{op}: s must be an int or a sequence of ints, got {s!r}")
    return tuple(s)


def _axes(shape: tuple, dim, s, op: str, allow_none: bool = False) -> tuple[int, ...]:
    """The transformed axes (non-negative) of an array of ``shape``: ``dim``, else the last
    len(s) axes when ``s`` is given, else all; an empty tuple only when ``allow_none``."""
    ndim = len(shape)
    if dim is None:
        if s is not None:
            if len(s) > ndim:
                raise ShapeError(f"{op}: s={tuple(s)} has more sizes than the {ndim} axes of shape {shape}")
            return tuple(range(ndim - len(s), ndim))
        dim = tuple(range(ndim))
    dims = (dim,) if _is_int(dim) else tuple(dim)
    axes = []
    for d in dims:
        if not _is_int(d) or not -ndim <= d < ndim:
            raise ShapeError(f"{op}: dim {dim!r} is out of range for the {ndim} axes of shape {shape}")
        axes.append(int(d) % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: dim {dim!r} names an axis twice")
    if not axes and not allow_none:
        raise ValueError(f"{op}: expected at least one axis to transform, got dim {dim!r} and s {s!r}")
    return tuple(axes)


def _sizes(shape: tuple, axes: tuple, s, op: str, last_default: int | None = None) -> tuple[int, ...]:
    """The transform size along each axis: ``s`` (-1: the default), else the input's size
    (``last_default`` for the last axis when given: 2 (m - 1) for the inverse real transforms)."""
    defaults = [shape[a] for a in axes]
    if last_default is not None:
        defaults[-1] = last_default
    if s is None:
        s = [-1] * len(axes)
    if len(s) != len(axes):
        raise ValueError(f"{op}: s={tuple(s)} must give one size per transformed axis {axes} (shape {shape})")
    sizes = []
    for k, (given, default) in enumerate(zip(s, defaults)):
        if not _is_int(given) or (given < 1 and given != -1):
            raise ValueError(f"{op}: sizes must be ints >= 1 (or -1 for the default), got s={tuple(s)} "
                             f"for shape {shape}")
        size = default if given == -1 else int(given)
        if size < 1:
            halved = last_default is not None and k == len(axes) - 1
            raise ValueError(_empty_axis_message(op, shape, axes[k], size, halved))
        sizes.append(size)
    return tuple(sizes)


def _empty_axis_message(op: str, shape: tuple, axis: int, size: int, halved: bool) -> str:
    if halved:
        return (f"{op}: the default output size 2 (m - 1) = {size} of axis {axis} is < 1 for the complex input "
                f"of shape {shape}; give n or s")
    return (f"{op}: axis {axis} of the input of shape {shape} has no points to transform; give n or s to "
            "zero-extend it")


def _one_dim(n, dim, op: str):
    """``n`` and ``dim`` of the 1-D functions as ``s`` and ``dim`` of the n-D ones."""
    if not _is_int(dim):
        raise ValueError(f"{op}: dim must be an int, got {dim!r}")
    return (None if n is None else (n,)), dim


def _complex_shape(z: Tensor) -> tuple:
    return tuple(z.shape[:-1])


# -- complex -> complex -----------------------------------------------------------------------


def _c2c(z, s, dim, norm, inverse: bool, op: str) -> Tensor:
    z, s = _complex_input(z, op), _size_list(s, op)
    shape = _complex_shape(z)
    axes = _axes(shape, dim, s, op, allow_none=True)
    norm = _check_norm(norm, op, z.shape)
    if not axes:  # dim=() transforms nothing, as in torch
        return z
    sizes = _sizes(shape, axes, s, op)
    return FFTN.apply(z, axes=axes, sizes=sizes, norm=norm, inverse=inverse)


def fft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """1-D DFT of the complex tensor ``x`` (..., 2) along complex axis ``dim``, cut or
    zero-extended to ``n`` points first: X[k] = c sum_t x[t] exp(-2 pi i k t / n)."""
    s, dim = _one_dim(n, dim, "fft")
    return _c2c(x, s, dim, norm, False, "fft")


def ifft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """1-D inverse DFT of a complex tensor (..., 2): x[t] = c sum_k X[k] exp(+2 pi i k t / n)."""
    s, dim = _one_dim(n, dim, "ifft")
    return _c2c(x, s, dim, norm, True, "ifft")


def fft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """2-D DFT of a complex tensor (..., 2) over complex axes ``dim`` (the last two)."""
    return _c2c(x, s, dim, norm, False, "fft2")


def ifft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """2-D inverse DFT of a complex tensor (..., 2) over complex axes ``dim``."""
    return _c2c(x, s, dim, norm, True, "ifft2")


def fftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """N-D DFT of a complex tensor (..., 2) over complex axes ``dim`` (default: the last
    len(s) axes when ``s`` is given, else every complex axis; ``dim=()`` returns x). ``s`` and
    ``dim`` may be single ints."""
    return _c2c(x, s, dim, norm, False, "fftn")


def ifftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """N-D inverse DFT of a complex tensor (..., 2), axes chosen as :func:`fftn`'s."""
    return _c2c(x, s, dim, norm, True, "ifftn")


# -- real <-> half spectrum -------------------------------------------------------------------


def _r2c(x, s, dim, norm, op: str) -> Tensor:
    x, s = _real_input(x, op), _size_list(s, op)
    axes = _axes(tuple(x.shape), dim, s, op)
    sizes = _sizes(tuple(x.shape), axes, s, op)
    return RFFTN.apply(x, axes=axes, sizes=sizes, norm=_check_norm(norm, op, x.shape))


def _c2r(z, s, dim, norm, op: str) -> Tensor:
    z, s = _complex_input(z, op), _size_list(s, op)
    shape = _complex_shape(z)
    axes = _axes(shape, dim, s, op)
    sizes = _sizes(shape, axes, s, op, last_default=2 * (shape[axes[-1]] - 1))
    return IRFFTN.apply(z, axes=axes, sizes=sizes, norm=_check_norm(norm, op, z.shape))


def rfft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """1-D DFT of a real tensor along ``dim``: the n // 2 + 1 non-negative frequencies, as a
    complex tensor (..., n // 2 + 1, ..., 2)."""
    s, dim = _one_dim(n, dim, "rfft")
    return _r2c(x, s, dim, norm, "rfft")


def irfft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """Inverse of :func:`rfft`: the half spectrum (..., m, ..., 2) along complex axis ``dim`` ->
    the real signal of n points (default 2 (m - 1)), read as a Hermitian spectrum."""
    s, dim = _one_dim(n, dim, "irfft")
    return _c2r(x, s, dim, norm, "irfft")


def rfft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """2-D DFT of a real tensor; the last axis of ``dim`` keeps its non-negative frequencies."""
    return _r2c(x, s, dim, norm, "rfft2")


def irfft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """Inverse of :func:`rfft2`: a half spectrum (..., 2) -> real signal of sizes ``s``."""
    return _c2r(x, s, dim, norm, "irfft2")


def rfftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """N-D DFT of a real tensor; the last axis of ``dim`` keeps its non-negative frequencies."""
    return _r2c(x, s, dim, norm, "rfftn")


def irfftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """Inverse of :func:`rfftn`: a half spectrum (..., 2) -> real signal of sizes ``s`` (the
    last one 2 (m - 1) by default)."""
    return _c2r(x, s, dim, norm, "irfftn")


# -- Hermitian signals: hfft(z) = irfft(conj z) and ihfft(x) = conj(rfft x), norms swapped ----


def _hermitian_to_real(z, s, dim, norm, op: str) -> Tensor:
    z = _complex_input(z, op)
    return _c2r(conj(z), s, dim, _ADJOINT_NORM[_check_norm(norm, op, z.shape)], op)


def _real_to_hermitian(x, s, dim, norm, op: str) -> Tensor:
    x = _real_input(x, op)
    return conj(_r2c(x, s, dim, _ADJOINT_NORM[_check_norm(norm, op, x.shape)], op))


def hfft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """DFT of a signal whose first half ``x`` (..., m, ..., 2) is given and whose other half
    is its Hermitian mirror: a real result of n points (default 2 (m - 1))."""
    s, dim = _one_dim(n, dim, "hfft")
    return _hermitian_to_real(x, s, dim, norm, "hfft")


def ihfft(x, n: int | None = None, dim: int = -1, norm: str | None = None) -> Tensor:
    """Inverse of :func:`hfft`: a real signal -> the n // 2 + 1 first points of its inverse DFT."""
    s, dim = _one_dim(n, dim, "ihfft")
    return _real_to_hermitian(x, s, dim, norm, "ihfft")


def hfft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """2-D :func:`hfftn`."""
    return _hermitian_to_real(x, s, dim, norm, "hfft2")


def ihfft2(x, s=None, dim=(-2, -1), norm: str | None = None) -> Tensor:
    """2-D :func:`ihfftn`."""
    return _real_to_hermitian(x, s, dim, norm, "ihfft2")


def hfftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """N-D DFT of a Hermitian signal given by its half (the last axis of ``dim`` halved), a real
    result: irfftn of its conjugate, with the scales of "backward" and "forward" exchanged."""
    return _hermitian_to_real(x, s, dim, norm, "hfftn")


def ihfftn(x, s=None, dim=None, norm: str | None = None) -> Tensor:
    """N-D inverse of :func:`hfftn` on a real tensor: conj(rfftn(x)) with the scales of
    "backward" and "forward" exchanged."""
    return _real_to_hermitian(x, s, dim, norm, "ihfftn")
