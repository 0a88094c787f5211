"""Small cooperative multi-agent tasks for tests and quick checks: the two-step game of the QMIX
paper, repeated matrix games (the climbing and penalty games), a gridworld where two agents must
stand on the goal together and a continuous rendezvous task."""

from __future__ import annotations

import numpy

from lamina.rl.multiagent.env import CooperativeEnv
from lamina.rl.spaces import Box


def _one_hot(index: int, size: int) -> numpy.ndarray:
    out = numpy.zeros(size, dtype=numpy.float32)
    out[index] = 1.0
    return out


class TwoStepGame(CooperativeEnv):
    """The two-step game of Rashid et al. (2018, QMIX): in the first state agent 0's
    action chooses the second state (action 0: state 2A, action 1: state 2B; agent 1's action does
    not matter, and the first step pays nothing). In 2A every joint action pays 7; in 2B the joint
    action (a_0, a_1) pays ``PAYOFF_2B[a_0][a_1]``, 8 for (1, 1). The episode then ends. Every agent
    observes the one-hot state (1, 2A, 2B), also the global state. The optimal return is 8; a
    value factorisation that is a sum of per-agent terms settles on 7."""

    PAYOFF_2B = ((0.0, 1.0), (1.0, 8.0))
    optimal_return = 8.0

    def __init__(self):
        super().__init__(n_agents=2, n_actions=2, obs_dim=3, state_dim=3, max_steps=2)
        self.position = 0

    def _start(self) -> None:
        self.position = 0

    def _move(self, actions: list[int]) -> tuple[float, bool]:
        if self.position == 0:
            self.position = 1 + actions[0]
            return 0.0, False
        reward = 7.0 if self.position == 1 else self.PAYOFF_2B[actions[0]][actions[1]]
        return reward, True

    def _observe(self, i: int) -> numpy.ndarray:
        return self.state()

    def state(self) -> numpy.ndarray:
        return _one_hot(self.position, 3)


class MatrixGame(CooperativeEnv):
    """A cooperative matrix game repeated ``repeats`` times: each round the joint action (a_0, a_1)
    pays ``payoff[a_0][a_1]`` to both agents. Agents observe the one-hot round number."""

    def __init__(self, payoff, repeats: int = 1):
        payoff = numpy.asarray(payoff, dtype=numpy.float64)
        if payoff.ndim != 2 or payoff.shape[0] != payoff.shape[1]:
            raise ValueError(f"MatrixGame: payoff must be a square matrix, got shape {payoff.shape}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"MatrixGame: repeats must be a positive int, got {repeats!r}")
        super().__init__(n_agents=2, n_actions=payoff.shape[0], obs_dim=repeats, state_dim=repeats,
                         max_steps=repeats + 1)
        self.payoff, self.repeats = payoff, repeats
        self.round = 0

    @property
    def optimal_return(self) -> float:
        return float(self.payoff.max() * self.repeats)

    def _start(self) -> None:
        self.round = 0

    def _move(self, actions: list[int]) -> tuple[float, bool]:
        self.round += 1
        return float(self.payoff[actions[0], actions[1]]), self.round == self.repeats

    def _observe(self, i: int) -> numpy.ndarray:
        return self.state()

    def state(self) -> numpy.ndarray:
        return _one_hot(min(self.round, self.repeats - 1), self.repeats)


def climbing_game(repeats: int = 1) -> MatrixGame:
    """The climbing game of Claus and Boutilier (1998): the optimum (0, 0) pays 11 but is surrounded
    by -30 penalties, so independent learners drift to the safe (1, 1) or (2, 2)."""
    return MatrixGame([[11, -30, 0], [-30, 7, 6], [0, 0, 5]], repeats)


def penalty_game(k: float = -10.0, repeats: int = 1) -> MatrixGame:
    """The penalty game of Claus and Boutilier (1998): two optima (0, 0) and (2, 2) paying 10 and a
    penalty ``k`` <= 0 for miscoordinating between them, a safe (1, 1) paying 2."""
    return MatrixGame([[10, 0, k], [0, 2, 0], [k, 0, 10]], repeats)


class CooperativeGridWorld(CooperativeEnv):
    """A ``size`` x ``size`` grid with two agents starting in the top corners, (0, 0) and
    (0, size - 1), and a goal in the middle of the bottom row. Actions 0..4 move up, right, down,
    left or stay (walls keep an agent in place; agents may share a cell). The team earns
    ``goal_reward`` and the episode ends when both agents stand on the goal at the same time; every
    other step costs ``step_reward``; episodes are cut at ``max_steps``. Each agent observes the
    one-hot code of its own cell followed by that of the other agent's; the state is both cells.
    The optimal return is ``goal_reward + (d - 1) step_reward``, d the larger distance to the goal."""

    MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))

    def __init__(self, size: int = 3, goal_reward: float = 1.0, step_reward: float = -0.01, max_steps: int = 20):
        if size < 2:
            raise ValueError(f"CooperativeGridWorld: size must be at least 2, got {size}")
        cells = size * size
        super().__init__(n_agents=2, n_actions=5, obs_dim=2 * cells, state_dim=2 * cells, max_steps=max_steps)
        self.size, self.goal_reward, self.step_reward = size, float(goal_reward), float(step_reward)
        self.goal = (size - 1, size // 2)
        self.cells = [(0, 0), (0, size - 1)]

    @property
    def optimal_return(self) -> float:
        distance = max(abs(r - self.goal[0]) + abs(c - self.goal[1]) for r, c in ((0, 0), (0, self.size - 1)))
        return self.goal_reward + (distance - 1) * self.step_reward

    def _start(self) -> None:
        self.cells = [(0, 0), (0, self.size - 1)]

    def _move(self, actions: list[int]) -> tuple[float, bool]:
        for i, action in enumerate(actions):
            dr, dc = self.MOVES[action]
            row, col = self.cells[i]
            self.cells[i] = (min(max(row + dr, 0), self.size - 1), min(max(col + dc, 0), self.size - 1))
        done = all(cell == self.goal for cell in self.cells)
        return (self.goal_reward if done else self.step_reward), done

    def _cell_code(self, i: int) -> numpy.ndarray:
        row, col = self.cells[i]
        return _one_hot(row * self.size + col, self.size * self.size)

    def _observe(self, i: int) -> numpy.ndarray:
        return numpy.concatenate([self._cell_code(i), self._cell_code(1 - i)])

    def state(self) -> numpy.ndarray:
        return numpy.concatenate([self._cell_code(0), self._cell_code(1)])


class Rendezvous(CooperativeEnv):
    """Two agents in the square [-1, 1]^2, starting at uniformly random points, must meet: an
    action a in [-1, 1]^2 moves its agent by ``speed`` a (positions clipped to the square), and
    every step the team earns -||p_0 - p_1||, the distance between the agents after the move.
    Episodes are cut at ``max_steps``. Agent i observes (p_i, p_j - p_i); the state is (p_0, p_1)."""

    def __init__(self, speed: float = 0.2, max_steps: int = 25):
        super().__init__(n_agents=2, n_actions=1, obs_dim=4, state_dim=4, max_steps=max_steps)
        self.speed = float(speed)
        self.action_spaces = {agent: Box(-1.0, 1.0, shape=(2,)) for agent in self.possible_agents}
        self.observation_spaces = {agent: Box(-2.0, 2.0, shape=(4,)) for agent in self.possible_agents}
        self.state_space = Box(-1.0, 1.0, shape=(4,))
        self.positions = numpy.zeros((2, 2))

    def _start(self) -> None:
        self.positions = self.np_random.uniform(-1.0, 1.0, (2, 2))

    def _move(self, actions: list) -> tuple[float, bool]:
        self.positions = numpy.clip(self.positions + self.speed * numpy.stack(actions), -1.0, 1.0)
        return -float(numpy.linalg.norm(self.positions[0] - self.positions[1])), False

    def _observe(self, i: int) -> numpy.ndarray:
        own, other = self.positions[i], self.positions[1 - i]
        return numpy.concatenate([own, other - own]).astype(numpy.float32)

    def state(self) -> numpy.ndarray:
        return self.positions.reshape(-1).astype(numpy.float32)
