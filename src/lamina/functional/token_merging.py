"""Token merging (Bolya et al. 2023, "Token Merging: Your ViT But Faster"; ToMe): r of the
T tokens of a transformer layer are merged into others, so later layers read fewer tokens.

Bipartite soft matching, on a metric m (N, T, c) (the keys, averaged over heads):

    A = tokens 0, 2, 4, ...; B = tokens 1, 3, 5, ...      (alternating sets)
    S_ij = cos(m_a_i, m_b_j)                              (the class token, a_0, gets -inf)
    each a_i keeps its best edge j*(i) = argmax_j S_ij, of score s_i = max_j S_ij
    the r edges of highest s_i merge a_i into b_j*(i); the other A tokens stay

The merged sequence is [the unmerged A tokens in their order; B], of T - r tokens, the
class token first. Both maps are linear, y = M x and x' = U y with 0/1 matrices M (T - r, T)
and U = M^T (each token is read back from the row it went into), so gradients flow through
the merged values; the matching itself is a constant, as in the paper.

Merging by size-weighted average (``merge_wavg``): with the sizes s (N, T, 1) (how many
patches each token stands for; 1 at first), y = M (s x) / (M s) and the new sizes are M s.
Proportional attention (``proportional_attention``) adds log s_j to the attention logits,
so that a token of size s counts as s copies of itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention

__all__ = ["bipartite_soft_matching", "merge_wavg", "proportional_attention"]

MergeFn = Callable[..., Tensor]


def _identity(x, mode: str = "mean") -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _matching_matrix(metric, r: int, class_token: bool):
    """The (N, T - r, T) merge matrix M of the module docstring (float64 0/1 entries)."""
    xp = backend.xp
    m = xp.asarray(metric, dtype=xp.float64)
    n, t, _ = m.shape
    m = m / xp.maximum(xp.linalg.norm(m, axis=-1, keepdims=True), 1e-12)
    a, b = m[:, ::2], m[:, 1::2]
    scores = a @ b.transpose(0, 2, 1)
    if class_token:
        scores[:, 0, :] = -xp.inf
    best, best_b = scores.max(axis=-1), scores.argmax(axis=-1)
    order = xp.argsort(-best, axis=-1, kind="stable")
    src = order[:, :r]
    kept = xp.sort(order[:, r:], axis=-1)
    dst = xp.take_along_axis(best_b, src, axis=-1)
    t_a, t_b = a.shape[1], b.shape[1]
    rows = numpy.arange(n)[:, None]
    merge = xp.zeros((n, t_a - r + t_b, t))
    merge[rows, xp.arange(t_a - r)[None], 2 * kept] = 1.0
    merge[:, t_a - r + xp.arange(t_b), 2 * xp.arange(t_b) + 1] = 1.0
    merge[rows, t_a - r + dst, 2 * src] = 1.0
    return merge


def bipartite_soft_matching(metric, r: int, class_token: bool = True) -> tuple[MergeFn, MergeFn]:
    """(merge, unmerge) for merging ``r`` tokens of the sequences whose ``metric`` is
    (N, T, c) (module docstring). ``merge(x, mode="mean")`` maps x (N, T, C) to (N, T - r, C),
    summing (mode "sum") or averaging (mode "mean") the tokens merged together;
    ``unmerge(y)`` maps (N, T - r, C) back to (N, T, C), every token taking its merged row's
    value. r is capped at (T - class_token) // 2; r = 0 gives the identity for both.
    ``class_token``: token 0 is never merged and stays first."""
    m = metric.data if isinstance(metric, Tensor) else backend.xp.asarray(metric)
    if m.ndim != 3:
        raise ShapeError(f"bipartite_soft_matching: metric must be (batch, tokens, features), got shape "
                         f"{tuple(m.shape)}")
    if int(r) != r or r < 0:
        raise ValueError(f"bipartite_soft_matching: r must be a non-negative int, got {r!r}")
    r = min(int(r), (m.shape[1] - int(class_token)) // 2)
    if r == 0:
        return _identity, _identity
    matrix = _matching_matrix(m, r, class_token)

    def merge(x, mode: str = "mean") -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if mode not in ("sum", "mean"):
            raise ValueError(f"bipartite_soft_matching merge: mode must be 'sum' or 'mean', got {mode!r}")
        if x.ndim != 3 or tuple(x.shape[:2]) != matrix.shape[::2]:
            raise ShapeError(f"bipartite_soft_matching merge: expected x of shape ({matrix.shape[0]}, "
                             f"{matrix.shape[2]}, C), got {tuple(x.shape)}")
        weights = matrix if mode == "sum" else matrix / matrix.sum(axis=-1, keepdims=True)
        return F.matmul(Tensor(weights.astype(x.dtype)), x)

    def unmerge(y) -> Tensor:
        y = y if isinstance(y, Tensor) else Tensor(y)
        if y.ndim != 3 or tuple(y.shape[:2]) != matrix.shape[:2]:
            raise ShapeError(f"bipartite_soft_matching unmerge: expected y of shape ({matrix.shape[0]}, "
                             f"{matrix.shape[1]}, C), got {tuple(y.shape)}")
        return F.matmul(Tensor(matrix.transpose(0, 2, 1).astype(y.dtype)), y)

    return merge, unmerge


def merge_wavg(merge: MergeFn, x, size=None) -> tuple[Tensor, Tensor]:
    """(y, new sizes) = (M (s x) / (M s), M s): merge x (N, T, C) by the size-weighted
    average, ``size`` (N, T, 1) defaulting to ones."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if size is None:
        size = Tensor(backend.xp.ones((x.shape[0], x.shape[1], 1), dtype=x.dtype))
    size = size if isinstance(size, Tensor) else Tensor(size)
    if tuple(size.shape) != (x.shape[0], x.shape[1], 1):
        raise ShapeError(f"merge_wavg: size must be (batch, tokens, 1) = ({x.shape[0]}, {x.shape[1]}, 1), got "
                         f"{tuple(size.shape)}")
    total = merge(F.mul(x, size), mode="sum")
    new_size = merge(size, mode="sum")
    return F.div(total, new_size), new_size


def proportional_attention(q, k, v, size=None, scale: float | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d) + log s) V for Q (N, h, T_q, d), K and V (N, h, T_k, d) and key
    sizes s (N, T_k, 1): a key of size s weighs as s copies of it. ``size`` None is plain
    attention."""
    k = k if isinstance(k, Tensor) else Tensor(k)
    if size is None:
        return scaled_dot_product_attention(q, k, v, scale=scale)
    s = size.data if isinstance(size, Tensor) else backend.xp.asarray(size)
    if s.ndim != 3 or s.shape[-1] != 1 or s.shape[1] != k.shape[-2]:
        raise ShapeError(f"proportional_attention: size must be (batch, keys, 1) with keys = {k.shape[-2]}, got "
                         f"{tuple(s.shape)}")
    bias = backend.xp.log(s[:, None, :, 0][:, :, None, :]).astype(k.dtype)
    return scaled_dot_product_attention(q, k, v, mask=bias, scale=scale)
