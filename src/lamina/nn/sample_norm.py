"""Layer and group normalization: each sample normalised over its own values (no batch
statistics, the same in training and evaluation), as one node each with the closed-form
backward.

Layer normalization normalises a sample over its trailing axes (transformers, RNNs); group
normalization an image over H, W and a group of channels (detection and segmentation nets
with small batches; groups = C is instance normalization).
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import CHANNEL_ROW, channel_sums, repeated, sum_to
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter

__all__ = ["GroupNorm", "GroupNormFunction", "LayerNorm", "LayerNormFunction"]


def _fold(positions: int, c: int) -> int:
    """r, the number of positions laid side by side in one row of r C values (at most
    CHANNEL_ROW), so that per-channel operands broadcast along rows of hundreds of values
    instead of C (NumPy's broadcasting runs one inner loop per row)."""
    return max((r for r in range(1, max(CHANNEL_ROW // c, 1) + 1) if positions % r == 0), default=1)


def _group_means(a, groups: int, c: int):
    """(N, G): the mean of each sample's group in ``a`` (N, S', W), W = r C (r positions side
    by side): its S' r positions and C / G channels. The sums over the positions are one
    GEMV per sample (a strided reduction over the group axes of (N, S, G, C/G) runs 40x
    slower)."""
    xp = backend.xp
    n, rows, width = a.shape
    r = width // c
    sums = a[:, 0] if rows == 1 else xp.matmul(xp.ones(rows, dtype=a.dtype), a)     # (N, W)
    per_channel = sums.reshape(n, r, c).sum(axis=1) if r > 1 else sums
    return per_channel.reshape(n, groups, c // groups).sum(axis=2) / (rows * r * (c // groups))


def _spread(v, c: int, width: int):
    """Per-group values (N, G) as (N, 1, W) rows of r C values, each channel its group's
    ((N, 1, 1) for one group, which broadcasts as it is)."""
    xp = backend.xp
    n, groups = v.shape
    if groups == 1:                # one value per sample (layer norm): broadcast, never tiled
        return v[:, :, None]
    per_channel = xp.broadcast_to(v[:, :, None], (n, groups, c // groups)).reshape(n, c)
    if width == c:
        return per_channel[:, None, :]
    return xp.broadcast_to(per_channel[:, None, None, :], (n, 1, width // c, c)).reshape(n, 1, width)


CHUNK_BYTES = 1 << 19
"""Samples are normalised in chunks of about this size, each pass of a chunk running while
its values are in the cache, the chunks on lamina's threads."""


def _chunks(xv) -> list[tuple[int, int]]:
    n = xv.shape[0]
    return parallel.chunk_bounds(n, xv.itemsize * (xv.size // max(n, 1)), CHUNK_BYTES)


def _standardize(xv, groups: int, c: int, eps: float, gamma_row, beta_row):
    """(y, mu, 1/sigma) for ``xv`` (N, S', W): y = gamma x' + beta with x' = (x - mu) / sigma,
    sigma = sqrt(var + eps), mu and the biased var of each sample's group (see
    :func:`_group_means`), mu and 1/sigma as (N, G). Two passes, so that a large mean costs
    no precision. x' lives one chunk at a time: backward rebuilds it from x."""
    xp = backend.xp
    width = xv.shape[2]
    y = xp.empty_like(xv)
    mean = xp.empty((xv.shape[0], groups), dtype=xv.dtype)
    inv_std = xp.empty_like(mean)
    chunks = _chunks(xv)

    def chunk(i):
        lo, hi = chunks[i]
        mean[lo:hi] = _group_means(xv[lo:hi], groups, c)
        part = xp.subtract(xv[lo:hi], _spread(mean[lo:hi], c, width))
        var = _group_means(xp.square(part), groups, c)
        xp.divide(1.0, xp.sqrt(var + eps), out=inv_std[lo:hi])
        part *= _spread(inv_std[lo:hi], c, width)
        xp.multiply(part, gamma_row, out=y[lo:hi])
        y[lo:hi] += beta_row
    parallel.map_chunks(chunk, len(chunks), 6 * xv.size)
    return y, mean, inv_std


SMALL_LAYER_NORM = 1 << 13
"""Layer norms of at most this many values (a decoding step's few tokens) skip the chunking:
a handful of whole-array operations cost less than arranging chunks and threads."""


def _row_means(a):
    """``a.mean(axis=1, keepdims=True)`` for a 2-D ``a``, without the microseconds of its Python
    wrapper: the same sum divided by the count in a's dtype, which rounds as the mean's float64
    division does for float32 and float64 (float16, whose mean sums in float32, takes the mean)."""
    if a.dtype.itemsize < 4:
        return a.mean(axis=1, keepdims=True)
    total = a.sum(axis=1, keepdims=True)
    total /= a.shape[1]
    return total


def _standardize_rows(rows, eps: float, gamma, beta):
    """:func:`_standardize` for one group and one position: ``rows`` (M, D) normalised each
    over its D values; (y (M, 1, D), mu (M, 1), 1/sigma (M, 1))."""
    xp = backend.xp
    mean = _row_means(rows)
    centred = rows - mean
    inv_std = 1.0 / xp.sqrt(_row_means(xp.square(centred)) + eps)
    centred *= inv_std
    centred *= gamma
    centred += beta
    return centred[:, None, :], mean, inv_std.astype(rows.dtype, copy=False)


def _channel_totals(a, c: int):
    """Per-channel sums of (…, W) rows of r C values: (C,)."""
    total = channel_sums(a.reshape(-1, a.shape[-1]))
    return total.reshape(-1, c).sum(axis=0) if total.size > c else total


def _standardized_backward(dy, xv, mean, inv_std, gamma_row, groups: int, c: int, needs: tuple[bool, ...]):
    """(dJ/dx, dJ/dgamma, dJ/dbeta) of y = gamma x' + beta, x' = (x - mu) / sigma from
    :func:`_standardize`'s mu and 1/sigma, for (N, S', W) arrays and ``gamma_row`` (gamma
    tiled to W), the means over each group:

        g = dJ/dy gamma,   dJ/dx = (1/sigma) (g - mean g - x' mean(g x'))
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (over the samples and positions)

    ``None`` for each gradient that ``needs`` (x, gamma, beta) says is not wanted. The
    chunks' parts of dJ/dgamma and dJ/dbeta are added in chunk order (the same sums
    whatever the threads' timing)."""
    xp = backend.xp
    need_x, need_gamma, need_beta = needs
    dx = xp.empty_like(dy) if need_x else None
    width = dy.shape[2]
    chunks = _chunks(dy)

    def chunk(i):
        lo, hi = chunks[i]
        d = dy[lo:hi]
        scale = _spread(inv_std[lo:hi], c, width)
        x_part = xp.subtract(xv[lo:hi], _spread(mean[lo:hi], c, width))
        x_part *= scale
        dbeta = _channel_totals(d, c) if need_beta else None
        dgamma = _channel_totals(d * x_part, c) if need_gamma else None
        if need_x:
            out = dx[lo:hi]
            g = d * gamma_row
            xp.subtract(g, _spread(_group_means(g, groups, c), c, width), out=out)
            g *= x_part
            out -= x_part * _spread(_group_means(g, groups, c), c, width)
            out *= scale
        return dgamma, dbeta
    parts = parallel.map_chunks(chunk, len(chunks), 10 * dy.size)
    dgamma = sum(p[0] for p in parts) if need_gamma else None
    dbeta = sum(p[1] for p in parts) if need_beta else None
    return dx, dgamma, dbeta


class LayerNormFunction(Function):
    """Layer normalization of each sample over the trailing axes that ``gamma`` spans, as
    one node with the closed-form backward.

    With D the number of values normalised together (``gamma.size``), mu and the biased var
    their mean and variance, sigma = sqrt(var + eps) and x' = (x - mu) / sigma:

        y = gamma x' + beta                               (gamma, beta of the trailing shape)
        g = dJ/dy gamma
        dJ/dx     = (1/sigma) (g - mean g - x' mean(g x'))   (means over the D values)
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (sums over the samples)

    The input is viewed as M rows of D values (a group norm with one group and one
    position); only x (the input's own array), mu, 1/sigma and gamma are kept for backward.
    Keyword: ``eps``.
    """

    def forward(self, x, gamma, beta):
        d = gamma.size
        xv = backend.xp.ascontiguousarray(x).reshape(x.size // d, 1, d)
        self.gamma = gamma.astype(x.dtype, copy=False).reshape(d)
        self.xv = xv
        beta = beta.astype(x.dtype, copy=False).reshape(d)
        if x.size <= SMALL_LAYER_NORM:
            y, self.mean, self.inv_std = _standardize_rows(xv[:, 0], self.eps, self.gamma, beta)
        else:
            y, self.mean, self.inv_std = _standardize(xv, 1, d, self.eps, self.gamma, beta)
        return y.reshape(x.shape)

    def backward(self, dy):
        dyv = backend.xp.ascontiguousarray(dy).reshape(self.xv.shape)
        dx, dgamma, dbeta = _standardized_backward(dyv, self.xv, self.mean, self.inv_std, self.gamma, 1,
                                                   self.gamma.size, self.needs_grad)
        gamma_shape = self.inputs[1].shape
        return (None if dx is None else dx.reshape(dy.shape),
                None if dgamma is None else dgamma.reshape(gamma_shape),
                None if dbeta is None else dbeta.reshape(gamma_shape))

    def backward_graph(self, dy):
        """The same VJP by tensor ops, mu and sigma computed again from the input tensor (they
        depend on x), on M rows of the D normalised values."""
        x, gamma, _ = self.inputs
        d = gamma.size
        grads = standardized_backward_graph(dy.reshape(-1, d), x.reshape(-1, d), gamma.reshape(d), (1,), self.eps,
                                             self.needs_grad)
        return tuple(None if g is None else g.reshape(t.shape) for g, t in zip(grads, self.inputs))


class GroupNormFunction(Function):
    """Group normalization of (N, ..., C) values as one node, with the closed-form backward:
    the C channels form ``groups`` contiguous groups of C/G, each sample's group is
    normalised over all its positions and channels, then gamma and beta act per channel.

    The input is viewed as (N, S, C) (S positions, H W for NHWC) and with mu and the biased
    var of each sample's group (its S positions and C/G channels), sigma = sqrt(var + eps)
    and x' = (x - mu) / sigma:

        y = gamma x' + beta                               (gamma, beta per channel)
        g = dJ/dy gamma
        dJ/dx     = (1/sigma) (g - mean g - x' mean(g x'))   (means over each group)
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (sums over N and S)

    Only x (the input's own array), mu, 1/sigma and gamma are kept for backward. Keywords: ``groups``, ``eps``.
    """

    def forward(self, x, gamma, beta):
        n, c, groups = x.shape[0], x.shape[-1], self.groups
        positions = math.prod(x.shape[1:-1])
        r = _fold(positions, c)
        xv = backend.xp.ascontiguousarray(x).reshape(n, positions // r, r * c)
        self.gamma = repeated(gamma.astype(x.dtype, copy=False), r)
        self.xv = xv
        y, self.mean, self.inv_std = _standardize(xv, groups, c, self.eps, self.gamma,
                                                   repeated(beta.astype(x.dtype, copy=False), r))
        return y.reshape(x.shape)

    def backward(self, dy):
        dyv = backend.xp.ascontiguousarray(dy).reshape(self.xv.shape)
        c = dy.shape[-1]
        dx, dgamma, dbeta = _standardized_backward(dyv, self.xv, self.mean, self.inv_std, self.gamma, self.groups, c,
                                                   self.needs_grad)
        return (None if dx is None else dx.reshape(dy.shape),
                None if dgamma is None else dgamma.reshape(c),
                None if dbeta is None else dbeta.reshape(c))

    def backward_graph(self, dy):
        """The same VJP by tensor ops, on the input viewed as (N, S, G, C/G), the statistics
        taken over axes S and C/G and computed again from the input tensor."""
        x, gamma, _ = self.inputs
        c, groups = x.shape[-1], self.groups
        view = (x.shape[0], -1, groups, c // groups)
        grads = standardized_backward_graph(dy.reshape(view), x.reshape(view), gamma.reshape(groups, c // groups),
                                             (1, 3), self.eps, self.needs_grad)
        return tuple(None if g is None else g.reshape(t.shape) for g, t in zip(grads, self.inputs))


def standardized_backward_graph(dy, x, gamma, axes: tuple[int, ...], eps: float, needs: tuple[bool, ...]):
    """:func:`_standardized_backward` by tensor ops (for layer, group and batch norm's
    ``backward_graph``), for ``x`` and ``dy`` whose statistics run over ``axes`` and ``gamma``
    broadcasting against them:

        g = dJ/dy gamma,   dJ/dx = (1/sigma) (g - mean g - x' mean(g x'))
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (over the axes gamma lacks)

    mu, sigma and x' are recomputed from ``x``, so that second derivatives flow through them."""
    need_x, need_gamma, need_beta = needs
    centred = x - x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / ((centred * centred).mean(axis=axes, keepdims=True) + eps).sqrt()
    x_hat = centred * inv_std
    dx = None
    if need_x:
        g = dy * gamma
        dx = inv_std * (g - g.mean(axis=axes, keepdims=True) - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
    dgamma = sum_to(dy * x_hat, gamma.shape) if need_gamma else None
    dbeta = sum_to(dy, gamma.shape) if need_beta else None
    return dx, dgamma, dbeta


def _affine_operands(layer: Module, shape: tuple[int, ...], dtype):
    """(gamma, beta) for the layer's function: its parameters, or constants 1 and 0."""
    if layer.affine:
        return read_parameter(layer, "weight"), read_parameter(layer, "bias")
    xp = backend.xp
    return Tensor._wrap(xp.ones(shape, dtype=dtype)), Tensor._wrap(xp.zeros(shape, dtype=dtype))


def _check_eps(layer: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number, got {eps!r}")
    return float(eps)


@register_layer
class LayerNorm(Module):
    """Layer normalization: each sample normalised over its trailing ``axes`` (an int or a
    tuple, negative or positive, that must be the last axes, as PyTorch's
    ``normalized_shape``): y = gamma (x - mu) / sqrt(var + eps) + beta, with mu and the
    biased var of the sample's values over those axes.

    ``axes=-1`` normalises the features of (N, D) or the channels of each NHWC pixel;
    ``axes=(-3, -2, -1)`` a whole NHWC image. The same in training and evaluation (no
    running statistics). Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0)
    of the normalised shape, also reachable as ``gamma`` and ``beta``; ``affine=False``
    leaves them out.
    """

    default_name = "layer_norm"

    def __init__(self, axes: int | tuple[int, ...] = -1, eps: float = 1e-5, affine: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.axes = _axes_tuple(axes)
        self.eps = _check_eps("LayerNorm", eps)
        self.affine = bool(affine)
        self.normalized_shape: tuple[int, ...] | None = None

    @property
    def streamable(self) -> bool:
        return len(self.axes) == 1         # the last axis alone: each step on its own

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    def _trailing(self, shape: tuple, what: str) -> int:
        """How many trailing axes of ``shape`` the layer normalises (a ShapeError unless
        ``axes`` are the last ones of ``shape``, the batch axis excluded)."""
        ndim = len(shape)
        k = len(self.axes)
        resolved = sorted(a + ndim if a < 0 else a for a in self.axes)
        if resolved != list(range(ndim - k, ndim)) or k >= ndim:
            raise ShapeError(
                f"{self._label()}: axes={_axes_repr(self.axes)} are not the trailing axes of the {what} "
                f"{shape}; expected {k} of the last axes 1..{ndim - 1} (the batch axis 0 is never normalised)")
        return k

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ...) with at least 2 axes")
        k = self._trailing(shape, "input shape")
        normalized = shape[len(shape) - k:]
        if any(s is None for s in normalized):
            raise ShapeError(f"{self._label()}: the normalised axes of {shape} must be known")
        self.normalized_shape = tuple(int(s) for s in normalized)
        if self.affine:
            xp, dtype = backend.xp, backend.get_default_dtype()
            self.add_parameter("weight", xp.ones(self.normalized_shape, dtype=dtype))
            self.add_parameter("bias", xp.zeros(self.normalized_shape, dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        normalized = self.normalized_shape
        shape = x.data.shape
        # the usual last-axis norm needs only the last check below (_trailing's answer is 1 then)
        if not (self.axes == (-1,) and len(shape) >= 2 and shape[-1:] == normalized):
            if x.ndim < 2:
                raise input_error(self, x, f"(batch, ..., {', '.join(map(str, normalized))}) with at least 2 axes")
            k = self._trailing(tuple(shape), "input of shape")
            if tuple(shape[x.ndim - k:]) != normalized:
                raise input_error(self, x, f"the normalised axes {_axes_repr(self.axes)} of shape {normalized} "
                                           "(the shape the layer was built for)")
        gamma, beta = _affine_operands(self, normalized, x.dtype)
        return LayerNormFunction.apply(x, gamma, beta, eps=self.eps)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ...) with at least 2 axes")
        k = self._trailing(shape, "input shape")
        normalized = shape[len(shape) - k:]
        if self.normalized_shape is not None and any(
                s is not None and s != t for s, t in zip(normalized, self.normalized_shape)):
            raise ShapeError(f"{self._label()}: input shape {shape} has {normalized} on the normalised axes; the "
                             f"layer was built for {self.normalized_shape}")
        return shape

    def get_config(self) -> dict:
        axes = self.axes[0] if len(self.axes) == 1 else list(self.axes)
        return {"axes": axes, "eps": self.eps, "affine": self.affine, "name": self.name}

    def extra_repr(self) -> str:
        normalized = self.normalized_shape if self.normalized_shape is not None else "?"
        return (f"{normalized}, axes={_axes_repr(self.axes)}, eps={self.eps}"
                + ("" if self.affine else ", affine=False"))


def _axes_repr(axes: tuple[int, ...]):
    return axes[0] if len(axes) == 1 else axes


def _axes_tuple(axes) -> tuple[int, ...]:
    """LayerNorm's ``axes`` as a tuple of ints, checked as far as no input shape is needed:
    distinct, and trailing where all have one sign (negative: -k..-1; positive: consecutive,
    never the batch axis 0)."""
    items = (axes,) if isinstance(axes, int) else axes
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"LayerNorm: axes must be an int or a tuple of ints, got {axes!r}") from None
    if not items or any(isinstance(a, bool) or not isinstance(a, int) for a in items):
        raise TypeError(f"LayerNorm: axes must be an int or a non-empty tuple of ints, got {axes!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"LayerNorm: axes {axes!r} repeat an axis")
    k, ordered = len(items), sorted(items)
    if ordered[-1] < 0 and ordered != list(range(-k, 0)):
        raise ValueError(f"LayerNorm: axes {axes!r} are not the trailing axes; expected the last {k} "
                         f"axes, {tuple(range(-k, 0))}")
    if ordered[0] >= 0 and (ordered[0] == 0 or ordered != list(range(ordered[0], ordered[0] + k))):
        raise ValueError(f"LayerNorm: axes {axes!r} must be consecutive trailing axes after the batch axis 0")
    return tuple(int(a) for a in items)


@register_layer
class GroupNorm(Module):
    """Group normalization of (N, C) or NHWC (N, H, W, C) inputs: the C channels are split
    into ``groups`` contiguous groups and each sample's group is normalised over H, W and
    its C / groups channels, y = gamma (x - mu) / sqrt(var + eps) + beta with the biased
    var, then gamma and beta act per channel: PyTorch's ``GroupNorm(groups, C)`` on the
    NCHW input. ``groups=1`` normalises whole samples, ``groups=C`` each channel alone
    (instance normalization). The same in training and evaluation (no running statistics).

    Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0) of size C, also
    reachable as ``gamma`` and ``beta``; ``affine=False`` leaves them out.
    """

    default_name = "group_norm"
    _EXPECTED = "(batch, channels) or NHWC (batch, height, width, channels)"

    def __init__(self, groups: int, eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name=name)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"GroupNorm: groups must be a positive int, got {groups!r}")
        self.groups = groups
        self.eps = _check_eps("GroupNorm", eps)
        self.affine = bool(affine)
        self.num_channels: int | None = None

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    def _check_channels(self, shape: tuple) -> None:
        c = shape[-1]
        if c is not None and c % self.groups:
            raise ShapeError(f"{self._label()}: the input shape {shape} has C={c} channels, which do not split "
                             f"into groups={self.groups} equal groups; C must be divisible by groups")

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, (2, 4), self._EXPECTED)
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        self._check_channels(shape)
        self.num_channels = int(c)
        if self.affine:
            xp, dtype = backend.xp, backend.get_default_dtype()
            self.add_parameter("weight", xp.ones((c,), dtype=dtype))
            self.add_parameter("bias", xp.zeros((c,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c = self.num_channels
        if x.ndim not in (2, 4) or x.shape[-1] != c:
            hint = ""
            if x.ndim == 4 and x.shape[1] == c:
                hint = "; it looks like NCHW: transpose it with x.transpose(0, 2, 3, 1)"
            raise input_error(self, x, f"{self._EXPECTED} with C={c} channels on the last axis{hint}")
        gamma, beta = _affine_operands(self, (c,), x.dtype)
        return GroupNormFunction.apply(x, gamma, beta, groups=self.groups, eps=self.eps)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, (2, 4), self._EXPECTED)
        self._check_channels(shape)
        if self.num_channels is not None and shape[-1] is not None and shape[-1] != self.num_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} channels; the layer "
                             f"was built for C={self.num_channels}")
        return shape

    def get_config(self) -> dict:
        return {"groups": self.groups, "eps": self.eps, "affine": self.affine, "name": self.name}

    def extra_repr(self) -> str:
        c = self.num_channels if self.num_channels is not None else "?"
        return f"{self.groups}, {c}, eps={self.eps}" + ("" if self.affine else ", affine=False")
