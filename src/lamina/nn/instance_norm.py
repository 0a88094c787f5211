"""Instance normalization: batch normalization (course notes, Batch normalization) with the
statistics of one sample and one channel at a time, taken over the spatial axes only.

With m the number of positions of a sample (L steps of a sequence, H W pixels of an image),
for sample n and channel c:

    mu_nc = (1/m) sum_s x_nsc,   sigma_nc^2 = (1/m) sum_s (x_nsc - mu_nc)^2   (biased)
    x'_nsc = (x_nsc - mu_nc) / sqrt(sigma_nc^2 + eps),   y_nsc = gamma_c x'_nsc + beta_c

A style-transfer network normalises each image's contrast this way; no sample depends on
another, so training and evaluation agree unless running statistics are tracked.
Channels last: (batch, steps, channels) for :class:`InstanceNorm1D`, NHWC for
:class:`InstanceNorm2D`; both follow PyTorch's ``InstanceNorm1d`` / ``InstanceNorm2d``.

Options of both layers:

* ``affine``: learn ``weight`` (gamma, init 1) and ``bias`` (beta, init 0) per channel
  (default off: gamma = 1, beta = 0).
* ``track_running_stats``: in training, also keep ``running_mean`` and ``running_var``
  buffers of the batch's average statistics (the unbiased variance, m / (m - 1) sigma^2),
  followed as BatchNorm's exponentially weighted average

      running = momentum · running + (1 - momentum) · (mean over the samples of the batch)

  and normalise with them in evaluation. momentum = 0.9 is PyTorch's momentum = 0.1
  (PyTorch weighs the new value). Without it (the default), evaluation uses each sample's
  own statistics, as training does.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor, is_recomputing
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNormFunction, check_momentum
from lamina.nn.sample_norm import GroupNormFunction, _check_eps

__all__ = ["InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D", "InstanceNormFunction"]


class InstanceNormFunction(GroupNormFunction):
    """Instance normalization of (N, ..., C) values as one node: a group normalization with
    one group per channel, so its closed-form backward is the notes' batch-norm one applied
    to each sample and channel over its m positions:

        dJ/dx_nsc = gamma_c / (m sigma_nc) (m dJ/dy_nsc - sum_s dJ/dy_nsc - x'_nsc sum_s dJ/dy_nsc x'_nsc)
        dJ/dgamma_c = sum_n sum_s dJ/dy_nsc x'_nsc,   dJ/dbeta_c = sum_n sum_s dJ/dy_nsc

    Keywords: ``eps``, and ``stats``, a dict that (when given) receives the per-sample
    ``mean`` and biased ``var``, both (N, C) float64, for running statistics.
    """

    stats: dict | None = None

    def forward(self, x, gamma, beta):
        self.groups = x.shape[-1]
        y = super().forward(x, gamma, beta)
        if self.stats is not None:
            # the variance from the kept 1 / sqrt(var + eps): no second pass over x
            inv_std = self.inv_std.astype(backend.xp.float64)
            var = backend.xp.maximum(1.0 / (inv_std * inv_std) - self.eps, 0.0)
            self.stats.update(mean=self.mean.astype(backend.xp.float64), var=var)
        return y


class _InstanceNorm(Module):
    """What both layers share; ``spatial_axes`` is the number of axes between the batch and
    channel axes."""

    spatial_axes = 0
    _EXPECTED = ""

    def __init__(self, eps: float = 1e-5, momentum: float = 0.9, affine: bool = False,
                 track_running_stats: bool = False, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.eps = _check_eps(who, eps)
        self.momentum = check_momentum(who, momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.num_features: int | None = None

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    def _check_shape(self, input_shape) -> tuple:
        shape = check_shape_ndim(self, input_shape, self.spatial_axes + 2, self._EXPECTED)
        c = shape[-1]
        if self.num_features is not None and c is not None and c != self.num_features:
            raise ShapeError(f"{self._label()}: input shape {shape} has {c} channels; the layer was built "
                             f"for C={self.num_features}")
        return shape

    def build(self, input_shape) -> None:
        shape = self._check_shape(input_shape)
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        self.num_features = int(c)
        xp, dtype = backend.xp, backend.get_default_dtype()
        if self.affine:
            self.add_parameter("weight", xp.ones((c,), dtype=dtype))
            self.add_parameter("bias", xp.zeros((c,), dtype=dtype))
        if self.track_running_stats:
            self.register_buffer("running_mean", xp.zeros((c,), dtype=dtype))
            self.register_buffer("running_var", xp.ones((c,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c = self.num_features
        if x.ndim != self.spatial_axes + 2 or x.shape[-1] != c:
            hint = ""
            if x.ndim == self.spatial_axes + 2 and x.shape[1] == c:
                hint = "; the channels look first: put them last with x.transpose"
            raise input_error(self, x, f"{self._EXPECTED} with C={c} channels on the last axis{hint}")
        if self.affine:
            gamma, beta = self.weight, self.bias
        else:
            xp = backend.xp
            gamma = Tensor._wrap(xp.ones((c,), dtype=x.dtype))
            beta = Tensor._wrap(xp.zeros((c,), dtype=x.dtype))
        if self.track_running_stats and not self.training:
            return BatchNormFunction.apply(x, gamma, beta, eps=self.eps, training=False,
                                           running_mean=self.running_mean, running_var=self.running_var)
        m = math.prod(x.shape[1:-1])
        if m < 2:
            raise input_error(self, x, "more than one position per channel (the statistics of a single value "
                                       "normalise it to 0)")
        if not (self.track_running_stats and self.training) or is_recomputing():
            return InstanceNormFunction.apply(x, gamma, beta, eps=self.eps)
        stats: dict = {}
        y = InstanceNormFunction.apply(x, gamma, beta, eps=self.eps, stats=stats)
        self._update_running_stats(stats["mean"], stats["var"] * (m / (m - 1)))
        return y

    def _update_running_stats(self, means, unbiased_vars) -> None:
        """running = momentum · running + (1 - momentum) · (the batch average of (N, C) statistics)."""
        mom = self.momentum
        dtype = self.running_mean.dtype
        self.running_mean = (mom * self.running_mean + (1 - mom) * means.mean(axis=0)).astype(dtype)
        self.running_var = (mom * self.running_var + (1 - mom) * unbiased_vars.mean(axis=0)).astype(dtype)

    def compute_output_shape(self, input_shape):
        return self._check_shape(input_shape)

    def get_config(self) -> dict:
        return {"eps": self.eps, "momentum": self.momentum, "affine": self.affine,
                "track_running_stats": self.track_running_stats, "name": self.name}

    def extra_repr(self) -> str:
        c = self.num_features if self.num_features is not None else "?"
        text = f"{c}, eps={self.eps}"
        if self.track_running_stats:
            text += f", momentum={self.momentum}, track_running_stats=True"
        return text + (", affine=True" if self.affine else "")


@register_layer
class InstanceNorm1D(_InstanceNorm):
    """Instance normalization of sequences (batch, steps, channels): each sample's channels
    normalised over its steps. PyTorch's ``InstanceNorm1d`` on the (batch, channels, steps)
    transpose. Options as in the module docstring."""

    spatial_axes = 1
    _EXPECTED = "(batch, steps, channels)"


@register_layer
class InstanceNorm2D(_InstanceNorm):
    """Instance normalization of NHWC images: each image's channels normalised over its H W
    pixels. PyTorch's ``InstanceNorm2d`` on the NCHW transpose. Options as in the module
    docstring."""

    spatial_axes = 2
    _EXPECTED = "NHWC (batch, height, width, channels)"


@register_layer
class InstanceNorm3D(_InstanceNorm):
    """Instance normalization of NDHWC volumes: each volume's channels normalised over its
    D H W voxels. PyTorch's ``InstanceNorm3d`` on the NCDHW transpose. Options as in the
    module docstring."""

    spatial_axes = 3
    _EXPECTED = "NDHWC (batch, depth, height, width, channels)"
