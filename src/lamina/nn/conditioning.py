"""Feature-wise conditioning: FiLM and class-conditional batch normalization.

* FiLM (Perez et al. 2018) scales and shifts each feature of x by affine functions of a
  conditioning vector c:

      FiLM(x, c) = gamma(c) * x + beta(c),   gamma(c) = c W_gamma + b_gamma,  beta(c) = c W_beta + b_beta

  gamma and beta have one value per feature (the last axis), shared over the spatial axes of
  NHWC inputs.
* Conditional batch normalization (de Vries et al. 2017; the class-conditional BN of BigGAN)
  normalizes with a BatchNorm without its own affine and takes gamma and beta from per-class
  embedding tables:

      CBN(x, k) = gamma[k] * (x - mu) / sqrt(var + eps) + beta[k]
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.embedding import embedding
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    """(N, C) -> (N, 1, ..., 1, C) broadcasting over the middle axes of an ndim-axis input."""
    n, c = values.shape
    return values.reshape((n,) + (1,) * (ndim - 2) + (c,))


def _check_positive_int(who: str, what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {value!r}")
    return value


@register_layer
class FiLM(Module):
    """Feature-wise linear modulation: ``FiLM(features)(x, condition)`` with x of shape
    (N, ..., features) (e.g. NHWC) and condition of shape (N, condition_dim).

    ``condition_dim`` defaults to the width of the first condition seen. The gamma bias starts
    at 1 and every other parameter at small values, so a fresh layer is close to the identity.
    Parameters: ``gamma_weight`` (condition_dim, features), ``gamma_bias``, ``beta_weight``,
    ``beta_bias``.
    """

    def __init__(self, features: int, condition_dim: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.features = _check_positive_int("FiLM", "features", features)
        self.condition_dim = None if condition_dim is None else _check_positive_int(
            "FiLM", "condition_dim", condition_dim)

    def build(self, input_shape) -> None:
        if not isinstance(input_shape, list) or len(input_shape) != 2:
            raise ShapeError(f"{self._label()}: expects two inputs (x, condition), got shapes {input_shape}")
        _, condition_shape = input_shape
        if len(condition_shape) != 2 or condition_shape[-1] is None:
            raise ShapeError(f"{self._label()}: the condition must be (batch, condition_dim), got {condition_shape}")
        if self.condition_dim is None:
            self.condition_dim = int(condition_shape[-1])
        d, f = self.condition_dim, self.features
        dtype = backend.get_default_dtype()
        xavier = initializers.get("xavier_uniform")
        self.add_parameter("gamma_weight", xavier((d, f), d, f, dtype) * 0.1)
        self.add_parameter("gamma_bias", backend.xp.ones((f,), dtype=dtype))
        self.add_parameter("beta_weight", xavier((d, f), d, f, dtype) * 0.1)
        self.add_parameter("beta_bias", backend.xp.zeros((f,), dtype=dtype))
        self.built = True

    def modulation(self, condition) -> tuple[Tensor, Tensor]:
        """(gamma, beta), each (N, features), for a condition (N, condition_dim)."""
        condition = as_tensor(condition)
        if condition.ndim != 2 or condition.shape[1] != self.condition_dim:
            raise ShapeError(f"{self._label()}: the condition must have shape (batch, {self.condition_dim}), "
                             f"got {condition.shape}")
        return (linear(condition, self.gamma_weight, self.gamma_bias),
                linear(condition, self.beta_weight, self.beta_bias))

    def forward(self, x, condition) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 2 or x.shape[-1] != self.features:
            raise ShapeError(f"{self._label()}: x must be (batch, ..., {self.features}), got {x.shape}")
        gamma, beta = self.modulation(condition)
        if gamma.shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: x has batch {x.shape[0]} but the condition has {gamma.shape[0]}")
        return _per_sample(gamma, x.ndim) * x + _per_sample(beta, x.ndim)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {"features": self.features, "condition_dim": self.condition_dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"features={self.features}, condition_dim={self.condition_dim}"


@register_layer
class ConditionalBatchNorm(Module):
    """Class-conditional batch normalization: ``ConditionalBatchNorm(num_classes)(x, class_ids)``
    with x of shape (N, ..., C) and integer class ids of shape (N,).

    The statistics (batch ones in training, running ones in evaluation) come from the inner
    ``batch_norm`` (a :class:`BatchNorm` with ``affine=False``, same momentum convention);
    ``gamma`` (num_classes, C) starts at ones and ``beta`` (num_classes, C) at zeros.
    """

    def __init__(self, num_classes: int, momentum: float = 0.9, eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = _check_positive_int("ConditionalBatchNorm", "num_classes", num_classes)
        self.batch_norm = BatchNorm(momentum=momentum, eps=eps, affine=False)

    def build(self, input_shape) -> None:
        if not isinstance(input_shape, list) or len(input_shape) != 2:
            raise ShapeError(f"{self._label()}: expects two inputs (x, class_ids), got shapes {input_shape}")
        c = input_shape[0][-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {input_shape[0]} must be known")
        dtype = backend.get_default_dtype()
        self.add_parameter("gamma", backend.xp.ones((self.num_classes, c), dtype=dtype))
        self.add_parameter("beta", backend.xp.zeros((self.num_classes, c), dtype=dtype))
        self.built = True

    def forward(self, x, class_ids) -> Tensor:
        x = as_tensor(x)
        ids = backend.xp.asarray(class_ids.data if isinstance(class_ids, Tensor) else class_ids)
        if ids.ndim != 1 or ids.shape[0] != x.shape[0] or ids.dtype.kind not in "iu":
            raise ShapeError(f"{self._label()}: class_ids must be integers of shape ({x.shape[0]},), got "
                             f"{ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise ValueError(f"{self._label()}: class ids must lie in [0, {self.num_classes}), got values from "
                             f"{ids.min()} to {ids.max()}")
        normalized = self.batch_norm(x)
        gamma = _per_sample(embedding(ids, self.gamma), x.ndim)
        beta = _per_sample(embedding(ids, self.beta), x.ndim)
        return gamma * normalized + beta

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "momentum": self.batch_norm.momentum, "eps": self.batch_norm.eps,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
