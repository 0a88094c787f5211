"""Noisy linear layers for exploration (Fortunato et al., 2018, "Noisy Networks for Exploration").

A NoisyDense layer learns the mean and the scale of its weights' noise:

    y = x (mu_W + sigma_W * eps_W) + (mu_b + sigma_b * eps_b)

with * elementwise and eps drawn by :meth:`NoisyDense.reset_noise`. Factorised Gaussian noise
(the default) draws one vector per side, eps_in (n_in,) and eps_out (units,), and sets

    eps_W[i, j] = f(eps_in[i]) f(eps_out[j]),   eps_b = f(eps_out),   f(x) = sgn(x) sqrt(|x|)

(n_in + units draws instead of n_in units); independent noise draws every entry from N(0, 1).
The paper's initialisation, with p = n_in: factorised mu ~ U[-1/sqrt(p), 1/sqrt(p)] and
sigma = sigma0 / sqrt(p); independent mu ~ U[-sqrt(3/p), sqrt(3/p)] and sigma = 0.017.

The noise stays fixed between calls of :meth:`NoisyDense.reset_noise` (draws come from
:func:`lamina.backend.rng`), so that several passes can see the same network; in evaluation the
layer uses the mean weights mu alone. The weights are built from the parameters with tensor
ops, so gradients (of any order) reach mu and sigma: dJ/dsigma_W = dJ/dW * eps_W.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Tensor, tensor
from lamina.errors import ShapeError
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.dense import linear
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["NoisyDense", "reset_noise", "signed_sqrt"]

INDEPENDENT_SIGMA = 0.017
"""The initial sigma of independent (not factorised) noise in the paper."""


def signed_sqrt(x: numpy.ndarray) -> numpy.ndarray:
    """f(x) = sgn(x) sqrt(|x|), the transform of factorised noise."""
    return numpy.sign(x) * numpy.sqrt(numpy.abs(x))


@register_layer
class NoisyDense(Module):
    """A fully connected layer with learned Gaussian weight noise: y = g(x W + b) with
    W = mu_W + sigma_W * eps_W and b = mu_b + sigma_b * eps_b in training and W = mu_W,
    b = mu_b in evaluation (see the module docstring for the noise and the initialisation).

    Parameters ``weight_mu``, ``weight_sigma`` (n_in, units), ``bias_mu``, ``bias_sigma``
    (units,); buffers ``weight_epsilon`` and ``bias_epsilon``, redrawn by :meth:`reset_noise`
    (and once when the layer is built)."""

    streamable = True

    def __init__(self, units: int, sigma0: float = 0.5, factorised: bool = True, activation=None,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"NoisyDense: units must be a positive int, got {units!r}")
        if isinstance(sigma0, bool) or not isinstance(sigma0, numbers.Real) or not 0.0 <= sigma0 < math.inf:
            raise ValueError(f"NoisyDense: sigma0 must be a finite number >= 0, got {sigma0!r}")
        self.units, self.sigma0, self.factorised = units, float(sigma0), bool(factorised)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        dtype = backend.get_default_dtype()
        if self.factorised:
            bound, sigma = 1.0 / math.sqrt(n_in), self.sigma0 / math.sqrt(n_in)
        else:
            bound, sigma = math.sqrt(3.0 / n_in), INDEPENDENT_SIGMA
        draw = backend.rng().uniform
        self.add_parameter("weight_mu", draw(-bound, bound, (n_in, self.units)).astype(dtype))
        self.add_parameter("weight_sigma", numpy.full((n_in, self.units), sigma, dtype=dtype))
        self.add_parameter("bias_mu", draw(-bound, bound, (self.units,)).astype(dtype))
        self.add_parameter("bias_sigma", numpy.full((self.units,), sigma, dtype=dtype))
        self.built = True
        self.reset_noise()

    def reset_noise(self) -> None:
        """Draw new noise eps_W, eps_b from :func:`lamina.backend.rng` (factorised or independent)."""
        n_in, dtype = self.weight_mu.shape[0], self.weight_mu.dtype
        standard_normal = backend.rng().standard_normal
        if self.factorised:
            eps_in, eps_out = signed_sqrt(standard_normal(n_in)), signed_sqrt(standard_normal(self.units))
            weight_eps, bias_eps = numpy.outer(eps_in, eps_out), eps_out
        else:
            weight_eps, bias_eps = standard_normal((n_in, self.units)), standard_normal(self.units)
        self.register_buffer("weight_epsilon", backend.xp.asarray(weight_eps.astype(dtype)))
        self.register_buffer("bias_epsilon", backend.xp.asarray(bias_eps.astype(dtype)))

    def noisy_weights(self) -> tuple[Tensor, Tensor]:
        """(W, b) as the next forward pass uses them: with the noise in training, mu in evaluation."""
        if not self.training:
            return self.weight_mu, self.bias_mu
        weight = self.weight_mu + self.weight_sigma * tensor(self.weight_epsilon)
        return weight, self.bias_mu + self.bias_sigma * tensor(self.bias_epsilon)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n_in = self.weight_mu.shape[0]
        if not x.shape or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} "
                                       "features the layer was built for")
        weight, bias = self.noisy_weights()
        z = linear(x, weight, bias)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, "sigma0": self.sigma0, "factorised": self.factorised,
                "activation": activation_config(self), "name": self.name}

    def extra_repr(self) -> str:
        return f"units={self.units}, sigma0={self.sigma0}, factorised={self.factorised}"


def reset_noise(module: Module) -> None:
    """Redraw the noise of every :class:`NoisyDense` inside ``module`` (itself included)."""
    for layer in module.modules():
        if isinstance(layer, NoisyDense) and layer.built:
            layer.reset_noise()
