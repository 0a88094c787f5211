"""Samplers and exact likelihoods for score-based SDE models (Song et al. 2021); the SDEs are in
:mod:`lamina.models.score_sde`. ``score_fn(x, t)`` gives grad_x log p_t(x) for a batch of
tensors x (n, ...) and n times t; time runs backwards from T = 1 to ``eps``, in N steps of
dt = (1 - eps) / N.

Predictors (one step from t to t - dt, z ~ N(0, I)):

* Euler-Maruyama on the reverse SDE:
  x_mean = x - [f(x, t) - g(t)^2 s(x, t)] dt,   x = x_mean + g(t) sqrt(dt) z
* reverse diffusion, with the SDE's own discretization x_{i+1} = x_i + f_i + G_i z
  (DDPM's for VP, SMLD's for VE): x_mean = x - f_i + G_i^2 s(x, t),   x = x_mean + G_i z

Langevin corrector (``corrector_steps`` steps at each t), the step from the signal-to-noise
ratio r: eps_L = 2 alpha (r ||z|| / ||s(x, t)||)^2 (norms averaged over the batch),
x_mean = x + eps_L s(x, t), x = x_mean + sqrt(2 eps_L) z. :func:`pc_sample` alternates them
(corrector then predictor) and returns the last x_mean (the noise-free last step).

The probability-flow ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 is solved with fixed steps
(Euler, Heun or RK4) by :func:`ode_sample`. :func:`ode_log_likelihood` integrates it forward
from the data at t = eps to T together with the instantaneous change of variables:

    log p_eps(x(eps)) = log p_T(x(T)) + int_eps^T div_x f~(x(t), t) dt,

f~ the ODE's drift, div exact (one backward pass per dimension) or Hutchinson's e^T (df~/dx) e
with e ~ N(0, I) or Rademacher, drawn once per solve.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, enable_grad, no_grad
from lamina.errors import ShapeError
from lamina.models.cnf import exact_trace, hutchinson_trace
from lamina.models.score_sde import SDE
from lamina.nn.layer import positive_int

__all__ = ["ODE_METHODS", "PREDICTORS", "euler_maruyama_predictor", "langevin_corrector", "ode_log_likelihood",
           "ode_sample", "pc_sample", "probability_flow_ode", "reverse_diffusion_predictor", "reverse_sde"]

ODE_METHODS = ("euler", "heun", "rk4")
PREDICTORS = ("euler_maruyama", "reverse_diffusion")


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return backend.rng() if seed is None else np.random.default_rng(seed)


def _score(score_fn, x: np.ndarray, t: np.ndarray, who: str) -> np.ndarray:
    with no_grad():
        score = score_fn(Tensor(x, dtype=x.dtype), t)
    if not isinstance(score, Tensor) or score.shape != x.shape:
        raise ShapeError(f"{who}: score_fn must return a tensor of x's shape {tuple(x.shape)}, got "
                         f"{getattr(score, 'shape', type(score).__name__)}")
    return score.data


def _column(values, x: np.ndarray):
    return backend.xp.asarray(np.asarray(values).reshape((-1,) + (1,) * (x.ndim - 1)), dtype=x.dtype)


def reverse_sde(sde: SDE, score_fn):
    """The reverse-time SDE as ``rates(x, t) -> (drift, g)``: drift f - g^2 s (an array of x's
    shape) and the diffusion g(t) (n,), for arrays x and times t."""
    def rates(x, t):
        times = sde._times(t, x.shape[0])
        return sde.reverse_drift(x, times, _score(score_fn, x, times, "reverse_sde")), sde.diffusion(times)
    return rates


def probability_flow_ode(sde: SDE, score_fn):
    """The probability-flow ODE's right-hand side ``drift(x, t) = f - g^2 s / 2`` for arrays."""
    def drift(x, t):
        times = sde._times(t, x.shape[0])
        return sde.reverse_drift(x, times, _score(score_fn, x, times, "probability_flow_ode"), probability_flow=True)
    return drift


def euler_maruyama_predictor(sde: SDE, score_fn, x, t, dt: float, seed=None):
    """One Euler-Maruyama step of the reverse SDE from t to t - dt (module notes): (x, x_mean)."""
    x = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    drift, g = reverse_sde(sde, score_fn)(x, t)
    x_mean = x - drift * dt
    noise = backend.xp.asarray(_rng(seed).standard_normal(x.shape), dtype=x.dtype)
    return x_mean + _column(g * math.sqrt(dt), x) * noise, x_mean


def reverse_diffusion_predictor(sde: SDE, score_fn, x, t, dt: float, seed=None):
    """One reverse-diffusion step with the SDE's discretization (module notes): (x, x_mean)."""
    x = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    times = sde._times(t, x.shape[0])
    f, big_g = sde.discretize(x, times, dt)
    x_mean = x - f + _column(big_g ** 2, x) * _score(score_fn, x, times, "reverse_diffusion_predictor")
    noise = backend.xp.asarray(_rng(seed).standard_normal(x.shape), dtype=x.dtype)
    return x_mean + _column(big_g, x) * noise, x_mean


def langevin_corrector(sde: SDE, score_fn, x, t, snr: float = 0.16, steps: int = 1, dt: float = 1e-3, seed=None):
    """``steps`` Langevin steps at time t with the signal-to-noise step rule (module notes):
    (x, x_mean). ``dt`` sets alpha = 1 - beta(t) dt for the VP SDE."""
    if not snr > 0:
        raise ValueError(f"langevin_corrector: snr must be positive, got {snr!r}")
    rng = _rng(seed)
    x = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    times = sde._times(t, x.shape[0])
    alpha = sde.langevin_alpha(times, dt)
    x_mean = x
    for _ in range(positive_int(steps, "langevin_corrector: steps")):
        score = _score(score_fn, x, times, "langevin_corrector")
        noise = backend.xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)
        score_norm = float(np.sqrt((backend.to_numpy(score).reshape(len(x), -1).astype(np.float64) ** 2).sum(1)).mean())
        noise_norm = float(np.sqrt((backend.to_numpy(noise).reshape(len(x), -1).astype(np.float64) ** 2).sum(1)).mean())
        step = 2.0 * alpha * (snr * noise_norm / max(score_norm, 1e-30)) ** 2
        x_mean = x + _column(step, x) * score
        x = x_mean + _column(np.sqrt(2.0 * step), x) * noise
    return x, x_mean


def _start(sde: SDE, shape, x_init, seed, who: str) -> np.ndarray:
    if x_init is None:
        if shape is None:
            raise ValueError(f"{who}: give the sample shape (n, ...) or x_init")
        return sde.prior_sample(shape, seed)
    x = x_init.data if isinstance(x_init, Tensor) else backend.xp.asarray(x_init)
    if x.ndim < 2:
        raise ShapeError(f"{who}: x_init must be a batch of samples (n, ...), got shape {tuple(x.shape)}")
    return x if x.dtype.kind == "f" else x.astype(backend.get_default_dtype())


def pc_sample(sde: SDE, score_fn, shape=None, steps: int = 500, predictor: str | None = "euler_maruyama",
              corrector: str | None = "langevin", snr: float = 0.16, corrector_steps: int = 1, eps: float = 1e-3,
              x_init=None, denoise: bool = True, seed=None) -> np.ndarray:
    """Predictor-corrector sampling (module notes) from the prior (``shape``) or ``x_init`` over
    ``steps`` times from T down to ``eps``. ``predictor``: 'euler_maruyama', 'reverse_diffusion'
    or None (corrector only); ``corrector``: 'langevin' or None (predictor only). ``denoise``
    returns the last step's mean (no noise added)."""
    who = "pc_sample"
    if predictor not in (*PREDICTORS, None) or corrector not in ("langevin", None):
        raise ValueError(f"{who}: predictor must be one of {PREDICTORS} or None and corrector 'langevin' or None, "
                         f"got {predictor!r} and {corrector!r}")
    if predictor is None and corrector is None:
        raise ValueError(f"{who}: need a predictor, a corrector or both")
    steps = positive_int(steps, f"{who}: steps")
    rng = _rng(seed)
    x = _start(sde, shape, x_init, rng, who)
    x_mean = x
    times, dt = np.linspace(sde.T, eps, steps), (sde.T - eps) / steps
    step = {"euler_maruyama": euler_maruyama_predictor, "reverse_diffusion": reverse_diffusion_predictor}.get(predictor)
    for t in times:
        t = np.full(x.shape[0], t)
        if corrector is not None:
            x, x_mean = langevin_corrector(sde, score_fn, x, t, snr, corrector_steps, dt, rng)
        if step is not None:
            x, x_mean = step(sde, score_fn, x, t, dt, rng)
    return x_mean if denoise else x


def _solve(rate, y, times: np.ndarray, method: str):
    """Fixed-step Euler, Heun or RK4 for dy/dt = rate(y, t) along the grid ``times`` (either direction)."""
    for t, t_next in zip(times[:-1], times[1:]):
        h = float(t_next - t)
        k1 = rate(y, t)
        if method == "euler":
            y = y + h * k1
        elif method == "heun":
            k2 = rate(y + h * k1, t_next)
            y = y + (h / 2) * (k1 + k2)
        else:
            k2 = rate(y + (h / 2) * k1, t + h / 2)
            k3 = rate(y + (h / 2) * k2, t + h / 2)
            k4 = rate(y + h * k3, t_next)
            y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def _method(method: str, who: str) -> str:
    if method not in ODE_METHODS:
        raise ValueError(f"{who}: method must be one of {ODE_METHODS}, got {method!r}")
    return method


def ode_sample(sde: SDE, score_fn, shape=None, steps: int = 100, method: str = "rk4", eps: float = 1e-3,
               x_init=None, seed=None) -> np.ndarray:
    """Samples by solving the probability-flow ODE from T to ``eps`` with ``steps`` fixed steps of
    ``method`` ('euler', 'heun', 'rk4'), from prior draws (``shape``) or ``x_init``."""
    who = "ode_sample"
    method, steps = _method(method, who), positive_int(steps, f"{who}: steps")
    x = _start(sde, shape, x_init, _rng(seed), who)
    drift = probability_flow_ode(sde, score_fn)
    return _solve(lambda y, t: drift(y, np.full(len(y), t)), x, np.linspace(sde.T, eps, steps + 1), method)


def ode_log_likelihood(sde: SDE, score_fn, x, steps: int = 100, method: str = "rk4", eps: float = 1e-5,
                       trace: str = "exact", noise: str = "gaussian", seed=None) -> np.ndarray:
    """log p(x) in nats per sample (n,) under the probability-flow ODE (module notes): the prior's
    log-density at x(T) plus the integrated divergence, solved from ``eps`` to T in ``steps``
    fixed steps on the grid t_k = eps + (T - eps) (k / steps)^2 (finer near the data, where the
    score changes fastest). ``trace``: 'exact' or 'hutchinson' (with ``noise`` 'gaussian' or
    'rademacher'). ``score_fn`` must be differentiable in x."""
    who = "ode_log_likelihood"
    method, steps = _method(method, who), positive_int(steps, f"{who}: steps")
    if trace not in ("exact", "hutchinson") or noise not in ("gaussian", "rademacher"):
        raise ValueError(f"{who}: trace must be 'exact' or 'hutchinson' and noise 'gaussian' or 'rademacher', got "
                         f"{trace!r} and {noise!r}")
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    if data.ndim != 2:
        raise ShapeError(f"{who}: x must be a batch of vectors (n, d), got shape {tuple(data.shape)}")
    data = data if data.dtype.kind == "f" else data.astype(backend.get_default_dtype())
    n, d = data.shape
    rng = _rng(seed)
    probe = rng.standard_normal((n, d)) if noise == "gaussian" else rng.choice([-1.0, 1.0], (n, d))
    probe = Tensor(backend.xp.asarray(probe, dtype=data.dtype), dtype=data.dtype)

    def rate(state, t):
        times = np.full(n, t)
        g2 = _column(sde.diffusion(times) ** 2, data)
        with enable_grad():
            z = Tensor(state[:, :d], dtype=data.dtype, requires_grad=True)
            score = score_fn(z, times)
            if not isinstance(score, Tensor) or score.shape != z.shape:
                raise ShapeError(f"{who}: score_fn must return a tensor of x's shape {(n, d)}, got "
                                 f"{getattr(score, 'shape', type(score).__name__)}")
            field = _drift_tensor(sde, z, times) - score * Tensor(0.5 * g2, dtype=data.dtype)
            divergence = exact_trace(field, z, False) if trace == "exact" else hutchinson_trace(field, z, probe, False)
        return backend.xp.concatenate([field.data, divergence.data[:, None]], axis=1)

    start = backend.xp.concatenate([data, backend.xp.zeros((n, 1), dtype=data.dtype)], axis=1)
    grid = eps + (sde.T - eps) * np.linspace(0.0, 1.0, steps + 1) ** 2
    end = _solve(rate, start, grid, method)
    end = np.asarray(backend.to_numpy(end), dtype=np.float64)
    return sde.prior_log_prob(end[:, :d]) + end[:, d]


def _drift_tensor(sde: SDE, z: Tensor, times: np.ndarray) -> Tensor:
    """f(z, t) on the graph: the SDEs' drifts are linear in x, f = c(t) x, so c is read off f(1, t)."""
    coefficient = sde.drift(backend.xp.ones((z.shape[0], 1), dtype=z.dtype), times)
    return z * Tensor(coefficient, dtype=z.dtype)
