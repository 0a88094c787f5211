"""The convolutional LSTM (Shi et al. 2015, without peepholes; Keras's ``ConvLSTM2D``) over a
sequence of NHWC frames.

The LSTM of the course notes with its matrix products replaced by convolutions (``*`` the
cross-correlation of :func:`lamina.functional.conv2d`): for frames x^<t> (N, H, W, C) and
K filters,

    z^<t> = x^<t> * W + a^<t-1> * U + b             (4K channels: the blocks i, f, c~, o)
    Gamma_u = sigma(z_i),  Gamma_f = sigma(z_f),  c~ = g(z_c),  Gamma_o = sigma(z_o)
    c^<t> = Gamma_u c~ + Gamma_f c^<t-1>,          a^<t> = Gamma_o g(c^<t>)

with W (4K, f_h, f_w, C) applied with the layer's stride and padding, and U (4K, f_h', f_w', K)
with stride 1 and 'same' padding, so that a^<t> and c^<t> (N, h', w', K) keep the size of
x^<t> * W. g is tanh (or relu), sigma the logistic sigmoid (or the hard sigmoid
relu6(z + 3) / 6). The states start from a^<0> = c^<0> = 0 unless given.

Speed. x^<t> * W + b does not depend on the recurrence, so it runs once for all T frames:
one im2col + GEMM over the N T frames (:func:`lamina.functional.conv2d`, its own node). The
recurrence is one node, :class:`ConvLSTMFunction`, which works channel-major: a state is
kept as (K, N, h', w'), zero-padded for U, so that a step's recurrent convolution is one GEMM

    U (4K, f_h' f_w' K)  x  P (f_h' f_w' K, N h' w')

with P one strided copy of the padded state, and its result holds each gate's block as
one contiguous (K, N h' w') array: every elementwise pass of a step runs on contiguous
memory (a channels-last slice of K of the 4K channels runs several times slower in NumPy,
a per-pixel inner loop). Backward computes the local derivatives of all steps at once, then
per step: dJ/da^<t-1> is the col2im of U^T dZ^<t>, and dJ/dU += dZ^<t> P^T with P rebuilt
from the kept state rather than kept from forward.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.conv import conv2d
from lamina.functional.im2col import conv_pads, strided_view, strides_of
from lamina.functional.recurrent_steps import as_dtype
from lamina.functional.recurrent_unrolled import conv_lstm_steps
from lamina.functional.shape import getitem, reshape

__all__ = ["ACTIVATIONS", "RECURRENT_ACTIVATIONS", "ConvLSTMFunction", "conv_lstm"]

ACTIVATIONS = ("tanh", "relu")
"""The choices of g, the activation of the candidate memory and of the output."""

RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
"""The choices of sigma, the activation of the three gates."""


# -- activations in place, and their derivatives from their outputs ----------------------
def _activate(name: str, a) -> None:
    """``a`` <- name(a), in place."""
    xp = backend.xp
    if name == "tanh":
        xp.tanh(a, out=a)
    elif name == "relu":
        xp.maximum(a, 0, out=a)
    elif name == "sigmoid":                 # sigma(z) = (1 + tanh(z / 2)) / 2, no overflow
        a *= 0.5
        xp.tanh(a, out=a)
        a *= 0.5
        a += 0.5
    else:                                   # hard sigmoid: clip(z / 6 + 1 / 2, 0, 1)
        a *= 1 / 6
        a += 0.5
        xp.clip(a, 0, 1, out=a)


def _derivative(name: str, y):
    """The activation's derivative at z, written with its output y = name(z): tanh 1 - y^2,
    relu [y > 0], sigmoid y (1 - y), hard sigmoid [0 < y < 1] / 6. A new array."""
    xp = backend.xp
    if name == "tanh":
        d = xp.multiply(y, y)
        xp.subtract(1, d, out=d)
        return d
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "sigmoid":
        d = xp.subtract(1, y)
        d *= y
        return d
    d = ((y > 0) & (y < 1)).astype(y.dtype)
    d *= 1 / 6
    return d


def _product(a, b, out, accumulate: bool = False):
    """out = a b (or out += a b), the rows of ``a`` shared among lamina's threads when the
    product is large enough, each thread with single-threaded BLAS: a step's products are
    too small for OpenBLAS's own threads, whose start-up and spinning cost more than the
    product (see :mod:`lamina.parallel`)."""
    xp = backend.xp

    def rows(lo: int, hi: int) -> None:
        if accumulate:
            out[lo:hi] += xp.matmul(a[lo:hi], b)
        else:
            xp.matmul(a[lo:hi], b, out=out[lo:hi])
    parallel.split(rows, a.shape[0], a.size + b.size + out.size)
    return out


# -- the recurrence as one node ---------------------------------------------------------
class ConvLSTMFunction(Function):
    """The recurrence of the ConvLSTM over T steps (see the module notes), as one node.

    Inputs (zx, a0, c0, U): zx (N, T, h', w', 4K) the input convolutions x^<t> * W + b of
    every step, a0 and c0 (N, h', w', K), U (4K, f_h, f_w, K). Keywords: ``pads`` (top,
    bottom, left, right), U's 'same' padding; ``activation`` (g), ``recurrent_activation``
    (sigma); ``go_backwards``: read zx from its last step to its first.
    Output (N, T + 1, h', w', K): [a^<1>, ..., a^<T>, c^<T>], the steps in reading order.

    Backward, with dA and dC the gradients reaching a^<t> and c^<t> (dC collects
    dC^<t+1> Gamma_f^<t+1> and dA Gamma_o g'(c^<t>)):

        dZ_o = dA g(c^<t>) sigma'(z_o),   dZ_i = dC c~ sigma'(z_i)
        dZ_f = dC c^<t-1> sigma'(z_f),    dZ_c = dC Gamma_u g'(z_c)
        dC^<t-1> = dC Gamma_f,            dA^<t-1> += dZ^<t> * U transposed (col2im of U^T dZ^<t>)
        dJ/dU = sum_t dZ^<t> (P^<t>)^T,   dJ/dzx = dZ

    where each derivative is written with the activation's output (sigma' = sigma (1 - sigma)).
    """

    def forward(self, zx, a0, c0, u):
        xp = backend.xp
        dtype = zx.dtype
        n, steps, ho, wo, k4 = zx.shape
        k = k4 // 4
        pt, pb, pl, pr = self.pads
        m = n * ho * wo
        self.u2 = as_dtype(u, dtype).reshape(k4, -1)
        self.kernel = u.shape[1:3]
        self.zx_shape = zx.shape
        order = slice(None, None, -1) if self.go_backwards else slice(None)
        # z^<t> channel-major, (T, 4K, N h' w'); each step's block becomes its gates in place
        gates = xp.empty((steps, k4, n, ho, wo), dtype=dtype)
        gates[...] = zx[:, order].transpose(1, 4, 0, 2, 3)
        gates = gates.reshape(steps, k4, m)
        states = xp.zeros((steps + 1, k, n, ho + pt + pb, wo + pl + pr), dtype=dtype)
        states[0, :, :, pt:pt + ho, pl:pl + wo] = a0.transpose(3, 0, 1, 2)
        cs = xp.empty((steps + 1, k, m), dtype=dtype)
        cs[0] = c0.transpose(3, 0, 1, 2).reshape(k, m)
        act_c = xp.empty((steps, k, m), dtype=dtype)
        rec = xp.empty((k4, m), dtype=dtype)
        tmp = xp.empty((k, m), dtype=dtype)
        patch = None
        for t in range(steps):
            patch = self._patches(states[t], patch)
            _product(self.u2, patch, rec)
            z = gates[t]
            z += rec
            _activate(self.recurrent_activation, z[:2 * k])
            _activate(self.activation, z[2 * k:3 * k])
            _activate(self.recurrent_activation, z[3 * k:])
            c = cs[t + 1]
            xp.multiply(z[k:2 * k], cs[t], out=c)
            xp.multiply(z[:k], z[2 * k:3 * k], out=tmp)
            c += tmp
            g_c = act_c[t]
            g_c[...] = c
            _activate(self.activation, g_c)
            xp.multiply(z[3 * k:].reshape(k, n, ho, wo), g_c.reshape(k, n, ho, wo),
                        out=states[t + 1, :, :, pt:pt + ho, pl:pl + wo])
        self.gates, self.states, self.cs, self.act_c = gates, states, cs, act_c
        out = xp.empty((n, steps + 1, ho, wo, k), dtype=dtype)
        out[:, :steps] = states[1:, :, :, pt:pt + ho, pl:pl + wo].transpose(2, 0, 3, 4, 1)
        out[:, steps] = cs[steps].reshape(k, n, ho, wo).transpose(1, 2, 3, 0)
        return out

    def composite(self, zx, a0, c0, u):
        return conv_lstm_steps(zx, a0, c0, u, self.activation, self.recurrent_activation, self.go_backwards)

    backward_graph = Function.composite_backward_graph

    def _patches(self, padded, buffer=None):
        """P (f_h f_w K, N h' w') of a zero-padded state (K, N, h_p, w_p): row (i, j, c),
        column (n, y, x) holds padded[c, n, y + i, x + j]; one copy into ``buffer``."""
        k, n, hp, wp = padded.shape
        fh, fw = self.kernel
        ho, wo = hp - fh + 1, wp - fw + 1
        s_k, s_n, s_h, s_w = strides_of(padded)
        view = strided_view(padded, (fh, fw, k, n, ho, wo), (s_h, s_w, s_k, s_n, s_h, s_w))
        if buffer is None:
            buffer = backend.xp.empty((fh * fw * k, n * ho * wo), dtype=padded.dtype)
        buffer.reshape(view.shape)[...] = view
        return buffer

    def _col2im(self, dp, padded):
        """dJ/da^<t-1> (K, N h' w') from dP = U^T dZ (f_h f_w K, N h' w'): each window offset
        hands its rows back to the pixels it read; ``padded`` (K, N, h_p, w_p) is scratch."""
        k, n, hp, wp = padded.shape
        fh, fw = self.kernel
        ho, wo = hp - fh + 1, wp - fw + 1
        pt, _, pl, _ = self.pads
        dp6 = dp.reshape(fh, fw, k, n, ho, wo)
        padded[...] = 0
        for i in range(fh):
            for j in range(fw):
                padded[:, :, i:i + ho, j:j + wo] += dp6[i, j]
        return backend.xp.ascontiguousarray(padded[:, :, pt:pt + ho, pl:pl + wo]).reshape(k, n * ho * wo)

    def backward(self, dy):
        xp = backend.xp
        gates, states, cs, act_c = self.gates, self.states, self.cs, self.act_c
        n, steps, ho, wo, k4 = self.zx_shape
        k, m = k4 // 4, n * ho * wo
        dtype = gates.dtype
        needs = self.needs_grad
        g4 = gates.reshape(steps, 4, k, m)
        gate_i, gate_f, cand, gate_o = g4[:, 0], g4[:, 1], g4[:, 2], g4[:, 3]
        sigma, g = self.recurrent_activation, self.activation
        # dZ = coef * [dC, dC, dC, dA] and dC += dA * oc; coef becomes dZ step by step
        coef = xp.empty((steps, 4, k, m), dtype=dtype)
        xp.multiply(_derivative(sigma, gate_i), cand, out=coef[:, 0])
        xp.multiply(_derivative(sigma, gate_f), cs[:steps], out=coef[:, 1])
        xp.multiply(_derivative(g, cand), gate_i, out=coef[:, 2])
        xp.multiply(_derivative(sigma, gate_o), act_c, out=coef[:, 3])
        oc = _derivative(g, act_c)
        oc *= gate_o
        # the upstream gradients, channel-major: dA^<1..T> (T, K, M) and dC^<T> (K, M)
        dseq = xp.empty((steps, k, n, ho, wo), dtype=dtype)
        dseq[...] = dy[:, :steps].transpose(1, 4, 0, 2, 3)
        dseq = dseq.reshape(steps, k, m)
        dc = xp.array(dy[:, steps].transpose(3, 0, 1, 2), dtype=dtype).reshape(k, m)     # a copy: updated in place
        rec = xp.zeros((k, m), dtype=dtype)          # the gradient reaching a^<t> from step t + 1, through U
        tmp = xp.empty((k, m), dtype=dtype)
        dp = xp.empty((self.u2.shape[1], m), dtype=dtype)
        scratch = xp.empty(states.shape[1:], dtype=dtype)
        du2 = xp.zeros(self.u2.shape, dtype=dtype) if needs[3] else None
        u2_t = self.u2.T
        patch = None
        for t in range(steps - 1, -1, -1):
            dh = dseq[t]
            dh += rec
            xp.multiply(dh, oc[t], out=tmp)
            dc += tmp
            dz = coef[t]
            dz[:3] *= dc
            dz[3] *= dh
            dc *= gate_f[t]
            dz2 = dz.reshape(k4, m)
            if t > 0 or needs[1]:
                rec = self._col2im(_product(u2_t, dz2, dp), scratch)
            if du2 is not None:
                patch = self._patches(states[t], patch)
                _product(dz2, patch.T, du2, accumulate=True)
        del dseq, oc                                  # before the next large buffer
        dzx = da0 = dc0 = du = None
        if needs[0]:
            order = slice(None, None, -1) if self.go_backwards else slice(None)
            dzx = xp.empty(self.zx_shape, dtype=dtype)
            dzx[:, order] = coef.reshape(steps, k4, n, ho, wo).transpose(2, 0, 3, 4, 1)
        if needs[1]:
            da0 = xp.ascontiguousarray(rec.reshape(k, n, ho, wo).transpose(1, 2, 3, 0))
        if needs[2]:
            dc0 = xp.ascontiguousarray(dc.reshape(k, n, ho, wo).transpose(1, 2, 3, 0))
        if du2 is not None:
            du = du2.reshape((k4, *self.kernel, k))
        return dzx, da0, dc0, du


# -- the op on tensors -------------------------------------------------------------------
def _shape(a) -> tuple:
    return tuple(a.shape)


def _check(op: str, x, kernel, recurrent_kernel, bias) -> int:
    """Shape checks with the operands' shapes in the messages; returns K."""
    xs, ws, us = _shape(x), _shape(kernel), _shape(recurrent_kernel)
    if len(xs) != 5:
        raise ShapeError(f"{op}: x must be a sequence of NHWC frames (batch, time, height, width, channels), "
                         f"got shape {xs}")
    if xs[1] < 1:
        raise ShapeError(f"{op}: x of shape {xs} has no time steps")
    if len(ws) != 4 or ws[0] % 4:
        raise ShapeError(f"{op}: kernel must be (4 K, f_h, f_w, C), got shape {ws}")
    k = ws[0] // 4
    if ws[3] != xs[4]:
        raise ShapeError(f"{op}: kernel of shape {ws} expects C={ws[3]} channels, x of shape {xs} has {xs[4]}")
    if len(us) != 4 or us[0] != 4 * k or us[3] != k:
        raise ShapeError(f"{op}: recurrent_kernel must be (4 K, f_h, f_w, K) with 4 K = {4 * k} for a kernel of "
                         f"shape {ws}, got shape {us}")
    if bias is not None and _shape(bias) != (4 * k,):
        raise ShapeError(f"{op}: bias must be (4 K,) = ({4 * k},) for a kernel of shape {ws}, got shape "
                         f"{_shape(bias)}")
    return k


def _zeros(x, shape) -> Tensor:
    dtype = x.dtype if hasattr(x, "dtype") else backend.get_default_dtype()
    return Tensor._wrap(backend.xp.zeros(shape, dtype=dtype))


def conv_lstm(x, kernel, recurrent_kernel, bias=None, h0=None, c0=None, stride=1, padding="same",
              activation: str = "tanh", recurrent_activation: str = "sigmoid",
              go_backwards: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """A ConvLSTM over x (N, T, H, W, C) (see the module notes): kernel W (4K, f_h, f_w, C)
    with ``stride`` and ``padding`` ('same', 'valid' or as :func:`conv2d`), recurrent_kernel U
    (4K, f_h', f_w', K) with stride 1 and 'same' padding, bias (4K,) or None; the gate blocks
    in the order i, f, c~, o. ``h0`` and ``c0`` (N, h', w', K) default to zeros.
    ``go_backwards``: read the frames from the last to the first.

    Returns (a^<1..T> (N, T, h', w', K) in reading order, a^<T>, c^<T> (N, h', w', K))."""
    op = "conv_lstm"
    k = _check(op, x, kernel, recurrent_kernel, bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if recurrent_activation not in RECURRENT_ACTIVATIONS:
        raise ValueError(f"{op}: recurrent_activation must be one of {RECURRENT_ACTIVATIONS}, "
                         f"got {recurrent_activation!r}")
    n, steps, h, w, c = _shape(x)
    frames = conv2d(reshape(x, (n * steps, h, w, c)), kernel, bias, stride=stride, padding=padding)
    ho, wo = frames.shape[1:3]
    zx = reshape(frames, (n, steps, ho, wo, 4 * k))
    state_shape = (n, ho, wo, k)
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None and _shape(s) != state_shape:
            raise ShapeError(f"{op}: the initial state {name} must be (N, h', w', K) = {state_shape} for x of shape "
                             f"{_shape(x)} and a kernel of shape {_shape(kernel)}, got shape {_shape(s)}")
    h0 = _zeros(x, state_shape) if h0 is None else h0
    c0 = _zeros(x, state_shape) if c0 is None else c0
    pads = conv_pads("same", (ho, wo), tuple(_shape(recurrent_kernel)[1:3]), (1, 1), op)
    packed = ConvLSTMFunction.apply(zx, h0, c0, recurrent_kernel, pads=pads, activation=activation,
                                    recurrent_activation=recurrent_activation, go_backwards=bool(go_backwards))
    sequence = getitem(packed, (slice(None), slice(0, steps)))
    return sequence, getitem(packed, (slice(None), steps - 1)), getitem(packed, (slice(None), steps))
