r"""Test-time adaptation of a trained classifier to a shifted, unlabelled test distribution.

* Batch-norm statistics adaptation (Schneider et al. 2020): every BatchNorm layer's source
  statistics (mu_s, var_s) are replaced by the moments (mu_t, var_t) of its input on a batch
  of n target samples, or mixed with a prior strength N:

      mu = (N mu_s + n mu_t) / (N + n),   var = (N var_s + n var_t) / (N + n).

  var_t is the biased batch variance, so with N = 0 evaluation mode gives what batch mode
  gives on that batch.
* Tent (Wang et al. 2021): on each test batch, batch norm uses the batch statistics and
  only its affine parameters (gamma, beta) take gradient steps on the mean prediction entropy

      H = -(1/n) sum_i sum_c p_ic log p_ic,   p_i = softmax(f(x_i)).

  ``entropy_threshold`` keeps only samples with H_i below it (EATA-style filtering of
  unreliable samples, e.g. 0.4 ln C); ``episodic=True`` restores the parameters before each
  batch.
* MEMO (Zhang et al. 2022), here for one test point at a time: the model's parameters take
  ``steps`` SGD steps on the marginal entropy H(p_bar) of the mean prediction over B
  augmented copies, p_bar = (1/B) sum_b softmax(f(a_b(x))); the adapted model predicts x,
  then the parameters return to their values before.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.activation import log_softmax, softmax
from lamina.functional.elementwise import log
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as reduce_sum
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm
from lamina.optim import SGD

__all__ = ["Tent", "adapt_batchnorm", "batchnorm_layers", "marginal_entropy", "memo_predict", "prediction_entropy"]


def batchnorm_layers(model: Module, caller: str) -> list[BatchNorm]:
    """Every BatchNorm below ``model``; raises naming ``caller`` when there is none."""
    layers = [m for m in model.modules() if isinstance(m, BatchNorm)]
    if not layers:
        raise ValueError(f"{caller}: the model {type(model).__name__} has no BatchNorm layer; test-time "
                         "adaptation of normalization statistics needs batch normalization")
    for layer in layers:
        layer.require_running_statistics(caller)
    return layers


def adapt_batchnorm(model: Module, x_target, prior: float = 0.0) -> Module:
    """Set every BatchNorm's running statistics from one forward pass over ``x_target``:
    (N mu_s + n mu_t) / (N + n) and likewise for the variance, N = ``prior`` (0 replaces the
    source statistics), n = len(x_target). Leaves the model in evaluation mode; returns it."""
    if prior < 0:
        raise ValueError(f"adapt_batchnorm: prior strength N must be >= 0, got {prior!r}")
    layers = batchnorm_layers(model, "adapt_batchnorm")
    x_target = as_tensor(x_target)
    n = x_target.shape[0]

    def set_statistics(layer, inputs):
        values = inputs[0].data
        c = values.shape[-1]
        rows = values.reshape(-1, c).astype(np.float64)
        mu_t, var_t = rows.mean(axis=0), rows.var(axis=0)
        dtype = layer.running_mean.dtype
        layer.running_mean = ((prior * layer.running_mean + n * mu_t) / (prior + n)).astype(dtype)
        layer.running_var = ((prior * layer.running_var + n * var_t) / (prior + n)).astype(dtype)

    model.eval()
    handles = [layer.register_forward_pre_hook(set_statistics) for layer in layers]
    try:
        with no_grad():
            model(x_target)
    finally:
        for handle in handles:
            handle.remove()
    return model


def prediction_entropy(logits) -> Tensor:
    """H_i = -sum_c p_ic log p_ic per row of ``logits`` (N, classes)."""
    logits = as_tensor(logits)
    return -reduce_sum(softmax(logits, axis=-1) * log_softmax(logits, axis=-1), axis=-1)


class Tent:
    """Adapt ``model`` on each test batch given to :meth:`__call__`, then predict it.

    ``steps`` SGD steps (``lr``, ``momentum``) on the mean prediction entropy update only the
    BatchNorm affine parameters; every other parameter and the running statistics stay as
    they were. ``episodic=True`` resets the affine parameters (and optimizer) before each
    batch; ``entropy_threshold`` drops samples whose entropy is at least that from the loss."""

    def __init__(self, model: Module, lr: float = 1e-3, momentum: float = 0.9, steps: int = 1,
                 episodic: bool = False, entropy_threshold: float | None = None):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Tent: steps must be a positive integer, got {steps!r}")
        self.model = model
        self.layers = batchnorm_layers(model, "Tent")
        affine = [p for layer in self.layers if layer.affine for p in (layer.weight, layer.bias)]
        if not affine:
            raise ValueError("Tent: the model's BatchNorm layers have no affine parameters (affine=False); "
                             "there is nothing to adapt")
        self.params = affine
        self.lr, self.momentum, self.steps = lr, momentum, steps
        self.episodic = episodic
        self.entropy_threshold = entropy_threshold
        self._initial = [p.data.copy() for p in affine]
        self.optimizer = SGD(affine, lr=lr, momentum=momentum)
        self.losses: list[float] = []

    def reset(self) -> None:
        """The affine parameters back to their values at construction, a fresh optimizer."""
        for p, value in zip(self.params, self._initial):
            p.data = value.copy()
        self.optimizer = SGD(self.params, lr=self.lr, momentum=self.momentum)

    def _forward_batch_statistics(self, x: Tensor) -> Tensor:
        """The model's logits with BatchNorm in batch mode, running statistics untouched."""
        saved = [(layer.running_mean.copy(), layer.running_var.copy()) for layer in self.layers]
        self.model.eval()
        for layer in self.layers:
            object.__setattr__(layer, "training", True)
        try:
            return self.model(x)
        finally:
            for layer, (mu, var) in zip(self.layers, saved):
                layer.running_mean, layer.running_var = mu, var

    def adapt(self, x) -> float:
        """One step on batch ``x``; returns the entropy loss before the step."""
        logits = self._forward_batch_statistics(x)
        entropy = prediction_entropy(logits)
        if self.entropy_threshold is not None:
            keep = backend.xp.asarray(entropy.data < self.entropy_threshold)
            if not keep.any():
                return float(mean(entropy).item())
            loss = reduce_sum(entropy * Tensor(keep, dtype=entropy.dtype)) * (1.0 / float(keep.sum()))
        else:
            loss = mean(entropy)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def __call__(self, x) -> Tensor:
        """Adapt on ``x`` (``steps`` steps), then return its logits (batch statistics)."""
        x = as_tensor(x)
        if self.episodic:
            self.reset()
        frozen = [p for p in self.model.parameters() if p.trainable and not any(p is q for q in self.params)]
        for p in frozen:
            p.freeze()
        try:
            for _ in range(self.steps):
                self.losses.append(self.adapt(x))
            with no_grad():
                return self._forward_batch_statistics(x)
        finally:
            for p in frozen:
                p.unfreeze()


def marginal_entropy(logits) -> Tensor:
    """H(p_bar) = -sum_c p_bar_c log p_bar_c, p_bar the mean of softmax over the rows of ``logits``."""
    p_bar = mean(softmax(as_tensor(logits), axis=-1), axis=0)
    return -reduce_sum(p_bar * log(p_bar + 1e-12))


def memo_predict(model: Module, x, augment, copies: int = 8, steps: int = 1, lr: float = 1e-3,
                 seed: int = 0) -> tuple[Tensor, list[float]]:
    """MEMO for one test point ``x`` (shape (1, ...)): ``steps`` SGD steps on the marginal
    entropy over ``copies`` draws of ``augment(x, rng)`` (an array function), then the
    adapted model's logits of x. The parameters are restored afterwards. Returns
    (logits, marginal entropy before each step)."""
    x = np.asarray(x.data if isinstance(x, Tensor) else x)
    if x.shape[0] != 1:
        raise ValueError(f"memo_predict: adapts to one test point at a time; expected x of shape (1, ...), "
                         f"got {x.shape}")
    params = model.parameters(trainable_only=True)
    saved = [p.data.copy() for p in params]
    optimizer = SGD(params, lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    try:
        for _ in range(steps):
            batch = np.concatenate([augment(x, rng) for _ in range(copies)]).astype(x.dtype, copy=False)
            loss = marginal_entropy(model(Tensor(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(float(loss.item()))
        with no_grad():
            return model(Tensor(x)), history
    finally:
        for p, value in zip(params, saved):
            p.data = value
