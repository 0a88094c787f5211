"""Generative flow networks: DAG environments (:class:`HyperGrid` of Bengio et al. 2021, a
sequence builder), a :class:`GFlowNet` with forward / backward policies, state flows and log Z,
the flow-matching, detailed-balance, trajectory-balance and sub-trajectory-balance losses,
training with exploration and replay, and exact evaluation on small environments."""

from lamina.rl.gflownet.environments import DAGEnv, HyperGrid, SequenceEnv
from lamina.rl.gflownet.evaluation import (
    exact_flows,
    find_modes,
    l1_distance,
    learned_distribution,
    modes_found,
    target_distribution,
    terminating_distribution,
)
from lamina.rl.gflownet.losses import (
    detailed_balance_loss,
    flow_matching_loss,
    subtrajectory_balance_loss,
    trajectory_balance_loss,
)
from lamina.rl.gflownet.policy import GFlowNet, Trajectories
from lamina.rl.gflownet.training import TrajectoryReplay, train_gflownet

__all__ = [
    "DAGEnv", "GFlowNet", "HyperGrid", "SequenceEnv", "Trajectories", "TrajectoryReplay", "detailed_balance_loss",
    "exact_flows", "find_modes", "flow_matching_loss", "l1_distance", "learned_distribution", "modes_found",
    "subtrajectory_balance_loss", "target_distribution", "terminating_distribution", "train_gflownet",
    "trajectory_balance_loss",
]
