"""Normalization layers across the batch or the channels: batch normalization (course
notes, Batch normalization) and AlexNet's local response normalization.

Both work along the channel axis, which is the last one (NHWC / (N, C)). Layer and group
normalization, which normalise each sample on its own, are in :mod:`lamina.nn.sample_norm`.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor, is_recomputing
from lamina.errors import ShapeError
from lamina.functional._util import CHANNEL_ROW, merged_rows, repeated
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import standardized_backward_graph

__all__ = ["BatchNorm", "BatchNormFunction", "LocalResponseNorm", "LocalResponseNormFunction"]


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

    def backward_graph(self, dy):
        """The same VJP by tensor ops. In training x' and sigma depend on x, so the batch
        moments are computed again from the input tensor; in evaluation y is affine in x
        (the running statistics are constants): dJ/dx = gamma / sigma dJ/dy."""
        x, gamma, _ = self.inputs
        axes = tuple(range(x.ndim - 1))
        if self.training:
            return standardized_backward_graph(dy, x, gamma, axes, self.eps, self.needs_grad)
        need_x, need_gamma, need_beta = self.needs_grad
        dx = dy * (gamma * self.inv_std) if need_x else None
        dgamma = (dy * ((x - self.mu) * self.inv_std)).sum(axis=axes) if need_gamma else None
        return dx, dgamma, (dy.sum(axis=axes) if need_beta else None)


def check_momentum(layer: str, momentum) -> float:
    """``momentum`` of running statistics, checked to lie in [0, 1] (1 keeps them frozen)."""
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{layer}: momentum must be in [0, 1] (running = momentum·running + "
                         f"(1 - momentum)·batch), got {momentum!r}")
    return float(momentum)


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
      value: running = (1 - m_torch) running + m_torch batch, so m_torch = 1 - momentum);
      momentum = 1 keeps them frozen. ``momentum=None`` is PyTorch's cumulative average: with
      n the batches seen so far, this one included (buffer ``num_batches_tracked``),

          running = (1 - 1/n) · running + (1/n) · batch.

    * Evaluation: the running statistics replace the batch ones (one sample works).
    * ``track_running_stats=False``: no running statistics; the batch statistics normalise in
      evaluation too.
    * An empty batch (no value per channel) gives an empty output and leaves the running
      statistics as they are (``num_batches_tracked`` still counts it, as PyTorch's).

    Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0), also reachable as
    ``gamma`` and ``beta``; ``affine=False`` leaves them out (gamma = 1, beta = 0).
    """

    default_name = "batch_norm"
    track_running_stats = True               # (class defaults for layers saved before these options)
    _features: int | None = None

    def __init__(self, momentum: float | None = 0.9, eps: float = 1e-5, affine: bool = True,
                 track_running_stats: bool = True, name: str | None = None):
        super().__init__(name=name)
        if momentum is not None:
            momentum = check_momentum("BatchNorm", momentum)
        if eps <= 0:
            raise ValueError(f"BatchNorm: eps must be positive, got {eps!r}")
        self.momentum = momentum
        self.eps = float(eps)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self._features: int | None = None

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    @property
    def num_features(self) -> int:
        running = self._buffers.get("running_mean")
        return int(running.shape[0]) if running is not None else self._features

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., channels) with "
                                 "at least 2 axes")
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        xp, dtype = backend.xp, backend.get_default_dtype()
        self._features = int(c)
        if self.affine:
            self.add_parameter("weight", xp.ones((c,), dtype=dtype))
            self.add_parameter("bias", xp.zeros((c,), dtype=dtype))
        tracking = self.track_running_stats
        self.register_buffer("running_mean", xp.zeros((c,), dtype=dtype) if tracking else None)
        self.register_buffer("running_var", xp.ones((c,), dtype=dtype) if tracking else None)
        if tracking and self.momentum is None:
            self.register_buffer("num_batches_tracked", xp.zeros((), dtype=xp.int64))
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
        batch_statistics = self.training or not self.track_running_stats
        m = x.size // c
        if m == 0:
            if self.training and self.track_running_stats and not is_recomputing():
                self._running_weights()
            return x * gamma + beta
        if not batch_statistics:
            return BatchNormFunction.apply(x, gamma, beta, eps=self.eps, training=False,
                                           running_mean=self.running_mean, running_var=self.running_var)
        if m < 2:
            why = ("in training mode (a batch of one sample has no variance; use eval() for single samples)"
                   if self.track_running_stats else "(track_running_stats=False normalises with the batch "
                   "statistics, and a batch of one sample has no variance)")
            raise input_error(self, x, f"more than one value per channel {why}")
        stats: dict = {}
        y = BatchNormFunction.apply(x, gamma, beta, eps=self.eps, training=True, stats=stats)
        if not (self.training and self.track_running_stats) or is_recomputing():
            return y                         # (recomputing: a checkpoint's second run, the first one updated them)
        old, new = self._running_weights()
        dtype = self.running_mean.dtype
        unbiased = stats["var"] * (m / (m - 1))
        self.running_mean = (old * self.running_mean + new * stats["mean"]).astype(dtype, copy=False)
        self.running_var = (old * self.running_var + new * unbiased).astype(dtype, copy=False)
        return y

    def _running_weights(self) -> tuple[float, float]:
        """(a, b) with running = a · running + b · batch for this training batch, counted in
        ``num_batches_tracked`` under ``momentum=None``."""
        if self.momentum is not None:
            return self.momentum, 1.0 - self.momentum
        self.num_batches_tracked = self.num_batches_tracked + 1
        new = 1.0 / float(self.num_batches_tracked)
        return 1.0 - new, new

    def require_running_statistics(self, who: str) -> None:
        """A ValueError naming ``who`` unless the layer keeps running statistics."""
        if not self.track_running_stats:
            raise ValueError(f"{who}: {self._label()} has track_running_stats=False: it normalises with the batch "
                             "statistics in evaluation too, so there are no running statistics (no fixed affine map)")

    def evaluation_affine(self, dtype):
        """(scale, shift) with y = x scale + shift in evaluation mode (running statistics)."""
        self.require_running_statistics("evaluation_affine")
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
        return {"momentum": self.momentum, "eps": self.eps, "affine": self.affine,
                "track_running_stats": self.track_running_stats, "name": self.name}

    def extra_repr(self) -> str:
        c = self.num_features if self.built else "?"
        return (f"{c}, momentum={self.momentum}, eps={self.eps}" + ("" if self.affine else ", affine=False")
                + ("" if self.track_running_stats else ", track_running_stats=False"))


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

    def backward_graph(self, dy):
        """The same VJP by tensor ops on the input a, the window sums as linear nodes."""
        a = self.inputs[0]
        d = _WindowSum.apply(a * a, before=self.before, after=self.after) * (self.alpha / self.size) + self.k
        scale = d ** (-self.beta)
        back = _WindowSum.apply(dy * a * scale / d, before=self.after, after=self.before)
        return (dy * scale - (2 * self.alpha * self.beta / self.size) * a * back,)


class _WindowSum(Function):
    """:func:`_window_sum` as a node: linear in its input, its adjoint the window sum with
    ``before`` and ``after`` swapped (for :meth:`LocalResponseNormFunction.backward_graph`)."""

    def forward(self, a):
        return _window_sum(a, self.before, self.after)

    def backward(self, dy):
        return (_window_sum(dy, self.after, self.before),)

    backward_graph = Function.linear_backward_graph


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
