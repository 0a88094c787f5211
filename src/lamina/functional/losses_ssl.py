"""Self-supervised losses: two views of each sample, no labels.

A batch of N samples is seen twice, through two random augmentations, and an encoder (with
a projection head) maps the views to rows z1[i], z2[i] of shape (N, D). The losses reward
embeddings that agree across the two views of one sample, and rule out the trivial answer
(every row the same) in one of two ways:

- contrastive (:func:`nt_xent_loss`, :func:`info_nce_loss`): the other samples of the batch
  are negatives, pushed away in a softmax over cosine similarities;
- redundancy reduction (:func:`barlow_twins_loss`, :func:`vicreg_loss`): statistics over the
  batch keep every feature varying and the features decorrelated.

Each loss is built from differentiable primitives (a handful of matrix products and
reductions), so it has gradients of any order. All return the mean over the batch as a
0-d tensor, except :func:`info_nce_loss` with ``reduction='none'`` or ``'sum'``.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax, relu
from lamina.functional.loss import _check_reduction
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat, getitem
from lamina.functional.similarity import normalize

__all__ = ["barlow_twins_loss", "info_nce_loss", "nt_xent_loss", "vicreg_loss"]


def _rows(x, name: str, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 2:
        raise ShapeError(f"{fn}: {name} must be a batch of embeddings of shape (N, D), got shape {x.shape}")
    return x


def _two_views(z1, z2, fn: str, min_rows: int) -> tuple[Tensor, Tensor]:
    z1, z2 = _rows(z1, "z1", fn), _rows(z2, "z2", fn)
    if z1.shape != z2.shape:
        raise ShapeError(f"{fn}: z1 has shape {z1.shape} but z2 has shape {z2.shape}; expected one shape (N, D)")
    if z1.shape[0] < min_rows:
        raise ShapeError(f"{fn}: needs at least {min_rows} samples in the batch, got shape {z1.shape}")
    return z1, z2


def _positive(value, name: str, fn: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if not ok or not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _off_diagonal_index(n: int):
    """Row and column indices of the n (n - 1) off-diagonal entries of an (n, n) matrix,
    as an (n, n - 1) gather: row i lists every column but i, in order."""
    xp = backend.xp
    columns = xp.arange(n - 1)[None, :] + (xp.arange(n - 1)[None, :] >= xp.arange(n)[:, None])
    return xp.arange(n)[:, None], columns


def nt_xent_loss(z1, z2, temperature: float = 0.5) -> Tensor:
    """SimCLR's normalized temperature-scaled cross entropy (Chen et al. 2020).

    The 2N rows u = (z1; z2) are scaled to unit length, s_ik = u_i . u_k / tau, and view i's
    positive is the other view of its sample, p(i) = i + N (mod 2N):

        L = (1 / 2N) sum_i [ -s_i,p(i) + log sum_{k != i} exp(s_ik) ]

    a 2N-way softmax classification of the positive among the 2N - 1 other views.
    z1, z2: (N, D) with N >= 1; ``temperature`` tau > 0 (0.5 in SimCLR's CIFAR runs).
    """
    fn = "nt_xent_loss"
    tau = _positive(temperature, "temperature", fn)
    z1, z2 = _two_views(z1, z2, fn, 1)
    n = z1.shape[0]
    u = normalize(concat([z1, z2], axis=0), axis=-1)
    similarity = (u @ u.T) / tau
    rows, others = _off_diagonal_index(2 * n)
    xp = backend.xp
    positive = getitem(similarity, (xp.arange(2 * n), (xp.arange(2 * n) + n) % (2 * n)))
    return (logsumexp(getitem(similarity, (rows, others)), axis=-1) - positive).mean()


def info_nce_loss(query, positive_key, negative_keys=None, temperature: float = 0.1, reduction: str = "mean",
                  negative_mode: str = "unpaired") -> Tensor:
    """InfoNCE (van den Oord et al. 2018), as the info-nce-pytorch package defines it.

    All vectors are scaled to unit length; q_i is query i, k_i its positive key. With
    ``negative_keys`` None the other positive keys of the batch are the negatives:

        L_i = -log softmax_j(q_i . k_j / tau)[i]                       (in-batch negatives)

    otherwise the logits are (q_i . k_i, q_i . n_1, ..., q_i . n_M) / tau and the positive
    is class 0; ``negative_mode`` 'unpaired' takes negatives (M, D) shared by all queries,
    'paired' takes (N, M, D), M for each query. query and positive_key: (N, D).
    ``reduction`` 'mean', 'sum' or 'none' (the N losses).
    """
    fn = "info_nce_loss"
    _check_reduction(reduction, fn)
    tau = _positive(temperature, "temperature", fn)
    q, k = _rows(query, "query", fn), _rows(positive_key, "positive_key", fn)
    if q.shape != k.shape:
        raise ShapeError(f"{fn}: query has shape {q.shape} but positive_key has shape {k.shape}; expected one shape")
    if negative_mode not in ("unpaired", "paired"):
        raise ValueError(f"{fn}: negative_mode must be 'unpaired' or 'paired', got {negative_mode!r}")
    xp = backend.xp
    n, d = q.shape
    q, k = normalize(q, axis=-1), normalize(k, axis=-1)
    if negative_keys is None:
        logits = (q @ k.T) / tau
        target = xp.arange(n)
    else:
        negatives = negative_keys if isinstance(negative_keys, Tensor) else Tensor(negative_keys)
        expected = (n, None, d) if negative_mode == "paired" else (None, d)
        if negatives.ndim != len(expected) or any(e is not None and s != e for s, e in zip(negatives.shape, expected)):
            want = "(N, M, D)" if negative_mode == "paired" else "(M, D)"
            raise ShapeError(f"{fn}: negative_keys for negative_mode={negative_mode!r} must have shape {want} with "
                             f"N, D = {n}, {d} from the query; got shape {negatives.shape}")
        negatives = normalize(negatives, axis=-1)
        positive = (q * k).sum(axis=-1, keepdims=True)
        if negative_mode == "paired":
            negative = (q.expand_dims(1) * negatives).sum(axis=-1)
        else:
            negative = q @ negatives.T
        logits = concat([positive, negative], axis=1) / tau
        target = xp.zeros(n, dtype=xp.intp)
    losses = -getitem(log_softmax(logits, axis=-1), (xp.arange(n), target))
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def _standardized(z: Tensor, eps: float) -> Tensor:
    """(z - mean) / sqrt(var + eps) per feature over the batch, var the biased variance:
    batch normalisation without scale and shift."""
    centred = z - z.mean(axis=0, keepdims=True)
    return centred / ((centred * centred).mean(axis=0, keepdims=True) + eps) ** 0.5


def barlow_twins_loss(z1, z2, lambda_: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' features
    pushed towards the identity.

    Each feature is standardised over the batch (as the authors' code does, by batch
    normalisation without affine: biased variance plus ``eps``), C = z1_hat^T z2_hat / N is
    the (D, D) cross-correlation, and

        L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2.

    The sum is not divided by D (the paper's scale; lambda = 5e-3 there for D = 8192).
    z1, z2: (N, D) with N >= 2.
    """
    fn = "barlow_twins_loss"
    lam = _positive(lambda_, "lambda_", fn, allow_zero=True)
    eps = _positive(eps, "eps", fn, allow_zero=True)
    z1, z2 = _two_views(z1, z2, fn, 2)
    n, d = z1.shape
    c = (_standardized(z1, eps).T @ _standardized(z2, eps)) / n
    diagonal = getitem(c, (backend.xp.arange(d), backend.xp.arange(d)))
    on = ((1.0 - diagonal) ** 2).sum()
    off = (c * c).sum() - (diagonal * diagonal).sum()
    return on + lam * off


def vicreg_loss(z1, z2, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg (Bardes, Ponce and LeCun 2022): variance-invariance-covariance regularisation.

        L = sim * mean((z1 - z2)^2)
            + var * (mean_j relu(1 - S1_j) + mean_j relu(1 - S2_j)) / 2
            + cov * (sum_{i != j} C1_ij^2 + sum_{i != j} C2_ij^2) / D

    with S_j = sqrt(Var(z_j) + eps) each feature's standard deviation over the batch
    (unbiased variance) and C = (z - mean)^T (z - mean) / (N - 1) the covariance: as the
    authors' code. z1, z2: (N, D) with N >= 2; the weights are lambda, mu, nu of the paper.
    """
    fn = "vicreg_loss"
    weights = [_positive(w, name, fn, allow_zero=True) for w, name in ((sim, "sim"), (var, "var"), (cov, "cov"))]
    eps = _positive(eps, "eps", fn, allow_zero=True)
    z1, z2 = _two_views(z1, z2, fn, 2)
    n, d = z1.shape
    diff = z1 - z2
    invariance = (diff * diff).mean()
    variance = None
    covariance = None
    for z in (z1, z2):
        centred = z - z.mean(axis=0, keepdims=True)
        spread = ((centred * centred).sum(axis=0) / (n - 1) + eps) ** 0.5
        hinge = relu(1.0 - spread).mean() / 2
        c = (centred.T @ centred) / (n - 1)
        diagonal = getitem(c, (backend.xp.arange(d), backend.xp.arange(d)))
        off = ((c * c).sum() - (diagonal * diagonal).sum()) / d
        variance = hinge if variance is None else variance + hinge
        covariance = off if covariance is None else covariance + off
    return weights[0] * invariance + weights[1] * variance + weights[2] * covariance
