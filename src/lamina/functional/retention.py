"""Retention (Sun et al., "Retentive Network: A Successor to Transformer for Large Language
Models", 2023) in its three equivalent forms, per head h with decay gamma_h in (0, 1):

    parallel     O = (Q K^T * D) V,        D_nm = gamma^(n - m) for n >= m, else 0
    recurrent    S_n = gamma S_{n-1} + k_n^T v_n,   o_n = q_n S_n
    chunkwise    per chunk of B steps (positions j = 0 .. B-1 within it):
                 O = (Q K^T * D_B) V + (Q S_prev) * xi,          xi_j = gamma^(j + 1)
                 S = gamma^B S_prev + K^T (V * zeta),            zeta_j = gamma^(B - 1 - j)

Q, K (N, H, T, d_k) and V (N, H, T, d_v); S (N, H, d_k, d_v) is the state carried from step
to step (the recurrent and chunkwise forms start from ``state``, zeros by default, and return
the last one). The parallel form costs O(T^2) and suits training, the recurrent one O(1) per
step (generation), the chunkwise one O(T B) for long sequences. Composites of primitive ops
(first and second derivatives come with them).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import matmul
from lamina.functional.shape import concat, swapaxes

__all__ = ["retention_chunkwise", "retention_decay_mask", "retention_parallel", "retention_recurrent"]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))


def _decays(who: str, gamma, heads: int) -> np.ndarray:
    decays = np.asarray(gamma.data if isinstance(gamma, Tensor) else backend.to_numpy(gamma), dtype=np.float64)
    decays = decays.reshape(-1)
    if decays.shape != (heads,) or not ((decays > 0) & (decays <= 1)).all():
        raise ValueError(f"{who}: gamma must hold one decay in (0, 1] per head ({heads}), got {decays.tolist()}")
    return decays


def _check(who: str, q: Tensor, k: Tensor, v: Tensor, state: Tensor | None) -> None:
    if q.ndim != 4 or q.shape != k.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ShapeError(f"{who}: expected q and k (N, H, T, d_k) and v (N, H, T, d_v), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    if state is not None and tuple(state.shape) != expected:
        raise ShapeError(f"{who}: state of shape {tuple(state.shape)}; expected (N, H, d_k, d_v) = {expected}")


def _powers(decays: np.ndarray, exponents: np.ndarray, dtype) -> np.ndarray:
    """gamma_h ** e as an (H, len(e), 1) constant."""
    return backend.xp.asarray(decays[:, None, None] ** exponents[None, :, None], dtype=dtype)


def retention_decay_mask(gamma, length: int, dtype=None) -> np.ndarray:
    """D (H, T, T): D_nm = gamma_h^(n - m) for n >= m, 0 above the diagonal."""
    decays = np.asarray(gamma, dtype=np.float64).reshape(-1)
    steps = np.arange(length)
    gaps = steps[:, None] - steps[None, :]
    mask = np.where(gaps >= 0, decays[:, None, None] ** np.maximum(gaps, 0), 0.0)
    return backend.xp.asarray(mask, dtype=backend.get_default_dtype() if dtype is None else dtype)


def retention_parallel(q, k, v, gamma) -> Tensor:
    """O = (Q K^T * D) V (N, H, T, d_v), D the decay mask of ``gamma`` (H,)."""
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    _check("retention_parallel", q, k, v, None)
    decays = _decays("retention_parallel", gamma, q.shape[1])
    return matmul(matmul(q, swapaxes(k, -1, -2)) * retention_decay_mask(decays, q.shape[2], v.dtype), v)


def retention_recurrent(q, k, v, gamma, state=None) -> tuple[Tensor, Tensor]:
    """The step-by-step form: S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n, from ``state``
    (N, H, d_k, d_v) (default zeros). Returns (O (N, H, T, d_v), the last S)."""
    who = "retention_recurrent"
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    state = None if state is None else _as_tensor(state)
    _check(who, q, k, v, state)
    decays = backend.xp.asarray(_decays(who, gamma, q.shape[1])[:, None, None], dtype=v.dtype)
    if state is None:
        state = Tensor._wrap(backend.xp.zeros((q.shape[0], q.shape[1], q.shape[3], v.shape[3]), dtype=v.dtype))
    outputs = []
    for n in range(q.shape[2]):
        state = state * decays + k[:, :, n, :, None] * v[:, :, n, None, :]
        outputs.append(matmul(q[:, :, n:n + 1], state))
    return concat(outputs, axis=2), state


def retention_chunkwise(q, k, v, gamma, chunk_size: int = 64, state=None) -> tuple[Tensor, Tensor]:
    """The chunkwise form (``chunk_size`` steps at a time; see the module docstring) from
    ``state`` (N, H, d_k, d_v) (default zeros). Returns (O (N, H, T, d_v), the last S)."""
    who = "retention_chunkwise"
    q, k, v = _as_tensor(q), _as_tensor(k), _as_tensor(v)
    state = None if state is None else _as_tensor(state)
    _check(who, q, k, v, state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{who}: chunk_size must be a positive int, got {chunk_size!r}")
    decays = _decays(who, gamma, q.shape[1])
    steps, dtype = q.shape[2], v.dtype
    outputs = []
    for start in range(0, steps, chunk_size):
        size = min(chunk_size, steps - start)
        qc, kc, vc = (x[:, :, start:start + size] for x in (q, k, v))
        within = np.arange(size)
        out = matmul(matmul(qc, swapaxes(kc, -1, -2)) * retention_decay_mask(decays, size, dtype), vc)
        if state is not None:
            out = out + matmul(qc, state) * _powers(decays, within + 1.0, dtype)
        outputs.append(out)
        carried = matmul(swapaxes(kc, -1, -2), vc * _powers(decays, size - 1.0 - within, dtype))
        state = carried if state is None else state * _powers(decays, np.asarray([float(size)]), dtype) + carried
    return (outputs[0] if len(outputs) == 1 else concat(outputs, axis=2)), state
