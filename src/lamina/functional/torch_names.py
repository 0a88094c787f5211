"""Activations, encodings, distances, 1-D convolution and pooling under PyTorch's names and
signatures (``torch.nn.functional``), each a thin mapping onto lamina's ops.

lamina is channels-last: where PyTorch's argument is the channel axis 1 (``prelu``'s weight,
``conv1d``'s and the 1-D pools' (N, C, L) inputs), lamina's is the LAST axis: sequences are
(N, L, C) and ``conv1d``'s weight is lamina's (K, f, c_in / groups), as :class:`lamina.nn.Conv1D`'s.

The ops whose kernels live with their layers (``linear``, ``dropout``, ``batch_norm``,
``embedding``, ...) are in :mod:`lamina.nn.layer_functions`; :mod:`lamina.nn.functional` holds
both sets.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.activation_extra import hardtanh, log_sigmoid
from lamina.functional.conv import conv2d
from lamina.functional.elementwise import where
from lamina.functional.interpolate import interpolate
from lamina.functional.pooling import avg_pool2d, max_pool2d
from lamina.functional.shape import broadcast_to, reshape, transpose
from lamina.functional.similarity import difference_norm
from lamina.functional.smooth_activation import hard_sigmoid, hard_swish
from lamina.functional.unpool_nd import max_pool1d_with_indices

__all__ = [
    "avg_pool1d", "conv1d", "conv_tbc", "gumbel_softmax", "hardsigmoid", "hardswish", "logsigmoid", "max_pool1d",
    "one_hot", "pdist", "prelu", "relu6", "upsample", "upsample_bilinear", "upsample_nearest",
]


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# -- activations ---------------------------------------------------------------------------


def relu6(input) -> Tensor:  # noqa: A002
    """min(max(x, 0), 6): :func:`lamina.functional.hardtanh` with bounds 0 and 6."""
    return hardtanh(input, 0.0, 6.0)


def hardswish(input) -> Tensor:  # noqa: A002
    """x relu6(x + 3) / 6 (:func:`lamina.functional.hard_swish`)."""
    return hard_swish(input)


def hardsigmoid(input) -> Tensor:  # noqa: A002
    """relu6(x + 3) / 6 (:func:`lamina.functional.hard_sigmoid`)."""
    return hard_sigmoid(input)


def logsigmoid(input) -> Tensor:  # noqa: A002
    """log sigma(x) (:func:`lamina.functional.log_sigmoid`)."""
    return log_sigmoid(input)


def prelu(input, weight) -> Tensor:  # noqa: A002
    """x where x > 0, else a x, with ``weight`` a one slope per channel (the LAST axis; PyTorch's
    axis 1) or a single slope: where(x > 0, x, a x)."""
    x, a = _tensor(input), _tensor(weight)
    if a.ndim != 1 or a.shape[0] not in (1, x.shape[-1] if x.ndim else 1):
        raise ShapeError(f"prelu: weight must have shape (1,) or (C,) with C = {x.shape[-1] if x.ndim else 1} "
                         f"channels (the last axis of the input of shape {x.shape}), got shape {a.shape}")
    return where(x.data > 0, x, x * a)


def gumbel_softmax(logits, tau: float = 1.0, hard: bool = False, eps: float = 1e-10, dim: int = -1) -> Tensor:
    """A differentiable sample from the categorical distribution of ``logits`` (Jang et al.
    2017): y = softmax((z + g) / tau) along ``dim``, g_j = -log E_j with E_j ~ Exp(1) (Gumbel
    noise) drawn from lamina's generator (:func:`lamina.manual_seed`). ``hard=True`` gives the
    one-hot vector of argmax y with y's gradient (the straight-through estimator):
    one_hot - stop_gradient(y) + y. ``eps`` is unused, as in PyTorch."""
    if not (isinstance(tau, numbers.Real) and tau > 0):
        raise ValueError(f"gumbel_softmax: tau must be a positive number, got {tau!r}")
    z = _tensor(logits)
    draw = backend.rng().exponential(size=z.shape)
    gumbels = backend.xp.asarray(-backend.xp.log(backend.xp.asarray(draw)), dtype=z.dtype)
    soft = softmax((z + gumbels) / tau, axis=dim)
    if not hard:
        return soft
    xp = backend.xp
    axis = dim % soft.ndim
    positions = xp.arange(soft.shape[axis]).reshape([-1 if a == axis else 1 for a in range(soft.ndim)])
    hot = (positions == xp.expand_dims(xp.argmax(soft.data, axis=axis), axis)).astype(z.dtype)
    return soft + (hot - soft.data)


# -- encodings and distances -----------------------------------------------------------------


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """The int64 one-hot encoding of integer class indices: shape tensor.shape + (C,), C =
    ``num_classes`` or, when -1, the largest index plus one."""
    xp = backend.xp
    ids = xp.asarray(tensor.data if isinstance(tensor, Tensor) else tensor)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected integer class indices, got dtype {ids.dtype}")
    if num_classes == -1 and not ids.size:
        raise ValueError(f"one_hot: cannot infer the number of classes from an empty input (shape "
                         f"{tuple(ids.shape)}); pass num_classes")
    classes = int(ids.max()) + 1 if num_classes == -1 else num_classes
    if classes < 0:
        raise ValueError(f"one_hot: num_classes must be -1 (the largest index plus one) or >= 0, got {num_classes}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= classes):
        raise ValueError(f"one_hot: class indices must lie in [0, num_classes={classes}), got values from "
                         f"{int(ids.min())} to {int(ids.max())}")
    return Tensor((ids[..., None] == xp.arange(classes)).astype(xp.int64))


def pdist(input, p: float = 2.0) -> Tensor:  # noqa: A002
    """The p-norm distances ||x_i - x_j||_p between every pair of rows i < j of ``input``
    (N, M), in row-major order: shape (N (N - 1) / 2,), as ``torch.nn.functional.pdist``; p = 0
    counts the differing coordinates (gradient 0) and p = inf takes max_k |x_ik - x_jk| (each
    coordinate that attains it gets the whole gradient, as torch's). Composed from indexing,
    power and sums; where |x_ik - x_jk| or the distance is 0 and the power has an infinite
    slope, the gradient is 0, as torch's."""
    x = _tensor(input)
    if x.ndim != 2:
        raise ShapeError(f"pdist: expected a 2-D input (N, M), got shape {x.shape}")
    if not (isinstance(p, numbers.Real) and not isinstance(p, bool) and p >= 0):
        raise ValueError(f"pdist: p must be a number >= 0 (or inf), got {p!r}")
    rows, cols = backend.xp.triu_indices(x.shape[0], 1)
    return difference_norm(x[rows] - x[cols], float(p))


# -- 1-D convolution and pooling ---------------------------------------------------------------


def _sequences(x, op: str) -> Tensor:
    x = _tensor(x)
    if x.ndim != 3:
        raise ShapeError(f"{op}: expected sequences (N, L, C) (channels last), got shape {x.shape}")
    return x


def _as_images(x: Tensor) -> Tensor:
    return reshape(x, (x.shape[0], 1, *x.shape[1:]))


def _as_sequences(y: Tensor) -> Tensor:
    return reshape(y, (y.shape[0], *y.shape[2:]))


def _single(value, name: str, op: str) -> int:
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int or a tuple of one, got {value!r}")
    return int(value)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:  # noqa: A002
    """1-D convolution of (N, L, C_in) sequences with ``weight`` (K, f, C_in / groups) (lamina's
    layout, :class:`lamina.nn.Conv1D`'s): the 2-D :func:`lamina.functional.conv2d` on the
    sequences seen as images of height 1. ``padding``: an int, 'valid' or 'same'."""
    op = "conv1d"
    x, w = _sequences(input, op), _tensor(weight)
    if w.ndim != 3:
        raise ShapeError(f"{op}: weight must be 3-D (K, f, C_in / groups), got shape {w.shape}")
    pad = padding if isinstance(padding, str) else (0, _single(padding, "padding", op))
    return _as_sequences(conv2d(_as_images(x), reshape(w, (w.shape[0], 1, *w.shape[1:])), bias,
                                stride=(1, _single(stride, "stride", op)), padding=pad, groups=groups,
                                dilation=(1, _single(dilation, "dilation", op))))


def conv_tbc(input, weight, bias, pad: int = 0) -> Tensor:  # noqa: A002
    """PyTorch's ``conv_tbc``: 1-D convolution (cross-correlation) of a (T, B, C_in) sequence with
    ``weight`` (f, C_in, C_out) and ``bias`` (C_out,), ``pad`` zeros at both ends of the time axis:
    out[t] = sum_j in[t + j - pad] weight[j] + bias, of shape (T + 2 pad - f + 1, B, C_out). The
    layout is PyTorch's own for this op (time first); it runs as :func:`conv1d` on (B, T, C_in)."""
    op = "conv_tbc"
    x, w = _tensor(input), _tensor(weight)
    if x.ndim != 3 or w.ndim != 3 or w.shape[1] != x.shape[2]:
        raise ShapeError(f"{op}: input must be (T, B, C_in) and weight (f, C_in, C_out) with the same C_in, got "
                         f"input {x.shape} and weight {w.shape}")
    pad = _single(pad, "pad", op)
    if pad < 0:
        raise ValueError(f"{op}: pad must be >= 0, got {pad}")
    (steps, batch, _), (f, c_in, c_out) = x.shape, w.shape
    length = steps + 2 * pad - f + 1
    if min(f, c_in, c_out, length, batch) <= 0:         # nothing to sum: the bias alone (or nothing), as PyTorch
        shape = (max(length, 0), batch, c_out)
        if bias is None:
            return Tensor(backend.xp.zeros(shape), dtype=x.dtype)
        return broadcast_to(_tensor(bias), shape)
    out = conv1d(transpose(x, (1, 0, 2)), transpose(w, (2, 0, 1)), bias, padding=pad)
    return transpose(out, (1, 0, 2))


def upsample(input, size=None, scale_factor=None, mode: str = "nearest",  # noqa: A002
             align_corners: bool | None = None) -> Tensor:
    """PyTorch's ``upsample`` (an older name of :func:`lamina.functional.interpolate`, same arguments)."""
    return interpolate(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


def upsample_nearest(input, size=None, scale_factor=None) -> Tensor:  # noqa: A002
    """PyTorch's ``upsample_nearest``: :func:`lamina.functional.interpolate` with ``mode='nearest'``."""
    return interpolate(input, size=size, scale_factor=scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None) -> Tensor:  # noqa: A002
    """PyTorch's ``upsample_bilinear``: bilinear :func:`lamina.functional.interpolate` with
    ``align_corners=True`` (the corner pixels of input and output line up), as PyTorch's."""
    return interpolate(input, size=size, scale_factor=scale_factor, mode="bilinear", align_corners=True)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode: bool = False,  # noqa: A002
               count_include_pad: bool = True) -> Tensor:
    """Average pooling of (N, L, C) sequences (:func:`lamina.functional.avg_pool2d` on images
    of height 1). ``count_include_pad=False`` divides each window's sum by its input values
    alone."""
    op = "avg_pool1d"
    x = _sequences(input, op)
    k = _single(kernel_size, "kernel_size", op)
    s = k if stride is None else _single(stride, "stride", op)
    p = _single(padding, "padding", op)

    return _as_sequences(avg_pool2d(_as_images(x), (1, k), (1, s), (0, p), ceil_mode,
                                    count_include_pad=count_include_pad))


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,  # noqa: A002
               return_indices: bool = False):
    """Max pooling of (N, L, C) sequences (:func:`lamina.functional.max_pool2d` on images of
    height 1); with ``return_indices`` also the step of each maximum, (N, L', C) int64.
    Dilation other than 1 is not supported."""
    op = "max_pool1d"
    x = _sequences(input, op)
    if _single(dilation, "dilation", op) != 1:
        raise ValueError(f"{op}: dilation must be 1 (dilated pooling is not supported), got {dilation!r}")
    k = _single(kernel_size, "kernel_size", op)
    s = k if stride is None else _single(stride, "stride", op)
    p = _single(padding, "padding", op)
    if return_indices:
        return max_pool1d_with_indices(x, k, s, p, ceil_mode)
    return _as_sequences(max_pool2d(_as_images(x), (1, k), (1, s), (0, p), ceil_mode))
