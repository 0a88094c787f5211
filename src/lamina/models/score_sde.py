"""Score-based generative modelling through stochastic differential equations (Song, Sohl-Dickstein,
Kingma, Kumar, Ermon & Poole 2021).

Data x(0) ~ p_0 is diffused by a forward SDE over t in [0, 1],

    dx = f(x, t) dt + g(t) dw,

whose transition kernel p_0t(x(t) | x(0)) = N(m(t) x(0), s(t)^2 I) is known in closed form,
into a prior p_1 that is easy to sample. The reverse-time SDE and the probability-flow ODE
share its marginals p_t:

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar       (t running from 1 to 0)
    dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x)

Three SDEs (beta(t) = beta_min + t (beta_max - beta_min), sigma(t) = sigma_min (sigma_max /
sigma_min)^t, B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2):

* :class:`VPSDE` (DDPM's limit): f = -beta(t) x / 2, g = sqrt(beta(t)),
  m(t) = exp(-B(t) / 2), s(t)^2 = 1 - exp(-B(t)); prior N(0, I).
* :class:`subVPSDE`: f as VP, g = sqrt(beta(t) (1 - exp(-2 B(t)))), m(t) as VP,
  s(t) = 1 - exp(-B(t)); prior N(0, I).
* :class:`VESDE` (SMLD's limit): f = 0, g = sigma(t) sqrt(2 log(sigma_max / sigma_min)),
  m(t) = 1, s(t) = sigma(t); prior N(0, sigma_max^2 I). As in the paper, s(t) = sigma(t) is the
  kernel from the data itself when x(0) is the data smoothed by N(0, sigma_min^2 I).

A score network s_theta(x, t) ~ grad log p_t(x) is trained by denoising score matching
(:func:`score_sde_loss`), with t ~ U(eps, 1), z ~ N(0, I), x(t) = m(t) x(0) + s(t) z:

    L = mean_i lambda(t_i) / 2 || s_theta(x_i(t_i), t_i) + z_i / s(t_i) ||^2,

lambda(t) = s(t)^2 (the paper's weighting) or g(t)^2 (the likelihood weighting of Song et al.
2021b). The samplers and the likelihood are in :mod:`lamina.models.schedulers.score_sde`.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import DenoisingMLP
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["SDE", "SDE_KINDS", "SCORE_WEIGHTINGS", "VESDE", "VPSDE", "ScoreSDEMLP", "make_sde", "score_sde_loss",
           "subVPSDE"]

SCORE_WEIGHTINGS = ("sigma2", "likelihood")


def _positive(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


def _column(values, x: np.ndarray) -> np.ndarray:
    """Per-sample values (n,) shaped to broadcast against a batch ``x`` (n, ...)."""
    return values.reshape((-1,) + (1,) * (x.ndim - 1))


class SDE:
    """A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, 1] (module notes). Arrays in, arrays out:
    ``x`` is a batch (n, ...), ``t`` one time or n of them."""

    T = 1.0

    def _times(self, t, n: int | None = None) -> np.ndarray:
        times = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64).reshape(-1)
        if n is not None and times.size == 1:
            times = np.full(n, float(times[0]))
        expected = "times" if n is None else f"one time or {n} times"
        if times.size == 0 or (n is not None and times.shape != (n,)) or not (times >= 0).all() \
                or not (times <= self.T * (1 + 1e-9)).all():
            span = f" with values in [{times.min()}, {times.max()}]" if times.size else ""
            raise ValueError(f"{type(self).__name__}: t must be {expected} in [0, {self.T}], got shape "
                             f"{times.shape}{span}")
        return np.minimum(times, self.T)

    def _batch(self, x, who: str) -> np.ndarray:
        data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
        if data.ndim < 2:
            raise ShapeError(f"{type(self).__name__}.{who}: x must be a batch of samples (n, ...), got shape "
                             f"{tuple(data.shape)}")
        return data

    def beta_integral(self, t: np.ndarray) -> np.ndarray:  # overridden by the VP family
        raise NotImplementedError

    def drift(self, x, t):
        """f(x, t), shaped as x."""
        raise NotImplementedError

    def diffusion(self, t) -> np.ndarray:
        """g(t), one value per time (float64)."""
        raise NotImplementedError

    def marginal_coefficients(self, t) -> tuple[np.ndarray, np.ndarray]:
        """(m(t), s(t)): p_0t(x(t) | x(0)) = N(m(t) x(0), s(t)^2 I), float64 per time."""
        raise NotImplementedError

    def marginal(self, x0, t):
        """The mean m(t) x(0) and the std s(t) (n,) of p_0t(x(t) | x(0)) for a batch ``x0``."""
        data = self._batch(x0, "marginal")
        mean_coef, std = self.marginal_coefficients(self._times(t, data.shape[0]))
        return _column(mean_coef, data).astype(data.dtype) * data, std

    def prior_std(self) -> float:
        return 1.0

    def prior_sample(self, shape, seed=None) -> np.ndarray:
        """Draws of the prior p_1 = N(0, prior_std^2 I) of the given ``shape`` (n, ...)."""
        rng = seed if isinstance(seed, np.random.Generator) else (
            backend.rng() if seed is None else np.random.default_rng(seed))
        draws = self.prior_std() * rng.standard_normal(tuple(shape))
        return backend.xp.asarray(draws, dtype=backend.get_default_dtype())

    def prior_log_prob(self, z) -> np.ndarray:
        """log N(z; 0, prior_std^2 I) per sample (n,), summed over each sample's values."""
        data = np.asarray(backend.to_numpy(self._batch(z, "prior_log_prob")), dtype=np.float64)
        values = data.reshape(data.shape[0], -1)
        var = self.prior_std() ** 2
        return -0.5 * (values ** 2).sum(1) / var - 0.5 * values.shape[1] * math.log(2 * math.pi * var)

    def reverse_drift(self, x, t, score, probability_flow: bool = False):
        """The reverse-time drift f(x, t) - g(t)^2 score, or the probability-flow ODE's
        f(x, t) - g(t)^2 score / 2 with ``probability_flow``. ``score`` is grad log p_t(x)."""
        data = self._batch(x, "reverse_drift")
        g = _column(self.diffusion(self._times(t, data.shape[0])), data)
        score = score.data if isinstance(score, Tensor) else score
        factor = 0.5 if probability_flow else 1.0
        return self.drift(data, t) - (factor * g * g).astype(data.dtype) * score

    def discretize(self, x, t, dt: float):
        """One step of the discretized SDE x_{i+1} = x_i + f_i + G_i z: (f_i, G_i) for a step of
        length ``dt`` from t (Euler-Maruyama: f dt, g sqrt(dt)); the VP and VE SDEs refine it."""
        data = self._batch(x, "discretize")
        times = self._times(t, data.shape[0])
        return self.drift(data, times) * dt, self.diffusion(times) * math.sqrt(dt)

    def langevin_alpha(self, t, dt: float) -> np.ndarray:
        """The factor alpha_i on the Langevin corrector's step (1 but for the VP SDE's 1 - beta_i)."""
        return np.ones_like(self._times(t))

    def config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.config().items())})"


class VPSDE(SDE):
    """The variance-preserving SDE (module notes): beta(t) linear from ``beta_min`` to ``beta_max``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = _positive(beta_min, "beta_min", type(self).__name__)
        self.beta_max = _positive(beta_max, "beta_max", type(self).__name__)
        if self.beta_max < self.beta_min:
            raise ValueError(f"{type(self).__name__}: need beta_min <= beta_max, got {beta_min} and {beta_max}")

    def beta(self, t) -> np.ndarray:
        return self.beta_min + self._times(t) * (self.beta_max - self.beta_min)

    def beta_integral(self, t) -> np.ndarray:
        t = self._times(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def drift(self, x, t):
        data = self._batch(x, "drift")
        return (-0.5 * _column(self.beta(self._times(t, data.shape[0])), data)).astype(data.dtype) * data

    def diffusion(self, t) -> np.ndarray:
        return np.sqrt(self.beta(t))

    def marginal_coefficients(self, t):
        integral = self.beta_integral(t)
        return np.exp(-0.5 * integral), np.sqrt(-np.expm1(-integral))

    def discretize(self, x, t, dt: float):
        """DDPM's step: beta_i = beta(t) dt, f_i = (sqrt(1 - beta_i) - 1) x, G_i = sqrt(beta_i)."""
        data = self._batch(x, "discretize")
        beta_i = self.beta(self._times(t, data.shape[0])) * dt
        return _column(np.sqrt(1.0 - beta_i) - 1.0, data).astype(data.dtype) * data, np.sqrt(beta_i)

    def langevin_alpha(self, t, dt: float) -> np.ndarray:
        return 1.0 - self.beta(t) * dt

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


class subVPSDE(VPSDE):  # noqa: N801  (the paper's name)
    """The sub-VP SDE (module notes): the VP drift, a smaller diffusion, variance below the VP one."""

    def diffusion(self, t) -> np.ndarray:
        return np.sqrt(self.beta(t) * -np.expm1(-2.0 * self.beta_integral(t)))

    def marginal_coefficients(self, t):
        integral = self.beta_integral(t)
        return np.exp(-0.5 * integral), -np.expm1(-integral)

    def discretize(self, x, t, dt: float):
        return SDE.discretize(self, x, t, dt)

    def langevin_alpha(self, t, dt: float) -> np.ndarray:
        return np.ones_like(self._times(t))


class VESDE(SDE):
    """The variance-exploding SDE (module notes): sigma(t) geometric from ``sigma_min`` to ``sigma_max``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min = _positive(sigma_min, "sigma_min", "VESDE")
        self.sigma_max = _positive(sigma_max, "sigma_max", "VESDE")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"VESDE: need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")

    def sigma(self, t) -> np.ndarray:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** self._times(t)

    def drift(self, x, t):
        return backend.xp.zeros_like(self._batch(x, "drift"))

    def diffusion(self, t) -> np.ndarray:
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def marginal_coefficients(self, t):
        sigma = self.sigma(t)
        return np.ones_like(sigma), sigma

    def discretize(self, x, t, dt: float):
        """SMLD's step from sigma(t) to sigma(t - dt): f_i = 0, G_i = sqrt(sigma(t)^2 - sigma(t - dt)^2)."""
        data = self._batch(x, "discretize")
        times = self._times(t, data.shape[0])
        previous = self.sigma(np.clip(times - dt, 0.0, self.T))
        return backend.xp.zeros_like(data), np.sqrt(self.sigma(times) ** 2 - previous ** 2)

    def prior_std(self) -> float:
        return self.sigma_max

    def config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


SDE_KINDS = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}


def make_sde(kind: str, **params) -> SDE:
    """An SDE by name ('vp', 'subvp', 've') with its parameters."""
    if kind not in SDE_KINDS:
        raise ValueError(f"make_sde: unknown SDE {kind!r}; expected one of {sorted(SDE_KINDS)}")
    return SDE_KINDS[kind](**params)


def score_sde_loss(score_fn, sde: SDE, x, weighting: str = "sigma2", eps: float = 1e-5, t=None, noise=None,
                   seed=None) -> Tensor:
    """Denoising score matching over continuous time (module notes): the mean over the batch of
    lambda(t) / 2 ||score_fn(x(t), t) + z / s(t)||^2, the norm summed over each sample's values.
    ``weighting``: 'sigma2' (lambda = s(t)^2) or 'likelihood' (lambda = g(t)^2). ``t`` (n,) and
    ``noise`` (x's shape) default to draws of U(eps, 1) and N(0, I)."""
    who = "score_sde_loss"
    if weighting not in SCORE_WEIGHTINGS:
        raise ValueError(f"{who}: weighting must be one of {SCORE_WEIGHTINGS}, got {weighting!r}")
    if not 0 <= eps < sde.T:
        raise ValueError(f"{who}: eps must be in [0, {sde.T}), got {eps!r}")
    x = as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"{who}: x must be a batch of samples (n, ...), got shape {tuple(x.shape)}")
    n = x.shape[0]
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    times = rng.uniform(eps, sde.T, n) if t is None else sde._times(t, n)
    z = backend.xp.asarray(rng.standard_normal(x.shape) if noise is None else backend.to_numpy(
        noise.data if isinstance(noise, Tensor) else noise), dtype=x.dtype)
    if z.shape != x.shape:
        raise ShapeError(f"{who}: noise of shape {tuple(z.shape)} must have x's shape {tuple(x.shape)}")
    mean_coef, std = sde.marginal_coefficients(times)
    column = (-1,) + (1,) * (x.ndim - 1)

    def constant(values):
        return Tensor(backend.xp.asarray(values, dtype=x.dtype), dtype=x.dtype)

    xt = x * constant(mean_coef.reshape(column)) + constant(std.reshape(column) * z)
    scores = score_fn(xt, times)
    if not isinstance(scores, Tensor) or scores.shape != x.shape:
        raise ShapeError(f"{who}: score_fn must return a score of x's shape {tuple(x.shape)}, got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    if weighting == "sigma2":
        residual = scores * constant(std.reshape(column)) + constant(z)
    else:
        g = sde.diffusion(times)
        residual = scores * constant(g.reshape(column)) + constant((g / std).reshape(column) * z)
    squares = residual * residual
    return 0.5 * squares.reshape(n, -1).sum(axis=1).mean()


@register_with_arguments
class ScoreSDEMLP(Module):
    """A time-dependent score network for vectors (n, ``dim``) under an SDE: s_theta(x, t) =
    DenoisingMLP(x, 999 t) / s(t), the division by the kernel's std as in the paper's models.
    ``sde``: 'vp', 'subvp' or 've' with ``beta_min``/``beta_max`` or ``sigma_min``/``sigma_max``.
    Calling it, ``model(x, t)``, gives the score; :meth:`loss` is :func:`score_sde_loss`."""

    def __init__(self, dim: int, hidden=(128, 128), time_dim: int = 32, sde: str = "vp", beta_min: float = 0.1,
                 beta_max: float = 20.0, sigma_min: float = 0.01, sigma_max: float = 50.0, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ScoreSDEMLP: dim")
        params = {"beta_min": beta_min, "beta_max": beta_max} if sde in ("vp", "subvp") else {
            "sigma_min": sigma_min, "sigma_max": sigma_max}
        self.sde = make_sde(sde, **params)
        self.net = DenoisingMLP(hidden=hidden, time_dim=time_dim)
        self.net.build((None, self.dim))

    def forward(self, x, t) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{self._label()}: x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        times = self.sde._times(t, x.shape[0])
        _, std = self.sde.marginal_coefficients(times)
        scale = Tensor(backend.xp.asarray((1.0 / std)[:, None], dtype=x.dtype), dtype=x.dtype)
        return self.net(x, 999.0 * times) * scale

    def build_sample_inputs(self, shapes) -> tuple:
        """One sample at t = 1 to build a loaded model with (t = 0 has no kernel std to divide by)."""
        return np.zeros((1, self.dim), dtype=backend.get_default_dtype()), np.ones(1)

    def loss(self, x, weighting: str = "sigma2", eps: float = 1e-5, seed=None) -> Tensor:
        """:func:`score_sde_loss` of this network under its SDE."""
        return score_sde_loss(self, self.sde, x, weighting=weighting, eps=eps, seed=seed)
