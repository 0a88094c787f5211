"""Training and prediction helpers for SNGP models (:mod:`lamina.nn.sngp`).

:class:`ResetCovariance` sets the precision matrix of every
:class:`~lamina.nn.RandomFeatureGaussianProcess` of the trainer's model back to ridge I at the
start of each epoch, so that after ``fit`` it sums the last epoch's data (the exact form of the
Laplace approximation). :func:`sngp_predict` gives an input's logits, predictive variance and
mean-field class probabilities

    p = softmax(logits / sqrt(1 + lambda var)),   lambda = pi / 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.autograd import no_grad
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.sngp import MEAN_FIELD_FACTOR, RandomFeatureGaussianProcess, mean_field_logits
from lamina.train.callbacks import Callback
from lamina.train.uncertainty import model_input

__all__ = ["ResetCovariance", "SNGPPrediction", "sngp_predict"]


def _gp_layers(model: Module, who: str) -> list[RandomFeatureGaussianProcess]:
    layers = [m for m in model.modules() if isinstance(m, RandomFeatureGaussianProcess)]
    if not layers:
        raise TypeError(f"{who}: {model._label()} has no RandomFeatureGaussianProcess layer")
    return layers


class ResetCovariance(Callback):
    """Reset the precision matrices of the model's Gaussian-process layers at each epoch's start."""

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        for layer in _gp_layers(self.trainer.model, "ResetCovariance"):
            layer.reset_covariance()


@dataclass
class SNGPPrediction:
    """What :func:`sngp_predict` returns, NumPy arrays: ``logits`` (N, K), ``variance`` (N,) or
    (N, K), the mean-field ``probs`` (N, K), their ``confidence`` (the largest probability) and
    ``entropy``."""

    logits: np.ndarray
    variance: np.ndarray
    probs: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray


def sngp_predict(model: Module, x, mean_field_factor: float = MEAN_FIELD_FACTOR) -> SNGPPrediction:
    """Run ``model`` (called as ``model(x, return_variance=True)``, like
    :class:`~lamina.nn.SNGPResMLP`) on ``x`` in evaluation mode without gradients; the precision
    matrix is left as it is and the model's modes are restored after."""
    if not isinstance(model, Module):
        raise TypeError(f"sngp_predict: model must be a lamina Module, got {type(model).__name__}")
    _gp_layers(model, "sngp_predict")
    with no_grad(), evaluation_mode(model):
        logits, variance = model(model_input(model, x), return_variance=True)
        adjusted = mean_field_logits(logits, variance, mean_field_factor).numpy().astype(np.float64)
    shifted = np.exp(adjusted - adjusted.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    entropy = -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=-1)
    return SNGPPrediction(logits.numpy(), variance.numpy(), probs, probs.max(axis=-1), entropy)
