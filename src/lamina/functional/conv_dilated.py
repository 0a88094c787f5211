"""Dilated (atrous) convolution, stride 1, as an ordinary convolution of the input's phases.

With a dilation (d_h, d_w) the kernel's taps are d pixels apart:

    v[n, y, x, k] = b[k] + sum_{i, j, c} xpad[n, y + d_h i, x + d_w j, c] w[k, i, j, c]

Output (y, x) = (d_h y' + a, d_w x' + q) reads only the pixels of phase (a, q) of the padded
input, P_aq[n, y'', x''] = xpad[n, d_h y'' + a, d_w x'' + q], at (y' + i, x' + j): so the
outputs of that phase are the undilated convolution P_aq * w. The d_h d_w phases go through
the undilated kernels as one batch d_h d_w times larger, and their outputs are interleaved
back. Backward runs the same steps in reverse: dJ/dv split into phases, the undilated
backward, dJ/dx gathered from the phases (each input pixel lies in exactly one of them).
Nothing but the phases (the inner convolution's input) is kept for backward.

With a stride s as well, output y reads xpad[s y + d i]: :func:`strided_dilated_conv2d`
gathers those windows as patch rows (unfold with stride and dilation) and multiplies them by
the filters, v_g = P(x) W_g^T + b, from recorded ops, so every derivative comes with them.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional.fold import conv_gradients_graph, conv_patch_rows
from lamina.functional.im2col import clipped


def _phase_sizes(size: int, before: int, after: int, d: int) -> int:
    """Rows (or columns) of each phase: the padded length, rounded up to whole phases, / d."""
    return -(-(size + before + after) // d)


def to_phases(x, pads, dilation):
    """(d_h d_w N, hq, wq, C): P_aq of the zero-padded x, phase (a, q) at index a d_w + q."""
    xp = backend.xp
    n, h, wd, c = x.shape
    (dh, dw), (pt, pb, pl, pr) = dilation, pads
    hq, wq = _phase_sizes(h, pt, pb, dh), _phase_sizes(wd, pl, pr, dw)
    phases = xp.zeros((dh, dw, n, hq, wq, c), dtype=x.dtype)
    for a in range(dh):
        lo_h, hi_h, rows = clipped(hq, a - pt, dh, h)
        for q in range(dw):
            lo_w, hi_w, cols = clipped(wq, q - pl, dw, wd)
            phases[a, q, :, lo_h:hi_h, lo_w:hi_w] = x[:, rows, cols]
    return phases.reshape(dh * dw * n, hq, wq, c)


def from_phases(d_phases, x_shape, pads, dilation):
    """dJ/dx from dJ/dP: each pixel of x taken from the one phase that holds it."""
    xp = backend.xp
    n, h, wd, c = x_shape
    (dh, dw), (pt, _, pl, _) = dilation, pads
    grid = d_phases.reshape((dh, dw, n) + d_phases.shape[1:])
    dx = xp.empty(x_shape, dtype=d_phases.dtype)
    for a in range(dh):
        lo_h, hi_h, rows = clipped(grid.shape[3], a - pt, dh, h)
        for q in range(dw):
            lo_w, hi_w, cols = clipped(grid.shape[4], q - pl, dw, wd)
            dx[:, rows, cols] = grid[a, q, :, lo_h:hi_h, lo_w:hi_w]
    return dx


def interleave(v, out_hw, dilation):
    """The (N, h_out, w_out, K) output from the phases' outputs (d_h d_w N, vh, vw, K):
    out[:, a::d_h, q::d_w] = v of phase (a, q), cut to the output size."""
    xp = backend.xp
    (dh, dw), (ho, wo) = dilation, out_hw
    grid = v.reshape((dh, dw, -1) + v.shape[1:])
    out = xp.empty((grid.shape[2], ho, wo, v.shape[3]), dtype=v.dtype)
    for a in range(min(dh, ho)):
        for q in range(min(dw, wo)):
            part = out[:, a::dh, q::dw]
            part[...] = grid[a, q, :, :part.shape[1], :part.shape[2]]
    return out


def deinterleave(dy, phase_hw, dilation):
    """dJ/dv of the phases' outputs from dJ/dv: zero where a phase's output falls past the
    output size."""
    xp = backend.xp
    (dh, dw), (vh, vw) = dilation, phase_hw
    n, ho, wo, k = dy.shape
    grid = xp.zeros((dh, dw, n, vh, vw, k), dtype=dy.dtype)
    for a in range(min(dh, ho)):
        for q in range(min(dw, wo)):
            part = dy[:, a::dh, q::dw]
            grid[a, q, :, :part.shape[1], :part.shape[2]] = part
    return grid.reshape(dh * dw * n, vh, vw, k)


class DilatedConv2d(Function):
    """v = x *_d w + b through ``inner`` (the undilated convolution's Function class, run on
    the phases with no padding); hyperparameters ``pads``, ``dilation``, ``groups`` and
    ``inner_params`` (the inner Function's own, such as an epilogue)."""

    def forward(self, x, w, b=None):
        _, h, wd, _ = x.shape
        _, fh, fw, _ = w.shape
        (dh, dw), (pt, pb, pl, pr) = self.dilation, self.pads
        out_hw = (h + pt + pb - dh * (fh - 1), wd + pl + pr - dw * (fw - 1))
        self.x_shape = x.shape
        self.conv = conv = self.inner.__new__(self.inner)
        conv.__dict__.update(stride=(1, 1), pads=(0, 0, 0, 0), groups=self.groups, **self.inner_params)
        v = conv.forward(to_phases(x, self.pads, self.dilation), w, *(() if b is None else (b,)))
        self.phase_hw = v.shape[1:3]
        return interleave(v, out_hw, self.dilation)

    def backward(self, dy):
        conv = self.conv
        conv.needs_grad = self.needs_grad
        dv = deinterleave(backend.xp.ascontiguousarray(dy), self.phase_hw, self.dilation)
        d_phases, dw, *db = conv.backward(dv)
        dx = None if d_phases is None else from_phases(d_phases, self.x_shape, self.pads, self.dilation)
        return (dx, dw, *db)

    def backward_graph(self, dy):
        """The same gradients by recorded ops: patch rows of taps ``dilation`` apart."""
        x, w = self.inputs[:2]
        return conv_gradients_graph(x, w, dy, self.pads, (1, 1), self.dilation, self.groups, self.needs_grad)


def _as_tensor(a) -> Tensor:
    if isinstance(a, Tensor):
        return a
    data = backend.xp.asarray(a)
    return Tensor(data, dtype=data.dtype)


def strided_dilated_conv2d(x, w, b, pads, stride, dilation, groups: int, out_hw) -> Tensor:
    """v[n, y, x, k] = b[k] + sum_{i, j, c} xpad[n, s_h y + d_h i, s_w x + d_w j, c] w[k, i, j, c]
    as patch rows times filters: (groups, N L, f_h f_w C / groups) @ (groups, f_h f_w C / groups,
    K / groups), the groups' outputs side by side in the channels. A depthwise convolution
    (one input channel per group) multiplies the rows' taps by the filters element-wise and
    adds them up instead (a batch of one-column products is slow)."""
    x, w = _as_tensor(x), _as_tensor(w)
    n, c = x.shape[0], x.shape[3]
    k, fh, fw, cg = w.shape
    if cg == 1 and groups == c:
        rows = conv_patch_rows(x, (fh, fw), pads, stride, dilation, 1).reshape(-1, fh * fw, c, 1)
        taps = w.reshape(c, k // c, fh * fw).transpose(2, 0, 1)                # (f_h f_w, C, multiplier)
        v = (rows * taps).sum(axis=1).reshape(n, out_hw[0], out_hw[1], k)
    else:
        rows = conv_patch_rows(x, (fh, fw), pads, stride, dilation, groups)
        filters = w.reshape(groups, k // groups, -1).swapaxes(1, 2)
        v = (rows @ filters).transpose(1, 0, 2).reshape(n, out_hw[0], out_hw[1], k)
    return v if b is None else v + _as_tensor(b)
