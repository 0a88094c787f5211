"""Tree search: UCT finds wins and blocks in hand positions, visit counts, PUCT with exact
values plays perfectly, root-only Dirichlet noise, the edge scores' formulas and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from game_solver import action_values, board, negamax_value, random_playout

from lamina.rl import MCTS, ConnectFour, MCTSPlayer, RandomPlayer, TicTacToe, play_match, visit_policy
from lamina.rl.mcts import Node, puct_scores, ucb1_scores


def exact_evaluator(game, table):
    """A uniform prior over the legal actions and the perfect-play value."""
    def evaluate(state):
        legal = game.legal_actions(state)
        return legal / legal.sum(), negamax_value(game, state, table)
    return evaluate


@pytest.mark.parametrize("game, rows, winning", [
    (TicTacToe(), ("X X .", "O O .", ". . ."), 2),                        # X completes the row
    (TicTacToe(), ("X O X", ". O .", ". . X"), 7),                        # O to move wins the column
    (ConnectFour(), (".......", ".......", ".......", ".......", "...O...", "OXXX.O."), 4),
])
def test_uct_finds_the_winning_move(game, rows, winning):
    state = board(*rows)
    search = MCTS.uct(game, n_simulations=300, seed=0)
    visits = search.search(state)
    assert visits.sum() == 300
    assert int(visits.argmax()) == winning
    assert game.winner(game.next_state(state, winning)) == game.to_play(state)


@pytest.mark.parametrize("game, rows, block", [
    (TicTacToe(), ("O O .", "X . .", "X . ."), 2),            # X to move stops O's row
    (ConnectFour(), (".......", ".......", ".......", "....O..", "....O..", "XX..O.X"), 4),   # stop the column
])
def test_uct_blocks_the_opponents_immediate_win(game, rows, block):
    state = board(*rows)
    assert game.terminal_value(state) is None
    visits = MCTS.uct(game, n_simulations=500, seed=1).search(state)
    assert int(visits.argmax()) == block


def test_puct_with_exact_values_plays_perfectly():
    game, table = TicTacToe(), {}
    rng = np.random.default_rng(0)
    positions = [game.initial_state()] + [random_playout(game, rng, int(rng.integers(1, 7))) for _ in range(40)]
    for state in positions:
        if game.terminal_value(state) is not None:
            continue
        values = action_values(game, state, table)
        visits = MCTS(game, exact_evaluator(game, table), n_simulations=60, c=1.0).search(state)
        assert visits.sum() == 60
        assert values[int(visits.argmax())] == max(values.values()), game.render(state)


def test_dirichlet_noise_is_added_at_the_root_only():
    game = ConnectFour()
    state = game.next_state(game.initial_state(), 3)
    uniform = lambda s: (np.full(game.action_size, 1 / game.action_size), 0.0)   # noqa: E731
    search = MCTS(game, uniform, n_simulations=50, dirichlet_alpha=0.3, dirichlet_epsilon=0.25, seed=0)
    search.search(state)
    root = search.root
    assert not np.allclose(root.prior, 1 / 7)
    assert root.prior.sum() == pytest.approx(1.0)
    assert np.all(root.prior >= 0.75 / 7 - 1e-12)                 # (1 - epsilon) P + epsilon eta
    children = [root]
    while children:
        node = children.pop()
        children.extend(node.children.values())
        if node is not root and node.expanded:
            np.testing.assert_allclose(node.prior, node.legal / node.legal.sum())
    quiet = MCTS(game, uniform, n_simulations=5, seed=0)
    quiet.search(state)
    np.testing.assert_allclose(quiet.root.prior, 1 / 7)


def test_searches_are_deterministic_given_a_seed():
    game = ConnectFour()
    state = game.initial_state()
    first = MCTS.uct(game, n_simulations=100, seed=3).search(state)
    np.testing.assert_array_equal(first, MCTS.uct(game, n_simulations=100, seed=3).search(state))
    assert not np.array_equal(first, MCTS.uct(game, n_simulations=100, seed=4).search(state))
    uniform = lambda s: (np.full(7, 1 / 7), 0.0)   # noqa: E731
    noisy = [MCTS(game, uniform, 40, dirichlet_epsilon=0.5, seed=5).search(state) for _ in range(2)]
    np.testing.assert_array_equal(*noisy)


def test_edge_scores_follow_their_formulas():
    game = TicTacToe()
    node = Node(game, game.initial_state())
    node.visits[:] = [3, 1, 0, 2, 0, 0, 0, 0, 4]
    node.value_sum[:] = [1.5, -1.0, 0, 0.5, 0, 0, 0, 0, 2.0]
    node.prior[:] = np.arange(1, 10) / 45
    total = 10
    q = np.array([0.5, -1.0, 0, 0.25, 0, 0, 0, 0, 0.5])
    np.testing.assert_allclose(puct_scores(node, 2.0), q + 2.0 * node.prior * math.sqrt(total + 1) / (1 + node.visits))
    ucb = ucb1_scores(node, 1.4)
    seen = node.visits > 0
    np.testing.assert_allclose(ucb[seen], q[seen] + 1.4 * np.sqrt(math.log(total) / node.visits[seen]))
    assert np.all(np.isinf(ucb[~seen]))


def test_visit_policy_temperatures():
    visits = np.array([1, 4, 0, 4, 1])
    np.testing.assert_allclose(visit_policy(visits, 1.0), visits / 10)
    np.testing.assert_allclose(visit_policy(visits, 0.5), visits ** 2 / 34)
    np.testing.assert_allclose(visit_policy(visits, 0), [0, 0.5, 0, 0.5, 0])
    with pytest.raises(ValueError, match="needs some visits"):
        visit_policy(np.zeros(3), 1.0)


def test_search_from_a_finished_game_is_an_error():
    game = TicTacToe()
    with pytest.raises(ValueError, match="already over"):
        MCTS.uct(game, 10).search(board("X X X", "O O .", ". . ."))


def test_uct_beats_a_random_player_at_tictactoe():
    game = TicTacToe()
    record = play_match(game, MCTSPlayer(MCTS.uct(game, 100, seed=0)), RandomPlayer(game, seed=0), 20)
    assert sum(record[k] for k in ("wins", "draws", "losses")) == 20
    assert record["wins"] >= 14 and record["losses"] <= 2 and record["first_losses"] == 0
