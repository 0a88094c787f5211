"""Three classic approximations of softmax attention, softmax(Q K^T / sqrt(d)) V, that avoid
its T x T score matrix. Q, K: (..., T, d), V: (..., T, d_v).

Linformer (Wang et al. 2020) projects keys and values along the sequence axis to k rows with
learned matrices E, F (k, T_max), of which the first T columns are used:

    linformer(Q, K, V) = softmax(Q (E K)^T / sqrt(d)) (F V)                    O(T k)

Nystromformer (Xiong et al. 2021) takes m landmarks, the means of m equal segments of Q and K
(Q~, K~: (..., m, d)), and rebuilds the attention matrix from three softmax kernels:

    nystrom(Q, K, V) = softmax(Q K~^T s) pinv(softmax(Q~ K~^T s)) softmax(Q~ K^T s) V,   s = 1 / sqrt(d)

with the pseudo-inverse of the m x m middle kernel A by the iteration of the paper,

    Z_0 = A^T / (|A|_1 |A|_inf),   Z_{j+1} = Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))) / 4,

|A|_1 the largest column sum of |A|, |A|_inf the largest row sum.

Reformer's LSH attention (Kitaev et al. 2020) shares queries and keys (keys are the unit
vectors k = q / max(|q|, 1e-12)), hashes each position by a random rotation R (d, rounds, b / 2) into one
of b buckets, h(x) = argmax [x R, -x R], sorts the positions by (bucket, position), cuts the
sorted sequence into chunks of c and lets each chunk attend to itself and the chunk before it
(cyclically). A position attends to itself only when it has nothing else to attend to (its
score is replaced by -1e5); ``causal`` masks later positions. The outputs o_r of several
hash rounds are combined with the weights of their log-normalisers z_r = logsumexp of the
scores:  out = sum_r exp(z_r - logsumexp_r z_r) o_r.

All three are built from primitive ops: first and second derivatives come with them (the
bucket assignment of LSH attention is piecewise constant, no gradient flows through it).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import abs as elementwise_abs
from lamina.functional.elementwise import clip, exp, sqrt, where
from lamina.functional.indexing import gather
from lamina.functional.reduce import max as reduce_max
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat, expand_dims, reshape, swapaxes

__all__ = ["linformer_attention", "lsh_attention", "lsh_buckets", "nystrom_attention", "nystrom_pinv"]

SELF_SCORE = -1e5
"""The score a position gives itself in LSH attention: it wins only when nothing else is left."""
MASKED_SCORE = -1e9
"""The score of a key hidden by the causal mask (weight exactly 0 next to any other key)."""
NORM_FLOOR = 1e-12
"""The least norm LSH attention divides a key by (a zero vector stays zero)."""


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))


def _check_qkv(who: str, q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[-1] != k.shape[-1] \
            or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{who}: expected q (..., T_q, d), k (..., T_k, d) and v (..., T_k, d_v) with the same "
                         f"number of axes, got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")


def linformer_attention(q, k, v, e, f=None) -> Tensor:
    """softmax(Q (E K)^T / sqrt(d)) (F V) (module docstring). ``e`` and ``f`` (default ``e``):
    (..., k, T_max) with T_max >= T_k, broadcast against the batch axes; their first T_k
    columns project the keys and the values."""
    q, k, v, e = (_as_tensor(x) for x in (q, k, v, e))
    f = e if f is None else _as_tensor(f)
    _check_qkv("linformer_attention", q, k, v)
    length = k.shape[-2]
    for name, p in (("e", e), ("f", f)):
        if p.ndim < 2 or p.shape[-1] < length:
            raise ShapeError(f"linformer_attention: {name} must be (..., k, T_max) with T_max >= the {length} keys, "
                             f"got {tuple(p.shape)}")
    if e.shape[-2] != f.shape[-2]:
        raise ShapeError(f"linformer_attention: e {tuple(e.shape)} and f {tuple(f.shape)} must project to the same k")
    if e.shape[-1] != length:
        e = e[..., :length]
    if f.shape[-1] != length:
        f = f[..., :length]
    keys, values = matmul(e, k), matmul(f, v)
    scores = matmul(q, swapaxes(keys, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return matmul(softmax(scores, axis=-1), values)


def nystrom_pinv(a, iterations: int = 6) -> Tensor:
    """The Moore-Penrose pseudo-inverse of the square matrices ``a`` (..., m, m) by the
    Nystromformer's iteration from Z_0 = A^T / (|A|_1 |A|_inf) (module docstring)."""
    a = _as_tensor(a)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(f"nystrom_pinv: expected square matrices (..., m, m), got {tuple(a.shape)}")
    if int(iterations) < 0:
        raise ValueError(f"nystrom_pinv: iterations must be >= 0, got {iterations}")
    magnitude = elementwise_abs(a)
    column_norm = reduce_max(reduce_sum(magnitude, axis=-2), axis=-1, keepdims=True)
    row_norm = reduce_max(reduce_sum(magnitude, axis=-1), axis=-1, keepdims=True)
    z = swapaxes(a, -1, -2) / expand_dims(column_norm * row_norm, -1)
    eye = backend.xp.eye(a.shape[-1], dtype=a.dtype)
    for _ in range(int(iterations)):
        az = matmul(a, z)
        z = matmul(z, 13 * eye - matmul(az, 15 * eye - matmul(az, 7 * eye - az))) * 0.25
    return z


def _segment_means(x: Tensor, landmarks: int) -> Tensor:
    """(..., T, d) -> (..., m, d): the means of m consecutive segments of T / m rows."""
    *lead, length, width = x.shape
    return mean(reshape(x, (*lead, landmarks, length // landmarks, width)), axis=-2)


def nystrom_attention(q, k, v, num_landmarks: int, pinv_iterations: int = 6) -> Tensor:
    """Nystromformer attention with ``num_landmarks`` segment-mean landmarks, which must
    divide the sequence length (module docstring)."""
    q, k, v = (_as_tensor(x) for x in (q, k, v))
    _check_qkv("nystrom_attention", q, k, v)
    m = int(num_landmarks)
    if m < 1 or q.shape[-2] % m or k.shape[-2] % m:
        raise ShapeError(f"nystrom_attention: num_landmarks {num_landmarks} must divide the {q.shape[-2]} queries "
                         f"and the {k.shape[-2]} keys into equal segments")
    scale = 1.0 / math.sqrt(q.shape[-1])
    q_marks, k_marks = _segment_means(q, m), _segment_means(k, m)
    kernel_1 = softmax(matmul(q, swapaxes(k_marks, -1, -2)) * scale, axis=-1)
    kernel_2 = softmax(matmul(q_marks, swapaxes(k_marks, -1, -2)) * scale, axis=-1)
    kernel_3 = softmax(matmul(q_marks, swapaxes(k, -1, -2)) * scale, axis=-1)
    return matmul(matmul(kernel_1, nystrom_pinv(kernel_2, pinv_iterations)), matmul(kernel_3, v))


def lsh_buckets(x, rotations) -> np.ndarray:
    """The bucket of each row of ``x`` (..., T, d) in each hash round: an integer array
    (..., rounds, T) of argmax [x R_r, -x R_r] for ``rotations`` R (d, rounds, b / 2); all in
    bucket 0 for rotations (d, rounds, 0), a single bucket."""
    xp = backend.xp
    data = x.data if isinstance(x, Tensor) else xp.asarray(x)
    rotations = xp.asarray(rotations.data if isinstance(rotations, Tensor) else rotations)
    if rotations.ndim != 3 or rotations.shape[0] != data.shape[-1]:
        raise ShapeError(f"lsh_buckets: rotations must be (d, rounds, buckets / 2) with d = {data.shape[-1]}, got "
                         f"{tuple(rotations.shape)}")
    if rotations.shape[-1] == 0:                                                 # a single bucket
        return xp.zeros(data.shape[:-2] + (rotations.shape[1], data.shape[-2]), dtype=np.int64)
    rotated = xp.einsum("...td,drh->...rth", data, rotations.astype(data.dtype, copy=False))
    return xp.argmax(xp.concatenate([rotated, -rotated], axis=-1), axis=-1)


def _previous_chunk(x: Tensor) -> Tensor:
    """Along the chunk axis -3, chunk i - 1 in place of chunk i (the first takes the last)."""
    return concat([x[..., -1:, :, :], x[..., :-1, :, :]], axis=-3)


def lsh_attention(qk, v, rotations, chunk_size: int, causal: bool = False) -> Tensor:
    """Reformer attention with shared queries and keys ``qk`` (..., T, d), values ``v``
    (..., T, d_v), hash ``rotations`` (d, rounds, buckets / 2) and chunks of ``chunk_size``
    sorted positions, which must divide T (module docstring)."""
    qk, v = _as_tensor(qk), _as_tensor(v)
    _check_qkv("lsh_attention", qk, qk, v)
    *lead, length, width = qk.shape
    c = int(chunk_size)
    if c < 1 or length % c:
        raise ShapeError(f"lsh_attention: chunk_size {chunk_size} must divide the sequence length {length}")
    xp = backend.xp
    batch = int(np.prod(lead, dtype=np.int64))
    qk, v = reshape(qk, (batch, length, width)), reshape(v, (batch, length, v.shape[-1]))
    buckets = lsh_buckets(qk, rotations)                                        # (B, R, T)
    rounds, chunks = buckets.shape[1], length // c
    positions = xp.arange(length)
    order = xp.argsort(buckets * length + positions, axis=-1, kind="stable")    # sorted position -> position
    undo = xp.argsort(order, axis=-1)

    def sort(x: Tensor) -> Tensor:                                              # (B, T, w) -> (B, R, n, c, w)
        index = xp.broadcast_to(order.reshape(batch, rounds * length, 1), (batch, rounds * length, x.shape[-1]))
        return reshape(gather(x, 1, index), (batch, rounds, chunks, c, x.shape[-1]))

    queries, values = sort(qk), sort(v)
    keys = queries / sqrt(clip(reduce_sum(queries * queries, axis=-1, keepdims=True), NORM_FLOOR ** 2, None))
    query_pos = order.reshape(batch, rounds, chunks, c)
    key_pos = query_pos
    if chunks > 1:
        keys, values = concat([keys, _previous_chunk(keys)], axis=-2), concat([values, _previous_chunk(values)], -2)
        key_pos = xp.concatenate([query_pos, xp.roll(query_pos, 1, axis=2)], axis=-1)
    scores = matmul(queries, swapaxes(keys, -1, -2)) * (1.0 / math.sqrt(width))
    scores = where(query_pos[..., :, None] == key_pos[..., None, :], SELF_SCORE, scores)
    if causal:
        scores = where(key_pos[..., None, :] > query_pos[..., :, None], MASKED_SCORE, scores)
    log_norm = logsumexp(scores, axis=-1, keepdims=True)
    out = matmul(exp(scores - log_norm), values)                              # (B, R, n, c, d_v)
    d_v = out.shape[-1]
    out = gather(reshape(out, (batch, rounds, length, d_v)), 2,
                 xp.broadcast_to(undo[..., None], (batch, rounds, length, d_v)))
    log_norm = gather(reshape(log_norm, (batch, rounds, length)), 2, undo)
    if rounds > 1:
        weights = exp(log_norm - logsumexp(log_norm, axis=1, keepdims=True))
        out = reduce_sum(out * expand_dims(weights, -1), axis=1)
    else:
        out = reshape(out, (batch, length, d_v))
    return reshape(out, (*lead, length, d_v))
