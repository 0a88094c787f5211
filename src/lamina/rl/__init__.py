"""Reinforcement learning: environments with Gymnasium's interface (CartPole-v1, Pendulum-v1,
MountainCar-v0 and tiny Chain / GridWorld tasks, a vector of environments, a time limit), an
experience-replay buffer (uniform or prioritized), deep Q-learning (DQN, Double DQN, the PyTorch
tutorial's and RL Baselines3 Zoo's settings), proximal policy optimization and advantage
actor-critic (PPO and A2C with GAE, discrete and continuous actions), and the off-policy
continuous-control agents SAC, TD3 and DDPG; and for board games (tic-tac-toe, Connect Four)
Monte Carlo tree search (UCT, PUCT) and AlphaZero self-play, and MuZero's search in a learned
model's latent space (:mod:`lamina.rl.muzero`); neuroevolution (a policy's weights searched by
an evolution strategy of :mod:`lamina.optim.evolution`); offline RL from fixed datasets
(:mod:`lamina.rl.offline`: behaviour cloning, CQL, IQL, the Decision Transformer) and GAIL;
multi-armed and contextual bandits (:mod:`lamina.rl.bandits`) and cooperative multi-agent
learning (:mod:`lamina.rl.multiagent`: a PettingZoo-style API, independent Q-learning, VDN,
QMIX, MADDPG); and model-based RL (:mod:`lamina.rl.model_based`: probabilistic ensembles, PETS
with CEM / MPPI planning, MBPO-style model rollouts, the PlaNet / Dreamer RSSM world model) with
Dreamer's actor-critic learning in imagination (:mod:`lamina.rl.dreamer`); Rainbow (:mod:`lamina.rl.rainbow`: noisy
dueling C51 networks, n-step returns, Double DQN and prioritized replay); IMPALA's V-trace
off-policy actor-critic with lagged actors (:mod:`lamina.rl.impala`); R2D2's recurrent replay DQN
(:mod:`lamina.rl.r2d2`: stored-state sequences with burn-in, rescaled n-step double-Q targets);
quantile distributional RL: QR-DQN (:mod:`lamina.rl.quantile`) and IQN with risk-sensitive
policies (:mod:`lamina.rl.iqn`); trust region policy optimization (:mod:`lamina.rl.trpo`:
conjugate gradient on Fisher-vector products, a KL-bounded line search); curiosity-driven
exploration (:mod:`lamina.rl.exploration`: PPO with RND or ICM intrinsic rewards, the SparseChain
corridor); Hindsight Experience Replay (:mod:`lamina.rl.her`) on goal environments
(:mod:`lamina.rl.goal_env`: bit flipping, point reaching)."""

from lamina.lazy import names_on_first_use
from lamina.rl.a2c import A2C, a2c_loss, train_a2c
from lamina.rl.alphazero import AlphaZero, NetworkEvaluator, PolicyValueNet, alphazero_loss, train_alphazero
from lamina.rl.bandits import (
    KLUCB,
    UCB1,
    BernoulliBandit,
    EpsilonGreedy,
    GaussianBandit,
    LinearContextualBandit,
    LinearThompsonSampling,
    LinUCB,
    NeuralLinearBandit,
    ThompsonSampling,
    run_bandit,
)
from lamina.rl.classic_control import CartPole, MountainCar, Pendulum, angle_normalize
from lamina.rl.curiosity import ICMModule, RewardNormalizer, RNDModule, RunningMeanStd, icm_losses
from lamina.rl.dqn import DQN_PRESETS, PRESET_STEPS, DQNAgent, dqn_loss, dqn_targets, train_dqn
from lamina.rl.dreamer import (
    DreamerActor,
    DreamerAgent,
    DreamerWorldModel,
    SequenceReplay,
    dreamer_model_loss,
    lambda_returns,
    run_dreamer_episode,
    train_dreamer,
)
from lamina.rl.env import Env, TimeLimit, Wrapper
from lamina.rl.evaluation import GreedyPolicy, evaluate_policy
from lamina.rl.exploration import (
    CuriosityActorCritic,
    CuriosityPPO,
    ICMPPOAgent,
    RNDPPOAgent,
    train_curiosity_ppo,
    train_icm_ppo,
    train_rnd_ppo,
)
from lamina.rl.games import ConnectFour, Game, KInARow, TicTacToe
from lamina.rl.gflownet import GFlowNet, HyperGrid, SequenceEnv, train_gflownet
from lamina.rl.goal_env import BitFlipping, DictSpace, GoalEnv, PointReach
from lamina.rl.her import (
    HERAgent,
    HindsightIndices,
    HindsightReplayBuffer,
    goal_conditioned,
    success_rate,
    train_her,
)
from lamina.rl.impala import IMPALAAgent, VTraceReturns, impala_loss, train_impala, vtrace
from lamina.rl.iqn import (
    DISTORTIONS,
    IQNAgent,
    IQNNetwork,
    QuantileEmbedding,
    cosine_features,
    distort_taus,
    train_iqn,
)
from lamina.rl.mcts import MCTS, MCTSPlayer, RandomPlayer, RolloutEvaluator, play_game, play_match, visit_policy
from lamina.rl.model_based import (
    RSSM,
    CEMPlanner,
    MBPOAgent,
    MPPIPlanner,
    PETSAgent,
    ProbabilisticEnsemble,
    TrajectorySampling,
    model_rollouts,
)
from lamina.rl.multiagent import MADDPG, QMIX, VDN, IndependentQLearning, ParallelEnv, QMixer, TwoStepGame, VDNMixer
from lamina.rl.muzero import (
    LatentMCTS,
    MinMaxStats,
    MuZero,
    MuZeroNet,
    inverse_value_transform,
    muzero_loss,
    muzero_targets,
    train_muzero,
    value_transform,
)
from lamina.rl.networks import copy_weights, mlp, soft_update
from lamina.rl.neuroevolution import episode_return, evolve_policy
from lamina.rl.off_policy import OffPolicyAgent, QNetwork
from lamina.rl.ppo import PPO, ActorCritic, clipped_surrogate_loss, compute_gae, ppo_loss, train_ppo, value_loss
from lamina.rl.prioritized import PrioritizedBatch, PrioritizedReplayBuffer, SumTree
from lamina.rl.quantile import (
    QRDQNAgent,
    QRDQNNetwork,
    QuantileAgent,
    quantile_huber_loss,
    quantile_midpoints,
    train_qrdqn,
)
from lamina.rl.r2d2 import (
    R2D2Agent,
    R2D2Network,
    SequenceReplayBuffer,
    SequenceWriter,
    StoredSequence,
    inverse_value_rescale,
    r2d2_loss,
    rescaled_n_step_targets,
    sequence_priorities,
    train_r2d2,
    unroll,
    value_rescale,
)
from lamina.rl.rainbow import (
    NStepBuffer,
    NStepTransition,
    RainbowAgent,
    RainbowNetwork,
    c51_loss,
    categorical_projection,
    dueling_logits,
    nature_torso,
    train_rainbow,
)
from lamina.rl.registry import ENVIRONMENTS, make
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.sac import (
    SAC,
    SquashedGaussianActor,
    sac_actor_loss,
    sac_critic_loss,
    sac_targets,
    sac_temperature_loss,
    squashed_gaussian_log_prob,
    train_sac,
)
from lamina.rl.spaces import Box, Discrete, Space
from lamina.rl.td3 import (
    DDPG,
    TD3,
    DeterministicActor,
    td3_actor_loss,
    td3_critic_loss,
    td3_targets,
    train_ddpg,
    train_td3,
)
from lamina.rl.toy import Chain, CueMemory, GridWorld, SparseChain
from lamina.rl.trpo import TRPOAgent, conjugate_gradient, fisher_vector_product, train_trpo
from lamina.rl.vector import VectorEnv

__all__ = [
    "AlphaZero", "ConnectFour", "Game", "KInARow", "MCTS", "MCTSPlayer", "NetworkEvaluator", "PolicyValueNet",
    "RandomPlayer", "RolloutEvaluator", "TicTacToe", "alphazero_loss", "play_game", "play_match", "train_alphazero",
    "visit_policy",
    "A2C", "DDPG", "SAC", "TD3", "DeterministicActor", "OffPolicyAgent", "QNetwork", "SquashedGaussianActor",
    "a2c_loss", "sac_actor_loss", "sac_critic_loss", "sac_targets", "sac_temperature_loss",
    "squashed_gaussian_log_prob", "td3_actor_loss", "td3_critic_loss", "td3_targets", "train_a2c", "train_ddpg",
    "train_sac", "train_td3",
    "DQN_PRESETS", "ENVIRONMENTS", "PPO", "PRESET_STEPS", "ActorCritic", "Batch", "Box", "CartPole", "Chain",
    "DQNAgent", "Discrete", "Env", "GreedyPolicy", "GridWorld", "MountainCar", "Pendulum", "PrioritizedBatch",
    "PrioritizedReplayBuffer", "ReplayBuffer", "Space", "SumTree", "TimeLimit", "VectorEnv", "Wrapper",
    "angle_normalize", "clipped_surrogate_loss", "compute_gae", "copy_weights", "dqn_loss", "dqn_targets",
    "evaluate_policy", "make", "mlp", "ppo_loss", "soft_update", "train_dqn", "train_ppo", "value_loss",
]
__all__ += ["episode_return", "evolve_policy"]  # neuroevolution
__all__ += ["BehaviorCloning", "ContinuousCQL", "DecisionTransformer", "DiscreteCQL", "GAIL", "IQL",
            "OfflineDataset", "collect_dataset", "concatenate_datasets", "d4rl_style_dataset",
            "evaluate_decision_transformer", "train_decision_transformer"]  # offline
__all__ += ["KLUCB", "UCB1", "BernoulliBandit", "EpsilonGreedy", "GaussianBandit", "LinUCB", "LinearContextualBandit",
            "LinearThompsonSampling", "NeuralLinearBandit", "ThompsonSampling", "run_bandit"]  # bandits
__all__ += ["MADDPG", "QMIX", "VDN", "IndependentQLearning", "ParallelEnv", "QMixer", "TwoStepGame",
            "VDNMixer"]  # multiagent
__all__ += ["RSSM", "CEMPlanner", "MBPOAgent", "MPPIPlanner", "PETSAgent", "ProbabilisticEnsemble",
            "TrajectorySampling", "model_rollouts"]  # model_based
__all__ += ["GFlowNet", "HyperGrid", "SequenceEnv", "train_gflownet"]  # gflownet
__all__ += ["LatentMCTS", "MinMaxStats", "MuZero", "MuZeroNet", "inverse_value_transform", "muzero_loss",
            "muzero_targets", "train_muzero", "value_transform"]  # muzero
__all__ += ["DreamerActor", "DreamerAgent", "DreamerWorldModel", "SequenceReplay", "dreamer_model_loss",
            "lambda_returns", "run_dreamer_episode", "train_dreamer"]  # dreamer
__all__ += ["NStepBuffer", "NStepTransition", "RainbowAgent", "RainbowNetwork", "c51_loss", "categorical_projection",
            "dueling_logits", "nature_torso", "train_rainbow"]  # rainbow
__all__ += ["IMPALAAgent", "VTraceReturns", "impala_loss", "train_impala", "vtrace"]  # impala
__all__ += ["CueMemory", "R2D2Agent", "R2D2Network", "SequenceReplayBuffer", "SequenceWriter", "StoredSequence",
            "inverse_value_rescale", "r2d2_loss", "rescaled_n_step_targets", "sequence_priorities", "train_r2d2",
            "unroll", "value_rescale"]  # r2d2
__all__ += ["DISTORTIONS", "IQNAgent", "IQNNetwork", "QRDQNAgent", "QRDQNNetwork", "QuantileAgent",
            "QuantileEmbedding", "cosine_features", "distort_taus", "quantile_huber_loss", "quantile_midpoints",
            "train_iqn", "train_qrdqn"]  # quantile, iqn
__all__ += ["TRPOAgent", "conjugate_gradient", "fisher_vector_product", "train_trpo"]  # trpo
__all__ += ["BitFlipping", "DictSpace", "GoalEnv", "HERAgent", "HindsightIndices", "HindsightReplayBuffer",
            "PointReach", "goal_conditioned", "success_rate", "train_her"]  # goal_env, her
__all__ += ["CuriosityActorCritic", "CuriosityPPO", "ICMModule", "ICMPPOAgent", "RNDModule", "RNDPPOAgent",
            "RewardNormalizer", "RunningMeanStd", "SparseChain", "icm_losses", "train_curiosity_ppo",
            "train_icm_ppo", "train_rnd_ppo"]  # curiosity, exploration


_MODULES_ON_FIRST_USE = {
    "offline": ("BehaviorCloning", "ContinuousCQL", "DecisionTransformer", "DiscreteCQL", "GAIL", "IQL",
                "OfflineDataset", "collect_dataset", "concatenate_datasets", "d4rl_style_dataset",
                "evaluate_decision_transformer", "train_decision_transformer"),
}
"""Submodules built on the model zoo (the Decision Transformer's GPT-2 blocks, the diffusion
policy's networks): imported when one of their names is first used (through the module
``__getattr__`` below), not by ``import lamina.rl``."""

__getattr__, __dir__ = names_on_first_use("lamina.rl", _MODULES_ON_FIRST_USE, globals())
