"""Predictive uncertainty from several predictions per input: Monte Carlo dropout (Gal &
Ghahramani 2016) and deep ensembles (Lakshminarayanan et al. 2017).

Both give T sampled class probabilities p_t(x) (dropout masks, or ensemble members). Their
summary, per input:

    mean          p_bar = (1/T) sum_t p_t
    variance      (1/T) sum_t (p_t - p_bar)^2                           (per class)
    entropy       H[p_bar] = -sum_c p_bar_c log p_bar_c                 (total uncertainty)
    expected      (1/T) sum_t H[p_t]                                    (aleatoric part)
    mutual information  H[p_bar] - (1/T) sum_t H[p_t]                   (epistemic part, BALD)

and for ensembles the disagreement, the fraction of members whose top class differs from that
of p_bar. For regression outputs only the mean and variance of the samples are given.
SWAG and the last-layer Laplace approximation are in :mod:`lamina.train.swag` and
:mod:`lamina.train.laplace`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.nn import AlphaDropout, DropConnect, Dropout, Dropout3D, GaussianDropout, SpatialDropout1D, SpatialDropout2D
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam
from lamina.train.trainer import Trainer

__all__ = ["DROPOUT_LAYERS", "DeepEnsemble", "PredictiveSummary", "mc_dropout_predict", "predictive_summary"]

DROPOUT_LAYERS = (Dropout, DropConnect, GaussianDropout, AlphaDropout, SpatialDropout1D, SpatialDropout2D, Dropout3D)
"""The layers :func:`mc_dropout_predict` keeps in training mode."""

OUTPUTS = ("logits", "probs", "values")


@dataclass
class PredictiveSummary:
    """The statistics of the module's docstring over T samples ``samples`` of shape (T, N, ...).
    For ``outputs="values"`` the entropies, mutual information and disagreement are None."""

    samples: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    entropy: np.ndarray | None = None
    expected_entropy: np.ndarray | None = None
    mutual_information: np.ndarray | None = None
    disagreement: np.ndarray | None = None


def _entropy(probs: np.ndarray) -> np.ndarray:
    """-sum_c p_c log p_c over the last axis (0 log 0 = 0)."""
    return -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=-1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def predictive_summary(samples, outputs: str = "probs") -> PredictiveSummary:
    """The summary of (T, N, ...) sampled outputs: class probabilities (``"probs"``), logits
    (``"logits"``, softmax over the last axis first) or regression ``"values"``."""
    if outputs not in OUTPUTS:
        raise ValueError(f"predictive_summary: outputs must be one of {OUTPUTS}, got {outputs!r}")
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 2 or not samples.shape[0]:
        raise ValueError(f"predictive_summary: expected samples of shape (T, N, ...) with T >= 1, got {samples.shape}")
    if outputs == "logits":
        samples = _softmax(samples)
    mean, variance = samples.mean(axis=0), samples.var(axis=0)
    if outputs == "values":
        return PredictiveSummary(samples, mean, variance)
    entropy, expected = _entropy(mean), _entropy(samples).mean(axis=0)
    disagreement = np.mean(samples.argmax(axis=-1) != mean.argmax(axis=-1)[None], axis=0)
    return PredictiveSummary(samples, mean, variance, entropy, expected, entropy - expected, disagreement)


def model_input(model: Module, x) -> Tensor:
    """``x`` as a tensor; floating arrays take the dtype of the model's weights (so that a
    float64 model sees float64 inputs), others the default one."""
    if isinstance(x, Tensor):
        return x
    values = np.asarray(x)
    weights = next(iter(model.parameters()), None)
    if values.dtype.kind == "f" and weights is not None:
        return Tensor(values, dtype=weights.data.dtype)
    return Tensor(values)


def _outputs(model: Module, x) -> np.ndarray:
    out = model(model_input(model, x))
    return np.asarray(out.numpy(), dtype=np.float64)


def _check_samples(samples, who: str) -> int:
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"{who}: samples must be a positive integer, got {samples!r}")
    return int(samples)


def mc_dropout_predict(model: Module, x, samples: int = 30, outputs: str = "logits",
                       dropout_layers: tuple[type, ...] = DROPOUT_LAYERS) -> PredictiveSummary:
    """T = ``samples`` forward passes of ``model`` on ``x`` with its dropout layers (the types in
    ``dropout_layers``) in training mode, every other module (batch norm above all) in
    evaluation mode, without gradients; each pass draws new masks from
    :func:`lamina.backend.rng` (seed with :func:`lamina.manual_seed`). ``outputs`` says what the
    model gives: ``"logits"``, ``"probs"`` or regression ``"values"``. Modes are restored after.
    """
    who = "mc_dropout_predict"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be a lamina Module, got {type(model).__name__}")
    samples = _check_samples(samples, who)
    if outputs not in OUTPUTS:
        raise ValueError(f"{who}: outputs must be one of {OUTPUTS}, got {outputs!r}")
    dropouts = [module for module in model.modules() if isinstance(module, dropout_layers)]
    with no_grad(), evaluation_mode(model):
        for module in dropouts:
            object.__setattr__(module, "training", True)
        draws = np.stack([_outputs(model, x) for _ in range(samples)])
    return predictive_summary(draws, outputs)


class DeepEnsemble:
    """``n`` models from ``make_model()``, each trained from its own random start by a
    :class:`~lamina.train.Trainer` with ``loss`` and ``make_optimizer(model)`` (seeded
    ``seed + i`` for member i, initial weights and shuffling alike), and their average
    prediction (see the module's docstring). ``members`` holds the models."""

    def __init__(self, make_model: Callable[[], Module], n: int = 5, loss="categorical_cross_entropy",
                 make_optimizer: Callable | None = None, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"DeepEnsemble: n must be a positive integer, got {n!r}")
        if not callable(make_model):
            raise TypeError("DeepEnsemble: make_model must be a function () -> a new lamina Module")
        self.make_model, self.n, self.loss, self.seed = make_model, int(n), loss, int(seed)
        self.make_optimizer = make_optimizer
        self.members: list[Module] = []
        self.histories: list = []

    def fit(self, train, val=None, **fit_kwargs) -> DeepEnsemble:
        """Train every member with ``Trainer.fit(train, val, seed=seed + i, **fit_kwargs)``."""
        self.members, self.histories = [], []
        for i in range(self.n):
            backend.manual_seed(self.seed + i)
            model = self.make_model()
            optimizer = Adam(model) if self.make_optimizer is None else self.make_optimizer(model)
            trainer = Trainer(model, self.loss, optimizer, metrics=(), verbose=0)
            self.histories.append(trainer.fit(train, val, seed=self.seed + i, **fit_kwargs))
            self.members.append(model)
        return self

    def predict(self, x, outputs: str = "logits") -> PredictiveSummary:
        """The members' outputs on ``x`` (in evaluation mode, without gradients), summarised."""
        if not self.members:
            raise RuntimeError("DeepEnsemble.predict: no members yet; call fit first")
        draws = []
        for model in self.members:
            with no_grad(), evaluation_mode(model):
                draws.append(_outputs(model, x))
        return predictive_summary(np.stack(draws), outputs)
