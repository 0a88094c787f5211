"""Sampling-based model-predictive control on any dynamics callable
``dynamics(states, actions) -> (next_states, rewards)`` working on rows of arrays.

A planner scores a candidate action sequence a_0..a_{H-1} from state s by its return
sum_t r_t along the rollout (averaged over ``particles`` copies when the dynamics is stochastic),
and :meth:`act` returns the first action of the best plan, keeping the rest shifted by one step
(the last action repeated from the mean, i.e. a warm start) for the next call.

- :class:`CEMPlanner`, the cross-entropy method: draw ``population`` sequences from
  N(mu, sigma^2) clipped to the action bounds, refit mu, sigma to the ``elites`` best, smoothed:
  mu <- alpha mu + (1 - alpha) mu_elite (and the same for the variance).
- :class:`MPPIPlanner`, model-predictive path integral control (Williams et al., 2017): draw
  eps ~ N(0, sigma^2), score U + eps, and move U by the weighted noise with weights
  w_k = softmax(-cost_k / lambda) (cost = -return), i.e. U <- U + sum_k w_k eps_k."""

from __future__ import annotations

import numpy

from lamina.parallel import one_blas_thread
from lamina.rl.spaces import seeded_generator


def rollout_returns(dynamics, state, action_sequences, particles: int = 1) -> numpy.ndarray:
    """The return of each of the (population, horizon, act_dim) ``action_sequences`` from ``state``,
    averaged over ``particles`` rows per candidate (candidate k owns rows k P .. k P + P - 1)."""
    population, horizon, _ = action_sequences.shape
    states = numpy.repeat(numpy.asarray(state, dtype=numpy.float64)[None], population * particles, axis=0)
    actions = numpy.repeat(action_sequences, particles, axis=0)
    total = numpy.zeros(population * particles)
    with one_blas_thread():  # small products: threads only add overhead
        for t in range(horizon):
            states, rewards = dynamics(states, actions[:, t])
            total += numpy.asarray(rewards, dtype=numpy.float64).reshape(-1)
    total = numpy.where(numpy.isnan(total), -numpy.inf, total)
    return total.reshape(population, particles).mean(axis=1)


def mppi_weights(costs, temperature: float) -> numpy.ndarray:
    """w_k = exp(-(c_k - min c) / lambda) / sum_j exp(-(c_j - min c) / lambda) (= softmax(-c / lambda))."""
    if not temperature > 0:
        raise ValueError(f"mppi_weights: the temperature lambda must be positive, got {temperature!r}")
    costs = numpy.asarray(costs, dtype=numpy.float64)
    weights = numpy.exp(-(costs - costs.min()) / temperature)
    return weights / weights.sum()


class _Planner:
    label = "Planner"

    def __init__(self, action_low, action_high, horizon: int, particles: int, seed: int | None):
        self.low = numpy.atleast_1d(numpy.asarray(action_low, dtype=numpy.float64))
        self.high = numpy.atleast_1d(numpy.asarray(action_high, dtype=numpy.float64))
        if self.low.shape != self.high.shape or self.low.ndim != 1 or not numpy.all(self.high > self.low):
            raise ValueError(f"{self.label}: action bounds must be flat with low < high, got low {self.low} "
                             f"and high {self.high}")
        for name, value in (("horizon", horizon), ("particles", particles)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.label}: {name} must be a positive int, got {value!r}")
        self.horizon, self.particles = horizon, particles
        self.act_dim = len(self.low)
        self.rng = seeded_generator(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the warm start: the next plan starts from the middle of the action box."""
        self.previous = numpy.broadcast_to((self.low + self.high) / 2, (self.horizon, self.act_dim)).copy()

    def plan(self, dynamics, state, initial=None) -> numpy.ndarray:
        raise NotImplementedError

    def act(self, dynamics, state) -> numpy.ndarray:
        """The first action of the plan from ``state``; the plan, shifted one step, warm-starts the next call."""
        plan = self.plan(dynamics, state, self.previous)
        self.previous = numpy.concatenate([plan[1:], plan[-1:]], axis=0)
        return plan[0]


class CEMPlanner(_Planner):
    """The cross-entropy method over action sequences (module docstring); ``plan`` returns the final
    mean (horizon, act_dim). The initial standard deviation is a quarter of the action range."""

    label = "CEMPlanner"

    def __init__(self, action_low, action_high, horizon: int = 15, population: int = 100, elites: int = 10,
                 iterations: int = 5, alpha: float = 0.1, particles: int = 1, init_std: float | None = None,
                 seed: int | None = None):
        if isinstance(elites, bool) or not isinstance(elites, int) or not 1 <= elites <= population:
            raise ValueError(f"CEMPlanner: elites must be an int in [1, population={population}], got {elites!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"CEMPlanner: iterations must be a positive int, got {iterations!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"CEMPlanner: alpha must be in [0, 1), got {alpha!r}")
        self.population, self.elites, self.iterations, self.alpha = population, elites, iterations, alpha
        self.init_std = init_std
        super().__init__(action_low, action_high, horizon, particles, seed)

    def plan(self, dynamics, state, initial=None) -> numpy.ndarray:
        mean = self.previous.copy() if initial is None else numpy.array(initial, dtype=numpy.float64)
        if mean.shape != (self.horizon, self.act_dim):
            raise ValueError(f"CEMPlanner.plan: the initial plan must have shape {(self.horizon, self.act_dim)}, "
                             f"got {mean.shape}")
        std0 = (self.high - self.low) / 4 if self.init_std is None else self.init_std
        var = numpy.broadcast_to(numpy.square(std0), mean.shape).astype(numpy.float64)
        for _ in range(self.iterations):
            noise = self.rng.standard_normal((self.population, self.horizon, self.act_dim))
            candidates = numpy.clip(mean + numpy.sqrt(var) * noise, self.low, self.high)
            returns = rollout_returns(dynamics, state, candidates, self.particles)
            best = candidates[numpy.argsort(-returns, kind="stable")[:self.elites]]
            mean = self.alpha * mean + (1 - self.alpha) * best.mean(axis=0)
            var = self.alpha * var + (1 - self.alpha) * best.var(axis=0)
        return mean


class MPPIPlanner(_Planner):
    """Model-predictive path integral control (module docstring) with temperature ``temperature``
    (lambda) and noise standard deviation ``noise_sigma``; ``iterations`` updates per plan."""

    label = "MPPIPlanner"

    def __init__(self, action_low, action_high, horizon: int = 15, population: int = 100, temperature: float = 1.0,
                 noise_sigma: float = 0.5, iterations: int = 1, particles: int = 1, seed: int | None = None):
        if not temperature > 0 or not noise_sigma > 0:
            raise ValueError(f"MPPIPlanner: temperature and noise_sigma must be positive, got {temperature!r} "
                             f"and {noise_sigma!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"MPPIPlanner: iterations must be a positive int, got {iterations!r}")
        self.population, self.temperature, self.noise_sigma = population, float(temperature), noise_sigma
        self.iterations = iterations
        super().__init__(action_low, action_high, horizon, particles, seed)

    def plan(self, dynamics, state, initial=None) -> numpy.ndarray:
        plan = self.previous.copy() if initial is None else numpy.array(initial, dtype=numpy.float64)
        if plan.shape != (self.horizon, self.act_dim):
            raise ValueError(f"MPPIPlanner.plan: the initial plan must have shape {(self.horizon, self.act_dim)}, "
                             f"got {plan.shape}")
        for _ in range(self.iterations):
            noise = self.noise_sigma * self.rng.standard_normal((self.population, self.horizon, self.act_dim))
            candidates = numpy.clip(plan + noise, self.low, self.high)
            weights = mppi_weights(-rollout_returns(dynamics, state, candidates, self.particles), self.temperature)
            plan = numpy.clip(plan + numpy.tensordot(weights, candidates - plan, axes=1), self.low, self.high)
        return plan
