"""Training for anomaly detection, and the metrics of out-of-distribution detection.

Deep SVDD (Ruff et al. 2018) trains a bias-free network phi to map normal data into a small
hypersphere of centre c (:func:`svdd_center`: the mean of phi over the data before training,
coordinates within eps of 0 pushed to +-eps, so that c = 0 cannot be reached by zeroing the
weights). Over a batch of n samples, with d_i = |phi(x_i) - c|^2 (:func:`deep_svdd_loss`):

    one-class       (1/n) sum_i d_i
    soft-boundary   R^2 + (1/nu) (1/n) sum_i max(0, d_i - R^2)

weight decay coming from the optimiser. In soft-boundary training R is set after each epoch
past the warm-up to the (1 - nu) quantile of the distances sqrt(d_i) (:func:`svdd_radius`), so
that at most a fraction nu of the data lies outside. The anomaly score is d (one-class) or
d - R^2 (soft-boundary). Bias terms would let phi map everything onto c, so :class:`DeepSVDD`
refuses networks that have them.

:func:`ood_metrics` scores a detector whose scores are higher for out-of-distribution inputs:
AUROC and AUPR-out take the OOD inputs as positives, AUPR-in the in-distribution ones (scores
negated), and :func:`fpr_at_tpr` is the FPR at 95% TPR of the OOD papers: the fraction of
OOD inputs accepted as in-distribution at the threshold that accepts 95% of the
in-distribution inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam
from lamina.train.score_metrics import _average_precision, _roc_auc

__all__ = ["OBJECTIVES", "DeepSVDD", "OODMetrics", "deep_svdd_loss", "fpr_at_tpr", "ood_metrics",
           "svdd_center", "svdd_radius"]

OBJECTIVES = ("one-class", "soft-boundary")


def _check_nu(nu, who: str) -> float:
    if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not 0 < nu <= 1:
        raise ValueError(f"{who}: nu must lie in (0, 1], got {nu!r}")
    return float(nu)


def _check_objective(objective, who: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"{who}: objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


def _host(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))


def svdd_center(embeddings, eps: float = 0.1) -> np.ndarray:
    """The mean embedding, each coordinate with |c_j| < eps set to eps with its sign (+eps for 0)."""
    z = _host(embeddings).astype(np.float64)
    if z.ndim != 2 or not len(z):
        raise ShapeError(f"svdd_center: expected embeddings of shape (samples, features), got {z.shape}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"svdd_center: eps must be a number >= 0, got {eps!r}")
    c = z.mean(axis=0)
    small = np.abs(c) < eps
    c[small & (c < 0)] = -eps
    c[small & (c >= 0)] = eps
    return c


def svdd_radius(squared_distances, nu: float) -> float:
    """R = the (1 - nu) quantile of sqrt(d_i) (linear interpolation, as numpy.quantile)."""
    nu = _check_nu(nu, "svdd_radius")
    d = _host(squared_distances).astype(np.float64).reshape(-1)
    if not len(d):
        raise ValueError("svdd_radius: needs at least one distance")
    return float(np.quantile(np.sqrt(np.maximum(d, 0.0)), 1 - nu))


def deep_svdd_loss(embeddings: Tensor, center, radius: float = 0.0, nu: float = 0.1,
                   objective: str = "one-class") -> Tensor:
    """The Deep SVDD objective of the module docstring over a batch of embeddings (n, D)
    (weight decay excluded)."""
    _check_objective(objective, "deep_svdd_loss")
    if embeddings.ndim != 2:
        raise ShapeError(f"deep_svdd_loss: expected embeddings of shape (batch, features), got {embeddings.shape}")
    c = np.asarray(center, dtype=embeddings.dtype)
    if c.shape != (embeddings.shape[1],):
        raise ShapeError(f"deep_svdd_loss: centre of shape {c.shape} for embeddings of {embeddings.shape[1]} "
                         f"features; expected ({embeddings.shape[1]},)")
    distances = ((embeddings - tensor(c, dtype=c.dtype)) ** 2).sum(axis=1)
    if objective == "one-class":
        return distances.mean()
    nu = _check_nu(nu, "deep_svdd_loss")
    r2 = float(radius) ** 2
    return F.relu(distances - r2).mean() * (1.0 / nu) + r2


def _biased_parameters(net: Module) -> list[str]:
    return [name for name, _ in net.named_parameters() if name.rsplit(".", 1)[-1] in ("bias", "beta")]


class DeepSVDD:
    """Deep SVDD on a bias-free ``net`` (its output, flattened per sample, is phi(x)).

    ``objective``: ``"one-class"`` or ``"soft-boundary"`` (with ``nu``, the share of the
    training data allowed outside the sphere); ``eps``: see :func:`svdd_center`.
    """

    def __init__(self, net: Module, objective: str = "one-class", nu: float = 0.1, eps: float = 0.1):
        if not isinstance(net, Module):
            raise TypeError(f"DeepSVDD: net must be a lamina Module, got {type(net).__name__}")
        self.net = net
        self.objective = _check_objective(objective, "DeepSVDD")
        self.nu = _check_nu(nu, "DeepSVDD")
        self.eps = eps
        self.center: np.ndarray | None = None
        self.radius = 0.0
        self.losses: list[float] = []
        self._refuse_biases()

    def _refuse_biases(self) -> None:
        biased = _biased_parameters(self.net)
        if biased:
            raise ValueError(f"DeepSVDD: the network has bias terms {biased}, which let it map every input onto the "
                             "centre (a trivial solution); build it without biases (use_bias=False, no affine "
                             "normalisation shift)")

    def _embed(self, x) -> Tensor:
        out = self.net(x)
        return out.reshape(out.shape[0], -1) if out.ndim != 2 else out

    def embed(self, x, batch_size: int = 256) -> np.ndarray:
        """phi(x) for every sample, in evaluation mode: shape (N, D)."""
        with evaluation_mode(self.net), no_grad():
            parts = [_host(self._embed(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float64)

    def fit(self, x, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-6,
            warmup_epochs: int = 2, seed: int = 0, optimizer=None) -> DeepSVDD:
        """Train on normal data ``x``: the centre from a forward pass first (building a lazy
        network, whose biases are then refused), then ``epochs`` epochs of mini-batch Adam
        (or ``optimizer``); soft-boundary training updates R after each epoch from
        ``warmup_epochs`` on."""
        if len(x) == 0:
            raise ValueError("DeepSVDD.fit: x holds no samples")
        self.center = svdd_center(self.embed(x), self.eps)
        self._refuse_biases()
        optimizer = optimizer or Adam(self.net, lr=lr, weight_decay=weight_decay)
        rng = np.random.default_rng(seed)
        self.net.train()
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch = x[order[start:start + batch_size]]
                loss = deep_svdd_loss(self._embed(batch), self.center, self.radius, self.nu, self.objective)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.item()) * len(batch)
            self.losses.append(total / len(x))
            if self.objective == "soft-boundary" and epoch + 1 >= warmup_epochs:
                self.radius = svdd_radius(self._squared_distances(x), self.nu)
        self.net.eval()
        return self

    def _squared_distances(self, x) -> np.ndarray:
        return ((self.embed(x) - self.center) ** 2).sum(axis=1)

    def score(self, x) -> np.ndarray:
        """|phi(x) - c|^2, minus R^2 for the soft-boundary objective (> 0: outside the sphere)."""
        if self.center is None:
            raise RuntimeError("DeepSVDD.score: call fit on normal data first")
        distances = self._squared_distances(x)
        return distances - self.radius ** 2 if self.objective == "soft-boundary" else distances


class OODMetrics(NamedTuple):
    """The detection metrics of :func:`ood_metrics`."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr_at_95_tpr: float


def _score_vector(scores, who: str, what: str) -> np.ndarray:
    values = _host(scores).astype(np.float64).reshape(-1)
    if not len(values) or not np.isfinite(values).all():
        raise ValueError(f"{who}: {what} must be a non-empty set of finite scores, got {len(values)} values")
    return values


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    """The fraction of ``out_scores`` <= t, t the smallest in-distribution score with at
    least a fraction ``tpr`` of ``in_scores`` <= t (higher scores: more likely OOD)."""
    inside = np.sort(_score_vector(in_scores, "fpr_at_tpr", "in_scores"))
    outside = _score_vector(out_scores, "fpr_at_tpr", "out_scores")
    if not 0 < tpr <= 1:
        raise ValueError(f"fpr_at_tpr: tpr must lie in (0, 1], got {tpr!r}")
    threshold = inside[int(np.ceil(tpr * len(inside) - 1e-9)) - 1]
    return float(np.mean(outside <= threshold))


def ood_metrics(in_scores, out_scores) -> OODMetrics:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR for anomaly scores (higher: more likely OOD)."""
    inside = _score_vector(in_scores, "ood_metrics", "in_scores")
    outside = _score_vector(out_scores, "ood_metrics", "out_scores")
    scores = np.concatenate([inside, outside])
    is_out = np.concatenate([np.zeros(len(inside), np.int64), np.ones(len(outside), np.int64)])
    return OODMetrics(_roc_auc(scores, is_out), _average_precision(-scores, 1 - is_out),
                      _average_precision(scores, is_out), fpr_at_tpr(inside, outside))
