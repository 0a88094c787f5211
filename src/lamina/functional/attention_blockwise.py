"""Exact attention computed block by block, never holding the (T_q, T_k) weights
(Rabe & Staats 2021, "Self-attention does not need O(n^2) memory"; Dao et al. 2022,
FlashAttention).

The queries are cut into blocks of ``block`` rows and the keys into blocks of ``block``
columns. For one query block the key blocks are visited in turn, keeping per query row the
running maximum m of its scores, the running sum l of exp(s - m) and the running weighted
sum acc of the values (the online softmax). A new key block with scores S_j:

    m' = max(m, rowmax S_j),   P_j = exp(S_j - m'),   c = exp(m - m')
    l' = c l + rowsum P_j,     acc' = c acc + P_j V_j

and at the end O = acc / l and the log-sum-exp L = m + log l of every query row. Only O and
L are kept for backward, which recomputes each block's weights P_j = exp(S_j - L) from Q, K
and L (FlashAttention's backward), with D = rowsum(dO * O):

    dV_j += P_j^T dO,   dP_j = dO V_j^T,   dS_j = P_j * (dP_j - D),
    dQ += dS_j K_j scale,   dK_j += dS_j^T Q scale

Memory beyond the inputs and outputs is one block of scores, (..., block, block), per
thread instead of (..., T_q, T_k): the query blocks run on lamina's threads, each with
single-threaded BLAS, which suits many small products better than BLAS's own threads. Key
blocks that the causal rule or a boolean mask removes entirely are skipped, in the forward
and in the backward pass.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.functional._util import unbroadcast
from lamina.functional.activation import softmax
from lamina.functional.elementwise import where

__all__ = ["AUTO_BLOCK", "BlockwiseAttention"]

#: The block size ``block_size="auto"`` gives: large enough for NumPy's matrix products to
#: run near full speed, small enough that a block of scores stays in cache-sized memory.
AUTO_BLOCK = 256


def _swap(a):
    return a.swapaxes(-1, -2)


def _transposed(a):
    """a with its last two axes swapped, stored that way (slices of it multiply fast)."""
    return backend.xp.ascontiguousarray(_swap(a))


def _mask_block(mask, rows: slice, cols: slice):
    """The part of ``mask`` (broadcastable to the scores (..., T_q, T_k), or None) over the
    query rows ``rows`` and key columns ``cols``; an axis of length 1 stays as it is."""
    if mask is None or mask.ndim == 0:
        return mask
    cols = cols if mask.shape[-1] != 1 else slice(None)
    if mask.ndim == 1:
        return mask[cols]
    rows = rows if mask.shape[-2] != 1 else slice(None)
    return mask[..., rows, cols]


class _Pair:
    """Two arrays (or Nones) added as one, for :func:`lamina.parallel.map_sum`."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __iadd__(self, other: _Pair) -> _Pair:
        if self.first is not None:
            self.first += other.first
        if self.second is not None:
            self.second += other.second
        return self

    def __add__(self, other: _Pair) -> _Pair:
        return _Pair(*(None if a is None else a + b for a, b in ((self.first, other.first),
                                                                 (self.second, other.second))))


class BlockwiseAttention(Function):
    """C = softmax(Q K^T scale + bias, over the kept keys) V, block by block (see the module
    docstring). Q (..., T_q, d), K (..., T_k, d), V (..., T_k, d_v), leading axes broadcast.

    Hyperparameters: ``scale``; ``block`` (rows and columns of one block of scores);
    ``keep`` (a boolean array broadcastable to the scores, or None); ``bias`` (an additive
    float array, or None); ``causal`` (query t sees keys t' <= t). A query row whose every
    key is removed gets a zero context and L = -inf. After the forward, ``blocks`` is
    (computed, total): how many (query block, key block) pairs were computed out of all.
    """

    keep = None
    bias = None
    causal = False

    def _row_blocks(self, t_q: int) -> list[slice]:
        return [slice(q0, min(q0 + self.block, t_q)) for q0 in range(0, t_q, self.block)]

    def _key_blocks(self, rows: slice, t_k: int) -> list:
        """(key columns, keep of the block or None, bias of the block or None) of every key
        block in which the query ``rows`` keep at least one score."""
        xp = backend.xp
        found = []
        for k0 in range(0, t_k, self.block):
            cols = slice(k0, min(k0 + self.block, t_k))
            if self.causal and cols.start > rows.stop - 1:
                break
            keep = _mask_block(self.keep, rows, cols)
            if self.causal and cols.stop - 1 > rows.start:
                lower = xp.arange(rows.start, rows.stop)[:, None] >= xp.arange(cols.start, cols.stop)
                keep = lower if keep is None else keep & lower
            if keep is None or keep.any():
                found.append((cols, keep, _mask_block(self.bias, rows, cols)))
        return found

    def _scores(self, q_rows, k_t_cols, keep, bias):
        s = q_rows @ k_t_cols
        s *= self.scale
        if bias is not None:
            s = s + bias
        if keep is not None:
            s = backend.xp.where(keep, s, -backend.xp.inf)
        return s

    def forward(self, q, k, v):
        xp = backend.xp
        if self.bias is not None and self.bias.dtype != q.dtype:      # autocast lowered q, k and v
            self.bias = self.bias.astype(q.dtype)
        masks = [m.shape[:-2] for m in (self.keep, self.bias) if m is not None and m.ndim > 2]
        lead = xp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], *masks)
        t_q, t_k = q.shape[-2], k.shape[-2]
        dtype = xp.result_type(q.dtype, k.dtype, v.dtype)
        out = xp.empty(lead + (t_q, v.shape[-1]), dtype=dtype)
        lse = xp.empty(lead + (t_q, 1), dtype=dtype)
        k_t = _transposed(k)
        row_blocks = self._row_blocks(t_q)

        def query_block(i: int) -> int:
            """The rows of ``out`` and ``lse`` of query block i; returns the key blocks computed."""
            rows = row_blocks[i]
            top = xp.full(lead + (rows.stop - rows.start, 1), -xp.inf, dtype=dtype)
            total = xp.zeros_like(top)
            acc = xp.zeros(lead + (rows.stop - rows.start, v.shape[-1]), dtype=dtype)
            blocks = self._key_blocks(rows, t_k)
            for cols, keep, bias in blocks:
                s = self._scores(q[..., rows, :], k_t[..., cols], keep, bias)
                new_top = xp.maximum(top, s.max(axis=-1, keepdims=True))
                shift = xp.where(xp.isfinite(new_top), new_top, 0)    # rows with no kept key so far
                s -= shift
                p = xp.exp(s, out=s)
                carry = xp.exp(top - shift)
                total = carry * total + p.sum(axis=-1, keepdims=True)
                acc = carry * acc + p @ v[..., cols, :]
                top = new_top
            empty = total == 0
            out[..., rows, :] = acc / xp.where(empty, 1, total)
            lse[..., rows, :] = xp.where(empty, -xp.inf, top + xp.log(xp.where(empty, 1, total)))
            return len(blocks)

        computed = parallel.map_chunks(query_block, len(row_blocks), self._work(lead, t_q, t_k))
        self.blocks = (sum(computed), len(row_blocks) * len(range(0, t_k, self.block)))
        self.q, self.k, self.v, self.out, self.lse = q, k, v, out, lse
        return out

    @staticmethod
    def _work(lead: tuple, t_q: int, t_k: int) -> int:
        """Scores computed (ignoring skipped blocks), for lamina's threads to judge whether
        splitting the query blocks among them pays."""
        size = t_q * t_k
        for n in lead:
            size *= n
        return size

    def backward(self, dc):
        """FlashAttention's backward (module docstring), one query block per call on lamina's
        threads: each writes its rows of dQ and returns its terms of dK and dV, summed in a
        fixed order. The products take transposed operands stored contiguously (dK^T += Q^T dS
        rather than dK += dS^T Q)."""
        xp = backend.xp
        q, k, v, out = self.q, self.k, self.v, self.out
        need_q, need_k, need_v = self.needs_grad
        dq = xp.zeros(out.shape[:-1] + (q.shape[-1],), dtype=out.dtype)
        k_t, v_t, q_t, dc_t = _transposed(k), _transposed(v), _transposed(q), _transposed(dc)
        dk_shape, dv_shape = k.shape[:-2] + k.shape[:-3:-1], v.shape[:-2] + v.shape[:-3:-1]
        d = (dc * out).sum(axis=-1, keepdims=True)
        # exp(S - L) with L = +inf on rows that kept nothing: their weights are 0
        lse = xp.where(xp.isfinite(self.lse), self.lse, xp.inf)
        row_blocks = self._row_blocks(q.shape[-2])

        def query_block(i: int):
            rows = row_blocks[i]
            dk_t = xp.zeros(dk_shape, dtype=k.dtype) if need_k else None
            dv_t = xp.zeros(dv_shape, dtype=v.dtype) if need_v else None
            for cols, keep, bias in self._key_blocks(rows, k.shape[-2]):
                s = self._scores(q[..., rows, :], k_t[..., cols], keep, bias)
                s -= lse[..., rows, :]
                p = xp.exp(s, out=s)
                if need_v:
                    dv_t[..., cols] += unbroadcast(dc_t[..., rows] @ p, dv_t[..., cols].shape)
                if need_q or need_k:
                    ds = dc[..., rows, :] @ v_t[..., cols]
                    ds -= d[..., rows, :]
                    ds *= p
                    ds *= self.scale
                    if need_q:
                        dq[..., rows, :] += ds @ k[..., cols, :]
                    if need_k:
                        dk_t[..., cols] += unbroadcast(q_t[..., rows] @ ds, dk_t[..., cols].shape)
            return _Pair(dk_t, dv_t)

        lead = out.shape[:-2]
        terms = parallel.map_sum(query_block, len(row_blocks), self._work(lead, q.shape[-2], k.shape[-2]))
        if terms is None:                                 # no query rows: K and V got nothing
            terms = _Pair(xp.zeros(dk_shape, dtype=k.dtype), xp.zeros(dv_shape, dtype=v.dtype))
        return (unbroadcast(dq, q.shape) if need_q else None, _transposed(terms.first) if need_k else None,
                _transposed(terms.second) if need_v else None)

    def composite(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The same values from recorded ops on the whole (T_q, T_k) scores, for gradients of
        gradients: masked scores are set to half the dtype's lowest value before the softmax
        and the weights multiplied by the mask (zero weights where every key is removed)."""
        xp = backend.xp
        e = (q @ _swap(k)) * self.scale
        if self.bias is not None:
            e = e + self.bias
        keep = self.keep
        if self.causal:
            lower = xp.tril(xp.ones((q.shape[-2], k.shape[-2]), dtype=bool))
            keep = lower if keep is None else keep & lower
        if keep is None:
            return softmax(e, axis=-1) @ v
        keep = xp.broadcast_to(keep, e.shape)
        e = where(keep, e, float(xp.finfo(e.dtype).min) / 2)
        return (softmax(e, axis=-1) * keep) @ v

    backward_graph = Function.composite_backward_graph
