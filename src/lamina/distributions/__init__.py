"""Probability distributions with the interface of ``torch.distributions``: sampling
(reparameterized where it can be), log-probabilities, entropies, moments, CDFs, and
closed-form KL divergences, each a tensor on the graph of the parameters."""

from lamina.distributions import constraints
from lamina.distributions.composite import Independent, MixtureSameFamily
from lamina.distributions.continuous import Exponential, Laplace, Uniform
from lamina.distributions.discrete import Bernoulli, Categorical, OneHotCategorical, Poisson
from lamina.distributions.distribution import Distribution, set_default_validate_args
from lamina.distributions.gamma import Beta, Gamma
from lamina.distributions.kl import kl_divergence, register_kl
from lamina.distributions.multivariate import MultivariateNormal
from lamina.distributions.normal import LogNormal, Normal
from lamina.distributions.relaxed import RelaxedOneHotCategorical

__all__ = [
    "Bernoulli", "Beta", "Categorical", "Distribution", "Exponential", "Gamma", "Independent", "Laplace",
    "LogNormal", "MixtureSameFamily", "MultivariateNormal", "Normal", "OneHotCategorical", "Poisson",
    "RelaxedOneHotCategorical", "Uniform", "constraints", "kl_divergence", "register_kl", "set_default_validate_args",
]
