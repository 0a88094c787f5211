"""Multi-armed and contextual bandits: Bernoulli, Gaussian and linear contextual bandit
environments, the context-free policies epsilon-greedy, UCB1, KL-UCB, Thompson sampling
(Beta-Bernoulli and Gaussian) and Boltzmann exploration, the contextual policies LinUCB, linear
Thompson sampling and the neural-linear bandit, and :func:`run_bandit` measuring pseudo-regret."""

from lamina.rl.bandits.contextual import (
    LinearArms,
    LinearThompsonSampling,
    LinUCB,
    NeuralLinearBandit,
    check_context,
    sherman_morrison,
)
from lamina.rl.bandits.environments import BanditEnv, BernoulliBandit, GaussianBandit, LinearContextualBandit
from lamina.rl.bandits.policies import (
    KLUCB,
    UCB1,
    BanditPolicy,
    Boltzmann,
    EpsilonGreedy,
    GaussianThompsonSampling,
    Softmax,
    ThompsonSampling,
    UniformRandom,
    argmax_random_tie,
    bernoulli_kl,
)
from lamina.rl.bandits.runner import BanditRun, run_bandit

__all__ = [
    "KLUCB", "UCB1", "BanditEnv", "BanditPolicy", "BanditRun", "BernoulliBandit", "Boltzmann", "EpsilonGreedy",
    "GaussianBandit", "GaussianThompsonSampling", "LinUCB", "LinearArms", "LinearContextualBandit",
    "LinearThompsonSampling", "NeuralLinearBandit", "Softmax", "ThompsonSampling", "UniformRandom",
    "argmax_random_tie", "bernoulli_kl", "check_context", "run_bandit", "sherman_morrison",
]
