"""Graph autoencoders for link prediction (Kipf & Welling, 2016), as PyTorch Geometric's
``GAE``, ``VGAE`` and ``InnerProductDecoder``.

An encoder maps the graph to node embeddings z (N, D); the decoder scores a pair j -> i by
sigma(z_j . z_i). With pairs that are edges (positive) and pairs that are not (negative):

    recon_loss = -mean_pos log(sigma(z_j . z_i) + 1e-15) - mean_neg log(1 - sigma(z_j . z_i) + 1e-15)

VGAE's encoder gives (mu, log sigma) per node; in training z = mu + sigma * eps (eps ~ N(0, I)),
in evaluation z = mu, and (log sigma clamped at 10)

    kl_loss = -1/2 * mean over the N nodes of sum_d (1 + 2 log sigma - mu^2 - sigma^2)

(the mean over nodes is the 1/N scaling; PyG's examples add another 1/N in front).
``test`` gives the ROC AUC and the average precision of the decoded scores.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graphs import check_edge_index
from lamina.data.link_split import negative_sampling
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["GAE", "VGAE", "InnerProductDecoder", "average_precision_score", "roc_auc_score"]

LOG_EPSILON = 1e-15
MAX_LOGSTD = 10.0


def roc_auc_score(labels, scores) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half)."""
    labels, scores = np.asarray(labels).astype(bool).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("roc_auc_score: needs at least one positive and one negative label")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.shape[0])
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)          # average ranks, 1-based
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def average_precision_score(labels, scores) -> float:
    """Average precision: sum over the distinct score thresholds t, from the highest, of
    (recall(t) - recall(previous t)) * precision(t)."""
    labels, scores = np.asarray(labels).astype(bool).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if not labels.any():
        raise ValueError("average_precision_score: needs at least one positive label")
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(labels[order])
    last_of_threshold = np.r_[np.flatnonzero(np.diff(scores[order])), scores.shape[0] - 1]
    true_positives = hits[last_of_threshold]
    precision = true_positives / (last_of_threshold + 1)
    recall = true_positives / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@register_with_arguments
class InnerProductDecoder(Module):
    """Scores sigma(z_j . z_i) of the pairs j -> i of ``edge_index`` (logits without ``sigmoid``),
    or of all pairs with :meth:`forward_all`."""

    def forward(self, z, edge_index, sigmoid: bool = True) -> Tensor:
        z = as_tensor(z)
        edge_index = check_edge_index(edge_index, z.shape[0], self._label())
        logits = F.sum(F.take_rows(z, edge_index[0]) * F.take_rows(z, edge_index[1]), axis=1)
        return F.sigmoid(logits) if sigmoid else logits

    def forward_all(self, z, sigmoid: bool = True) -> Tensor:
        z = as_tensor(z)
        logits = F.matmul(z, F.transpose(z))
        return F.sigmoid(logits) if sigmoid else logits


@register_with_arguments(modules=("encoder", "decoder"))
class GAE(Module):
    """Graph autoencoder around an ``encoder`` (any module: ``encode(*args)`` calls it) and a
    ``decoder`` (an :class:`InnerProductDecoder` by default)."""

    def __init__(self, encoder: Module, decoder: Module | None = None, name: str | None = None):
        super().__init__(name=name)
        self.encoder = encoder
        self.decoder = InnerProductDecoder() if decoder is None else decoder

    def forward(self, *args, **kwargs) -> Tensor:
        return self.encode(*args, **kwargs)

    def encode(self, *args, **kwargs) -> Tensor:
        return self.encoder(*args, **kwargs)

    def decode(self, z, edge_index, sigmoid: bool = True) -> Tensor:
        return self.decoder(z, edge_index, sigmoid=sigmoid)

    def recon_loss(self, z, pos_edge_index, neg_edge_index=None, seed=None) -> Tensor:
        """Binary cross-entropy of the decoded edges (positive) and non-edges (negative); the
        negatives are drawn with :func:`~lamina.data.negative_sampling` (as many as the
        positives) when not given."""
        z = as_tensor(z)
        pos_edge_index = check_edge_index(pos_edge_index, z.shape[0], "GAE.recon_loss")
        if neg_edge_index is None:
            neg_edge_index = negative_sampling(pos_edge_index, z.shape[0], seed=seed)
        positive = self.decoder(z, pos_edge_index, sigmoid=True)
        negative = self.decoder(z, neg_edge_index, sigmoid=True)
        return -F.mean(F.log(positive + LOG_EPSILON)) - F.mean(F.log(1.0 - negative + LOG_EPSILON))

    def test(self, z, pos_edge_index, neg_edge_index) -> tuple[float, float]:
        """(ROC AUC, average precision) of the decoded scores, edges labelled 1, non-edges 0."""
        positive = self.decoder(z, pos_edge_index, sigmoid=True).numpy()
        negative = self.decoder(z, neg_edge_index, sigmoid=True).numpy()
        labels = np.r_[np.ones(positive.shape[0]), np.zeros(negative.shape[0])]
        scores = np.r_[positive, negative]
        return roc_auc_score(labels, scores), average_precision_score(labels, scores)


@register_with_arguments(modules=("encoder", "decoder"))
class VGAE(GAE):
    """Variational graph autoencoder: the encoder returns (mu, logstd), each (N, D);
    ``encode`` samples z (the mean in evaluation) and keeps mu and logstd for :meth:`kl_loss`."""

    def encode(self, *args, **kwargs) -> Tensor:
        mu, logstd = self.encoder(*args, **kwargs)
        self._mu, self._logstd = mu, F.clip(logstd, None, MAX_LOGSTD)
        return self.reparametrize(self._mu, self._logstd)

    def reparametrize(self, mu, logstd) -> Tensor:
        """mu + exp(logstd) * eps in training, mu in evaluation."""
        if not self.training:
            return mu
        noise = backend.rng().standard_normal(tuple(mu.shape)).astype(mu.dtype)
        return mu + F.exp(logstd) * noise

    def kl_loss(self, mu=None, logstd=None) -> Tensor:
        """KL divergence from N(mu, sigma^2) to N(0, I), summed over the dimensions and
        averaged over the nodes (the last ``encode``'s mu and logstd by default)."""
        mu = self._mu if mu is None else as_tensor(mu)
        logstd = self._logstd if logstd is None else F.clip(as_tensor(logstd), None, MAX_LOGSTD)
        return -0.5 * F.mean(F.sum(1.0 + 2.0 * logstd - mu * mu - F.exp(2.0 * logstd), axis=1))
