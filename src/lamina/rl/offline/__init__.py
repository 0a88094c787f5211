"""Offline reinforcement learning and imitation from a fixed dataset of transitions: D4RL-style
datasets collected from a policy (:class:`OfflineDataset`, :func:`collect_dataset`,
:func:`d4rl_style_dataset`), behaviour cloning and its filtered "%BC" form, discrete
and continuous conservative Q-learning (CQL), implicit Q-learning (IQL), batch-constrained
Q-learning (BCQ, continuous and discrete), TD3+BC, the Decision Transformer, generative
adversarial imitation (GAIL) with PPO, and the diffusion policy (a denoiser of action sequences,
:class:`DiffusionPolicy`, with its :class:`TemporalUNet` and :func:`demonstration_windows`)."""

from lamina.rl.offline.bc import BehaviorCloning, bc_loss, gaussian_log_likelihood
from lamina.rl.offline.bcq import BCQ, ActionVAE, Perturbation, bcq_vae_loss, soft_clipped_double_q, train_bcq
from lamina.rl.offline.continuous_cql import ContinuousCQL, continuous_cql_regularizer
from lamina.rl.offline.cql import DiscreteCQL, discrete_cql_loss, discrete_cql_regularizer, q_learning_targets
from lamina.rl.offline.dataset import (
    D4RL_KINDS,
    OfflineDataset,
    cartpole_expert,
    check_action_space,
    collect_dataset,
    concatenate_datasets,
    d4rl_style_dataset,
    normalize_returns,
    normalized_score,
)
from lamina.rl.offline.decision_transformer import (
    DecisionTransformer,
    decision_transformer_loss,
    evaluate_decision_transformer,
    train_decision_transformer,
)
from lamina.rl.offline.demonstrations import (
    ObstacleDetour,
    demonstration_windows,
    detour_demonstrations,
    detour_expert,
    detour_side,
)
from lamina.rl.offline.diffusion_policy import DiffusionPolicy, rollout_diffusion_policy, train_diffusion_policy
from lamina.rl.offline.discrete_bcq import DiscreteBCQ, filtered_greedy_actions
from lamina.rl.offline.gail import GAIL, GAIL_REWARDS, Discriminator, discriminator_loss, gail_reward
from lamina.rl.offline.iql import IQL, MAX_ADVANTAGE_WEIGHT, advantage_weights, expectile_loss, policy_log_prob
from lamina.rl.offline.td3_bc import TD3BC, state_statistics, td3_bc_actor_loss, train_td3_bc
from lamina.rl.offline.temporal_unet import ConditionalResidualBlock1D, TemporalUNet

__all__ = [
    "D4RL_KINDS", "GAIL", "GAIL_REWARDS", "IQL", "MAX_ADVANTAGE_WEIGHT", "BehaviorCloning", "ContinuousCQL",
    "DecisionTransformer", "Discriminator", "DiscreteCQL", "OfflineDataset", "advantage_weights", "bc_loss",
    "cartpole_expert", "check_action_space", "collect_dataset", "concatenate_datasets", "continuous_cql_regularizer",
    "d4rl_style_dataset", "decision_transformer_loss", "discrete_cql_loss", "discrete_cql_regularizer",
    "discriminator_loss", "evaluate_decision_transformer", "expectile_loss", "gail_reward", "gaussian_log_likelihood",
    "normalize_returns", "normalized_score", "policy_log_prob", "q_learning_targets", "train_decision_transformer",
    "BCQ", "TD3BC", "ActionVAE", "Perturbation", "bcq_vae_loss", "soft_clipped_double_q", "state_statistics",
    "td3_bc_actor_loss", "train_bcq", "train_td3_bc", "DiscreteBCQ", "filtered_greedy_actions",
    "ConditionalResidualBlock1D", "DiffusionPolicy", "ObstacleDetour", "TemporalUNet", "demonstration_windows",
    "detour_demonstrations", "detour_expert", "detour_side", "rollout_diffusion_policy", "train_diffusion_policy",
]
