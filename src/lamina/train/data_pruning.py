"""Data-centric training: which examples matter, and in which order to learn them.

- EL2N (Paul et al. 2021, "Deep Learning on a Data Diet"): the error norm
  EL2N(x, y) = E_models || softmax(f(x)) - onehot(y) ||_2, averaged over a few models (or
  checkpoints) trained for only a few epochs; high scores mark hard or mislabelled examples.
- GraNd (same paper): GraNd(x, y) = || grad_w L(f(x), y) ||_2, the norm of the sample's own
  loss gradient over all trainable parameters (from :class:`lamina.nn.PerSampleGradients`),
  averaged over models.
- Forgetting events (Toneva et al. 2019): an example is forgotten when it goes from correctly
  to wrongly classified between two consecutive looks; unforgettable examples are learned and
  never forgotten; never-learned ones are never classified correctly.
- :func:`prune_dataset` keeps a fraction of the examples by score (hardest, easiest or random).
- Self-paced learning: per-example weights from the losses and an age parameter lambda that
  grows during training, so easy (low-loss) examples are learned first (Kumar et al. 2010,
  hard weights; Jiang et al. 2014, linear and mixture weights).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional.activation import softmax
from lamina.functional.torch_losses import cross_entropy
from lamina.nn.module import Module
from lamina.nn.per_sample import PerSampleGradients
from lamina.train.callbacks import Callback

__all__ = ["ForgettingTracker", "SelfPacedSchedule", "el2n_from_probabilities", "el2n_scores", "grand_scores",
           "prune_dataset", "self_paced_weights"]

KEEP_MODES = ("hardest", "easiest", "random")
SELF_PACED_MODES = ("hard", "linear", "mixture")


def _models(models_or_model) -> list:
    models = list(models_or_model) if isinstance(models_or_model, (list, tuple)) else [models_or_model]
    if not models:
        raise ValueError("el2n_scores/grand_scores: got an empty list of models")
    return models


def _labels(y, n: int, fn: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be {n} integer class indices, got shape {y.shape} dtype {y.dtype}")
    return y.astype(np.int64)


def el2n_from_probabilities(probabilities, y) -> np.ndarray:
    """EL2N from predicted probabilities (N, C), or (M, N, C) for M models averaged:
    mean over models of || p_i - onehot(y_i) ||_2, one float64 score per example."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p[None] if p.ndim == 2 else p
    if p.ndim != 3:
        raise ValueError(f"el2n_from_probabilities: probabilities must be (N, C) or (M, N, C), got {p.shape}")
    y = _labels(y, p.shape[1], "el2n_from_probabilities")
    if y.size and (y.min() < 0 or y.max() >= p.shape[2]):
        raise ValueError(f"el2n_from_probabilities: labels must lie in [0, {p.shape[2]}), "
                         f"got range [{y.min()}, {y.max()}]")
    error = p.copy()
    error[:, np.arange(len(y)), y] -= 1.0
    return np.linalg.norm(error, axis=2).mean(axis=0)


def _inputs(model: Callable, x) -> Tensor:
    """x as a tensor of the model's parameter dtype (a float64 model gets float64 inputs)."""
    x = np.asarray(x)
    params = list(model.parameters()) if isinstance(model, Module) else []
    if params and x.dtype.kind == "f":
        return tensor(x, dtype=params[0].data.dtype)
    return Tensor(x)


def _probabilities(model: Callable, x, batch_size: int) -> np.ndarray:
    if isinstance(model, Module):
        model.eval()
    parts = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(_inputs(model, x[start:start + batch_size]))
            parts.append(backend.to_numpy(softmax(logits, -1).data))
    return np.concatenate(parts).astype(np.float64)


def el2n_scores(models_or_model, x, y, batch_size: int = 512) -> np.ndarray:
    """EL2N score of each example (N,): || softmax(f(x_i)) - onehot(y_i) ||_2 averaged over
    the given model(s), which map inputs to logits (Paul et al. use a few models trained for
    a few epochs from different seeds)."""
    probabilities = [_probabilities(model, x, batch_size) for model in _models(models_or_model)]
    return el2n_from_probabilities(np.stack(probabilities), y)


def grand_scores(models_or_model, loss_fn: Callable | None, x, y, batch_size: int = 256) -> np.ndarray:
    """GraNd score of each example (N,): || grad_w L(f(x_i), y_i) ||_2 over all trainable
    parameters, averaged over the given model(s). ``loss_fn(logits, y)`` returns the batch's
    MEAN loss (default the cross-entropy); each gradient is that of the example's own loss.
    Every layer must treat samples independently (no BatchNorm in training mode)."""
    loss_fn = cross_entropy if loss_fn is None else loss_fn
    x = np.asarray(x)
    y = np.asarray(y)
    total = np.zeros(len(x))
    models = _models(models_or_model)
    for model in models:
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            with PerSampleGradients(model, loss_reduction="mean") as tracker:
                loss_fn(model(_inputs(model, x[rows])), y[rows]).backward()
            squared = sum((backend.to_numpy(g).astype(np.float64).reshape(len(g), -1) ** 2).sum(axis=1)
                          for g in tracker.gradients().values())
            total[rows] += np.sqrt(squared)
        model.zero_grad()
    return total / len(models)


class ForgettingTracker(Callback):
    """Counts forgetting events per example (Toneva et al. 2019).

    Feed it each look's per-example correctness with :meth:`update` (a boolean (N,) array),
    or use it as a :class:`~lamina.train.Trainer` callback with ``x`` and ``y``: at the end of
    each epoch the trainer's model classifies (x, y) and the result is fed in. A forgetting
    event is a correct -> incorrect transition between consecutive looks; an example is
    learned once it has been correct at least once.
    """

    def __init__(self, x=None, y=None, batch_size: int = 512):
        if (x is None) != (y is None):
            raise ValueError("ForgettingTracker: give both x and y (to track during fit) or neither")
        self.x, self.y, self.batch_size = x, None if y is None else np.asarray(y), batch_size
        self.forgetting_counts: np.ndarray | None = None
        self.learned: np.ndarray | None = None
        self.previous: np.ndarray | None = None
        self.looks = 0

    def update(self, correct) -> None:
        """Record one look: ``correct[i]`` says whether example i is classified correctly now."""
        correct = np.asarray(correct, dtype=bool)
        if self.previous is None:
            if correct.ndim != 1:
                raise ValueError(f"ForgettingTracker.update: correctness must be 1-D (N,), got {correct.shape}")
            self.forgetting_counts = np.zeros(len(correct), dtype=np.int64)
            self.learned = np.zeros(len(correct), dtype=bool)
        elif correct.shape != self.previous.shape:
            raise ValueError(f"ForgettingTracker.update: expected correctness of shape {self.previous.shape}, "
                             f"got {correct.shape}")
        else:
            self.forgetting_counts += self.previous & ~correct
        self.learned |= correct
        self.previous = correct
        self.looks += 1

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.x is None:
            return
        predicted = _probabilities(self.trainer.model, self.x, self.batch_size).argmax(axis=1)
        self.trainer.model.train()
        self.update(predicted == self.y)

    def _checked(self) -> np.ndarray:
        if self.forgetting_counts is None:
            raise RuntimeError("ForgettingTracker: no correctness recorded yet (call update or fit first)")
        return self.forgetting_counts

    @property
    def unforgettable(self) -> np.ndarray:
        """Boolean (N,): learned and never forgotten."""
        return self.learned & (self._checked() == 0)

    @property
    def never_learned(self) -> np.ndarray:
        """Boolean (N,): never classified correctly."""
        self._checked()
        return ~self.learned

    def scores(self) -> np.ndarray:
        """Forgetting counts as floats, +inf for never-learned examples (Toneva et al. rank
        them as the most forgotten); higher = harder, ready for :func:`prune_dataset`."""
        return np.where(self.learned, self._checked().astype(np.float64), np.inf)


def prune_dataset(scores, fraction: float, keep: str = "hardest", seed: int = 0) -> np.ndarray:
    """Indices (sorted ascending) of the round(fraction * N) examples kept: those with the
    highest scores (``'hardest'``), the lowest (``'easiest'``), or a random subset
    (``'random'``, drawn with ``seed``). Ties are broken by index (stable sort)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"prune_dataset: scores must be 1-D (N,), got shape {scores.shape}")
    if not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"prune_dataset: fraction (kept) must lie in [0, 1], got {fraction!r}")
    if keep not in KEEP_MODES:
        raise ValueError(f"prune_dataset: keep must be one of {KEEP_MODES}, got {keep!r}")
    count = int(round(fraction * len(scores)))
    if keep == "random":
        chosen = np.random.default_rng(seed).permutation(len(scores))[:count]
    elif keep == "easiest":
        chosen = np.argsort(scores, kind="stable")[:count]
    else:
        chosen = np.argsort(-scores, kind="stable")[:count]
    return np.sort(chosen)


def self_paced_weights(losses, threshold: float, mode: str = "hard", lower: float | None = None) -> np.ndarray:
    """Self-paced weights v_i in [0, 1] from the losses l_i and the age lambda = ``threshold``:

    - ``'hard'`` (Kumar et al. 2010):   v_i = 1[l_i < lambda];
    - ``'linear'`` (Jiang et al. 2014): v_i = max(0, 1 - l_i / lambda);
    - ``'mixture'`` (Jiang et al. 2014), with lambda_2 = ``lower`` < lambda (default lambda / 2)
      and zeta = lambda lambda_2 / (lambda - lambda_2): v_i = 1 if l_i <= lambda_2, 0 if
      l_i >= lambda, else zeta (1 / l_i - 1 / lambda).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if not threshold > 0:
        raise ValueError(f"self_paced_weights: threshold (lambda) must be > 0, got {threshold!r}")
    if mode not in SELF_PACED_MODES:
        raise ValueError(f"self_paced_weights: mode must be one of {SELF_PACED_MODES}, got {mode!r}")
    if mode == "hard":
        return (losses < threshold).astype(np.float64)
    if mode == "linear":
        return np.maximum(0.0, 1.0 - losses / threshold)
    lower = threshold / 2 if lower is None else lower
    if not 0 < lower < threshold:
        raise ValueError(f"self_paced_weights: mixture needs 0 < lower < threshold, got lower={lower!r}, "
                         f"threshold={threshold!r}")
    zeta = threshold * lower / (threshold - lower)
    with np.errstate(divide="ignore"):
        middle = zeta * (1.0 / losses - 1.0 / threshold)
    return np.where(losses <= lower, 1.0, np.where(losses >= threshold, 0.0, middle))


class SelfPacedSchedule:
    """The self-paced age lambda_t = min(initial * growth**t, maximum) at epoch t (lambda
    grows so that harder examples join; Kumar et al. grow it by a constant factor). The
    mixture mode's lambda_2 is ``lower_ratio`` * lambda_t."""

    def __init__(self, initial: float, growth: float = 1.3, maximum: float = np.inf, mode: str = "hard",
                 lower_ratio: float = 0.5):
        if not initial > 0 or not growth >= 1 or not maximum >= initial:
            raise ValueError(f"SelfPacedSchedule: needs initial > 0, growth >= 1, maximum >= initial, got "
                             f"initial={initial!r}, growth={growth!r}, maximum={maximum!r}")
        if mode not in SELF_PACED_MODES:
            raise ValueError(f"SelfPacedSchedule: mode must be one of {SELF_PACED_MODES}, got {mode!r}")
        if not 0 < lower_ratio < 1:
            raise ValueError(f"SelfPacedSchedule: lower_ratio must lie in (0, 1), got {lower_ratio!r}")
        self.initial, self.growth, self.maximum = initial, growth, maximum
        self.mode, self.lower_ratio = mode, lower_ratio

    def threshold(self, epoch: int) -> float:
        return float(min(self.initial * self.growth ** epoch, self.maximum))

    def weights(self, losses: Sequence[float] | np.ndarray, epoch: int) -> np.ndarray:
        """:func:`self_paced_weights` of ``losses`` with this epoch's lambda."""
        lam = self.threshold(epoch)
        return self_paced_weights(losses, lam, self.mode, lower=self.lower_ratio * lam)
