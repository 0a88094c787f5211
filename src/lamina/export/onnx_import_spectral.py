"""ONNX's DFT (:mod:`lamina.export.onnx_import`) by :mod:`lamina.fft`, so that lamina's
spectral layers exported to ONNX (:mod:`lamina.export.onnx_spectral`) load back.

ONNX and lamina hold a complex signal alike, as a real tensor whose last axis of size 2 is
the real and the imaginary part; a real signal has a last axis of size 1. Along ``axis``,
cut or zero-extended to ``dft_length`` n first:

    forward  y[k] = sum_t x[t] exp(-2 pi i k t / n)
    inverse  x[t] = 1/n sum_k y[k] exp(+2 pi i k t / n)

``onesided=1`` keeps the n // 2 + 1 non-negative frequencies of a real input (forward, rfft),
or reads such a half spectrum and returns the real signal (inverse, irfft). In opset 20
the axis is the third input (default -2) instead of an attribute (default 1).
"""

from __future__ import annotations

from lamina import fft
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.export.onnx_import_values import Node, ints, register_onnx_op


@register_onnx_op("DFT")
def _dft(node: Node, x, length=None, axis=None):
    """The (inverse) discrete Fourier transform along axis, as the module docstring says."""
    parts = x.shape[-1]
    if x.ndim < 2 or parts not in (1, 2):
        raise ShapeError(f"{node.where()}: expected an input of shape (..., 1) (real) or (..., 2) (complex), "
                         f"got shape {tuple(x.shape)}")
    if node.opset >= 20:
        dim = ints(axis)[0] if axis is not None else -2
    else:
        dim = node.attr("axis", 1)
    if not -x.ndim <= dim < x.ndim - 1:
        raise ValueError(f"{node.where()}: axis {dim} is out of range for an input of shape {tuple(x.shape)} "
                         "(the last axis holds the complex parts)")
    dim %= x.ndim
    n = ints(length)[0] if length is not None else None
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    if onesided and inverse:
        if parts != 2:
            raise ShapeError(f"{node.where()}: an inverse one-sided DFT reads a complex half spectrum (..., 2), "
                             f"got shape {tuple(x.shape)}")
        signal = fft.irfft(x, n=n, dim=dim)
        return F.reshape(signal, (*signal.shape, 1))
    if parts == 1:
        real = F.reshape(x, tuple(x.shape[:-1]))
        if onesided:
            return fft.rfft(real, n=n, dim=dim)
        x = fft.from_real(real)
    elif onesided:
        raise ShapeError(f"{node.where()}: a forward one-sided DFT reads a real input (..., 1), got shape "
                         f"{tuple(x.shape)}")
    return fft.ifft(x, n=n, dim=dim) if inverse else fft.fft(x, n=n, dim=dim)
