"""Few-shot evaluation over episodes: mean accuracy with a confidence interval.

Few-shot results are reported as the mean query accuracy over many test episodes with a 95%
confidence interval (Vinyals et al. 2016, Snell et al. 2017, Sung et al. 2018): for episode
accuracies a_1 .. a_E,

    mean = (1/E) sum_e a_e,    interval = z * s / sqrt(E),

s the sample standard deviation (ddof 1) and z the normal quantile of (1 + confidence) / 2
(1.96 for 95%). ``predict(support_x, support_y, query_x)`` is any few-shot model giving
class scores (Q, n) whose argmax is the predicted class: a matching or relation network
itself, or ``lambda xs, ys, xq: F.prototypical_logits(embed(xs), ys, embed(xq))``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lamina.autograd import no_grad

__all__ = ["EpisodeAccuracy", "episode_accuracy"]


@dataclass(frozen=True)
class EpisodeAccuracy:
    """The mean query accuracy over episodes, the half-width of its confidence interval
    (mean +- interval) and the accuracy of every episode."""

    mean: float
    interval: float
    confidence: float
    accuracies: np.ndarray = field(repr=False)

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.interval:.2f}% ({len(self.accuracies)} episodes)"


def episode_accuracy(predict: Callable, tasks: Iterable, confidence: float = 0.95) -> EpisodeAccuracy:
    """Accuracy of ``predict`` on the queries of every task ``((support_x, support_y),
    (query_x, query_y))`` of ``tasks`` (e.g. :class:`lamina.data.FewShotTasks`), without the
    graph, and its ``confidence`` interval over the episodes (module notes). A module is put
    in evaluation mode for the call and restored after."""
    if not 0 < confidence < 1:
        raise ValueError(f"episode_accuracy: confidence must be in (0, 1), got {confidence!r}")
    training = getattr(predict, "training", None)
    if training is not None:
        predict.eval()
    accuracies = []
    try:
        with no_grad():
            for (support_x, support_y), (query_x, query_y) in tasks:
                scores = predict(support_x, support_y, query_x)
                scores = np.asarray(scores.numpy() if hasattr(scores, "numpy") else scores)
                query_y = np.asarray(query_y)
                if scores.ndim != 2 or scores.shape[0] != len(query_y):
                    raise ValueError(f"episode_accuracy: predict must give class scores (Q, n) for the {len(query_y)} "
                                     f"query samples, got shape {scores.shape}")
                accuracies.append(float(np.mean(scores.argmax(axis=1) == query_y)))
    finally:
        if training:
            predict.train()
    if not accuracies:
        raise ValueError("episode_accuracy: no tasks to evaluate")
    values = np.asarray(accuracies)
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return EpisodeAccuracy(float(values.mean()), z * spread / np.sqrt(len(values)), float(confidence), values)
