"""Multi-armed bandit environments with the :class:`~lamina.rl.env.Env` interface.

A bandit episode never ends: ``step(arm)`` returns ``(context, reward, False, False, {})``, the
context being the observation the next choice is made on (always 0 for the context-free bandits).
Every bandit knows its expected rewards for the current context, so that the pseudo-regret
``max_a mu_a(x_t) - mu_{a_t}(x_t)`` of a run can be measured (:func:`~lamina.rl.bandits.run_bandit`)."""

from __future__ import annotations

import numpy

from lamina.rl.env import Env
from lamina.rl.spaces import Box, Discrete, seeded_generator


def _arm_values(label: str, name: str, values) -> numpy.ndarray:
    array = numpy.asarray(values, dtype=numpy.float64)
    if array.ndim != 1 or array.size < 1 or not numpy.all(numpy.isfinite(array)):
        raise ValueError(f"{label}: {name} must be a non-empty 1-d list of finite numbers, got {values!r}")
    return array


class BanditEnv(Env):
    """The base of the bandits: ``n_arms`` discrete actions; subclasses implement
    :meth:`expected_rewards` (for the current context) and :meth:`_draw_reward`."""

    def __init__(self, n_arms: int):
        self.n_arms = int(n_arms)
        self.action_space = Discrete(self.n_arms)
        self.observation_space = Discrete(1)

    def expected_rewards(self) -> numpy.ndarray:
        """mu_a for every arm a, given the current context."""
        raise NotImplementedError(f"{type(self).__name__}.expected_rewards is not implemented")

    def _draw_reward(self, arm: int) -> float:
        raise NotImplementedError(f"{type(self).__name__}._draw_reward is not implemented")

    def _context(self):
        return 0

    def _next_context(self) -> None:
        """Draw the context of the next round (nothing to do without contexts)."""

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._next_context()
        return self._context(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"{type(self).__name__}.step: arm {action!r} is not one of the {self.n_arms} arms "
                             f"({self.action_space})")
        reward = self._draw_reward(int(action))
        self._next_context()
        return self._context(), reward, False, False, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_arms={self.n_arms})"


class BernoulliBandit(BanditEnv):
    """Arm a pays 1 with probability ``probs[a]`` and 0 otherwise."""

    def __init__(self, probs):
        self.probs = _arm_values("BernoulliBandit", "probs", probs)
        if numpy.any((self.probs < 0) | (self.probs > 1)):
            raise ValueError(f"BernoulliBandit: probabilities must lie in [0, 1], got {self.probs.tolist()}")
        super().__init__(self.probs.size)

    def expected_rewards(self) -> numpy.ndarray:
        return self.probs.copy()

    def _draw_reward(self, arm: int) -> float:
        return float(self.np_random.random() < self.probs[arm])


class GaussianBandit(BanditEnv):
    """Arm a pays a draw of N(means[a], stds[a]^2); ``stds`` is one number or one per arm."""

    def __init__(self, means, stds=1.0):
        self.means = _arm_values("GaussianBandit", "means", means)
        self.stds = numpy.broadcast_to(numpy.asarray(stds, dtype=numpy.float64), self.means.shape).copy()
        if numpy.any(self.stds < 0):
            raise ValueError(f"GaussianBandit: standard deviations must be >= 0, got {self.stds.tolist()}")
        super().__init__(self.means.size)

    def expected_rewards(self) -> numpy.ndarray:
        return self.means.copy()

    def _draw_reward(self, arm: int) -> float:
        return float(self.means[arm] + self.stds[arm] * self.np_random.standard_normal())


class LinearContextualBandit(BanditEnv):
    """Contexts x ~ N(0, I_dim); arm a pays x . theta_a + noise, noise ~ N(0, noise_std^2).

    ``thetas`` (n_arms, dim) are given or drawn once from N(0, I / dim) with ``theta_seed``, so that
    the expected rewards x . theta_a have variance about 1."""

    def __init__(self, n_arms: int = 5, dim: int = 4, noise_std: float = 0.1, thetas=None,
                 theta_seed: int | None = None):
        if thetas is None:
            rng = seeded_generator(theta_seed)
            thetas = rng.standard_normal((n_arms, dim)) / numpy.sqrt(dim)
        self.thetas = numpy.asarray(thetas, dtype=numpy.float64)
        if self.thetas.ndim != 2:
            raise ValueError(f"LinearContextualBandit: thetas must be (n_arms, dim), got shape {self.thetas.shape}")
        super().__init__(self.thetas.shape[0])
        self.dim, self.noise_std = self.thetas.shape[1], float(noise_std)
        self.observation_space = Box(-numpy.inf, numpy.inf, shape=(self.dim,), dtype=numpy.float64)
        self.context = numpy.zeros(self.dim)

    def expected_rewards(self) -> numpy.ndarray:
        return self.thetas @ self.context

    def _draw_reward(self, arm: int) -> float:
        return float(self.thetas[arm] @ self.context + self.noise_std * self.np_random.standard_normal())

    def _context(self) -> numpy.ndarray:
        return self.context.copy()

    def _next_context(self) -> None:
        self.context = self.np_random.standard_normal(self.dim)

    def __repr__(self) -> str:
        return f"LinearContextualBandit(n_arms={self.n_arms}, dim={self.dim}, noise_std={self.noise_std})"
