"""Importance-weighted autoencoders (Burda, Grosse and Salakhutdinov, 2016) and the doubly
reparameterized gradient DReG (Tucker, Lawson, Gu and Maddison, 2019).

A VAE (:class:`lamina.models.VAE`) trains on the ELBO, one code z ~ q(z | x) per input. The
IWAE draws k codes per input and trains on the tighter bound of
:func:`lamina.functional.iwae_bound`,

    L_k = E[ log (1/k) sum_i w_i ],   log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x),

with z_i = mu + sigma * eps_i, eps_i ~ N(0, I), p(z) = N(0, I) and p(x | z) Bernoulli over the
decoder's logits (or Gaussian about its outputs with a fixed ``obs_std``). L_1 is the ELBO.

Gradients. With w~_i = w_i / sum_j w_j, the IWAE estimator is the gradient of L_k itself:
dL_k/dtheta = sum_i w~_i d log w_i/dtheta for every parameter, the encoder's phi included; for
phi, log w_i depends on phi through z_i and through q's parameters (the score term), and the
score term's noise makes the encoder's signal-to-noise ratio fall as k grows. DReG rewrites
the encoder's part so that the score term goes and the weights come squared,

    dL_k/dphi = E[ sum_i w~_i^2 (d log w_i / dz_i) (dz_i / dphi) ],

where d log w_i / dz_i is taken with q's parameters held fixed (stop-gradient on mu and sigma
inside log q(z_i | x)); the decoder's gradient stays IWAE's. :func:`iwae_loss` takes
``estimator='iwae'`` or ``'dreg'``: in both the loss's value is -L_k averaged over the batch.
DReG is done in one pass: log w_i with q's parameters cut from the graph, the surrogate
sum_i w~_i log w_i (w~ constant) whose decoder gradient is IWAE's, and dJ/dz_i multiplied by
w~_i on its way back to the encoder, which squares the weight for phi alone.

:func:`estimate_log_likelihood` is the k-sample estimate log (1/k) sum_i w_i used to compare
generative models (k = 5000 in the paper), in chunks, with the effective sample size of the
weights (:func:`lamina.functional.effective_sample_size`) on request.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.distributions import Normal
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.loss import BinaryCrossEntropyWithLogits
from lamina.functional.losses_iwae import iwae_bound
from lamina.models.autoencoder import VAE
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["IWAE", "estimate_log_likelihood", "importance_log_weights", "iwae_loss"]

ESTIMATORS = ("iwae", "dreg")
LIKELIHOODS = ("bernoulli", "gaussian")


def _check_choice(value, choices, what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")
    return value


def _check_k(k, fn: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{fn}: k, the number of importance samples, must be an int >= 1, got {k!r}")
    return int(k)


def _check_model(model, fn: str) -> None:
    if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))):
        raise TypeError(f"{fn}: expected a VAE-like model with encode(x) -> (mu, log_var) and decode(z), got "
                        f"{type(model).__name__}")


def _noise(eps, k: int, mu: Tensor, fn: str):
    shape = (k, *mu.shape)
    xp = backend.xp
    if eps is None:
        return xp.asarray(backend.rng().standard_normal(shape), dtype=mu.dtype)
    eps = eps.data if isinstance(eps, Tensor) else xp.asarray(eps)
    if tuple(eps.shape) != shape:
        raise ShapeError(f"{fn}: eps has shape {tuple(eps.shape)}; expected (k, batch, code_size) = {shape}")
    return eps.astype(mu.dtype, copy=False)


def _log_likelihood(model, x: Tensor, outputs: Tensor, fn: str) -> Tensor:
    """log p(x | z) per code: ``outputs`` (k, batch, values) against x (batch, ...)."""
    likelihood = getattr(model, "likelihood", "bernoulli")
    k, batch, size = outputs.shape
    if likelihood == "gaussian":
        flat = F.reshape(x, batch, size)
        scale = float(getattr(model, "obs_std", 1.0))
        return R.sum(Normal(outputs, scale, validate_args=False).log_prob(flat), axis=-1)
    targets = x.data.reshape(batch, size)
    if targets.size and (float(targets.min()) < 0 or float(targets.max()) > 1):
        raise ValueError(f"{fn}: a Bernoulli likelihood needs x in [0, 1] (scale images by 1/255), got values "
                         f"from {float(targets.min()):.4g} to {float(targets.max()):.4g}")
    targets = backend.xp.broadcast_to(targets, outputs.shape).astype(outputs.dtype)
    return -R.sum(BinaryCrossEntropyWithLogits.apply(outputs, y=targets), axis=-1)


def _joint_and_proposal(model, x, k: int, eps, stop_q: bool, fn: str):
    """(log p(x, z_i), log q(z_i | x), z), the first two (k, batch), z (k, batch, code_size)."""
    _check_model(model, fn)
    x = as_tensor(x)
    encoded = model.encode(x)
    if not (isinstance(encoded, (tuple, list)) and len(encoded) == 2):
        raise TypeError(f"{fn}: expected a VAE-like model whose encode(x) returns (mu, log_var), but "
                        f"{type(model).__name__}.encode returned {type(encoded).__name__}")
    mu, log_var = encoded
    if mu.ndim != 2 or tuple(mu.shape) != tuple(log_var.shape):
        raise ShapeError(f"{fn}: the encoder gave mu of shape {tuple(mu.shape)} and log_var of shape "
                         f"{tuple(log_var.shape)}; expected two arrays of shape (batch, code_size)")
    sigma = F.exp(log_var * 0.5)
    z = mu + sigma * Tensor(_noise(eps, k, mu, fn), dtype=mu.dtype)
    q = Normal(mu.detach(), sigma.detach(), validate_args=False) if stop_q else Normal(mu, sigma, validate_args=False)
    log_q = R.sum(q.log_prob(z), axis=-1)
    zeros = backend.xp.zeros((), dtype=mu.dtype)
    log_prior = R.sum(Normal(zeros, zeros + 1, validate_args=False).log_prob(z), axis=-1)
    batch, code_size = mu.shape
    outputs = model.decode(F.reshape(z, k * batch, code_size))
    outputs = F.reshape(outputs, k, batch, outputs.size // (k * batch))
    return _log_likelihood(model, x, outputs, fn) + log_prior, log_q, z


def importance_log_weights(model, x, k: int, eps=None) -> Tensor:
    """log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x) for k codes per input, shape
    (k, batch), on the graph of the model's weights. ``model`` is VAE-like (``encode(x)`` ->
    (mu, log_var), ``decode(z)`` -> logits or means); its ``likelihood`` attribute ('bernoulli',
    the default, or 'gaussian' with ``obs_std``) says what p(x | z) is. ``eps`` (k, batch,
    code_size): the noise of z_i = mu + sigma * eps_i, drawn from lamina's generator when None."""
    fn = "importance_log_weights"
    log_p, log_q, _ = _joint_and_proposal(model, x, _check_k(k, fn), eps, False, fn)
    return log_p - log_q


def iwae_loss(model, x, k: int = 5, estimator: str = "iwae", eps=None) -> Tensor:
    """-L_k averaged over the batch, L_k = log (1/k) sum_i w_i (module notes), for a VAE-like
    model (see :func:`importance_log_weights`). ``estimator='iwae'`` back-propagates L_k as it
    is; ``'dreg'`` gives the encoder the doubly reparameterized gradient
    sum_i w~_i^2 (d log w_i / dz_i)(dz_i / dphi) and the decoder IWAE's sum_i w~_i d log w_i/dtheta.
    With k = 1 the value is the one-sample negative ELBO."""
    fn = "iwae_loss"
    k = _check_k(k, fn)
    _check_choice(estimator, ESTIMATORS, f"{fn}: estimator")
    dreg = estimator == "dreg"
    log_p, log_q, z = _joint_and_proposal(model, x, k, eps, dreg, fn)
    bound = iwae_bound(log_p, log_q, k)
    if not dreg:
        return -R.mean(bound)
    log_w = log_p - log_q
    data = log_w.data
    weights = backend.xp.exp(data - data.max(axis=0))
    weights = weights / weights.sum(axis=0)
    if z.requires_grad:
        z.register_hook(lambda g: g * weights[..., None].astype(g.dtype, copy=False))
    surrogate = R.sum(log_w * Tensor(weights, dtype=data.dtype), axis=0)
    return -R.mean(bound.detach() + surrogate - surrogate.detach())


def estimate_log_likelihood(model, x, k: int = 5000, batch_size: int = 8192,
                            return_ess: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The importance-sampled estimate log p(x) ~ log (1/k) sum_i w_i of each input (the IWAE
    paper's test log-likelihood, k = 5000), a NumPy float64 array of shape (batch,).

    ``batch_size`` caps the codes decoded in one pass: inputs go in groups of
    max(1, batch_size // k), and each group's k codes in chunks, whose log-sums combine
    exactly. Its expectation is L_k <= log p(x), which rises to log p(x) with k. With
    ``return_ess=True`` returns (estimates, ess), ess the effective sample size
    (sum_i w_i)^2 / sum_i w_i^2 of each input's k weights.
    """
    fn = "estimate_log_likelihood"
    k = _check_k(k, fn)
    positive_int(batch_size, f"{fn}: batch_size")
    _check_model(model, fn)
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if data.ndim < 2:
        raise ShapeError(f"{fn}: expected x of shape (batch, ...), got {tuple(data.shape)}")
    group = max(1, batch_size // k)
    chunk = max(1, min(k, batch_size // group))
    first, second = [], []
    with no_grad():
        for start in range(0, len(data), group):
            rows = Tensor(data[start:start + group])
            sum_w = sum_w2 = np.full(len(rows), -np.inf)
            for done in range(0, k, chunk):
                log_p, log_q, _ = _joint_and_proposal(model, rows, min(chunk, k - done), None, False, fn)
                log_w = np.asarray(backend.to_numpy((log_p - log_q).data), dtype=np.float64)
                sum_w = np.logaddexp(sum_w, _logsumexp0(log_w))
                sum_w2 = np.logaddexp(sum_w2, _logsumexp0(2 * log_w))
            first.append(sum_w)
            second.append(sum_w2)
    log_sum, log_sum_squares = np.concatenate(first), np.concatenate(second)
    estimates = log_sum - math.log(k)
    return (estimates, np.exp(2 * log_sum - log_sum_squares)) if return_ess else estimates


def _logsumexp0(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(a - top).sum(axis=0))


@register_with_arguments
class IWAE(VAE):
    """A dense VAE (:class:`lamina.models.VAE`'s encoder, heads and decoder) trained on the
    importance-weighted bound with ``num_samples`` = k codes per input (module notes).

    ``model(x)`` returns (reconstruction logits, mu, log_var) as the VAE does;
    :meth:`loss` is the training cost :func:`iwae_loss` with the model's k and ``estimator``
    ('iwae' or 'dreg'); :meth:`log_likelihood` is :func:`estimate_log_likelihood`.
    ``likelihood``: 'bernoulli' (the decoder gives pixel logits, x in [0, 1]) or 'gaussian'
    (the decoder gives the mean of N(mean, obs_std^2) for each value). k = 1 trains on the
    ELBO, with the KL term estimated from the sample.
    """

    def __init__(self, code_size: int, hidden=(128,), input_shape=None, num_samples: int = 5,
                 estimator: str = "iwae", likelihood: str = "bernoulli", obs_std: float = 1.0,
                 activation="relu", name: str | None = None):
        positive_int(num_samples, "IWAE: num_samples")
        _check_choice(estimator, ESTIMATORS, "IWAE: estimator")
        _check_choice(likelihood, LIKELIHOODS, "IWAE: likelihood")
        if isinstance(obs_std, bool) or not isinstance(obs_std, (int, float)) or not 0 < obs_std < math.inf:
            raise ValueError(f"IWAE: obs_std must be a finite number > 0, got {obs_std!r}")
        super().__init__(code_size, hidden=hidden, input_shape=input_shape, activation=activation, name=name)
        self.num_samples = num_samples
        self.estimator = estimator
        self.likelihood = likelihood
        self.obs_std = float(obs_std)

    def loss(self, x, k: int | None = None, estimator: str | None = None, eps=None) -> Tensor:
        """-L_k averaged over the batch (:func:`iwae_loss`), k and the estimator defaulting to
        the model's."""
        return iwae_loss(self, x, self.num_samples if k is None else k,
                         self.estimator if estimator is None else estimator, eps)

    def log_likelihood(self, x, k: int = 5000, batch_size: int = 8192) -> np.ndarray:
        """The estimate of log p(x) for each input (:func:`estimate_log_likelihood`)."""
        return estimate_log_likelihood(self, x, k, batch_size)

    def extra_repr(self) -> str:
        return (f"code_size={self.code_size}, hidden={self.hidden}, num_samples={self.num_samples}, "
                f"estimator={self.estimator!r}, likelihood={self.likelihood!r}")
