"""What the offline agents share: inputs cast to a network's dtype, action spaces checked and
continuous actions moved to [-1, 1]^d, argument checks, and the fit loop over a dataset."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from lamina.autograd import Tensor, tensor
from lamina.functional import mean
from lamina.nn import Module
from lamina.parallel import one_blas_thread
from lamina.rl.offline.dataset import OfflineDataset, check_action_space
from lamina.rl.replay import Batch
from lamina.rl.spaces import Box, Discrete, Space, seeded_generator


def net_tensor(net: Module, array) -> Tensor:
    """A constant tensor of ``array`` in the dtype of ``net``'s parameters."""
    dtype = net.parameters()[0].dtype
    return tensor(numpy.asarray(array, dtype=dtype), dtype=dtype)


def check_number(who: str, name: str, value, low: float = 0.0, high: float = math.inf, open_low: bool = False,
                 open_high: bool = False) -> float:
    """``value`` as a float if it lies in the interval, else a ValueError naming ``who`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{who}: {name} must be a number, got {value!r}")
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{who}: {name} must be in {interval}, got {value!r}")
    return float(value)


def check_positive_int(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


class OfflineAgent:
    """The base of the offline agents: an action space (Discrete or a bounded flat Box), a
    generator for batches, and :meth:`fit`, which checks the dataset against the action space
    and runs :meth:`update` on ``steps`` batches drawn uniformly from it. Continuous actions are
    learned in [-1, 1]^d (:meth:`to_unit`) and mapped back to the bounds by :meth:`to_env`."""

    def __init__(self, obs_dim: int, action_space: Space, batch_size: int, seed: int | None):
        who = type(self).__name__
        if not isinstance(action_space, (Discrete, Box)) or (isinstance(action_space, Box)
                                                            and len(action_space.shape) != 1):
            raise ValueError(f"{who}: needs a Discrete or flat Box action space, got {action_space!r}")
        if isinstance(action_space, Box):
            low, high = action_space.low.astype(numpy.float64), action_space.high.astype(numpy.float64)
            if not (numpy.all(numpy.isfinite(low)) and numpy.all(numpy.isfinite(high)) and numpy.all(high > low)):
                raise ValueError(f"{who}: the action bounds must be finite with low < high, got {low} and {high}")
            self.low, self.high = low, high
        self.obs_dim = check_positive_int(who, "obs_dim", obs_dim)
        self.batch_size = check_positive_int(who, "batch_size", batch_size)
        self.action_space = action_space
        self.discrete = isinstance(action_space, Discrete)
        self.n_outputs = action_space.n if self.discrete else action_space.shape[0]
        self.rng = seeded_generator(seed)
        self.updates = 0

    @classmethod
    def for_env(cls, env, **kwargs):
        """An agent sized for ``env`` (flat observations)."""
        shape = env.observation_space.shape
        if len(shape) != 1:
            raise ValueError(f"{cls.__name__}: needs flat observations, got shape {shape}")
        return cls(shape[0], env.action_space, **kwargs)

    def to_unit(self, actions) -> numpy.ndarray:
        """Box actions moved to [-1, 1]^d (clipped); Discrete actions as indices from 0."""
        if self.discrete:
            return numpy.asarray(actions, dtype=numpy.int64) - self.action_space.start
        unit = 2.0 * (numpy.asarray(actions, dtype=numpy.float64) - self.low) / (self.high - self.low) - 1.0
        return numpy.clip(unit, -1.0, 1.0).astype(numpy.float32)

    def to_env(self, unit_action) -> numpy.ndarray:
        action = self.low + (numpy.asarray(unit_action, dtype=numpy.float64) + 1.0) * 0.5 * (self.high - self.low)
        return action.astype(self.action_space.dtype)

    def check_dataset(self, dataset: OfflineDataset) -> None:
        who = type(self).__name__
        check_action_space(dataset, self.action_space, who)
        if dataset.observation_dim != self.obs_dim:
            raise ValueError(f"{who}: the agent takes observations of {self.obs_dim} values but the dataset's "
                             f"have {dataset.observation_dim}")

    def unit_batch(self, batch: Batch) -> Batch:
        return batch._replace(actions=self.to_unit(batch.actions))

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def fit(self, dataset: OfflineDataset, steps: int, callback: Callable[[int, dict], None] | None = None
            ) -> list[dict[str, float]]:
        """``steps`` calls of :meth:`update` on batches of ``batch_size`` transitions drawn from
        ``dataset``; returns each update's statistics (``callback(step, stats)`` after each)."""
        self.check_dataset(dataset)
        check_positive_int(type(self).__name__, "steps", steps)
        history = []
        with one_blas_thread():
            for step in range(steps):
                stats = self.update(self.unit_batch(dataset.sample(self.batch_size, self.rng)))
                history.append(stats)
                if callback is not None:
                    callback(step, stats)
        return history

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        raise NotImplementedError

    def predict(self, obs, deterministic: bool = True):
        """The action for one observation: an int (Discrete) or an array within the bounds (Box)."""
        with one_blas_thread():
            action = self.policy_action(numpy.asarray(obs, dtype=numpy.float32)[None], deterministic)
        return int(action) + self.action_space.start if self.discrete else self.to_env(action)


def twin_critic_step(critics, optimizer, obs: Tensor, actions: Tensor, targets: Tensor) -> Tensor:
    """One descent step of sum_i mean((Q_i(s, a) - y)^2) over the critics (TD3's, BCQ's and
    TD3+BC's regression to a shared target y); returns that loss."""
    loss = None
    for critic in critics:
        term = mean((critic(obs, actions) - targets) ** 2)
        loss = term if loss is None else loss + term
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss
