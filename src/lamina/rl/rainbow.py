"""Rainbow (Hessel et al., 2018): deep Q-learning with distributional (C51) values, a dueling
network of noisy layers, n-step returns, Double DQN action selection and prioritized replay.

Distributional RL (Bellemare et al., 2017) learns for every action a distribution over a fixed
support of N atoms z_i = v_min + i dz, dz = (v_max - v_min) / (N - 1). The target of a
transition (s, a, R, s') is the distribution of R + gamma_n z under p(s', a*), projected back
onto the support (:func:`categorical_projection`, the paper's Algorithm 1); the loss is the
cross-entropy -sum_i m_i log p_i(s, a) (:func:`c51_loss`).

The dueling head (Wang et al., 2016) in its distributional form gives per atom

    logits(s, a) = V(s) + A(s, a) - mean_a' A(s, a'),   p(s, a) = softmax over the atoms

and n-step returns fold R = sum_k gamma^k r_{t+k} over up to n steps (fewer at episode ends,
see :class:`NStepBuffer`), bootstrapping with gamma_n = gamma^k.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy

from lamina import nn, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import get_rng_state, set_rng_state, to_numpy
from lamina.errors import ShapeError
from lamina.functional import log_softmax, mean, softmax
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, obs_tensor
from lamina.rl.prioritized import PrioritizedReplayBuffer
from lamina.rl.spaces import Discrete

__all__ = ["NStepBuffer", "NStepTransition", "RainbowAgent", "RainbowNetwork", "c51_loss", "categorical_projection",
           "dueling_logits", "nature_torso", "train_rainbow"]


def categorical_projection(next_probs, rewards, dones, gamma_n, support) -> numpy.ndarray:
    """The C51 target m (batch, N): the distribution of Tz_j = r + gamma_n (1 - done) z_j, clipped
    to [v_min, v_max], with the mass p_j of ``next_probs`` (batch, N) split between the two
    neighbouring atoms l = floor(b_j), u = ceil(b_j) of b_j = (Tz_j - v_min) / dz in proportion
    u - b_j and b_j - l (all of it to l when b_j falls on an atom, so that mass is kept).
    ``gamma_n`` is a number or one per row; ``support`` the evenly spaced atoms (N,)."""
    probs = numpy.asarray(next_probs, dtype=numpy.float64)
    support = numpy.asarray(support, dtype=numpy.float64)
    if probs.ndim != 2 or support.ndim != 1 or probs.shape[1] != support.shape[0] or support.shape[0] < 2:
        raise ValueError(f"categorical_projection: expected next_probs (batch, N) and a support (N,) of N >= 2, "
                         f"got shapes {probs.shape} and {support.shape}")
    n_atoms, (v_min, v_max) = support.shape[0], (support[0], support[-1])
    delta_z = (v_max - v_min) / (n_atoms - 1)
    rewards = numpy.asarray(rewards, dtype=numpy.float64).reshape(-1, 1)
    not_done = 1.0 - numpy.asarray(dones, dtype=numpy.float64).reshape(-1, 1)
    gamma_n = numpy.broadcast_to(numpy.asarray(gamma_n, dtype=numpy.float64).reshape(-1, 1), rewards.shape)
    projected = numpy.clip(rewards + gamma_n * not_done * support, v_min, v_max)
    b = numpy.clip((projected - v_min) / delta_z, 0.0, n_atoms - 1)
    lower, upper = numpy.floor(b).astype(numpy.int64), numpy.ceil(b).astype(numpy.int64)
    on_atom = lower == upper
    lower_mass = probs * numpy.where(on_atom, 1.0, upper - b)
    upper_mass = probs * (b - lower)
    rows = numpy.arange(probs.shape[0])[:, None] * n_atoms
    target = numpy.bincount((rows + lower).ravel(), lower_mass.ravel(), minlength=probs.size)
    target += numpy.bincount((rows + upper).ravel(), upper_mass.ravel(), minlength=probs.size)
    return target.reshape(probs.shape)


def c51_loss(logits, target_probs, weights=None, reduction: str = "mean") -> Tensor:
    """The cross-entropy -sum_i m_i log softmax(logits)_i of the taken action's atom logits
    (batch, N) against the projected targets m (batch, N), per row (``reduction="none"``) or
    averaged (with ``weights``: mean_b w_b loss_b, importance-sampling weights)."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"c51_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    logits = logits if isinstance(logits, Tensor) else tensor(logits)
    target = tensor(numpy.asarray(target_probs), dtype=logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(f"c51_loss: target_probs {target.shape} must have the logits' shape {logits.shape}")
    per_row = -(target * log_softmax(logits, axis=-1)).sum(axis=-1)
    if weights is not None:
        per_row = per_row * tensor(numpy.asarray(weights), dtype=logits.dtype)
    return per_row if reduction == "none" else mean(per_row)


def dueling_logits(value, advantage) -> Tensor:
    """Per atom V(s) + A(s, a) - mean_a' A(s, a'): value (batch, N), advantage (batch, actions, N)."""
    return value[:, None, :] + advantage - mean(advantage, axis=1, keepdims=True)


def _stream(hidden: int, n_out: int, noisy: bool, sigma0: float) -> nn.Sequential:
    if noisy:
        return nn.Sequential([nn.NoisyDense(hidden, sigma0, activation="relu"), nn.NoisyDense(n_out, sigma0)])
    return nn.Sequential([nn.Dense(hidden, activation="relu"), nn.Dense(n_out)])


def nature_torso() -> nn.Sequential:
    """The convolutional torso of Mnih et al. (2015) (Nature DQN), kept by Rainbow: on NHWC
    frames (N, h, w, c), conv 8x8/4 to 32 channels, conv 4x4/2 to 64, conv 3x3/1 to 64 (each
    with ReLU, no padding), flattened in NHWC order (84x84 frames: 7 x 7 x 64 = 3136 features)."""
    return nn.Sequential([nn.Conv2D(32, 8, stride=4, activation="relu"), nn.Conv2D(64, 4, stride=2, activation="relu"),
                          nn.Conv2D(64, 3, stride=1, activation="relu"), nn.Flatten()])


def _obs_shape(obs_dim) -> tuple[int, ...]:
    shape = tuple(obs_dim) if isinstance(obs_dim, (tuple, list)) else (obs_dim,)
    if len(shape) not in (1, 3) or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
                                       for n in shape):
        raise ValueError(f"RainbowNetwork: obs_dim must be a positive int (flat observations) or (height, width, "
                         f"channels) of frames, got {obs_dim!r}")
    if len(shape) == 3 and min(shape[:2]) < 36:
        raise ValueError(f"RainbowNetwork: frames of {shape[0]}x{shape[1]} are too small for the Nature torso "
                         "(8x8/4, 4x4/2, 3x3/1 convolutions need at least 36x36)")
    return tuple(int(n) for n in shape)


@register_with_arguments
class RainbowNetwork(Module):
    """A dueling C51 network: a torso, then a value stream (-> N atoms) and an advantage
    stream (-> actions x N atoms), each a hidden layer of ``stream_hidden`` and an output
    layer, NoisyDense (``noisy``) or Dense. For observation vectors (``obs_dim`` an int) the
    torso is ReLU Dense layers ``hidden``; for frames (``obs_dim`` = (height, width, channels),
    e.g. (84, 84, 4), four stacked grey frames scaled to [0, 1]) it is the Nature-DQN
    :func:`nature_torso` (``hidden`` unused; the paper's ``stream_hidden`` is 512). Returns the
    atom logits (batch, actions, N) of :func:`dueling_logits`; the support is ``atoms`` evenly
    spaced values on [v_min, v_max]."""

    def __init__(self, obs_dim: int | Sequence[int], n_actions: int, hidden: Sequence[int] = (64,),
                 stream_hidden: int = 64, atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0,
                 noisy: bool = True, sigma0: float = 0.5):
        super().__init__()
        if atoms < 2 or not v_min < v_max:
            raise ValueError(f"RainbowNetwork: needs atoms >= 2 and v_min < v_max, got atoms={atoms}, "
                             f"v_min={v_min}, v_max={v_max}")
        self.obs_shape = _obs_shape(obs_dim)
        self.obs_dim = obs_dim if len(self.obs_shape) == 1 else self.obs_shape
        self.n_actions, self.atoms = n_actions, atoms
        self.support = numpy.linspace(v_min, v_max, atoms)
        if len(self.obs_shape) == 3:
            self.torso = nature_torso()
        else:
            self.torso = nn.Sequential([nn.Dense(units, activation="relu") for units in hidden])
        self.value_stream = _stream(stream_hidden, atoms, noisy, sigma0)
        self.advantage_stream = _stream(stream_hidden, n_actions * atoms, noisy, sigma0)
        self.build((None, *self.obs_shape))

    def forward(self, obs) -> Tensor:
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        if tuple(obs.shape[1:]) != self.obs_shape:
            raise ShapeError(f"RainbowNetwork: got observations of shape {tuple(obs.shape)}; expected "
                             f"(batch, {', '.join(map(str, self.obs_shape))})")
        features = self.torso(obs)
        advantage = self.advantage_stream(features).reshape(-1, self.n_actions, self.atoms)
        return dueling_logits(self.value_stream(features), advantage)

    def q_values(self, obs) -> numpy.ndarray:
        """Q(s, a) = sum_i z_i p_i(s, a), (batch, actions), without recording a graph."""
        with no_grad():
            probs = softmax(self(obs), axis=-1).numpy()
        return probs @ self.support


class NStepTransition(NamedTuple):
    """(s_t, a_t, R = sum_{k<n} gamma^k r_{t+k}, s_{t+n}, terminated at s_{t+n}, gamma^n) with n
    the number of steps folded."""
    obs: numpy.ndarray
    action: int
    reward: float
    next_obs: numpy.ndarray
    terminated: bool
    discount: float


class NStepBuffer:
    """Turns one-step transitions into n-step ones. :meth:`append` returns the transitions that
    became complete: the one that started n steps ago, or at an episode's end (terminated or
    truncated) every pending one, folded up to that end (a truncated end still bootstraps)."""

    def __init__(self, n: int, gamma: float):
        if n < 1:
            raise ValueError(f"NStepBuffer: n must be >= 1, got {n}")
        self.n, self.gamma = n, gamma
        self.pending: deque = deque()

    def append(self, obs, action, reward: float, next_obs, terminated: bool,
               truncated: bool = False) -> list[NStepTransition]:
        self.pending.append((obs, action, float(reward), next_obs, bool(terminated)))
        ready = []
        if len(self.pending) == self.n:
            ready.append(self._fold())
            self.pending.popleft()
        if terminated or truncated:
            while self.pending:
                ready.append(self._fold())
                self.pending.popleft()
        return ready

    def _fold(self) -> NStepTransition:
        obs, action = self.pending[0][0], self.pending[0][1]
        total = sum(self.gamma**k * step[2] for k, step in enumerate(self.pending))
        last = self.pending[-1]
        return NStepTransition(obs, action, total, last[3], last[4], self.gamma ** len(self.pending))


class RainbowAgent:
    """Rainbow on flat observations or frames (``obs_dim`` (h, w, c): the Nature-DQN torso)
    and discrete actions: a noisy dueling C51
    :class:`RainbowNetwork` (no epsilon: the noise explores, redrawn before every action and
    every learning step), n-step returns (``n_step``), Double DQN (the online network picks
    a* = argmax_a Q(s', a), the target network gives p(s', a*)), proportional prioritized replay
    (``alpha``; beta rising from ``beta`` to 1 over ``beta_steps``; priorities from the KL
    divergence between the target and the predicted distributions), Adam (eps 1.5e-4 as the
    paper) with the gradient norm clipped to ``max_grad_norm``, and the target network copied
    every ``target_update_interval`` environment steps. ``noisy=False`` builds the streams of
    plain Dense layers and leaves the agent without any exploration of its own."""

    def __init__(self, obs_dim: int | Sequence[int], n_actions: int, hidden: Sequence[int] = (64,),
                 stream_hidden: int = 64, atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0,
                 gamma: float = 0.99, n_step: int = 3,
                 lr: float = 1e-3, adam_eps: float = 1.5e-4, batch_size: int = 32, buffer_size: int = 10000,
                 learning_starts: int = 100, train_freq: int = 1, target_update_interval: int = 100,
                 alpha: float = 0.5, beta: float = 0.4, beta_steps: int = 10000, sigma0: float = 0.5,
                 max_grad_norm: float | None = 10.0, noisy: bool = True, seed: int | None = None):
        self.n_actions, self.gamma, self.batch_size = n_actions, gamma, batch_size
        self.learning_starts, self.train_freq = learning_starts, train_freq
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        net_args = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=tuple(hidden), stream_hidden=stream_hidden,
                        atoms=atoms, v_min=v_min, v_max=v_max, noisy=noisy, sigma0=sigma0)
        self.online_net, self.target_net = RainbowNetwork(**net_args), RainbowNetwork(**net_args)
        copy_weights(self.online_net, self.target_net)
        self.support = self.online_net.support
        self.optimizer = optim.Adam(self.online_net.parameters(), lr=lr, eps=adam_eps)
        self.buffer = PrioritizedReplayBuffer(buffer_size, self.online_net.obs_shape, alpha=alpha, beta=beta,
                                              seed=None if seed is None else seed + 1)
        self.discounts = numpy.ones(buffer_size)         # gamma^k of the transition in each slot
        self.n_step = NStepBuffer(n_step, gamma)
        self.beta_start, self.beta_steps = beta, beta_steps
        self.env_steps = 0

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> RainbowAgent:
        """An agent sized for ``env`` (a flat Box observation or (height, width, channels)
        frames, a Discrete action space)."""
        shape = tuple(env.observation_space.shape)
        if not isinstance(env.action_space, Discrete) or len(shape) not in (1, 3):
            raise ValueError(f"RainbowAgent: needs flat observations or frames and discrete actions, got "
                             f"{env.observation_space} and {env.action_space}")
        return cls(shape[0] if len(shape) == 1 else shape, env.action_space.n, **kwargs)

    def state_dict(self) -> dict:
        """Everything that changes while training, for :meth:`load_state_dict`: both networks'
        weights (with their current noise), the optimizer's state and learning rate, the
        prioritized replay buffer with each slot's discount, the n-step transitions still pending,
        the step count and lamina's global generator's state (the noise is drawn from it). Holds
        only dicts, lists, numbers, strings and arrays (copies), ready for
        :func:`lamina.io.state.flatten_state`."""
        pending = [{"obs": numpy.array(obs), "action": int(action), "reward": float(reward),
                    "next_obs": numpy.array(next_obs), "terminated": bool(terminated)}
                   for obs, action, reward, next_obs, terminated in self.n_step.pending]
        return {"algorithm": "rainbow", "online_net": _weights(self.online_net),
                "target_net": _weights(self.target_net), "optimizer": self.optimizer.state_dict(),
                "lr": self.optimizer.lr, "buffer": self.buffer.state_dict(), "discounts": self.discounts.copy(),
                "n_step_pending": pending, "env_steps": self.env_steps, "global_rng": get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same settings; this also sets
        lamina's global generator (see :func:`lamina.manual_seed`) to the saved state."""
        if state.get("algorithm") != "rainbow":
            raise ValueError(f"RainbowAgent.load_state_dict: the state is from {state.get('algorithm')!r}, "
                             f"not 'rainbow'")
        discounts = numpy.asarray(state["discounts"], dtype=numpy.float64)
        if discounts.shape != self.discounts.shape:
            raise ValueError(f"RainbowAgent.load_state_dict: the state has {discounts.shape[0]} replay slots but "
                             f"the agent {self.discounts.shape[0]}")
        self.online_net.load_state_dict(state["online_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.lr = state["lr"]
        self.buffer.load_state_dict(state["buffer"])
        self.discounts[...] = discounts
        self.n_step.pending = deque((numpy.asarray(step["obs"]), int(step["action"]), float(step["reward"]),
                                     numpy.asarray(step["next_obs"]), bool(step["terminated"]))
                                    for step in state["n_step_pending"])
        self.env_steps = int(state["env_steps"])
        set_rng_state(state["global_rng"])

    def predict(self, obs, deterministic: bool = True) -> int:
        """argmax_a Q(obs, a) with the mean weights (``deterministic=False``: with fresh noise)."""
        if not deterministic:
            return self.act(obs)
        self.online_net.eval()
        try:
            return int(self.online_net.q_values(obs_tensor(obs)[None])[0].argmax())
        finally:
            self.online_net.train()

    def act(self, obs) -> int:
        """The greedy action of the online network under newly drawn noise."""
        nn.reset_noise(self.online_net)
        return int(self.online_net.q_values(obs_tensor(obs)[None])[0].argmax())

    def observe(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool = False) -> None:
        """Fold the transition into n-step ones, store those that are complete, then learn every
        ``train_freq`` steps once ``learning_starts`` steps were taken and copy the target
        network every ``target_update_interval`` steps."""
        for step in self.n_step.append(obs, action, reward, next_obs, terminated, truncated):
            self.discounts[self.buffer.position] = step.discount
            self.buffer.add(step.obs, step.action, step.reward, step.next_obs, step.terminated)
        self.env_steps += 1
        self.buffer.beta = min(1.0, self.beta_start + (1.0 - self.beta_start) * self.env_steps / self.beta_steps)
        if self.env_steps >= self.learning_starts and self.env_steps % self.train_freq == 0:
            self.learn()
        if self.env_steps % self.target_update_interval == 0:
            copy_weights(self.online_net, self.target_net)

    def targets(self, batch, discounts) -> numpy.ndarray:
        """The projected C51 targets (batch, N) of a replayed batch, with Double DQN's a*."""
        best = self.online_net.q_values(batch.next_obs).argmax(axis=1)
        with no_grad():
            next_probs = softmax(self.target_net(batch.next_obs), axis=-1).numpy()
        chosen = next_probs[numpy.arange(len(best)), best]
        return categorical_projection(chosen, batch.rewards, batch.terminated, discounts, self.support)

    def learn(self) -> float | None:
        """One gradient step on a prioritized batch; None while fewer than ``batch_size`` are stored."""
        if len(self.buffer) < self.batch_size:
            return None
        batch, weights, indices = self.buffer.sample(self.batch_size)
        nn.reset_noise(self.online_net)
        nn.reset_noise(self.target_net)
        target = self.targets(batch, self.discounts[indices])
        logits = self.online_net(batch.obs)
        taken = numpy.zeros((len(indices), self.n_actions, 1), dtype=logits.dtype)
        taken[numpy.arange(len(indices)), numpy.asarray(batch.actions, dtype=numpy.int64)] = 1.0
        per_row = c51_loss((logits * tensor(taken, dtype=logits.dtype)).sum(axis=1), target, reduction="none")
        loss = mean(per_row * tensor(weights, dtype=logits.dtype))
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.online_net, self.max_grad_norm)
        self.optimizer.step()
        entropy = -(target * numpy.log(numpy.where(target > 0, target, 1.0))).sum(axis=1)
        self.buffer.update_priorities(indices, numpy.maximum(per_row.numpy() - entropy, 0.0))  # KL(m || p)
        return float(loss.item())


def _weights(net: Module) -> dict[str, numpy.ndarray]:
    """Copies of a network's parameters and buffers by name."""
    return {name: numpy.array(to_numpy(value)) for name, value in net.state_dict().items()}


def train_rainbow(env: Env | str, total_steps: int = 10000, agent: RainbowAgent | None = None,
                  seed: int | None = None, **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``RainbowAgent.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps; episode ends (terminated or truncated) reach the n-step
    buffer. Returns the return of every finished episode."""
    env = as_env(env)
    agent = make_agent(RainbowAgent, env, agent, seed, agent_kwargs, "train_rainbow")
    return run_agent(env, agent, total_steps, seed)
