"""The recurrent cells as fused nodes, each running a whole sequence: a simple RNN, the
GRU and the LSTM (the formulas, layouts and the handling of lengths are in
:mod:`lamina.functional.recurrent`)."""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function
from lamina.functional.recurrent_steps import (
    as_dtype,
    finish_padded,
    half_sigmoid_columns,
    padding_mask,
    previous_states,
    project_inputs,
    sigmoid_from_tanh,
    total_bias,
    upstream_gradients,
    weight_gradients,
    where_padded,
)
from lamina.functional.recurrent_unrolled import gru_steps, lstm_steps, simple_rnn_steps

__all__ = ["GRUFunction", "LSTMFunction", "SimpleRNNFunction"]


# -- simple RNN ------------------------------------------------------------------------
class SimpleRNNFunction(Function):
    """a^<t> = g(x^<t> W_x + a^<t-1> W_h + b_x + b_h), g = tanh or relu, for t = 1..T.

    Inputs (x, a0, W_x, W_h[, b_x, b_h]), x (N, T, D), a0 (N, H), W_x (D, H), W_h (H, H),
    biases (H,). Output, time-major: (T + 1, N, H), [a^<0>, a^<1>, ..., a^<T>] (the op slices it).
    Backward, with dA^<t> the gradient reaching a^<t> from the output and from step t + 1:

        dZ^<t> = dA^<t> g'(z^<t>)   (1 - (a^<t>)^2 for tanh, [a^<t> > 0] for relu)
        dA^<t-1> += dZ^<t> W_h^T

    then dJ/dW_x = X^T dZ, dJ/dW_h = A_prev^T dZ, dJ/db_x = dJ/db_h = sum dZ, dJ/dx = dZ W_x^T.
    Keywords: ``activation`` ('tanh' or 'relu'); ``lengths`` (N,) integers or None (see the
    module notes): the output is then (T + 2, N, H), [a^<0>, a^<1..T> with zeros at the
    padded steps, a^<lengths[i]>].
    """

    lengths = None

    def forward(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        xp = backend.xp
        dtype = x.dtype
        w_x, w_h = as_dtype(w_x, dtype), as_dtype(w_h, dtype)
        n, steps, _ = x.shape
        hidden = w_h.shape[0]
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        self.x2, z = project_inputs(x, w_x, total_bias(as_dtype(b_x, dtype), as_dtype(b_h, dtype)))
        self.first_pad = first_pad = padding_mask(self, steps)
        pad = self.pad
        out = xp.empty((steps + (1 if pad is None else 2), n, hidden), dtype=dtype)
        out[0] = a0
        rec = xp.empty((n, hidden), dtype=dtype)
        relu = self.activation == "relu"
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                parallel.matmul(out[t], w_h, out=rec)
                a = out[t + 1]
                xp.add(z[t], rec, out=a)
                if relu:
                    xp.maximum(a, 0, out=a)
                else:
                    xp.tanh(a, out=a)
                if t >= first_pad:                 # finished rows keep their state
                    xp.copyto(a, out[t], where=pad[t, :, None])
        if pad is not None:
            finish_padded(self, out, pad, steps)
        self.out = out
        return out

    def composite(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        return simple_rnn_steps(x, a0, w_x, w_h, b_x, b_h, self.activation, self.pad)

    backward_graph = Function.composite_backward_graph

    def backward(self, dy):
        xp = backend.xp
        out, w_h, pad, first_pad = self.out, self.w_h, self.pad, self.first_pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        states = out[1:steps + 1]
        if self.activation == "relu":
            deriv = (states > 0).astype(out.dtype)
        else:
            deriv = xp.multiply(states, states)
            xp.subtract(1, deriv, out=deriv)
        dseq, dfinal = upstream_gradients(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=out.dtype)
        else:
            where_padded(pad, 0, deriv)
            rec = dfinal
        dz = xp.empty((steps, n, hidden), dtype=out.dtype)
        dh = xp.empty_like(rec)
        w_h_t = w_h.T
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                xp.add(dseq[t], rec, out=dh)
                d = dz[t]
                xp.multiply(dh, deriv[t], out=d)
                parallel.matmul(d, w_h_t, out=rec)
                if t >= first_pad:                 # finished rows pass dA^<t> through
                    xp.copyto(rec, dh, where=pad[t, :, None])
        da0 = rec + dy[0] if self.needs_grad[1] else None
        needs = self.needs_grad
        has_bias = len(needs) == 6
        want_b = has_bias and (needs[4] or needs[5])
        dx, dw_x, dw_h, db = weight_gradients(self, dz, previous_states(self, steps),
                                              (needs[0], needs[2], needs[3], want_b))
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
    (T + 1, N, H), [a^<0>, ..., a^<T>]. Every local derivative is a product of forward values,
    so backward keeps per step only dA^<t> (the gradient reaching a^<t>) times precomputed
    coefficients, with A = (1 - z)(1 - n^2) and h_n = a^<t-1> W_hn + b_hn:

        dZ_r = dA A h_n r (1 - r),   dZ_z = dA (a^<t-1> - n) z (1 - z)
        dZ_xn = dA A,  dZ_hn = dA A r
        dA^<t-1> += dA z + [dZ_r, dZ_z, dZ_hn] W_h^T

    With ``lengths`` (see the module notes) the output is (T + 2, N, H), [a^<0>, a^<1..T>
    with zeros at the padded steps, a^<lengths[i]>]; in backward a padded step has zero
    coefficients and z = 1, which passes dA^<t> through unchanged.
    """

    lengths = None

    def forward(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        xp = backend.xp
        dtype = x.dtype
        w_x, w_h = as_dtype(w_x, dtype), as_dtype(w_h, dtype)
        b_x, b_h = as_dtype(b_x, dtype), as_dtype(b_h, dtype)
        n, steps, _ = x.shape
        hidden = w_h.shape[0]
        h2 = 2 * hidden
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        bias, b_hn = None, None
        if b_x is not None:
            bias = b_x.copy()
            bias[:h2] += b_h[:h2]
            bias = half_sigmoid_columns(bias, h2)
            b_hn = b_h[h2:]
        self.x2, gates = project_inputs(x, half_sigmoid_columns(w_x, h2), bias)
        w_h_half = half_sigmoid_columns(w_h, h2)
        first_pad = padding_mask(self, steps)
        pad = self.pad
        out = xp.empty((steps + (1 if pad is None else 2), n, hidden), dtype=dtype)
        out[0] = a0
        hn_all = xp.empty((steps, n, hidden), dtype=dtype)
        rec = xp.empty((n, 3 * hidden), dtype=dtype)
        tmp = xp.empty((n, hidden), dtype=dtype)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                prev = out[t]
                parallel.matmul(prev, w_h_half, out=rec)
                hn = hn_all[t]
                if b_hn is None:
                    hn[...] = rec[:, h2:]
                else:
                    xp.add(rec[:, h2:], b_hn, out=hn)
                g = gates[t]
                rz = g[:, :h2]
                rz += rec[:, :h2]
                xp.tanh(rz, out=rz)
                sigmoid_from_tanh(rz)
                cand = g[:, h2:]
                xp.multiply(g[:, :hidden], hn, out=tmp)
                cand += tmp
                xp.tanh(cand, out=cand)
                a = out[t + 1]
                xp.subtract(prev, cand, out=a)
                a *= g[:, hidden:h2]
                a += cand
                if t >= first_pad:                 # finished rows keep their state
                    xp.copyto(a, prev, where=pad[t, :, None])
        if pad is not None:
            finish_padded(self, out, pad, steps)
        self.out, self.gates, self.hn = out, gates, hn_all
        return out

    def composite(self, x, a0, w_x, w_h, b_x=None, b_h=None):
        return gru_steps(x, a0, w_x, w_h, b_x, b_h, self.pad)

    backward_graph = Function.composite_backward_graph

    def backward(self, dy):
        xp = backend.xp
        out, gates, hn, pad = self.out, self.gates, self.hn, self.pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        dtype = out.dtype
        g4 = gates.reshape(steps, n, 3, hidden)
        r, z, cand = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2]
        prev = previous_states(self, steps)
        # coefficients: dZ = dA * coef, (T, N, 3, H) in the order r, z, hn
        coef = xp.empty((steps, n, 3, hidden), dtype=dtype)
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
        dseq, dfinal = upstream_gradients(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=dtype)
        else:
            where_padded(pad, 0, coef)
            where_padded(pad, 0, big_a)
            z = where_padded(pad, 1, z)
            rec = dfinal
        # each step's dZ overwrites its coefficients, and dA A (the input side's dZ_n) the
        # step's A: neither is read again
        dz = coef
        dh = xp.empty_like(rec)
        tmp = xp.empty_like(rec)
        w_h_t = self.w_h.T
        dz3 = dz.reshape(steps, n, 3 * hidden)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                xp.add(dseq[t], rec, out=dh)
                dz[t] *= dh[:, None, :]
                big_a[t] *= dh
                parallel.matmul(dz3[t], w_h_t, out=rec)
                xp.multiply(dh, z[t], out=tmp)
                rec += tmp
        needs = self.needs_grad
        da0 = rec + dy[0] if needs[1] else None
        # the recurrent side first, then the n block becomes the input side's gradient
        has_bias = len(needs) == 6
        _, _, dw_h, db_h = weight_gradients(self, dz3, prev, (False, False, needs[3], has_bias and needs[5]))
        dz[:, :, 2] = big_a
        dx, dw_x, _, db_x = weight_gradients(self, dz3, prev, (needs[0], needs[2], False, has_bias and needs[4]))
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

    with b = b_x + b_h. Inputs (x, a0, c0, W_x, W_h[, b_x, b_h]); output (T + 2, N, H):
    [a^<0>, a^<1>, ..., a^<T>, c^<T>]. Backward, with dA, dC the gradients reaching a^<t>
    and c^<t> (dC collects dC^<t+1> f^<t+1> and dA o (1 - tanh^2 c^<t>)):

        dZ_o = dA tanh(c) o (1 - o),  dZ_i = dC g i (1 - i),  dZ_f = dC c^<t-1> f (1 - f)
        dZ_g = dC i (1 - g^2),        dA^<t-1> += dZ W_h^T,   dC^<t-1> = dC f

    With ``lengths`` (see the module notes) the output is (T + 3, N, H), [a^<0>, a^<1..T>
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
        w_x = _reorder(as_dtype(w_x, dtype), hidden, _LSTM_ORDER)
        w_h = _reorder(as_dtype(w_h, dtype), hidden, _LSTM_ORDER)
        self.x_shape, self.w_x, self.w_h = x.shape, w_x, w_h
        bias = total_bias(as_dtype(b_x, dtype), as_dtype(b_h, dtype))
        if bias is not None:
            bias = half_sigmoid_columns(_reorder(bias, hidden, _LSTM_ORDER), h3)
        self.x2, gates = project_inputs(x, half_sigmoid_columns(w_x, h3), bias)
        w_h_half = half_sigmoid_columns(w_h, h3)
        self.first_pad = first_pad = padding_mask(self, steps)
        pad = self.pad
        out = xp.empty((steps + (2 if pad is None else 3), n, hidden), dtype=dtype)
        out[0] = a0
        cs = xp.empty((steps + 1, n, hidden), dtype=dtype)
        cs[0] = c0
        tanh_c = xp.empty((steps, n, hidden), dtype=dtype)
        rec = xp.empty((n, 4 * hidden), dtype=dtype)
        tmp = xp.empty((n, hidden), dtype=dtype)
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps):
                g = gates[t]
                parallel.matmul(out[t], w_h_half, out=rec)
                g += rec
                xp.tanh(g, out=g)
                sigmoid_from_tanh(g[:, :h3])
                c = cs[t + 1]
                xp.multiply(g[:, 2 * hidden:h3], cs[t], out=c)
                xp.multiply(g[:, hidden:2 * hidden], g[:, h3:], out=tmp)
                c += tmp
                th = tanh_c[t]
                xp.tanh(c, out=th)
                xp.multiply(g[:, :hidden], th, out=out[t + 1])
                if t >= first_pad:                 # finished rows keep their states
                    done = pad[t, :, None]
                    xp.copyto(c, cs[t], where=done)
                    xp.copyto(out[t + 1], out[t], where=done)
        if pad is None:
            out[steps + 1] = cs[steps]
        else:
            finish_padded(self, out, pad, steps)
            out[steps + 2] = cs[steps]
        self.out, self.gates, self.cs, self.tanh_c = out, gates, cs, tanh_c
        return out

    def composite(self, x, a0, c0, w_x, w_h, b_x=None, b_h=None):
        return lstm_steps(x, a0, c0, w_x, w_h, b_x, b_h, self.pad)

    backward_graph = Function.composite_backward_graph

    def backward(self, dy):
        xp = backend.xp
        out, gates, cs, tanh_c = self.out, self.gates, self.cs, self.tanh_c
        pad, first_pad = self.pad, self.first_pad
        n, steps, _ = self.x_shape
        hidden = out.shape[2]
        dtype = out.dtype
        g4 = gates.reshape(steps, n, 4, hidden)
        o, i, f, cand = g4[:, :, 0], g4[:, :, 1], g4[:, :, 2], g4[:, :, 3]
        # dZ_o = dA * q;  dC += dA * oc;  [dZ_i, dZ_f, dZ_g] = dC * p. q and p live in dz's
        # blocks, and each step's dZ overwrites them there
        dz = xp.empty((steps, n, 4, hidden), dtype=dtype)
        q, p = dz[:, :, 0], dz[:, :, 1:]
        xp.subtract(1, o, out=q)
        q *= o
        q *= tanh_c
        oc = xp.multiply(tanh_c, tanh_c)
        xp.subtract(1, oc, out=oc)
        oc *= o
        xp.subtract(1, i, out=p[:, :, 0])
        p[:, :, 0] *= i
        p[:, :, 0] *= cand
        xp.subtract(1, f, out=p[:, :, 1])
        p[:, :, 1] *= f
        p[:, :, 1] *= cs[:steps]
        xp.multiply(cand, cand, out=p[:, :, 2])
        xp.subtract(1, p[:, :, 2], out=p[:, :, 2])
        p[:, :, 2] *= i
        dseq, dfinal = upstream_gradients(self, dy, steps)
        if pad is None:
            rec = xp.zeros((n, hidden), dtype=dtype)
            dc = xp.array(dy[steps + 1], dtype=dtype)
        else:
            for a in (q, oc, p):
                where_padded(pad, 0, a)
            f = where_padded(pad, 1, f)
            rec = dfinal
            dc = xp.array(dy[steps + 2], dtype=dtype)
        dz4 = dz.reshape(steps, n, 4 * hidden)
        dh = xp.empty_like(rec)
        tmp = xp.empty_like(rec)
        w_h_t = self.w_h.T
        with parallel.one_blas_thread():      # per-step products: too small for BLAS threads
            for t in range(steps - 1, -1, -1):
                xp.add(dseq[t], rec, out=dh)
                xp.multiply(dh, oc[t], out=tmp)
                dc += tmp
                q[t] *= dh
                p[t] *= dc[:, None, :]
                dc *= f[t]
                parallel.matmul(dz4[t], w_h_t, out=rec)
                if t >= first_pad:                 # finished rows pass dA^<t> through
                    xp.copyto(rec, dh, where=pad[t, :, None])
        needs = self.needs_grad
        da0 = rec + dy[0] if needs[1] else None
        dc0 = dc if needs[2] else None
        has_bias = len(needs) == 7
        want_b = has_bias and (needs[5] or needs[6])
        dx, dw_x, dw_h, db = weight_gradients(self, dz4, previous_states(self, steps),
                                              (needs[0], needs[3], needs[4], want_b))
        dw_x = None if dw_x is None else _reorder(dw_x, hidden, _LSTM_BACK)
        dw_h = None if dw_h is None else _reorder(dw_h, hidden, _LSTM_BACK)
        if has_bias:
            db = None if db is None else _reorder(db, hidden, _LSTM_BACK)
            return dx, da0, dc0, dw_x, dw_h, db if needs[5] else None, db if needs[6] else None
        return dx, da0, dc0, dw_x, dw_h


