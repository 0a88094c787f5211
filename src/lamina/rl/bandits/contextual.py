"""Contextual bandit policies: ``act(context)`` with a context vector of ``dim`` numbers and
``update(arm, reward, context)``.

LinUCB and linear Thompson sampling fit one ridge regression per arm ("disjoint" models):
A_a = ridge I + sum x x^T and b_a = sum r x over the rounds arm a was played, theta_a = A_a^-1 b_a.
The neural-linear bandit learns features with a network and samples a Bayesian linear regression
on them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import mean, take_along_dim
from lamina.rl.bandits.policies import argmax_random_tie, check_positive_int
from lamina.rl.networks import mlp
from lamina.rl.spaces import seeded_generator


def check_context(label: str, context, dim: int) -> numpy.ndarray:
    """The context as a float64 vector of ``dim`` numbers, else a ShapeError naming ``label``."""
    x = numpy.asarray(context, dtype=numpy.float64) if context is not None else None
    if x is None or x.shape != (dim,):
        shape = None if x is None else x.shape
        raise ShapeError(f"{label}: the context must be a vector of shape ({dim},), got {shape}")
    return x


def sherman_morrison(a_inv: numpy.ndarray, x: numpy.ndarray) -> numpy.ndarray:
    """(A + x x^T)^-1 from A^-1 (A symmetric): A^-1 - A^-1 x x^T A^-1 / (1 + x^T A^-1 x)."""
    u = a_inv @ x
    return a_inv - numpy.outer(u, u) / (1.0 + x @ u)


class LinearArms:
    """Per-arm ridge-regression statistics A_a, b_a and A_a^-1, for LinUCB and linear Thompson
    sampling. ``sherman_morrison=True`` keeps A_a^-1 by rank-one updates; False solves A_a for it."""

    def __init__(self, n_arms: int, dim: int, ridge: float = 1.0, sherman_morrison: bool = True,
                 seed: int | None = None):
        label = type(self).__name__
        self.n_arms, self.dim = check_positive_int(label, "n_arms", n_arms), check_positive_int(label, "dim", dim)
        if ridge <= 0:
            raise ValueError(f"{label}: ridge must be > 0, got {ridge}")
        self.sherman_morrison = sherman_morrison
        self.A = numpy.stack([ridge * numpy.eye(self.dim)] * self.n_arms)
        self.A_inv = numpy.stack([numpy.eye(self.dim) / ridge] * self.n_arms)
        self.b = numpy.zeros((self.n_arms, self.dim))
        self.counts = numpy.zeros(self.n_arms, dtype=numpy.int64)
        self.rng = seeded_generator(seed)
        self.t = 0

    def theta(self) -> numpy.ndarray:
        """The ridge estimates theta_a = A_a^-1 b_a, shape (n_arms, dim)."""
        return numpy.einsum("aij,aj->ai", self.A_inv, self.b)

    def update(self, arm: int, reward: float, context=None) -> None:
        """A_a <- A_a + x x^T, b_a <- b_a + r x for the played arm a."""
        label = f"{type(self).__name__}.update"
        if isinstance(arm, bool) or not isinstance(arm, (int, numpy.integer)) or not 0 <= arm < self.n_arms:
            raise ValueError(f"{label}: arm {arm!r} is not in 0..{self.n_arms - 1}")
        x = check_context(label, context, self.dim)
        self.A[arm] += numpy.outer(x, x)
        self.b[arm] += float(reward) * x
        if self.sherman_morrison:
            self.A_inv[arm] = sherman_morrison(self.A_inv[arm], x)
        else:
            self.A_inv[arm] = numpy.linalg.solve(self.A[arm], numpy.eye(self.dim))
        self.counts[arm] += 1
        self.t += 1


class LinUCB(LinearArms):
    """Disjoint LinUCB (Li, Chu, Langford and Schapire, 2010, Algorithm 1): play the arm of largest
    p_a = x^T theta_a + alpha sqrt(x^T A_a^-1 x)."""

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, ridge: float = 1.0,
                 sherman_morrison: bool = True, seed: int | None = None):
        super().__init__(n_arms, dim, ridge, sherman_morrison, seed)
        if alpha < 0:
            raise ValueError(f"LinUCB: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def indices(self, context) -> numpy.ndarray:
        """p_a = x^T theta_a + alpha sqrt(x^T A_a^-1 x) for every arm."""
        x = check_context("LinUCB", context, self.dim)
        width = numpy.sqrt(numpy.einsum("i,aij,j->a", x, self.A_inv, x))
        return self.theta() @ x + self.alpha * width

    def act(self, context=None) -> int:
        return argmax_random_tie(self.indices(context), self.rng)


class LinearThompsonSampling(LinearArms):
    """Linear Thompson sampling (Agrawal and Goyal, 2013), one model per arm: draw
    theta_a ~ N(A_a^-1 b_a, v^2 A_a^-1) and play the arm of largest x^T theta_a."""

    def __init__(self, n_arms: int, dim: int, v: float = 0.5, ridge: float = 1.0,
                 sherman_morrison: bool = True, seed: int | None = None):
        super().__init__(n_arms, dim, ridge, sherman_morrison, seed)
        if v <= 0:
            raise ValueError(f"LinearThompsonSampling: v must be > 0, got {v}")
        self.v = float(v)

    def act(self, context=None) -> int:
        x = check_context("LinearThompsonSampling", context, self.dim)
        noise = self.rng.standard_normal((self.n_arms, self.dim))
        factors = numpy.linalg.cholesky(self.A_inv)
        samples = self.theta() + self.v * numpy.einsum("aij,aj->ai", factors, noise)
        return argmax_random_tie(samples @ x, self.rng)


class NeuralLinearBandit:
    """The neural-linear bandit (Riquelme, Tucker and Snoek, 2018): a network x -> (one output per
    arm), trained on the squared error of the played arm's output, gives features z(x) (its last
    hidden layer); on them each arm has a Bayesian linear regression r = z^T beta_a + noise with a
    normal-inverse-gamma prior (beta ~ N(0, sigma^2 I / lambda_prior), sigma^2 ~ IG(a0, b0)).
    Each round samples sigma_a^2 and beta_a from the posteriors and plays the largest z^T beta_a:

        Lambda_a = Z^T Z + lambda_prior I,   mu_a = Lambda_a^-1 Z^T r,
        a_a = a0 + n_a / 2,   b_a = b0 + (r^T r - mu_a^T Lambda_a mu_a) / 2.

    Every ``train_every`` rounds the network takes ``train_steps`` Adam steps on minibatches of
    all the data so far and the statistics are recomputed with the new features."""

    def __init__(self, n_arms: int, dim: int, hidden: Sequence[int] = (32, 16), lr: float = 1e-2,
                 train_every: int = 50, train_steps: int = 50, batch_size: int = 32, lambda_prior: float = 1.0,
                 a0: float = 3.0, b0: float = 3.0, seed: int | None = None):
        self.n_arms = check_positive_int("NeuralLinearBandit", "n_arms", n_arms)
        self.dim = check_positive_int("NeuralLinearBandit", "dim", dim)
        if not hidden:
            raise ValueError("NeuralLinearBandit: needs at least one hidden layer (its features)")
        self.network = mlp(self.dim, hidden, self.n_arms)
        self.optimizer = optim.Adam(self.network.parameters(), lr=lr)
        self.train_every, self.train_steps, self.batch_size = train_every, train_steps, batch_size
        self.lambda_prior, self.a0, self.b0 = float(lambda_prior), float(a0), float(b0)
        self.n_features = int(hidden[-1])
        self.rng = seeded_generator(seed)
        self.contexts: list[numpy.ndarray] = []
        self.arms: list[int] = []
        self.rewards: list[float] = []
        self.t = 0
        self._reset_statistics()

    def _reset_statistics(self) -> None:
        k = self.n_features
        self.zz = numpy.zeros((self.n_arms, k, k))
        self.zr = numpy.zeros((self.n_arms, k))
        self.rr = numpy.zeros(self.n_arms)
        self.counts = numpy.zeros(self.n_arms, dtype=numpy.int64)

    def features(self, contexts: numpy.ndarray) -> numpy.ndarray:
        """z(x): the last hidden layer's output for a batch of contexts."""
        layers = list(self.network.children())[:-1]
        with no_grad():
            h = tensor(numpy.asarray(contexts, dtype=numpy.float32))
            for layer in layers:
                h = layer(h)
        return h.numpy().astype(numpy.float64)

    def posterior(self, arm: int) -> tuple[numpy.ndarray, numpy.ndarray, float, float]:
        """(mu, Lambda, a, b) of the arm's normal-inverse-gamma posterior."""
        precision = self.zz[arm] + self.lambda_prior * numpy.eye(self.n_features)
        mu = numpy.linalg.solve(precision, self.zr[arm])
        a = self.a0 + self.counts[arm] / 2
        b = self.b0 + max(0.5 * (self.rr[arm] - mu @ precision @ mu), 0.0)
        return mu, precision, a, b

    def act(self, context=None) -> int:
        x = check_context("NeuralLinearBandit", context, self.dim)
        z = self.features(x[None])[0]
        scores = numpy.empty(self.n_arms)
        for arm in range(self.n_arms):
            mu, precision, a, b = self.posterior(arm)
            sigma2 = b / self.rng.gamma(a)
            beta = self.rng.multivariate_normal(mu, sigma2 * numpy.linalg.inv(precision))
            scores[arm] = z @ beta
        return argmax_random_tie(scores, self.rng)

    def update(self, arm: int, reward: float, context=None) -> None:
        if isinstance(arm, bool) or not isinstance(arm, (int, numpy.integer)) or not 0 <= arm < self.n_arms:
            raise ValueError(f"NeuralLinearBandit.update: arm {arm!r} is not in 0..{self.n_arms - 1}")
        x = check_context("NeuralLinearBandit.update", context, self.dim)
        self.contexts.append(x)
        self.arms.append(int(arm))
        self.rewards.append(float(reward))
        self.t += 1
        if self.t % self.train_every == 0:
            self.train_network()
            self._refit()
        else:
            self._add(int(arm), self.features(x[None])[0], float(reward))

    def _add(self, arm: int, z: numpy.ndarray, reward: float) -> None:
        self.zz[arm] += numpy.outer(z, z)
        self.zr[arm] += reward * z
        self.rr[arm] += reward**2
        self.counts[arm] += 1

    def _refit(self) -> None:
        self._reset_statistics()
        z = self.features(numpy.stack(self.contexts))
        for zi, arm, reward in zip(z, self.arms, self.rewards):
            self._add(arm, zi, reward)

    def train_network(self) -> float:
        """``train_steps`` Adam steps on the mean squared error of the played arms' outputs over
        minibatches of the stored rounds; returns the last loss."""
        contexts = numpy.stack(self.contexts).astype(numpy.float32)
        arms, rewards = numpy.asarray(self.arms), numpy.asarray(self.rewards, dtype=numpy.float32)
        loss_value = float("nan")
        for _ in range(self.train_steps):
            index = self.rng.integers(len(arms), size=min(self.batch_size, len(arms)))
            predicted = take_along_dim(self.network(tensor(contexts[index])), arms[index, None], axis=1)[:, 0]
            loss = mean((predicted - tensor(rewards[index])) ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_value = float(loss.item())
        return loss_value
