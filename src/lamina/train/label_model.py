r"""Weak supervision (Snorkel-style): combine noisy labelling functions into soft labels.

A label matrix L (n samples x m labelling functions) holds each function's vote, a class in
0..C-1, or -1 where it abstains.

- :func:`majority_vote`: the most frequent vote per sample (-1 where nobody votes).
- :func:`lf_summary`: per function its coverage (fraction of samples it votes on), overlaps
  (fraction where it and at least one other vote), conflicts (fraction where another votes
  differently) and, given gold labels, its empirical accuracy on its votes.
- :class:`LabelModel`: the Dawid-Skene model (Dawid & Skene 1979) fitted by EM, NOT Snorkel's
  matrix-completion estimator (Ratner et al. 2019). The true class y has a prior pi; given y,
  the functions vote independently, function j voting l with probability theta_j[y, l]
  (abstentions are treated as missing and carry no information). EM alternates the
  posterior q_i(c) proportional to pi_c prod_{j votes} theta_j[c, L_ij] (E-step) with
  pi_c = mean_i q_i(c) and theta_j[c, l] proportional to alpha + sum_{i: L_ij = l} q_i(c)
  (M-step, alpha a small smoothing count), starting from the soft majority vote.

The posteriors are the probabilistic labels; an end model learns from them with the expected
cross-entropy -sum_c q_i(c) log p_c(x_i), which is :func:`lamina.functional.cross_entropy`
given probabilities as targets.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["LabelModel", "check_label_matrix", "lf_summary", "majority_vote"]

ABSTAIN = -1


def check_label_matrix(votes, num_classes: int, fn: str = "check_label_matrix") -> np.ndarray:
    """``votes`` as an (n, m) int64 array with every value in [-1, num_classes)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"{fn}: num_classes must be an integer >= 2, got {num_classes!r}")
    matrix = np.asarray(votes)
    if matrix.ndim != 2 or matrix.dtype.kind not in "iu":
        raise ValueError(f"{fn}: the label matrix L must be a 2-D integer array (samples x labelling functions), "
                         f"got {matrix.dtype} of shape {matrix.shape}")
    if matrix.size and (matrix.min() < ABSTAIN or matrix.max() >= num_classes):
        raise ValueError(f"{fn}: values of the label matrix L must lie in [-1, {num_classes}) (-1 = abstain), "
                         f"got values {matrix.min()}..{matrix.max()}")
    return matrix.astype(np.int64)


def _vote_counts(matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, C): how many functions vote each class on each sample."""
    counts = np.zeros((matrix.shape[0], num_classes))
    for c in range(num_classes):
        counts[:, c] = (matrix == c).sum(axis=1)
    return counts


def majority_vote(votes, num_classes: int, tie_break: str = "random", seed: int = 0) -> np.ndarray:
    """The most frequent vote of each sample, -1 where all abstain. Ties: ``'random'`` picks
    one of the tied classes, ``'abstain'`` gives -1."""
    matrix = check_label_matrix(votes, num_classes, "majority_vote")
    if tie_break not in ("random", "abstain"):
        raise ValueError(f"majority_vote: tie_break must be 'random' or 'abstain', got {tie_break!r}")
    counts = _vote_counts(matrix, num_classes)
    top = counts.max(axis=1, keepdims=True)
    tied = (counts == top) & (top > 0)
    labels = np.full(matrix.shape[0], ABSTAIN, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for i in np.flatnonzero(tied.any(axis=1)):
        winners = np.flatnonzero(tied[i])
        if winners.size == 1:
            labels[i] = winners[0]
        elif tie_break == "random":
            labels[i] = rng.choice(winners)
    return labels


def lf_summary(votes, num_classes: int, gold=None) -> dict[str, np.ndarray]:
    """Per labelling function: ``coverage``, ``overlaps``, ``conflicts`` (fractions of all
    samples) and, with ``gold`` labels, ``accuracy`` (correct votes / votes; NaN if none)."""
    matrix = check_label_matrix(votes, num_classes, "lf_summary")
    n, m = matrix.shape
    voted = matrix != ABSTAIN
    others_voting = voted.sum(axis=1, keepdims=True) - voted
    summary = {"coverage": voted.mean(axis=0), "overlaps": (voted & (others_voting > 0)).mean(axis=0)}
    conflicts = np.zeros((n, m), dtype=bool)
    for j in range(m):
        differs = voted & (matrix != matrix[:, [j]])
        differs[:, j] = False
        conflicts[:, j] = voted[:, j] & differs.any(axis=1)
    summary["conflicts"] = conflicts.mean(axis=0)
    if gold is not None:
        gold = np.asarray(gold)
        if gold.shape != (n,):
            raise ValueError(f"lf_summary: gold must hold one label per sample ({n}), got shape {gold.shape}")
        correct = (matrix == gold[:, None]) & voted
        with np.errstate(invalid="ignore", divide="ignore"):
            summary["accuracy"] = correct.sum(axis=0) / voted.sum(axis=0)
    return summary


class LabelModel:
    """Dawid-Skene label model fitted by EM (see the module). After :meth:`fit`:
    ``class_prior`` (C,), ``confusions`` (m, C, C) with theta_j[true, vote], and
    :meth:`lf_accuracies` the estimated P(vote correct | the function votes)."""

    def __init__(self, num_classes: int, smoothing: float = 0.01):
        check_label_matrix(np.zeros((0, 0), dtype=np.int64), num_classes, "LabelModel")
        if not smoothing > 0:
            raise ValueError(f"LabelModel: smoothing must be > 0, got {smoothing!r}")
        self.num_classes, self.smoothing = int(num_classes), float(smoothing)
        self.class_prior: np.ndarray | None = None
        self.confusions: np.ndarray | None = None
        self.iterations = 0

    def fit(self, votes, max_iter: int = 100, tol: float = 1e-6) -> LabelModel:
        matrix = check_label_matrix(votes, self.num_classes, "LabelModel.fit")
        counts = _vote_counts(matrix, self.num_classes) + 1e-3
        posterior = counts / counts.sum(axis=1, keepdims=True)
        for self.iterations in range(1, max_iter + 1):
            self._m_step(matrix, posterior)
            updated = self._posterior(matrix)
            change = np.abs(updated - posterior).max()
            posterior = updated
            if change < tol:
                break
        return self

    def _m_step(self, matrix: np.ndarray, posterior: np.ndarray) -> None:
        c, m = self.num_classes, matrix.shape[1]
        self.class_prior = (posterior.sum(axis=0) + self.smoothing) / (len(posterior) + c * self.smoothing)
        confusions = np.full((m, c, c), self.smoothing)
        for j in range(m):
            for vote in range(c):
                confusions[j, :, vote] += posterior[matrix[:, j] == vote].sum(axis=0)
        self.confusions = confusions / confusions.sum(axis=2, keepdims=True)

    def _posterior(self, matrix: np.ndarray) -> np.ndarray:
        log_post = np.tile(np.log(self.class_prior), (matrix.shape[0], 1))
        log_theta = np.log(self.confusions)
        for j in range(matrix.shape[1]):
            voted = matrix[:, j] != ABSTAIN
            log_post[voted] += log_theta[j][:, matrix[voted, j]].T
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        return post / post.sum(axis=1, keepdims=True)

    def _fitted(self, fn: str) -> None:
        if self.confusions is None:
            raise RuntimeError(f"LabelModel.{fn}: call fit first")

    def predict_proba(self, votes) -> np.ndarray:
        """P(y = c | the votes) per sample, (n, C); samples with no vote get the prior."""
        self._fitted("predict_proba")
        matrix = check_label_matrix(votes, self.num_classes, "LabelModel.predict_proba")
        if matrix.shape[1] != self.confusions.shape[0]:
            raise ValueError(f"LabelModel.predict_proba: fitted on {self.confusions.shape[0]} labelling functions, "
                             f"got {matrix.shape[1]}")
        return self._posterior(matrix)

    def predict(self, votes) -> np.ndarray:
        """The most probable class of each sample."""
        return self.predict_proba(votes).argmax(axis=1)

    def lf_accuracies(self) -> np.ndarray:
        """sum_c pi_c theta_j[c, c] per function j (abstaining is taken as independent of
        the class, so the class prior among its votes is pi)."""
        self._fitted("lf_accuracies")
        return np.einsum("c,jcc->j", self.class_prior, self.confusions)
