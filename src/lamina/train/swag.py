"""SWA-Gaussian (Maddox et al. 2019): a Gaussian over the weights fitted to the iterates of
SGD run at a high constant (or cyclic) learning rate, sampled for Bayesian model averaging.

With theta_i (flattened, i = 1..n) the weights collected so far:

    mean          theta_bar = (1/n) sum_i theta_i                 (SWA's average)
    second moment (1/n) sum_i theta_i^2,   Sigma_diag = that - theta_bar^2
    deviations    D = [d_{n-K+1}, ..., d_n],  d_i = theta_i - theta_bar_i (the mean after theta_i)

keeping the last K <= ``max_rank`` columns. The covariance is Sigma = (Sigma_diag + D D^T /
(K - 1)) / 2 and a sample is

    theta~ = theta_bar + sqrt(scale) (Sigma_diag^{1/2} z_1 + D z_2 / sqrt(K - 1)),
    z_1 ~ N(0, I_P), z_2 ~ N(0, I_K), scale = 1/2 as in the paper

(the low-rank part needs K >= 2). Sampled weights were never trained with, so batch-norm
statistics are recomputed for each sample (:func:`lamina.optim.update_batch_norm`) when data
for it is given.
"""

from __future__ import annotations

import collections
import copy
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import no_grad
from lamina.nn.module import Module
from lamina.optim.averaging import update_batch_norm
from lamina.train.callbacks import Callback
from lamina.train.uncertainty import PredictiveSummary, _check_samples, _outputs, predictive_summary

__all__ = ["SWAG", "CollectSWAG"]


def _flat(model: Module) -> np.ndarray:
    return np.concatenate([np.asarray(p.data, dtype=np.float64).ravel() for p in model.parameters()])


class SWAG:
    """The Gaussian of the module's docstring over ``model``'s parameters, collected by
    :meth:`collect` (or the :class:`CollectSWAG` callback) from the iterates of training."""

    def __init__(self, model: Module, max_rank: int = 20, var_clamp: float = 1e-30):
        if not isinstance(model, Module):
            raise TypeError(f"SWAG: model must be a lamina Module, got {type(model).__name__}")
        if isinstance(max_rank, bool) or not isinstance(max_rank, numbers.Integral) or max_rank < 0:
            raise ValueError(f"SWAG: max_rank must be an integer >= 0 (0: the diagonal only), got {max_rank!r}")
        self.model, self.max_rank, self.var_clamp = model, int(max_rank), float(var_clamp)
        self.n_collected = 0
        self.mean: np.ndarray | None = None
        self.sq_mean: np.ndarray | None = None
        self._deviations: collections.deque = collections.deque(maxlen=max(self.max_rank, 1))

    def collect(self, model: Module | None = None) -> None:
        """Fold the current weights of ``model`` (by default the one given at construction) in."""
        theta = _flat(self.model if model is None else model)
        if self.mean is not None and theta.shape != self.mean.shape:
            raise ValueError(f"SWAG.collect: the model has {theta.size} parameters but {self.mean.size} were "
                             f"collected before")
        if self.mean is None:
            self.mean, self.sq_mean = np.zeros_like(theta), np.zeros_like(theta)
        self.n_collected += 1
        self.mean += (theta - self.mean) / self.n_collected
        self.sq_mean += (theta ** 2 - self.sq_mean) / self.n_collected
        if self.max_rank:
            self._deviations.append(theta - self.mean)

    def _check_collected(self, who: str) -> None:
        if self.mean is None:
            raise RuntimeError(f"SWAG.{who}: no weights collected yet; call collect() during training")

    @property
    def variance(self) -> np.ndarray:
        """Sigma_diag = max(mean of squares - squared mean, var_clamp)."""
        self._check_collected("variance")
        return np.maximum(self.sq_mean - self.mean ** 2, self.var_clamp)

    @property
    def deviations(self) -> np.ndarray:
        """D, of shape (P, K): the last K deviations from the running mean, oldest first."""
        self._check_collected("deviations")
        if not self.max_rank:
            return np.zeros((self.mean.size, 0))
        return np.stack(list(self._deviations), axis=1)

    def sample_vector(self, scale: float = 0.5, rng: np.random.Generator | None = None) -> np.ndarray:
        """theta~ as one flat float64 vector (draws from ``rng``, by default :func:`lamina.backend.rng`)."""
        self._check_collected("sample")
        rng = backend.rng() if rng is None else rng
        noise = np.sqrt(self.variance) * rng.standard_normal(self.mean.size)
        deviations = self.deviations
        rank = deviations.shape[1]
        if rank >= 2:
            noise += deviations @ rng.standard_normal(rank) / np.sqrt(rank - 1)
        return self.mean + np.sqrt(scale) * noise

    def _model_with(self, vector: np.ndarray) -> Module:
        model = copy.deepcopy(self.model)
        start = 0
        for param in model.parameters():
            size = int(np.prod(param.data.shape))
            values = vector[start:start + size].reshape(param.data.shape)
            param.data = backend.xp.asarray(values, dtype=param.data.dtype)
            start += size
        return model

    def averaged_model(self) -> Module:
        """A copy of the model with the SWA mean theta_bar as its weights."""
        self._check_collected("averaged_model")
        return self._model_with(self.mean)

    def sample(self, scale: float = 0.5, bn_data=None, rng: np.random.Generator | None = None) -> Module:
        """A copy of the model with sampled weights theta~; with ``bn_data`` (anything
        :func:`~lamina.optim.update_batch_norm` takes) its batch-norm statistics are recomputed."""
        model = self._model_with(self.sample_vector(scale, rng))
        if bn_data is not None:
            update_batch_norm(model, bn_data)
        return model

    def predict(self, x, samples: int = 30, scale: float = 0.5, bn_data=None, outputs: str = "logits",
                rng: np.random.Generator | None = None) -> PredictiveSummary:
        """Bayesian model averaging: the outputs of ``samples`` sampled models on ``x`` (each in
        evaluation mode), summarised as in :mod:`lamina.train.uncertainty`."""
        samples = _check_samples(samples, "SWAG.predict")
        draws = []
        for _ in range(samples):
            model = self.sample(scale, bn_data, rng).eval()
            with no_grad():
                draws.append(_outputs(model, x))
        return predictive_summary(np.stack(draws), outputs)


class CollectSWAG(Callback):
    """Collect the trainer's model into ``swag`` at each epoch's end (``every="epoch"``) or
    after each optimizer step (``"iteration"``), from epoch ``start_epoch`` (counted from 0)."""

    def __init__(self, swag: SWAG, start_epoch: int = 0, every: str = "epoch"):
        if not isinstance(swag, SWAG):
            raise TypeError(f"CollectSWAG: swag must be a SWAG, got {type(swag).__name__}")
        if every not in ("epoch", "iteration"):
            raise ValueError(f"CollectSWAG: every must be 'epoch' or 'iteration', got {every!r}")
        self.swag, self.start_epoch, self.every = swag, int(start_epoch), every
        self._steps_seen = 0

    def on_train_begin(self, logs: dict) -> None:
        self._steps_seen = self.trainer.steps

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        stepped = self.trainer.steps != self._steps_seen
        self._steps_seen = self.trainer.steps
        if self.every == "iteration" and stepped and self.trainer.epoch >= self.start_epoch:
            self.swag.collect(self.trainer.model)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.every == "epoch" and epoch >= self.start_epoch:
            self.swag.collect(self.trainer.model)
