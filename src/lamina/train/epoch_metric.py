"""The protocol of a metric over a whole epoch, and the mean of a per-batch metric."""

from __future__ import annotations

from lamina import backend

__all__ = ["EpochMetric", "MeanMetric"]


class EpochMetric:
    """A metric over an epoch: ``reset()``, ``update(scores, labels)`` once per batch (which
    returns the value to log for that batch), ``result()`` at the end. Scores may be the
    model's arrays on any backend (CuPy's are copied to the host). A metric whose
    ``update(scores, labels, sample_weight)`` weighs the samples sets ``takes_sample_weight``
    (``Trainer(weighted_metrics=...)`` then takes it)."""

    name = "metric"
    takes_sample_weight = False

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, scores, y_true) -> float:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class MeanMetric(EpochMetric):
    """A per-batch metric ``fn(scores, labels)`` averaged over the epoch, each batch weighted
    by what it counts: ``fn.batch_weight(scores, labels)`` where the metric defines it (the
    labels :func:`~lamina.train.metrics.accuracy` counts, leaving out ignored ones), else its
    number of samples. A batch of weight 0 (every label ignored) is left out."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, scores, y_true) -> float:
        scores = backend.to_numpy(scores)             # a GPU batch comes to the host once
        weigh = getattr(self.fn, "batch_weight", None)
        n = len(scores) if weigh is None else weigh(scores, y_true)
        if n == 0:
            return float("nan")
        value = float(self.fn(scores, y_true))
        self.total += value * n
        self.count += n
        return value

    def result(self) -> float:
        return self.total / max(self.count, 1)
