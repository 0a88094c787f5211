"""Model-based reinforcement learning: a probabilistic ensemble of dynamics models with
trajectory sampling and the PETS agent (Chua et al., 2018), sampling-based planners (CEM, MPPI)
on any dynamics callable, MBPO-style model rollouts into a replay buffer (Janner et al., 2019),
and a recurrent state-space world model (PlaNet / Dreamer's RSSM)."""

from lamina.rl.model_based.ensemble import ProbabilisticEnsemble, TrajectorySampling, gaussian_nll, soft_clamp_logvar
from lamina.rl.model_based.mbpo import MBPOAgent, model_rollouts
from lamina.rl.model_based.pets import PETSAgent, run_episode
from lamina.rl.model_based.planners import CEMPlanner, MPPIPlanner, mppi_weights, rollout_returns
from lamina.rl.model_based.rssm import RSSM, collect_sequences, diagonal_gaussian_kl

__all__ = ["CEMPlanner", "MBPOAgent", "MPPIPlanner", "PETSAgent", "ProbabilisticEnsemble", "RSSM", "TrajectorySampling",
           "collect_sequences", "diagonal_gaussian_kl", "gaussian_nll", "model_rollouts", "mppi_weights",
           "rollout_returns", "run_episode", "soft_clamp_logvar"]
