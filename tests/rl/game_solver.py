"""Hand-written positions, random positions and exact game values (plain negamax with a table of
solved boards), for checking games and tree search."""

from __future__ import annotations

import numpy as np


def negamax_value(game, state, table: dict | None = None) -> float:
    """The value of ``state`` for the player to move under perfect play by both sides."""
    table = {} if table is None else table
    key = state.tobytes()
    if key not in table:
        value = game.terminal_value(state)
        if value is None:
            value = max(-negamax_value(game, game.next_state(state, a), table)
                        for a in np.flatnonzero(game.legal_actions(state)))
        table[key] = value
    return table[key]


def action_values(game, state, table: dict | None = None) -> dict[int, float]:
    """The perfect-play value of every legal action, for the player to move."""
    return {int(a): -negamax_value(game, game.next_state(state, a), table)
            for a in np.flatnonzero(game.legal_actions(state))}


def board(*rows: str) -> np.ndarray:
    """Rows of X / O / . characters (spaces ignored) as a state."""
    values = {"X": 1, "O": -1, ".": 0}
    return np.array([[values[ch] for ch in row.replace(" ", "")] for row in rows], dtype=np.int8)


def random_playout(game, rng, max_moves: int) -> np.ndarray:
    """The position after up to ``max_moves`` uniformly random legal moves from the start."""
    state = game.initial_state()
    for _ in range(max_moves):
        if game.terminal_value(state) is not None:
            break
        state = game.next_state(state, rng.choice(np.flatnonzero(game.legal_actions(state))))
    return state
