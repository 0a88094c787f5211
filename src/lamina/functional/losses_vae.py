"""The pieces of a variational autoencoder's cost (Kingma and Welling, 2014).

The encoder of a VAE gives, for each sample, the mean mu and the log-variance log sigma^2 of
a diagonal Gaussian q(z | x) over the code z. Three things follow from that:

* :func:`reparameterize`: a code drawn as z = mu + sigma * eps with eps ~ N(0, I) and
  sigma = exp(log sigma^2 / 2). The randomness sits in eps, outside the graph, so the
  gradients dz/dmu = 1 and dz/dlog sigma^2 = sigma eps / 2 reach the encoder (the
  reparameterisation trick).
* :func:`gaussian_kl`: how far q(z | x) is from the prior N(0, I), in closed form,

      KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2),

  summed over the code's values of each sample.
* :func:`vae_loss`: the negative evidence lower bound, per sample the binary cross-entropy
  of the decoder's pixel logits against the image (summed over the pixels) plus beta times
  the KL term, averaged over the batch. beta = 1 is the plain VAE; beta > 1 the beta-VAE.
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.arithmetic import add, mul
from lamina.functional.elementwise import exp
from lamina.functional.loss import BinaryCrossEntropyWithLogits, _check_reduction
from lamina.functional.losses_more import _PointwiseLoss, _prediction

__all__ = ["gaussian_kl", "reparameterize", "vae_loss"]


class GaussianKL(_PointwiseLoss):
    """L_j = -1/2 (1 + v_j - mu_j^2 - e^(v_j)) for v = log sigma^2, summed over a sample's
    values; dL/dmu_j = mu_j and dL/dv_j = (e^(v_j) - 1) / 2."""

    per_sample = "sum"

    def values(self, mu, log_var):
        half = mu.dtype.type(0.5)
        return half * (mu * mu + backend.xp.exp(log_var) - 1 - log_var)

    def slopes(self, mu, log_var, want_mu, want_log_var):
        half = mu.dtype.type(0.5)
        return (mu if want_mu else None), (half * (backend.xp.exp(log_var) - 1) if want_log_var else None)

    def slope_tensors(self, mu, log_var, want_mu, want_log_var):
        return (mu if want_mu else None), ((exp(log_var) - 1) * 0.5 if want_log_var else None)

    backward_graph = _PointwiseLoss.backward_graph_from_slopes


def _gaussian_parameters(mu, log_var, fn: str) -> tuple[Tensor, Tensor]:
    """(mu, log_var) as tensors of one dtype and one shape (batch, ...), or a clear error."""
    mu = _prediction(mu)
    log_var = log_var if isinstance(log_var, Tensor) else Tensor(backend.xp.asarray(log_var), dtype=mu.dtype)
    if mu.shape != log_var.shape:
        raise ShapeError(f"{fn}: mu has shape {tuple(mu.shape)} but log_var has shape {tuple(log_var.shape)}; "
                         "expected the same shape")
    if mu.ndim < 2:
        raise ShapeError(f"{fn}: expected mu and log_var of shape (batch, code_size), got {tuple(mu.shape)}")
    if mu.dtype != log_var.dtype:
        raise TypeError(f"{fn}: mu has dtype {mu.dtype} but log_var has dtype {log_var.dtype}; expected one dtype")
    return mu, log_var


def gaussian_kl(mu, log_var, reduction: str = "none") -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).

    ``mu`` and ``log_var`` (log sigma^2) have shape (batch, ...); the sum runs over every axis
    but the first, so the default ``reduction='none'`` gives one value per sample, shape
    (batch,). ``'mean'`` averages those values, ``'sum'`` adds them. One node:
    dKL/dmu = mu, dKL/dlog sigma^2 = (sigma^2 - 1) / 2.
    """
    _check_reduction(reduction, "gaussian_kl")
    mu, log_var = _gaussian_parameters(mu, log_var, "gaussian_kl")
    return GaussianKL.apply(mu, log_var, reduction=reduction)


def reparameterize(mu, log_var, eps=None) -> Tensor:
    """z = mu + exp(log_var / 2) * eps: a draw from N(mu, sigma^2) that gradients pass through.

    ``eps`` (same shape as ``mu``) defaults to standard normal values from lamina's generator
    (:func:`lamina.backend.rng`), so :func:`lamina.manual_seed` makes the draw reproducible.
    """
    mu, log_var = _gaussian_parameters(mu, log_var, "reparameterize")
    xp = backend.xp
    if eps is None:
        eps = xp.asarray(backend.rng().standard_normal(mu.shape), dtype=mu.dtype)
    else:
        eps = eps.data if isinstance(eps, Tensor) else xp.asarray(eps)
        if tuple(eps.shape) != tuple(mu.shape):
            raise ShapeError(f"reparameterize: eps has shape {tuple(eps.shape)} but mu has shape "
                             f"{tuple(mu.shape)}; expected the same shape")
        eps = eps.astype(mu.dtype, copy=False)
    sigma = exp(mul(log_var, 0.5))
    return add(mu, mul(sigma, eps))


def vae_loss(x, recon_logits, mu, log_var, beta: float = 1.0) -> Tensor:
    """The negative ELBO averaged over the batch of m samples:

        J = (1/m) sum_i [ sum_pixels BCE(sigmoid(recon_logits_i), x_i) + beta * KL_i ],

    with KL_i from :func:`gaussian_kl`. ``x`` holds the targets in [0, 1] (pixel intensities
    scaled from 0-255, or binarised) of the same shape as ``recon_logits``, the decoder's
    logits; ``mu`` and ``log_var`` are (m, code_size). The target gets no gradient.
    """
    fn = "vae_loss"
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{fn}: beta must be a finite number >= 0, got {beta!r}")
    logits = _prediction(recon_logits)
    mu, log_var = _gaussian_parameters(mu, log_var, fn)
    targets = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if tuple(targets.shape) != tuple(logits.shape):
        raise ShapeError(f"{fn}: x has shape {tuple(targets.shape)} but recon_logits has shape "
                         f"{tuple(logits.shape)}; expected the same shape")
    if logits.ndim < 2 or logits.shape[0] != mu.shape[0]:
        raise ShapeError(f"{fn}: recon_logits of shape {tuple(logits.shape)} and mu of shape {tuple(mu.shape)} "
                         "must share the batch (first) axis")
    if targets.size and (float(targets.min()) < 0 or float(targets.max()) > 1):
        raise ValueError(f"{fn}: x must hold values in [0, 1] (scale images by 1/255), got values from "
                         f"{float(targets.min()):.4g} to {float(targets.max()):.4g}")
    per_pixel = BinaryCrossEntropyWithLogits.apply(logits, y=targets.astype(logits.dtype, copy=False))
    reconstruction = R.sum(per_pixel, axis=tuple(range(1, logits.ndim)))
    kl = gaussian_kl(mu, log_var)
    return R.mean(add(reconstruction, mul(kl, float(beta))))
