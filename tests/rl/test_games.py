"""Board games for tree search: rules of tic-tac-toe and Connect Four on hand positions, the
vectorised win test against a direct scan, symmetries, and tic-tac-toe's perfect-play value."""

from __future__ import annotations

import numpy as np
import pytest
from game_solver import action_values, board, negamax_value, random_playout

from lamina.rl import ConnectFour, TicTacToe
from lamina.rl.games import line_windows


def scan_winner(state: np.ndarray, k: int) -> int:
    """The winner found by walking every square and direction one step at a time."""
    rows, cols = state.shape
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + dr * i, c + dc * i) for i in range(k)]
                if all(0 <= y < rows and 0 <= x < cols for y, x in cells):
                    line = {int(state[y, x]) for y, x in cells}
                    if len(line) == 1 and line != {0}:
                        return line.pop()
    return 0


@pytest.mark.parametrize("rows, winner", [
    (("X X X", "O O .", ". . ."), 1),      # row
    (("X O X", "X O .", ". O ."), -1),     # column
    (("X O .", "O X .", ". . X"), 1),      # diagonal
    (("X X O", "X O .", "O . ."), -1),     # anti-diagonal
])
def test_tictactoe_wins_in_every_direction(rows, winner):
    game = TicTacToe()
    state = board(*rows)
    assert game.winner(state) == winner
    assert game.terminal_value(state) == -1.0           # the player to move has lost
    assert not game.legal_actions(state).any()


def test_tictactoe_draw_ongoing_and_legal_moves():
    game = TicTacToe()
    draw = board("X O X", "X O O", "O X X")
    assert game.winner(draw) == 0 and game.terminal_value(draw) == 0.0
    state = board("X . .", ". O .", ". . .")
    assert game.terminal_value(state) is None and game.to_play(state) == 1
    np.testing.assert_array_equal(game.legal_actions(state), [0, 1, 1, 1, 0, 1, 1, 1, 1])
    after = game.next_state(state, 8)
    assert after[2, 2] == 1 and state[2, 2] == 0 and game.to_play(after) == -1
    np.testing.assert_array_equal(game.canonical_board(after), -after)
    with pytest.raises(ValueError, match="action 4 is not legal"):
        game.next_state(state, 4)
    assert game.encode(after).shape == (3, 3, 2)
    np.testing.assert_array_equal(game.encode(after)[..., 0], after == -1)   # the mover's (O's) stones first
    assert game.render(state).splitlines() == ["X . .", ". O .", ". . .", "0 1 2"]


def test_connect_four_gravity_and_full_columns():
    game = ConnectFour()
    state = game.initial_state()
    for column in (3, 3, 3, 3, 3, 3):
        state = game.next_state(state, column)
    np.testing.assert_array_equal(state[:, 3], [-1, 1, -1, 1, -1, 1])
    assert game.legal_actions(state).tolist() == [True, True, True, False, True, True, True]
    with pytest.raises(ValueError, match="not legal"):
        game.next_state(state, 3)
    assert len(line_windows(6, 7, 4)) == 69 and len(line_windows(3, 3, 3)) == 8


@pytest.mark.parametrize("rows, winner", [
    ((".......", ".......", ".......", ".......", "OOO....", "XXXX..."), 1),     # horizontal
    ((".......", ".......", "..O....", "..OX...", "..OX...", "..OX..X"), -1),    # vertical
    ((".......", ".......", "...X...", "..XO...", ".XOO...", "XOOXX.."), 1),     # diagonal /
    ((".......", ".......", "O......", "XO.....", "XXO....", "XXXO.OO"), -1),    # diagonal \
])
def test_connect_four_wins_in_every_direction(rows, winner):
    game = ConnectFour()
    state = board(*rows)
    assert game.winner(state) == winner == scan_winner(state, 4)
    assert game.terminal_value(state) == -1.0
    line = game.windows[np.abs(state.ravel()[game.windows].sum(axis=1)) == 4]
    assert len(line) == 1
    three = state.copy()
    three.flat[line[0, 0]] = 0                  # one stone of the line taken away: no win
    assert game.winner(three) == 0


def test_connect_four_draw_on_a_full_board():
    game = ConnectFour()
    state = board("XXOOXXO", "OOXXOOX", "XXOOXXO", "OOXXOOX", "XXOOXXO", "OOXXOOX")
    assert scan_winner(state, 4) == 0
    assert game.terminal_value(state) == 0.0 and not game.legal_actions(state).any()


@pytest.mark.parametrize("game, k", [(TicTacToe(), 3), (ConnectFour(), 4)])
def test_vectorised_winner_matches_a_direct_scan(game, k):
    rng = np.random.default_rng(0)
    for _ in range(200):
        state = random_playout(game, rng, int(rng.integers(0, game.board_shape[0] * game.board_shape[1] + 1)))
        assert game.winner(state) == scan_winner(state, k)


@pytest.mark.parametrize("game, count", [(TicTacToe(), 8), (ConnectFour(), 2)])
def test_symmetries_preserve_outcomes_and_map_moves(game, count):
    rng = np.random.default_rng(1)
    for _ in range(30):
        state = random_playout(game, rng, int(rng.integers(1, 8)))
        variants = game.symmetries(state, np.arange(game.action_size))
        assert len(variants) == count
        np.testing.assert_array_equal(variants[0][0], state)
        for sym_state, moves in variants:
            assert game.terminal_value(sym_state) == game.terminal_value(state)
            assert sorted(moves.tolist()) == list(range(game.action_size))
            if game.terminal_value(state) is not None:
                continue
            # the move that sits where action a went leads to the image of the position after a
            for a in np.flatnonzero(game.legal_actions(state)):
                image = int(np.flatnonzero(moves == a)[0])
                after, _ = next(v for v in game.symmetries(game.next_state(state, a), np.arange(game.action_size))
                                if np.array_equal(v[1], moves))
                np.testing.assert_array_equal(game.next_state(sym_state, image), after)


def test_symmetric_positions_have_equal_values():
    game, table = TicTacToe(), {}
    state = board("X . .", ". . .", ". O .")
    values = {negamax_value(game, sym, table) for sym, _ in game.symmetries(state, np.zeros(9))}
    assert len(values) == 1


def test_tictactoe_is_a_draw_under_perfect_play():
    game, table = TicTacToe(), {}
    assert negamax_value(game, game.initial_state(), table) == 0.0
    assert len(table) == 5478                    # every reachable position solved
    # X in a corner, O on an edge next to it: X wins
    assert negamax_value(game, board("X O .", ". . .", ". . ."), table) == 1.0
    assert max(action_values(game, game.initial_state(), table).values()) == 0.0
