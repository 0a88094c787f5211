"""Linear attention (Katharopoulos et al., "Transformers are RNNs", 2020) and the
Performer's FAVOR+ features (Choromanski et al., "Rethinking Attention with Performers", 2021).

Softmax attention's similarity exp(q . k) is replaced by a product of feature maps
phi(q) . phi(k), so the sums over the keys factor out of the queries:

    out_t = phi(q_t) S / (phi(q_t) . z + eps),   S = sum_s phi(k_s)^T v_s,   z = sum_s phi(k_s)

with s over every key, or over s <= t when causal (prefix sums: S_t = S_{t-1} + phi(k_t)^T v_t).
Time and memory are linear in the length T instead of quadratic. The causal form runs over
chunks of ``chunk_size`` steps: inside a chunk the masked products (phi(Q) phi(K)^T) V are
formed (chunk x chunk), across chunks the running S (d x d_v) and z carry the earlier keys,
so the graph holds T / chunk states and T chunk scores: O(T d d_v / chunk + T chunk).

FAVOR+ estimates softmax attention with positive random features: for w_1 .. w_m drawn
N(0, I) (orthogonal blocks, rows rescaled to Gaussian norms),

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),     E[phi(q) . phi(k)] = exp(q . k),

so phi(q / d^(1/4)) . phi(k / d^(1/4)) estimates exp(q . k / sqrt(d)); the estimate's error
falls as m grows. Built from primitive ops: first and second derivatives come with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import elu, relu
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import exp
from lamina.functional.reduce import max as reduce_max
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.shape import concat, swapaxes

__all__ = ["FEATURE_MAPS", "favor_features", "linear_attention", "orthogonal_random_features",
           "performer_attention"]


def _elu_plus_one(x: Tensor) -> Tensor:
    return elu(x) + 1.0


FEATURE_MAPS: dict[str, Callable[[Tensor], Tensor]] = {"elu+1": _elu_plus_one, "relu": relu,
                                                       "identity": lambda x: x}
"""The named feature maps phi of :func:`linear_attention`: elu(x) + 1 (the paper's,
positive), relu(x), and x itself."""


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))


def _check_qkv(who: str, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> None:
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ShapeError(f"{who}: q, k and v need the same number (>= 2) of axes (..., T, d), got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{who}: q (..., T_q, d), k (..., T_k, d) and v (..., T_k, d_v) must agree on d and T_k, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)} and {tuple(v.shape)}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ShapeError(f"{who}: causal attention needs as many queries as keys, got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")


def _feature_map(who: str, feature_map) -> Callable[[Tensor], Tensor]:
    if callable(feature_map):
        return feature_map
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"{who}: feature_map must be a callable or one of {tuple(FEATURE_MAPS)}, got "
                         f"{feature_map!r}")
    return FEATURE_MAPS[feature_map]


def kernel_attention(fq: Tensor, fk: Tensor, v: Tensor, causal: bool = False, chunk_size: int = 64,
                     eps: float = 1e-6, state=None, return_state: bool = False):
    """out = phi(Q) S / (phi(Q) z + eps) on the features fq = phi(Q) (..., T_q, m),
    fk = phi(K) (..., T_k, m) and v (..., T_k, d_v) (see the module docstring). Causal only:
    the sums carried in from earlier steps ``state`` = (S (..., m, d_v), z (..., m, 1))
    (default zeros), and with ``return_state`` the pair (out, the sums after the last step)."""
    if not causal:
        keys_values = matmul(swapaxes(fk, -1, -2), v)                       # (..., m, d_v)
        key_sum = reduce_sum(fk, axis=-2, keepdims=True)                   # (..., 1, m)
        return matmul(fq, keys_values) / (matmul(fq, swapaxes(key_sum, -1, -2)) + eps)
    sums = _initial_sums(fq, v) if state is None else tuple(_as_tensor(s) for s in state)
    outputs = []
    for start in range(0, fq.shape[-2], chunk_size):
        chunk = slice(start, start + chunk_size)
        out, sums = _causal_chunk(fq[..., chunk, :], fk[..., chunk, :], v[..., chunk, :], sums, eps)
        outputs.append(out)
    out = outputs[0] if len(outputs) == 1 else concat(outputs, axis=-2)
    return (out, sums) if return_state else out


def _initial_sums(fq: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    xp, batch, m = backend.xp, fq.shape[:-2], fq.shape[-1]
    return (Tensor._wrap(xp.zeros((*batch, m, v.shape[-1]), dtype=v.dtype)),
            Tensor._wrap(xp.zeros((*batch, m, 1), dtype=v.dtype)))


def _causal_chunk(qc: Tensor, kc: Tensor, vc: Tensor, sums, eps: float):
    """One chunk of causal attention: the masked (chunk x chunk) scores for the keys inside it,
    the carried sums (S, z) for the earlier keys. Returns (out, the sums after the chunk)."""
    keys_values, key_sum = sums
    size = qc.shape[-2]
    lower = backend.xp.tril(backend.xp.ones((size, size), dtype=vc.dtype))
    scores = matmul(qc, swapaxes(kc, -1, -2)) * lower
    numerator = matmul(scores, vc) + matmul(qc, keys_values)
    denominator = reduce_sum(scores, axis=-1, keepdims=True) + matmul(qc, key_sum)
    keys_values = keys_values + matmul(swapaxes(kc, -1, -2), vc)
    key_sum = key_sum + swapaxes(reduce_sum(kc, axis=-2, keepdims=True), -1, -2)
    return numerator / (denominator + eps), (keys_values, key_sum)


def linear_attention(q, k, v, feature_map: str | Callable = "elu+1", causal: bool = False, chunk_size: int = 64,
                     eps: float = 1e-6, state=None, return_state: bool = False):
    """Linear attention out (..., T_q, d_v) for q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v):
    out_t = phi(q_t) sum_s phi(k_s)^T v_s / (phi(q_t) . sum_s phi(k_s) + eps), s over every key
    or, ``causal``, s <= t (prefix sums, computed ``chunk_size`` steps at a time).
    ``feature_map``: 'elu+1' (default), 'relu', 'identity' or a callable on tensors.

    Causal only, to continue a sequence: ``state`` = (S (..., d, d_v), z (..., d, 1)), the sums
    over the earlier keys (default zeros); ``return_state`` returns (out, the sums after the
    last step), so that two calls on the halves of a sequence give the outputs of one."""
    who = "linear_attention"
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    _check_qkv(who, q, k, v, causal)
    _check_chunk_and_state(who, chunk_size, causal, state, return_state)
    phi = _feature_map(who, feature_map)
    return kernel_attention(phi(q), phi(k), v, causal, chunk_size, eps, state, return_state)


def _check_chunk_and_state(who: str, chunk_size, causal: bool, state, return_state: bool) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{who}: chunk_size must be a positive int, got {chunk_size!r}")
    if (state is not None or return_state) and not causal:
        raise ValueError(f"{who}: state and return_state carry the sums of a causal sequence; they need "
                         "causal=True")


def orthogonal_random_features(num_features: int, dim: int, seed: int | None = None, dtype=None) -> np.ndarray:
    """FAVOR+'s projection W (num_features, dim): blocks of ``dim`` orthonormal rows (QR of a
    Gaussian matrix), each row rescaled to the norm of a Gaussian vector of ``dim`` entries, so
    that every row is N(0, I) while the rows of a block are orthogonal. ``seed`` fixes the
    draw (a new seed redraws). A backend array of ``dtype`` (default: the default dtype)."""
    for value, what in ((num_features, "num_features"), (dim, "dim")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"orthogonal_random_features: {what} must be a positive int, got {value!r}")
    rng = np.random.default_rng(seed)
    blocks, left = [], num_features
    while left > 0:
        orthonormal, triangle = np.linalg.qr(rng.standard_normal((dim, dim)))
        orthonormal = orthonormal * np.sign(np.diag(triangle))      # uniform (Haar) only with these signs
        blocks.append(orthonormal.T[:min(left, dim)])
        left -= dim
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1)
    projection = norms[:, None] * np.concatenate(blocks, axis=0)
    return backend.xp.asarray(projection, dtype=backend.get_default_dtype() if dtype is None else dtype)


def favor_features(x, projection, offset=None) -> Tensor:
    """FAVOR+'s positive random features of x (..., T, d) with W = ``projection`` (m, d):
    phi(x) = exp(x W^T - |x|^2 / 2 - offset) / sqrt(m), (..., T, m). ``offset`` (broadcastable,
    default 0) scales every feature by exp(-offset): a shift that cancels in attention and
    keeps exp from overflowing."""
    x = _as_tensor(x)
    w = projection if isinstance(projection, Tensor) else Tensor._wrap(backend.xp.asarray(projection, dtype=x.dtype))
    if w.ndim != 2 or x.ndim < 1 or w.shape[1] != x.shape[-1]:
        raise ShapeError(f"favor_features: expected x (..., d) and a projection (m, d), got {tuple(x.shape)} and "
                         f"{tuple(w.shape)}")
    logits = matmul(x, swapaxes(w, 0, 1)) - 0.5 * reduce_sum(x * x, axis=-1, keepdims=True)
    if offset is not None:
        logits = logits - offset
    return exp(logits) * (1.0 / math.sqrt(w.shape[0]))


def performer_attention(q, k, v, projection, causal: bool = False, scale: float | None = None,
                        chunk_size: int = 64, eps: float = 1e-6, state=None, return_state: bool = False):
    """FAVOR+ attention (..., T_q, d_v): linear attention with the features
    phi(q sqrt(scale)) and phi(k sqrt(scale)) of :func:`favor_features` (``scale`` default
    1 / sqrt(d)), an unbiased estimate of softmax(q k^T scale) v's weights. For stability each
    query's features are divided by their largest exp (it cancels in the ratio) and the keys'
    by the largest exp over the keys the query sees and their features: every key of the row,
    or, ``causal``, the keys up to the query's step (so no later key reaches it, not even
    through ``eps``).

    Causal only, to continue a sequence: ``state`` = (S (..., m, d_v), z (..., m, 1), c (..., 1, 1)),
    the sums over the earlier keys with their features divided by exp(c), c the largest key
    logit so far; ``return_state`` returns (out, that state after the last step)."""
    who = "performer_attention"
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    _check_qkv(who, q, k, v, causal)
    _check_chunk_and_state(who, chunk_size, causal, state, return_state)
    root = math.sqrt(q.shape[-1] ** -0.5 if scale is None else scale)
    qn, kn = q * root, k * root
    query_features = favor_features(qn, projection, _log_max(qn, projection, (-1,)))
    if not causal:
        key_features = favor_features(kn, projection, _log_max(kn, projection, (-2, -1)))
        return kernel_attention(query_features, key_features, v, False, chunk_size, eps)
    key_logits = _log_max(kn, projection, (-1,))                          # (..., T, 1)
    if state is None:
        sums, offset = _initial_sums(query_features, v), None
    else:
        *sums, offset = (_as_tensor(s) for s in state)
    outputs = []
    for start in range(0, q.shape[-2], chunk_size):
        chunk = slice(start, start + chunk_size)
        running = _prefix_max(key_logits[..., chunk, :], offset)          # (..., c, 1)
        top = running[..., -1:, :]
        if offset is not None:
            sums = tuple(s * exp(offset - top) for s in sums)
        fq = query_features[..., chunk, :] * exp(top - running)
        fk = favor_features(kn[..., chunk, :], projection, top)
        out, sums = _causal_chunk(fq, fk, v[..., chunk, :], sums, eps)
        outputs.append(out)
        offset = top
    out = outputs[0] if len(outputs) == 1 else concat(outputs, axis=-2)
    return (out, (*sums, offset)) if return_state else out


def _prefix_max(logits: Tensor, carried: Tensor | None) -> Tensor:
    """Step t's max(carried, logits_1 .. logits_t) for logits (..., c, 1)."""
    size = logits.shape[-2]
    xp = backend.xp
    hidden = xp.where(xp.tril(xp.ones((size, size), dtype=bool)), 0.0, -xp.inf).astype(logits.dtype)
    rows = swapaxes(logits, -1, -2) + hidden                               # (..., c, c), later steps at -inf
    if carried is not None:
        rows = concat([rows, carried + xp.zeros((size, 1), dtype=logits.dtype)], axis=-1)
    return reduce_max(rows, axis=-1, keepdims=True)


def _log_max(x: Tensor, projection, axes: tuple[int, ...]) -> Tensor:
    """The largest x W^T over ``axes`` (kept): the stabilising offset of the features."""
    w = projection if isinstance(projection, Tensor) else Tensor._wrap(backend.xp.asarray(projection, dtype=x.dtype))
    logits = matmul(x, swapaxes(w, 0, 1))
    for axis in axes:
        logits = reduce_max(logits, axis=axis, keepdims=True)
    return logits
