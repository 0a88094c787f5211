"""Layer and group normalization as autograd nodes, :class:`LayerNormFunction` and
:class:`GroupNormFunction`, each with its closed-form backward, and the NumPy kernels they run
on: each sample's group statistics taken in cache-sized chunks on lamina's threads (one
row-wise pass for small layer norms), the standardisation and its VJP, and
:func:`standardized_backward_graph`, the same VJP by tensor ops (also batch norm's). The layers
that call them are in :mod:`lamina.nn.sample_norm`.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function
from lamina.functional._util import CHANNEL_ROW, channel_sums, repeated, sum_to

__all__ = ["GroupNormFunction", "LayerNormFunction", "standardized_backward_graph"]


def _fold(positions: int, c: int) -> int:
    """r, the number of positions laid side by side in one row of r C values (at most
    CHANNEL_ROW), so that per-channel operands broadcast along rows of hundreds of values
    instead of C (NumPy's broadcasting runs one inner loop per row)."""
    return max((r for r in range(1, max(CHANNEL_ROW // c, 1) + 1) if positions % r == 0), default=1)


def _group_means(a, groups: int, c: int, weights=None):
    """(N, G): the mean of each sample's group in ``a`` (N, S', W), W = r C (r positions side
    by side): its S' r positions and C / G channels; with ``weights`` (W,), the mean of
    ``a`` times them, the product never formed. The sums over the positions are one GEMV per
    sample (a strided reduction over the group axes of (N, S, G, C/G) runs 40x slower)."""
    xp = backend.xp
    n, rows, width = a.shape
    r = width // c
    count = rows * r * (c // groups)
    sums = a[:, 0] if rows == 1 else xp.matmul(xp.ones(rows, dtype=a.dtype), a)     # (N, W)
    if weights is not None:
        if groups == 1:                                        # one GEMV over the W values
            return xp.matmul(sums, weights)[:, None] / count
        sums = sums * weights
    per_channel = sums.reshape(n, r, c).sum(axis=1) if r > 1 else sums
    return per_channel.reshape(n, groups, c // groups).sum(axis=2) / count


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

    ``None`` for each gradient that ``needs`` (x, gamma, beta) says is not wanted. Each chunk
    holds one temporary, x': dJ/dy x' is formed in dJ/dx's own rows, and the means of g and
    g x' are weighted sums of dJ/dy and dJ/dy x' (gamma applied to the sums over positions).
    The chunks' parts of dJ/dgamma and dJ/dbeta are added in chunk order (the same sums
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
        dbeta = _channel_totals(d, c) if need_beta else None
        if not (need_x or need_gamma):
            return None, dbeta
        x_part = xp.subtract(xv[lo:hi], _spread(mean[lo:hi], c, width))
        x_part *= scale
        d_x = xp.multiply(d, x_part, out=dx[lo:hi] if need_x else None)       # dJ/dy x'
        dgamma = _channel_totals(d_x, c) if need_gamma else None
        if need_x:
            mean_gx = _group_means(d_x, groups, c, gamma_row)
            mean_g = _group_means(d, groups, c, gamma_row)
            out = dx[lo:hi]
            xp.multiply(d, gamma_row, out=out)
            out -= _spread(mean_g, c, width)
            x_part *= _spread(mean_gx, c, width)
            out -= x_part
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
    With D = 0 there is nothing to normalise: the output and every gradient are empty, as
    PyTorch's. Keyword: ``eps``.
    """

    def forward(self, x, gamma, beta):
        d = gamma.size
        if d == 0:
            self.xv = None
            return backend.xp.empty(x.shape, dtype=x.dtype)
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
        gamma_shape = self.inputs[1].shape
        if self.xv is None:                                 # D = 0: empty gradients
            xp = backend.xp
            return tuple(xp.zeros(shape, dtype=dy.dtype) if need else None
                         for shape, need in zip((dy.shape, gamma_shape, gamma_shape), self.needs_grad))
        dyv = backend.xp.ascontiguousarray(dy).reshape(self.xv.shape)
        dx, dgamma, dbeta = _standardized_backward(dyv, self.xv, self.mean, self.inv_std, self.gamma, 1,
                                                   self.gamma.size, self.needs_grad)
        return (None if dx is None else dx.reshape(dy.shape),
                None if dgamma is None else dgamma.reshape(gamma_shape),
                None if dbeta is None else dbeta.reshape(gamma_shape))

    def backward_graph(self, dy):
        """The same VJP by tensor ops, mu and sigma computed again from the input tensor (they
        depend on x), on M rows of the D normalised values."""
        x, gamma, _ = self.inputs
        d = gamma.size
        if d == 0:
            return tuple(t * 0.0 if need else None for t, need in zip((dy, gamma, gamma), self.needs_grad))
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
