"""Noise schedules of denoising diffusion models and the closed forms built on them.

The forward (noising) process adds Gaussian noise in T small steps t = 0 .. T-1:

    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I),   alpha_t = 1 - beta_t,

so that, with alpha_bar_t = prod_{s<=t} alpha_s, any step is reached from the data at once:

    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)      (q_sample)

and the step back, given x_0, is Gaussian too (the posterior), with alpha_bar_{-1} = 1:

    q(x_{t-1} | x_t, x_0) = N(mu_t, beta~_t I),
    mu_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
           + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t,
    beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).

A denoiser predicts one of three equivalent targets, each giving the other two from x_t:
the noise eps, the data x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), or the
"velocity" v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans and Ho, 2022),
whence x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v and
eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v.

Schedules: :meth:`NoiseSchedule.linear` (Ho et al. 2020), :meth:`NoiseSchedule.cosine`
(Nichol and Dhariwal 2021), :meth:`NoiseSchedule.sigmoid` (Jabri et al. 2023), or any
betas in (0, 1). Values are kept in float64 and cast to the data's dtype when used.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import as_tensor

__all__ = ["SCHEDULES", "NoiseSchedule", "make_schedule"]

SCHEDULES = ("linear", "cosine", "sigmoid")
MAX_BETA = 0.999


def _betas_from_alpha_bar(alpha_bar, num_timesteps: int, max_beta: float) -> np.ndarray:
    """beta_t = min(1 - abar((t+1)/T) / abar(t/T), max_beta) for a continuous abar on [0, 1]."""
    grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    values = alpha_bar(grid)
    return np.minimum(1.0 - values[1:] / values[:-1], max_beta)


class NoiseSchedule:
    """beta_t, alpha_t = 1 - beta_t and alpha_bar_t = prod_{s<=t} alpha_s for t = 0 .. T-1
    (``betas``, ``alphas``, ``alpha_bars``; ``alpha_bars_prev`` is alpha_bar_{t-1} with
    alpha_bar_{-1} = 1), and the closed forms of the module notes.

    ``betas``: T values in (0, 1). The builders :meth:`linear`, :meth:`cosine` and
    :meth:`sigmoid` make the published schedules; :meth:`get_config` and :meth:`from_config`
    describe and rebuild any schedule.

    The methods take a batch ``x`` (N, ...) and timesteps ``t``: N integers in [0, T) (or one
    int for the whole batch); the coefficients of sample i are those of step t_i.
    """

    def __init__(self, betas, kind: str = "custom", **params):
        values = np.asarray(betas, dtype=np.float64)
        if values.ndim != 1 or values.size < 1:
            raise ValueError(f"NoiseSchedule: betas must be a 1-D sequence of T >= 1 values, got shape "
                             f"{values.shape}")
        if not np.all((values > 0) & (values < 1)):
            bad = values[~((values > 0) & (values < 1))][0]
            raise ValueError(f"NoiseSchedule: every beta_t must lie in (0, 1) (a variance added at step t), "
                             f"got {float(bad)!r} among {values.size} betas")
        self.kind, self.params = kind, params
        self.betas = values
        self.alphas = 1.0 - values
        self.alpha_bars = np.cumprod(self.alphas)
        self.alpha_bars_prev = np.concatenate([[1.0], self.alpha_bars[:-1]])
        self.posterior_variance = values * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.size)

    # -- the published schedules -----------------------------------------------------------
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float | None = None,
               beta_end: float | None = None) -> NoiseSchedule:
        """betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al.: 1e-4 to 0.02 for
        T = 1000). By default both are scaled by 1000 / T (Nichol and Dhariwal), so that any T
        noises the data as much; that needs T > 20 (beta_end = 20 / T < 1)."""
        T = positive_int(num_timesteps, "NoiseSchedule.linear: num_timesteps")
        scale = 1000.0 / T
        start = scale * 1e-4 if beta_start is None else float(beta_start)
        end = scale * 0.02 if beta_end is None else float(beta_end)
        if not 0 < start < 1 or not 0 < end < 1:
            raise ValueError(f"NoiseSchedule.linear: beta_start and beta_end must lie in (0, 1), got {start!r} "
                             f"and {end!r} for num_timesteps={T} (the defaults scale 1e-4 .. 0.02 by 1000 / T, "
                             "so they need num_timesteps > 20; give beta_end or use the cosine schedule)")
        return cls(np.linspace(start, end, T), kind="linear", num_timesteps=T, beta_start=beta_start,
                   beta_end=beta_end)

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = MAX_BETA) -> NoiseSchedule:
        """alpha_bar(u) = f(u) / f(0), f(u) = cos^2((u + s) / (1 + s) pi / 2) for u = t / T, and
        beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), ``max_beta``) (Nichol and
        Dhariwal): alpha_bar falls slowly at both ends, the clipping avoids beta = 1 at t = T-1."""
        T = positive_int(num_timesteps, "NoiseSchedule.cosine: num_timesteps")
        _check_in_open_unit(max_beta, "NoiseSchedule.cosine: max_beta")
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not s >= 0:
            raise ValueError(f"NoiseSchedule.cosine: s must be a number >= 0, got {s!r}")

        def alpha_bar(u):
            return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        return cls(_betas_from_alpha_bar(alpha_bar, T, max_beta), kind="cosine", num_timesteps=T, s=float(s),
                   max_beta=float(max_beta))

    @classmethod
    def sigmoid(cls, num_timesteps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                max_beta: float = MAX_BETA) -> NoiseSchedule:
        """alpha_bar(u) = (sigma(end / tau) - sigma((start + u (end - start)) / tau)) /
        (sigma(end / tau) - sigma(start / tau)), sigma the logistic function (Jabri et al.), and
        the betas from it as in :meth:`cosine`."""
        T = positive_int(num_timesteps, "NoiseSchedule.sigmoid: num_timesteps")
        _check_in_open_unit(max_beta, "NoiseSchedule.sigmoid: max_beta")
        if not (tau > 0 and end > start):
            raise ValueError(f"NoiseSchedule.sigmoid: need tau > 0 and end > start, got tau={tau!r}, "
                             f"start={start!r}, end={end!r}")

        def logistic(z):
            return 1.0 / (1.0 + np.exp(-z))

        def alpha_bar(u):
            high, low = logistic(end / tau), logistic(start / tau)
            return (high - logistic((start + u * (end - start)) / tau)) / (high - low)

        return cls(_betas_from_alpha_bar(alpha_bar, T, max_beta), kind="sigmoid", num_timesteps=T,
                   start=float(start), end=float(end), tau=float(tau), max_beta=float(max_beta))

    def respaced(self, timesteps) -> NoiseSchedule:
        """The schedule of the sub-sequence ``timesteps`` (increasing) of this one: its step i
        has alpha_bar_{timesteps[i]}, so beta'_i = 1 - alpha_bar_{t_i} / alpha_bar_{t_{i-1}}
        (Nichol and Dhariwal's respacing, used to sample in fewer steps)."""
        steps = np.asarray(timesteps)
        if (steps.ndim != 1 or steps.size < 1 or steps.dtype.kind not in "iu" or np.any(np.diff(steps) <= 0)
                or steps[0] < 0 or steps[-1] >= self.num_timesteps):
            raise ValueError(f"NoiseSchedule.respaced: timesteps must be increasing ints in [0, "
                             f"{self.num_timesteps}), got {timesteps!r}")
        kept = self.alpha_bars[steps]
        previous = np.concatenate([[1.0], kept[:-1]])
        return NoiseSchedule(1.0 - kept / previous, kind="respaced")

    def get_config(self) -> dict:
        """The schedule as a JSON-serialisable dict (:meth:`from_config` rebuilds it)."""
        if self.kind in SCHEDULES:
            return {"kind": self.kind, **self.params}
        return {"kind": "custom", "betas": self.betas.tolist()}

    @classmethod
    def from_config(cls, config: dict) -> NoiseSchedule:
        config = dict(config)
        kind = config.pop("kind", "custom")
        if kind == "custom":
            return cls(config["betas"])
        return make_schedule(kind, **config)

    # -- closed forms ----------------------------------------------------------------------
    def coefficient(self, values: np.ndarray, t, x, who: str) -> Tensor:
        """``values[t_i]`` for each sample i of ``x``, shaped (N, 1, ..., 1) in x's dtype."""
        steps = self.timesteps(t, x.shape[0], who)
        picked = np.asarray(values[steps], dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return Tensor._wrap(backend.xp.asarray(picked))

    def timesteps(self, t, n: int, who: str) -> np.ndarray:
        """``t`` as N integer steps in [0, T) (one int is repeated), or an error naming ``who``."""
        steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t)
        if steps.dtype.kind not in "iu":
            raise TypeError(f"{who}: timesteps t must be integers, got {describe(steps)}")
        if steps.ndim == 0:
            steps = np.full(n, int(steps))
        if steps.shape != (n,):
            raise ShapeError(f"{who}: timesteps t of shape {steps.shape} do not fit a batch of {n}; expected ({n},)")
        if steps.size and (steps.min() < 0 or steps.max() >= self.num_timesteps):
            raise ValueError(f"{who}: timesteps must lie in [0, {self.num_timesteps}), got values from "
                             f"{int(steps.min())} to {int(steps.max())}")
        return steps.astype(np.int64)

    def _pair(self, a, b, who: str) -> tuple[Tensor, Tensor]:
        a, b = as_tensor(a), as_tensor(b)
        if a.shape != b.shape:
            raise ShapeError(f"{who}: the two inputs must have one shape, got {describe(a)} and {describe(b)}")
        if a.ndim < 1:
            raise ShapeError(f"{who}: inputs must be a batch (N, ...), got {describe(a)}")
        return a, b

    def q_sample(self, x0, t, noise) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: a draw of q(x_t | x_0) for the
        noise ``noise`` (eps); differentiable in x_0 and eps."""
        x0, noise = self._pair(x0, noise, "NoiseSchedule.q_sample")
        who = "NoiseSchedule.q_sample"
        return (self.coefficient(np.sqrt(self.alpha_bars), t, x0, who) * x0
                + self.coefficient(np.sqrt(1.0 - self.alpha_bars), t, x0, who) * noise)

    def posterior_mean_variance(self, x0, x_t, t) -> tuple[Tensor, Tensor]:
        """(mu_t, beta~_t) of q(x_{t-1} | x_t, x_0) (module notes); the variance is shaped
        (N, 1, ..., 1) to broadcast over a sample (0 at t = 0, where x_{-1} = x_0)."""
        who = "NoiseSchedule.posterior_mean_variance"
        x0, x_t = self._pair(x0, x_t, who)
        denominator = 1.0 - self.alpha_bars
        from_x0 = np.sqrt(self.alpha_bars_prev) * self.betas / denominator
        from_xt = np.sqrt(self.alphas) * (1.0 - self.alpha_bars_prev) / denominator
        mean = self.coefficient(from_x0, t, x0, who) * x0 + self.coefficient(from_xt, t, x0, who) * x_t
        return mean, self.coefficient(self.posterior_variance, t, x0, who)

    def predict_x0(self, x_t, t, eps) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        who = "NoiseSchedule.predict_x0"
        x_t, eps = self._pair(x_t, eps, who)
        return (self.coefficient(1.0 / np.sqrt(self.alpha_bars), t, x_t, who) * x_t
                - self.coefficient(np.sqrt(1.0 / self.alpha_bars - 1.0), t, x_t, who) * eps)

    def predict_eps(self, x_t, t, x0) -> Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        who = "NoiseSchedule.predict_eps"
        x_t, x0 = self._pair(x_t, x0, who)
        scale = 1.0 / np.sqrt(1.0 - self.alpha_bars)
        return (self.coefficient(scale, t, x_t, who) * x_t
                - self.coefficient(scale * np.sqrt(self.alpha_bars), t, x_t, who) * x0)

    def velocity(self, x0, t, eps) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        who = "NoiseSchedule.velocity"
        x0, eps = self._pair(x0, eps, who)
        return (self.coefficient(np.sqrt(self.alpha_bars), t, x0, who) * eps
                - self.coefficient(np.sqrt(1.0 - self.alpha_bars), t, x0, who) * x0)

    def x0_from_velocity(self, x_t, t, v) -> Tensor:
        """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
        who = "NoiseSchedule.x0_from_velocity"
        x_t, v = self._pair(x_t, v, who)
        return (self.coefficient(np.sqrt(self.alpha_bars), t, x_t, who) * x_t
                - self.coefficient(np.sqrt(1.0 - self.alpha_bars), t, x_t, who) * v)

    def eps_from_velocity(self, x_t, t, v) -> Tensor:
        """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""
        who = "NoiseSchedule.eps_from_velocity"
        x_t, v = self._pair(x_t, v, who)
        return (self.coefficient(np.sqrt(1.0 - self.alpha_bars), t, x_t, who) * x_t
                + self.coefficient(np.sqrt(self.alpha_bars), t, x_t, who) * v)

    def ddim_step(self, x0, eps, t, t_prev, eta: float = 0.0, noise=None) -> Tensor:
        """One DDIM update (Song et al. 2021) from step t to the earlier step ``t_prev`` (-1:
        to the data, alpha_bar_{-1} = 1), given the predictions x_0 and eps at x_t:

            sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev),
            x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,

        z = ``noise`` (needed when eta > 0). eta = 0 is deterministic; eta = 1 is the DDPM
        ancestral step of the schedule respaced to (t_prev, t)."""
        who = "NoiseSchedule.ddim_step"
        x0, eps = self._pair(x0, eps, who)
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
            raise ValueError(f"{who}: eta must be a number >= 0, got {eta!r}")
        n = x0.shape[0]
        steps = self.timesteps(t, n, who)
        previous = np.asarray(t_prev)
        previous = np.full(n, int(previous)) if previous.ndim == 0 else previous
        if previous.shape != (n,) or previous.dtype.kind not in "iu" or np.any(previous < -1) \
                or np.any(previous >= steps):
            raise ValueError(f"{who}: t_prev must be {n} integers with -1 <= t_prev < t, got {t_prev!r}")
        abar = self.alpha_bars[steps]
        abar_prev = np.where(previous >= 0, self.alpha_bars[np.maximum(previous, 0)], 1.0)
        sigma = eta * np.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
        direction = np.sqrt(np.maximum(1.0 - abar_prev - sigma ** 2, 0.0))
        shape = (-1,) + (1,) * (x0.ndim - 1)

        def column(values):
            return Tensor._wrap(backend.xp.asarray(np.asarray(values, dtype=x0.dtype).reshape(shape)))

        out = column(np.sqrt(abar_prev)) * x0 + column(direction) * eps
        if np.any(sigma > 0):
            if noise is None:
                raise ValueError(f"{who}: eta > 0 adds noise sigma z; give noise (z, of the inputs' shape)")
            noise = as_tensor(noise)
            if noise.shape != x0.shape:
                raise ShapeError(f"{who}: noise of {describe(noise)} does not match x0 of {describe(x0)}")
            out = out + column(sigma) * noise
        return out

    def __repr__(self) -> str:
        return f"NoiseSchedule(kind={self.kind!r}, num_timesteps={self.num_timesteps})"


def _check_in_open_unit(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{what} must lie in (0, 1), got {value!r}")


def make_schedule(kind: str, num_timesteps: int = 1000, **options) -> NoiseSchedule:
    """The schedule named ``kind`` ('linear', 'cosine' or 'sigmoid') over ``num_timesteps``
    steps, with that builder's ``options``."""
    if kind not in SCHEDULES:
        raise ValueError(f"make_schedule: kind must be one of {SCHEDULES}, got {kind!r}")
    return getattr(NoiseSchedule, kind)(num_timesteps, **options)
