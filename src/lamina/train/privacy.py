"""Differentially private training with :class:`lamina.train.Trainer`.

:func:`make_private` turns a model, an optimizer and the training data into what the Trainer
needs for DP-SGD: a :class:`lamina.optim.DPOptimizer` (per-sample clipping and noise) and a
loader that draws Poisson batches (each sample present with probability q = batch_size / n,
as the privacy analysis assumes). :class:`PrivacyMonitor` records the epsilon spent after
each epoch in the history::

    optimizer, loader = make_private(model, SGD(model, lr=0.5), (x, y), noise_multiplier=1.0,
                                     max_grad_norm=1.0, batch_size=64)
    trainer = Trainer(model, optimizer=optimizer, callbacks=[PrivacyMonitor(delta=1e-5)])
    trainer.fit(loader, epochs=5)
    trainer.history["epsilon"]

The loss must be a mean over the batch (the Trainer's losses are) and ``accumulate`` 1.
"""

from __future__ import annotations

from lamina.data import ArrayDataset, DataLoader, PoissonSampler
from lamina.optim import DPOptimizer, Optimizer
from lamina.train.callbacks import Callback

__all__ = ["PrivacyMonitor", "make_private"]


def make_private(model, optimizer: Optimizer, data, noise_multiplier: float, max_grad_norm: float,
                 batch_size: int, seed: int | None = None) -> tuple[DPOptimizer, DataLoader]:
    """(DP optimizer, Poisson loader) for training ``model`` on ``data`` ((x, y) arrays or a
    dataset) with DP-SGD: sample rate q = ``batch_size`` / n, round(1 / q) batches per epoch,
    per-sample gradients clipped to ``max_grad_norm`` and noise of std ``noise_multiplier`` *
    ``max_grad_norm`` added to their sum, divided by ``batch_size`` (the expected batch size).
    ``model`` is the model the optimizer trains (checked to own its parameters); ``seed`` seeds
    the loader's draws. To pick the noise for a privacy budget, see
    :func:`lamina.optim.privacy.get_noise_multiplier`."""
    dataset = ArrayDataset(*data) if isinstance(data, tuple) else data
    n = len(dataset)
    if not 0 < batch_size <= n:
        raise ValueError(f"make_private: batch_size must lie in [1, {n}] for {n} samples, got {batch_size!r}")
    own = {id(p) for p in model.parameters()}
    if own and any(id(p) not in own for p in optimizer.params):
        raise ValueError("make_private: the optimizer trains parameters that are not the model's")
    sample_rate = batch_size / n
    loader = DataLoader(dataset, sampler=PoissonSampler(sample_rate), seed=seed)
    private = DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                          expected_batch_size=batch_size, sample_rate=sample_rate)
    return private, loader


class PrivacyMonitor(Callback):
    """After each epoch: the epsilon the trainer's :class:`~lamina.optim.DPOptimizer` has spent
    so far for ``delta`` (its RDP accountant), as ``logs["epsilon"]`` and ``history["epsilon"]``."""

    def __init__(self, delta: float = 1e-5):
        if not 0 < delta < 1:
            raise ValueError(f"PrivacyMonitor: delta must lie in (0, 1), got {delta!r}")
        self.delta = delta

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        optimizer = self.trainer.optimizer
        if not isinstance(optimizer, DPOptimizer):
            raise TypeError(f"PrivacyMonitor: the trainer's optimizer must be a DPOptimizer, got "
                            f"{type(optimizer).__name__}")
        logs["epsilon"] = optimizer.epsilon(self.delta)
        self.trainer.history.epoch["epsilon"].append(logs["epsilon"])
