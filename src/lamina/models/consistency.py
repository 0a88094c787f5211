"""Consistency models (Song et al. 2023, "Consistency Models"; the improved training of Song
and Dhariwal 2023, "Improved Techniques for Training Consistency Models").

A consistency model maps any point x_t of a probability-flow ODE trajectory (x_t = x + t z,
t in [eps, T]) back to the trajectory's start, so that one network call turns noise into a
sample. It is parameterised as

    f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t)),
    c_skip = sd^2 / ((t - eps)^2 + sd^2),   c_out = sd (t - eps) / sqrt(sd^2 + t^2),
    c_in = 1 / sqrt(sd^2 + t^2),            c_noise = ln(t) / 4,       sd = sigma_data,

which gives f(x, eps) = x exactly (c_skip(eps) = 1, c_out(eps) = 0).

Discretisation: the Karras times eps = t_1 < ... < t_N = T,
t_i = (eps^(1/rho) + (i - 1) / (N - 1) (T^(1/rho) - eps^(1/rho)))^rho (:func:`consistency_times`).
For an index n in 1 .. N-1 and z ~ N(0, I), the losses compare the online model at the noisier
point with the stop-gradient target model f^- at the less noisy one:

    L = lambda(t_n) d(f(x_{t_{n+1}}, t_{n+1}), f^-(x_{t_n}, t_n)),

* consistency training (CT, :meth:`ConsistencyModel.ct_loss`): x_{t_{n+1}} = x + t_{n+1} z and
  x_{t_n} = x + t_n z, the same z (no teacher needed);
* consistency distillation (CD, :meth:`ConsistencyModel.cd_loss`): x_{t_n} from x_{t_{n+1}} by
  one Euler or Heun step of the ODE dx/dt = (x - D(x; t)) / t of a trained denoiser D.

d is the squared L2 distance ('l2') or the pseudo-Huber metric ('pseudo_huber')
d(x, y) = sqrt(||x - y||^2 + c^2) - c, c = 0.00054 sqrt(dim) (iCT). lambda(t_n) is 1
('uniform') or 1 / (t_{n+1} - t_n) ('ict'); n is drawn uniformly ('uniform') or by iCT's
lognormal rule ('lognormal'): p(n) proportional to erf((ln t_{n+1} - P_mean) / (sqrt(2) P_std))
- erf((ln t_n - P_mean) / (sqrt(2) P_std)), P_mean = -1.1, P_std = 2.

Curricula for N over K training steps k (:mod:`lamina.train.consistency` uses them):

* original CT: N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1 (s0 = 2, s1 = 150) and
  the target network's EMA decay mu(k) = exp(s0 ln(mu0) / N(k)) (mu0 = 0.9);
* improved CT: N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2(s1 / s0) + 1))
  (s0 = 10, s1 = 1280), and mu = 0: the target is the online network itself, without gradient.

Sampling (:meth:`ConsistencyModel.sample`): x = f(T z, T) in one step; multistep sampling then,
for each time tau of a decreasing list in (eps, T), adds noise x_tau = x + sqrt(tau^2 - eps^2) z
and maps back, x = f(x_tau, tau).

Example::

    model = ConsistencyModel(DenoisingMLP(hidden=(64, 64)), sigma_data=0.5, T=20.0)
    train_consistency(model, x, epochs=50, batch_size=256, lr=2e-3)      # iCT
    samples = model.sample(1000)                    # one step; sample(1000, steps=2) two
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.schedulers.base import karras_sigmas, rng_from
from lamina.models.schedulers.edm import edm_coefficients
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["CONSISTENCY_METRICS", "ConsistencyModel", "consistency_coefficients", "consistency_times",
           "ct_discretization_steps", "ct_target_decay", "gaussian_mixture_denoiser", "ict_discretization_steps",
           "lognormal_step_probabilities", "pseudo_huber_distance"]

CONSISTENCY_METRICS = ("pseudo_huber", "l2")
WEIGHTINGS = ("ict", "uniform")
STEP_SAMPLINGS = ("lognormal", "uniform")
SOLVERS = ("heun", "euler")


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def consistency_coefficients(t, sigma_data: float = 0.5, eps: float = 0.002) -> dict[str, np.ndarray]:
    """c_skip, c_out, c_in and c_noise of the module notes at times ``t`` (float64 arrays)."""
    t = np.asarray(t, dtype=np.float64)
    edm = edm_coefficients(t, sigma_data)
    return {"c_skip": sigma_data ** 2 / ((t - eps) ** 2 + sigma_data ** 2),
            "c_out": sigma_data * (t - eps) / np.sqrt(sigma_data ** 2 + t ** 2),
            "c_in": edm["c_in"], "c_noise": edm["c_noise"]}


def consistency_times(num_steps: int, eps: float = 0.002, T: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """The ``num_steps`` (N >= 2) Karras times eps = t_1 < ... < t_N = T (module notes)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 2:
        raise ValueError(f"consistency_times: num_steps must be an int >= 2 (N boundary points), got {num_steps!r}")
    return karras_sigmas(int(num_steps), eps, T, rho)[::-1].copy()


def _check_progress(k, total_steps, who: str) -> tuple[int, int]:
    total = positive_int(total_steps, f"{who}: total_steps")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k:
        raise ValueError(f"{who}: k must be a training step >= 0, got {k!r}")
    return int(k), total


def ct_discretization_steps(k: int, total_steps: int, s0: int = 2, s1: int = 150) -> int:
    """The original CT curriculum N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1."""
    k, total = _check_progress(k, total_steps, "ct_discretization_steps")
    k = min(k, total)
    return int(math.ceil(math.sqrt(k / total * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1) + 1)


def ct_target_decay(num_steps: int, s0: int = 2, mu0: float = 0.9) -> float:
    """The original CT target network's EMA decay mu = exp(s0 ln(mu0) / N)."""
    positive_int(num_steps, "ct_target_decay: num_steps")
    if not 0 < mu0 < 1:
        raise ValueError(f"ct_target_decay: mu0 must be in (0, 1), got {mu0!r}")
    return math.exp(s0 * math.log(mu0) / num_steps)


def ict_discretization_steps(k: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """The improved CT curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K /
    (log2(s1 / s0) + 1)) (at least 1): N doubles K' steps at a time."""
    k, total = _check_progress(k, total_steps, "ict_discretization_steps")
    if not 1 <= s0 <= s1:
        raise ValueError(f"ict_discretization_steps: need 1 <= s0 <= s1, got s0={s0!r}, s1={s1!r}")
    stage = max(math.floor(total / (math.log2(s1 / s0) + 1)), 1)
    return int(min(s0 * 2 ** (k // stage), s1) + 1)


def lognormal_step_probabilities(times, P_mean: float = -1.1, P_std: float = 2.0) -> np.ndarray:
    """iCT's probabilities of the N - 1 indices n of the increasing ``times`` (module notes)."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size < 2 or np.any(np.diff(times) <= 0) or times[0] <= 0:
        raise ValueError(f"lognormal_step_probabilities: times must be >= 2 increasing positive numbers, got "
                         f"{describe(times)}")
    cdf = np.array([math.erf((math.log(t) - P_mean) / (math.sqrt(2.0) * P_std)) for t in times])
    weights = np.diff(cdf)
    return weights / weights.sum()


def pseudo_huber_distance(x, y, c: float | None = None) -> Tensor:
    """d(x, y) = sqrt(||x - y||^2 + c^2) - c per sample (the norm over all but the first axis),
    c = 0.00054 sqrt(values per sample) unless given: N distances."""
    x = as_tensor(x)
    y = y if isinstance(y, Tensor) else Tensor._wrap(backend.xp.asarray(y, dtype=x.dtype))
    if x.shape != y.shape or x.ndim < 2:
        raise ShapeError(f"pseudo_huber_distance: x of {describe(x)} and y of {describe(y)} must be batches "
                         "(N, ...) of one shape")
    dim = int(np.prod(x.shape[1:]))
    c = 0.00054 * math.sqrt(dim) if c is None else _positive(c, "pseudo_huber_distance: c")
    diff = F.reshape(x - y, x.shape[0], dim)
    return F.sqrt(F.sum(diff * diff, axis=1) + c * c) - c


def gaussian_mixture_denoiser(means, std: float, weights=None) -> Callable[[np.ndarray, float], np.ndarray]:
    """The optimal denoiser D(x; sigma) = E[x_0 | x_0 + sigma z = x] of the mixture sum_k w_k
    N(mu_k, std^2 I): sum_k r_k(x) (std^2 x + sigma^2 mu_k) / (std^2 + sigma^2), r_k the
    posterior probabilities of the components under N(mu_k, (std^2 + sigma^2) I). A function
    of NumPy arrays (N, D) and one sigma or N of them (exact, for distillation tests and demos)."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2:
        raise ShapeError(f"gaussian_mixture_denoiser: means must be (components, dim), got {describe(means)}")
    std = _positive(std, "gaussian_mixture_denoiser: std")
    k = means.shape[0]
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (k,) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"gaussian_mixture_denoiser: weights must be {k} non-negative numbers, got "
                         f"{describe(weights)}")
    log_weights = np.log(weights / weights.sum())

    def denoise(x, sigma):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != means.shape[1]:
            raise ShapeError(f"gaussian_mixture_denoiser: x must be (N, {means.shape[1]}), got {describe(x)}")
        s2 = np.broadcast_to(np.asarray(sigma, dtype=np.float64) ** 2, (x.shape[0],))[:, None]
        variance = std ** 2 + s2
        distances = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        logits = log_weights - 0.5 * distances / variance
        logits -= logits.max(axis=1, keepdims=True)
        posterior = np.exp(logits)
        posterior /= posterior.sum(axis=1, keepdims=True)
        centre = posterior @ means
        return ((std ** 2 * x + s2 * centre) / variance).astype(x.dtype)
    return denoise


def _denoiser_function(denoiser, dtype) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """D(x, sigmas) on NumPy arrays for a Module called as ``denoiser(x, sigma)`` (an
    :class:`~lamina.models.schedulers.EDMPrecond`) or a function of arrays."""
    if isinstance(denoiser, Module):
        def run(x, sigma):
            with no_grad(), evaluation_mode(denoiser):
                inputs = Tensor._wrap(backend.xp.asarray(x, dtype=dtype))
                return np.asarray(backend.to_numpy(denoiser(inputs, sigma).data))
        return run
    if callable(denoiser):
        return denoiser
    raise TypeError(f"ConsistencyModel.cd_loss: denoiser must be a Module D(x, sigma) (e.g. an EDMPrecond) or a "
                    f"function of arrays, got {type(denoiser).__name__}")


@register_with_arguments(modules=("net",))
class ConsistencyModel(Module):
    """A consistency model f(x, t) around a net F called as ``net(x, c_noise)`` (e.g.
    :class:`~lamina.models.DenoisingMLP` or :class:`~lamina.models.DenoisingUNet`), with
    ``sigma_data``, the smallest time ``eps`` and the largest ``T`` (module notes); ``rho`` is
    the Karras times' exponent. Calling it takes a batch x (N, ...) and t (one number or N)."""

    def __init__(self, net: Module, sigma_data: float = 0.5, eps: float = 0.002, T: float = 80.0,
                 rho: float = 7.0, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(net, Module):
            raise TypeError(f"ConsistencyModel: net must be a Module called as net(x, c_noise), got "
                            f"{type(net).__name__}")
        self.net = net
        self.sigma_data = _positive(sigma_data, "ConsistencyModel: sigma_data")
        self.eps = _positive(eps, "ConsistencyModel: eps")
        self.T = _positive(T, "ConsistencyModel: T")
        self.rho = _positive(rho, "ConsistencyModel: rho")
        if not self.eps < self.T:
            raise ValueError(f"ConsistencyModel: need eps < T, got eps={eps!r}, T={T!r}")
        self.sample_shape: tuple[int, ...] | None = None

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        self.sample_shape = tuple(int(n) for n in shape[1:])
        self.built = True

    def _times(self, t, n: int, who: str) -> np.ndarray:
        times = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64)
        times = np.full(n, float(times)) if times.ndim == 0 else times
        if times.shape != (n,) or not np.all((times >= self.eps) & (times <= self.T * (1 + 1e-12))):
            raise ValueError(f"{self._label()}.{who}: t must be one number or {n} of them in [eps, T] = "
                             f"[{self.eps}, {self.T}], got {describe(times)}")
        return times

    def forward(self, x, t) -> Tensor:
        """f(x, t) of the module notes."""
        x = as_tensor(x)
        times = self._times(t, x.shape[0], "forward")
        c = consistency_coefficients(times, self.sigma_data, self.eps)
        shape = (-1,) + (1,) * (x.ndim - 1)

        def column(values):
            return Tensor._wrap(backend.xp.asarray(values.reshape(shape).astype(x.dtype)))

        out = self.net(column(c["c_in"]) * x, c["c_noise"])
        if out.shape != x.shape:
            raise ShapeError(f"{self._label()}: the net gives {describe(out)} for inputs of {describe(x)}; it must "
                             "give the inputs' shape")
        return column(c["c_skip"]) * x + column(c["c_out"]) * out

    # -- training ------------------------------------------------------------------------
    def times(self, num_steps: int) -> np.ndarray:
        """The model's ``num_steps`` Karras times eps = t_1 < ... < t_N = T."""
        return consistency_times(num_steps, self.eps, self.T, self.rho)

    def _draws(self, x0, num_steps: int, indices, noise, step_sampling: str, who: str):
        x0 = as_tensor(x0)
        if x0.ndim < 2:
            raise ShapeError(f"{self._label()}.{who}: x0 must be a batch (N, ...), got {describe(x0)}")
        if step_sampling not in STEP_SAMPLINGS:
            raise ValueError(f"{self._label()}.{who}: step_sampling must be one of {STEP_SAMPLINGS}, got "
                             f"{step_sampling!r}")
        times = self.times(num_steps)
        n, rng = x0.shape[0], backend.rng()
        if indices is None:
            p = lognormal_step_probabilities(times) if step_sampling == "lognormal" else None
            indices = rng.choice(len(times) - 1, size=n, p=p)
        indices = np.asarray(indices)
        if indices.shape != (n,) or indices.dtype.kind not in "iu" or indices.min() < 0 \
                or indices.max() > len(times) - 2:
            raise ValueError(f"{self._label()}.{who}: indices must be {n} ints in [0, {len(times) - 2}] (0-based "
                             f"n of t_n, t_n+1), got {describe(indices)}")
        if noise is None:
            noise = rng.standard_normal(x0.shape)
        noise = Tensor._wrap(backend.xp.asarray(backend.to_numpy(noise.data) if isinstance(noise, Tensor) else noise,
                                                dtype=x0.dtype))
        if noise.shape != x0.shape:
            raise ShapeError(f"{self._label()}.{who}: noise of {describe(noise)} does not match x0 of {describe(x0)}")
        return x0, noise, times[indices], times[indices + 1]

    def _pair_loss(self, x_high: Tensor, t_high: np.ndarray, x_low, t_low: np.ndarray, target, metric: str,
                   weighting: str, who: str) -> Tensor:
        if metric not in CONSISTENCY_METRICS:
            raise ValueError(f"{self._label()}.{who}: metric must be one of {CONSISTENCY_METRICS}, got {metric!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"{self._label()}.{who}: weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if target is not None and not isinstance(target, Module):
            raise TypeError(f"{self._label()}.{who}: target must be None (the model itself without gradient) or a "
                            f"Module, got {type(target).__name__}")
        online = self(x_high, t_high)
        with no_grad():
            wanted = (self if target is None else target)(x_low, t_low)
        wanted = Tensor._wrap(wanted.data)
        if metric == "pseudo_huber":
            distance = pseudo_huber_distance(online, wanted)
        else:
            diff = F.reshape(online - wanted, online.shape[0], -1)
            distance = F.sum(diff * diff, axis=1)
        if weighting == "uniform":
            return distance.mean()
        weight = Tensor._wrap(backend.xp.asarray((1.0 / (t_high - t_low)).astype(online.dtype)))
        return (weight * distance).mean()

    def ct_loss(self, x0, num_steps: int, target: Module | None = None, metric: str = "pseudo_huber",
                weighting: str = "ict", step_sampling: str = "lognormal", indices=None, noise=None) -> Tensor:
        """Consistency training's loss (module notes) on the data ``x0`` with ``num_steps`` Karras
        times. ``target``: the target network (None: this model without gradient, iCT's mu = 0).
        ``indices`` (N 0-based n, pairing t_n with t_{n+1}) and ``noise`` z are drawn from
        lamina's generator unless given."""
        x0, z, t_low, t_high = self._draws(x0, num_steps, indices, noise, step_sampling, "ct_loss")
        shape = (-1,) + (1,) * (x0.ndim - 1)

        def column(values):
            return Tensor._wrap(backend.xp.asarray(values.reshape(shape).astype(x0.dtype)))

        x_high, x_low = x0 + column(t_high) * z, x0 + column(t_low) * z
        return self._pair_loss(x_high, t_high, Tensor._wrap(x_low.data), t_low, target, metric, weighting, "ct_loss")

    def cd_loss(self, x0, denoiser, num_steps: int = 18, target: Module | None = None, solver: str = "heun",
                metric: str = "pseudo_huber", weighting: str = "ict", step_sampling: str = "lognormal", indices=None,
                noise=None) -> Tensor:
        """Consistency distillation's loss (module notes): x_{t_{n+1}} = x0 + t_{n+1} z, then
        x_{t_n} by one ``solver`` ('heun' or 'euler') step of dx/dt = (x - D(x; t)) / t of the
        ``denoiser`` (a Module called as ``denoiser(x, sigma)``, e.g. an EDMPrecond, or a
        function of NumPy arrays). Other arguments as :meth:`ct_loss`'s."""
        if solver not in SOLVERS:
            raise ValueError(f"{self._label()}.cd_loss: solver must be one of {SOLVERS}, got {solver!r}")
        x0, z, t_low, t_high = self._draws(x0, num_steps, indices, noise, step_sampling, "cd_loss")
        run = _denoiser_function(denoiser, x0.dtype)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        high, low = t_high.reshape(shape), t_low.reshape(shape)
        x = np.asarray(backend.to_numpy(x0.data), dtype=np.float64) + high * np.asarray(backend.to_numpy(z.data))
        slope = (x - np.asarray(run(x.astype(x0.dtype), t_high), dtype=np.float64)) / high
        x_low = x + (low - high) * slope
        if solver == "heun":
            slope_low = (x_low - np.asarray(run(x_low.astype(x0.dtype), t_low), dtype=np.float64)) / low
            x_low = x + (low - high) * 0.5 * (slope + slope_low)

        def values(a):
            return Tensor._wrap(backend.xp.asarray(a.astype(x0.dtype)))

        return self._pair_loss(values(x), t_high, values(x_low), t_low, target, metric, weighting, "cd_loss")

    # -- sampling ------------------------------------------------------------------------
    def sampling_times(self, steps: int = 1) -> np.ndarray:
        """The decreasing times after T of ``steps``-step sampling: the ``steps - 1`` inner points
        of the Karras times of steps + 1 points (none for one step)."""
        steps = positive_int(steps, f"{self._label()}.sample: steps")
        return self.times(steps + 1)[::-1][1:-1].copy()

    def sample(self, n: int, steps: int = 1, times=None, start=None, generator=None) -> np.ndarray:
        """``n`` samples, a NumPy array (n, *sample_shape): x = f(T z, T), then for each of the
        decreasing ``times`` (default :meth:`sampling_times` of ``steps``) x = f(x + sqrt(tau^2 -
        eps^2) z, tau). ``start``: the unit noise z of the first step (default drawn);
        ``generator``: a NumPy Generator or seed for all noise (lamina's by default)."""
        who = f"{self._label()}.sample"
        n = positive_int(n, f"{who}: n")
        if self.sample_shape is None:
            raise RuntimeError(f"{who}: the sample shape is unknown; call or train the model first")
        if times is None:
            times = self.sampling_times(steps)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if np.any(np.diff(times) >= 0) or np.any(times <= self.eps) or np.any(times >= self.T):
            raise ValueError(f"{who}: times must decrease strictly inside (eps, T) = ({self.eps}, {self.T}), got "
                             f"{times.tolist()}")
        rng = rng_from(generator)
        params = self.parameters()
        dtype = params[0].dtype if params else backend.get_default_dtype()
        shape = (n, *self.sample_shape)
        z = rng.standard_normal(shape) if start is None else np.asarray(start, dtype=np.float64)
        if z.shape != shape:
            raise ShapeError(f"{who}: start of shape {z.shape} does not match {shape}")
        with no_grad(), evaluation_mode(self):
            x = backend.to_numpy(self(Tensor._wrap(backend.xp.asarray(self.T * z, dtype=dtype)), self.T).data)
            for tau in times:
                noisy = x + math.sqrt(tau ** 2 - self.eps ** 2) * rng.standard_normal(shape)
                x = backend.to_numpy(self(Tensor._wrap(backend.xp.asarray(noisy, dtype=dtype)), float(tau)).data)
        return np.asarray(x)

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}, eps={self.eps}, T={self.T}"
