"""Transposed 1-D and 3-D convolutions with every option of PyTorch's ConvTranspose1d/3d:
stride, padding, output_padding, dilation and groups, on channel-last inputs.

A transposed convolution is the adjoint (the input gradient) of the convolution with the same
hyperparameters. Along one spatial axis of length n, with stride s, padding p, dilation q,
kernel size f and output padding e, it equals an ordinary stride-1 convolution of x after

1. inserting s - 1 zeros between neighbouring inputs (length (n - 1) s + 1),
2. padding q (f - 1) - p zeros in front and q (f - 1) - p + e behind (cropping where negative),

with the kernel flipped along every spatial axis and its in/out channel roles swapped within
each group. The output length is (n - 1) s - 2p + q (f - 1) + e + 1, as PyTorch's.

The weights keep lamina's layout for these layers (that of Conv2DTranspose): w has shape
(c_in, f_1, ..., f_d, c_out / groups), the layout of the convolution from c_out to c_in
channels whose adjoint this is; PyTorch's (c_in, c_out / groups, f_1, ..., f_d) weight is
``w.transpose(0, d + 1, 1, ..., d)``. Built from differentiable ops (zero insertion by
padding and reshaping, a flip, a transpose and the convolution), so its gradients of every
order are those ops' gradients.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv import conv2d
from lamina.functional.conv3d import conv3d
from lamina.functional.indexing import flip
from lamina.functional.shape import getitem, pad, reshape, transpose

__all__ = ["conv_transpose1d", "conv_transpose3d", "conv_transpose_output_length", "spread_conv_transpose"]


def conv_transpose_output_length(n: int, f: int, stride: int, padding: int, output_padding: int = 0,
                                 dilation: int = 1) -> int:
    """(n - 1) s - 2p + q (f - 1) + e + 1: the length one spatial axis gets."""
    return (n - 1) * stride - 2 * padding + dilation * (f - 1) + output_padding + 1


def _per_axis(value, d: int, name: str, op: str, low: int) -> tuple[int, ...]:
    values = (value,) * d if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != d or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
        raise ValueError(f"{op}: {name} must be an int >= {low} or {d} of them, got {value!r}")
    return tuple(int(v) for v in values)


def _zero_inserted(x: Tensor, axis: int, stride: int, before: int, after: int) -> Tensor:
    """x with stride - 1 zeros between neighbours along ``axis``, then ``before`` and
    ``after`` zeros added at the ends (removed from the ends where negative)."""
    n = x.shape[axis]
    if stride > 1:
        spread = reshape(x, x.shape[:axis + 1] + (1,) + x.shape[axis + 1:])
        widths = [(0, 0)] * spread.ndim
        widths[axis + 1] = (0, stride - 1)
        spread = pad(spread, tuple(widths))
        x = reshape(spread, x.shape[:axis] + (n * stride,) + x.shape[axis + 1:])
        after -= stride - 1                     # the zeros after the last input are not part of it
    lead = (slice(None),) * axis
    if before < 0 or after < 0:
        x = getitem(x, lead + (slice(max(-before, 0), x.shape[axis] - max(-after, 0)),))
    if before > 0 or after > 0:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(before, 0), max(after, 0))
        x = pad(x, tuple(widths))
    return x


def _adjoint_weights(w: Tensor, groups: int) -> Tensor:
    """(c_in, f..., c_out / g) -> (c_out, f..., c_in / g): the kernel flipped and each
    group's input and output channels swapped."""
    c_in, *kernel, c_out_group = w.shape
    d = len(kernel)
    grouped = reshape(w, (groups, c_in // groups, *kernel, c_out_group))
    grouped = flip(grouped, tuple(range(2, 2 + d)))
    swapped = transpose(grouped, (0, d + 2, *range(2, 2 + d), 1))
    return reshape(swapped, (groups * c_out_group, *kernel, c_in // groups))


def _conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation, d: int, op: str) -> Tensor:
    layout = "(N, L, C_in)" if d == 1 else "(N, D, H, W, C_in)"
    if x.ndim != d + 2:
        raise ShapeError(f"{op}: expected x of shape {layout} ({d + 2}-D, channels last), got shape {tuple(x.shape)}")
    if w.ndim != d + 2:
        raise ShapeError(f"{op}: expected weights of shape (C_in, {'f, ' * d}C_out / groups) ({d + 2}-D), got shape "
                         f"{tuple(w.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c_in = x.shape[-1]
    if c_in != w.shape[0]:
        raise ShapeError(f"{op}: x of shape {tuple(x.shape)} has C_in={c_in} channels but weights of shape "
                         f"{tuple(w.shape)} expect C_in={w.shape[0]} (their first axis)")
    if c_in % groups:
        raise ShapeError(f"{op}: groups={groups} must divide C_in={c_in} (weights of shape {tuple(w.shape)})")
    c_out = w.shape[-1] * groups
    if b is not None and tuple(b.shape) != (c_out,):
        raise ShapeError(f"{op}: expected a bias of shape ({c_out},) for weights of shape {tuple(w.shape)} and "
                         f"groups={groups}, got shape {tuple(b.shape)}")
    stride = _per_axis(stride, d, "stride", op, 1)
    padding = _per_axis(padding, d, "padding", op, 0)
    output_padding = _per_axis(output_padding, d, "output_padding", op, 0)
    dilation = _per_axis(dilation, d, "dilation", op, 1)
    if any(e >= max(s, q) for e, s, q in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than the stride {stride} or the "
                         f"dilation {dilation} along each axis (PyTorch's rule)")
    kernel = tuple(w.shape[1:-1])
    outs = tuple(conv_transpose_output_length(n, f, s, p, e, q) for n, f, s, p, e, q in
                 zip(x.shape[1:-1], kernel, stride, padding, output_padding, dilation))
    if min(outs) < 1:
        raise ShapeError(f"{op}: padding {padding} crops the whole output of x of shape {tuple(x.shape)} "
                         f"(output size {outs}); expected a positive output size")
    return spread_conv_transpose(x, w, b, stride, tuple((p, p) for p in padding), output_padding, dilation, groups)


def spread_conv_transpose(x: Tensor, w: Tensor, b: Tensor | None, stride: tuple[int, ...],
                          pads: tuple[tuple[int, int], ...], output_padding: tuple[int, ...],
                          dilation: tuple[int, ...], groups: int) -> Tensor:
    """The transposed convolution of 1 to 3 spatial axes as the stride-1 convolution of the
    module's recipe, for checked arguments: ``pads`` (before, after) per axis, the padding of
    the convolution whose adjoint this is (unequal for the adjoint of a 'same' convolution)."""
    d = w.ndim - 2
    kernel = tuple(w.shape[1:-1])
    for axis in range(d):
        reach = dilation[axis] * (kernel[axis] - 1)
        before, after = pads[axis]
        x = _zero_inserted(x, axis + 1, stride[axis], reach - before, reach - after + output_padding[axis])
    weights = _adjoint_weights(w, groups)
    if d == 1:              # a 1-D convolution is a 2-D one over a height of 1
        y = conv2d(reshape(x, (x.shape[0], 1, *x.shape[1:])),
                   reshape(weights, (weights.shape[0], 1, *weights.shape[1:])), b, groups=groups,
                   dilation=(1, dilation[0]))
        return reshape(y, (y.shape[0], *y.shape[2:]))
    if d == 2:
        return conv2d(x, weights, b, groups=groups, dilation=dilation)
    return conv3d(x, weights, b, groups=groups, dilation=dilation)


def conv_transpose1d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: int = 1, padding: int = 0,
                     output_padding: int = 0, groups: int = 1, dilation: int = 1) -> Tensor:
    """Transposed 1-D convolution of (N, L, C_in) sequences (PyTorch's conv_transpose1d on
    channel-last inputs): w (C_in, f, C_out / groups), b (C_out,) or None. Output
    (N, (L - 1) s - 2p + q (f - 1) + e + 1, C_out)."""
    return _conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation, 1, "conv_transpose1d")


def conv_transpose3d(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, padding=0, output_padding=0,
                     groups: int = 1, dilation=1) -> Tensor:
    """Transposed 3-D convolution of (N, D, H, W, C_in) volumes (PyTorch's conv_transpose3d
    on channel-last inputs): w (C_in, f_d, f_h, f_w, C_out / groups), b (C_out,) or None;
    stride, padding, output_padding and dilation an int or one per axis."""
    return _conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation, 3, "conv_transpose3d")
