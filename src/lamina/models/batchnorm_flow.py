"""Batch normalization as a flow layer (RealNVP, Dinh et al. 2017; MAF, Papamakarios et al. 2017)."""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, is_recomputing
from lamina.models.flows import InvertibleLayer
from lamina.nn.layer import register_layer

__all__ = ["BatchNormFlow"]


@register_layer
class BatchNormFlow(InvertibleLayer):
    """y = (x - m) / sqrt(v + eps) e^gamma + beta per feature, log|det J| = sum_i (gamma_i -
    log(v_i + eps) / 2).

    In training mode m and v are the batch's mean and (biased) variance, differentiated
    through, and running averages (``momentum``) are kept; in eval mode the running averages
    are used, and the layer is a fixed affine map. ``inverse`` uses the statistics of the last
    training batch in training mode, the running ones in eval mode."""

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"BatchNormFlow: momentum must be in (0, 1], got {momentum!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"BatchNormFlow: eps must be positive, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        self._batch_stats: tuple[np.ndarray, np.ndarray] | None = None

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d, dtype = self.features, backend.get_default_dtype()
        self.add_parameter("log_gamma", np.zeros(d, dtype=dtype))
        self.add_parameter("beta", np.zeros(d, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(d, dtype=dtype))
        self.register_buffer("running_var", np.ones(d, dtype=dtype))

    def _constant(self, values, like: Tensor) -> Tensor:
        return Tensor._wrap(backend.xp.asarray(np.asarray(values), dtype=like.dtype))

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self._constant(self.running_mean, x), self._constant(self.running_var, x)
        if x.shape[0] < 2:
            raise ValueError(f"{self._label()}: batch statistics need at least 2 samples in training mode, "
                             f"got a batch of {x.shape[0]}")
        mean = x.mean(axis=0)
        centred = x - mean
        var = (centred * centred).mean(axis=0)
        if not is_recomputing():
            m = self.momentum
            mean_data, var_data = backend.to_numpy(mean.data), backend.to_numpy(var.data)
            self.register_buffer("running_mean",
                                 ((1 - m) * self.running_mean + m * mean_data).astype(self.running_mean.dtype))
            self.register_buffer("running_var",
                                 ((1 - m) * self.running_var + m * var_data).astype(self.running_var.dtype))
            self._batch_stats = (mean_data, var_data)
        return mean, var

    def _log_det(self, var: Tensor, x: Tensor) -> Tensor:
        per_feature = self.log_gamma - 0.5 * F.log(var + self.eps)
        return per_feature.sum() + Tensor._wrap(backend.xp.zeros(x.shape[0], dtype=x.dtype))

    def _forward(self, x):
        mean, var = self._statistics(x)
        y = (x - mean) / F.sqrt(var + self.eps) * F.exp(self.log_gamma) + self.beta
        return y, self._log_det(var, x)

    def _inverse(self, y):
        if self.training and self._batch_stats is not None:
            mean, var = (self._constant(v, y) for v in self._batch_stats)
        else:
            mean, var = self._constant(self.running_mean, y), self._constant(self.running_var, y)
        x = (y - self.beta) * F.exp(-self.log_gamma) * F.sqrt(var + self.eps) + mean
        return x, -self._log_det(var, y)

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "eps": self.eps, "name": self.name}
