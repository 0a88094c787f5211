"""Relaxed permutation matrices: SoftSort and differentiable sorting networks.

SoftSort (Prillo & Eisenschlos 2020): with s_sorted the scores sorted,

    P = softmax_j(-|s_sorted_i - s_j| / tau)      (row i: the item of rank i)

Its rows sum to 1; as tau -> 0 it tends to the permutation matrix that sorts s.

Differentiable sorting networks (Petersen, Borgelt, Kuehne & Deussen 2021, 2022): a sorting
network (odd-even transposition or bitonic) whose every comparator of a and b is relaxed with
alpha = f(steepness (b - a)) into

    min' = alpha a + (1 - alpha) b        max' = (1 - alpha) a + alpha b

for a sigmoid f: logistic 1 / (1 + e^-t), Cauchy atan(t) / pi + 1 / 2, or the optimal
monotonic one (-1 / (16 t) for t < -1/4, t + 1/2 in between, 1 - 1 / (16 t) for t > 1/4).
Every relaxed comparator mixes two rows by a doubly stochastic 2x2 matrix, so the product
P over the network is doubly stochastic and P @ x is the relaxed sort of x. As steepness
grows P tends to the hard sorting permutation.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.functional.activation import sigmoid, softmax
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import where
from lamina.functional.indexing import flip, index_select, sort
from lamina.functional.math_parity import atan
from lamina.functional.shape import concat, expand_dims, reshape

__all__ = ["soft_sort_matrix", "sorting_network"]

_SIGMOIDS = ("logistic", "cauchy", "optimal")
_NETWORKS = ("odd_even", "bitonic")


def _scores(x, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.dtype.kind != "f":
        raise ValueError(f"{fn}: expected floating scores of shape (batch, n), got shape {x.shape} "
                         f"and dtype {x.dtype}")
    return x


def _positive(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{fn}: {name} must be a number > 0, got {value!r}")
    return float(value)


def soft_sort_matrix(scores, tau: float = 1.0, descending: bool = True) -> Tensor:
    """SoftSort's relaxed permutation (batch, n, n) of scores (batch, n):
    P_ij = softmax_j(-|sort(s)_i - s_j| / tau), sorted down by default (as in the paper)."""
    s = _scores(scores, "soft_sort_matrix")
    tau = _positive(tau, "tau", "soft_sort_matrix")
    ordered, _ = sort(s, axis=-1, descending=descending)
    gaps = absolute(expand_dims(ordered, 2) - expand_dims(s, 1))
    return softmax(-gaps / tau, axis=-1)


def odd_even_layers(n: int) -> list[list[tuple[int, int]]]:
    """The n layers of the odd-even transposition network: (j, j + 1) for j = i % 2, i % 2 + 2, ..."""
    return [[(j, j + 1) for j in range(i % 2, n - 1, 2)] for i in range(n)]


def bitonic_layers(n: int) -> list[list[tuple[int, int]]]:
    """The layers of Batcher's bitonic network for n a power of 2; a pair (a, b) puts the min at a."""
    layers = []
    size = 2
    while size <= n:
        stride = size // 2
        while stride >= 1:
            pairs = []
            for i in range(n):
                partner = i ^ stride
                if partner > i:
                    pairs.append((i, partner) if i & size == 0 else (partner, i))
            layers.append(pairs)
            stride //= 2
        size *= 2
    return layers


def _relaxed_step(t: Tensor, sigmoid_name: str) -> Tensor:
    if sigmoid_name == "logistic":
        return sigmoid(t)
    if sigmoid_name == "cauchy":
        return atan(t) / np.pi + 0.5
    far = np.abs(t.data) > 0.25
    t_far = where(far, t, 1.0)               # keeps 1 / t finite off the tails
    tails = where(t.data < 0, -1.0 / (16.0 * t_far), 1.0 - 1.0 / (16.0 * t_far))
    return where(far, tails, t + 0.5)


def _mix_rows(rows: Tensor, lo: np.ndarray, hi: np.ndarray, rest: np.ndarray, back: np.ndarray,
              alpha: Tensor) -> Tensor:
    """rows with rows[lo], rows[hi] replaced by alpha a + (1 - alpha) b and (1 - alpha) a + alpha b."""
    a, b = index_select(rows, 1, lo), index_select(rows, 1, hi)
    if rows.ndim == 3:
        alpha = expand_dims(alpha, 2)
    mixed = concat([index_select(rows, 1, rest), alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b], axis=1)
    return index_select(mixed, 1, back)


def sorting_network(x, network: str = "odd_even", steepness: float = 10.0, sigmoid: str = "logistic",
                    descending: bool = False) -> Tensor:
    """The relaxed permutation matrix P (batch, n, n) of a differentiable sorting network on
    x (batch, n) (module docstring): P @ x is x softly sorted (up by default). ``network`` is
    "odd_even" (n layers) or "bitonic" (n a power of 2, log2(n)(log2(n) + 1) / 2 layers);
    ``sigmoid`` is "logistic", "cauchy" or "optimal"."""
    fn = "sorting_network"
    x = _scores(x, fn)
    steepness = _positive(steepness, "steepness", fn)
    if network not in _NETWORKS:
        raise ValueError(f"{fn}: network must be one of {_NETWORKS}, got {network!r}")
    if sigmoid not in _SIGMOIDS:
        raise ValueError(f"{fn}: sigmoid must be one of {_SIGMOIDS}, got {sigmoid!r}")
    batch, n = x.shape
    if network == "bitonic" and n & (n - 1):
        raise ValueError(f"{fn}: the bitonic network needs n a power of 2, got n = {n}")
    layers = odd_even_layers(n) if network == "odd_even" else bitonic_layers(n)
    perm = Tensor._constant(np.broadcast_to(np.eye(n, dtype=x.dtype), (batch, n, n)).copy(), x.dtype)
    values = x
    for pairs in layers:
        if not pairs:
            continue
        lo, hi = (np.array(p, dtype=np.int64) for p in zip(*pairs))
        rest = np.setdiff1d(np.arange(n), np.concatenate([lo, hi]))
        back = np.argsort(np.concatenate([rest, lo, hi]))
        gap = index_select(values, 1, hi) - index_select(values, 1, lo)
        alpha = _relaxed_step(gap * steepness, sigmoid)
        values = _mix_rows(values, lo, hi, rest, back, alpha)
        perm = _mix_rows(perm, lo, hi, rest, back, alpha)
    return flip(perm, 1) if descending else reshape(perm, (batch, n, n))
