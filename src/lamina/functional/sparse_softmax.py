"""Sparse alternatives to softmax: sparsemax (Martins & Astudillo 2016) and 1.5-entmax
(Peters, Niculae & Martins 2019). Both map scores z to the probability simplex and give
exact zeros to low scores, which makes them the attention masks of TabNet.

    sparsemax(z)  = argmin_{p in simplex} ||p - z||^2 = max(z - tau, 0)
    entmax15(z)   = max(z / 2 - tau, 0)^2

with the threshold tau chosen so that the output sums to one; both are found exactly from
the sorted scores. Their Jacobians have closed forms on the support S (the nonzero outputs):

    sparsemax:  dJ/dz = s * (g - sum_S g / |S|)                  s = 1 on S, g = dJ/dp
    entmax15:   dJ/dz = r * g - r * sum(r * g) / sum(r)          r = sqrt(p)
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError

__all__ = ["entmax15", "sparsemax"]


def _sorted_descending(z, axis: int):
    return -backend.xp.sort(-z, axis=axis)


def _ranks(z, axis: int):
    """1, 2, ..., K along ``axis``, shaped to broadcast against z."""
    shape = [1] * z.ndim
    shape[axis] = z.shape[axis]
    return backend.xp.arange(1, z.shape[axis] + 1, dtype=z.dtype).reshape(shape)


def sparsemax_threshold(z, axis: int):
    """tau of sparsemax along ``axis`` (kept as a length-1 axis): with z_(1) >= z_(2) >= ... and
    k the largest rank with 1 + k z_(k) > z_(1) + ... + z_(k), tau = (z_(1) + ... + z_(k) - 1) / k."""
    xp = backend.xp
    ordered = _sorted_descending(z, axis)
    cumulative = xp.cumsum(ordered, axis=axis)
    ranks = _ranks(z, axis)
    support = (1 + ranks * ordered > cumulative).sum(axis=axis, keepdims=True)
    return (xp.take_along_axis(cumulative, support - 1, axis=axis) - 1) / support.astype(z.dtype)


def entmax15_threshold(half, axis: int):
    """tau of 1.5-entmax along ``axis`` for the halved scores ``half`` = z / 2: for each rank k
    the candidate tau_k = mean_k - sqrt(max((1 - k var_k) / k, 0)) (mean and biased variance
    of the k largest), and tau is the candidate of the largest k with tau_k <= z_(k) / 2."""
    xp = backend.xp
    ordered = _sorted_descending(half, axis)
    ranks = _ranks(half, axis)
    mean = xp.cumsum(ordered, axis=axis) / ranks
    mean_square = xp.cumsum(ordered * ordered, axis=axis) / ranks
    spread = ranks * (mean_square - mean * mean)
    candidates = mean - xp.sqrt(xp.maximum((1 - spread) / ranks, 0))
    support = (candidates <= ordered).sum(axis=axis, keepdims=True)
    return xp.take_along_axis(candidates, support - 1, axis=axis)


class Sparsemax(Function):
    """p = max(z - tau, 0) along ``axis``; dJ/dz = s (g - sum_S g / |S|) (module docstring)."""

    def forward(self, z):
        p = backend.xp.maximum(z - sparsemax_threshold(z, self.axis), 0)
        self.support = (p > 0).astype(z.dtype)
        return p

    def backward(self, dy):
        s = self.support
        mean = (dy * s).sum(axis=self.axis, keepdims=True) / s.sum(axis=self.axis, keepdims=True)
        return (s * (dy - mean),)

    def backward_graph(self, dy):
        s = Tensor._wrap(self.support)          # piecewise constant in z: no gradient of its own
        mean = (dy * s).sum(axis=self.axis, keepdims=True) / s.sum(axis=self.axis, keepdims=True)
        return (s * (dy - mean),)


class Entmax15(Function):
    """p = max(z / 2 - tau, 0)^2 along ``axis``; dJ/dz = r g - r sum(r g) / sum(r), r = sqrt(p)."""

    def forward(self, z):
        xp = backend.xp
        half = (z - z.max(axis=self.axis, keepdims=True)) / 2
        self.root = xp.maximum(half - entmax15_threshold(half, self.axis), 0)
        return self.root * self.root

    def backward(self, dy):
        r = self.root
        weighted = r * dy
        share = weighted.sum(axis=self.axis, keepdims=True) / r.sum(axis=self.axis, keepdims=True)
        return (weighted - share * r,)

    def backward_graph(self, dy):
        # r = max(z / 2 - tau, 0) with tau depending on z; recorded as a copy of this node whose
        # output is r^2 = p, so r is taken from p on its support, where its derivative is finite.
        p = self.recorded_output(self.root * self.root)
        s = Tensor._wrap((self.root > 0).astype(self.root.dtype))
        r = (p + (1 - s)).sqrt() * s
        weighted = r * dy
        share = weighted.sum(axis=self.axis, keepdims=True) / r.sum(axis=self.axis, keepdims=True)
        return (weighted - share * r,)


def _checked_axis(z, axis: int, op: str) -> int:
    ndim = len(z.shape)
    if ndim == 0 or not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for an input of shape {tuple(z.shape)}")
    return axis % ndim


def sparsemax(z, axis: int = -1) -> Tensor:
    """The Euclidean projection of the scores ``z`` onto the probability simplex along ``axis``:
    p = max(z - tau, 0), sum p = 1, with exact zeros (module docstring)."""
    z = z if isinstance(z, Tensor) else Tensor._constant(z, None)
    return Sparsemax.apply(z, axis=_checked_axis(z, axis, "sparsemax"))


def entmax15(z, axis: int = -1) -> Tensor:
    """1.5-entmax of the scores ``z`` along ``axis``: p = max(z / 2 - tau, 0)^2, sum p = 1, between
    softmax and sparsemax in sparsity (module docstring)."""
    z = z if isinstance(z, Tensor) else Tensor._constant(z, None)
    return Entmax15.apply(z, axis=_checked_axis(z, axis, "entmax15"))
