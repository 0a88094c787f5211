"""Two-player, zero-sum, perfect-information board games for tree search: a :class:`Game`
interface and k-in-a-row games on a grid, :class:`TicTacToe` and :class:`ConnectFour`.

A state is the board alone, an int8 array of shape (rows, cols) with +1 for the first player's
stones, -1 for the second's and 0 for empty squares. Players alternate and the first moves on an
empty board, so the player to move is +1 when both have as many stones and -1 otherwise."""

from __future__ import annotations

import numpy

EMPTY, FIRST, SECOND = 0, 1, -1


class Game:
    """The rules search and self-play need. Values are from the point of view of the player to
    move: +1 a win, -1 a loss, 0 a draw. Actions are integers in [0, action_size)."""

    name = "game"
    board_shape: tuple[int, int] = (0, 0)
    action_size = 0

    def initial_state(self) -> numpy.ndarray:
        return numpy.zeros(self.board_shape, dtype=numpy.int8)

    def to_play(self, state: numpy.ndarray) -> int:
        """+1 when the first player is to move, -1 for the second."""
        return FIRST if int(numpy.count_nonzero(state)) % 2 == 0 else SECOND

    def legal_actions(self, state: numpy.ndarray) -> numpy.ndarray:
        """A boolean mask of shape (action_size,); all False once the game is over."""
        raise NotImplementedError

    def next_state(self, state: numpy.ndarray, action: int) -> numpy.ndarray:
        """The board after the player to move plays ``action`` (a new array)."""
        raise NotImplementedError

    def winner(self, state: numpy.ndarray) -> int:
        """+1 or -1 when that player has won, 0 otherwise (no winner yet, or a draw)."""
        raise NotImplementedError

    def terminal_value(self, state: numpy.ndarray) -> float | None:
        """None while the game goes on; otherwise the outcome for the player to move: -1 when the
        opponent has just won (only the last mover can have completed a line), 0 for a draw."""
        winner = self.winner(state)
        if winner != 0:
            return float(winner * self.to_play(state))
        if numpy.count_nonzero(state) == state.size:
            return 0.0
        return None

    def canonical_board(self, state: numpy.ndarray) -> numpy.ndarray:
        """The board seen by the player to move: +1 for its own stones, -1 for the opponent's."""
        return (state * self.to_play(state)).astype(numpy.int8)

    def encode(self, state: numpy.ndarray) -> numpy.ndarray:
        """Network input planes, NHWC without the batch axis: (rows, cols, 2) float32 holding the
        player to move's stones and the opponent's stones."""
        return planes(self.canonical_board(state))

    def symmetries(self, board: numpy.ndarray, policy: numpy.ndarray) -> list[tuple[numpy.ndarray, numpy.ndarray]]:
        """Every (board, policy) equivalent to ``board`` and a policy over its actions under the
        game's symmetries, the identity first."""
        return [(board, policy)]

    def render(self, state: numpy.ndarray) -> str:
        """The board as text: X for the first player, O for the second, . for empty squares, the
        column numbers underneath."""
        symbols = {FIRST: "X", SECOND: "O", EMPTY: "."}
        rows = [" ".join(symbols[int(v)] for v in row) for row in state]
        rows.append(" ".join(str(c % 10) for c in range(state.shape[1])))
        return "\n".join(rows)


def planes(canonical: numpy.ndarray) -> numpy.ndarray:
    """(..., rows, cols) boards from the mover's view -> (..., rows, cols, 2) float32 planes."""
    return numpy.stack([canonical == 1, canonical == -1], axis=-1).astype(numpy.float32)


def line_windows(rows: int, cols: int, k: int) -> numpy.ndarray:
    """Flat indices of every run of ``k`` squares in a line on a rows x cols grid: horizontal,
    vertical and both diagonals; shape (n_windows, k)."""
    index = numpy.arange(rows * cols).reshape(rows, cols)
    windows = []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for r in range(rows):
            for c in range(cols):
                end_r, end_c = r + dr * (k - 1), c + dc * (k - 1)
                if 0 <= end_r < rows and 0 <= end_c < cols:
                    windows.append([index[r + dr * i, c + dc * i] for i in range(k)])
    return numpy.array(windows, dtype=numpy.intp)


class KInARow(Game):
    """Players place stones on a rows x cols grid; the first to own ``k`` squares in a line
    (horizontal, vertical or diagonal) wins and a full board is a draw. With ``gravity`` an action
    is a column and the stone falls to its lowest empty square; otherwise an action is a square,
    numbered row by row."""

    def __init__(self, rows: int, cols: int, k: int, gravity: bool = False):
        if not (1 <= k <= max(rows, cols)):
            raise ValueError(f"KInARow: k={k} does not fit on a {rows}x{cols} board")
        self.board_shape, self.k, self.gravity = (rows, cols), k, gravity
        self.action_size = cols if gravity else rows * cols
        self.windows = line_windows(rows, cols, k)

    def legal_actions(self, state: numpy.ndarray) -> numpy.ndarray:
        if self.winner(state) != 0:
            return numpy.zeros(self.action_size, dtype=bool)
        if self.gravity:
            return state[0] == EMPTY
        return state.ravel() == EMPTY

    def next_state(self, state: numpy.ndarray, action: int) -> numpy.ndarray:
        action = int(action)
        if not (0 <= action < self.action_size) or not self.legal_actions(state)[action]:
            raise ValueError(f"{type(self).__name__}.next_state: action {action} is not legal on\n{self.render(state)}")
        board = state.copy()
        if self.gravity:
            row = int(numpy.flatnonzero(board[:, action] == EMPTY)[-1])
            board[row, action] = self.to_play(state)
        else:
            board.flat[action] = self.to_play(state)
        return board

    def winner(self, state: numpy.ndarray) -> int:
        sums = state.ravel()[self.windows].sum(axis=1, dtype=numpy.int64)
        if (sums == self.k).any():
            return FIRST
        if (sums == -self.k).any():
            return SECOND
        return 0


class TicTacToe(KInARow):
    """Noughts and crosses on 3x3; actions 0..8 are the squares row by row. Its symmetries are
    the 8 rotations and reflections of the square."""

    name = "tictactoe"

    def __init__(self):
        super().__init__(3, 3, 3)

    def symmetries(self, board, policy):
        grid = numpy.asarray(policy).reshape(self.board_shape)
        out = []
        for turns in range(4):
            for flip in (False, True):
                b, p = numpy.rot90(board, turns), numpy.rot90(grid, turns)
                if flip:
                    b, p = numpy.fliplr(b), numpy.fliplr(p)
                out.append((numpy.ascontiguousarray(b), numpy.ascontiguousarray(p).ravel()))
        return out


class ConnectFour(KInARow):
    """Connect Four on 6 rows x 7 columns with gravity; actions 0..6 are the columns. Its one
    symmetry is the left-right mirror."""

    name = "connect4"

    def __init__(self, rows: int = 6, cols: int = 7):
        super().__init__(rows, cols, 4, gravity=True)

    def symmetries(self, board, policy):
        policy = numpy.asarray(policy)
        return [(board, policy), (numpy.ascontiguousarray(board[:, ::-1]), policy[::-1].copy())]
