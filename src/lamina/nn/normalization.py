"""Normalization layers: batch normalization (course notes, Batch normalization), layer
and group normalization, and AlexNet's local response normalization.

Batch and local response normalization work along the channel axis, which is the last one
(NHWC / (N, C)); layer normalization normalises each sample over its trailing axes, group
normalization each sample over H, W and a group of channels.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import CHANNEL_ROW, channel_sums, merged_rows, repeated
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["BatchNorm", "BatchNormFunction", "GroupNorm", "GroupNormFunction", "LayerNorm", "LayerNormFunction",
           "LocalResponseNorm", "LocalResponseNormFunction"]


class BatchNormFunction(Function):
    """Batch normalization of the last axis as one node, with the notes' closed-form backward.

    With x' the normalised input, m the number of values per channel (N·H·W) and
    sigma = sqrt(var + eps):

        training:   mu = (1/m) sum x,  var = (1/m) sum (x - mu)^2  (biased),  x' = (x - mu) / sigma
        evaluation: x' = (x - running_mean) / sqrt(running_var + eps)
        y = gamma x' + beta

        dJ/dbeta  = sum dJ/dy,   dJ/dgamma = sum dJ/dy x'
        dJ/dx     = gamma / (m sigma) (m dJ/dy - dJ/dbeta - x' dJ/dgamma)   (training)
        dJ/dx     = gamma / sigma dJ/dy                                       (evaluation)

    Every pass runs over chunks of rows that stay in the cache, on lamina's threads, with
    the (m, C) values viewed as rows of about CHANNEL_ROW values (r pixels of C channels,
    see :func:`lamina.functional._util.per_channel`) and each per-channel vector tiled once
    to such a row. Keywords: ``eps``, ``training``, ``running_mean`` / ``running_var``
    (evaluation) and ``stats``, a dict that receives the batch ``mean``, biased ``var`` and
    count ``m``.
    """

    def forward(self, x, gamma, beta):
        xp = backend.xp
        c = x.shape[-1]
        m = x.size // c
        rows = _ChannelRows(xp.ascontiguousarray(x).reshape(m, c))
        self.gamma, self.m, self.rows = gamma, m, rows
        if self.training:
            mu, var = _batch_moments(rows)
            self.stats.update(mean=mu.astype(x.dtype), var=var.astype(x.dtype), m=m)
        else:
            mu, var = self.running_mean, self.running_var
        # y = gamma (x - mu) / sigma + beta as one multiply-add per value: y = x scale + shift
        self.mu, self.inv_std, scale, shift = affine_form(gamma, beta, mu, var, self.eps, x.dtype)
        scale, shift = rows.tile(scale), rows.tile(shift)
        y = xp.empty(rows.values.shape, dtype=x.dtype)

        def normalize(i):
            lo, hi = rows.chunks[i]
            xp.multiply(rows.values[lo:hi], scale, out=y[lo:hi])
            y[lo:hi] += shift
        parallel.map_chunks(normalize, len(rows.chunks), 2 * x.size)
        return y.reshape(x.shape)

    def backward(self, dy):
        xp = backend.xp
        rows, mu, inv_std, m = self.rows, self.mu, self.inv_std, self.m
        need_x, need_gamma, need_beta = self.needs_grad
        dy_rows = rows.like(xp.ascontiguousarray(dy))
        x_rows, mu_row = rows.values, rows.tile(mu)

        def sums(i):                       # this chunk's share of sum dJ/dy and sum dJ/dy (x - mu)
            lo, hi = rows.chunks[i]
            d = dy_rows[lo:hi]
            products = xp.subtract(x_rows[lo:hi], mu_row)
            products *= d
            return rows.column_sums(d), rows.column_sums(products)
        parts = parallel.map_chunks(sums, len(rows.chunks), 2 * dy.size)
        dbeta = sum(p[0] for p in parts)
        dgamma = sum(p[1] for p in parts) * inv_std
        k = self.gamma * inv_std
        dx = None
        if need_x:
            dx = xp.empty(dy_rows.shape, dtype=dy.dtype)
            k_row = rows.tile(k)
            if self.training:
                # gamma / (m sigma) (m dJ/dy - dJ/dbeta - x' dJ/dgamma) = k dJ/dy + a x + b
                a = -(k / m) * dgamma * inv_std
                a_row, b_row = rows.tile(a), rows.tile(-(k / m) * dbeta - a * mu)

            def grad_x(i):
                lo, hi = rows.chunks[i]
                out = dx[lo:hi]
                xp.multiply(dy_rows[lo:hi], k_row, out=out)
                if self.training:
                    t = xp.multiply(x_rows[lo:hi], a_row)
                    t += b_row
                    out += t
            parallel.map_chunks(grad_x, len(rows.chunks), 3 * dy.size)
            dx = dx.reshape(dy.shape)
        return dx, (dgamma.astype(dy.dtype, copy=False) if need_gamma else None), (
            dbeta.astype(dy.dtype, copy=False) if need_beta else None)


def affine_form(gamma, beta, mean, var, eps: float, dtype):
    """(mu, 1/sigma, scale, shift) with gamma (x - mu) / sigma + beta = x scale + shift."""
    xp = backend.xp
    mu = mean.astype(dtype, copy=False)
    inv_std = (1.0 / xp.sqrt(var.astype(dtype, copy=False) + eps)).astype(dtype, copy=False)
    scale = gamma * inv_std
    return mu, inv_std, scale, beta - mu * scale


CHUNK_BYTES = 1 << 20
"""Rows of a batch-norm pass are processed in chunks of about this size (cache-resident)."""


class _ChannelRows:
    """C-contiguous (m, C) values viewed as ``values``, rows of r C values (r pixels, r C at
    most CHANNEL_ROW; r = 1 where C is larger or m has no such divisor), cut into ``chunks``
    of about CHUNK_BYTES."""

    def __init__(self, x2):
        self.c = x2.shape[1]
        merged = merged_rows([x2], self.c, CHANNEL_ROW)
        self.values = x2 if merged is None else merged[0]
        self.r = self.values.shape[1] // self.c
        self.chunks = parallel.chunk_bounds(self.values.shape[0], self.values.shape[1] * x2.itemsize, CHUNK_BYTES)
        longest = max((hi - lo for lo, hi in self.chunks), default=1)
        self._ones = backend.xp.ones(longest, dtype=x2.dtype)

    def like(self, a):
        """``a`` (C-contiguous, as many values) viewed in the same rows."""
        return a.reshape(self.values.shape)

    def tile(self, v):
        """A per-channel vector repeated to one row."""
        return repeated(v, self.r) if self.r > 1 else v

    def column_sums(self, part):
        """Per-channel sums of a chunk of rows: a GEMV, then the r pixels of a row folded."""
        total = self._ones[:part.shape[0]] @ part
        return total.reshape(self.r, self.c).sum(axis=0) if self.r > 1 else total


def _batch_moments(rows: _ChannelRows):
    """Per-channel mean and biased variance, from each chunk's mean and sum of squared
    deviations, combined exactly (Chan et al.'s pairwise update)."""
    xp = backend.xp

    def moments(i):
        lo, hi = rows.chunks[i]
        part = rows.values[lo:hi]
        n = (hi - lo) * rows.r
        mean = rows.column_sums(part) / n
        d = xp.subtract(part, rows.tile(mean))
        d *= d
        return n, mean, rows.column_sums(d)
    parts = parallel.map_chunks(moments, len(rows.chunks), rows.values.size)
    m = rows.values.size // rows.c
    mu = sum(n * mean.astype(xp.float64) for n, mean, _ in parts) / m
    m2 = sum(sq.astype(xp.float64) + n * (mean.astype(xp.float64) - mu) ** 2 for n, mean, sq in parts)
    return mu, m2 / m


@register_layer
class BatchNorm(Module):
    """Batch normalization over the last (channel) axis of (N, C), (N, H, W, C) or any
    (N, ..., C) input: y = gamma (x - mu) / sqrt(var + eps) + beta per channel.

    * Training: mu and var are the batch statistics over every axis but the last (biased
      var normalises); the running statistics (buffers ``running_mean``, ``running_var``)
      follow an exponentially weighted average, as in the notes' EWA with beta = momentum:

          running = momentum · running + (1 - momentum) · batch

      with the unbiased batch variance (m / (m - 1) var) for ``running_var``, as PyTorch.
      The default momentum = 0.9 equals PyTorch's momentum = 0.1 (PyTorch weighs the *new*
      value: running = (1 - m_torch) running + m_torch batch, so m_torch = 1 - momentum).
    * Evaluation: the running statistics replace the batch ones (one sample works).

    Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0), also reachable as
    ``gamma`` and ``beta``; ``affine=False`` leaves them out (gamma = 1, beta = 0).
    """

    default_name = "batch_norm"

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name=name)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1) (running = momentum·running + "
                             f"(1 - momentum)·batch), got {momentum!r}")
        if eps <= 0:
            raise ValueError(f"BatchNorm: eps must be positive, got {eps!r}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.affine = bool(affine)

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    @property
    def num_features(self) -> int:
        return int(self.running_mean.shape[0])

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., channels) with "
                                 "at least 2 axes")
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        xp, dtype = backend.xp, backend.get_default_dtype()
        if self.affine:
            self.add_parameter("weight", xp.ones((c,), dtype=dtype))
            self.add_parameter("bias", xp.zeros((c,), dtype=dtype))
        self.register_buffer("running_mean", xp.zeros((c,), dtype=dtype))
        self.register_buffer("running_var", xp.ones((c,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c = self.num_features
        if x.ndim < 2 or x.shape[-1] != c:
            hint = ""
            if x.ndim == 4 and x.shape[1] == c:
                hint = "; it looks like NCHW: transpose it with x.transpose(0, 2, 3, 1)"
            raise input_error(self, x, f"(batch, ..., C) with C={c} channels on the last axis{hint}")
        if self.affine:
            gamma, beta = self.weight, self.bias
        else:
            gamma = Tensor._wrap(backend.xp.ones((c,), dtype=x.dtype))
            beta = Tensor._wrap(backend.xp.zeros((c,), dtype=x.dtype))
        if not self.training:
            return BatchNormFunction.apply(x, gamma, beta, eps=self.eps, training=False,
                                           running_mean=self.running_mean, running_var=self.running_var)
        m = x.size // c
        if m < 2:
            raise input_error(self, x, "more than one value per channel in training mode (a batch of "
                                       "one sample has no variance; use eval() for single samples)")
        stats: dict = {}
        y = BatchNormFunction.apply(x, gamma, beta, eps=self.eps, training=True, stats=stats)
        mom = self.momentum
        dtype = self.running_mean.dtype
        unbiased = stats["var"] * (m / (m - 1))
        self.running_mean = (mom * self.running_mean + (1 - mom) * stats["mean"]).astype(dtype, copy=False)
        self.running_var = (mom * self.running_var + (1 - mom) * unbiased).astype(dtype, copy=False)
        return y

    def evaluation_affine(self, dtype):
        """(scale, shift) with y = x scale + shift in evaluation mode (running statistics)."""
        xp, c = backend.xp, self.num_features
        gamma = self.weight.data if self.affine else xp.ones((c,), dtype=dtype)
        beta = self.bias.data if self.affine else xp.zeros((c,), dtype=dtype)
        _, _, scale, shift = affine_form(gamma, beta, self.running_mean, self.running_var, self.eps, dtype)
        return scale, shift

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., channels) with "
                                 "at least 2 axes")
        if self.built and shape[-1] is not None and shape[-1] != self.num_features:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} channels; the layer "
                             f"was built for C={self.num_features}")
        return shape

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "eps": self.eps, "affine": self.affine, "name": self.name}

    def extra_repr(self) -> str:
        c = self.num_features if self.built else "?"
        return f"{c}, momentum={self.momentum}, eps={self.eps}" + ("" if self.affine else ", affine=False")


# -- layer and group normalization -------------------------------------------------------
def _standardize(xv, axes: tuple[int, ...], eps: float):
    """(x', 1/sigma) with x' = (x - mu) / sigma, sigma = sqrt(var + eps), mu and the biased
    var taken over ``axes`` of ``xv`` (kept as axes of length 1 in 1/sigma); two passes, so
    that a large mean costs no precision."""
    xp = backend.xp
    x_hat = xv - xv.mean(axis=axes, keepdims=True)
    var = xp.square(x_hat).mean(axis=axes, keepdims=True)
    inv_std = (1.0 / xp.sqrt(var + eps)).astype(xv.dtype, copy=False)
    x_hat *= inv_std
    return x_hat, inv_std


def _standardized_backward(dy, x_hat, inv_std, gamma, axes: tuple[int, ...], needs: tuple[bool, ...]):
    """(dJ/dx, dJ/dgamma, dJ/dbeta) of y = gamma x' + beta, x' = :func:`_standardize`'s,
    with ``gamma`` broadcast over the leading axes of ``dy`` (its trailing ones are
    gamma's) and the means over ``axes``:

        g = dJ/dy gamma,   dJ/dx = (1/sigma) (g - mean g - x' mean(g x'))
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (over the sample axes)

    ``None`` for each gradient that ``needs`` (x, gamma, beta) says is not wanted."""
    need_x, need_gamma, need_beta = needs
    features = gamma.size
    dx = dgamma = dbeta = None
    if need_beta:
        dbeta = channel_sums(dy.reshape(-1, features)).reshape(gamma.shape)
    if need_gamma:
        dgamma = channel_sums((dy * x_hat).reshape(-1, features)).reshape(gamma.shape)
    if need_x:
        g = dy * gamma
        dx = g - g.mean(axis=axes, keepdims=True)
        g *= x_hat
        dx -= x_hat * g.mean(axis=axes, keepdims=True)
        dx *= inv_std
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

    The input is viewed as (M, D) rows; only x', 1/sigma and gamma are kept for backward.
    Keyword: ``eps``.
    """

    def forward(self, x, gamma, beta):
        d = gamma.size
        xv = backend.xp.ascontiguousarray(x).reshape(x.size // d, d)
        self.x_hat, self.inv_std = _standardize(xv, (1,), self.eps)
        self.gamma = gamma.astype(x.dtype, copy=False).reshape(d)
        y = self.x_hat * self.gamma
        y += beta.astype(x.dtype, copy=False).reshape(d)
        return y.reshape(x.shape)

    def backward(self, dy):
        x_hat = self.x_hat
        dyv = backend.xp.ascontiguousarray(dy).reshape(x_hat.shape)
        dx, dgamma, dbeta = _standardized_backward(dyv, x_hat, self.inv_std, self.gamma, (1,), self.needs_grad)
        gamma_shape = self.inputs[1].shape
        return (None if dx is None else dx.reshape(dy.shape),
                None if dgamma is None else dgamma.reshape(gamma_shape),
                None if dbeta is None else dbeta.reshape(gamma_shape))


class GroupNormFunction(Function):
    """Group normalization of (N, ..., C) values as one node, with the closed-form backward:
    the C channels form ``groups`` contiguous groups of C/G, each sample's group is
    normalised over all its positions and channels, then gamma and beta act per channel.

    The input is viewed as (N, S, G, C/G) (S positions, H W for NHWC) and with mu and the
    biased var over axes (1, 3), sigma = sqrt(var + eps) and x' = (x - mu) / sigma:

        y = gamma x' + beta                               (gamma, beta per channel)
        g = dJ/dy gamma
        dJ/dx     = (1/sigma) (g - mean g - x' mean(g x'))   (means over axes (1, 3))
        dJ/dgamma = sum dJ/dy x',   dJ/dbeta = sum dJ/dy   (sums over N and S)

    Only x', 1/sigma and gamma are kept for backward. Keywords: ``groups``, ``eps``.
    """

    def forward(self, x, gamma, beta):
        n, c, groups = x.shape[0], x.shape[-1], self.groups
        positions = math.prod(x.shape[1:-1])
        xv = backend.xp.ascontiguousarray(x).reshape(n, positions, groups, c // groups)
        self.x_hat, self.inv_std = _standardize(xv, (1, 3), self.eps)
        self.gamma = gamma.astype(x.dtype, copy=False).reshape(groups, c // groups)
        y = self.x_hat * self.gamma
        y += beta.astype(x.dtype, copy=False).reshape(groups, c // groups)
        return y.reshape(x.shape)

    def backward(self, dy):
        x_hat = self.x_hat
        dyv = backend.xp.ascontiguousarray(dy).reshape(x_hat.shape)
        dx, dgamma, dbeta = _standardized_backward(dyv, x_hat, self.inv_std, self.gamma, (1, 3),
                                                   self.needs_grad)
        c = dy.shape[-1]
        return (None if dx is None else dx.reshape(dy.shape),
                None if dgamma is None else dgamma.reshape(c),
                None if dbeta is None else dbeta.reshape(c))


def _affine_operands(layer: Module, shape: tuple[int, ...], dtype):
    """(gamma, beta) for the layer's function: its parameters, or constants 1 and 0."""
    if layer.affine:
        return layer.weight, layer.bias
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
        if x.ndim < 2:
            raise input_error(self, x, f"(batch, ..., {', '.join(map(str, normalized))}) with at least 2 axes")
        k = self._trailing(tuple(x.shape), "input of shape")
        if tuple(x.shape[x.ndim - k:]) != normalized:
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


def _window_sum(a, before: int, after: int):
    """s_c = sum of a_{c - before} .. a_{c + after} along the last axis (zeros outside)."""
    xp = backend.xp
    c = a.shape[-1]
    padded = xp.zeros(a.shape[:-1] + (c + before + after,), dtype=a.dtype)
    padded[..., before:before + c] = a
    out = padded[..., 0:c].copy()
    for t in range(1, before + after + 1):
        out += padded[..., t:t + c]
    return out


class LocalResponseNormFunction(Function):
    """AlexNet's local response normalization across channels (last axis), as PyTorch:

        d_c = k + (alpha / n) sum_{c' = c - floor(n/2)}^{c + floor((n-1)/2)} a_{c'}^2
        b_c = a_c / d_c^beta

        dJ/da_i = dJ/db_i d_i^-beta
                  - (2 alpha beta / n) a_i sum_{j : i in window(j)} dJ/db_j a_j d_j^(-beta-1)
    """

    def forward(self, a):
        n = self.size
        self.before, self.after = n // 2, (n - 1) // 2
        d = _window_sum(a * a, self.before, self.after)
        d *= self.alpha / n
        d += self.k
        self.a, self.d = a, d
        self.scale = d ** (-self.beta)
        return a * self.scale

    def backward(self, dy):
        g = dy * self.a * self.scale / self.d  # dJ/db_j a_j d_j^(-beta-1)
        back = _window_sum(g, self.after, self.before)  # sum over the windows containing i
        return (dy * self.scale - (2 * self.alpha * self.beta / self.size) * self.a * back,)


@register_layer
class LocalResponseNorm(Module):
    """Local response normalization (AlexNet) across ``size`` neighbouring channels of the
    last axis, PyTorch's semantics (alpha is divided by ``size``):
    b_c = a_c / (k + alpha/size · sum of a_c'^2 over the window)^beta."""

    default_name = "local_response_norm"

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"LocalResponseNorm: size must be a positive int, got {size!r}")
        self.size, self.alpha, self.beta, self.k = size, float(alpha), float(beta), float(k)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 2:
            raise input_error(self, x, "(batch, ..., channels) with the channels on the last axis")
        return LocalResponseNormFunction.apply(x, size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)

    def compute_output_shape(self, input_shape):
        return check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., channels)")

    def get_config(self) -> dict:
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k, "name": self.name}

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
