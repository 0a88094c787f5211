"""Calibration of a classifier's probabilities: how far its confidence is from its accuracy,
and temperature scaling to bring them together (Guo et al. 2017).

The confidence of a prediction is its largest probability c_i = max_k p_ik, the prediction
its class argmax_k p_ik. The confidences are cut into ``n_bins`` equal bins
B_b = [b / n, (b + 1) / n) (the last one closed at 1); in each, acc(B_b) is the fraction of
correct predictions and conf(B_b) the mean confidence:

    ECE = sum_b |B_b| / N · |acc(B_b) - conf(B_b)|,      MCE = max_b |acc(B_b) - conf(B_b)|

(over the bins that hold a prediction). These are torchmetrics' ``calibration_error`` with
``norm='l1'`` and ``'max'``, except that there a confidence of exactly 1 forms a bin of its own.

Temperature scaling divides the logits by one scalar T > 0 fitted on held-out data to
minimize the negative log-likelihood NLL(T) = mean_i [logsumexp(z_i / T) - z_{i,y_i} / T];
it changes no prediction (the argmax of z / T is that of z), only how sure they are. NLL is
convex in 1 / T, so a golden-section search over log T finds its minimum.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina.autograd import Tensor
from lamina.io.atomic import save_figure

__all__ = ["ReliabilityDiagram", "TemperatureScaling", "expected_calibration_error", "maximum_calibration_error",
           "negative_log_likelihood", "plot_reliability_diagram", "reliability_diagram"]


def _array(x, who: str, what: str) -> np.ndarray:
    return np.asarray(x.numpy() if isinstance(x, Tensor) else x)


def _confidences(probs, labels, who: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per sample from (N, C) probabilities (or (N,) of the class 1)."""
    probs = _array(probs, who, "probs").astype(np.float64)
    labels = _array(labels, who, "labels")
    if probs.ndim not in (1, 2) or labels.ndim != 1 or labels.shape[0] != probs.shape[0] or not probs.shape[0]:
        raise ValueError(f"{who}: expected probs of shape (N, C) (or (N,) for two classes) and labels of shape (N,) "
                         f"with N > 0; got {probs.shape} and {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"{who}: labels must be class indices (integers), got dtype {labels.dtype}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{who}: probs must be probabilities in [0, 1] (apply softmax to logits first); got values "
                         f"in [{probs.min()}, {probs.max()}]")
    if probs.ndim == 1:
        predictions = (probs >= 0.5).astype(np.int64)
        return np.maximum(probs, 1 - probs), predictions == labels
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"{who}: labels must lie in [0, {probs.shape[1] - 1}] for {probs.shape[1]} classes, got "
                         f"[{labels.min()}, {labels.max()}]")
    return probs.max(axis=1), probs.argmax(axis=1) == labels


@dataclass
class ReliabilityDiagram:
    """Per bin of confidence: its edges, how many predictions fell in it, their mean confidence
    and their accuracy (NaN for an empty bin)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        """|acc(B_b) - conf(B_b)| per bin (NaN where empty)."""
        return np.abs(self.accuracy - self.confidence)

    @property
    def expected_calibration_error(self) -> float:
        filled = self.counts > 0
        return float(np.sum(self.counts[filled] * self.gaps[filled]) / self.counts.sum())

    @property
    def maximum_calibration_error(self) -> float:
        return float(np.max(self.gaps[self.counts > 0]))


def reliability_diagram(probs, labels, n_bins: int = 15) -> ReliabilityDiagram:
    """The binned confidences and accuracies of the module's docstring."""
    who = "reliability_diagram"
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"{who}: n_bins must be a positive int, got {n_bins!r}")
    confidence, correct = _confidences(probs, labels, who)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(bins, weights=correct.astype(np.float64), minlength=n_bins) / counts
    return ReliabilityDiagram(edges, counts, mean_confidence, accuracy)


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = sum_b |B_b| / N |acc(B_b) - conf(B_b)| (see the module's docstring)."""
    return reliability_diagram(probs, labels, n_bins).expected_calibration_error


def maximum_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """MCE = max_b |acc(B_b) - conf(B_b)| over the bins that hold a prediction."""
    return reliability_diagram(probs, labels, n_bins).maximum_calibration_error


def plot_reliability_diagram(probs, labels, path: str | os.PathLike, n_bins: int = 15,
                             title: str = "reliability diagram") -> Path:
    """Save the reliability diagram as a PNG (accuracy per confidence bin against the
    diagonal of perfect calibration, the gaps shaded, ECE in the legend), written atomically.
    Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    diagram = reliability_diagram(probs, labels, n_bins)
    width = np.diff(diagram.edges)
    filled = diagram.counts > 0
    left = diagram.edges[:-1][filled]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.bar(left, diagram.accuracy[filled], width=width[filled], align="edge", color="C0", edgecolor="white",
           label=f"accuracy (ECE = {diagram.expected_calibration_error:.3f})")
    ax.bar(left, diagram.confidence[filled] - diagram.accuracy[filled], bottom=diagram.accuracy[filled],
           width=width[filled], align="edge", color="C3", alpha=0.3, label="gap to the mean confidence")
    ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def _logits_and_labels(logits, labels, who: str) -> tuple[np.ndarray, np.ndarray]:
    logits = _array(logits, who, "logits").astype(np.float64)
    labels = _array(labels, who, "labels")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or not logits.shape[0]:
        raise ValueError(f"{who}: expected logits of shape (N, C) and labels of shape (N,) with N > 0; got "
                         f"{logits.shape} and {labels.shape}")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"{who}: labels must be class indices in [0, {logits.shape[1] - 1}]")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{who}: logits must be finite")
    return logits, labels.astype(np.int64)


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """mean_i [logsumexp(z_i / T) - z_{i,y_i} / T], in float64."""
    logits, labels = _logits_and_labels(logits, labels, "negative_log_likelihood")
    return _nll(logits, labels, temperature)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def golden_section_minimum(cost, low: float, high: float, tol: float) -> float:
    """The minimiser of a unimodal ``cost`` on [low, high], by golden-section search: the
    bracket shrinks by (sqrt(5) - 1) / 2 each step, one new evaluation per step, until it is
    narrower than ``tol``; returns its midpoint."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    cost_a, cost_b = cost(a), cost(b)
    while high - low > tol:
        if cost_a <= cost_b:
            high, b, cost_b = b, a, cost_a
            a = high - ratio * (high - low)
            cost_a = cost(a)
        else:
            low, a, cost_a = a, b, cost_b
            b = low + ratio * (high - low)
            cost_b = cost(b)
    return (low + high) / 2


class TemperatureScaling:
    """Post-hoc calibration by one temperature: ``fit(logits, labels)`` on held-out data finds
    T minimizing the NLL (golden-section search over log T in [``min_temperature``,
    ``max_temperature``]); ``transform(logits)`` returns z / T and ``predict_proba`` softmax(z / T).
    After fitting, ``temperature`` holds T and ``nll_before`` / ``nll_after`` the NLL at 1 and T."""

    def __init__(self, min_temperature: float = 0.01, max_temperature: float = 100.0, tol: float = 1e-6):
        if not 0 < min_temperature < max_temperature:
            raise ValueError(f"TemperatureScaling: expected 0 < min_temperature < max_temperature, got "
                             f"{min_temperature!r} and {max_temperature!r}")
        self.min_temperature, self.max_temperature, self.tol = float(min_temperature), float(max_temperature), tol
        self.temperature: float | None = None
        self.nll_before: float | None = None
        self.nll_after: float | None = None

    def fit(self, logits, labels) -> TemperatureScaling:
        logits, labels = _logits_and_labels(logits, labels, "TemperatureScaling.fit")
        cost = lambda log_t: _nll(logits, labels, math.exp(log_t))        # noqa: E731
        low, high = math.log(self.min_temperature), math.log(self.max_temperature)
        self.temperature = math.exp(golden_section_minimum(cost, low, high, self.tol))
        self.nll_before, self.nll_after = _nll(logits, labels, 1.0), _nll(logits, labels, self.temperature)
        return self

    def _check_fitted(self, who: str) -> None:
        if self.temperature is None:
            raise RuntimeError(f"TemperatureScaling.{who}: call fit(logits, labels) on held-out data first")

    def transform(self, logits) -> np.ndarray:
        """The logits divided by the fitted temperature (same dtype as given floats)."""
        self._check_fitted("transform")
        values = _array(logits, "TemperatureScaling.transform", "logits")
        dtype = values.dtype if values.dtype.kind == "f" else np.float64
        return (values / self.temperature).astype(dtype)

    def predict_proba(self, logits) -> np.ndarray:
        """softmax(z / T) per row."""
        scaled = self.transform(logits).astype(np.float64)
        scaled -= scaled.max(axis=-1, keepdims=True)
        exp = np.exp(scaled)
        return exp / exp.sum(axis=-1, keepdims=True)

    def __repr__(self) -> str:
        fitted = "unfitted" if self.temperature is None else f"temperature={self.temperature:.4g}"
        return f"TemperatureScaling({fitted})"
