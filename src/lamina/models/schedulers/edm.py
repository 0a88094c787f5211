"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"): the preconditioned denoiser, its training loss and the Heun sampler.

Preconditioning (Table 1) of a net F into a denoiser D at noise level sigma:

    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise),
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,   sd = sigma_data.

Loss: ln sigma ~ N(P_mean, P_std^2), lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, and
E[lambda(sigma) ||D(y + sigma n; sigma) - y||^2] (here the mean over the values).

Sampler (Algorithm 2): sigmas t_i = :func:`karras_sigmas` then t_N = 0; x_0 = t_0 n; for each
i, gamma = min(S_churn / N, sqrt(2) - 1) when S_min <= t_i <= S_max (else 0), t^ = (1 + gamma)
t_i, x^ = x_i + sqrt(t^^2 - t_i^2) S_noise n, d = (x^ - D(x^; t^)) / t^, x_{i+1} = x^ + (t_{i+1}
- t^) d, and unless t_{i+1} = 0 the step is redone with the mean of d and the slope at x_{i+1}.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.schedulers.base import karras_sigmas, rng_from
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["EDMPrecond", "edm_coefficients", "edm_loss", "edm_sampler"]


def edm_coefficients(sigma, sigma_data: float = 0.5) -> dict[str, np.ndarray]:
    """c_skip, c_out, c_in and c_noise of the module notes at noise levels ``sigma``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    total = sigma ** 2 + sigma_data ** 2
    return {"c_skip": sigma_data ** 2 / total, "c_out": sigma * sigma_data / np.sqrt(total),
            "c_in": 1.0 / np.sqrt(total), "c_noise": np.log(sigma) / 4}


@register_with_arguments(modules=("net",))
class EDMPrecond(Module):
    """The denoiser D(x; sigma) of a net F (called as ``net(x, c_noise)``, or with labels) by
    EDM's preconditioning (module notes). Calling it takes a batch x (N, ...) and sigma (one
    number or N of them)."""

    def __init__(self, net: Module, sigma_data: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(net, Module):
            raise TypeError(f"EDMPrecond: net must be a Module called as net(x, c_noise), got {type(net).__name__}")
        if isinstance(sigma_data, bool) or not isinstance(sigma_data, numbers.Real) or not sigma_data > 0:
            raise ValueError(f"EDMPrecond: sigma_data must be a positive number, got {sigma_data!r}")
        self.net, self.sigma_data = net, float(sigma_data)

    def forward(self, x, sigma, labels=None) -> Tensor:
        x = as_tensor(x)
        n = x.shape[0]
        levels = np.asarray(backend.to_numpy(sigma.data) if isinstance(sigma, Tensor) else sigma, dtype=np.float64)
        levels = np.full(n, float(levels)) if levels.ndim == 0 else levels
        if levels.shape != (n,) or not np.all(levels > 0):
            raise ShapeError(f"{self._label()}: sigma must be one positive number or {n} of them for x of "
                             f"{describe(x)}, got {describe(levels)}")
        c = edm_coefficients(levels, self.sigma_data)
        shape = (-1,) + (1,) * (x.ndim - 1)

        def column(values):
            return Tensor._wrap(backend.xp.asarray(values.reshape(shape).astype(x.dtype)))

        inner = column(c["c_in"]) * x
        out = self.net(inner, c["c_noise"]) if labels is None else self.net(inner, c["c_noise"], labels)
        return column(c["c_skip"]) * x + column(c["c_out"]) * out

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}"


def edm_loss(model: EDMPrecond, x0, P_mean: float = -1.2, P_std: float = 1.2, sigma=None, noise=None,
             labels=None) -> Tensor:
    """EDM's weighted denoising loss (module notes) on the batch ``x0``; ``sigma`` (N levels) and
    ``noise`` are drawn from lamina's generator unless given."""
    if not isinstance(model, EDMPrecond):
        raise TypeError(f"edm_loss: model must be an EDMPrecond, got {type(model).__name__}")
    y = as_tensor(x0)
    rng = backend.rng()
    if sigma is None:
        sigma = np.exp(P_mean + P_std * rng.standard_normal(y.shape[0]))
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if noise is None:
        noise = rng.standard_normal(y.shape)
    if not isinstance(noise, Tensor):
        noise = Tensor._wrap(backend.xp.asarray(noise, dtype=y.dtype))
    if noise.shape != y.shape or sigma.shape != (y.shape[0],):
        raise ShapeError(f"edm_loss: for x0 of {describe(y)} need noise of its shape and {y.shape[0]} sigmas, got "
                         f"{describe(noise)} and {describe(sigma)}")
    shape = (-1,) + (1,) * (y.ndim - 1)
    weight = ((sigma ** 2 + model.sigma_data ** 2) / (sigma * model.sigma_data) ** 2).reshape(shape)
    sigma_column = Tensor._wrap(backend.xp.asarray(sigma.reshape(shape).astype(y.dtype)))
    diff = model(y + sigma_column * noise, sigma, labels) - y
    return (Tensor._wrap(backend.xp.asarray(weight.astype(y.dtype))) * diff * diff).mean()


def _as_denoiser(denoiser, labels) -> Callable[[np.ndarray, float], np.ndarray]:
    if isinstance(denoiser, Module):
        params = denoiser.parameters()
        dtype = params[0].dtype if params else backend.get_default_dtype()

        def run(x, sigma):
            inputs = backend.xp.asarray(x, dtype=dtype)
            return np.asarray(backend.to_numpy(denoiser(inputs, sigma, labels).data), dtype=x.dtype)
        return run
    if callable(denoiser):
        return denoiser
    raise TypeError(f"edm_sampler: denoiser must be an EDMPrecond or a function D(x, sigma), got "
                    f"{type(denoiser).__name__}")


def edm_sampler(denoiser, latents, num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                rho: float = 7.0, S_churn: float = 0.0, S_min: float = 0.0, S_max: float = float("inf"),
                S_noise: float = 1.0, generator=None, labels=None) -> np.ndarray:
    """Samples by Algorithm 2 (module notes) from ``latents`` ~ N(0, I) (scaled by sigma_max
    here), in ``num_steps`` noise levels; ``denoiser`` an :class:`EDMPrecond` or a function
    D(x, sigma) of NumPy arrays. Churn noise comes from ``generator`` (a NumPy Generator or
    seed; lamina's by default)."""
    x_noise = np.asarray(backend.to_numpy(latents.data) if isinstance(latents, Tensor) else latents)
    if x_noise.dtype.kind != "f":
        x_noise = x_noise.astype(np.float64)
    levels = np.concatenate([karras_sigmas(num_steps, sigma_min, sigma_max, rho), [0.0]])
    run = _as_denoiser(denoiser, labels)
    rng = rng_from(generator)
    gamma_max = min(S_churn / num_steps, math.sqrt(2) - 1)
    x = x_noise * levels[0]
    with ExitStack() as stack:
        if isinstance(denoiser, Module):
            stack.enter_context(no_grad())
            stack.enter_context(evaluation_mode(denoiser))
        for t_cur, t_next in zip(levels[:-1], levels[1:]):
            gamma = gamma_max if S_min <= t_cur <= S_max else 0.0
            t_hat = t_cur * (1 + gamma)
            x_hat = x
            if gamma > 0:
                x_hat = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * rng.standard_normal(x.shape)
            slope = (x_hat - run(x_hat, t_hat)) / t_hat
            x = x_hat + (t_next - t_hat) * slope
            if t_next > 0:
                x = x_hat + (t_next - t_hat) * 0.5 * (slope + (x - run(x, t_next)) / t_next)
    return x.astype(x_noise.dtype)
