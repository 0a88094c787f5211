"""Normalization layers: batch normalization (course notes, Batch normalization) and
AlexNet's local response normalization.

Both normalise over the channel axis, which is the last one (NHWC / (N, C)).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

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

    Keywords: ``eps``, ``training``, ``running_mean`` / ``running_var`` (evaluation) and
    ``stats``, a dict that receives the batch ``mean``, biased ``var`` and count ``m``.
    """

    def forward(self, x, gamma, beta):
        xp = backend.xp
        c = x.shape[-1]
        m = x.size // c
        self.gamma, self.m = gamma, m
        if not self.training:
            # one fused multiply-add, y = x scale + shift, with the running statistics folded in
            self.inv_std = (1.0 / xp.sqrt(self.running_var + self.eps)).astype(x.dtype, copy=False)
            scale = gamma * self.inv_std
            self.x = x
            y = x * scale
            y += beta - self.running_mean.astype(x.dtype, copy=False) * scale
            return y
        # per-channel reductions over the (m, c) view: a GEMV for the mean, one fused
        # multiply-reduce (einsum) for the variance of the centred values
        mu = (xp.ones(m, dtype=x.dtype) @ x.reshape(m, c)) / m
        xc = x - mu
        var = xp.einsum("ij,ij->j", xc.reshape(m, c), xc.reshape(m, c)) / m
        self.stats.update(mean=mu, var=var, m=m)
        inv_std = (1.0 / xp.sqrt(var + self.eps)).astype(x.dtype, copy=False)
        self.xc, self.inv_std = xc, inv_std
        y = xc * (gamma * inv_std)  # gamma x' with x' = (x - mu) / sigma, kept as (x - mu)
        y += beta
        return y

    def backward(self, dy):
        xp = backend.xp
        inv_std, m = self.inv_std, self.m
        c = dy.shape[-1]
        need_x, need_gamma, need_beta = self.needs_grad
        dy2 = dy.reshape(m, c)
        k = self.gamma * inv_std
        if not self.training:
            dx = dy * k if need_x else None
            dbeta = xp.ones(m, dtype=dy.dtype) @ dy2 if need_beta else None
            dgamma = None
            if need_gamma:
                xc = self.x - self.running_mean.astype(dy.dtype, copy=False)
                dgamma = xp.einsum("ij,ij->j", dy2, xc.reshape(m, c)) * inv_std
            return dx, dgamma, dbeta
        xc = self.xc
        dbeta = xp.ones(m, dtype=dy.dtype) @ dy2
        dgamma = xp.einsum("ij,ij->j", dy2, xc.reshape(m, c)) * inv_std  # sum dJ/dy x'
        dx = None
        if need_x:
            # gamma / (m sigma) (m dJ/dy - dJ/dbeta - x' dJ/dgamma), in place on fresh arrays
            dx = xc * (-(k / m) * inv_std * dgamma)
            dx += dy * k
            dx -= (k / m) * dbeta
        return dx, (dgamma if need_gamma else None), (dbeta if need_beta else None)


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
