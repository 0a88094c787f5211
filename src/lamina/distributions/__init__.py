"""Probability distributions with the interface of ``torch.distributions``: sampling
(reparameterized where it can be), log-probabilities, entropies, moments, CDFs, and
closed-form KL divergences, each a tensor on the graph of the parameters; transforms and
transformed distributions (change of variables); ``expand`` and ``enumerate_support``."""

from lamina.distributions import constraints, kl_mixed, kl_pairs  # noqa: F401  (they register their formulas)
from lamina.distributions.composite import Independent, MixtureSameFamily
from lamina.distributions.continuous import Exponential, Laplace, Uniform
from lamina.distributions.continuous_bernoulli import ContinuousBernoulli
from lamina.distributions.counts import Binomial, Geometric, Multinomial, NegativeBinomial
from lamina.distributions.dirichlet import Dirichlet
from lamina.distributions.discrete import Bernoulli, Categorical, OneHotCategorical, Poisson
from lamina.distributions.distribution import Distribution, set_default_validate_args
from lamina.distributions.gamma import Beta, Gamma
from lamina.distributions.kl import kl_divergence, register_kl
from lamina.distributions.lifetime import Chi2, Pareto, Weibull
from lamina.distributions.location_scale import Cauchy, Gumbel, HalfCauchy, HalfNormal, StudentT
from lamina.distributions.low_rank import LowRankMultivariateNormal
from lamina.distributions.multivariate import MultivariateNormal
from lamina.distributions.normal import LogNormal, Normal
from lamina.distributions.relaxed import LogitRelaxedBernoulli, RelaxedBernoulli, RelaxedOneHotCategorical
from lamina.distributions.transformed import TransformedDistribution
from lamina.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    PowerTransform,
    SigmoidTransform,
    SoftplusTransform,
    TanhTransform,
    Transform,
)
from lamina.distributions.von_mises import VonMises

__all__ = [
    "AffineTransform", "Bernoulli", "Beta", "Binomial", "Categorical", "Cauchy", "Chi2", "ComposeTransform",
    "ContinuousBernoulli",
    "Dirichlet", "Distribution", "ExpTransform", "Exponential", "Gamma", "Geometric", "Gumbel", "HalfCauchy",
    "HalfNormal", "Independent", "Laplace", "LogNormal", "LogitRelaxedBernoulli", "LowRankMultivariateNormal",
    "MixtureSameFamily", "Multinomial", "MultivariateNormal", "NegativeBinomial", "Normal", "OneHotCategorical",
    "Pareto", "Poisson", "PowerTransform", "RelaxedBernoulli", "RelaxedOneHotCategorical", "SigmoidTransform",
    "SoftplusTransform", "StudentT", "TanhTransform", "Transform", "TransformedDistribution", "Uniform", "VonMises",
    "Weibull", "constraints", "kl_divergence", "register_kl", "set_default_validate_args",
]
