"""Bayesian layers: Bayes by Backprop (Blundell et al., 2015).

A Bayesian layer keeps a distribution over its weights instead of one value: a diagonal
Gaussian posterior q(w) = N(mu, sigma^2) with sigma = softplus(rho) = log(1 + e^rho) (always
positive, trained through rho), and a prior p(w) = N(0, prior_sigma^2). Each forward pass in
training draws weights by reparameterization, w = mu + sigma * eps, eps ~ N(0, 1), so that
gradients reach mu and rho.

Training maximizes the evidence lower bound (ELBO); per training sample, the cost is

    J = (1/m) sum_batch -log p(y | x, w) + KL(q || p) / N,

the data's negative log-likelihood on a mini-batch of m (cross-entropy, or mean squared
error for a Gaussian likelihood) plus the KL divergence of the whole posterior from the prior
(:func:`bayesian_kl`) spread over the N training samples::

    model = Sequential(BayesianDense(64, activation="relu"), BayesianDense(1))
    loss = lambda out, y: F.mean_squared_error(out, y) + bayesian_kl(model) / len(x_train)
    Trainer(model, loss, Adam(model, lr=1e-2), metrics=()).fit((x_train, y_train), epochs=100)
    mean, std = mc_predict(model, x_new, num_samples=50)

In evaluation mode a layer uses the posterior means (a deterministic network) unless
``sample_in_eval`` is set; :func:`mc_predict` samples in every pass and gives the predictive
mean and standard deviation over passes, an estimate of the model's uncertainty.

``local_reparameterization=True`` (Kingma et al., 2015) samples the pre-activations instead
of the weights: z = x mu + b_mu + sqrt(x^2 sigma^2 + sigma_b^2) * eps with eps per sample
and unit, the same distribution per sample as z = x w + b with w drawn, but with independent
noise for each sample of the batch (lower-variance gradients, one draw per output instead of
per weight).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.activation import activation_config, get_activation
from lamina.nn.dense import linear
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["BayesianDense", "bayesian_kl", "gaussian_kl", "mc_predict"]


def gaussian_kl(mu, sigma, prior_sigma: float) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, prior_sigma^2)) summed over every element:

        sum log(prior_sigma / sigma) + (sigma^2 + mu^2) / (2 prior_sigma^2) - 1/2."""
    mu, sigma = as_tensor(mu), as_tensor(sigma)
    variance_ratio = (sigma * sigma + mu * mu) * (0.5 / prior_sigma ** 2)
    return (math.log(prior_sigma) - F.log(sigma) + variance_ratio - 0.5).sum()


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


@register_layer
class BayesianDense(Module):
    """A fully connected layer with a Gaussian posterior over its weights and biases (see the
    module notes): a = g(x w + b), w ~ N(weight_mu, softplus(weight_rho)^2) drawn anew on each
    forward pass in training (or always, with ``sample_in_eval``), the means in evaluation.

    ``prior_sigma``: the standard deviation of the zero-mean Gaussian prior. ``posterior_rho_init``:
    rho's initial value (-5: sigma = 0.0067, weights start almost deterministic).
    ``kernel_init``: the initializer of the weight means. :meth:`kl_loss` is KL(q || prior)
    summed over the layer's weights and biases."""

    streamable = True

    def __init__(self, units: int, activation=None, prior_sigma: float = 1.0, posterior_rho_init: float = -5.0,
                 use_bias: bool = True, local_reparameterization: bool = False, sample_in_eval: bool = False,
                 kernel_init="he_uniform", name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "BayesianDense: units")
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.prior_sigma = _positive_number(prior_sigma, "BayesianDense: prior_sigma")
        if isinstance(posterior_rho_init, bool) or not isinstance(posterior_rho_init, (int, float)) or \
                not math.isfinite(posterior_rho_init):
            raise ValueError(f"BayesianDense: posterior_rho_init must be a finite number, got {posterior_rho_init!r}")
        self.posterior_rho_init = float(posterior_rho_init)
        self.use_bias = bool(use_bias)
        self.local_reparameterization = bool(local_reparameterization)
        self.sample_in_eval = bool(sample_in_eval)
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        dtype = backend.get_default_dtype()
        self.add_parameter("weight_mu", initializers.get(self.kernel_init)((n_in, self.units), n_in, self.units, dtype))
        self.add_parameter("weight_rho", np.full((n_in, self.units), self.posterior_rho_init, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias_mu", np.zeros(self.units, dtype=dtype))
            self.add_parameter("bias_rho", np.full(self.units, self.posterior_rho_init, dtype=dtype))
        self.built = True

    # -- the posterior ---------------------------------------------------------------------
    def weight_sigma(self) -> Tensor:
        return F.softplus(self.weight_rho)

    def bias_sigma(self) -> Tensor | None:
        return F.softplus(self.bias_rho) if self.use_bias else None

    def kl_loss(self) -> Tensor:
        """KL(q || p) over the layer's weights (and biases): a scalar on the graph of mu and rho."""
        kl = gaussian_kl(self.weight_mu, self.weight_sigma(), self.prior_sigma)
        if self.use_bias:
            kl = kl + gaussian_kl(self.bias_mu, self.bias_sigma(), self.prior_sigma)
        return kl

    def _noise(self, shape) -> Tensor:
        values = backend.rng().standard_normal(size=tuple(shape))
        return Tensor._wrap(backend.xp.asarray(values.astype(self.weight_mu.dtype)))

    # -- running -----------------------------------------------------------------------------
    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n_in = self.weight_mu.shape[0]
        if x.ndim < 2 or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} features the "
                                       "layer was built for")
        bias_mu = self.bias_mu if self.use_bias else None
        if not (self.training or self.sample_in_eval):
            z = linear(x, self.weight_mu, bias_mu)
        elif self.local_reparameterization:
            mean = linear(x, self.weight_mu, bias_mu)
            sigma_w = self.weight_sigma()
            variance = linear(x * x, sigma_w * sigma_w, F.square(self.bias_sigma()) if self.use_bias else None)
            z = mean + F.sqrt(variance) * self._noise(mean.shape)
        else:
            weight = self.weight_mu + self.weight_sigma() * self._noise(self.weight_mu.shape)
            bias = bias_mu + self.bias_sigma() * self._noise(bias_mu.shape) if self.use_bias else None
            z = linear(x, weight, bias)
        return self.activation(z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "activation": activation_config(self),
            "prior_sigma": self.prior_sigma,
            "posterior_rho_init": self.posterior_rho_init,
            "use_bias": self.use_bias,
            "local_reparameterization": self.local_reparameterization,
            "sample_in_eval": self.sample_in_eval,
            "kernel_init": initializers.serialize(self.kernel_init),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        n_in = self.weight_mu.shape[0] if self.built else "?"
        act = self.activation_spec if isinstance(self.activation_spec, str) else None
        return (f"{n_in} -> {self.units}" + (f", activation={act!r}" if act else "")
                + f", prior_sigma={self.prior_sigma}" + (", local" if self.local_reparameterization else ""))


def bayesian_kl(model: Module) -> Tensor | float:
    """The sum of ``kl_loss()`` over the Bayesian layers of ``model`` (0.0 when it has none):
    the KL term of the ELBO."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, BayesianDense):
            total = module.kl_loss() + total
    return total


@contextlib.contextmanager
def _sampling_everywhere(model: Module) -> Iterator[None]:
    layers = [m for m in model.modules() if isinstance(m, BayesianDense)]
    before = [layer.sample_in_eval for layer in layers]
    for layer in layers:
        layer.sample_in_eval = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.sample_in_eval = value


def mc_predict(model: Module, x, num_samples: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo prediction: ``num_samples`` forward passes of ``model`` in evaluation mode
    with every Bayesian layer sampling its weights; returns the mean and the standard
    deviation of the outputs over the passes (arrays of the output's shape). The model's
    modes and the layers' ``sample_in_eval`` are restored afterwards."""
    positive_int(num_samples, "mc_predict: num_samples")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with no_grad(), _sampling_everywhere(model):
            outputs = np.stack([backend.to_numpy(model(x).data) for _ in range(num_samples)])
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
    return outputs.mean(axis=0), outputs.std(axis=0)
