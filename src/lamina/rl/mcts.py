"""Monte Carlo tree search for two-player games (:mod:`lamina.rl.games`): UCT with random
rollouts (Kocsis & Szepesvari, 2006) and AlphaZero's PUCT with a prior and a value from an
evaluator such as a policy-value network (Silver et al., 2017, 2018), plus players built on them.

Every simulation walks from the root choosing edges by the rule, expands the first state not yet
in the tree (the evaluator gives its prior P(s, .) and value v(s)), and backs v up the path. Each
node holds per-action statistics N(s, a), W(s, a) and P(s, a); values are from the point of view
of the player to move at s, so v flips sign at every step up."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from lamina.rl.games import Game

Evaluator = Callable[[numpy.ndarray], tuple[numpy.ndarray, float]]


class Node:
    """A state in the tree with the statistics of its outgoing edges."""

    __slots__ = ("state", "terminal", "legal", "prior", "visits", "value_sum", "children", "expanded")

    def __init__(self, game: Game, state: numpy.ndarray):
        self.state = state
        self.terminal = game.terminal_value(state)
        self.legal = game.legal_actions(state)
        self.prior = numpy.zeros(game.action_size)
        self.visits = numpy.zeros(game.action_size, dtype=numpy.int64)
        self.value_sum = numpy.zeros(game.action_size)
        self.children: dict[int, Node] = {}
        self.expanded = False

    def mean_values(self, unvisited: float = 0.0) -> numpy.ndarray:
        """Q(s, a) = W(s, a) / N(s, a), ``unvisited`` where N(s, a) = 0."""
        q = numpy.full(len(self.visits), unvisited, dtype=numpy.float64)
        return numpy.divide(self.value_sum, self.visits, out=q, where=self.visits > 0)


def uniform_prior(legal: numpy.ndarray) -> numpy.ndarray:
    return legal / legal.sum()


class RolloutEvaluator:
    """UCT's leaf evaluation: a uniform prior over the legal actions and the outcome of one game
    played on with uniformly random legal moves, from the point of view of the player to move."""

    def __init__(self, game: Game, seed: int | None = None):
        self.game, self.rng = game, numpy.random.default_rng(seed)

    def __call__(self, state: numpy.ndarray) -> tuple[numpy.ndarray, float]:
        game, mover = self.game, self.game.to_play(state)
        prior = uniform_prior(game.legal_actions(state))
        value = game.terminal_value(state)
        while value is None:
            state = game.next_state(state, int(self.rng.choice(numpy.flatnonzero(game.legal_actions(state)))))
            value = game.terminal_value(state)
        return prior, value * mover * game.to_play(state)


def ucb1_scores(node: Node, c: float) -> numpy.ndarray:
    """UCT: Q(s, a) + c sqrt(ln N(s) / N(s, a)) with N(s) = sum_a N(s, a); unvisited actions score
    +inf so that every action is tried once first."""
    total = node.visits.sum()
    with numpy.errstate(divide="ignore", invalid="ignore"):
        scores = node.mean_values() + c * numpy.sqrt(math.log(max(total, 1)) / node.visits)
    return numpy.where(node.visits == 0, numpy.inf, scores)


def puct_scores(node: Node, c: float, unvisited_value: float = 0.0) -> numpy.ndarray:
    """AlphaZero: Q(s, a) + c P(s, a) sqrt(N(s)) / (1 + N(s, a)), with N(s) = 1 + sum_a N(s, a)
    counting the visit that expanded s (so that the prior already orders the first choice) and
    Q = ``unvisited_value`` for actions not yet tried."""
    parent_visits = 1 + node.visits.sum()
    return node.mean_values(unvisited_value) + c * node.prior * math.sqrt(parent_visits) / (1 + node.visits)


def visit_policy(visits: numpy.ndarray, temperature: float) -> numpy.ndarray:
    """pi(a) proportional to N(a)^(1 / temperature); temperature 0 puts all the mass on the most
    visited actions (shared equally between ties)."""
    visits = numpy.asarray(visits, dtype=numpy.float64)
    if visits.sum() <= 0:
        raise ValueError(f"visit_policy: needs some visits, got {visits}")
    if temperature == 0:
        best = visits == visits.max()
        return best / best.sum()
    scaled = (visits / visits.max()) ** (1.0 / temperature)
    return scaled / scaled.sum()


class MCTS:
    """Tree search from a root state with ``n_simulations`` simulations.

    ``rule`` "puct" (AlphaZero) scores edges by :func:`puct_scores` with ``c`` = c_puct; "uct"
    by :func:`ucb1_scores` with ``c`` the exploration constant. ``evaluator(state)`` returns a
    prior over the actions (used by PUCT) and a value in [-1, 1] for the player to move.
    With ``dirichlet_epsilon`` > 0 the root prior becomes (1 - epsilon) P + epsilon eta with
    eta ~ Dir(alpha) over the legal actions (drawn from this search's generator, seeded by
    ``seed``); nodes below the root keep the evaluator's prior."""

    def __init__(self, game: Game, evaluator: Evaluator, n_simulations: int = 100, c: float = 1.5,
                 rule: str = "puct", dirichlet_alpha: float = 0.3, dirichlet_epsilon: float = 0.0,
                 seed: int | None = None):
        if rule not in ("puct", "uct"):
            raise ValueError(f"MCTS: rule must be 'puct' or 'uct', got {rule!r}")
        if n_simulations < 1:
            raise ValueError(f"MCTS: n_simulations must be at least 1, got {n_simulations}")
        self.game, self.evaluator, self.n_simulations, self.c, self.rule = game, evaluator, n_simulations, c, rule
        self.dirichlet_alpha, self.dirichlet_epsilon = dirichlet_alpha, dirichlet_epsilon
        self.rng = numpy.random.default_rng(seed)
        self.root: Node | None = None

    @classmethod
    def uct(cls, game: Game, n_simulations: int = 1000, c: float = math.sqrt(2), seed: int | None = None) -> MCTS:
        """Plain UCT with random rollouts (both seeded from ``seed``)."""
        rollout_seed, search_seed = numpy.random.SeedSequence(seed).spawn(2)
        return cls(game, RolloutEvaluator(game, rollout_seed), n_simulations, c, rule="uct", seed=search_seed)

    def search(self, state: numpy.ndarray) -> numpy.ndarray:
        """Run the simulations from ``state``; returns the root's visit counts N(root, .), which
        sum to ``n_simulations``. The tree stays in ``self.root``."""
        root = Node(self.game, state)
        if root.terminal is not None:
            raise ValueError(f"MCTS.search: the game is already over on\n{self.game.render(state)}")
        self._expand(root)
        if self.dirichlet_epsilon > 0:
            self._add_root_noise(root)
        self.root = root
        for _ in range(self.n_simulations):
            self._simulate(root)
        return root.visits.copy()

    def policy(self, state: numpy.ndarray, temperature: float = 1.0) -> numpy.ndarray:
        """The search's move probabilities from its visit counts (see :func:`visit_policy`)."""
        return visit_policy(self.search(state), temperature)

    def select_action(self, state: numpy.ndarray, temperature: float = 0.0) -> int:
        """An action drawn from :meth:`policy` at ``temperature`` (0: the most visited; ties are
        broken by this search's generator)."""
        probabilities = self.policy(state, temperature)
        return int(self.rng.choice(len(probabilities), p=probabilities))

    def _simulate(self, root: Node) -> None:
        node, path = root, []
        while node.expanded and node.terminal is None:
            action = self._select(node)
            path.append((node, action))
            child = node.children.get(action)
            if child is None:
                child = node.children[action] = Node(self.game, self.game.next_state(node.state, action))
            node = child
        value = node.terminal if node.terminal is not None else self._expand(node)
        for parent, action in reversed(path):
            value = -value
            parent.visits[action] += 1
            parent.value_sum[action] += value

    def _select(self, node: Node) -> int:
        scores = puct_scores(node, self.c) if self.rule == "puct" else ucb1_scores(node, self.c)
        return int(numpy.argmax(numpy.where(node.legal, scores, -numpy.inf)))

    def _expand(self, node: Node) -> float:
        prior, value = self.evaluator(node.state)
        prior = numpy.where(node.legal, prior, 0.0)
        total = prior.sum()
        node.prior = prior / total if total > 0 else uniform_prior(node.legal)
        node.expanded = True
        return float(value)

    def _add_root_noise(self, root: Node) -> None:
        legal = numpy.flatnonzero(root.legal)
        noise = numpy.zeros_like(root.prior)
        noise[legal] = self.rng.dirichlet([self.dirichlet_alpha] * len(legal))
        root.prior = (1 - self.dirichlet_epsilon) * root.prior + self.dirichlet_epsilon * noise


Player = Callable[[numpy.ndarray], int]


class RandomPlayer:
    """Plays a uniformly random legal action."""

    def __init__(self, game: Game, seed: int | None = None):
        self.game, self.rng = game, numpy.random.default_rng(seed)

    def __call__(self, state: numpy.ndarray) -> int:
        return int(self.rng.choice(numpy.flatnonzero(self.game.legal_actions(state))))


class MCTSPlayer:
    """Plays ``search.select_action(state, temperature)`` (the most visited action by default)."""

    def __init__(self, search: MCTS, temperature: float = 0.0):
        self.search, self.temperature = search, temperature

    def __call__(self, state: numpy.ndarray) -> int:
        return self.search.select_action(state, self.temperature)


def play_game(game: Game, first: Player, second: Player, state: numpy.ndarray | None = None) -> int:
    """Play one game; returns the winner: +1 the first player, -1 the second, 0 a draw."""
    state = game.initial_state() if state is None else state
    while game.terminal_value(state) is None:
        player = first if game.to_play(state) == 1 else second
        state = game.next_state(state, player(state))
    return game.winner(state)


def play_match(game: Game, player: Player, opponent: Player, n_games: int, opening_moves: int = 0,
               seed: int | None = None) -> dict[str, int]:
    """``n_games`` games with ``player`` moving first in the even-numbered ones and second in the
    others, each from a position reached by ``opening_moves`` uniformly random legal moves (drawn
    from ``seed``); returns its wins, draws and losses, in all and by side ("first_losses", ...)."""
    rng = numpy.random.default_rng(seed)
    record = {key: 0 for key in ("wins", "draws", "losses", "first_losses", "second_losses")}
    for i in range(n_games):
        state = game.initial_state()
        for _ in range(opening_moves):
            if game.terminal_value(state) is None:
                state = game.next_state(state, int(rng.choice(numpy.flatnonzero(game.legal_actions(state)))))
        side = 1 if i % 2 == 0 else -1
        winner = play_game(game, player, opponent, state) if side == 1 else play_game(game, opponent, player, state)
        outcome = "draws" if winner == 0 else "wins" if winner == side else "losses"
        record[outcome] += 1
        if outcome == "losses":
            record["first_losses" if side == 1 else "second_losses"] += 1
    return record
