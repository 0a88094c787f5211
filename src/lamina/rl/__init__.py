"""Reinforcement learning: environments with Gymnasium's interface (CartPole-v1, Pendulum-v1,
MountainCar-v0 and tiny Chain / GridWorld tasks, a vector of environments, a time limit), an
experience-replay buffer (uniform or prioritized), deep Q-learning (DQN, Double DQN, the PyTorch
tutorial's and RL Baselines3 Zoo's settings) and proximal policy optimization
(PPO with GAE, discrete and continuous actions)."""

from lamina.rl.classic_control import CartPole, MountainCar, Pendulum, angle_normalize
from lamina.rl.dqn import DQN_PRESETS, PRESET_STEPS, DQNAgent, dqn_loss, dqn_targets, train_dqn
from lamina.rl.env import Env, TimeLimit, Wrapper
from lamina.rl.evaluation import GreedyPolicy, evaluate_policy
from lamina.rl.networks import copy_weights, mlp, soft_update
from lamina.rl.ppo import PPO, ActorCritic, clipped_surrogate_loss, compute_gae, ppo_loss, train_ppo, value_loss
from lamina.rl.prioritized import PrioritizedBatch, PrioritizedReplayBuffer, SumTree
from lamina.rl.registry import ENVIRONMENTS, make
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.spaces import Box, Discrete, Space
from lamina.rl.toy import Chain, GridWorld
from lamina.rl.vector import VectorEnv

__all__ = [
    "DQN_PRESETS", "ENVIRONMENTS", "PPO", "PRESET_STEPS", "ActorCritic", "Batch", "Box", "CartPole", "Chain",
    "DQNAgent", "Discrete", "Env", "GreedyPolicy", "GridWorld", "MountainCar", "Pendulum", "PrioritizedBatch",
    "PrioritizedReplayBuffer", "ReplayBuffer", "Space", "SumTree", "TimeLimit", "VectorEnv", "Wrapper",
    "angle_normalize", "clipped_surrogate_loss", "compute_gae", "copy_weights", "dqn_loss", "dqn_targets",
    "evaluate_policy", "make", "mlp", "ppo_loss", "soft_update", "train_dqn", "train_ppo", "value_loss",
]
