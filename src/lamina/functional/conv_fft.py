"""Convolution by the convolution theorem (``conv2d(..., algorithm='fft')``)."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function
from lamina.functional.conv_gemm import sum_rows
from lamina.functional.fold import conv_gradients_graph
from lamina.functional.im2col import pad_nhwc

# -- FFT: the convolution theorem, F{x * w} = F{x} conj(F{w}) for a correlation --------------


def _fft():
    """SciPy's FFT module, or CuPy's on CuPy arrays."""
    if backend.xp.__name__ != "numpy":  # pragma: no cover - depends on the machine
        import cupyx.scipy.fft

        return cupyx.scipy.fft
    import scipy.fft

    return scipy.fft


def _spectral_matmul(a, b):
    """Per frequency and group: a (N, F, g, p) @ b (F, g, p, q) -> (N, F, g, q)."""
    return backend.xp.matmul(a.transpose(1, 2, 0, 3), b).transpose(2, 0, 1, 3)


class Conv2dFFT(Function):
    """v = x * w + b through the convolution theorem: V = F{xpad} conj(F{w}), summed over
    the input channels, v = F^-1{V} (course notes: V_in * w = F^-1{F{V_in} . F{w}}).

    The spectra have size L >= the padded input over (H, W), so the circular correlation
    equals the linear one on every valid output; a stride keeps every s-th output.
    Backward: dJ/dw = x * dJ/dv is F{xpad} conj(F{dJ/dv}) summed over the batch, and
    dJ/dx = pad(dJ/dv) * rot180(w) is the convolution F{dJ/dv} F{w}, dJ/dv dilated by the
    stride first.
    """

    def forward(self, x, w, b=None):
        fft, xp = _fft(), backend.xp
        n = x.shape[0]
        k, fh, fw, cg = w.shape
        g, (sh, sw) = self.groups, self.stride
        xpad = pad_nhwc(x, self.pads)
        hp, wp = xpad.shape[1:3]
        l1, l2 = fft.next_fast_len(hp, real=True), fft.next_fast_len(wp, real=True)
        self.full = (hp - fh + 1, wp - fw + 1)           # stride-1 output size
        self.sizes, self.x_shape, self.w_shape = (l1, l2), x.shape, w.shape
        xf = fft.rfft2(xpad, s=(l1, l2), axes=(1, 2))      # (N, l1, l2 // 2 + 1, C)
        del xpad
        wf = fft.rfft2(w, s=(l1, l2), axes=(1, 2))         # (K, l1, l2 // 2 + 1, C / g)
        bins = xf.shape[1] * xf.shape[2]
        self.xf = xf.reshape(n, bins, g, cg)
        self.wf = wf.reshape(g, k // g, bins, cg).transpose(2, 0, 3, 1)   # (F, g, C/g, K/g)
        vf = _spectral_matmul(self.xf, xp.conj(self.wf)).reshape(n, l1, l2 // 2 + 1, k)
        v = fft.irfft2(vf, s=(l1, l2), axes=(1, 2))
        del vf
        out = xp.ascontiguousarray(v[:, :self.full[0]:sh, :self.full[1]:sw], dtype=xp.result_type(x, w))
        if b is not None:
            out += b
        return out

    def backward(self, dy):
        fft, xp = _fft(), backend.xp
        needs = self.needs_grad
        n, h, wd, c = self.x_shape
        k, fh, fw, cg = self.w_shape
        g, (sh, sw), (pt, _, pl, _) = self.groups, self.stride, self.pads
        l1, l2 = self.sizes
        dy = xp.ascontiguousarray(dy)
        db = sum_rows(dy) if len(needs) > 2 and needs[2] else None
        full = xp.zeros((n,) + self.full + (k,), dtype=dy.dtype)    # dJ/dv on the stride-1 grid
        full[:, ::sh, ::sw] = dy
        dyf = fft.rfft2(full, s=(l1, l2), axes=(1, 2))
        del full
        dyg = dyf.reshape(n, l1 * (l2 // 2 + 1), g, k // g)
        dx = dw = None
        if needs[1]:
            prod = xp.matmul(xp.conj(dyg).transpose(1, 2, 3, 0), self.xf.transpose(1, 2, 0, 3))
            prod = prod.transpose(1, 2, 0, 3).reshape(k, l1, l2 // 2 + 1, cg)   # (g, K/g, F, C/g)
            dw = xp.ascontiguousarray(fft.irfft2(prod, s=(l1, l2), axes=(1, 2))[:, :fh, :fw], dtype=dy.dtype)
        if needs[0]:
            prod = _spectral_matmul(dyg, self.wf.transpose(0, 1, 3, 2)).reshape(n, l1, l2 // 2 + 1, c)
            dxp = fft.irfft2(prod, s=(l1, l2), axes=(1, 2))
            dx = xp.ascontiguousarray(dxp[:, pt:pt + h, pl:pl + wd], dtype=dy.dtype)
        return dx, dw, db

    def backward_graph(self, dy):
        """The same gradients by recorded ops (patch rows and matrix products, as Conv2d's)."""
        x, w = self.inputs[:2]
        return conv_gradients_graph(x, w, dy, self.pads, self.stride, (1, 1), self.groups, self.needs_grad)
