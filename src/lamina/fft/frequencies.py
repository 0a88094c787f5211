"""The frequencies of DFT bins and the shifts that put the zero frequency in the middle."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.fft.transforms import _is_int
from lamina.functional import roll

__all__ = ["fftfreq", "fftshift", "ifftshift", "rfftfreq"]


def _check_length(n, d, op: str) -> int:
    if not _is_int(n) or n < 0:
        raise ValueError(f"{op}: n must be an int >= 0, got {n!r}")
    if d == 0:
        raise ValueError(f"{op}: the sample spacing d must be non-zero, got {d!r}")
    return int(n)


def _constant(values, dtype) -> Tensor:
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(backend.xp.asarray(values, dtype=dtype))


def fftfreq(n: int, d: float = 1.0, dtype=None) -> Tensor:
    """The frequency of each bin of an n-point DFT with sample spacing ``d``, as
    ``torch.fft.fftfreq``: [0, 1, ..., (n - 1) // 2, -(n // 2), ..., -1] / (d n)."""
    n = _check_length(n, d, "fftfreq")
    return _constant(backend.xp.fft.fftfreq(n, d) if n else [], dtype)


def rfftfreq(n: int, d: float = 1.0, dtype=None) -> Tensor:
    """The frequency of each of the n // 2 + 1 bins :func:`rfft` keeps: [0, 1, ..., n // 2] / (d n)
    (n = 0: one bin, 0 / 0 = NaN, as in torch)."""
    n = _check_length(n, d, "rfftfreq")
    return _constant(backend.xp.fft.rfftfreq(n, d) if n else [float("nan")], dtype)


def _shift_axes(x: Tensor, dim, complex_input: bool, op: str) -> tuple[int, ...]:
    ndim = x.ndim - 1 if complex_input else x.ndim
    if complex_input and (x.ndim < 1 or x.shape[-1] != 2):
        raise ValueError(f"{op}: complex_input=True expects a (..., 2) tensor, got shape {x.shape}")
    dims = range(ndim) if dim is None else (tuple(dim) if isinstance(dim, (tuple, list)) else (dim,))
    axes = []
    for d in dims:
        if not _is_int(d):
            raise ValueError(f"{op}: dim must be an int or a sequence of ints, got {dim!r}")
        if not -ndim <= d < ndim:
            raise ValueError(f"{op}: dim {dim!r} is out of range for {ndim} "
                             f"{'complex ' if complex_input else ''}axes (shape {x.shape})")
        axes.append(int(d) % ndim)
    return tuple(axes)


def _shift(x, dim, complex_input: bool, inverse: bool, op: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    axes = _shift_axes(x, dim, complex_input, op)
    if not axes:
        return x
    shifts = tuple(-(x.shape[a] // 2) if inverse else x.shape[a] // 2 for a in axes)
    return roll(x, shifts, axes)


def fftshift(x, dim=None, *, complex_input: bool = False) -> Tensor:
    """Roll each axis of ``dim`` (default: all) by n // 2, moving the zero frequency of a
    spectrum from the first place to the middle, as ``torch.fft.fftshift``. With
    ``complex_input`` the input is a complex (..., 2) tensor: ``dim`` counts its complex axes and
    the trailing pair axis is never shifted."""
    return _shift(x, dim, complex_input, False, "fftshift")


def ifftshift(x, dim=None, *, complex_input: bool = False) -> Tensor:
    """The inverse of :func:`fftshift` (roll by -(n // 2)); ``complex_input`` as there."""
    return _shift(x, dim, complex_input, True, "ifftshift")
