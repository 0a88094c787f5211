"""MuZero (Schrittwieser et al., 2020): planning with a learned model. Three networks work on a
latent state s: the representation h(o) = s, the dynamics g(s, a) = (r, s') and the prediction
f(s) = (policy logits, value). A PUCT tree search (:class:`LatentMCTS`, an extension of
:class:`lamina.rl.mcts.MCTS`) runs in the latent space; self-play stores the searched policies
and root values, and training unrolls the model K steps from a stored observation, fitting the
predicted values, rewards and policies to n-step targets.

Hidden states are min-max normalised to [0, 1] per example, as in the paper. Value and reward
heads are scalar by default (``support_size=0``: squared-error losses) or, with
``support_size`` = S > 0, categorical over the integers -S..S of the transformed scale
h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x (two-hot targets, cross-entropy losses)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import manual_seed
from lamina.functional import amax, amin, concat, log_softmax, mean, one_hot
from lamina.functional import sum as tensor_sum
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.mcts import MCTS, Node, visit_policy
from lamina.rl.networks import mlp, obs_tensor

TRANSFORM_EPS = 1e-3


def value_transform(x, eps: float = TRANSFORM_EPS) -> numpy.ndarray:
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x, which squashes large values and is invertible."""
    x = numpy.asarray(x, dtype=numpy.float64)
    return numpy.sign(x) * (numpy.sqrt(numpy.abs(x) + 1) - 1) + eps * x


def inverse_value_transform(y, eps: float = TRANSFORM_EPS) -> numpy.ndarray:
    """h^-1(y) = sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1)."""
    y = numpy.asarray(y, dtype=numpy.float64)
    root = (numpy.sqrt(1 + 4 * eps * (numpy.abs(y) + 1 + eps)) - 1) / (2 * eps)
    return numpy.sign(y) * (root ** 2 - 1)


def scalar_to_support(x, support_size: int) -> numpy.ndarray:
    """Two-hot codes (..., 2 S + 1) of h(x) clipped to [-S, S]: the mass is split between the two
    nearest integers so that the code's mean over -S..S is h(x)."""
    y = numpy.clip(value_transform(x), -support_size, support_size)
    low = numpy.floor(y)
    upper_weight = y - low
    code = numpy.zeros(y.shape + (2 * support_size + 1,))
    index = (low + support_size).astype(numpy.int64)
    numpy.put_along_axis(code, index[..., None], (1 - upper_weight)[..., None], axis=-1)
    upper = numpy.minimum(index + 1, 2 * support_size)
    numpy.put_along_axis(code, upper[..., None], (numpy.take_along_axis(code, upper[..., None], -1)
                                                  + upper_weight[..., None]), axis=-1)
    return code


def support_to_scalar(probabilities, support_size: int) -> numpy.ndarray:
    """h^-1(sum_i p_i i) over the support -S..S (the inverse of :func:`scalar_to_support`)."""
    support = numpy.arange(-support_size, support_size + 1, dtype=numpy.float64)
    return inverse_value_transform(numpy.asarray(probabilities, dtype=numpy.float64) @ support)


def normalize_hidden_state(state: Tensor) -> Tensor:
    """s' = (s - min s) / (max s - min s) over each example's features, the range raised by 1e-5
    where it is below 1e-5 (as the paper's pseudocode)."""
    low, high = amin(state, axis=-1, keepdims=True), amax(state, axis=-1, keepdims=True)
    scale = high - low
    scale = scale + tensor((scale.numpy() < 1e-5) * 1e-5, dtype=state.dtype)
    return (state - low) / scale


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass, ``scale`` times the gradient in the backward pass."""
    return x * scale + x.detach() * (1.0 - scale)


@register_with_arguments
class MuZeroNet(Module):
    """The three MuZero functions as MLPs with ``hidden`` layers of ``activation``, on observation
    vectors of ``observation_size``, ``action_size`` discrete actions and latent states of
    ``latent_size``: representation h(o) -> s; dynamics g(s, a) -> (r, s') on [s, one_hot(a)];
    prediction f(s) -> (policy logits, v). States are min-max normalised; the value and reward
    outputs are one number (``support_size`` 0) or 2 S + 1 logits over the support -S..S."""

    def __init__(self, observation_size: int, action_size: int, latent_size: int = 16,
                 hidden: Sequence[int] = (32,), support_size: int = 0, activation: str = "relu"):
        super().__init__()
        if support_size < 0:
            raise ValueError(f"MuZeroNet: support_size must be >= 0, got {support_size}")
        self.observation_size, self.action_size, self.latent_size = observation_size, action_size, latent_size
        self.support_size = support_size
        self.head_size = 2 * support_size + 1 if support_size else 1
        hidden = tuple(hidden)
        self.representation = mlp(observation_size, hidden, latent_size, activation)
        self.dynamics_net = mlp(latent_size + action_size, hidden, latent_size + self.head_size, activation)
        self.prediction = mlp(latent_size, hidden, action_size + self.head_size, activation)
        self.built = True

    def represent(self, observations) -> Tensor:
        """h: observations (batch, observation_size) -> normalised states (batch, latent_size)."""
        if not isinstance(observations, Tensor):
            observations = obs_tensor(observations)
        return normalize_hidden_state(self.representation(observations))

    def dynamics(self, states: Tensor, actions) -> tuple[Tensor, Tensor]:
        """g: (states, integer actions (batch,)) -> (reward outputs (batch, head), next states)."""
        codes = one_hot(tensor(numpy.asarray(actions, dtype=numpy.int64)), self.action_size)
        out = self.dynamics_net(concat([states, codes.astype(states.dtype)], axis=-1))
        return out[:, self.latent_size:], normalize_hidden_state(out[:, :self.latent_size])

    def predict(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """f: states -> (policy logits (batch, actions), value outputs (batch, head))."""
        out = self.prediction(states)
        return out[:, :self.action_size], out[:, self.action_size:]

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        """f(h(o)): policy logits and value outputs of observations."""
        return self.predict(self.represent(observations))

    def to_scalar(self, outputs: Tensor) -> numpy.ndarray:
        """Value or reward outputs (batch, head) as numbers (batch,)."""
        raw = outputs.numpy().astype(numpy.float64)
        if not self.support_size:
            return raw[:, 0]
        probabilities = numpy.exp(raw - raw.max(-1, keepdims=True))
        return support_to_scalar(probabilities / probabilities.sum(-1, keepdims=True), self.support_size)

    def initial_inference(self, observation) -> tuple[Tensor, numpy.ndarray, float]:
        """One observation -> (latent state (1, latent), prior over the actions, value)."""
        with no_grad():
            state = self.represent(numpy.asarray(observation)[None])
            logits, value = self.predict(state)
        return state, _softmax(logits.numpy()[0]), float(self.to_scalar(value)[0])

    def recurrent_inference(self, state: Tensor, action: int) -> tuple[Tensor, float, numpy.ndarray, float]:
        """A latent state and an action -> (next state, reward, prior at the next state, its value)."""
        with no_grad():
            reward, next_state = self.dynamics(state, [action])
            logits, value = self.predict(next_state)
        reward, value = float(self.to_scalar(reward)[0]), float(self.to_scalar(value)[0])
        return next_state, reward, _softmax(logits.numpy()[0]), value


def _softmax(logits: numpy.ndarray) -> numpy.ndarray:
    e = numpy.exp(logits.astype(numpy.float64) - logits.max())
    return e / e.sum()


class MinMaxStats:
    """The range of the Q values seen in one search; Q is mapped to (Q - min) / (max - min), or
    left as it is while max <= min."""

    def __init__(self):
        self.minimum, self.maximum = math.inf, -math.inf

    def update(self, value: float) -> None:
        self.minimum, self.maximum = min(self.minimum, value), max(self.maximum, value)

    def normalize(self, value):
        if self.maximum > self.minimum:
            return (value - self.minimum) / (self.maximum - self.minimum)
        return value


class LatentNode(Node):
    """A node of the latent tree: ``state`` is the model's latent state, ``reward`` the predicted
    reward of the edge into it; every action is legal and no node is terminal."""

    __slots__ = ("reward",)

    def __init__(self, action_size: int, state=None, reward: float = 0.0):
        self.state, self.reward, self.terminal = state, reward, None
        self.legal = numpy.ones(action_size, dtype=bool)
        self.prior = numpy.zeros(action_size)
        self.visits = numpy.zeros(action_size, dtype=numpy.int64)
        self.value_sum = numpy.zeros(action_size)
        self.children: dict[int, LatentNode] = {}
        self.expanded = False


def muzero_puct_scores(node: Node, stats: MinMaxStats, c1: float = 1.25, c2: float = 19652.0) -> numpy.ndarray:
    """MuZero's pUCT: Q_norm(s, a) + P(s, a) sqrt(N) / (1 + N(s, a)) (c1 + log((N + c2 + 1) / c2)),
    N = 1 + sum_b N(s, b) (the visit that expanded s counted, as :func:`lamina.rl.mcts.puct_scores`),
    Q_norm the min-max normalised Q for visited actions and 0 for the others."""
    parent_visits = 1 + node.visits.sum()
    q = numpy.where(node.visits > 0, stats.normalize(node.mean_values()), 0.0)
    exploration = math.sqrt(parent_visits) * (c1 + math.log((parent_visits + c2 + 1) / c2))
    return q + node.prior * exploration / (1 + node.visits)


class LatentMCTS(MCTS):
    """PUCT search in a model's latent space. ``model`` has ``initial_inference(observation) ->
    (state, prior, value)`` and ``recurrent_inference(state, action) -> (state, reward, prior,
    value)`` (a :class:`MuZeroNet`, or any exact model). The edge statistics hold
    Q(s, a) = mean of r(s, a) + discount G(s'), the discounted return backed up from the leaf;
    selection uses :func:`muzero_puct_scores` with the search's :class:`MinMaxStats`. Root noise,
    policies and action selection are :class:`MCTS`'s."""

    def __init__(self, model, action_size: int, n_simulations: int = 25, discount: float = 0.997,
                 c1: float = 1.25, c2: float = 19652.0, dirichlet_alpha: float = 0.25,
                 dirichlet_epsilon: float = 0.0, seed: int | None = None):
        if n_simulations < 1:
            raise ValueError(f"LatentMCTS: n_simulations must be at least 1, got {n_simulations}")
        # MCTS.__init__ is not called: it takes a game's rules, which the latent search replaces by the model
        self.model, self.action_size, self.n_simulations, self.discount = model, action_size, n_simulations, discount
        self.c1, self.c2 = c1, c2
        self.dirichlet_alpha, self.dirichlet_epsilon = dirichlet_alpha, dirichlet_epsilon
        self.rng = numpy.random.default_rng(seed)
        self.root: LatentNode | None = None
        self.stats = MinMaxStats()

    def search(self, observation) -> numpy.ndarray:
        """Run the simulations from ``observation``; returns the root's visit counts."""
        state, prior, _ = self.model.initial_inference(observation)
        root = LatentNode(self.action_size, state)
        root.prior, root.expanded = numpy.asarray(prior, dtype=numpy.float64), True
        if self.dirichlet_epsilon > 0:
            self._add_root_noise(root)
        self.root, self.stats = root, MinMaxStats()
        for _ in range(self.n_simulations):
            self._simulate(root)
        return root.visits.copy()

    def root_value(self) -> float:
        """The mean backed-up return at the root over the last search's simulations."""
        return float(self.root.value_sum.sum() / max(self.root.visits.sum(), 1))

    def _select(self, node: LatentNode) -> int:
        return int(numpy.argmax(muzero_puct_scores(node, self.stats, self.c1, self.c2)))

    def _simulate(self, root: LatentNode) -> None:
        node, path = root, []
        while node.expanded:
            action = self._select(node)
            path.append((node, action))
            child = node.children.get(action)
            node = child if child is not None else node.children.setdefault(action, LatentNode(self.action_size))
        parent, action = path[-1]
        node.state, node.reward, prior, value = self.model.recurrent_inference(parent.state, action)
        node.prior, node.expanded = numpy.asarray(prior, dtype=numpy.float64), True
        for parent, action in reversed(path):
            value = parent.children[action].reward + self.discount * value
            parent.visits[action] += 1
            parent.value_sum[action] += value
            self.stats.update(parent.value_sum[action] / parent.visits[action])


def muzero_targets(rewards, root_values, policies, index: int, unroll_steps: int, td_steps: int, discount: float,
                   final_value: float = 0.0) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Training targets for unrolling K = ``unroll_steps`` steps from position t = ``index`` of an
    episode of T actions, ``rewards[i]`` the reward of action i and ``root_values[i]``,
    ``policies[i]`` the search's results at position i. With V_i = root_values[i] for i < T and
    V_T = ``final_value`` (0 when the episode terminated), e = min(u + n, T) and n = ``td_steps``:

    value z_u = sum_{i=u}^{e-1} discount^(i-u) rewards[i] + discount^(e-u) V_e for u <= T, 0 after;
    reward of step k >= 1: rewards[t + k - 1], 0 past the end; policy: policies[u] for u < T,
    where the mask is 1 (0 past the end). Returns values (K+1,), rewards (K,), policies
    (K+1, actions) and the policy mask (K+1,)."""
    rewards, root_values = numpy.asarray(rewards, dtype=numpy.float64), numpy.asarray(root_values, dtype=numpy.float64)
    policies = numpy.asarray(policies, dtype=numpy.float64)
    length = len(rewards)
    bootstrap = numpy.append(root_values, final_value)
    values = numpy.zeros(unroll_steps + 1)
    target_policies = numpy.zeros((unroll_steps + 1, policies.shape[1]))
    mask = numpy.zeros(unroll_steps + 1)
    for k in range(unroll_steps + 1):
        u = index + k
        if u <= length:
            end = min(u + td_steps, length)
            values[k] = (sum(discount ** (i - u) * rewards[i] for i in range(u, end))
                         + discount ** (end - u) * bootstrap[end])
        if u < length:
            target_policies[k], mask[k] = policies[u], 1.0
    target_rewards = numpy.array([rewards[index + k - 1] if index + k - 1 < length else 0.0
                                  for k in range(1, unroll_steps + 1)])
    return values, target_rewards, target_policies, mask


def _head_loss(net: MuZeroNet, outputs: Tensor, targets: numpy.ndarray) -> Tensor:
    """Per-example loss of a value or reward head: (z - v)^2, or the cross-entropy with the two-hot
    code of z on the support."""
    if not net.support_size:
        return (outputs[:, 0] - tensor(targets, dtype=outputs.dtype)) ** 2
    codes = tensor(scalar_to_support(targets, net.support_size), dtype=outputs.dtype)
    return -tensor_sum(codes * log_softmax(outputs, axis=-1), axis=-1)


def muzero_loss(net: MuZeroNet, observations, actions, target_values, target_rewards, target_policies,
                policy_mask) -> tuple[Tensor, dict[str, float]]:
    """The unrolled loss of a batch: observations (B, obs), actions (B, K), target values (B, K+1),
    rewards (B, K), policies (B, K+1, A) and policy mask (B, K+1) (see :func:`muzero_targets`):

    l = mean_b [l_v(0) + l_p(0) + (1 / K) sum_{k=1}^K (l_r(k) + l_v(k) + l_p(k))]

    with l_p = -mask sum_a pi(a) log softmax(logits)(a) and l_v, l_r the heads' losses, the states
    s^k = g(s^{k-1}, a_k) unrolled from s^0 = h(o) with the gradient into g's state input halved.
    Returns l and its value, reward and policy parts."""
    actions = numpy.asarray(actions)
    target_values, target_rewards = numpy.asarray(target_values), numpy.asarray(target_rewards)
    target_policies, policy_mask = numpy.asarray(target_policies), numpy.asarray(policy_mask)
    steps = actions.shape[1]
    state = net.represent(observations)

    def policy_loss(logits: Tensor, k: int) -> Tensor:
        pi = tensor(target_policies[:, k] * policy_mask[:, k, None], dtype=logits.dtype)
        return -tensor_sum(pi * log_softmax(logits, axis=-1), axis=-1)

    logits, value = net.predict(state)
    value_term, policy_term, reward_term = _head_loss(net, value, target_values[:, 0]), policy_loss(logits, 0), None
    for k in range(1, steps + 1):
        reward, state = net.dynamics(scale_gradient(state, 0.5), actions[:, k - 1])
        logits, value = net.predict(state)
        step_reward = _head_loss(net, reward, target_rewards[:, k - 1]) / steps
        reward_term = step_reward if reward_term is None else reward_term + step_reward
        value_term = value_term + _head_loss(net, value, target_values[:, k]) / steps
        policy_term = policy_term + policy_loss(logits, k) / steps
    value_term, policy_term = mean(value_term), mean(policy_term)
    total = value_term + policy_term
    parts = {"value_loss": value_term.item(), "policy_loss": policy_term.item(), "reward_loss": 0.0}
    if reward_term is not None:
        reward_term = mean(reward_term)
        total = total + reward_term
        parts["reward_loss"] = reward_term.item()
    return total, parts


class MuZero:
    """A :class:`MuZeroNet` (``net``, or one built from ``network`` keyword arguments), its Adam
    optimizer (``lr``) and a replay of whole episodes (the last ``buffer_episodes``). Self-play
    searches ``n_simulations`` times a move with root noise Dir(``dirichlet_alpha``) mixed in
    with weight ``dirichlet_epsilon`` and draws moves from the visit counts at ``temperature``;
    training samples ``batch_size`` positions uniformly and unrolls ``unroll_steps`` steps with
    ``td_steps``-step value targets discounted by ``discount``."""

    def __init__(self, observation_size: int, action_size: int, net: MuZeroNet | None = None,
                 network: dict | None = None, n_simulations: int = 16, discount: float = 0.97,
                 unroll_steps: int = 3, td_steps: int = 5, batch_size: int = 32, lr: float = 3e-3,
                 dirichlet_alpha: float = 0.25, dirichlet_epsilon: float = 0.25, temperature: float = 1.0,
                 buffer_episodes: int = 200, seed: int | None = None):
        self.net = net if net is not None else MuZeroNet(observation_size, action_size, **(network or {}))
        self.action_size = action_size
        self.optimizer = optim.Adam(self.net.parameters(), lr=lr)
        self.n_simulations, self.discount, self.unroll_steps, self.td_steps = (n_simulations, discount,
                                                                              unroll_steps, td_steps)
        self.batch_size, self.temperature, self.buffer_episodes = batch_size, temperature, buffer_episodes
        self.dirichlet_alpha, self.dirichlet_epsilon = dirichlet_alpha, dirichlet_epsilon
        self.rng = numpy.random.default_rng(seed)
        self.episodes: list[dict] = []
        self.history: list[dict] = []

    def search(self, noise: bool = False) -> LatentMCTS:
        """A latent search with this network (and root noise if ``noise``)."""
        return LatentMCTS(self.net, self.action_size, self.n_simulations, self.discount,
                          dirichlet_alpha=self.dirichlet_alpha,
                          dirichlet_epsilon=self.dirichlet_epsilon if noise else 0.0,
                          seed=int(self.rng.integers(2**63)))

    def act(self, observation, temperature: float = 0.0) -> int:
        """The most visited action of a noiseless search (drawn at ``temperature`` if > 0)."""
        return self.search().select_action(observation, temperature)

    def play_episode(self, env, max_steps: int | None = None, random_actions: bool = False) -> dict:
        """One self-play episode, stored in the replay; returns it (observations, actions, rewards,
        root values, policies, final value). With ``random_actions`` the moves are drawn uniformly
        (the searches still give the stored policies and values)."""
        search = self.search(noise=True)
        observation, _ = env.reset(seed=int(self.rng.integers(2**31)))
        observations, actions, rewards, root_values, policies = [observation], [], [], [], []
        terminated = truncated = False
        while not (terminated or truncated):
            visits = search.search(observation)
            moves = numpy.full(self.action_size, 1.0 / self.action_size) if random_actions else visit_policy(
                visits, self.temperature)
            action = int(search.rng.choice(self.action_size, p=moves))
            observation, reward, terminated, truncated, _ = env.step(action)
            truncated = truncated or (max_steps is not None and len(actions) + 1 >= max_steps)
            observations.append(observation)
            actions.append(action)
            rewards.append(float(reward))
            root_values.append(search.root_value())
            policies.append(visit_policy(visits, 1.0))
        final_value = 0.0 if terminated else self.net.initial_inference(observation)[2]
        episode = {"observations": numpy.array(observations), "actions": numpy.array(actions),
                   "rewards": numpy.array(rewards), "root_values": numpy.array(root_values),
                   "policies": numpy.array(policies), "final_value": final_value}
        self.episodes = (self.episodes + [episode])[-self.buffer_episodes:]
        return episode

    def sample_batch(self) -> tuple[numpy.ndarray, ...]:
        """``batch_size`` positions drawn uniformly over the stored ones, with their targets;
        actions past an episode's end are drawn uniformly."""
        lengths = numpy.array([len(e["actions"]) for e in self.episodes])
        picks = self.rng.choice(lengths.sum(), size=self.batch_size)
        starts = numpy.cumsum(lengths) - lengths
        batch: list[list] = [[] for _ in range(6)]
        for pick in picks:
            which = int(numpy.searchsorted(starts, pick, side="right") - 1)
            episode, index = self.episodes[which], int(pick - starts[which])
            targets = muzero_targets(episode["rewards"], episode["root_values"], episode["policies"], index,
                                     self.unroll_steps, self.td_steps, self.discount, episode["final_value"])
            actions = episode["actions"][index:index + self.unroll_steps]
            padding = self.rng.integers(self.action_size, size=self.unroll_steps - len(actions))
            for column, value in zip(batch, (episode["observations"][index], numpy.concatenate([actions, padding]),
                                             *targets)):
                column.append(value)
        return tuple(numpy.array(column) for column in batch)

    def update(self) -> dict[str, float]:
        """One Adam step on :func:`muzero_loss` of a sampled batch; returns the loss parts."""
        loss, parts = muzero_loss(self.net, *self.sample_batch())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return parts

    def evaluate(self, env, episodes: int = 1, max_steps: int = 100) -> float:
        """The mean undiscounted return of :meth:`act` (greedy searches) over ``episodes`` episodes."""
        returns = []
        for _ in range(episodes):
            observation, _ = env.reset(seed=int(self.rng.integers(2**31)))
            total, done, steps = 0.0, False, 0
            while not done and steps < max_steps:
                observation, reward, terminated, truncated, _ = env.step(self.act(observation))
                total, done, steps = total + float(reward), terminated or truncated, steps + 1
            returns.append(total)
        return float(numpy.mean(returns))


def train_muzero(env_fn: Callable, steps: int, max_episode_steps: int = 50, updates_per_step: float = 1.0,
                 start_steps: int = 0, random_steps: int = 0, seed: int | None = None, verbose: bool = False,
                 **settings) -> MuZero:
    """Train a :class:`MuZero` (built with ``settings`` and ``seed``) for ``steps`` environment
    steps of self-play on ``env_fn()`` (discrete actions, vector observations), episodes cut at
    ``max_episode_steps``. After each episode, once ``start_steps`` steps are stored, it takes
    ``updates_per_step`` gradient steps per new environment step. Episodes that start within the
    first ``random_steps`` steps move uniformly at random (a warm-up that finds sparse rewards
    before the policy has settled; 0 by default, as the paper). ``agent.history`` holds one
    dict per episode: steps so far, its return, the loss parts and seconds."""
    if seed is not None:
        manual_seed(seed)
    env = env_fn()
    agent = MuZero(int(numpy.prod(env.observation_space.shape)), int(env.action_space.n), seed=seed, **settings)
    done_steps, owed = 0, 0.0
    while done_steps < steps:
        start = time.perf_counter()
        episode = agent.play_episode(env, min(max_episode_steps, steps - done_steps), done_steps < random_steps)
        done_steps += len(episode["actions"])
        record = {"steps": done_steps, "return": float(episode["rewards"].sum())}
        if done_steps >= start_steps:
            owed += updates_per_step * len(episode["actions"])
            while owed >= 1:
                record.update(agent.update())
                owed -= 1
        record["seconds"] = time.perf_counter() - start
        agent.history.append(record)
        if verbose:
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
    return agent
