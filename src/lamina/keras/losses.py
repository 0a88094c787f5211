"""Keras's losses: objects and string identifiers over lamina's loss functions.

Keras calls a loss as ``loss(y_true, y_pred)``; lamina's functions (and the Trainer) take
``(y_pred, y_true)``. A :class:`Loss` object here is called Keras's way and hands the
Trainer :attr:`Loss.fn`, lamina's function with the options fixed. Each reduces as Keras's
default ``"sum_over_batch_size"``: the mean over the samples of each sample's loss (a
sample's values averaged over its last axis, as Keras does for mse, mae, huber, ...).

String identifiers (``compile(loss="sparse_categorical_crossentropy")``): see ``LOSSES``.
Sparse and dense categorical cross-entropy are one lamina function, which takes integer
labels (``(N,)``) or one-hot rows; Keras's ``kl_divergence`` takes probabilities for both
arguments, KL = sum_j p_j log(p_j / q_j) with both clipped to [1e-7, 1].
"""

from __future__ import annotations

import functools

import numpy as np

from lamina import functional as F

__all__ = [
    "BinaryCrossentropy", "CategoricalCrossentropy", "CosineSimilarity", "Hinge", "Huber", "KLDivergence",
    "LogCosh", "Loss", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredError",
    "MeanSquaredLogarithmicError", "Poisson", "SparseCategoricalCrossentropy", "SquaredHinge", "get",
]

EPSILON = 1e-7


def sparse_labels(y_true):
    """Integer labels (N, 1), as Keras takes them, as the (N,) that lamina's cross-entropy takes."""
    labels = np.asarray(y_true)
    if labels.ndim == 2 and labels.shape[1] == 1 and labels.dtype.kind in "iu":
        return labels[:, 0]
    return y_true


def kl_divergence(y_pred, y_true, reduction: str = "mean"):
    """KL(p || q) = sum_j p_j log(p_j / q_j) of probabilities p = y_true, q = y_pred, both
    clipped to [1e-7, 1], averaged over the samples (Keras's ``kl_divergence``)."""
    q = F.clip(y_pred, EPSILON, 1.0)
    p = np.clip(np.asarray(y_true, dtype=np.asarray(q.data).dtype), EPSILON, 1.0)
    return F.kl_divergence(F.log(q), p, reduction=reduction)


def binary_crossentropy(y_pred, y_true, from_logits: bool = False, label_smoothing: float = 0.0,
                        reduction: str = "mean"):
    """Binary cross-entropy, targets smoothed to y (1 - s) + s / 2 with ``label_smoothing`` s."""
    if label_smoothing:
        y_true = np.asarray(y_true, dtype=np.float64) * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return F.binary_cross_entropy(y_pred, y_true, from_logits=from_logits, reduction=reduction)


class Loss:
    """A Keras loss object: ``loss(y_true, y_pred)`` gives the batch's mean loss; ``fn``
    is lamina's ``fn(y_pred, y_true, reduction=...)`` the Trainer calls."""

    name = "loss"

    def __init__(self, fn, name: str | None = None, reduction: str = "sum_over_batch_size"):
        if reduction not in ("sum_over_batch_size", "auto"):
            raise ValueError(f"{type(self).__name__}: only reduction='sum_over_batch_size' (the mean over the "
                             f"samples) is supported, got {reduction!r}")
        self.fn = fn
        self.name = name or self.name

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is None:
            return self.fn(y_pred, y_true)
        weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        losses = self.fn(y_pred, y_true, reduction="none")
        if losses.ndim > 1:
            losses = losses.mean(axis=tuple(range(1, losses.ndim)))
        return (losses * weights.astype(np.asarray(losses.data).dtype)).sum() / float(len(weights))

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy of integer labels; ``from_logits=True`` when the model gives scores."""

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None, **kwargs):
        self.from_logits, self.ignore_class = bool(from_logits), ignore_class
        # lamina's own function when it can be, so that the Trainer fuses a Softmax last layer
        fn = F.categorical_cross_entropy if ignore_class is None else functools.partial(
            F.categorical_cross_entropy, ignore_index=ignore_class)
        super().__init__(functools.partial(fn, from_logits=self.from_logits), **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        return super().__call__(sparse_labels(y_true), y_pred, sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_class": self.ignore_class}


class CategoricalCrossentropy(Loss):
    """Cross-entropy of one-hot (or soft) rows, with optional ``label_smoothing``."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, **kwargs):
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)
        super().__init__(functools.partial(F.categorical_cross_entropy, from_logits=self.from_logits,
                                           label_smoothing=self.label_smoothing), **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class BinaryCrossentropy(Loss):
    """Binary cross-entropy of 0/1 labels, with optional ``label_smoothing``."""

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, **kwargs):
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)
        if self.label_smoothing:
            fn = functools.partial(binary_crossentropy, from_logits=self.from_logits,
                                   label_smoothing=self.label_smoothing)
        else:
            fn = functools.partial(F.binary_cross_entropy, from_logits=self.from_logits)
        super().__init__(fn, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class Huber(Loss):
    """Huber loss: r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond."""

    name = "huber_loss"

    def __init__(self, delta: float = 1.0, **kwargs):
        self.delta = float(delta)
        super().__init__(functools.partial(F.huber, delta=self.delta), **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta}


def _simple(class_name: str, fn, name: str, doc: str) -> type[Loss]:
    def __init__(self, **kwargs):
        Loss.__init__(self, fn, **kwargs)

    return type(class_name, (Loss,), {"__init__": __init__, "name": name, "__doc__": doc, "__module__": __name__})


MeanSquaredError = _simple("MeanSquaredError", F.mean_squared_error, "mean_squared_error",
                           "Mean of (y_pred - y_true)^2.")
MeanAbsoluteError = _simple("MeanAbsoluteError", F.mean_absolute_error, "mean_absolute_error",
                            "Mean of |y_pred - y_true|.")
MeanAbsolutePercentageError = _simple("MeanAbsolutePercentageError", F.mean_absolute_percentage_error,
                                      "mean_absolute_percentage_error", "100 |y_true - y_pred| / |y_true|, averaged.")
MeanSquaredLogarithmicError = _simple("MeanSquaredLogarithmicError", F.mean_squared_logarithmic_error,
                                      "mean_squared_logarithmic_error", "(log(1 + y_pred) - log(1 + y_true))^2.")
KLDivergence = _simple("KLDivergence", kl_divergence, "kl_divergence",
                       "sum_j p_j log(p_j / q_j) of probability rows, averaged over the samples.")
Hinge = _simple("Hinge", F.hinge, "hinge", "max(0, 1 - y y_pred) with labels in {-1, 1} or {0, 1}.")
SquaredHinge = _simple("SquaredHinge", F.squared_hinge, "squared_hinge", "max(0, 1 - y y_pred)^2.")
LogCosh = _simple("LogCosh", F.log_cosh, "log_cosh", "log(cosh(y_pred - y_true)), averaged.")
Poisson = _simple("Poisson", F.poisson, "poisson", "y_pred - y_true log(y_pred + 1e-7), averaged.")
CosineSimilarity = _simple("CosineSimilarity", F.cosine_similarity_loss, "cosine_similarity",
                           "Minus the cosine between prediction and target rows.")

LOSSES: dict[str, type[Loss]] = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError, "mape": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError, "msle": MeanSquaredLogarithmicError,
    "huber": Huber, "huber_loss": Huber,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "hinge": Hinge, "squared_hinge": SquaredHinge, "log_cosh": LogCosh, "logcosh": LogCosh,
    "poisson": Poisson, "cosine_similarity": CosineSimilarity,
}


def get(identifier) -> Loss:
    """A :class:`Loss` from a name in ``LOSSES``, a Loss object as it is, or a callable
    ``fn(y_true, y_pred)`` in Keras's argument order (wrapped to lamina's)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        if identifier in LOSSES:
            return LOSSES[identifier]()
        raise ValueError(f"lamina.keras.losses.get: unknown loss {identifier!r}; expected one of {sorted(LOSSES)}, "
                         "a Loss object or a callable loss(y_true, y_pred)")
    if callable(identifier):
        def swapped(y_pred, y_true):
            return identifier(y_true, y_pred)

        return Loss(swapped, name=getattr(identifier, "__name__", "loss"))
    raise TypeError(f"lamina.keras.losses.get: expected a loss name, a Loss object or a callable, got "
                    f"{type(identifier).__name__}")
