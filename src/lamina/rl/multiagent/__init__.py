"""Cooperative multi-agent reinforcement learning: a PettingZoo-style parallel environment
interface, small cooperative tasks (the QMIX paper's two-step game, the climbing and penalty
matrix games, a two-agent gridworld, a continuous rendezvous), Q-learning for teams (tabular and
deep independent Q-learning, value decomposition networks (VDN) and QMIX) and MADDPG."""

from lamina.rl.multiagent.env import CooperativeEnv, ParallelEnv
from lamina.rl.multiagent.games import (
    CooperativeGridWorld,
    MatrixGame,
    Rendezvous,
    TwoStepGame,
    climbing_game,
    penalty_game,
)
from lamina.rl.multiagent.learners import (
    QMIX,
    VDN,
    IndependentQLearning,
    JointReplayBuffer,
    MultiAgentQLearner,
    TabularIndependentQLearning,
    run_episodes,
)
from lamina.rl.multiagent.maddpg import MADDPG
from lamina.rl.multiagent.mixers import QMixer, VDNMixer

__all__ = [
    "MADDPG", "QMIX", "VDN", "CooperativeEnv", "CooperativeGridWorld", "IndependentQLearning", "JointReplayBuffer",
    "MatrixGame", "MultiAgentQLearner", "ParallelEnv", "QMixer", "Rendezvous", "TabularIndependentQLearning",
    "TwoStepGame", "VDNMixer", "climbing_game", "penalty_game", "run_episodes",
]
