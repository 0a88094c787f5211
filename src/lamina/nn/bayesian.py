"""Bayesian layers: Bayes by Backprop (Blundell et al., 2015).

A Bayesian layer keeps a distribution over its weights instead of one value: a diagonal
Gaussian posterior q(w) = N(mu, sigma^2) with sigma = softplus(rho) = log(1 + e^rho) (always
positive, trained through rho), and a prior p(w): N(0, prior_sigma^2), or the scale mixture
pi N(0, sigma_1^2) + (1 - pi) N(0, sigma_2^2) of Blundell et al. (``prior_mixture``).

Training maximizes the evidence lower bound (ELBO); per training sample, the cost is

    J = (1/m) sum_batch -log p(y | x, w) + KL(q || p) / N,

the data's negative log-likelihood on a mini-batch of m (cross-entropy, or mean squared
error for a Gaussian likelihood) plus the KL divergence of the whole posterior from the prior
(:func:`bayesian_kl`) spread over the N training samples (:func:`elbo_loss` builds it for
the Trainer)::

    model = Sequential(BayesianDense(64, activation="relu"), BayesianDense(1))
    loss = elbo_loss(model, F.mean_squared_error, dataset_size=len(x_train))
    Trainer(model, loss, Adam(model, lr=1e-2), metrics=()).fit((x_train, y_train), epochs=100)
    mean, std = mc_predict(model, x_new, num_samples=50)

The KL is in closed form for the Gaussian prior and a one-sample Monte Carlo estimate,
log q(w) - log p(w) at a fresh w ~ q, for the mixture.

Each forward pass in training samples by one of three ``estimator`` s, all with outputs of the
same distribution per sample and gradients reaching mu and rho:

* ``'reparameterization'``: w = mu + sigma * eps, eps ~ N(0, 1), one weight draw per pass
  shared by the batch (TFP's DenseReparameterization).
* ``'local_reparameterization'`` (Kingma et al., 2015): the pre-activations are sampled
  instead, z = x mu + b_mu + sqrt(x^2 sigma^2 + sigma_b^2) * eps with eps per sample and
  unit: independent noise per sample, lower-variance gradients.
* ``'flipout'`` (Wen et al., 2018): one perturbation dW = sigma * eps per pass decorrelated
  across the batch by random sign vectors s (inputs) and r (outputs) of +-1 per sample,
  z = x mu + b + ((x * s) dW) * r, with the bias drawn b = b_mu + sigma_b * eps_b.

In evaluation mode a layer uses the posterior means (a deterministic network) unless
``sample_in_eval`` is set; :func:`mc_predict` samples in every pass and gives the predictive
mean and standard deviation over passes, an estimate of the model's uncertainty. The
initialization of bayesian-torch is ``kernel_init=init.normal(0.1), posterior_rho_init=-3``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

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

__all__ = ["ESTIMATORS", "BayesianDense", "BayesianLayer", "bayesian_kl", "elbo_loss", "gaussian_kl",
           "mc_predict", "scale_mixture_log_prob"]

ESTIMATORS = ("reparameterization", "local_reparameterization", "flipout")
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_kl(mu, sigma, prior_sigma: float) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, prior_sigma^2)) summed over every element:

        sum log(prior_sigma / sigma) + (sigma^2 + mu^2) / (2 prior_sigma^2) - 1/2."""
    mu, sigma = as_tensor(mu), as_tensor(sigma)
    variance_ratio = (sigma * sigma + mu * mu) * (0.5 / prior_sigma ** 2)
    return (math.log(prior_sigma) - F.log(sigma) + variance_ratio - 0.5).sum()


def _zero_mean_normal_log_prob(w: Tensor, sigma: float) -> Tensor:
    return w * w * (-0.5 / sigma ** 2) - (math.log(sigma) + _LOG_SQRT_2PI)


def scale_mixture_log_prob(w, pi: float, sigma_1: float, sigma_2: float) -> Tensor:
    """log(pi N(w; 0, sigma_1^2) + (1 - pi) N(w; 0, sigma_2^2)) elementwise, by logsumexp."""
    w = as_tensor(w)
    parts = [_zero_mean_normal_log_prob(w, sigma_1) + math.log(pi),
             _zero_mean_normal_log_prob(w, sigma_2) + math.log1p(-pi)]
    return F.logsumexp(F.stack(parts), axis=0)


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _mixture(value, who: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{who}: prior_mixture must be (pi, sigma_1, sigma_2), got {value!r}")
    pi = value[0]
    if isinstance(pi, bool) or not isinstance(pi, (int, float)) or not 0 < pi < 1:
        raise ValueError(f"{who}: the mixture weight pi of prior_mixture must be in (0, 1), got {pi!r}")
    return (float(pi), _positive_number(value[1], f"{who}: prior_mixture sigma_1"),
            _positive_number(value[2], f"{who}: prior_mixture sigma_2"))


def _estimator(estimator, local_reparameterization, who: str) -> str:
    if local_reparameterization:
        if estimator not in (None, "local_reparameterization"):
            raise ValueError(f"{who}: local_reparameterization=True contradicts estimator={estimator!r}")
        return "local_reparameterization"
    estimator = "reparameterization" if estimator is None else estimator
    if estimator not in ESTIMATORS:
        raise ValueError(f"{who}: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return estimator


class BayesianLayer(Module):
    """What the Bayesian layers share (module notes): the posterior's parameters ``weight_mu``,
    ``weight_rho`` (and ``bias_mu``, ``bias_rho``), the prior, the KL and the three estimators.
    A subclass gives ``_apply(x, weight, bias)`` (its deterministic computation), the shape of
    its input and output sign vectors for flipout, and builds with :meth:`_add_posterior`."""

    streamable = True

    def _set_bayesian_options(self, activation, prior_sigma, prior_mixture, posterior_rho_init, use_bias,
                              estimator, local_reparameterization, sample_in_eval, kernel_init) -> None:
        who = type(self).__name__
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.prior_sigma = _positive_number(prior_sigma, f"{who}: prior_sigma")
        self.prior_mixture = _mixture(prior_mixture, who)
        if isinstance(posterior_rho_init, bool) or not isinstance(posterior_rho_init, (int, float)) or \
                not math.isfinite(posterior_rho_init):
            raise ValueError(f"{who}: posterior_rho_init must be a finite number, got {posterior_rho_init!r}")
        self.posterior_rho_init = float(posterior_rho_init)
        self.use_bias = bool(use_bias)
        self.estimator = _estimator(estimator, local_reparameterization, who)
        self.sample_in_eval = bool(sample_in_eval)
        self.kernel_init = kernel_init
        initializers.get(kernel_init)

    @property
    def local_reparameterization(self) -> bool:
        return self.estimator == "local_reparameterization"

    def _add_posterior(self, w_shape: tuple[int, ...], units: int) -> None:
        dtype = backend.get_default_dtype()
        fan_in, fan_out = initializers.fans(w_shape)
        self.add_parameter("weight_mu", initializers.get(self.kernel_init)(w_shape, fan_in, fan_out, dtype))
        self.add_parameter("weight_rho", np.full(w_shape, self.posterior_rho_init, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias_mu", np.zeros(units, dtype=dtype))
            self.add_parameter("bias_rho", np.full(units, self.posterior_rho_init, dtype=dtype))
        self.built = True

    # -- the posterior and the prior ----------------------------------------------------------
    def weight_sigma(self) -> Tensor:
        return F.softplus(self.weight_rho)

    def bias_sigma(self) -> Tensor | None:
        return F.softplus(self.bias_rho) if self.use_bias else None

    def _posterior_pairs(self) -> list[tuple[Tensor, Tensor]]:
        pairs = [(self.weight_mu, self.weight_sigma())]
        if self.use_bias:
            pairs.append((self.bias_mu, self.bias_sigma()))
        return pairs

    def kl_divergence(self) -> Tensor:
        """KL(q || p) over the layer's weights (and biases), a scalar on the graph of mu and rho:
        closed form for the Gaussian prior; for the scale mixture the one-sample estimate
        sum log q(w) - log p(w) at w = mu + sigma * eps (eps drawn for the weights, then the
        biases), whose expectation is the KL."""
        if self.prior_mixture is None:
            kl = 0.0
            for mu, sigma in self._posterior_pairs():
                kl = gaussian_kl(mu, sigma, self.prior_sigma) + kl
            return kl
        kl = 0.0
        for mu, sigma in self._posterior_pairs():
            eps = self._noise(mu.shape)
            log_q = -F.log(sigma) - (eps * eps * 0.5 + _LOG_SQRT_2PI)
            log_p = scale_mixture_log_prob(mu + sigma * eps, *self.prior_mixture)
            kl = (log_q - log_p).sum() + kl
        return kl

    def kl_loss(self) -> Tensor:
        """The same as :meth:`kl_divergence`."""
        return self.kl_divergence()

    # -- sampling -------------------------------------------------------------------------------
    def _noise(self, shape) -> Tensor:
        values = backend.rng().standard_normal(size=tuple(shape))
        return Tensor._wrap(backend.xp.asarray(values.astype(self.weight_mu.dtype)))

    def _signs(self, shape) -> Tensor:
        """+-1 with probability 1/2 each: 2 k - 1 for k drawn from {0, 1} by the generator's
        ``integers``."""
        values = backend.rng().integers(0, 2, size=tuple(shape)) * 2 - 1
        return Tensor._wrap(backend.xp.asarray(values.astype(self.weight_mu.dtype)))

    def _apply(self, x: Tensor, weight, bias) -> Tensor:
        raise NotImplementedError

    def _input_sign_shape(self, x: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def _output_sign_shape(self, z: Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def _sampled(self, x: Tensor) -> Tensor:
        """The pre-activations of one sampling pass; the draws, in order: weight noise then bias
        noise (reparameterization); one noise per pre-activation (local); weight noise, bias
        noise, input signs, output signs (flipout)."""
        if self.estimator == "local_reparameterization":
            mean = self._apply(x, self.weight_mu, self.bias_mu if self.use_bias else None)
            sigma_w = self.weight_sigma()
            variance = self._apply(x * x, sigma_w * sigma_w, F.square(self.bias_sigma()) if self.use_bias else None)
            return mean + F.sqrt(variance) * self._noise(mean.shape)
        delta = self.weight_sigma() * self._noise(self.weight_mu.shape)
        bias = self.bias_mu + self.bias_sigma() * self._noise(self.bias_mu.shape) if self.use_bias else None
        if self.estimator == "reparameterization":
            return self._apply(x, self.weight_mu + delta, bias)
        input_signs = self._signs(self._input_sign_shape(x))
        mean = self._apply(x, self.weight_mu, bias)
        return mean + self._apply(x * input_signs, delta, None) * self._signs(self._output_sign_shape(mean))

    def _run(self, x: Tensor) -> Tensor:
        if self.training or self.sample_in_eval:
            z = self._sampled(x)
        else:
            z = self._apply(x, self.weight_mu, self.bias_mu if self.use_bias else None)
        return self.activation(z) if self.activation is not None else z

    def _bayesian_config(self) -> dict:
        return {
            "activation": activation_config(self),
            "prior_sigma": self.prior_sigma,
            "prior_mixture": None if self.prior_mixture is None else list(self.prior_mixture),
            "posterior_rho_init": self.posterior_rho_init,
            "use_bias": self.use_bias,
            "estimator": self.estimator,
            "sample_in_eval": self.sample_in_eval,
            "kernel_init": initializers.serialize(self.kernel_init),
            "name": self.name,
        }

    def _bayesian_repr(self) -> str:
        act = self.activation_spec if isinstance(self.activation_spec, str) else None
        prior = (f"prior_mixture={self.prior_mixture}" if self.prior_mixture is not None
                 else f"prior_sigma={self.prior_sigma}")
        return (f", activation={act!r}" if act else "") + f", {prior}, estimator={self.estimator!r}"


@register_layer
class BayesianDense(BayesianLayer):
    """A fully connected layer with a Gaussian posterior over its weights and biases (see the
    module notes): a = g(x w + b), w ~ N(weight_mu, softplus(weight_rho)^2) sampled on each
    forward pass in training (or always, with ``sample_in_eval``) by ``estimator``, the means
    in evaluation.

    ``prior_sigma``: the standard deviation of the zero-mean Gaussian prior; ``prior_mixture``:
    (pi, sigma_1, sigma_2) for the scale-mixture prior instead. ``posterior_rho_init``: rho's
    initial value (-5: sigma = 0.0067, weights start almost deterministic). ``kernel_init``:
    the initializer of the weight means. ``local_reparameterization=True`` is
    ``estimator='local_reparameterization'``. :meth:`kl_divergence` is KL(q || prior) summed
    over the layer's weights and biases."""

    def __init__(self, units: int, activation=None, prior_sigma: float = 1.0, posterior_rho_init: float = -5.0,
                 use_bias: bool = True, local_reparameterization: bool = False, sample_in_eval: bool = False,
                 kernel_init="he_uniform", estimator: str | None = None,
                 prior_mixture: tuple[float, float, float] | None = None, name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "BayesianDense: units")
        self._set_bayesian_options(activation, prior_sigma, prior_mixture, posterior_rho_init, use_bias,
                                   estimator, local_reparameterization, sample_in_eval, kernel_init)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        self._add_posterior((n_in, self.units), self.units)

    def _apply(self, x: Tensor, weight, bias) -> Tensor:
        return linear(x, weight, bias)

    def _input_sign_shape(self, x: Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def _output_sign_shape(self, z: Tensor) -> tuple[int, ...]:
        return tuple(z.shape)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n_in = self.weight_mu.shape[0]
        if x.ndim < 2 or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} features the "
                                       "layer was built for")
        return self._run(x)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, **self._bayesian_config()}

    def extra_repr(self) -> str:
        n_in = self.weight_mu.shape[0] if self.built else "?"
        return f"{n_in} -> {self.units}" + self._bayesian_repr()


def bayesian_kl(model: Module) -> Tensor | float:
    """The sum of ``kl_divergence()`` over the Bayesian layers of ``model`` (0.0 when it has
    none): the KL term of the ELBO."""
    total = 0.0
    for module in model.modules():
        if isinstance(module, BayesianLayer):
            total = module.kl_divergence() + total
    return total


def elbo_loss(model: Module, data_loss: Callable, dataset_size: int) -> Callable:
    """The negative ELBO per training sample as a ``loss(y_pred, y_true)`` for the Trainer:
    ``data_loss(y_pred, y_true) + bayesian_kl(model) / dataset_size``, where ``data_loss`` is
    the mean negative log-likelihood over the batch (cross-entropy, or a Gaussian NLL) and
    ``dataset_size`` the number N of training samples (module notes)."""
    if not isinstance(model, Module):
        raise TypeError(f"elbo_loss: model must be a lamina Module, got {type(model).__name__}")
    if not callable(data_loss):
        raise TypeError(f"elbo_loss: data_loss must be callable as data_loss(y_pred, y_true), got {data_loss!r}")
    n = positive_int(dataset_size, "elbo_loss: dataset_size")

    def loss(y_pred, y_true) -> Tensor:
        return data_loss(y_pred, y_true) + bayesian_kl(model) / n

    return loss


@contextlib.contextmanager
def _sampling_everywhere(model: Module) -> Iterator[None]:
    layers = [m for m in model.modules() if isinstance(m, BayesianLayer)]
    before = [layer.sample_in_eval for layer in layers]
    for layer in layers:
        layer.sample_in_eval = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.sample_in_eval = value


def mc_predict(model: Module, x, num_samples: int = 50, return_samples: bool = False):
    """Monte Carlo prediction: ``num_samples`` forward passes of ``model`` in evaluation mode
    with every Bayesian layer sampling its weights; returns the mean and the standard
    deviation of the outputs over the passes (arrays of the output's shape), and with
    ``return_samples`` also the (num_samples, ...) outputs themselves, ready for
    :func:`lamina.train.predictive_summary`. The model's modes and the layers'
    ``sample_in_eval`` are restored afterwards."""
    positive_int(num_samples, "mc_predict: num_samples")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with no_grad(), _sampling_everywhere(model):
            outputs = np.stack([backend.to_numpy(model(x).data) for _ in range(num_samples)])
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
    if return_samples:
        return outputs.mean(axis=0), outputs.std(axis=0), outputs
    return outputs.mean(axis=0), outputs.std(axis=0)
