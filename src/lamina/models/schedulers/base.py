"""What every scheduler shares: the training betas, the spacing of the inference timesteps,
the prediction conversions, dynamic thresholding, and the step counter.

A scheduler follows Hugging Face diffusers' interface: build it from keyword arguments or
:meth:`Scheduler.from_config` (diffusers' names: ``num_train_timesteps``, ``beta_start``,
``beta_end``, ``beta_schedule``, ``trained_betas``, ``prediction_type``, ``timestep_spacing``,
``steps_offset``, ...), call :meth:`Scheduler.set_timesteps`, start from noise times
``init_noise_sigma``, and for each t of ``timesteps`` feed the net ``scale_model_input(x, t)``
and update ``x = step(output, t, x).prev_sample``.

Betas (T = num_train_timesteps): 'linear' spaces them evenly from beta_start to beta_end;
'scaled_linear' spaces their square roots evenly (Stable Diffusion's); 'squaredcos_cap_v2'
is the cosine schedule, beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999) with
abar(u) = cos^2((u + 0.008) / 1.008 pi / 2). alpha_bar_t = prod_{s<=t} (1 - beta_s); the
noise level of step t in the variance-exploding view is sigma_t = sqrt((1 - abar_t) / abar_t).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["BETA_SCHEDULES", "PREDICTION_TYPES", "TIMESTEP_SPACINGS", "Scheduler", "SchedulerOutput",
           "karras_sigmas", "make_betas"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


@dataclass
class SchedulerOutput:
    """The result of one step: the sample at the next (less noisy) timestep and the
    prediction of the clean sample x_0 made on the way."""

    prev_sample: np.ndarray
    pred_original_sample: np.ndarray | None = None


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """The T betas of diffusers' ``beta_schedule`` (module notes), float64."""
    T = num_train_timesteps
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        grid = np.arange(T + 1, dtype=np.float64) / T
        alpha_bar = np.cos((grid + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    raise ValueError(f"make_betas: beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al.'s (2022) n noise levels, decreasing from sigma_max to sigma_min:
    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"karras_sigmas: n must be a positive int, got {n!r}")
    if not 0 < sigma_min < sigma_max or not rho > 0:
        raise ValueError(f"karras_sigmas: need 0 < sigma_min < sigma_max and rho > 0, got sigma_min={sigma_min!r}, "
                         f"sigma_max={sigma_max!r}, rho={rho!r}")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    high, low = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (high + ramp * (low - high)) ** rho


def as_array(x, who: str) -> np.ndarray:
    """``x`` (an array or a Tensor) as a NumPy array of floats."""
    values = np.asarray(backend.to_numpy(x.data) if isinstance(x, Tensor) else x)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    if values.ndim < 1:
        raise ShapeError(f"{who}: expected a batch of samples (N, ...), got a scalar")
    return values


def rng_from(generator) -> np.random.Generator:
    """A NumPy generator: ``generator`` itself, one seeded by an int, or lamina's (None)."""
    if generator is None:
        return backend.rng()
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"scheduler step: generator must be a numpy Generator, an int seed or None, "
                    f"got {type(generator).__name__}")


class Scheduler:
    """The base of the schedulers (module notes). Subclasses set ``defaults`` (their config and
    its default values) and implement ``_set_timesteps`` and ``step``."""

    defaults: dict = {}
    order = 1

    def __init__(self, **config):
        name = type(self).__name__
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{name}: unknown config {unknown}; allowed: {sorted(self.defaults)}")
        self.config = {**self.defaults, **config}
        c = self.config
        T = c["num_train_timesteps"]
        if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
            raise ValueError(f"{name}: num_train_timesteps must be a positive int, got {T!r}")
        if c["prediction_type"] not in PREDICTION_TYPES:
            raise ValueError(f"{name}: prediction_type must be one of {PREDICTION_TYPES}, got {c['prediction_type']!r}")
        if c["timestep_spacing"] not in TIMESTEP_SPACINGS:
            raise ValueError(f"{name}: timestep_spacing must be one of {TIMESTEP_SPACINGS}, got "
                             f"{c['timestep_spacing']!r}")
        if c.get("trained_betas") is not None:
            betas = np.asarray(c["trained_betas"], dtype=np.float64)
            if betas.shape != (T,) or not np.all((betas > 0) & (betas < 1)):
                raise ValueError(f"{name}: trained_betas must be num_train_timesteps={T} values in (0, 1), got "
                                 f"shape {betas.shape}")
            c["trained_betas"] = betas.tolist()
        elif c["beta_schedule"] not in BETA_SCHEDULES:
            raise ValueError(f"{name}: beta_schedule must be one of {BETA_SCHEDULES}, got {c['beta_schedule']!r}")
        else:
            betas = make_betas(c["beta_schedule"], T, c["beta_start"], c["beta_end"])
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.train_sigmas = np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)
        self.num_inference_steps: int | None = None
        self.timesteps: np.ndarray | None = None
        self.step_index: int | None = None

    def check_solver_options(self, **choices) -> None:
        """Refuse a solver's config value outside its choices: ``solver_order`` in 1-3 and each
        ``key=allowed`` given, naming the scheduler, the key and what was expected."""
        name, c = type(self).__name__, self.config
        if c["solver_order"] not in (1, 2, 3):
            raise ValueError(f"{name}: solver_order must be 1, 2 or 3, got {c['solver_order']!r}")
        for key, allowed in choices.items():
            if c[key] not in allowed:
                raise ValueError(f"{name}: {key} must be one of {allowed}, got {c[key]!r}")

    @classmethod
    def from_config(cls, config: dict, **overrides) -> Scheduler:
        """A scheduler from a config dict (keys it does not know, e.g. another scheduler's, are
        ignored, as diffusers does when swapping schedulers), updated by ``overrides``."""
        known = {k: v for k, v in dict(config).items() if k in cls.defaults}
        return cls(**{**known, **overrides})

    @property
    def init_noise_sigma(self) -> float:
        """The scale of the starting noise (1 for the schedulers that work on x_t)."""
        return 1.0

    def scale_model_input(self, sample, timestep=None) -> np.ndarray:
        """The net's input at ``timestep`` (the sample itself unless a subclass rescales it)."""
        return as_array(sample, f"{type(self).__name__}.scale_model_input")

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the ``num_inference_steps`` timesteps (``timesteps``, decreasing) and reset the
        scheduler's state."""
        name = type(self).__name__
        n, T = num_inference_steps, self.config["num_train_timesteps"]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= T:
            raise ValueError(f"{name}.set_timesteps: num_inference_steps must be an int in [1, {T}] "
                             f"(num_train_timesteps), got {n!r}")
        self.num_inference_steps = int(n)
        self.step_index = None
        self._set_timesteps(int(n))

    def _set_timesteps(self, n: int) -> None:
        raise NotImplementedError

    def discrete_timesteps(self, n: int) -> np.ndarray:
        """diffusers' integer timesteps of DDPM/DDIM/PNDM, decreasing: 'linspace' rounds
        linspace(0, T-1, n); 'leading' takes k (T // n) + steps_offset; 'trailing' rounds
        T - k T / n and subtracts 1."""
        T, spacing = self.config["num_train_timesteps"], self.config["timestep_spacing"]
        if spacing == "linspace":
            steps = np.linspace(0, T - 1, n).round()[::-1]
        elif spacing == "leading":
            steps = (np.arange(n) * (T // n)).round()[::-1] + self.config["steps_offset"]
        else:
            steps = np.round(np.arange(T, 0, -T / n)) - 1
        return steps.astype(np.int64)

    def _begin_step(self, timestep, who: str) -> int:
        """The index of the step about to run (checks that set_timesteps came first)."""
        if self.timesteps is None:
            raise RuntimeError(f"{type(self).__name__}.{who}: call set_timesteps(num_inference_steps) first")
        if self.step_index is None:
            first = np.isclose(float(np.asarray(timestep)), self.timesteps[0], rtol=0, atol=1e-6)
            self.step_index = 0 if first else self.index_for_timestep(timestep)
        if self.step_index >= len(self.timesteps):
            raise RuntimeError(f"{type(self).__name__}.{who}: all {len(self.timesteps)} timesteps are done; "
                               "call set_timesteps again to sample anew")
        return self.step_index

    def index_for_timestep(self, timestep) -> int:
        """The position of ``timestep`` in ``timesteps`` (the second of two equal ones, as
        diffusers, so that a sampler started part-way skips no step), for a first step
        that is not at ``timesteps[0]``."""
        value = float(np.asarray(backend.to_numpy(timestep.data) if isinstance(timestep, Tensor) else timestep))
        found = np.flatnonzero(np.isclose(self.timesteps, value, rtol=0, atol=1e-6))
        if found.size == 0:
            raise ValueError(f"{type(self).__name__}.step: timestep {value!r} is not one of the scheduler's "
                             f"timesteps {self.timesteps.tolist()}")
        return int(found[1] if found.size > 1 else found[0])

    # -- shared formulas -------------------------------------------------------------------
    def x0_and_eps(self, model_output: np.ndarray, sample: np.ndarray, alpha_bar: float
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(x_0^, eps^) from the net's output at x_t with sqrt(abar) = a, sqrt(1 - abar) = b:
        epsilon: x_0 = (x_t - b eps) / a; sample: eps = (x_t - a x_0) / b; v_prediction:
        x_0 = a x_t - b v, eps = a v + b x_t."""
        a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return (sample - b * model_output) / a, model_output
        if kind == "sample":
            return model_output, (sample - a * model_output) / b
        return a * sample - b * model_output, a * model_output + b * sample

    def threshold(self, x0: np.ndarray) -> np.ndarray:
        """Imagen's dynamic thresholding: s = the ``dynamic_thresholding_ratio`` quantile of
        |x_0| per sample, clamped to [1, sample_max_value]; x_0 -> clip(x_0, -s, s) / s."""
        flat = np.abs(x0.reshape(x0.shape[0], -1))
        s = np.quantile(flat, self.config["dynamic_thresholding_ratio"], axis=1)
        s = np.clip(s, 1.0, self.config["sample_max_value"]).reshape((-1,) + (1,) * (x0.ndim - 1))
        return (np.clip(x0, -s, s) / s).astype(x0.dtype)

    def add_noise(self, original_samples, noise, timesteps) -> np.ndarray:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: a draw of q(x_t | x_0) for integer
        ``timesteps`` (one per sample, or one for all)."""
        name = f"{type(self).__name__}.add_noise"
        x0, eps = as_array(original_samples, name), as_array(noise, name)
        if x0.shape != eps.shape:
            raise ShapeError(f"{name}: noise of shape {eps.shape} does not match samples of shape {x0.shape}")
        steps = np.asarray(timesteps)
        steps = np.full(x0.shape[0], int(steps)) if steps.ndim == 0 else steps.astype(np.int64)
        T = self.config["num_train_timesteps"]
        if steps.shape != (x0.shape[0],) or steps.min() < 0 or steps.max() >= T:
            raise ValueError(f"{name}: timesteps must be {x0.shape[0]} ints in [0, {T}), got {timesteps!r}")
        shape = (-1,) + (1,) * (x0.ndim - 1)
        abar = self.alphas_cumprod[steps].reshape(shape)
        return (np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps).astype(x0.dtype)

    def __len__(self) -> int:
        return self.config["num_train_timesteps"]

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.config.items() if k != "trained_betas"}
        return f"{type(self).__name__}({shown})"


COMMON_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                   "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading",
                   "steps_offset": 0}
THRESHOLD_DEFAULTS = {"clip_sample": False, "clip_sample_range": 1.0, "thresholding": False,
                      "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}
