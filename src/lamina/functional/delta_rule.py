"""The delta rule of DeltaNet (Schlag et al., "Linear Transformers Are Secretly Fast Weight
Programmers", 2021; Yang et al., "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length", 2024) and its gated form (Yang et al., "Gated Delta Networks", 2025).

Per head the state S (d_k, d_v) (the transpose of the papers' d_v x d_k matrix) is a fast
weight memory that writes value v_t under key k_t by correcting what k_t already reads:

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     o_t = S_t^T (scale q_t)

with the writing strength beta_t in (0, 1) and the decay alpha_t = exp(log_alpha_t) in (0, 1]
(DeltaNet: alpha = 1). Written as S_t = alpha_t S_{t-1} + k_t u_t^T, the pseudo-values
u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t) of a chunk of C steps starting from S_0 solve one
unit-lower-triangular system (the WY representation / UT transform): with the cumulative
decays gamma_t = alpha_1 .. alpha_t inside the chunk and Gamma_ti = gamma_t / gamma_i,

    (I + tril_{-1}(diag(beta) (K K^T * Gamma))) U = diag(beta) V - diag(beta gamma) K S_0
    O = diag(gamma) (scale Q) S_0 + (tril(scale Q K^T) * Gamma) U
    S_C = gamma_C S_0 + K^T diag(gamma_C / gamma) U

so every chunk's triangular solve and masked products run at once and only S is carried from
chunk to chunk. Inputs: q, k (N, H, T, d_k), v (N, H, T, d_v), beta and log_alpha (N, H, T),
state (N, H, d_k, d_v). Composites of primitive ops and a triangular solve: first and second
derivatives come with them.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import exp
from lamina.functional.linalg import solve_triangular
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat, reshape, swapaxes

__all__ = ["delta_rule_chunkwise", "delta_rule_recurrent"]


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))


def check_sequence_inputs(who: str, q: Tensor, k: Tensor, v: Tensor, gates: dict, state: Tensor | None) -> None:
    """q, k (N, H, T, d_k), v (N, H, T, d_v), each of ``gates`` (name: (tensor or None,
    trailing shape)) (N, H, T, *trailing) and ``state`` (N, H, d_k, d_v)."""
    if q.ndim != 4 or q.shape != k.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ShapeError(f"{who}: expected q and k (N, H, T, d_k) and v (N, H, T, d_v), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[2] == 0:
        raise ShapeError(f"{who}: the sequence is empty (q of shape {tuple(q.shape)}, T = 0)")
    for name, (gate, trailing) in gates.items():
        if gate is not None and tuple(gate.shape) != (*q.shape[:3], *trailing):
            raise ShapeError(f"{who}: {name} of shape {tuple(gate.shape)}; expected (N, H, T{', d_k' * len(trailing)})"
                             f" = {(*q.shape[:3], *trailing)}")
    expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    if state is not None and tuple(state.shape) != expected:
        raise ShapeError(f"{who}: state of shape {tuple(state.shape)}; expected (N, H, d_k, d_v) = {expected}")


def check_chunk_size(who: str, chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{who}: chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def zero_state(q: Tensor, v: Tensor) -> Tensor:
    n, h, _, d_k = q.shape
    return Tensor._wrap(backend.xp.zeros((n, h, d_k, v.shape[3]), dtype=v.dtype))


def chunked(x: Tensor, size: int) -> Tensor:
    """(N, H, T, ...) -> (N, H, T / size, size, ...), T padded with zeros to a multiple of size."""
    steps = x.shape[2]
    extra = -steps % size
    if extra:
        pad = Tensor._wrap(backend.xp.zeros((*x.shape[:2], extra, *x.shape[3:]), dtype=x.dtype))
        x = concat([x, pad], axis=2)
    return reshape(x, (*x.shape[:2], (steps + extra) // size, size, *x.shape[3:]))


def lower_mask(size: int, dtype, strict: bool = False):
    return backend.xp.tril(backend.xp.ones((size, size), dtype=dtype), -1 if strict else 0)


def delta_rule_recurrent(q, k, v, beta, log_alpha=None, scale: float = 1.0, state=None, return_state: bool = False):
    """The delta rule one step at a time (module docstring): o_t = S_t^T (scale q_t) with
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, alpha_t = exp(log_alpha_t)
    (None: 1, DeltaNet), from ``state`` (N, H, d_k, d_v) (default zeros). Returns O (N, H, T, d_v),
    or with ``return_state`` the pair (O, the last S)."""
    who = "delta_rule_recurrent"
    q, k, v, beta = (as_tensor(x) for x in (q, k, v, beta))
    log_alpha = None if log_alpha is None else as_tensor(log_alpha)
    state = None if state is None else as_tensor(state)
    check_sequence_inputs(who, q, k, v, {"beta": (beta, ()), "log_alpha": (log_alpha, ())}, state)
    s = zero_state(q, v) if state is None else state
    outputs = []
    for t in range(q.shape[2]):
        if log_alpha is not None:
            s = s * exp(log_alpha[:, :, t, None, None])
        key = k[:, :, t:t + 1]                                               # (N, H, 1, d_k)
        error = v[:, :, t:t + 1] - matmul(key, s)                            # v_t^T - k_t^T S
        s = s + matmul(swapaxes(key, -1, -2), error * beta[:, :, t, None, None])
        outputs.append(matmul(q[:, :, t:t + 1] * scale, s))
    out = concat(outputs, axis=2)
    return (out, s) if return_state else out


def delta_rule_chunkwise(q, k, v, beta, log_alpha=None, chunk_size: int = 64, scale: float = 1.0, state=None,
                         return_state: bool = False):
    """The delta rule ``chunk_size`` steps at a time (the UT transform of the module
    docstring; T need not be a multiple): the same outputs and last state as
    :func:`delta_rule_recurrent`, with the same arguments."""
    who = "delta_rule_chunkwise"
    q, k, v, beta = (as_tensor(x) for x in (q, k, v, beta))
    log_alpha = None if log_alpha is None else as_tensor(log_alpha)
    state = None if state is None else as_tensor(state)
    check_sequence_inputs(who, q, k, v, {"beta": (beta, ()), "log_alpha": (log_alpha, ())}, state)
    steps = q.shape[2]
    size = min(check_chunk_size(who, chunk_size), steps)
    qc, kc, vc, bc = (chunked(x, size) for x in (q * scale, k, v, beta))     # (N, H, n, C, ...)
    dtype = v.dtype
    inclusive, strict = lower_mask(size, dtype), lower_mask(size, dtype, strict=True)
    if log_alpha is None:
        within = inclusive
        decayed_keys = kc
    else:
        cumulative = cumsum(chunked(log_alpha, size), axis=-1)               # log gamma_t, (N, H, n, C)
        gaps = cumulative[..., :, None] - cumulative[..., None, :]
        within = exp(gaps * inclusive) * inclusive                           # Gamma_ti, zero above the diagonal
        decayed_keys = kc * exp(cumulative)[..., None]
    weighted = matmul(kc, swapaxes(kc, -1, -2)) * within * strict * bc[..., None]
    d_v = v.shape[3]
    solved = solve_triangular(weighted, concat([vc, decayed_keys], axis=-1) * bc[..., None], upper=False,
                              unitriangular=True)
    pseudo_values, writers = solved[..., :d_v], solved[..., d_v:]            # U = pseudo - writers S_0
    scores = matmul(qc, swapaxes(kc, -1, -2)) * within
    s = zero_state(q, v) if state is None else state
    outputs = []
    for c in range(qc.shape[2]):
        u = pseudo_values[:, :, c] - matmul(writers[:, :, c], s)
        read = matmul(qc[:, :, c], s)
        if log_alpha is None:
            outputs.append(read + matmul(scores[:, :, c], u))
            s = s + matmul(swapaxes(kc[:, :, c], -1, -2), u)
            continue
        log_gamma = cumulative[:, :, c]                                      # (N, H, C)
        outputs.append(read * exp(log_gamma)[..., None] + matmul(scores[:, :, c], u))
        last = log_gamma[..., -1:]
        to_end = exp(last - log_gamma)[..., None]                             # gamma_C / gamma_i
        s = s * exp(last)[..., None] + matmul(swapaxes(kc[:, :, c] * to_end, -1, -2), u)
    out = concat(outputs, axis=2)
    if out.shape[2] != steps:
        out = out[:, :, :steps]
    return (out, s) if return_state else out
