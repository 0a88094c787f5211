"""R2D2, recurrent replay distributed DQN (Kapturowski et al., 2019), with one actor: a
recurrent Q-network learned from replayed fixed-length sequences.

The actor carries the LSTM state (h, c) from step to step (zeros at each episode's start) and
cuts its experience into sequences of ``length`` m steps, a new one every m - ``overlap``
steps (overlap m / 2 by default), each stored with the recurrent state the actor had at its
first step (:class:`SequenceWriter`). An episode's end closes the sequence that covers its
last steps, padded with zeros to m steps.

The learner replays a sequence from its stored state: the first ``burn_in`` b steps only
unroll the network (no graph, no loss: :func:`unroll`), the rest get the n-step double-Q loss
with the invertible value rescaling of Pohlen et al. (2018)

    h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x,
    y_t = h( sum_{k<n} gamma^k r_{t+k} + gamma^n h^-1( Q_target(s_{t+n}, argmax_a Q(s_{t+n}, a)) ) )

(fewer than n steps at the sequence's end, no bootstrap past a terminal state:
:func:`rescaled_n_step_targets`). Sequences are replayed with priorities mixed from their TD
errors, p = eta max_t |delta_t| + (1 - eta) mean_t |delta_t| (:func:`sequence_priorities`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina import nn, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import mean
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, obs_tensor
from lamina.rl.prioritized import SumTree
from lamina.rl.spaces import Discrete

__all__ = ["R2D2Agent", "R2D2Network", "SequenceReplayBuffer", "SequenceWriter", "StoredSequence",
           "inverse_value_rescale", "r2d2_loss", "rescaled_n_step_targets", "sequence_priorities", "train_r2d2",
           "unroll", "value_rescale"]

RESCALE_EPS = 1e-3


def value_rescale(x, eps: float = RESCALE_EPS) -> numpy.ndarray:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x, in float64."""
    x = numpy.asarray(x, dtype=numpy.float64)
    return numpy.sign(x) * (numpy.sqrt(numpy.abs(x) + 1.0) - 1.0) + eps * x


def inverse_value_rescale(y, eps: float = RESCALE_EPS) -> numpy.ndarray:
    """h^-1(y) = sign(y) ((((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1), in float64.

    The inner quotient is computed as 2 (|y| + 1 + eps) / (sqrt(1 + 4 eps (|y| + 1 + eps)) + 1)
    (the same number, without the cancellation of sqrt(...) - 1 for small eps), and u^2 - 1
    as (u - 1)(u + 1)."""
    y = numpy.asarray(y, dtype=numpy.float64)
    a = numpy.abs(y) + 1.0 + eps
    u = 2.0 * a / (numpy.sqrt(1.0 + 4.0 * eps * a) + 1.0)
    return numpy.sign(y) * ((u - 1.0) * (u + 1.0))


def rescaled_n_step_targets(rewards, bootstrap_values, lengths, terminated, n: int, gamma: float,
                            eps: float = RESCALE_EPS) -> numpy.ndarray:
    """The targets (B, T) of T steps of B sequences, in rescaled (h) space.

    ``rewards`` (B, T); ``bootstrap_values`` (B, T + 1): the rescaled value of observation j,
    Q_target(s_j, a*_j); ``lengths`` (B,): the real steps of each sequence (the rest is padding,
    whose targets are 0); ``terminated`` (B,): whether the state after the last real step is
    terminal. Step t < L sums k = min(n, L - t) rewards and bootstraps from observation t + k
    with gamma^k, unless that is the terminal state: y_t = h(sum_{j<k} gamma^j r_{t+j}
    + gamma^k h^-1(v_{t+k}))."""
    rewards = numpy.asarray(rewards, dtype=numpy.float64)
    values = numpy.asarray(bootstrap_values, dtype=numpy.float64)
    batch, steps = rewards.shape if rewards.ndim == 2 else (None, None)
    if rewards.ndim != 2 or values.shape != (batch, steps + 1):
        raise ValueError(f"rescaled_n_step_targets: expected rewards (B, T) and bootstrap_values (B, T + 1), got "
                         f"{rewards.shape} and {values.shape}")
    if n < 1:
        raise ValueError(f"rescaled_n_step_targets: n must be >= 1, got {n}")
    lengths = numpy.broadcast_to(numpy.asarray(lengths, dtype=numpy.int64), (batch,))
    terminated = numpy.broadcast_to(numpy.asarray(terminated, dtype=bool), (batch,))
    unscaled = inverse_value_rescale(values, eps)
    t = numpy.arange(steps)
    k = numpy.minimum(n, lengths[:, None] - t)                            # (B, T); <= 0 on padding
    real = k > 0
    k = numpy.maximum(k, 1)
    returns = numpy.zeros((batch, steps))
    for j in range(n):
        later = numpy.minimum(t + j, steps - 1)
        returns += numpy.where(j < k, gamma**j * rewards[:, later], 0.0)
    end = numpy.minimum(t + k, steps)
    bootstraps = numpy.take_along_axis(unscaled, end, axis=1)
    cut = terminated[:, None] & (t + k == lengths[:, None])
    targets = value_rescale(returns + numpy.where(cut, 0.0, gamma**k * bootstraps), eps)
    return numpy.where(real, targets, 0.0)


def sequence_priorities(td_errors, mask, eta: float = 0.9) -> numpy.ndarray:
    """p = eta max_t |delta_t| + (1 - eta) mean_t |delta_t| over each row's steps where ``mask``
    is True (0 for a row without any)."""
    errors = numpy.abs(numpy.asarray(td_errors, dtype=numpy.float64))
    mask = numpy.asarray(mask, dtype=bool)
    if errors.shape != mask.shape or errors.ndim != 2:
        raise ValueError(f"sequence_priorities: expected td_errors and mask of one shape (B, T), got "
                         f"{errors.shape} and {mask.shape}")
    errors = numpy.where(mask, errors, 0.0)
    count = mask.sum(axis=1)
    return eta * errors.max(axis=1) + (1.0 - eta) * errors.sum(axis=1) / numpy.maximum(count, 1)


@register_with_arguments
class R2D2Network(Module):
    """A recurrent dueling Q-network on sequences of observation vectors (B, T, ``obs_dim``): a
    ReLU Dense encoder of ``hidden`` units, an LSTM of ``lstm_units`` and a dueling head
    Q = V + A - mean_a A (each stream a ReLU layer of ``head_hidden`` and a linear output).
    Returns (Q (B, T, actions), (h, c)), the LSTM state after the last step; ``initial_state``
    (h0, c0) starts it (zeros when None)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 32, lstm_units: int = 32, head_hidden: int = 32):
        super().__init__()
        self.obs_dim, self.n_actions, self.lstm_units = obs_dim, n_actions, lstm_units
        self.encoder = nn.Dense(hidden, activation="relu")
        self.lstm = nn.LSTM(lstm_units, return_sequences=True, return_state=True)
        self.value_head = nn.Sequential([nn.Dense(head_hidden, activation="relu"), nn.Dense(1)])
        self.advantage_head = nn.Sequential([nn.Dense(head_hidden, activation="relu"), nn.Dense(n_actions)])
        self.build((None, 1, obs_dim))

    def forward(self, obs, initial_state=None):
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        features, h, c = self.lstm(self.encoder(obs), initial_state=initial_state)
        advantage = self.advantage_head(features)
        q = self.value_head(features) + advantage - mean(advantage, axis=-1, keepdims=True)
        return q, (h, c)

    def initial_state(self, batch: int = 1) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Zero states (h, c), each (batch, lstm_units)."""
        zeros = numpy.zeros((batch, self.lstm_units), dtype=self.lstm.kernel.dtype)
        return zeros, zeros.copy()


def unroll(network: R2D2Network, obs, state, burn_in: int) -> Tensor:
    """Q (B, T - burn_in, actions) of the observations (B, T, D) after the first ``burn_in``,
    starting from ``state`` (h, c): the burn-in steps only move the state forward, without a
    graph, so no gradient reaches them or flows back through the state they leave."""
    if not 0 <= burn_in < obs.shape[1]:
        raise ValueError(f"unroll: burn_in must lie in [0, {obs.shape[1]}) for sequences of {obs.shape[1]} "
                         f"observations, got {burn_in}")
    state = tuple(s if isinstance(s, Tensor) else tensor(numpy.asarray(s)) for s in state)
    if burn_in:
        with no_grad():
            _, state = network(obs[:, :burn_in], state)
        state = tuple(s.detach() for s in state)
    q, _ = network(obs[:, burn_in:], state)
    return q


class StoredSequence(NamedTuple):
    """One replayed unit: ``obs`` (m + 1, D) (the observation after the last real step at index
    ``length``, zeros beyond), ``actions`` and ``rewards`` (m,) (zeros beyond ``length``),
    ``length`` real steps, ``terminated`` (is observation ``length`` terminal), and the actor's
    recurrent state ``h``, ``c`` (H,) before its first step."""
    obs: numpy.ndarray
    actions: numpy.ndarray
    rewards: numpy.ndarray
    length: int
    terminated: bool
    h: numpy.ndarray
    c: numpy.ndarray


class SequenceWriter:
    """Cuts an actor's steps into sequences of ``length`` m steps, starting every m - ``overlap``
    steps of an episode (``overlap`` m // 2 by default). :meth:`append` returns the sequences
    that became complete; at an episode's end (terminated or truncated) also the earliest one
    not yet written, padded, unless the last step is already in a written sequence."""

    def __init__(self, length: int, overlap: int | None = None):
        overlap = length // 2 if overlap is None else overlap
        if length < 1 or not 0 <= overlap < length:
            raise ValueError(f"SequenceWriter: needs length >= 1 and 0 <= overlap < length, got length={length}, "
                             f"overlap={overlap}")
        self.length, self.period = length, length - overlap
        self._reset()

    def _reset(self) -> None:
        self.steps: list = []            # (obs, action, reward, h, c) from episode step self.first on
        self.first = self.next_start = 0
        self.written_until = -1          # the episode's last step in a written sequence

    def append(self, obs, action: int, reward: float, next_obs, terminated: bool, truncated: bool,
               state) -> list[StoredSequence]:
        """Add one step; ``state`` (h, c) is the actor's recurrent state before it saw ``obs``."""
        h, c = (numpy.asarray(s, dtype=numpy.float64).reshape(-1) for s in state)
        self.steps.append((numpy.asarray(obs, dtype=numpy.float64), int(action), float(reward), h, c))
        step = self.first + len(self.steps) - 1
        ready = []
        if step - self.next_start + 1 == self.length:
            ready.append(self._write(next_obs, terminated))
            self.written_until = step
            self.next_start += self.period
            del self.steps[:self.next_start - self.first]
            self.first = self.next_start
        if terminated or truncated:
            if self.written_until != step:
                ready.append(self._write(next_obs, terminated))
            self._reset()
        return ready

    def _write(self, next_obs, terminated: bool) -> StoredSequence:
        steps = self.steps[self.next_start - self.first:self.next_start - self.first + self.length]
        count, dim = len(steps), steps[0][0].size
        obs = numpy.zeros((self.length + 1, dim))
        actions, rewards = numpy.zeros(self.length, dtype=numpy.int64), numpy.zeros(self.length)
        for t, (o, a, r, _, _) in enumerate(steps):
            obs[t], actions[t], rewards[t] = o.reshape(-1), a, r
        obs[count] = numpy.asarray(next_obs, dtype=numpy.float64).reshape(-1)
        return StoredSequence(obs, actions, rewards, count, bool(terminated), steps[0][3], steps[0][4])


class SequenceReplayBuffer:
    """A ring of ``capacity`` :class:`StoredSequence` entries replayed in proportion to
    priorities P(i) = p_i^alpha / sum_k p_k^alpha (a :class:`SumTree`; a new sequence gets the
    largest priority so far) with importance weights w_i = (N P(i))^-beta / max_j w_j."""

    def __init__(self, capacity: int, obs_dim: int, length: int, state_size: int, alpha: float = 0.9,
                 beta: float = 0.6, eps: float = 1e-6, seed: int | None = None):
        if capacity < 1 or length < 1 or alpha < 0 or not 0 <= beta <= 1 or eps <= 0:
            raise ValueError(f"SequenceReplayBuffer: needs capacity, length >= 1, alpha >= 0, 0 <= beta <= 1 and "
                             f"eps > 0, got capacity={capacity}, length={length}, alpha={alpha}, beta={beta}, "
                             f"eps={eps}")
        self.capacity, self.length, self.alpha, self.beta, self.eps = capacity, length, alpha, beta, eps
        self.obs = numpy.zeros((capacity, length + 1, obs_dim), dtype=numpy.float32)
        self.actions = numpy.zeros((capacity, length), dtype=numpy.int64)
        self.rewards = numpy.zeros((capacity, length))
        self.lengths = numpy.zeros(capacity, dtype=numpy.int64)
        self.terminated = numpy.zeros(capacity, dtype=bool)
        self.h = numpy.zeros((capacity, state_size), dtype=numpy.float32)
        self.c = numpy.zeros((capacity, state_size), dtype=numpy.float32)
        self.tree = SumTree(capacity)
        self.max_priority, self.position, self.size = 1.0, 0, 0
        self.rng = numpy.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, sequence: StoredSequence) -> None:
        if sequence.obs.shape != self.obs.shape[1:] or sequence.h.shape != self.h.shape[1:]:
            raise ValueError(f"SequenceReplayBuffer.add: expected obs {self.obs.shape[1:]} and states "
                             f"{self.h.shape[1:]}, got {sequence.obs.shape} and {sequence.h.shape}")
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i] = sequence.obs, sequence.actions, sequence.rewards
        self.lengths[i], self.terminated[i] = sequence.length, sequence.terminated
        self.h[i], self.c[i] = sequence.h, sequence.c
        self.tree.update(i, self.max_priority)
        self.position, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> tuple[StoredSequence, numpy.ndarray, numpy.ndarray]:
        """(a batch of sequences as a :class:`StoredSequence` of stacked arrays, weights, slots),
        one slot drawn from each of ``batch_size`` equal slices of the total priority."""
        if not 0 < batch_size <= self.size:
            raise ValueError(f"SequenceReplayBuffer.sample: asked for {batch_size} sequences, {self.size} stored")
        edges = numpy.linspace(0.0, self.tree.total, batch_size + 1)
        index = self.tree.find(self.rng.uniform(edges[:-1], edges[1:]))
        weights = (self.size * self.tree[index] / self.tree.total) ** -self.beta
        batch = StoredSequence(self.obs[index], self.actions[index], self.rewards[index], self.lengths[index],
                               self.terminated[index], self.h[index], self.c[index])
        return batch, (weights / weights.max()).astype(numpy.float32), index

    def update_priorities(self, indices, priorities) -> None:
        """p_i <- (priority_i + eps)^alpha for the slots ``indices``."""
        values = (numpy.asarray(priorities, dtype=numpy.float64) + self.eps) ** self.alpha
        self.tree.update(indices, values)
        self.max_priority = max(self.max_priority, float(values.max()))


def r2d2_loss(online_net: R2D2Network, target_net: R2D2Network, batch: StoredSequence, gamma: float, n_step: int,
              burn_in: int, weights=None, eps: float = RESCALE_EPS) -> tuple[Tensor, numpy.ndarray, numpy.ndarray]:
    """The R2D2 loss of a batch of sequences: both networks unroll from the stored states with
    ``burn_in`` steps of burn-in; on the later real steps t, delta_t = Q(s_t, a_t) - y_t with the
    double-Q targets of :func:`rescaled_n_step_targets` (a* from the online network, its value
    from the target network). Returns (mean_b w_b mean_t delta_t^2 / 2, delta (B, T - burn_in),
    the mask of the steps that count)."""
    obs = obs_tensor(batch.obs)
    steps = batch.actions.shape[1]
    q = unroll(online_net, obs, (batch.h, batch.c), burn_in)                  # (B, m + 1 - b, A)
    with no_grad():
        q_target = unroll(target_net, obs, (batch.h, batch.c), burn_in).numpy()
    best = q.numpy().argmax(axis=-1)
    bootstrap = numpy.take_along_axis(q_target, best[..., None], axis=-1)[..., 0]
    lengths = numpy.maximum(numpy.asarray(batch.length) - burn_in, 0)
    targets = rescaled_n_step_targets(numpy.asarray(batch.rewards)[:, burn_in:], bootstrap, lengths,
                                      batch.terminated, n_step, gamma, eps)
    mask = numpy.arange(steps - burn_in) < lengths[:, None]
    taken = numpy.zeros(q.shape, dtype=q.dtype)
    numpy.put_along_axis(taken[:, :-1], numpy.asarray(batch.actions)[:, burn_in:, None], 1.0, axis=-1)
    chosen = (q * tensor(taken)).sum(axis=-1)[:, :-1]                          # Q(s_t, a_t), (B, m - b)
    delta = chosen - tensor(targets.astype(q.dtype))
    scale = mask / numpy.maximum(mask.sum(axis=1, keepdims=True), 1)
    if weights is not None:
        scale = scale * numpy.asarray(weights, dtype=numpy.float64)[:, None]
    loss = (delta * delta * tensor((0.5 * scale / len(scale)).astype(q.dtype))).sum()
    return loss, numpy.where(mask, delta.numpy(), 0.0), mask


class R2D2Agent:
    """R2D2 with one actor: an :class:`R2D2Network`, epsilon-greedy actions (epsilon falling
    linearly from ``epsilon_start`` to ``epsilon_end`` over ``exploration_steps``) from the
    recurrent state it carries (reset at every episode's end), sequences of
    ``sequence_length`` steps overlapping by ``overlap`` in a :class:`SequenceReplayBuffer` of
    ``buffer_size`` sequences, and every ``train_freq`` steps (once ``learning_starts``
    sequences are stored) one Adam step on :func:`r2d2_loss` with the gradient norm clipped to
    ``max_grad_norm``; the target network is copied every ``target_update_interval`` steps."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 32, lstm_units: int = 32, head_hidden: int = 32,
                 sequence_length: int = 8, overlap: int | None = None, burn_in: int = 2, n_step: int = 3,
                 gamma: float = 0.99, lr: float = 1e-3, adam_eps: float = 1e-3, batch_size: int = 16,
                 buffer_size: int = 1000, learning_starts: int = 16, train_freq: int = 1,
                 target_update_interval: int = 100, epsilon_start: float = 1.0, epsilon_end: float = 0.05,
                 exploration_steps: int = 1000, eta: float = 0.9, alpha: float = 0.9, beta: float = 0.6,
                 value_eps: float = RESCALE_EPS, max_grad_norm: float | None = 40.0, seed: int | None = None):
        if not 0 <= burn_in < sequence_length:
            raise ValueError(f"R2D2Agent: burn_in must lie in [0, sequence_length={sequence_length}), got {burn_in}")
        self.n_actions, self.gamma, self.n_step, self.burn_in = n_actions, gamma, n_step, burn_in
        self.batch_size, self.learning_starts, self.train_freq = batch_size, learning_starts, train_freq
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        self.epsilon_start, self.epsilon_end, self.exploration_steps = epsilon_start, epsilon_end, exploration_steps
        self.eta, self.value_eps = eta, value_eps
        net_args = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=hidden, lstm_units=lstm_units,
                        head_hidden=head_hidden)
        self.online_net, self.target_net = R2D2Network(**net_args), R2D2Network(**net_args)
        copy_weights(self.online_net, self.target_net)
        self.optimizer = optim.Adam(self.online_net.parameters(), lr=lr, eps=adam_eps)
        self.writer = SequenceWriter(sequence_length, overlap)
        self.buffer = SequenceReplayBuffer(buffer_size, obs_dim, sequence_length, lstm_units, alpha=alpha, beta=beta,
                                           seed=None if seed is None else seed + 1)
        self.rng = numpy.random.default_rng(seed)
        self.env_steps = 0
        self.reset_state()

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> R2D2Agent:
        """An agent sized for ``env`` (a flat Box observation, a Discrete action space)."""
        if not isinstance(env.action_space, Discrete) or len(env.observation_space.shape) != 1:
            raise ValueError(f"R2D2Agent: needs flat observations and discrete actions, got "
                             f"{env.observation_space} and {env.action_space}")
        return cls(env.observation_space.shape[0], env.action_space.n, **kwargs)

    @property
    def epsilon(self) -> float:
        fraction = min(1.0, self.env_steps / max(self.exploration_steps, 1))
        return self.epsilon_start + fraction * (self.epsilon_end - self.epsilon_start)

    def reset_state(self) -> None:
        """Start a new episode: the carried recurrent state becomes zeros."""
        self.state = self.online_net.initial_state(1)
        self.state_before = self.state

    def act(self, obs, greedy: bool = False) -> int:
        """One step of the LSTM from the carried state; the argmax of Q, or with probability
        epsilon (not when ``greedy``) a uniformly random action."""
        self.state_before = self.state
        with no_grad():
            q, (h, c) = self.online_net(obs_tensor(obs).reshape(1, 1, -1), self.state)
        self.state = (h.numpy(), c.numpy())
        if not greedy and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n_actions))
        return int(q.numpy()[0, 0].argmax())

    def observe(self, obs, action: int, reward: float, next_obs, terminated: bool, truncated: bool = False) -> None:
        """Record the step (with the state :meth:`act` started from), store the sequences it
        completes, learn and update the target network on schedule; reset the state at an
        episode's end."""
        for sequence in self.writer.append(obs, action, reward, next_obs, terminated, truncated, self.state_before):
            if sequence.length > self.burn_in:          # a sequence inside its burn-in has nothing to learn
                self.buffer.add(sequence)
        if terminated or truncated:
            self.reset_state()
        self.env_steps += 1
        if len(self.buffer) >= max(self.learning_starts, self.batch_size) and self.env_steps % self.train_freq == 0:
            self.learn()
        if self.env_steps % self.target_update_interval == 0:
            copy_weights(self.online_net, self.target_net)

    def learn(self) -> float:
        """One gradient step on a prioritized batch of sequences; their priorities are renewed."""
        batch, weights, indices = self.buffer.sample(self.batch_size)
        loss, delta, mask = r2d2_loss(self.online_net, self.target_net, batch, self.gamma, self.n_step,
                                      self.burn_in, weights, self.value_eps)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.online_net, self.max_grad_norm)
        self.optimizer.step()
        self.buffer.update_priorities(indices, sequence_priorities(delta, mask, self.eta))
        return float(loss.item())


def train_r2d2(env: Env | str, total_steps: int = 10000, agent: R2D2Agent | None = None, seed: int | None = None,
               **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``R2D2Agent.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps. Returns the return of every finished episode."""
    env = as_env(env)
    agent = make_agent(R2D2Agent, env, agent, seed, agent_kwargs, "train_r2d2")
    agent.reset_state()                                 # a ready agent may stop mid-episode
    return run_agent(env, agent, total_steps, seed)
