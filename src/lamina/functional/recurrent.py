"""Recurrent cells run over a whole sequence as one node each (course notes, Recurrent
Neural Networks): a simple RNN, the GRU and the LSTM.

The notes write one step as a^<t> = g(W_ax x^<t> + W_aa a^<t-1> + b) with the samples as
columns. lamina keeps samples as rows, so with x^<t> of shape (N, D) and a^<t> of (N, H):

    a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x + b_h),   W_x: (D, G H),  W_h: (H, G H)

where G is the number of gate blocks stacked side by side in the columns (1 for the simple
RNN, 3 for the GRU, 4 for the LSTM, in PyTorch's order, so PyTorch's ``weight_ih_l0`` is
W_x^T and ``weight_hh_l0`` is W_h^T). There are two biases, b_x and b_h, as in PyTorch.

Sequences are batch first: x is (N, T, D). The ops return the states a^<1..T> as an
(N, T, H) tensor and the final state(s) as (N, H) tensors, all slices of one node's output,
so a gradient reaching any of them flows back through the same fused backward.

Speed: the input projections of all T steps are one GEMM (N T, D) x (D, G H) before the
loop; each step then does the (N, H) x (H, G H) recurrence GEMM and a few elementwise passes
on preallocated buffers. Backward collects the pre-activation gradients of every step in one
(N, T, G H) buffer, so that dJ/dW_x = X^T dZ, dJ/dx = dZ W_x^T and dJ/dW_h = A_prev^T dZ
(A_prev the stacked states a^<0..T-1>) are single GEMMs after the loop. Every local derivative
that does not depend on the backward recurrence is computed for all steps at once.

A logistic sigmoid is computed as sigma(z) = (1 + tanh(z / 2)) / 2, with the halving folded
into copies of the weight columns, so one tanh pass covers every gate of a step.

Variable-length sequences (padding at the end): every op takes ``lengths``, an integer
array (N,) with 1 <= lengths[i] <= T (a constant; it gets no gradient). Sample i is read
for its first lengths[i] steps only, with Keras's masking and what PyTorch's
``pack_padded_sequence`` gives: at a padded step t >= lengths[i] the state is carried
unchanged (a^<t> = a^<t-1>, and c^<t> = c^<t-1> for the LSTM), so the final states are
those of the last real step, and the outputs a^<t> at padded steps are zeros (as PyTorch's
``pad_packed_sequence`` gives). Whatever the padded inputs hold (any finite values) has no
effect. Each step still runs on every row; the rows already finished then get their
previous state copied back (one masked copy per step, only from the first step where some
row has finished). In backward a padded step passes the state gradient straight through
(dA^<t-1> = dA^<t> on those rows), ignores the gradient of its own (zero) output and
contributes nothing to the weight gradients (its rows of dZ are zero); this is folded into
the precomputed coefficients (zeroed at padded steps; a forget or update gate of 1 there),
leaving at most one masked copy per step. Without ``lengths`` none of this runs.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import channel_sums, per_channel
from lamina.functional.shape import getitem

__all__ = ["GRUFunction", "LSTMFunction", "ReversePaddedFunction", "SimpleRNNFunction", "check_lengths", "gru", "lstm",
           "reverse_padded", "simple_rnn"]

SIMPLE_ACTIVATIONS = ("tanh", "relu")


# -- shared steps ----------------------------------------------------------------------
def _cast(a, dtype):
    return None if a is None else a.astype(dtype, copy=False)


def _project(x, w_x, bias):
    """(x2, Z): x as (N T, D) rows and Z = x2 W_x + bias as a fresh (N, T, G H) buffer."""
    n, steps, d = x.shape
    x2 = backend.xp.ascontiguousarray(x).reshape(n * steps, d)
    z = parallel.matmul(x2, w_x)
    if bias is not None:
        per_channel(backend.xp.add, z, bias, z)
    return x2, z.reshape(n, steps, w_x.shape[1])


def _half_sigmoid_columns(a, width: int):
    """A copy of ``a`` (weights or a bias) with its first ``width`` columns halved: those
    gates' pre-activations come out as z / 2, ready for sigma(z) = (1 + tanh(z / 2)) / 2."""
    a = a.copy()
    a[..., :width] *= 0.5
    return a


def _sigmoid_from_tanh(a):
    """In place: tanh(z / 2) -> sigma(z)."""
    a *= 0.5
    a += 0.5


def _weight_grads(fn, dz, states, want):
    """(dJ/dx, dJ/dW_x, dJ/dW_h, dJ/db) from the stacked pre-activation gradients ``dz``
    (N, T, G H) and the states a^<0..T-1> (N, T, H); ``want`` says which of the four are
    needed (``None`` for the others). The one bias gradient serves b_x and b_h alike."""
    n, steps, gh = dz.shape
    dz2 = dz.reshape(n * steps, gh)
    dx = parallel.matmul(dz2, fn.w_x.T).reshape(fn.x_shape) if want[0] else None
    dw_x = parallel.matmul(fn.x2.T, dz2) if want[1] else None
    dw_h = None
    if want[2]:
        prev = backend.xp.ascontiguousarray(states).reshape(n * steps, -1)
        dw_h = parallel.matmul(prev.T, dz2)
    db = channel_sums(dz2) if want[3] else None
    return dx, dw_x, dw_h, db


def _total_bias(b_x, b_h):
    if b_x is None:
        return None
    return b_x + b_h


# -- variable lengths --------------------------------------------------------------------
def _padding(fn, steps: int) -> int:
    """Without ``fn.lengths``: T (no step is padded). With them: keeps ``fn.pad``, the (N, T)
    mask of the padded steps (t >= lengths[i]), and returns the first step where some row
    is padded, min(lengths)."""
    lengths = fn.lengths
    if lengths is None:
        fn.pad = None
        return steps
    xp = backend.xp
    fn.pad = xp.arange(steps)[None, :] >= lengths[:, None]
    return int(lengths.min())


def _finish_padded(out, pad, steps: int) -> None:
    """After a forward loop with lengths: the carried final state a^<lengths[i]> into slot
    T + 1, then the outputs at the padded steps to zeros."""
    out[:, steps + 1] = out[:, steps]
    backend.xp.copyto(out[:, 1:steps + 1], 0, where=pad[:, :, None])


def _upstream(fn, dy, steps: int):
    """(the gradient reaching the outputs a^<1..T> (N, T, H), the one reaching the final
    state (N, H) or None). With lengths the final state has its own slot T + 1 and the
    gradient of the (constant zero) outputs at padded steps is dropped."""
    if fn.pad is None:
        return dy[:, 1:steps + 1], None
    xp = backend.xp
    dtype = fn.out.dtype
    seq = xp.where(fn.pad[:, :, None], xp.zeros((), dtype=dtype), dy[:, 1:steps + 1])
    return seq, xp.array(dy[:, steps + 1], dtype=dtype)


def _where_padded(pad, value, a):
    """``a`` (N, T, ...) with ``value`` at the padded steps: in place for a scalar 0 (the
    coefficients), a new array otherwise (a forget or update gate of 1)."""
    xp = backend.xp
    mask = pad.reshape(pad.shape + (1,) * (a.ndim - 2))
    if value == 0:
        xp.copyto(a, 0, where=mask)
        return a
    return xp.where(mask, xp.asarray(value, dtype=a.dtype), a)


# -- simple RNN ------------------------------------------------------------------------
class SimpleRNNFunction(Function):
    """a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x + b_h), g = tanh or relu, for t = 1..T.

    Inputs (x, a0, W_x, W_h[, b_x, b_h]), x (N, T, D), a0 (N, H), W_x (D, H), W_h (H, H),
    biases (H,). Output: (N, T + 1, H), [a^<0>, a^<1>, ..., a^<T>] (the layer slices it).
    Backward, with dA^<t> the gradient reaching a^<t> from the output and from step t + 1:

        dZ^<t> = dA^<t> g'(z^<t>)   (1 - (a^<t>)^2 for tanh, [a^<t> > 0] for relu)
        dA^<t-1> += dZ^<t> W_h^T

    then dJ/dW_x = X^T dZ, dJ/dW_h = A_prev^T dZ, dJ/db_x = dJ/db_h = sum dZ, dJ/dx = dZ W_x^T.
    Keywords: ``activation`` ('tanh' or 'relu'); ``lengths`` (N,) integers or None (see the
    module notes): the output is then (N, T + 2, H), [a^<0>, a^<1..T> with zeros at the
    padded steps, a^<lengths[i]>].
    """

    lengths = None

    def forward(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        xp = backend.xp
        dtype = x.dtype
        w_x, w_h = _cast(w_x, dtype), _cast(w_h, dtype)
        n, steps, _ = x.shape
        hidden = w_h.shape[0]
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        self.x2, z = _project(x, w_x, _total_bias(_cast(b_x, dtype), _cast(b_h, dtype)))
        self.first_pad = first_pad = _padding(self, steps)
        pad = self.pad
        out = xp.empty((n, steps + (1 if pad is None else 2), hidden), dtype=dtype)
        out[:, 0] = a0
        rec = xp.empty((n, hidden), dtype=dtype)
        relu = self.activation == "relu"
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                parallel.matmul(out[:, t], w_h, out=rec)
                a = out[:, t + 1]
                xp.add(z[:, t], rec, out=a)
                if relu:
                    xp.maximum(a, 0, out=a)
                else:
                    xp.tanh(a, out=a)
                if t >= first_pad:                 # finished rows keep their state
                    xp.copyto(a, out[:, t], where=pad[:, t, None])
        if pad is not None:
            _finish_padded(out, pad, steps)
        self.out = out
        return out

    def backward(self, dy):
        xp = backend.xp
        out, w_h, pad, first_pad = self.out, self.w_h, self.pad, self.first_pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        states = out[:, 1:steps + 1]
        if self.activation == "relu":
            deriv = (states > 0).astype(out.dtype)
        else:
            deriv = xp.multiply(states, states)
            xp.subtract(1, deriv, out=deriv)
        dseq, dfinal = _upstream(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=out.dtype)
        else:
            _where_padded(pad, 0, deriv)
            rec = dfinal
        dz = xp.empty((n, steps, hidden), dtype=out.dtype)
        dh = xp.empty_like(rec)
        w_h_t = w_h.T
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                xp.add(dseq[:, t], rec, out=dh)
                d = dz[:, t]
                xp.multiply(dh, deriv[:, t], out=d)
                parallel.matmul(d, w_h_t, out=rec)
                if t >= first_pad:                 # finished rows pass dA^<t> through
                    xp.copyto(rec, dh, where=pad[:, t, None])
        da0 = rec + dy[:, 0] if self.needs_grad[1] else None
        needs = self.needs_grad
        has_bias = len(needs) == 6
        want_b = has_bias and (needs[4] or needs[5])
        dx, dw_x, dw_h, db = _weight_grads(self, dz, out[:, :steps], (needs[0], needs[2], needs[3], want_b))
        if has_bias:
            return dx, da0, dw_x, dw_h, db, db
        return dx, da0, dw_x, dw_h


# -- GRU -------------------------------------------------------------------------------
class GRUFunction(Function):
    """The GRU as PyTorch (and Keras with ``reset_after=True``) computes it, gates in the
    columns in the order r, z, n:

        r = sigma(x W_xr + b_xr + a^<t-1> W_hr + b_hr)          (reset gate)
        z = sigma(x W_xz + b_xz + a^<t-1> W_hz + b_hz)          (update gate)
        n = tanh(x W_xn + b_xn + r * (a^<t-1> W_hn + b_hn))     (candidate, the notes' a~)
        a^<t> = (1 - z) * n + z * a^<t-1>

    The notes' update gate is Gamma_u = 1 - z: a^<t> = Gamma_u a~ + (1 - Gamma_u) a^<t-1>.
    Inputs (x, a0, W_x, W_h[, b_x, b_h]) with W_x (D, 3H), W_h (H, 3H), biases (3H,); output
    (N, T + 1, H), [a^<0>, ..., a^<T>]. Every local derivative is a product of forward values,
    so backward keeps per step only dA^<t> (the gradient reaching a^<t>) times precomputed
    coefficients, with A = (1 - z)(1 - n^2) and h_n = a^<t-1> W_hn + b_hn:

        dZ_r = dA A h_n r (1 - r),   dZ_z = dA (a^<t-1> - n) z (1 - z)
        dZ_xn = dA A,  dZ_hn = dA A r
        dA^<t-1> += dA z + [dZ_r, dZ_z, dZ_hn] W_h^T

    With ``lengths`` (see the module notes) the output is (N, T + 2, H), [a^<0>, a^<1..T>
    with zeros at the padded steps, a^<lengths[i]>]; in backward a padded step has zero
    coefficients and z = 1, which passes dA^<t> through unchanged.
    """

    lengths = None

    def forward(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        xp = backend.xp
        dtype = x.dtype
        w_x, w_h = _cast(w_x, dtype), _cast(w_h, dtype)
        b_x, b_h = _cast(b_x, dtype), _cast(b_h, dtype)
        n, steps, _ = x.shape
        hidden = w_h.shape[0]
        h2 = 2 * hidden
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        bias, b_hn = None, None
        if b_x is not None:
            bias = b_x.copy()
            bias[:h2] += b_h[:h2]
            bias = _half_sigmoid_columns(bias, h2)
            b_hn = b_h[h2:]
        self.x2, gates = _project(x, _half_sigmoid_columns(w_x, h2), bias)
        w_h_half = _half_sigmoid_columns(w_h, h2)
        first_pad = _padding(self, steps)
        pad = self.pad
        out = xp.empty((n, steps + (1 if pad is None else 2), hidden), dtype=dtype)
        out[:, 0] = a0
        hn_all = xp.empty((n, steps, hidden), dtype=dtype)
        rec = xp.empty((n, 3 * hidden), dtype=dtype)
        tmp = xp.empty((n, hidden), dtype=dtype)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                prev = out[:, t]
                parallel.matmul(prev, w_h_half, out=rec)
                hn = hn_all[:, t]
                if b_hn is None:
                    hn[...] = rec[:, h2:]
                else:
                    xp.add(rec[:, h2:], b_hn, out=hn)
                g = gates[:, t]
                rz = g[:, :h2]
                rz += rec[:, :h2]
                xp.tanh(rz, out=rz)
                _sigmoid_from_tanh(rz)
                cand = g[:, h2:]
                xp.multiply(g[:, :hidden], hn, out=tmp)
                cand += tmp
                xp.tanh(cand, out=cand)
                a = out[:, t + 1]
                xp.subtract(prev, cand, out=a)
                a *= g[:, hidden:h2]
                a += cand
                if t >= first_pad:                 # finished rows keep their state
                    xp.copyto(a, prev, where=pad[:, t, None])
        if pad is not None:
            _finish_padded(out, pad, steps)
        self.out, self.gates, self.hn = out, gates, hn_all
        return out

    def backward(self, dy):
        xp = backend.xp
        out, gates, hn, pad = self.out, self.gates, self.hn, self.pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        dtype = out.dtype
        g4 = gates.reshape(n, steps, 3, hidden)
        r, z, cand = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2]
        prev = out[:, :steps]
        # coefficients: dZ = dA * coef, (N, T, 3, H) in the order r, z, hn
        coef = xp.empty((n, steps, 3, hidden), dtype=dtype)
        big_a = xp.multiply(cand, cand)
        xp.subtract(1, big_a, out=big_a)
        big_a *= xp.subtract(1, z)                           # A = (1 - z)(1 - n^2)
        c_r, c_z, c_hn = coef[:, :, 0], coef[:, :, 1], coef[:, :, 2]
        xp.subtract(1, r, out=c_r)
        c_r *= r
        c_r *= hn
        c_r *= big_a
        xp.subtract(1, z, out=c_z)
        c_z *= z
        c_z *= xp.subtract(prev, cand)
        xp.multiply(big_a, r, out=c_hn)
        dseq, dfinal = _upstream(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=dtype)
        else:
            _where_padded(pad, 0, coef)
            _where_padded(pad, 0, big_a)
            z = _where_padded(pad, 1, z)
            rec = dfinal
        dz = xp.empty((n, steps, 3, hidden), dtype=dtype)
        dh_all = xp.empty((n, steps, hidden), dtype=dtype)
        tmp = xp.empty_like(rec)
        w_h_t = self.w_h.T
        dz3 = dz.reshape(n, steps, 3 * hidden)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                dh = dh_all[:, t]
                xp.add(dseq[:, t], rec, out=dh)
                xp.multiply(dh[:, None, :], coef[:, t], out=dz[:, t])
                parallel.matmul(dz3[:, t], w_h_t, out=rec)
                xp.multiply(dh, z[:, t], out=tmp)
                rec += tmp
        needs = self.needs_grad
        da0 = rec + dy[:, 0] if needs[1] else None
        # the recurrent side first, then the n block becomes the input side's gradient
        has_bias = len(needs) == 6
        _, _, dw_h, db_h = _weight_grads(self, dz3, prev, (False, False, needs[3], has_bias and needs[5]))
        xp.multiply(dh_all, big_a, out=dz[:, :, 2])
        dx, dw_x, _, db_x = _weight_grads(self, dz3, prev, (needs[0], needs[2], False, has_bias and needs[4]))
        if has_bias:
            return dx, da0, dw_x, dw_h, db_x, db_h
        return dx, da0, dw_x, dw_h


# -- LSTM ------------------------------------------------------------------------------
# PyTorch's gate blocks are i, f, g, o; inside, the columns are reordered to o, i, f, g so
# that the three sigmoid gates are contiguous and the three gates driven by dJ/dc too.
_LSTM_ORDER = (3, 0, 1, 2)       # internal block k is PyTorch's block _LSTM_ORDER[k]
_LSTM_BACK = (1, 2, 3, 0)        # PyTorch's block k is internal block _LSTM_BACK[k]


def _reorder(a, hidden: int, order):
    """``a``'s last axis as 4 blocks of ``hidden`` columns, taken in ``order`` (a copy)."""
    xp = backend.xp
    return xp.concatenate([a[..., k * hidden:(k + 1) * hidden] for k in order], axis=-1)


class LSTMFunction(Function):
    """The LSTM (Hochreiter & Schmidhuber, with a forget gate), gates in PyTorch's order
    i, f, g, o in the columns of W_x (D, 4H), W_h (H, 4H) and the biases (4H,):

        Gamma_u = i = sigma(x W_xi + a^<t-1> W_hi + b_i)          (update / input gate)
        Gamma_f = f = sigma(x W_xf + a^<t-1> W_hf + b_f)          (forget gate)
        c~      = g = tanh(x W_xg + a^<t-1> W_hg + b_g)           (candidate memory)
        Gamma_o = o = sigma(x W_xo + a^<t-1> W_ho + b_o)          (output gate)
        c^<t> = Gamma_u c~ + Gamma_f c^<t-1>,   a^<t> = Gamma_o tanh(c^<t>)

    with b = b_x + b_h. Inputs (x, a0, c0, W_x, W_h[, b_x, b_h]); output (N, T + 2, H):
    [a^<0>, a^<1>, ..., a^<T>, c^<T>]. Backward, with dA, dC the gradients reaching a^<t>
    and c^<t> (dC collects dC^<t+1> f^<t+1> and dA o (1 - tanh^2 c^<t>)):

        dZ_o = dA tanh(c) o (1 - o),  dZ_i = dC g i (1 - i),  dZ_f = dC c^<t-1> f (1 - f)
        dZ_g = dC i (1 - g^2),        dA^<t-1> += dZ W_h^T,   dC^<t-1> = dC f

    With ``lengths`` (see the module notes) the output is (N, T + 3, H), [a^<0>, a^<1..T>
    with zeros at the padded steps, a^<lengths[i]>, c^<lengths[i]>]; in backward a padded
    step has zero coefficients and f = 1 (dC passes through), and dA^<t> is copied through.
    """

    lengths = None

    def forward(self, x, a0, c0, w_x, w_h, b_x=None, b_h=None):
        xp = backend.xp
        dtype = x.dtype
        n, steps, _ = x.shape
        hidden = w_h.shape[0]
        h3 = 3 * hidden
        w_x = _reorder(_cast(w_x, dtype), hidden, _LSTM_ORDER)
        w_h = _reorder(_cast(w_h, dtype), hidden, _LSTM_ORDER)
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        bias = _total_bias(_cast(b_x, dtype), _cast(b_h, dtype))
        if bias is not None:
            bias = _half_sigmoid_columns(_reorder(bias, hidden, _LSTM_ORDER), h3)
        self.x2, gates = _project(x, _half_sigmoid_columns(w_x, h3), bias)
        w_h_half = _half_sigmoid_columns(w_h, h3)
        self.first_pad = first_pad = _padding(self, steps)
        pad = self.pad
        out = xp.empty((n, steps + (2 if pad is None else 3), hidden), dtype=dtype)
        out[:, 0] = a0
        cs = xp.empty((n, steps + 1, hidden), dtype=dtype)
        cs[:, 0] = c0
        tanh_c = xp.empty((n, steps, hidden), dtype=dtype)
        rec = xp.empty((n, 4 * hidden), dtype=dtype)
        tmp = xp.empty((n, hidden), dtype=dtype)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                g = gates[:, t]
                parallel.matmul(out[:, t], w_h_half, out=rec)
                g += rec
                xp.tanh(g, out=g)
                _sigmoid_from_tanh(g[:, :h3])
                c = cs[:, t + 1]
                xp.multiply(g[:, 2 * hidden:h3], cs[:, t], out=c)
                xp.multiply(g[:, hidden:2 * hidden], g[:, h3:], out=tmp)
                c += tmp
                th = tanh_c[:, t]
                xp.tanh(c, out=th)
                xp.multiply(g[:, :hidden], th, out=out[:, t + 1])
                if t >= first_pad:                 # finished rows keep their states
                    done = pad[:, t, None]
                    xp.copyto(c, cs[:, t], where=done)
                    xp.copyto(out[:, t + 1], out[:, t], where=done)
        if pad is None:
            out[:, steps + 1] = cs[:, steps]
        else:
            _finish_padded(out, pad, steps)
            out[:, steps + 2] = cs[:, steps]
        self.out, self.gates, self.cs, self.tanh_c = out, gates, cs, tanh_c
        return out

    def backward(self, dy):
        xp = backend.xp
        out, gates, cs, tanh_c = self.out, self.gates, self.cs, self.tanh_c
        pad, first_pad = self.pad, self.first_pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        dtype = out.dtype
        g4 = gates.reshape(n, steps, 4, hidden)
        o, i, f, cand = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]
        # dZ_o = dA * q;  dC += dA * oc;  [dZ_i, dZ_f, dZ_g] = dC * p
        q = xp.subtract(1, o)
        q *= o
        q *= tanh_c
        oc = xp.multiply(tanh_c, tanh_c)
        xp.subtract(1, oc, out=oc)
        oc *= o
        p = xp.empty((n, steps, 3, hidden), dtype=dtype)
        xp.subtract(1, i, out=p[:, :, 0])
        p[:, :, 0] *= i
        p[:, :, 0] *= cand
        xp.subtract(1, f, out=p[:, :, 1])
        p[:, :, 1] *= f
        p[:, :, 1] *= cs[:, :steps]
        xp.multiply(cand, cand, out=p[:, :, 2])
        xp.subtract(1, p[:, :, 2], out=p[:, :, 2])
        p[:, :, 2] *= i
        dseq, dfinal = _upstream(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=dtype)
            dc = xp.array(dy[:, steps + 1], dtype=dtype)
        else:
            for a in (q, oc, p):
                _where_padded(pad, 0, a)
            f = _where_padded(pad, 1, f)
            rec = dfinal
            dc = xp.array(dy[:, steps + 2], dtype=dtype)
        dz = xp.empty((n, steps, 4, hidden), dtype=dtype)
        dz4 = dz.reshape(n, steps, 4 * hidden)
        dh = xp.empty_like(rec)
        tmp = xp.empty_like(rec)
        w_h_t = self.w_h.T
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                xp.add(dseq[:, t], rec, out=dh)
                xp.multiply(dh, oc[:, t], out=tmp)
                dc += tmp
                xp.multiply(dh, q[:, t], out=dz[:, t, 0])
                xp.multiply(dc[:, None, :], p[:, t], out=dz[:, t, 1:])
                dc *= f[:, t]
                parallel.matmul(dz4[:, t], w_h_t, out=rec)
                if t >= first_pad:                 # finished rows pass dA^<t> through
                    xp.copyto(rec, dh, where=pad[:, t, None])
        needs = self.needs_grad
        da0 = rec + dy[:, 0] if needs[1] else None
        dc0 = dc if needs[2] else None
        has_bias = len(needs) == 7
        want_b = has_bias and (needs[5] or needs[6])
        dx, dw_x, dw_h, db = _weight_grads(self, dz4, out[:, :steps], (needs[0], needs[3], needs[4], want_b))
        dw_x = None if dw_x is None else _reorder(dw_x, hidden, _LSTM_BACK)
        dw_h = None if dw_h is None else _reorder(dw_h, hidden, _LSTM_BACK)
        if has_bias:
            db = None if db is None else _reorder(db, hidden, _LSTM_BACK)
            return dx, da0, dc0, dw_x, dw_h, db if needs[5] else None, db if needs[6] else None
        return dx, da0, dc0, dw_x, dw_h


# -- the ops on tensors ----------------------------------------------------------------
def _shape(a) -> tuple:
    return tuple(a.shape)


def _check(op: str, x, states, w_x, w_h, b_x, b_h, gates: int):
    """Shape checks, with the operands' shapes in the messages; returns (N, T, D, H)."""
    xs = _shape(x)
    if len(xs) != 3:
        raise ShapeError(f"{op}: x must be (batch, time, features), got shape {xs}")
    n, steps, d = xs
    ws, hs = _shape(w_x), _shape(w_h)
    if len(hs) != 2 or hs[1] != gates * hs[0]:
        raise ShapeError(f"{op}: w_h must be (H, {gates} H), got shape {hs}")
    hidden = hs[0]
    if ws != (d, gates * hidden):
        raise ShapeError(f"{op}: w_x must be (D, {gates} H) = ({d}, {gates * hidden}) for x of shape {xs} and "
                         f"w_h of shape {hs}, got shape {ws}")
    if steps < 1:
        raise ShapeError(f"{op}: x of shape {xs} has no time steps")
    for name, s in states:
        if s is not None and _shape(s) != (n, hidden):
            raise ShapeError(f"{op}: the initial state {name} must be (N, H) = ({n}, {hidden}), got shape {_shape(s)}")
    for name, b in (("b_x", b_x), ("b_h", b_h)):
        if b is not None and _shape(b) != (gates * hidden,):
            raise ShapeError(f"{op}: {name} must be ({gates * hidden},), got shape {_shape(b)}")
    return n, steps, d, hidden


def _zeros(x, n: int, hidden: int):
    dtype = x.dtype if hasattr(x, "dtype") else backend.get_default_dtype()
    return Tensor._wrap(backend.xp.zeros((n, hidden), dtype=dtype))


def _biases(x, b_x, b_h, size: int) -> tuple:
    """() without biases, else both (a missing one as zeros)."""
    if b_x is None and b_h is None:
        return ()
    dtype = x.dtype if hasattr(x, "dtype") else backend.get_default_dtype()
    zero = Tensor._wrap(backend.xp.zeros((size,), dtype=dtype))
    return (zero if b_x is None else b_x, zero if b_h is None else b_h)


def _split(packed, steps: int, extra: int, lengths):
    """The sequence a^<1..T> and the final slices of a packed (N, T + 1 + extra, H) output
    (with lengths, (N, T + 2 + extra, H): the finals have their own slots after a^<T>)."""
    seq = getitem(packed, (slice(None), slice(1, steps + 1)))
    first = steps if lengths is None else steps + 1
    finals = [getitem(packed, (slice(None), first + k)) for k in range(extra + 1)]
    return (seq, *finals)


def check_lengths(who: str, lengths, x_shape):
    """The sequence lengths as an integer array (N,) of values in [1, T] for x of shape
    ``x_shape`` (N, T, ...), or None when there are none or all equal T (nothing is padded).
    A TypeError or ShapeError / ValueError naming ``who``, the shapes and values otherwise."""
    if lengths is None:
        return None
    xp = backend.xp
    data = xp.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    n, steps = int(x_shape[0]), int(x_shape[1])
    shape = tuple(data.shape)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{who}: lengths must be integers (one per sequence), got an array of dtype {data.dtype} "
                        f"and shape {shape}; cast it with .astype(int)")
    if shape != (n,):
        raise ShapeError(f"{who}: lengths must have shape (N,) = ({n},), one per sequence of x of shape "
                         f"{tuple(x_shape)}, got shape {shape}")
    low, high = int(data.min()), int(data.max())
    if low < 1 or high > steps:
        bad = low if low < 1 else high
        where = int(xp.argmax(data == bad))
        raise ValueError(f"{who}: lengths must lie in [1, T] = [1, {steps}] for x of shape {tuple(x_shape)}, "
                         f"got lengths[{where}] = {bad}")
    if low == steps:
        return None
    return data.astype(xp.int64, copy=False)


class ReversePaddedFunction(Function):
    """x (N, T, ...) with the first lengths[i] steps of each row i in reverse order and the
    rest (the padding) in place: y[i, t] = x[i, lengths[i] - 1 - t] for t < lengths[i]. The
    permutation is its own inverse, so backward gathers dy with the same index. Keyword:
    ``lengths`` (N,) integers."""

    def forward(self, x):
        xp = backend.xp
        n, steps = x.shape[:2]
        t = xp.arange(steps)[None, :]
        last = self.lengths[:, None] - 1
        self.index = (xp.arange(n)[:, None], xp.where(t <= last, last - t, t))
        return x[self.index]

    def backward(self, dy):
        return (dy[self.index],)


def reverse_padded(x, lengths) -> Tensor:
    """Each sequence of x (N, T, ...) read backwards from its own last real step, lengths
    (N,) integers (validated by :func:`check_lengths`); the padded steps stay in place.
    Applied twice, it gives x back. None for ``lengths``: the whole time axis reversed."""
    lengths = check_lengths("reverse_padded", lengths, tuple(x.shape))
    if lengths is None:
        return getitem(x, (slice(None), slice(None, None, -1)))
    return ReversePaddedFunction.apply(x, lengths=lengths)


def simple_rnn(x, h0=None, w_x=None, w_h=None, b_x=None, b_h=None, activation: str = "tanh", lengths=None):
    """A simple RNN over the sequence x (N, T, D): a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x
    + b_h), g = tanh or relu. ``h0`` (N, H) defaults to zeros. Returns (a^<1..T> as
    (N, T, H), a^<T> as (N, H)). ``lengths`` (N,) integers in [1, T]: sample i ends after
    its first lengths[i] steps; the outputs are zeros after it and the final state is
    a^<lengths[i]> (see the module notes). See :class:`SimpleRNNFunction`."""
    if activation not in SIMPLE_ACTIVATIONS:
        raise ValueError(f"simple_rnn: activation must be one of {SIMPLE_ACTIVATIONS}, got {activation!r}")
    n, steps, _, hidden = _check("simple_rnn", x, (("h0", h0),), w_x, w_h, b_x, b_h, 1)
    lengths = check_lengths("simple_rnn", lengths, _shape(x))
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    packed = SimpleRNNFunction.apply(x, h0, w_x, w_h, *_biases(x, b_x, b_h, hidden), activation=activation,
                                     lengths=lengths)
    return _split(packed, steps, 0, lengths)


def gru(x, h0=None, w_x=None, w_h=None, b_x=None, b_h=None, lengths=None):
    """A GRU over the sequence x (N, T, D), PyTorch's formulation (gates r, z, n). ``h0``
    (N, H) defaults to zeros. Returns (a^<1..T> as (N, T, H), a^<T> as (N, H)). ``lengths``
    as for :func:`simple_rnn`. See :class:`GRUFunction`."""
    n, steps, _, hidden = _check("gru", x, (("h0", h0),), w_x, w_h, b_x, b_h, 3)
    lengths = check_lengths("gru", lengths, _shape(x))
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    packed = GRUFunction.apply(x, h0, w_x, w_h, *_biases(x, b_x, b_h, 3 * hidden), lengths=lengths)
    return _split(packed, steps, 0, lengths)


def lstm(x, h0=None, c0=None, w_x=None, w_h=None, b_x=None, b_h=None, lengths=None):
    """An LSTM over the sequence x (N, T, D), gates i, f, g, o as PyTorch. ``h0`` and ``c0``
    (N, H) default to zeros. Returns (a^<1..T> as (N, T, H), a^<T>, c^<T> as (N, H)).
    ``lengths`` as for :func:`simple_rnn` (the final states are then a^<lengths[i]> and
    c^<lengths[i]>). See :class:`LSTMFunction`."""
    n, steps, _, hidden = _check("lstm", x, (("h0", h0), ("c0", c0)), w_x, w_h, b_x, b_h, 4)
    lengths = check_lengths("lstm", lengths, _shape(x))
    h0 = _zeros(x, n, hidden) if h0 is None else h0
    c0 = _zeros(x, n, hidden) if c0 is None else c0
    packed = LSTMFunction.apply(x, h0, c0, w_x, w_h, *_biases(x, b_x, b_h, 4 * hidden), lengths=lengths)
    return _split(packed, steps, 1, lengths)
