"""Soft sorting, ranking and top-k by projections onto the permutahedron (Blondel, Teboul,
Berthet & Djolonga 2020, "Fast differentiable sorting and ranking").

The permutahedron P(w) is the convex hull of all permutations of w. With the quadratic (l2)
regularization Q the projection of z onto it is

    P_Q(z, w) = argmin_{mu in P(w)} ||mu - z||^2 = z_s - iso(z_s - w_s)   (in z's sorted order)

and with the entropic (kl) one E it is P_E(z, w) = log argmin_{mu in P(e^w)} KL(mu, e^z) =
z_s - iso_E(z_s, w_s). z_s and w_s are z and w sorted down, and iso is the isotonic regression
onto non-increasing vectors, solved exactly by pool-adjacent-violators (PAV). Its solution is
constant on blocks B of consecutive positions:

    l2:  v_B = mean_B(z_s - w_s)                  kl:  v_B = LSE_B(z_s) - LSE_B(w_s)

so the projection is a block mean (l2) or a block log-softmax (kl) of its inputs. Given the
blocks (piecewise constant in the inputs) that is written here with segment sums and
segment softmaxes, so the gradients are the exact block-structured Jacobian products and
differentiate again. With rho = (n, ..., 1) and epsilon the regularization strength:

    soft_rank(x)   = P_Q(x / epsilon, rho)        (kl: exp P_E(x / epsilon, log rho))
    soft_sort(x)   = -P_Q(rho / epsilon, -x)      (kl: -P_E(rho / epsilon, -x))
    soft_topk(x)   = P_Q(x / epsilon, (1, .., 1, 0, .., 0))   (k ones)

Ranks are ascending (the smallest entry gets rank 1) and sorts ascending, as in torchsort.
As epsilon -> 0 they become the hard ranks, sort and top-k indicator; as epsilon grows the
l2 outputs tend to the mean (of rho, x, and k/n); the kl ranks tend to (n + 1) / 2 and the
kl sort to -log mean exp(-x). Sorting costs O(n log n), PAV O(n) per row.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.functional.elementwise import exp, log
from lamina.functional.indexing import gather
from lamina.functional.segment import segment_softmax, segment_sum, take_rows
from lamina.functional.shape import reshape

__all__ = ["soft_rank", "soft_sort", "soft_topk"]

_REGULARIZATIONS = ("l2", "kl")


def _pav_blocks_l2(y: np.ndarray) -> np.ndarray:
    """Block id of each position of the non-increasing isotonic regression of y (one row)."""
    sums, counts = [], []
    for value in y:
        sums.append(float(value))
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] <= sums[-1] / counts[-1]:
            last_sum, last_count = sums.pop(), counts.pop()
            sums[-1] += last_sum
            counts[-1] += last_count
    return np.repeat(np.arange(len(counts)), counts)


def _pav_blocks_kl(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Block ids of the kl isotonic regression, block value LSE_B(z) - LSE_B(w) (one row)."""
    lse_z, lse_w, counts = [], [], []
    for a, b in zip(z, w):
        lse_z.append(float(a))
        lse_w.append(float(b))
        counts.append(1)
        while len(counts) > 1 and lse_z[-2] - lse_w[-2] <= lse_z[-1] - lse_w[-1]:
            last_z, last_w, last_count = lse_z.pop(), lse_w.pop(), counts.pop()
            lse_z[-1] = np.logaddexp(lse_z[-1], last_z)
            lse_w[-1] = np.logaddexp(lse_w[-1], last_w)
            counts[-1] += last_count
    return np.repeat(np.arange(len(counts)), counts)


def _segments(z: np.ndarray, w: np.ndarray, regularization: str) -> tuple[np.ndarray, int]:
    """Flat segment ids (row r's blocks numbered from r * n) of the PAV blocks of each row."""
    rows, n = z.shape
    if regularization == "l2":
        blocks = [_pav_blocks_l2(zr - wr) for zr, wr in zip(z, w)]
    else:
        blocks = [_pav_blocks_kl(zr, wr) for zr, wr in zip(z, w)]
    ids = np.stack(blocks) + n * np.arange(rows)[:, None]
    return ids.reshape(-1).astype(np.int64), rows * n


def _project_sorted(z: Tensor, w: Tensor, regularization: str) -> Tensor:
    """P_Q(z, w) or P_E(z, w) for rows of z and w (N, n) both already sorted down."""
    shape = z.shape
    ids, count = _segments(np.asarray(z.data, np.float64), np.asarray(w.data, np.float64), regularization)
    flat_z, flat_w = reshape(z, (-1,)), reshape(w, (-1,))
    if regularization == "l2":
        sizes = np.bincount(ids, minlength=count)[ids].astype(z.dtype)
        block_mean = take_rows(segment_sum(flat_z - flat_w, ids, count), ids) / Tensor._constant(sizes, z.dtype)
        return reshape(flat_z - block_mean, shape)
    # z - LSE_B(z) + LSE_B(w), with LSE_B(t)_i = t_i - log softmax_B(t)_i
    projected = log(segment_softmax(flat_z, ids, count)) + flat_w - log(segment_softmax(flat_w, ids, count))
    return reshape(projected, shape)


def _check(x, regularization_strength: float, regularization: str, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(np.asarray(x, dtype=np.float32))
    if x.ndim not in (1, 2):
        raise ValueError(f"{fn}: expected values of shape (n,) or (batch, n), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{fn}: expected floating values, got dtype {x.dtype}")
    if regularization not in _REGULARIZATIONS:
        raise ValueError(f"{fn}: regularization must be one of {_REGULARIZATIONS}, got {regularization!r}")
    if not (isinstance(regularization_strength, (int, float)) and regularization_strength > 0):
        raise ValueError(f"{fn}: regularization_strength must be a number > 0, got {regularization_strength!r}")
    return x


def _rows(x: Tensor) -> Tensor:
    return reshape(x, (1, -1)) if x.ndim == 1 else x


def _descending_order(data) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(data), axis=1, kind="stable")
    return order, np.argsort(order, axis=1)


def _constant_rows(values: np.ndarray, like: Tensor) -> Tensor:
    return Tensor._constant(np.broadcast_to(values, like.shape).astype(like.dtype), like.dtype)


def soft_rank(x, regularization_strength: float = 1.0, regularization: str = "l2") -> Tensor:
    """Soft ascending ranks of x (n,) or (batch, n) along the last axis (module docstring):
    P_Q(x / epsilon, rho) for l2, exp P_E(x / epsilon, log rho) for kl, rho = (n, ..., 1).
    Each row sums to n (n + 1) / 2; small epsilon gives the hard ranks 1..n."""
    x = _check(x, regularization_strength, regularization, "soft_rank")
    rows = _rows(x)
    n = rows.shape[1]
    order, inverse = _descending_order(rows.data)
    z = gather(rows, 1, order) / regularization_strength
    rho = np.arange(n, 0, -1, dtype=np.float64)
    if regularization == "l2":
        ranks = _project_sorted(z, _constant_rows(rho, z), "l2")
    else:
        ranks = exp(_project_sorted(z, _constant_rows(np.log(rho), z), "kl"))
    return reshape(gather(ranks, 1, inverse), x.shape)


def soft_sort(x, regularization_strength: float = 1.0, regularization: str = "l2") -> Tensor:
    """x (n,) or (batch, n) softly sorted up along the last axis (module docstring):
    -P_Q(rho / epsilon, -x) for l2 (-P_E for kl). Small epsilon gives the hard sort; as epsilon
    grows every entry tends to mean(x) (l2) or -log mean exp(-x) (kl)."""
    x = _check(x, regularization_strength, regularization, "soft_sort")
    rows = _rows(-x)
    order, _ = _descending_order(rows.data)
    w = gather(rows, 1, order)
    rho = np.arange(rows.shape[1], 0, -1, dtype=np.float64) / regularization_strength
    descending = _project_sorted(_constant_rows(rho, w), w, regularization)
    return reshape(-descending, x.shape)


def soft_topk(x, k: int, epsilon: float = 1.0) -> Tensor:
    """Soft indicator of the k largest entries of x (n,) or (batch, n) along the last axis: the
    Euclidean projection of x / epsilon onto the permutahedron of (1, .., 1, 0, .., 0) (k ones),
    which is the capped simplex {mu in [0, 1]^n : sum mu = k}. Each row sums to k exactly; as
    epsilon -> 0 it tends to the hard top-k mask, as epsilon grows to k / n everywhere. (This is
    the soft-rank route of Blondel et al. rather than the entropic transport one of Xie et al.)"""
    x = _check(x, epsilon, "l2", "soft_topk")
    rows = _rows(x)
    n = rows.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"soft_topk: k must be an int in [1, {n}] for rows of length {n}, got {k!r}")
    order, inverse = _descending_order(rows.data)
    z = gather(rows, 1, order) / epsilon
    top = (np.arange(n) < k).astype(np.float64)
    mask = _project_sorted(z, _constant_rows(top, z), "l2")
    return reshape(gather(mask, 1, inverse), x.shape)
