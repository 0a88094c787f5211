"""Context-free bandit policies: each keeps per-arm statistics, chooses with ``act()`` and learns
from ``update(arm, reward)``. Ties between the best arms are broken at random."""

from __future__ import annotations

import math

import numpy

from lamina.rl.spaces import seeded_generator


def argmax_random_tie(values: numpy.ndarray, rng: numpy.random.Generator) -> int:
    """The index of the largest value, a uniformly random one among equal largest values."""
    best = numpy.flatnonzero(values == values.max())
    return int(best[0]) if best.size == 1 else int(rng.choice(best))


def check_positive_int(label: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{label}: {name} must be a positive int, got {value!r}")
    return int(value)


class BanditPolicy:
    """The base of the bandit policies: the number of pulls ``counts[a]`` and the sample mean
    ``values[a]`` of every arm, the number of rounds ``t`` and a generator seeded by ``seed``.
    ``act(context=None)`` returns an arm; context-free policies ignore the context."""

    def __init__(self, n_arms: int, seed: int | None = None):
        self.n_arms = check_positive_int(type(self).__name__, "n_arms", n_arms)
        self.rng = seeded_generator(seed)
        self.counts = numpy.zeros(self.n_arms, dtype=numpy.int64)
        self.values = numpy.zeros(self.n_arms)
        self.t = 0

    def act(self, context=None) -> int:
        raise NotImplementedError(f"{type(self).__name__}.act is not implemented")

    def check_arm(self, arm) -> int:
        if isinstance(arm, bool) or not isinstance(arm, (int, numpy.integer)) or not 0 <= arm < self.n_arms:
            raise ValueError(f"{type(self).__name__}.update: arm {arm!r} is not in 0..{self.n_arms - 1}")
        return int(arm)

    def update(self, arm: int, reward: float, context=None) -> None:
        """Count the pull and move the arm's mean: Q_a <- Q_a + (r - Q_a) / n_a."""
        arm = self.check_arm(arm)
        self.counts[arm] += 1
        self.values[arm] += (float(reward) - self.values[arm]) / self.counts[arm]
        self.t += 1

    def _first_unplayed(self) -> int | None:
        unplayed = numpy.flatnonzero(self.counts == 0)
        return int(unplayed[0]) if unplayed.size else None


class UniformRandom(BanditPolicy):
    """Every arm with probability 1 / n_arms (the baseline with linear regret)."""

    def act(self, context=None) -> int:
        return int(self.rng.integers(self.n_arms))


class EpsilonGreedy(BanditPolicy):
    """A random arm with probability epsilon_t, else the arm of largest sample mean, with
    epsilon_t = max(min_epsilon, epsilon / (1 + decay t)) (``decay=0``: a constant epsilon; a
    1/t decay gives logarithmic regret, Auer et al., 2002)."""

    def __init__(self, n_arms: int, epsilon: float = 0.1, decay: float = 0.0, min_epsilon: float = 0.0,
                 seed: int | None = None):
        super().__init__(n_arms, seed)
        if not (0.0 <= epsilon <= 1.0 and 0.0 <= min_epsilon <= 1.0 and decay >= 0.0):
            raise ValueError(f"EpsilonGreedy: needs epsilon and min_epsilon in [0, 1] and decay >= 0, got "
                             f"epsilon={epsilon}, min_epsilon={min_epsilon}, decay={decay}")
        self.epsilon0, self.decay, self.min_epsilon = float(epsilon), float(decay), float(min_epsilon)

    @property
    def epsilon(self) -> float:
        return max(self.min_epsilon, self.epsilon0 / (1.0 + self.decay * self.t))

    def act(self, context=None) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n_arms))
        return argmax_random_tie(self.values, self.rng)


class UCB1(BanditPolicy):
    """Upper confidence bounds (Auer, Cesa-Bianchi and Fischer, 2002): each arm once, then the arm
    of largest index Q_a + sqrt(c ln t / n_a), t the rounds played (c = 2 is UCB1's bound)."""

    def __init__(self, n_arms: int, c: float = 2.0, seed: int | None = None):
        super().__init__(n_arms, seed)
        if c < 0:
            raise ValueError(f"UCB1: c must be >= 0, got {c}")
        self.c = float(c)

    def indices(self) -> numpy.ndarray:
        """Q_a + sqrt(c ln t / n_a) for every arm (infinite for unplayed arms)."""
        with numpy.errstate(divide="ignore"):
            bonus = numpy.sqrt(self.c * math.log(max(self.t, 1)) / self.counts)
        return numpy.where(self.counts > 0, self.values + bonus, numpy.inf)

    def act(self, context=None) -> int:
        first = self._first_unplayed()
        return first if first is not None else argmax_random_tie(self.indices(), self.rng)


def bernoulli_kl(p: numpy.ndarray, q: numpy.ndarray) -> numpy.ndarray:
    """kl(p, q) = p ln(p / q) + (1 - p) ln((1 - p) / (1 - q)), the divergence of Bernoulli laws."""
    eps = 1e-15
    p, q = numpy.clip(p, eps, 1 - eps), numpy.clip(q, eps, 1 - eps)
    return p * numpy.log(p / q) + (1 - p) * numpy.log((1 - p) / (1 - q))


class KLUCB(BanditPolicy):
    """KL-UCB for rewards in [0, 1] (Garivier and Cappé, 2011): each arm once, then the arm of largest
    index max{q in [Q_a, 1] : n_a kl(Q_a, q) <= ln t + c ln ln t}, found by bisection."""

    def __init__(self, n_arms: int, c: float = 0.0, iterations: int = 32, seed: int | None = None):
        super().__init__(n_arms, seed)
        self.c, self.iterations = float(c), check_positive_int("KLUCB", "iterations", iterations)

    def indices(self) -> numpy.ndarray:
        t = max(self.t, 2)
        budget = math.log(t) + self.c * math.log(max(math.log(t), 1e-12))
        played = self.counts > 0
        low, high = self.values.copy(), numpy.ones(self.n_arms)
        n = numpy.maximum(self.counts, 1)
        for _ in range(self.iterations):
            middle = (low + high) / 2
            inside = n * bernoulli_kl(self.values, middle) <= budget
            low, high = numpy.where(inside, middle, low), numpy.where(inside, high, middle)
        return numpy.where(played, low, numpy.inf)

    def act(self, context=None) -> int:
        first = self._first_unplayed()
        return first if first is not None else argmax_random_tie(self.indices(), self.rng)


class ThompsonSampling(BanditPolicy):
    """Beta-Bernoulli Thompson sampling (Thompson, 1933; Chapelle and Li, 2011): draw
    theta_a ~ Beta(alpha_a, beta_a) and play the largest; a reward r in [0, 1] adds r to alpha_a
    and 1 - r to beta_a. The prior is Beta(prior_alpha, prior_beta)."""

    def __init__(self, n_arms: int, prior_alpha: float = 1.0, prior_beta: float = 1.0, seed: int | None = None):
        super().__init__(n_arms, seed)
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError(f"ThompsonSampling: the Beta prior needs positive parameters, got "
                             f"({prior_alpha}, {prior_beta})")
        self.alpha = numpy.full(self.n_arms, float(prior_alpha))
        self.beta = numpy.full(self.n_arms, float(prior_beta))

    def act(self, context=None) -> int:
        return argmax_random_tie(self.rng.beta(self.alpha, self.beta), self.rng)

    def update(self, arm: int, reward: float, context=None) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"ThompsonSampling.update: Beta-Bernoulli sampling needs rewards in [0, 1], got "
                             f"{reward!r} (use GaussianThompsonSampling)")
        super().update(arm, reward)
        self.alpha[arm] += reward
        self.beta[arm] += 1.0 - reward


class GaussianThompsonSampling(BanditPolicy):
    """Thompson sampling with a normal prior N(prior_mean, prior_std^2) on each arm's mean and
    rewards N(mu_a, noise_std^2) of known variance: the posterior of mu_a is normal with
    precision 1 / prior_std^2 + n_a / noise_std^2 and mean
    (prior_mean / prior_std^2 + sum of rewards / noise_std^2) / precision."""

    def __init__(self, n_arms: int, prior_mean: float = 0.0, prior_std: float = 1.0, noise_std: float = 1.0,
                 seed: int | None = None):
        super().__init__(n_arms, seed)
        if prior_std <= 0 or noise_std <= 0:
            raise ValueError(f"GaussianThompsonSampling: prior_std and noise_std must be > 0, got "
                             f"{prior_std} and {noise_std}")
        self.prior_mean, self.prior_std, self.noise_std = float(prior_mean), float(prior_std), float(noise_std)

    def posterior(self) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The posterior means and standard deviations of the arms' means."""
        precision = 1.0 / self.prior_std**2 + self.counts / self.noise_std**2
        sums = self.values * self.counts
        mean = (self.prior_mean / self.prior_std**2 + sums / self.noise_std**2) / precision
        return mean, 1.0 / numpy.sqrt(precision)

    def act(self, context=None) -> int:
        mean, std = self.posterior()
        return argmax_random_tie(mean + std * self.rng.standard_normal(self.n_arms), self.rng)


class Boltzmann(BanditPolicy):
    """Softmax exploration: each arm once, then arm a with probability
    exp(Q_a / tau) / sum_b exp(Q_b / tau)."""

    def __init__(self, n_arms: int, temperature: float = 0.1, seed: int | None = None):
        super().__init__(n_arms, seed)
        if temperature <= 0:
            raise ValueError(f"Boltzmann: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def probabilities(self) -> numpy.ndarray:
        logits = self.values / self.temperature
        weights = numpy.exp(logits - logits.max())
        return weights / weights.sum()

    def act(self, context=None) -> int:
        first = self._first_unplayed()
        return first if first is not None else int(self.rng.choice(self.n_arms, p=self.probabilities()))


Softmax = Boltzmann
