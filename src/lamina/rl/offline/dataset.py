"""Fixed datasets of transitions for offline reinforcement learning, in D4RL's layout:
``observations``, ``actions``, ``rewards``, ``next_observations``, ``terminals`` (the task
ended: no value beyond) and ``timeouts`` (the episode was cut short: the state still has a
value), one row per transition, episodes stored one after another.

An episode ends at a row whose terminal or timeout flag is set. :func:`collect_dataset` runs
a policy (a function obs -> action or an object with ``predict``) in an environment, with
epsilon-random actions or Gaussian action noise, and :func:`d4rl_style_dataset` builds the
usual mixes from an expert policy: "random", "medium", "expert", "medium-expert" and
"medium-replay"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy

from lamina.rl.env import Env
from lamina.rl.replay import Batch
from lamina.rl.spaces import Box, Discrete, Space, seeded_generator

_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


@dataclass
class OfflineDataset:
    """Transitions (s, a, r, s', terminal, timeout) stacked along the first axis (module docstring).

    The last row must end an episode. Discrete actions are stored as int64 of shape (N,),
    continuous ones as float32 of shape (N, action_dim)."""

    observations: numpy.ndarray
    actions: numpy.ndarray
    rewards: numpy.ndarray
    next_observations: numpy.ndarray
    terminals: numpy.ndarray
    timeouts: numpy.ndarray

    def __post_init__(self):
        self.observations = numpy.asarray(self.observations, dtype=numpy.float32)
        self.next_observations = numpy.asarray(self.next_observations, dtype=numpy.float32)
        actions = numpy.asarray(self.actions)
        self.actions = actions.astype(numpy.int64) if actions.dtype.kind in "iub" else actions.astype(numpy.float32)
        self.rewards = numpy.asarray(self.rewards, dtype=numpy.float32)
        self.terminals = numpy.asarray(self.terminals, dtype=bool)
        self.timeouts = numpy.asarray(self.timeouts, dtype=bool)
        lengths = {name: len(getattr(self, name)) for name in _FIELDS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"OfflineDataset: every field needs one row per transition, got lengths {lengths}")
        if self.observations.shape != self.next_observations.shape:
            raise ValueError(f"OfflineDataset: observations {self.observations.shape} and next_observations "
                             f"{self.next_observations.shape} differ in shape")
        for name in ("rewards", "terminals", "timeouts"):
            if getattr(self, name).ndim != 1:
                raise ValueError(f"OfflineDataset: {name} must be 1-d, got shape {getattr(self, name).shape}")
        if len(self) == 0:
            raise ValueError("OfflineDataset: needs at least one transition")
        if not (self.terminals[-1] or self.timeouts[-1]):
            raise ValueError("OfflineDataset: the last transition must end an episode (terminal or timeout set)")

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def discrete(self) -> bool:
        """True for integer actions of shape (N,)."""
        return self.actions.dtype.kind == "i"

    @property
    def observation_dim(self) -> int:
        return int(numpy.prod(self.observations.shape[1:]))

    def episode_bounds(self) -> list[tuple[int, int]]:
        """(start, end) rows of each episode, end exclusive."""
        ends = numpy.flatnonzero(self.terminals | self.timeouts) + 1
        starts = numpy.concatenate([[0], ends[:-1]])
        return [(int(s), int(e)) for s, e in zip(starts, ends)]

    def episode_returns(self) -> numpy.ndarray:
        """The undiscounted return of each episode."""
        return numpy.array([self.rewards[s:e].sum(dtype=numpy.float64) for s, e in self.episode_bounds()])

    def timesteps(self) -> numpy.ndarray:
        """The step of each row within its episode (0 at every episode's first row)."""
        out = numpy.empty(len(self), dtype=numpy.int64)
        for start, end in self.episode_bounds():
            out[start:end] = numpy.arange(end - start)
        return out

    def returns_to_go(self, gamma: float = 1.0) -> numpy.ndarray:
        """G_t = r_t + gamma G_{t+1} within each episode (G restarts at 0 after an episode's last row)."""
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"OfflineDataset.returns_to_go: gamma must be in [0, 1], got {gamma}")
        out = numpy.empty(len(self), dtype=numpy.float64)
        for start, end in self.episode_bounds():
            running = 0.0
            for i in range(end - 1, start - 1, -1):
                running = float(self.rewards[i]) + gamma * running
                out[i] = running
        return out

    def select_episodes(self, indices: Sequence[int]) -> OfflineDataset:
        """A dataset of the episodes with these indices (in this order)."""
        bounds = self.episode_bounds()
        rows = numpy.concatenate([numpy.arange(*bounds[i]) for i in indices]) if len(indices) else None
        if rows is None:
            raise ValueError("OfflineDataset.select_episodes: no episode selected")
        return OfflineDataset(*(getattr(self, name)[rows] for name in _FIELDS))

    def top_episodes(self, fraction: float) -> OfflineDataset:
        """The best ``fraction`` of the episodes by return (at least one), for filtered ("%BC")
        behaviour cloning (Chen et al., 2021)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"OfflineDataset.top_episodes: fraction must be in (0, 1], got {fraction}")
        returns = self.episode_returns()
        keep = max(1, int(round(fraction * len(returns))))
        best = numpy.argsort(-returns, kind="stable")[:keep]
        return self.select_episodes(sorted(best.tolist()))

    def sample(self, batch_size: int, rng: numpy.random.Generator) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement, as a replay :class:`Batch`
        (``terminated`` = the terminal flags; timeouts still bootstrap)."""
        index = rng.integers(len(self), size=batch_size)
        return Batch(self.observations[index], self.actions[index], self.rewards[index],
                     self.next_observations[index], self.terminals[index])

    def segments(self, batch_size: int, length: int, rng: numpy.random.Generator, gamma: float = 1.0,
                 return_scale: float = 1.0) -> dict[str, numpy.ndarray]:
        """``batch_size`` windows of ``length`` consecutive steps of one episode each, for sequence
        models: the episode drawn with probability proportional to its length, the window's start
        uniform within it. Shorter windows (near an episode's end, or short episodes) are padded
        at the end with zeros and ``mask`` False. Returns ``observations`` (B, L, ...),
        ``actions`` (B, L[, d]), ``rewards`` and ``returns_to_go`` (B, L; the latter divided by
        ``return_scale``), ``timesteps`` (B, L) and ``mask`` (B, L)."""
        bounds = numpy.array(self.episode_bounds())
        lengths = bounds[:, 1] - bounds[:, 0]
        rtg = self.returns_to_go(gamma) / return_scale
        steps = self.timesteps()
        episodes = rng.choice(len(bounds), size=batch_size, p=lengths / lengths.sum())
        out = {"observations": numpy.zeros((batch_size, length, *self.observations.shape[1:]), numpy.float32),
               "actions": numpy.zeros((batch_size, length, *self.actions.shape[1:]), self.actions.dtype),
               "rewards": numpy.zeros((batch_size, length), numpy.float32),
               "returns_to_go": numpy.zeros((batch_size, length), numpy.float32),
               "timesteps": numpy.zeros((batch_size, length), numpy.int64),
               "mask": numpy.zeros((batch_size, length), bool)}
        for row, episode in enumerate(episodes):
            start, end = bounds[episode]
            first = start + int(rng.integers(end - start))
            rows = numpy.arange(first, min(first + length, end))
            n = len(rows)
            out["observations"][row, :n] = self.observations[rows]
            out["actions"][row, :n] = self.actions[rows]
            out["rewards"][row, :n] = self.rewards[rows]
            out["returns_to_go"][row, :n] = rtg[rows]
            out["timesteps"][row, :n] = steps[rows]
            out["mask"][row, :n] = True
        return out


def concatenate_datasets(datasets: Sequence[OfflineDataset]) -> OfflineDataset:
    """The episodes of every dataset, one after another."""
    if not datasets:
        raise ValueError("concatenate_datasets: needs at least one dataset")
    kinds = {(d.actions.dtype, d.actions.shape[1:], d.observations.shape[1:]) for d in datasets}
    if len(kinds) != 1:
        raise ValueError(f"concatenate_datasets: the datasets' actions and observations differ: "
                         f"{sorted(map(str, kinds))}")
    return OfflineDataset(*(numpy.concatenate([getattr(d, f.name) for d in datasets]) for f in fields(OfflineDataset)))


def normalize_returns(dataset: OfflineDataset, scale: float = 1000.0) -> OfflineDataset:
    """The dataset with rewards multiplied by scale / (max episode return - min episode return),
    the reward normalization of IQL (Kostrikov et al., 2021) for locomotion data."""
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise ValueError(f"normalize_returns: every episode has the same return {returns.max()}; nothing to scale by")
    return OfflineDataset(dataset.observations, dataset.actions, dataset.rewards * (scale / spread),
                          dataset.next_observations, dataset.terminals, dataset.timeouts)


def normalized_score(episode_return, random_return: float, expert_return: float):
    """D4RL's score 100 (R - R_random) / (R_expert - R_random)."""
    return 100.0 * (numpy.asarray(episode_return) - random_return) / (expert_return - random_return)


def check_action_space(dataset: OfflineDataset, action_space: Space, who: str) -> None:
    """A ValueError naming ``who`` unless the dataset's actions fit ``action_space``."""
    if isinstance(action_space, Discrete):
        if not dataset.discrete or dataset.actions.ndim != 1:
            raise ValueError(f"{who}: the action space is {action_space} but the dataset's actions are "
                             f"{dataset.actions.dtype} of shape {dataset.actions.shape[1:]} per row")
        low, high = int(dataset.actions.min()), int(dataset.actions.max())
        if low < action_space.start or high >= action_space.start + action_space.n:
            raise ValueError(f"{who}: the dataset's actions span [{low}, {high}], outside {action_space}")
    elif isinstance(action_space, Box):
        if dataset.discrete or dataset.actions.shape[1:] != action_space.shape:
            raise ValueError(f"{who}: the action space is {action_space} but the dataset's actions are "
                             f"{dataset.actions.dtype} of shape {dataset.actions.shape[1:]} per row")
    else:
        raise ValueError(f"{who}: needs a Discrete or Box action space, got {action_space!r}")


def _as_policy(policy) -> Callable:
    return (lambda obs: policy.predict(obs, deterministic=True)) if hasattr(policy, "predict") else policy


def collect_dataset(env: Env, policy, n_steps: int | None = None, n_episodes: int | None = None,
                    epsilon: float = 0.0, noise: float = 0.0, seed: int | None = None) -> OfflineDataset:
    """Run ``policy`` (a function obs -> action, an object with ``predict(obs, deterministic)``,
    or None for uniformly random actions) in ``env`` for ``n_steps`` transitions or
    ``n_episodes`` episodes (exactly one of them). Each action is replaced by a uniform random
    one with probability ``epsilon``; for Box actions Gaussian noise of standard deviation
    ``noise`` times the half-range is added, then clipped to the bounds. Episode i is reset with
    ``seed + i`` (and the action space's generator is reseeded from ``seed``); an episode cut by
    ``n_steps`` ends with its timeout flag set."""
    if (n_steps is None) == (n_episodes is None):
        raise ValueError(f"collect_dataset: give exactly one of n_steps and n_episodes, got {n_steps} and {n_episodes}")
    limit = n_steps if n_steps is not None else n_episodes
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"collect_dataset: n_steps / n_episodes must be a positive int, got {limit!r}")
    if not 0.0 <= epsilon <= 1.0 or noise < 0:
        raise ValueError(f"collect_dataset: epsilon must be in [0, 1] and noise >= 0, got {epsilon} and {noise}")
    space = env.action_space
    rng = seeded_generator(seed)
    space.seed(int(rng.integers(2**31)))
    act = _as_policy(policy) if policy is not None else None
    rows: dict[str, list] = {name: [] for name in _FIELDS}
    episode = 0
    obs, _ = env.reset(seed=None if seed is None else seed)
    while True:
        if act is None or rng.random() < epsilon:
            action = space.sample()
        else:
            action = act(obs)
            if isinstance(space, Box) and noise > 0:
                half = (space.high - space.low) / 2.0
                action = numpy.clip(action + noise * half * rng.standard_normal(space.shape), space.low, space.high)
                action = action.astype(space.dtype)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        full = n_steps is not None and len(rows["rewards"]) + 1 >= n_steps
        for name, value in zip(_FIELDS, (obs, action, reward, next_obs, terminated,
                                         (truncated or full) and not terminated)):
            rows[name].append(value)
        obs = next_obs
        if terminated or truncated or full:
            episode += 1
            if full or (n_episodes is not None and episode >= n_episodes):
                break
            obs, _ = env.reset(seed=None if seed is None else seed + episode)
    return OfflineDataset(*(numpy.asarray(rows[name]) for name in _FIELDS))


def cartpole_expert(obs) -> int:
    """A hand-written CartPole controller that balances for the whole 500 steps: push right
    when theta + 0.5 theta' + 0.05 x + 0.2 x' > 0 (leaning or falling right, or drifting right)."""
    x, x_dot, theta, theta_dot = (float(v) for v in obs[:4])
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.2 * x_dot > 0)


D4RL_KINDS = ("random", "medium", "expert", "medium-expert", "medium-replay")


def d4rl_style_dataset(env: Env, kind: str, expert, n_episodes: int = 10, medium_epsilon: float = 0.5,
                       seed: int | None = None) -> OfflineDataset:
    """A dataset in the manner of D4RL's mixes, from ``expert`` (a policy as
    :func:`collect_dataset` takes it): "random" (uniform actions), "expert" (the expert alone),
    "medium" (the expert with epsilon = ``medium_epsilon`` random actions, a partly competent
    policy), "medium-expert" (both, ``n_episodes`` each) and "medium-replay" (what a learner's
    replay buffer would hold on its way to "medium": epsilon falling linearly from 1 to
    ``medium_epsilon`` over the episodes)."""
    if kind not in D4RL_KINDS:
        raise ValueError(f"d4rl_style_dataset: kind must be one of {D4RL_KINDS}, got {kind!r}")
    base = 0 if seed is None else seed
    seeds = (None, None) if seed is None else (base, base + 100_003)
    if kind == "random":
        return collect_dataset(env, None, n_episodes=n_episodes, seed=seeds[0])
    if kind == "expert":
        return collect_dataset(env, expert, n_episodes=n_episodes, seed=seeds[0])
    if kind == "medium":
        return collect_dataset(env, expert, n_episodes=n_episodes, epsilon=medium_epsilon, seed=seeds[0])
    if kind == "medium-expert":
        return concatenate_datasets([collect_dataset(env, expert, n_episodes=n_episodes, epsilon=medium_epsilon,
                                                     seed=seeds[0]),
                                     collect_dataset(env, expert, n_episodes=n_episodes, seed=seeds[1])])
    parts = []
    for i, eps in enumerate(numpy.linspace(1.0, medium_epsilon, n_episodes)):
        parts.append(collect_dataset(env, expert, n_episodes=1, epsilon=float(eps),
                                     seed=None if seed is None else base + 7919 * i))
    return concatenate_datasets(parts)
