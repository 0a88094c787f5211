"""State-space duality (SSD), the sequence mixer of Mamba-2 (Dao and Gu, "Transformers are
SSMs: Generalized Models and Efficient Algorithms Through Structured State Space Duality",
2024): a selective state-space recurrence whose decay is one scalar per head,

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T          (h_t: (P, S) per head)
    y_t = h_t C_t                                        (y_t: (P,) per head)

from h_0 = ``initial_state`` (zeros by default). Layout, batch first: x (N, T, H, P);
dt (N, T, H); A (H,) (negative for a decaying state); B, C (N, T, G, S), each of the G groups
shared by H / G consecutive heads; the state (N, H, P, S).

:func:`ssd` computes it by the chunked algorithm of the paper: with chunks of Q steps and
a_t = dt_t A summed within the chunk (cumulative sums c_t), the outputs are

    y = y_intra + y_inter
    y_intra[l] = sum_{s <= l in the chunk} (C_l . B_s) exp(c_l - c_s) dt_s x_s   (masked "attention")
    y_inter[l] = exp(c_l) h_start C_l                                               (state passing)

where each chunk's own contribution to the state, sum_s exp(c_Q - c_s) dt_s x_s B_s^T, is
passed from chunk to chunk with the chunk's total decay exp(c_Q). The cost is O(T Q) for
the intra-chunk part and O(T / Q) sequential steps, all matrix products. :func:`ssd_reference`
runs the recurrence step by step (for checks and one-token decoding).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import add, mul, sub
from lamina.functional.einsum import einsum
from lamina.functional.elementwise import exp, where
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat, pad, reshape, stack, transpose

__all__ = ["ssd", "ssd_reference"]


def _as_tensor(a) -> Tensor:
    return a if isinstance(a, Tensor) else Tensor._wrap(backend.xp.asarray(a))


def _check(who: str, x, dt, A, B, C, initial_state):
    """The (N, T, H, P), (N, T, H), (H,), (N, T, G, S) x2 shapes, G dividing H; returns (G, R = H / G)."""
    if x.ndim != 4:
        raise ShapeError(f"{who}: expected x of shape (batch, time, heads, headdim), got {tuple(x.shape)}")
    n, t, h, p = x.shape
    if tuple(dt.shape) != (n, t, h):
        raise ShapeError(f"{who}: dt of shape {tuple(dt.shape)} for x {tuple(x.shape)}; expected {(n, t, h)}")
    if tuple(A.shape) != (h,):
        raise ShapeError(f"{who}: A of shape {tuple(A.shape)} for {h} heads; expected ({h},)")
    if B.ndim != 4 or tuple(B.shape[:2]) != (n, t) or tuple(C.shape) != tuple(B.shape):
        raise ShapeError(f"{who}: B {tuple(B.shape)} and C {tuple(C.shape)} must both be (batch, time, groups, "
                         f"state) with (batch, time) = {(n, t)}")
    g, s = B.shape[2], B.shape[3]
    if h % g:
        raise ShapeError(f"{who}: {g} groups of B and C do not divide {h} heads")
    if initial_state is not None and tuple(initial_state.shape) != (n, h, p, s):
        raise ShapeError(f"{who}: initial_state of shape {tuple(initial_state.shape)}; expected {(n, h, p, s)}")
    return g, h // g


def _decay_matrix(cums: Tensor) -> Tensor:
    """exp(c_l - c_s) for l >= s and 0 above the diagonal, from running sums c (..., Q):
    the segment sums of the decays, (..., Q, Q)."""
    q = cums.shape[-1]
    xp = backend.xp
    lower = xp.tril(xp.ones((q, q), dtype=bool))
    differences = sub(reshape(cums, *cums.shape, 1), reshape(cums, *cums.shape[:-1], 1, q))
    zeros = Tensor._wrap(xp.zeros((), dtype=cums.dtype))
    return mul(exp(where(lower, differences, zeros)), Tensor._wrap(lower.astype(cums.dtype)))


def ssd(x, dt, A, B, C, chunk_size: int, initial_state=None, return_final_state: bool = False):
    """The SSD recurrence (module docstring) by the chunked algorithm, with chunks of
    ``chunk_size`` steps (the last one zero-padded when it does not divide T). Returns y
    (N, T, H, P), and the final state (N, H, P, S) too with ``return_final_state``.
    Differentiable in every input (a composite of differentiable ops)."""
    x, dt, A, B, C = (_as_tensor(a) for a in (x, dt, A, B, C))
    initial_state = None if initial_state is None else _as_tensor(initial_state)
    g, r = _check("ssd", x, dt, A, B, C, initial_state)
    if int(chunk_size) < 1:
        raise ValueError(f"ssd: chunk_size must be a positive integer, got {chunk_size!r}")
    n, t, h, p = x.shape
    s, q = B.shape[-1], int(chunk_size)
    chunks = -(-t // q)
    extra = chunks * q - t
    if extra:      # dt = 0 on the padding: no decay and no input, the state passes unchanged
        x, dt = pad(x, ((0, 0), (0, extra), (0, 0), (0, 0))), pad(dt, ((0, 0), (0, extra), (0, 0)))
        B, C = pad(B, ((0, 0), (0, extra), (0, 0), (0, 0))), pad(C, ((0, 0), (0, extra), (0, 0), (0, 0)))
    # b batch, c chunk, l/s step in the chunk, g group, r head in the group, p headdim, n state
    xs = reshape(mul(x, reshape(dt, n, chunks * q, h, 1)), n, chunks, q, g, r, p)
    decays = reshape(mul(dt, A), n, chunks, q, g, r)
    Bc, Cc = reshape(B, n, chunks, q, g, s), reshape(C, n, chunks, q, g, s)
    cums = cumsum(transpose(decays, 0, 1, 3, 4, 2), axis=-1)                       # (b, c, g, r, l)
    scores = einsum("bclgn,bcsgn->bcgls", Cc, Bc)
    weights = mul(reshape(scores, n, chunks, g, 1, q, q), _decay_matrix(cums))      # (b, c, g, r, l, s)
    intra = einsum("bcgrls,bcsgrp->bclgrp", weights, xs)

    totals = cums[..., -1:]                                                         # (b, c, g, r, 1)
    to_end = exp(sub(totals, cums))                                                 # (b, c, g, r, l)
    contributions = einsum("bclgn,bcgrl,bclgrp->bcgrpn", Bc, to_end, xs)
    start = (Tensor._wrap(backend.xp.zeros((n, 1, g, r, p, s), dtype=x.dtype)) if initial_state is None
             else reshape(initial_state, n, 1, g, r, p, s))
    contributions = concat([start, contributions], axis=1)                          # (b, c + 1, g, r, p, n)
    chunk_cums = cumsum(pad(transpose(reshape(totals, n, chunks, g, r), 0, 2, 3, 1),
                            ((0, 0), (0, 0), (0, 0), (1, 0))), axis=-1)             # (b, g, r, c + 1)
    states = einsum("bgrzc,bcgrpn->bzgrpn", _decay_matrix(chunk_cums), contributions)
    inter = einsum("bclgn,bcgrpn,bcgrl->bclgrp", Cc, states[:, :-1], exp(cums))
    y = reshape(add(intra, inter), n, chunks * q, h, p)
    if extra:
        y = y[:, :t]
    if not return_final_state:
        return y
    return y, reshape(states[:, -1], n, h, p, s)


def ssd_reference(x, dt, A, B, C, initial_state=None, return_final_state: bool = False):
    """The SSD recurrence (module docstring) run step by step with differentiable ops: the
    plain definition, O(T) sequential steps. Same arguments and results as :func:`ssd`."""
    x, dt, A, B, C = (_as_tensor(a) for a in (x, dt, A, B, C))
    initial_state = None if initial_state is None else _as_tensor(initial_state)
    g, r = _check("ssd_reference", x, dt, A, B, C, initial_state)
    n, t, h, p = x.shape
    s = B.shape[-1]
    state = (Tensor._wrap(backend.xp.zeros((n, g, r, p, s), dtype=x.dtype)) if initial_state is None
             else reshape(initial_state, n, g, r, p, s))
    outputs = []
    for step in range(t):
        dt_t = reshape(dt[:, step], n, g, r)
        decay = reshape(exp(mul(dt_t, reshape(A, g, r))), n, g, r, 1, 1)
        x_t = mul(reshape(x[:, step], n, g, r, p), reshape(dt_t, n, g, r, 1))
        state = add(mul(decay, state), einsum("bgrp,bgn->bgrpn", x_t, B[:, step]))
        outputs.append(reshape(einsum("bgrpn,bgn->bgrp", state, C[:, step]), n, h, p))
    y = stack(outputs, axis=1)
    if not return_final_state:
        return y
    return y, reshape(state, n, h, p, s)
