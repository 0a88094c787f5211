"""Noise-conditional score networks and annealed Langevin dynamics (Song & Ermon 2019, with the
1/sigma output scaling and the final denoising step of Song & Ermon 2020), for vector data.

Noise levels sigma_1 > ... > sigma_L form a geometric sequence. The network s(x, sigma)
estimates the score of the data smoothed by N(0, sigma^2 I), trained by denoising score
matching weighted by lambda(sigma) = sigma^2 at a random level per sample:

    L = 1/2 mean_i || sigma_i s(x_i + sigma_i eps_i, sigma_i) + eps_i ||^2

Annealed Langevin sampling runs T steps at each level with step alpha_i = epsilon sigma_i^2 / sigma_L^2:

    x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z,     z ~ N(0, I)

and, with ``denoise``, ends with one step x <- x + sigma_L^2 s(x, sigma_L) (Tweedie's formula).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Dense, Module, Sequential
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["NCSNMLP", "annealed_langevin_sample", "geometric_sigmas"]


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> np.ndarray:
    """``levels`` noise levels from ``sigma_max`` down to ``sigma_min``, equally spaced in log."""
    if not (isinstance(levels, int) and levels >= 1):
        raise ValueError(f"geometric_sigmas: levels must be a positive int, got {levels!r}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"geometric_sigmas: need 0 < sigma_min <= sigma_max, got {sigma_min!r} and {sigma_max!r}")
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), levels))


@register_with_arguments
class NCSNMLP(Module):
    """s(x, sigma) = MLP([x, log sigma]) / sigma for data rows x (n, dim): ``hidden`` units in
    each of ``depth`` SiLU layers; the levels are ``geometric_sigmas(sigma_max, sigma_min, levels)``."""

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, sigma_max: float = 1.0, sigma_min: float = 0.01,
                 levels: int = 10, name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(dim, int) and dim >= 1):
            raise ValueError(f"NCSNMLP: dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.sigmas = geometric_sigmas(sigma_max, sigma_min, levels)
        self.net = Sequential(*[Dense(hidden, "silu") for _ in range(depth)], Dense(dim))

    def _sigma_column(self, sigma, n: int, dtype) -> np.ndarray:
        values = backend.xp.asarray(sigma, dtype=dtype).reshape(-1)
        if values.size == 1:
            values = backend.xp.full(n, float(values[0]), dtype=dtype)
        if values.shape != (n,) or not bool((values > 0).all()):
            raise ValueError(f"{self._label()}: sigma must be one positive level or n = {n} of them, got "
                             f"{values.shape} values")
        return values[:, None]

    def forward(self, x, sigma) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{self._label()}: x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        column = self._sigma_column(sigma, x.shape[0], x.dtype)
        features = F.concat([x, Tensor(backend.xp.log(column), dtype=x.dtype)], axis=1)
        return self.net(features) * Tensor(1.0 / column, dtype=x.dtype)

    def loss(self, x, seed=None) -> Tensor:
        """The sigma^2-weighted denoising score matching loss at one random level per row."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        rng = backend.rng() if seed is None else np.random.default_rng(seed)
        sigma = self.sigmas[rng.integers(0, len(self.sigmas), x.shape[0])]
        eps = Tensor(backend.xp.asarray(rng.standard_normal(x.shape)), dtype=x.dtype)
        column = Tensor(backend.xp.asarray(sigma[:, None]), dtype=x.dtype)
        residual = self(x + column * eps, sigma) * column + eps
        return 0.5 * (residual * residual).sum(axis=1).mean()

    def sample(self, n: int, steps_per_level: int = 100, epsilon: float = 2e-5, denoise: bool = True,
               seed=None) -> Tensor:
        """n samples by :func:`annealed_langevin_sample` from U(-1, 1) noise scaled by sigma_1."""
        rng = backend.rng() if seed is None else np.random.default_rng(seed)
        x0 = self.sigmas[0] * rng.uniform(-1.0, 1.0, (n, self.dim))
        x0 = backend.xp.asarray(x0, dtype=backend.get_default_dtype())
        return annealed_langevin_sample(self, x0, self.sigmas, steps_per_level, epsilon, denoise, rng)


def _score(score_fn, x, sigma: float, who: str):
    score = score_fn(Tensor(x, dtype=x.dtype), sigma)
    if not isinstance(score, Tensor) or score.shape != x.shape:
        shape = getattr(score, "shape", type(score).__name__)
        raise ShapeError(f"{who}: score_fn must return a score of x's shape {tuple(x.shape)}, got {shape}")
    return score.data


def annealed_langevin_sample(score_fn, x0, sigmas, steps_per_level: int = 100, epsilon: float = 2e-5,
                             denoise: bool = True, seed=None) -> Tensor:
    """Song & Ermon's annealed Langevin dynamics (module notes) with the noise-conditional score
    ``score_fn(x, sigma)`` from ``x0`` (n, d) through the decreasing levels ``sigmas``."""
    who = "annealed_langevin_sample"
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sigmas.size == 0 or (sigmas <= 0).any() or (np.diff(sigmas) > 0).any():
        raise ValueError(f"{who}: sigmas must be positive and non-increasing, got {sigmas}")
    if not (isinstance(steps_per_level, int) and steps_per_level >= 1):
        raise ValueError(f"{who}: steps_per_level must be a positive int, got {steps_per_level!r}")
    if not epsilon > 0:
        raise ValueError(f"{who}: epsilon must be positive, got {epsilon!r}")
    rng = seed if isinstance(seed, np.random.Generator) else (
        backend.rng() if seed is None else np.random.default_rng(seed))
    x = (x0.data if isinstance(x0, Tensor) else backend.xp.asarray(x0)).copy()
    with no_grad():
        for sigma in sigmas:
            alpha = epsilon * (sigma / sigmas[-1]) ** 2
            for _ in range(steps_per_level):
                score = _score(score_fn, x, sigma, who)
                noise = backend.xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)
                x = x + (0.5 * alpha) * score + math.sqrt(alpha) * noise
        if denoise:
            x = x + sigmas[-1] ** 2 * _score(score_fn, x, sigmas[-1], who)
    return Tensor(x, dtype=x.dtype)
