"""What the off-policy continuous-control agents (:class:`~lamina.rl.SAC`, :class:`~lamina.rl.TD3`,
:class:`~lamina.rl.DDPG`) share: Q(s, a) networks, actions rescaled between [-1, 1] and a Box's
bounds, the squared-error critic loss, and an agent base with the replay buffer, the warm-up of
uniform random actions, the training schedule, ``state_dict`` and the training loop.

As in Stable-Baselines3, the networks work in [-1, 1]^d: the replay buffer stores the actions
rescaled there, the policies end in tanh, and :meth:`OffPolicyAgent.act` maps the policy's action
a to the environment's bounds as low + (a + 1) (high - low) / 2."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy

from lamina import backend, nn
from lamina.autograd import Tensor, tensor
from lamina.backend import to_numpy
from lamina.functional import concat, mean
from lamina.nn import Module
from lamina.optim import Optimizer
from lamina.parallel import one_blas_thread
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import mlp
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.spaces import Box, seeded_generator


def box_bounds(label: str, action_space) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The (low, high) bounds of a flat Box with finite bounds, else a ValueError naming ``label``."""
    if not isinstance(action_space, Box) or len(action_space.shape) != 1:
        raise ValueError(f"{label}: needs a flat Box action space (continuous actions), got {action_space}")
    low, high = action_space.low.astype(numpy.float64), action_space.high.astype(numpy.float64)
    if not (numpy.all(numpy.isfinite(low)) and numpy.all(numpy.isfinite(high)) and numpy.all(high > low)):
        raise ValueError(f"{label}: the action bounds must be finite with low < high, got low {low} and high {high}")
    return low, high


def linear_default_init(net: Module) -> Module:
    """Redraw every dense layer's weight and bias from U(-1/sqrt(n_in), 1/sqrt(n_in)), PyTorch's
    default for ``nn.Linear`` and so the networks of Stable-Baselines3's and CleanRL's SAC and TD3
    (smaller than He's initialization: the first Q-values and actions start near 0); drawn from
    lamina's generator. Returns ``net``."""
    for module in net.modules():
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if isinstance(module, nn.Dense) and weight is not None:
            bound = 1.0 / math.sqrt(weight.shape[0])
            weight.data[...] = backend.rng().uniform(-bound, bound, weight.shape)
            if bias is not None:
                bias.data[...] = backend.rng().uniform(-bound, bound, bias.shape)
    return net


class QNetwork(Module):
    """Q(s, a): an MLP (ReLU hidden layers, :func:`linear_default_init`) on the concatenation
    [s, a]; one value per row."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = linear_default_init(mlp(obs_dim + action_dim, hidden, 1))
        self.built = True

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self.net(concat([obs, actions], axis=1))[:, 0]


def critic_loss(critics: Sequence[QNetwork], batch: Batch, targets: numpy.ndarray) -> Tensor:
    """sum_i mean((Q_i(s, a) - y)^2) over the critics, for the batch's (s, a) and targets y."""
    obs, actions = batch_tensor(batch.obs), batch_tensor(batch.actions)
    y = tensor(targets, dtype=obs.dtype)
    total = None
    for critic in critics:
        term = mean((critic(obs, actions) - y) ** 2)
        total = term if total is None else total + term
    return total


def batch_tensor(array) -> Tensor:
    """A constant tensor of an array of the replay buffer (float32, the networks' dtype)."""
    return tensor(numpy.asarray(array, dtype=numpy.float32))


def bootstrap(batch: Batch, gamma: float, next_value: numpy.ndarray) -> numpy.ndarray:
    """y = r + gamma (1 - terminated) V(s'), float32."""
    not_terminal = 1.0 - batch.terminated.astype(numpy.float32)
    return (batch.rewards + gamma * not_terminal * next_value).astype(numpy.float32)


@contextlib.contextmanager
def frozen(*modules: Module) -> Iterator[None]:
    """Within the block the modules' parameters get no gradients (an actor loss then computes
    none for the critics it runs through)."""
    for module in modules:
        module.freeze()
    try:
        yield
    finally:
        for module in modules:
            module.unfreeze()


def weights(net: Module) -> dict[str, numpy.ndarray]:
    """Copies of a network's parameters and buffers by name."""
    return {name: numpy.array(to_numpy(value)) for name, value in net.state_dict().items()}


def _check(label: str, name: str, value, low: float, high: float = math.inf, integer: bool = False,
           low_open: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and value <= high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high < math.inf else "")
        raise ValueError(f"{label}: {name} must be {'an int' if integer else 'a number'} {bound}, got {value!r}")


class OffPolicyAgent:
    """The base of SAC, TD3 and DDPG: a replay buffer of (s, a in [-1, 1]^d, r, s', terminated),
    uniform random actions for the first ``learning_starts`` environment steps, then
    ``gradient_steps`` updates every ``train_freq`` steps (Stable-Baselines3's schedule).
    Updates and actions run with single-threaded BLAS: the products of such small networks
    gain nothing from more threads, and OpenBLAS's spinning threads made one SAC update 20 times
    slower on a busy 2-core machine.

    Subclasses build their networks and optimizers, implement :meth:`policy_action` (the
    policy's action in [-1, 1]^d for one observation) and :meth:`update` (one gradient step on
    a batch), and list what :meth:`state_dict` saves in :meth:`networks`, :meth:`optimizers`
    and :meth:`extra_state`."""

    algorithm = ""

    def __init__(self, obs_dim: int, action_space: Box, *, gamma: float, tau: float, batch_size: int,
                 buffer_size: int, learning_starts: int, train_freq: int, gradient_steps: int, seed: int | None):
        label = type(self).__name__
        self.low, self.high = box_bounds(label, action_space)
        _check(label, "obs_dim", obs_dim, 1, integer=True)
        _check(label, "gamma", gamma, 0.0, 1.0)
        _check(label, "tau", tau, 0.0, 1.0, low_open=True)
        for name, value in (("batch_size", batch_size), ("buffer_size", buffer_size), ("train_freq", train_freq),
                            ("gradient_steps", gradient_steps)):
            _check(label, name, value, 1, integer=True)
        _check(label, "learning_starts", learning_starts, 0, integer=True)
        self.obs_dim, self.action_dim = obs_dim, action_space.shape[0]
        self.action_space = action_space
        self.gamma, self.tau, self.batch_size = gamma, tau, batch_size
        self.learning_starts, self.train_freq, self.gradient_steps = learning_starts, train_freq, gradient_steps
        self.buffer = ReplayBuffer(buffer_size, (obs_dim,), (self.action_dim,), action_dtype=numpy.float32,
                                   seed=None if seed is None else seed + 1)
        self.rng = seeded_generator(seed)
        self.env_steps = 0
        self.updates = 0

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> OffPolicyAgent:
        """An agent sized for ``env`` (flat Box observations, a bounded flat Box of actions)."""
        if not isinstance(env.observation_space, Box) or len(env.observation_space.shape) != 1:
            raise ValueError(f"{cls.__name__}: needs flat Box observations, got {env.observation_space}")
        box_bounds(cls.__name__, env.action_space)
        return cls(env.observation_space.shape[0], env.action_space, **kwargs)

    # -- acting --------------------------------------------------------------
    def to_env(self, unit_action: numpy.ndarray) -> numpy.ndarray:
        """An action of [-1, 1]^d moved to the bounds: low + (a + 1) (high - low) / 2."""
        action = self.low + (numpy.asarray(unit_action, dtype=numpy.float64) + 1.0) * 0.5 * (self.high - self.low)
        return action.astype(self.action_space.dtype)

    def to_unit(self, action) -> numpy.ndarray:
        """An environment action moved to [-1, 1]^d (clipped there)."""
        unit = 2.0 * (numpy.asarray(action, dtype=numpy.float64) - self.low) / (self.high - self.low) - 1.0
        return numpy.clip(unit, -1.0, 1.0).astype(numpy.float32)

    def policy_action(self, obs, deterministic: bool) -> numpy.ndarray:
        raise NotImplementedError

    def act(self, obs, deterministic: bool = False) -> numpy.ndarray:
        """The action for one observation, within the action space's bounds: a uniform random
        one during the warm-up (the first ``learning_starts`` steps, unless ``deterministic``),
        then the policy's (with exploration unless ``deterministic``)."""
        if not deterministic and self.env_steps < self.learning_starts:
            return self.to_env(self.rng.uniform(-1.0, 1.0, self.action_dim))
        with one_blas_thread():
            return self.to_env(self.policy_action(obs, deterministic))

    def predict(self, obs, deterministic: bool = True) -> numpy.ndarray:
        """:meth:`act`, deterministic by default (what :func:`evaluate_policy` calls)."""
        return self.act(obs, deterministic)

    def greedy_layers(self) -> list[tuple[numpy.ndarray, numpy.ndarray, str | None]]:
        """(weight, bias, activation) of each dense layer of the deterministic policy, the last
        one ending in tanh (actions in [-1, 1]^d)."""
        raise NotImplementedError

    def greedy_network(self) -> nn.Sequential:
        """The deterministic policy as one self-contained network of dense layers from
        observations to actions within the bounds (a copy): the policy's layers, then a last
        layer with the diagonal weight (high - low) / 2 and the bias (high + low) / 2, for
        :func:`lamina.save` and :class:`GreedyPolicy`."""
        layers = self.greedy_layers()
        rescale = (numpy.diag((self.high - self.low) / 2.0), (self.high + self.low) / 2.0, None)
        net = nn.Sequential([nn.Dense(len(bias), activation=activation) for _, bias, activation in layers]
                            + [nn.Dense(self.action_dim)])
        net.build((None, self.obs_dim))
        for layer, (weight, bias, _) in zip(net.layers, [*layers, rescale]):
            layer.weight.data[...] = weight
            layer.bias.data[...] = bias
        return net

    # -- learning ------------------------------------------------------------
    def observe(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        """Store a transition (the action as :meth:`act` gave it) and run the updates due."""
        self.buffer.add(obs, self.to_unit(action), reward, next_obs, terminated)
        self.env_steps += 1
        if self.env_steps >= self.learning_starts and self.env_steps % self.train_freq == 0:
            for _ in range(self.gradient_steps):
                self.learn()

    def learn(self) -> dict[str, float] | None:
        """One update on a replayed batch; None (and nothing done) while the buffer holds fewer
        than ``batch_size`` transitions. Returns the losses."""
        if len(self.buffer) < self.batch_size:
            return None
        with one_blas_thread():
            return self.update(self.buffer.sample(self.batch_size))

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    # -- saving --------------------------------------------------------------
    def networks(self) -> dict[str, Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, Optimizer]:
        raise NotImplementedError

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Everything that changes while training, for :meth:`load_state_dict`: every network's
        weights (targets included), the optimizers' states, the replay buffer, the step counts
        and the generator's state. Holds only dicts, lists, numbers, strings and arrays (copies)."""
        return {"algorithm": self.algorithm, "networks": {name: weights(net) for name, net in self.networks().items()},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
                "buffer": self.buffer.state_dict(), "env_steps": self.env_steps, "updates": self.updates,
                "rng": self.rng.bit_generator.state, **self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same settings."""
        label = type(self).__name__
        if state.get("algorithm") != self.algorithm:
            raise ValueError(f"{label}.load_state_dict: the state is from {state.get('algorithm')!r}, "
                             f"not {self.algorithm!r}")
        if set(state["networks"]) != set(self.networks()):
            raise ValueError(f"{label}.load_state_dict: the state has networks {sorted(state['networks'])}, the "
                             f"agent {sorted(self.networks())}")
        for name, net in self.networks().items():
            net.load_state_dict(state["networks"][name])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        self.buffer.load_state_dict(state["buffer"])
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self.rng.bit_generator.state = state["rng"]
        self.load_extra_state(state)


def train_off_policy(agent_class: type[OffPolicyAgent], env: Env | str, total_steps: int,
                     agent: OffPolicyAgent | None, seed: int | None, **agent_kwargs) -> list[float]:
    """The loop of :func:`train_sac`, :func:`train_td3` and :func:`train_ddpg`: ``total_steps``
    environment steps of ``agent`` (by default ``agent_class.for_env(env, seed=seed,
    **agent_kwargs)``), learning as :meth:`OffPolicyAgent.observe` says. Truncated episodes still
    bootstrap from their last state; terminated ones do not. Returns every finished episode's return."""
    name = f"train_{agent_class.algorithm}"
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{name}: total_steps must be a positive int, got {total_steps!r}")
    env = as_env(env)
    agent = make_agent(agent_class, env, agent, seed, agent_kwargs, name)
    return run_agent(env, agent, total_steps, seed)
