"""Back-ends for speaker embeddings: LDA and two-covariance PLDA (NumPy, float64).

Two-covariance PLDA (Ioffe 2006; Brummer and de Villiers 2010; the simplified form of
SpeechBrain's and Kaldi's back-ends): an embedding of speaker s is x = mu + y_s + e with the
speaker's offset y_s ~ N(0, B) and the recording's e ~ N(0, W). ``fit`` estimates them from
labelled embeddings: mu the mean, W the within-class scatter (1/N) sum_i (x_i - m_(c_i))
(x_i - m_(c_i))^T and B the between-class scatter (1/N) sum_c n_c (m_c - mu)(m_c - mu)^T. The
score of a pair is the log-likelihood ratio of "same speaker" against "different speakers":

    LLR(x1, x2) = log N([x1; x2]; [mu; mu], [[T, B], [B, T]]) - log N(x1; mu, T) - log N(x2; mu, T),

T = B + W. A transform V with V^T W V = I and V^T B V = diag(psi) (simultaneous
diagonalisation) splits it into one term per dimension of u = V^T (x - mu):

    LLR = sum_d 1/2 log((1 + psi)^2 / (1 + 2 psi)) + (u1^2 + u2^2) / (2 (1 + psi))
          - ((1 + psi)(u1^2 + u2^2) - 2 psi u1 u2) / (2 (1 + 2 psi)),

symmetric in x1, x2. :class:`LDA` (optional, ``lda_dim``) first projects on the directions of
largest between- to within-class variance, scaled so that the within-class covariance is I.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["LDA", "PLDA", "class_scatter"]


def _labelled(x, labels, who: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(getattr(x, "data", x), dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (len(x),):
        raise ShapeError(f"{who}: expected embeddings (N, D) and one label per embedding (N,), got shapes "
                         f"{x.shape} and {labels.shape}")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{who}: fitting needs embeddings of at least 2 classes, got {len(np.unique(labels))}")
    return x, labels


def class_scatter(x, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, within-class scatter W, between-class scatter B) of embeddings (N, D) with class
    ``labels`` (N,), as the module docstring defines them."""
    x, labels = _labelled(x, labels, "class_scatter")
    mean = x.mean(axis=0)
    within = np.zeros((x.shape[1],) * 2)
    between = np.zeros_like(within)
    for label in np.unique(labels):
        rows = x[labels == label]
        centre = rows.mean(axis=0)
        within += (rows - centre).T @ (rows - centre)
        between += len(rows) * np.outer(centre - mean, centre - mean)
    return mean, within / len(x), between / len(x)


def _diagonalise(within: np.ndarray, between: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(V, psi), V^T W V = I and V^T B V = diag(psi), psi in decreasing order."""
    values, vectors = np.linalg.eigh(within + eps * np.eye(len(within)))
    whiten = vectors / np.sqrt(np.maximum(values, eps))
    psi, rotation = np.linalg.eigh(whiten.T @ between @ whiten)
    order = np.argsort(-psi)
    return whiten @ rotation[:, order], np.maximum(psi[order], 0.0)


def _check_fitted(model, who: str) -> None:
    if getattr(model, "transform_", None) is None:
        raise RuntimeError(f"{who}: call fit(embeddings, labels) first")


class LDA:
    """Linear discriminant analysis to ``n_components`` dimensions: (x - mean) V, V's columns the
    directions of largest between- to within-class variance, within-class covariance I after."""

    def __init__(self, n_components: int, eps: float = 1e-6):
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"LDA: n_components must be a positive int, got {n_components!r}")
        self.n_components, self.eps = n_components, float(eps)
        self.mean_, self.transform_ = None, None

    def fit(self, x, labels) -> LDA:
        mean, within, between = class_scatter(x, labels)
        if self.n_components > len(mean):
            raise ValueError(f"LDA: n_components={self.n_components} exceeds the embedding size {len(mean)}")
        vectors, _ = _diagonalise(within, between, self.eps)
        self.mean_, self.transform_ = mean, vectors[:, : self.n_components]
        return self

    def transform(self, x) -> np.ndarray:
        _check_fitted(self, "LDA.transform")
        x = np.asarray(getattr(x, "data", x), dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean_):
            raise ShapeError(f"LDA.transform: expected embeddings (N, {len(self.mean_)}), got shape {x.shape}")
        return (x - self.mean_) @ self.transform_


class PLDA:
    """Two-covariance PLDA (see the module docstring): ``fit(embeddings, labels)``, then
    ``score(enrol, test)`` gives the LLR of each pair of rows. ``lda_dim``: reduce with
    :class:`LDA` first; ``eps`` is added to W's diagonal. Fitted attributes ``mean_``,
    ``within_``, ``between_`` (after LDA), ``transform_`` (V) and ``psi_``."""

    def __init__(self, lda_dim: int | None = None, eps: float = 1e-6):
        self.lda = None if lda_dim is None else LDA(lda_dim, eps)
        self.eps = float(eps)
        self.mean_ = self.within_ = self.between_ = self.transform_ = self.psi_ = None

    def _project(self, x) -> np.ndarray:
        x = np.asarray(getattr(x, "data", x), dtype=np.float64)
        return x if self.lda is None else self.lda.transform(x)

    def fit(self, x, labels) -> PLDA:
        x, labels = _labelled(x, labels, "PLDA.fit")
        if self.lda is not None:
            x = self.lda.fit(x, labels).transform(x)
        self.mean_, self.within_, self.between_ = class_scatter(x, labels)
        self.transform_, self.psi_ = _diagonalise(self.within_, self.between_, self.eps)
        return self

    def latent(self, x) -> np.ndarray:
        """u = V^T (x - mu) for embeddings (N, D): within-class covariance I, between diag(psi)."""
        _check_fitted(self, "PLDA.latent")
        x = self._project(x)
        if x.ndim != 2 or x.shape[1] != len(self.mean_):
            raise ShapeError(f"PLDA: expected embeddings (N, {len(self.mean_)}) after the projection, got shape "
                             f"{x.shape}")
        return (x - self.mean_) @ self.transform_

    def score(self, enrol, test) -> np.ndarray:
        """LLR(enrol_i, test_i) for paired embeddings (T, D): (T,)."""
        u1, u2 = self.latent(enrol), self.latent(test)
        if u1.shape != u2.shape:
            raise ShapeError(f"PLDA.score: enrol and test must pair up row by row, got shapes {u1.shape} and "
                             f"{u2.shape}")
        psi = self.psi_
        squares = u1 * u1 + u2 * u2
        terms = (0.5 * np.log((1 + psi) ** 2 / (1 + 2 * psi)) + squares / (2 * (1 + psi))
                 - ((1 + psi) * squares - 2 * psi * u1 * u2) / (2 * (1 + 2 * psi)))
        return terms.sum(axis=1)
