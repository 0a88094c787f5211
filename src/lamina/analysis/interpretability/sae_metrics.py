"""How good a sparse autoencoder is (Bricken et al., 2023; Gao et al., 2024):

* L0: the mean number of features that fire per sample, mean_n #{i : f_i > 0};
* explained variance: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2;
* fraction of loss recovered: with the model's next-token loss L_clean, L_sae when the
  activation at one module is replaced by the autoencoder's reconstruction, and L_zero when it
  is replaced by zeros,

      recovered = (L_zero - L_sae) / (L_zero - L_clean)

  1: splicing the autoencoder in costs nothing; 0: no better than deleting the activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.analysis.interpretability.activation_cache import resolve_modules, run_with_hooks
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["SpliceScores", "explained_variance", "feature_l0", "loss_recovered", "next_token_loss"]


def _array(value) -> np.ndarray:
    return np.asarray(backend.to_numpy(value.data if isinstance(value, Tensor) else value), dtype=np.float64)


def feature_l0(features) -> float:
    """The mean number of nonzero features per sample (features (..., d_sae))."""
    f = _array(features)
    return float((f != 0).sum(axis=-1).mean())


def explained_variance(x, reconstruction) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the mean taken over samples (all axes but the last)."""
    x, x_hat = _array(x), _array(reconstruction)
    if x.shape != x_hat.shape:
        raise ShapeError(f"explained_variance: activations of shape {x.shape}, reconstruction of shape {x_hat.shape}")
    rows = x.reshape(-1, x.shape[-1])
    residual = ((rows - x_hat.reshape(rows.shape)) ** 2).sum()
    total = ((rows - rows.mean(axis=0)) ** 2).sum()
    return float(1.0 - residual / total)


def next_token_loss(logits, tokens) -> Tensor:
    """The mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
    tokens = np.asarray(tokens)
    return F.categorical_cross_entropy(logits[:, :-1], tokens[:, 1:], from_logits=True)


@dataclass(frozen=True)
class SpliceScores:
    """The model's loss clean, with the autoencoder spliced in, and with the activation zeroed,
    and the fraction of the loss recovered (see the module docstring)."""

    clean_loss: float
    spliced_loss: float
    zero_ablation_loss: float
    fraction_recovered: float


def loss_recovered(model: Module, tokens, name: str, autoencoder: Callable, loss=next_token_loss,
                   **kwargs) -> SpliceScores:
    """Splice ``autoencoder`` (a callable activations -> reconstruction, such as a
    :class:`~lamina.models.SparseAutoencoder`) into ``model`` at the output of sub-module ``name``
    and score it on ``tokens`` with ``loss(logits, tokens)`` (next-token cross-entropy by default)."""
    resolve_modules(model, [name], "loss_recovered")

    def splice(activation, _):
        return autoencoder(activation)

    def zero(activation, _):
        return backend.xp.zeros(activation.shape, dtype=activation.dtype)

    values = []
    with no_grad():
        for hooks in ([], [(name, splice)], [(name, zero)]):
            values.append(float(_array(loss(run_with_hooks(model, tokens, hooks, **kwargs), tokens))))
    clean, spliced, zeroed = values
    if zeroed == clean:
        raise ValueError(f"loss_recovered: zeroing {name!r} leaves the loss at {clean}; the fraction is undefined")
    return SpliceScores(clean, spliced, zeroed, (zeroed - spliced) / (zeroed - clean))
