"""AlphaZero (Silver et al., 2017, 2018) for the games of :mod:`lamina.rl.games`: a policy-value
network f(s) = (p, v), self-play with PUCT tree search guided by it, and training on the searched
move probabilities and the final outcomes.

One iteration: play games against itself, each move chosen from the visit counts of a search
with Dirichlet noise at the root (drawn at temperature 1 for the first ``temperature_moves``
moves, then the most visited); keep (board, pi, z) for every position, with pi the visit-count
distribution and z the final outcome for the player to move, under every symmetry of the board;
fit the network on the examples of the last few iterations; and measure the new network's
searches against the previous network's, a random player and plain UCT."""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Sequence

import numpy

from lamina import nn, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import manual_seed
from lamina.functional import log_softmax, mean, tanh
from lamina.functional import sum as tensor_sum
from lamina.nn import Module
from lamina.rl.games import Game, planes
from lamina.rl.mcts import MCTS, MCTSPlayer, RandomPlayer, play_match, visit_policy
from lamina.rl.networks import obs_tensor


class PolicyValueNet(Module):
    """An MLP over the board planes (batch, rows, cols, 2), flattened, with a policy head (logits
    over the actions) and a value head tanh(w . h + b) in [-1, 1]."""

    def __init__(self, board_shape: Sequence[int], action_size: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.board_shape, self.action_size = tuple(board_shape), action_size
        n_in = 2 * self.board_shape[0] * self.board_shape[1]
        self.trunk = nn.Sequential([nn.Dense(units, activation="relu") for units in hidden])
        self.trunk.build((None, n_in))
        self.policy_head = nn.Dense(action_size)
        self.policy_head.build((None, hidden[-1]))
        self.value_head = nn.Dense(1)
        self.value_head.build((None, hidden[-1]))
        self.built = True

    def forward(self, board_planes: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, rows, cols, 2) planes -> (policy logits (batch, actions), values (batch,))."""
        features = self.trunk(board_planes.reshape(board_planes.shape[0], -1))
        return self.policy_head(features), tanh(self.value_head(features))[:, 0]


def alphazero_loss(logits: Tensor, values: Tensor, target_policy, target_value, parameters: Sequence[Tensor] = (),
                   l2: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """l = mean_i (z_i - v_i)^2 - mean_i sum_a pi_i(a) log softmax(logits_i)(a) + l2 sum_theta theta^2,
    summed over ``parameters``; returns l and its parts."""
    target_policy = tensor(target_policy, dtype=logits.dtype)
    target_value = tensor(target_value, dtype=values.dtype)
    value_term = mean((target_value - values) ** 2)
    policy_term = -mean(tensor_sum(target_policy * log_softmax(logits, axis=-1), axis=-1))
    total = value_term + policy_term
    if l2 and parameters:
        penalty = None
        for p in parameters:
            term = tensor_sum(p * p)
            penalty = term if penalty is None else penalty + term
        total = total + l2 * penalty
    return total, {"value_loss": value_term.item(), "policy_loss": policy_term.item()}


class NetworkEvaluator:
    """The leaf evaluator of AlphaZero's search: the network's softmax over the legal actions and
    its value, both for the player to move. Results are cached by canonical board; make a new
    evaluator after the weights change."""

    def __init__(self, game: Game, net: PolicyValueNet):
        self.game, self.net, self.cache = game, net, {}

    def __call__(self, state: numpy.ndarray) -> tuple[numpy.ndarray, float]:
        board = self.game.canonical_board(state)
        key = board.tobytes()
        if key not in self.cache:
            with no_grad():
                logits, value = self.net(obs_tensor(planes(board)[None]))
            logits = logits.numpy()[0].astype(numpy.float64)
            legal = self.game.legal_actions(state)
            logits = numpy.where(legal, logits - logits[legal].max(), -numpy.inf)
            prior = numpy.exp(logits)
            self.cache[key] = (prior / prior.sum(), float(value.numpy()[0]))
        return self.cache[key]


class AlphaZero:
    """A policy-value network (``net``, or a new one with ``hidden`` layers), its Adam optimizer
    (``lr``) and the settings of self-play: ``n_simulations`` PUCT simulations a move with
    ``c_puct``, root noise Dir(``dirichlet_alpha``) mixed in with weight ``dirichlet_epsilon``
    (0.25 in the papers; more exploration suits tiny boards, where few openings would otherwise
    be seen), moves drawn at temperature 1 for the first ``temperature_moves`` moves; and of
    fitting: ``epochs`` passes of minibatches of ``batch_size`` with L2 weight ``l2``. ``seed``
    seeds its own generator (searches, shuffling); the network's initial weights come from
    lamina's generator."""

    def __init__(self, game: Game, net: PolicyValueNet | None = None, hidden: Sequence[int] = (64, 64),
                 n_simulations: int = 50, c_puct: float = 1.5, dirichlet_alpha: float = 1.0,
                 dirichlet_epsilon: float = 0.5, temperature_moves: int = 4, lr: float = 3e-3, l2: float = 1e-4,
                 batch_size: int = 64, epochs: int = 4, seed: int | None = None):
        self.game = game
        self.net = net if net is not None else PolicyValueNet(game.board_shape, game.action_size, hidden)
        self.optimizer = optim.Adam(self.net.parameters(), lr=lr)
        self.n_simulations, self.c_puct = n_simulations, c_puct
        self.dirichlet_alpha, self.dirichlet_epsilon, self.temperature_moves = (dirichlet_alpha, dirichlet_epsilon,
                                                                               temperature_moves)
        self.l2, self.batch_size, self.epochs = l2, batch_size, epochs
        self.rng = numpy.random.default_rng(seed)
        self.history: list[dict] = []

    def _seed(self) -> int:
        return int(self.rng.integers(2**63))

    def search(self, net: PolicyValueNet | None = None, noise: bool = False, n_simulations: int | None = None) -> MCTS:
        """A PUCT search guided by ``net`` (this network by default), with root noise if ``noise``."""
        evaluator = NetworkEvaluator(self.game, self.net if net is None else net)
        return MCTS(self.game, evaluator, n_simulations or self.n_simulations, self.c_puct, "puct",
                    self.dirichlet_alpha, self.dirichlet_epsilon if noise else 0.0, seed=self._seed())

    def player(self, net: PolicyValueNet | None = None, n_simulations: int | None = None) -> MCTSPlayer:
        """Plays the most visited action of a noiseless search."""
        return MCTSPlayer(self.search(net, n_simulations=n_simulations))

    def self_play(self, n_games: int) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """Examples from ``n_games`` games of self-play: board planes (n, rows, cols, 2), searched
        policies (n, actions) and outcomes for the player to move (n,), symmetries included."""
        search = self.search(noise=True)
        boards, policies, outcomes = [], [], []
        for _ in range(n_games):
            state, positions, move = self.game.initial_state(), [], 0
            while self.game.terminal_value(state) is None:
                visits = search.search(state)
                temperature = 1.0 if move < self.temperature_moves else 0.0
                positions.append((self.game.canonical_board(state), visit_policy(visits, 1.0),
                                  self.game.to_play(state)))
                action = int(search.rng.choice(len(visits), p=visit_policy(visits, temperature)))
                state, move = self.game.next_state(state, action), move + 1
            winner = self.game.winner(state)
            for board, policy, mover in positions:
                for sym_board, sym_policy in self.game.symmetries(board, policy):
                    boards.append(sym_board)
                    policies.append(sym_policy)
                    outcomes.append(float(winner * mover))
        return planes(numpy.array(boards)), numpy.array(policies), numpy.array(outcomes)

    def fit(self, boards: numpy.ndarray, policies: numpy.ndarray, outcomes: numpy.ndarray) -> dict[str, float]:
        """``epochs`` passes of shuffled minibatches of :func:`alphazero_loss`; returns the mean
        loss parts of the last pass."""
        parameters = list(self.net.parameters())
        stats: dict[str, list[float]] = {}
        for _ in range(self.epochs):
            stats = {}
            order = self.rng.permutation(len(boards))
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                logits, values = self.net(obs_tensor(boards[index]))
                loss, parts = alphazero_loss(logits, values, policies[index], outcomes[index], parameters, self.l2)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                for key, value in parts.items():
                    stats.setdefault(key, []).append(value)
        return {key: float(numpy.mean(values)) for key, values in stats.items()}


def train_alphazero(game: Game, iterations: int = 10, games_per_iteration: int = 30, window: int = 4,
                    arena_games: int = 10, eval_games: int = 10, uct_simulations: int = 50, opening_moves: int = 1,
                    update_threshold: float | None = None, seed: int | None = None, verbose: bool = False,
                    **settings) -> AlphaZero:
    """Train an :class:`AlphaZero` (built with ``settings`` and ``seed``) for ``iterations``
    iterations of ``games_per_iteration`` self-play games, fitting on the examples of the last
    ``window`` iterations. After each, the new network's player meets the previous network's in
    ``arena_games`` games and a random player and UCT with ``uct_simulations`` rollouts in
    ``eval_games`` games each (sides alternating, the first ``opening_moves`` moves random so the
    games differ); skip an evaluation with 0 games. With ``update_threshold`` (AlphaGo Zero's
    gating) the new network is kept only if it scores (wins + draws / 2) / games at least that
    much against the previous one; by default the newest is always kept, as in AlphaZero.
    ``agent.history`` holds one dict per iteration: examples, loss parts, the match records
    and seconds."""
    if seed is not None:
        manual_seed(seed)
    agent = AlphaZero(game, seed=seed, **settings)
    memory: deque = deque(maxlen=window)
    for iteration in range(iterations):
        start = time.perf_counter()
        memory.append(agent.self_play(games_per_iteration))
        examples = [numpy.concatenate(parts) for parts in zip(*memory)]
        previous = copy.deepcopy(agent.net)
        record = {"iteration": iteration, "examples": len(examples[0]), **agent.fit(*examples)}
        if arena_games:
            vs_previous = _match(agent, agent.player(), agent.player(previous), arena_games, opening_moves)
            record["vs_previous"] = vs_previous
            score = (vs_previous["wins"] + vs_previous["draws"] / 2) / arena_games
            if update_threshold is not None and score < update_threshold:
                agent.net.load_state_dict(previous.state_dict())
                record["rejected"] = True
        if eval_games:
            record["vs_random"] = _match(agent, agent.player(), RandomPlayer(game, agent._seed()), eval_games,
                                         opening_moves)
            uct = MCTSPlayer(MCTS.uct(game, uct_simulations, seed=agent._seed()))
            record["vs_uct"] = _match(agent, agent.player(), uct, eval_games, opening_moves)
        record["seconds"] = time.perf_counter() - start
        agent.history.append(record)
        if verbose:
            print(_summary(record))
    return agent


def _match(agent: AlphaZero, player, opponent, n_games: int, opening_moves: int) -> dict[str, int]:
    return play_match(agent.game, player, opponent, n_games, opening_moves, seed=agent._seed())


def _summary(record: dict) -> str:
    parts = [f"iteration {record['iteration']}", f"examples {record['examples']}",
             f"value loss {record['value_loss']:.3f}", f"policy loss {record['policy_loss']:.3f}"]
    for key in ("vs_previous", "vs_random", "vs_uct"):
        if key in record:
            r = record[key]
            parts.append(f"{key} {r['wins']}/{r['draws']}/{r['losses']}")
    return ", ".join(parts) + f" ({record['seconds']:.1f} s)"
