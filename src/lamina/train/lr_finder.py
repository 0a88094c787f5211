"""The learning-rate range test: which learning rate makes the cost fall fastest?

The course notes' general advice is to find, on the full training set, a learning rate
that shows a good decrease in the cost, and notes that its effect shows within a few
iterations. :func:`find_learning_rate` makes that one short run: starting from the model's
current weights it takes ``iterations`` mini-batch steps with the learning rate growing
geometrically from ``start`` to ``end``,

    alpha_k = start (end / start)^(k / (iterations - 1)),   k = 0 .. iterations - 1,

records the cost J_k of every mini-batch, smooths it with the exponentially weighted
average of the course notes (bias corrected, ``beta``), and stops early once the smoothed
cost exceeds ``diverge`` times its lowest value (the learning rate is then far too large).
Plotted against log alpha, the cost is flat while alpha is too small to move the weights,
falls, then blows up. The suggestion is the learning rate where the smoothed cost falls
fastest, the most negative slope dJ/d(log alpha) before the lowest point; the learning rate
at the lowest point divided by 10 is the other common choice (``min_loss_lr / 10``).

Afterwards the model's weights and buffers, the optimizer's state and learning rate and the
random generators are put back exactly as they were: the test has no side effect.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina import backend
from lamina.autograd import no_grad, tensor
from lamina.data import ArrayDataset, DataLoader
from lamina.io.atomic import save_figure
from lamina.nn.module import evaluation_mode
from lamina.optim import ExponentialMovingAverage

__all__ = ["LRFinderResult", "find_learning_rate"]


@dataclass
class LRFinderResult:
    """What :func:`find_learning_rate` measured: per step k the learning rate, the mini-batch
    cost and its smoothed value; ``diverged`` when it stopped early."""

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    diverged: bool

    @property
    def min_loss_lr(self) -> float:
        """The learning rate at the lowest smoothed cost."""
        return float(self.learning_rates[int(np.nanargmin(self.smoothed))])

    @property
    def suggestion(self) -> float:
        """The learning rate where the smoothed cost falls fastest per unit of log alpha,
        looked for up to the lowest smoothed cost (the last part only blows up)."""
        lowest = int(np.nanargmin(self.smoothed))
        if lowest < 2:
            return float(self.learning_rates[lowest])
        log_lr = np.log(self.learning_rates[:lowest + 1])
        slope = np.gradient(self.smoothed[:lowest + 1], log_lr)
        return float(self.learning_rates[int(np.argmin(slope))])

    def plot(self, path: str | os.PathLike) -> Path:
        """Save the cost against the learning rate (log scale) as a PNG, the suggestion
        marked; written atomically. Returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt


        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.learning_rates, self.losses, color="0.75", linewidth=0.8, label="mini-batch cost")
        ax.plot(self.learning_rates, self.smoothed, color="C0", label="moving average")
        ax.axvline(self.suggestion, color="C1", linestyle="--", label=f"steepest descent: {self.suggestion:.2g}")
        ax.set_xscale("log")
        finite = self.smoothed[np.isfinite(self.smoothed)]
        if finite.size:
            low, high = float(finite.min()), float(finite[0])
            ax.set_ylim(low - 0.1 * abs(high - low) - 1e-12, max(high, low) + 0.5 * abs(high - low) + 1e-12)
        ax.set(xlabel="learning rate (log scale)", ylabel="cost J", title="learning-rate range test")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)

    def __repr__(self) -> str:
        return (f"LRFinderResult({len(self.learning_rates)} steps from {self.learning_rates[0]:.2g} to "
                f"{self.learning_rates[-1]:.2g}, suggestion={self.suggestion:.3g}, min_loss_lr={self.min_loss_lr:.3g}"
                f"{', diverged' if self.diverged else ''})")


def _check(start, end, iterations, beta, diverge) -> None:
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"find_learning_rate: {name} must be a positive learning rate, got {value!r}")
    if not start < end:
        raise ValueError(f"find_learning_rate: start must be below end, got start={start!r}, end={end!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 2:
        raise ValueError(f"find_learning_rate: iterations must be an integer >= 2, got {iterations!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ValueError(f"find_learning_rate: beta must lie in [0, 1), got {beta!r}")
    if diverge is not None and (isinstance(diverge, bool) or not isinstance(diverge, (int, float)) or not diverge > 1):
        raise ValueError(f"find_learning_rate: diverge must be a number > 1 or None, got {diverge!r}")


def _batches(train, batch_size: int, seed):
    """Mini-batches of ``train`` ((x, y), a Dataset or a DataLoader), epoch after epoch."""
    if isinstance(train, tuple):
        train = ArrayDataset(*train)
    loader = train if isinstance(train, DataLoader) else DataLoader(train, batch_size=batch_size, shuffle=True,
                                                                    seed=seed)
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("find_learning_rate: the training data has no mini-batches")


def find_learning_rate(trainer, train, start: float = 1e-7, end: float = 10.0, iterations: int = 100,
                       batch_size: int = 32, beta: float = 0.98, diverge: float | None = 4.0,
                       seed: int | None = None) -> LRFinderResult:
    """Run the learning-rate range test with ``trainer``'s model, cost, optimizer and
    clipping on ``train`` ((x, y), a Dataset or a DataLoader, cycled as needed; ``seed``
    shuffles it): ``iterations`` steps, alpha growing geometrically from ``start`` to
    ``end``, stopping once the smoothed cost passes ``diverge`` times its lowest (None: never)
    or is not finite. Each step is one mini-batch (the trainer's ``accumulate`` and
    schedule are not used). The model, optimizer and random generators are restored
    afterwards. Returns an :class:`LRFinderResult`; ``.suggestion`` is the learning rate
    to try, ``.plot(path)`` draws the curve."""
    _check(start, end, iterations, beta, diverge)
    model, optimizer = trainer.model, trainer.optimizer
    saved_rng = backend.get_rng_state()
    batches = _batches(train, batch_size, seed)
    first = next(batches)
    if not getattr(model, "built", True):          # weights exist only after a first call
        with evaluation_mode(model), no_grad():
            model(tensor(first[0][:1]))
    saved_model = {k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()}
    saved_optimizer, saved_lr = optimizer.state_dict(), optimizer.lr
    saved_schedule, was_training = trainer.schedule, model.training
    rates = start * (end / start) ** (np.arange(iterations) / (iterations - 1))
    losses: list[float] = []
    smoothed: list[float] = []
    average = ExponentialMovingAverage(beta)
    diverged = False
    trainer.schedule = None
    model.train()
    try:
        for k, lr in enumerate(rates):
            x, y = first if k == 0 else next(batches)
            optimizer.lr = float(lr)
            loss, _ = trainer.train_step(x, y)
            losses.append(loss)
            smoothed.append(float(average.update(loss)) if math.isfinite(loss) else math.inf)
            if not math.isfinite(smoothed[-1]) or (diverge is not None and smoothed[-1] > diverge * min(smoothed)):
                diverged = True
                break
    finally:
        trainer.schedule = saved_schedule
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        optimizer.lr = saved_lr
        backend.set_rng_state(saved_rng)
        model.train(was_training)
    steps = len(losses)
    return LRFinderResult(rates[:steps], np.asarray(losses), np.asarray(smoothed), diverged)
