"""The short-time Fourier transform and its inverse, with gradients (``torch.stft`` / ``torch.istft``).

lamina has no complex tensors, so a spectrum is a real tensor whose last axis of size 2 holds
the real and the imaginary part, the layout of ``torch.view_as_real(torch.stft(...,
return_complex=True))``: a signal (..., T) gives (..., freq, frames, 2).

With the window w zero-padded (centred) to n_fft samples, hop h and the signal x padded by
n_fft // 2 on each side when ``center``,

    X[f, t] = s * sum_n w[n] x[t h + n] exp(-2 pi i f n / n_fft),    s = n_fft^-1/2 if normalized else 1,

for f < n_fft // 2 + 1 (``onesided``) or f < n_fft. The map x -> X is linear: its adjoint (the
backward) takes dJ/dX as a complex spectrum G, computes each frame's Re sum_f G[f, t]
exp(+2 pi i f n / n_fft) (an inverse DFT), multiplies by the window and adds the frames back at
their offsets (overlap-add), then folds the padding back. Both directions being linear, the
second derivatives come from the same two maps.

The inverse (``istft``) follows ``torch.istft``: each frame is the inverse real DFT of its
column, times the window; the frames are overlap-added and divided by the overlap-added squared
window (the window-sum normalisation), then the n_fft // 2 padded samples are trimmed
(``center``) and the result cut or zero-extended to ``length``.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise, shape

__all__ = ["bartlett_window", "blackman_window", "hamming_window", "hann_window", "istft", "kaiser_window", "magnitude",
           "spectrogram", "stft"]

PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _fft():
    """SciPy's FFT module, or CuPy's on CuPy arrays."""
    if backend.xp.__name__ != "numpy":  # pragma: no cover - depends on the machine
        import cupyx.scipy.fft

        return cupyx.scipy.fft
    import scipy.fft

    return scipy.fft


# -- windows ----------------------------------------------------------------------------------


def _sampled_window(length: int, periodic: bool, dtype, name: str, formula) -> Tensor:
    """formula(n, M) for n = 0 .. length - 1, M = length when periodic (the symmetric window of
    length + 1 without its last sample), else length - 1; a window of length 1 is [1]."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"{name}: window_length must be an int >= 0, got {length!r}")
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    if length == 1:
        return Tensor._wrap(xp.ones(1, dtype=dtype))
    period = length if periodic else length - 1
    n = xp.arange(length, dtype=xp.float64)
    return Tensor._wrap(formula(n, period).astype(dtype))


def _cosine_window(length: int, alpha: float, periodic: bool, dtype, name: str) -> Tensor:
    """alpha - (1 - alpha) cos(2 pi n / M), M = length when periodic, else length - 1."""
    xp = backend.xp
    return _sampled_window(length, periodic, dtype, name,
                           lambda n, period: alpha - (1.0 - alpha) * xp.cos(2.0 * math.pi * n / period))


def hann_window(window_length: int, periodic: bool = True, dtype=None) -> Tensor:
    """w[n] = 0.5 - 0.5 cos(2 pi n / M), M = window_length (periodic, as ``torch.hann_window``)
    or window_length - 1 (symmetric)."""
    return _cosine_window(window_length, 0.5, periodic, dtype, "hann_window")


def hamming_window(window_length: int, periodic: bool = True, dtype=None) -> Tensor:
    """w[n] = 0.54 - 0.46 cos(2 pi n / M), M = window_length (periodic, as
    ``torch.hamming_window``) or window_length - 1 (symmetric)."""
    return _cosine_window(window_length, 0.54, periodic, dtype, "hamming_window")


def blackman_window(window_length: int, periodic: bool = True, dtype=None) -> Tensor:
    """w[n] = 0.42 - 0.5 cos(2 pi n / M) + 0.08 cos(4 pi n / M), M = window_length (periodic,
    as ``torch.blackman_window``) or window_length - 1 (symmetric); summed in torch's order, so
    that the ends are exactly 0."""
    xp = backend.xp
    return _sampled_window(window_length, periodic, dtype, "blackman_window",
                           lambda n, period: 0.08 * xp.cos(4.0 * math.pi * n / period)
                           - 0.5 * xp.cos(2.0 * math.pi * n / period) + 0.42)


def bartlett_window(window_length: int, periodic: bool = True, dtype=None) -> Tensor:
    """The triangle w[n] = 1 - |2 n / M - 1|, M = window_length (periodic, as
    ``torch.bartlett_window``) or window_length - 1 (symmetric)."""
    xp = backend.xp
    return _sampled_window(window_length, periodic, dtype, "bartlett_window",
                           lambda n, period: 1.0 - xp.abs(2.0 * n / period - 1.0))


def kaiser_window(window_length: int, periodic: bool = True, beta: float = 12.0, dtype=None) -> Tensor:
    """w[n] = I0(beta sqrt(1 - (2 n / M - 1)^2)) / I0(beta), I0 the modified Bessel function of
    order 0, M = window_length (periodic, as ``torch.kaiser_window``) or window_length - 1
    (symmetric)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
        raise ValueError(f"kaiser_window: beta must be a finite number, got {beta!r}")
    xp = backend.xp

    def formula(n, period):
        ratio = xp.clip(2.0 * n / period - 1.0, -1.0, 1.0)
        return xp.i0(beta * xp.sqrt(1.0 - ratio * ratio)) / xp.i0(float(beta))

    return _sampled_window(window_length, periodic, dtype, "kaiser_window", formula)


# -- shared pieces ----------------------------------------------------------------------------


def _frame_window(window, n_fft: int, win_length: int, dtype, op: str):
    """The window as an n_fft array: ones(win_length) when None, zero-padded on both sides
    (the extra sample on the right) when shorter than n_fft. A window is a constant."""
    xp = backend.xp
    if window is None:
        window = xp.ones(win_length, dtype=dtype)
    else:
        window = window.data if isinstance(window, Tensor) else xp.asarray(window)
        if window.ndim != 1 or window.shape[0] != win_length:
            raise ShapeError(f"{op}: window must be 1-D of win_length {win_length}, got shape {tuple(window.shape)}")
        window = window.astype(dtype, copy=False)
    left = (n_fft - win_length) // 2
    full = xp.zeros(n_fft, dtype=dtype)
    full[left:left + win_length] = window
    return full


def _check_floating(x: Tensor, op: str) -> None:
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a float32 or float64 input, got dtype {x.dtype} (shape {tuple(x.shape)})")


def _check_sizes(n_fft, hop_length, win_length, op: str) -> tuple[int, int, int]:
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 1:
        raise ValueError(f"{op}: n_fft must be an int >= 1, got {n_fft!r}")
    hop_length = n_fft // 4 if hop_length is None else hop_length
    win_length = n_fft if win_length is None else win_length
    if isinstance(hop_length, bool) or not isinstance(hop_length, int) or hop_length < 1:
        raise ValueError(f"{op}: hop_length must be an int >= 1, got {hop_length!r}")
    if isinstance(win_length, bool) or not isinstance(win_length, int) or not 1 <= win_length <= n_fft:
        raise ValueError(f"{op}: win_length must be an int in [1, n_fft={n_fft}], got {win_length!r}")
    return n_fft, hop_length, win_length


def _frame_starts(n_frames: int, hop: int, n_fft: int):
    """Index array (n_frames, n_fft) of the samples each frame reads."""
    xp = backend.xp
    return xp.arange(n_frames)[:, None] * hop + xp.arange(n_fft)[None, :]


def _overlap_add(frames, hop: int, out_length: int):
    """frames (..., n_frames, n_fft) added at offsets t * hop into (..., out_length): one
    vectorised add per hop-sized chunk of the frame."""
    xp = backend.xp
    lead, (n_frames, n_fft) = frames.shape[:-2], frames.shape[-2:]
    chunks = -(-n_fft // hop)
    buffer = xp.zeros(lead + (n_frames + chunks, hop), dtype=frames.dtype)
    for j in range(chunks):
        part = frames[..., j * hop:(j + 1) * hop]
        buffer[..., j:j + n_frames, :part.shape[-1]] += part
    flat = buffer.reshape(lead + (-1,))
    if flat.shape[-1] < out_length:
        flat = xp.concatenate([flat, xp.zeros(lead + (out_length - flat.shape[-1],), dtype=flat.dtype)], axis=-1)
    return flat[..., :out_length]


def _pad_index(size: int, pad: int, mode: str):
    """The source sample of each of the size + 2 pad padded positions (mode not 'constant')."""
    xp = backend.xp
    positions = xp.arange(-pad, size + pad)
    if mode == "reflect":
        positions = xp.abs(positions)
        return xp.where(positions >= size, 2 * (size - 1) - positions, positions)
    if mode == "replicate":
        return xp.clip(positions, 0, size - 1)
    return positions % size


def _pad_signal(x, pad: int, mode: str):
    if pad == 0:
        return x
    if mode == "constant":
        zeros = backend.xp.zeros(x.shape[:-1] + (pad,), dtype=x.dtype)
        return backend.xp.concatenate([zeros, x, zeros], axis=-1)
    return x[..., _pad_index(x.shape[-1], pad, mode)]


def _unpad_signal(grad, size: int, pad: int, mode: str):
    """The adjoint of :func:`_pad_signal`: each padded position's gradient added to its source."""
    if pad == 0:
        return grad
    out = grad[..., pad:pad + size].copy()
    if mode == "constant":
        return out
    index = _pad_index(size, pad, mode)
    for border in (slice(0, pad), slice(pad + size, None)):
        if mode == "replicate":
            out[..., int(index[border][0])] += grad[..., border].sum(axis=-1)
        elif pad <= size:               # reflect (pad < size) and circular: a border's sources are distinct
            out[..., index[border]] += grad[..., border]
        else:                           # circular wider than the signal wraps a border more than once
            backend.xp.add.at(out, (Ellipsis, index[border]), grad[..., border])
    return out


def _half_spectrum_adjoint_weights(n_fft: int, n_bins: int, dtype):
    """Per-bin factors c_f with N irfft(c G) = Re sum_f G_f exp(2 pi i f n / N) over the
    one-sided bins: irfft counts every bin but DC and Nyquist twice, so those are halved."""
    c = backend.xp.full(n_bins, 0.5, dtype=dtype)
    c[0] = 1.0
    if n_fft % 2 == 0:
        c[-1] = 1.0
    return c


# -- STFT -------------------------------------------------------------------------------------


class STFT(Function):
    """x (..., T) -> X (..., freq, frames, 2), linear in x (see the module docstring); the window
    is a constant."""

    def forward(self, x):
        fft, xp = _fft(), backend.xp
        self.x_shape = x.shape
        padded = _pad_signal(x, self.pad, self.pad_mode)
        n_frames = 1 + (padded.shape[-1] - self.n_fft) // self.hop
        self.padded_length = padded.shape[-1]
        frames = padded[..., _frame_starts(n_frames, self.hop, self.n_fft)]     # (..., frames, n_fft)
        frames *= self.window
        if self.onesided:
            spectrum = fft.rfft(frames, axis=-1)
        else:
            spectrum = fft.fft(frames, axis=-1)
        if self.normalized:
            spectrum *= 1.0 / math.sqrt(self.n_fft)
        out = xp.empty(spectrum.shape[:-2] + (spectrum.shape[-1], n_frames, 2), dtype=x.dtype)
        swapped = xp.swapaxes(spectrum, -1, -2)
        out[..., 0], out[..., 1] = swapped.real, swapped.imag
        return out

    def backward(self, dy):
        fft, xp = _fft(), backend.xp
        n_fft = self.n_fft
        g = xp.swapaxes(dy[..., 0] + 1j * dy[..., 1], -1, -2)            # (..., frames, freq)
        scale = 1.0 / math.sqrt(n_fft) if self.normalized else 1.0
        if self.onesided:
            g = g * _half_spectrum_adjoint_weights(n_fft, g.shape[-1], dy.dtype)
            frames = fft.irfft(g, n=n_fft, axis=-1) * (n_fft * scale)
        else:
            frames = fft.ifft(g, axis=-1).real * (n_fft * scale)
        frames = (frames * self.window).astype(dy.dtype, copy=False)
        padded = _overlap_add(frames, self.hop, self.padded_length)
        return (_unpad_signal(padded, self.x_shape[-1], self.pad, self.pad_mode),)

    backward_graph = Function.linear_backward_graph


def stft(x: Tensor, n_fft: int, hop_length: int | None = None, win_length: int | None = None, window=None,
         center: bool = True, pad_mode: str = "reflect", normalized: bool = False, onesided: bool = True) -> Tensor:
    """Short-time Fourier transform of signals x (..., T), as ``torch.stft(..., return_complex=True)``
    viewed as real: the result is (..., freq, frames, 2) with [..., 0] the real and [..., 1] the
    imaginary part; freq = n_fft // 2 + 1 when ``onesided`` else n_fft, frames = 1 + (T' - n_fft) //
    hop_length with T' = T + 2 (n_fft // 2) when ``center`` (x padded by ``pad_mode``) else T.

        X[f, t] = s sum_n w[n] x[t hop + n] exp(-2 pi i f n / n_fft),   s = n_fft^-1/2 if normalized else 1

    ``hop_length`` defaults to n_fft // 4, ``win_length`` to n_fft, ``window`` (a constant of
    win_length samples, zero-padded to n_fft in the middle) to ones."""
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    _check_floating(x, "stft")
    n_fft, hop, win_length = _check_sizes(n_fft, hop_length, win_length, "stft")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"stft: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if x.ndim < 1:
        raise ShapeError(f"stft: expected a signal of shape (..., samples), got shape {tuple(x.shape)}")
    pad = n_fft // 2 if center else 0
    length = x.shape[-1]
    if pad_mode == "reflect" and pad >= length and pad:
        raise ShapeError(f"stft: reflect padding by n_fft // 2 = {pad} needs more than {pad} samples, "
                         f"got x of shape {tuple(x.shape)}")
    if length + 2 * pad < n_fft:
        raise ShapeError(f"stft: a frame of n_fft={n_fft} samples does not fit the {length + 2 * pad} "
                         f"{'padded ' if pad else ''}samples of x of shape {tuple(x.shape)}")
    window = _frame_window(window, n_fft, win_length, x.dtype, "stft")
    return STFT.apply(x, n_fft=n_fft, hop=hop, window=window, pad=pad, pad_mode=pad_mode,
                      normalized=bool(normalized), onesided=bool(onesided))


# -- ISTFT ------------------------------------------------------------------------------------


class ISTFT(Function):
    """X (..., freq, frames, 2) -> x (..., length), linear in X (see the module docstring); the
    window and its overlap-added square (``envelope``, already trimmed) are constants."""

    def forward(self, spec):
        fft = _fft()
        n_fft, xp = self.n_fft, backend.xp
        self.spec_shape = spec.shape
        z = xp.swapaxes(spec[..., 0] + 1j * spec[..., 1], -1, -2)[..., :n_fft // 2 + 1]   # (..., frames, bins)
        frames = fft.irfft(z, n=n_fft, axis=-1, norm="ortho" if self.normalized else "backward")
        frames = (frames * self.window).astype(spec.dtype, copy=False)
        signal = _overlap_add(frames, self.hop, self.full_length)
        return self._trim(signal) / self.envelope

    def _trim(self, signal):
        xp = backend.xp
        kept = signal[..., self.start:self.start + self.length]
        missing = self.length - kept.shape[-1]
        if missing > 0:
            kept = xp.concatenate([kept, xp.zeros(kept.shape[:-1] + (missing,), dtype=kept.dtype)], axis=-1)
        return kept

    def backward(self, dy):
        fft, xp = _fft(), backend.xp
        n_fft = self.n_fft
        lead = dy.shape[:-1]
        kept = min(self.length, self.full_length - self.start)
        signal = xp.zeros(lead + (self.full_length,), dtype=dy.dtype)
        signal[..., self.start:self.start + kept] = (dy / self.envelope)[..., :kept]
        n_frames = self.spec_shape[-2]
        frames = signal[..., _frame_starts(n_frames, self.hop, n_fft)] * self.window
        # adjoint of irfft: rfft (its DC and Nyquist bins are real, as irfft ignores their imaginary
        # parts) with the bins irfft counts twice doubled, scaled as irfft's norm
        g = fft.rfft(frames, axis=-1, norm="ortho" if self.normalized else "forward")
        g = g / _half_spectrum_adjoint_weights(n_fft, g.shape[-1], dy.dtype)
        out = xp.zeros(self.spec_shape, dtype=dy.dtype)
        bins = g.shape[-1]
        swapped = xp.swapaxes(g, -1, -2)
        out[..., :bins, :, 0], out[..., :bins, :, 1] = swapped.real, swapped.imag
        return (out,)

    backward_graph = Function.linear_backward_graph


def istft(spec: Tensor, n_fft: int, hop_length: int | None = None, win_length: int | None = None, window=None,
          center: bool = True, normalized: bool = False, onesided: bool | None = None,
          length: int | None = None) -> Tensor:
    """Inverse of :func:`stft` with ``torch.istft``'s semantics: ``spec`` (..., freq, frames, 2)
    (real and imaginary parts) -> signals (..., length).

        y = OLA_t(w[n] irfft(X[:, t])[n]) / OLA_t(w[n]^2)

    (OLA: overlap-add at offsets t hop_length), then n_fft // 2 samples trimmed at each end
    (``center``), cut or zero-extended to ``length`` when given. ``onesided`` defaults to freq !=
    n_fft; a two-sided spectrum uses its first n_fft // 2 + 1 bins (a real signal's Hermitian
    half). Raises ValueError where the squared-window overlap-add is (nearly) zero, as torch."""
    spec = spec if isinstance(spec, Tensor) else Tensor._constant(spec, None)
    _check_floating(spec, "istft")
    n_fft, hop, win_length = _check_sizes(n_fft, hop_length, win_length, "istft")
    if spec.ndim < 3 or spec.shape[-1] != 2:
        raise ShapeError(f"istft: expected a spectrum of shape (..., freq, frames, 2), got shape {tuple(spec.shape)}")
    n_bins, n_frames = spec.shape[-3], spec.shape[-2]
    onesided = n_bins != n_fft if onesided is None else onesided
    expected_bins = n_fft // 2 + 1 if onesided else n_fft
    if n_bins != expected_bins:
        raise ShapeError(f"istft: a {'one' if onesided else 'two'}-sided spectrum of n_fft={n_fft} has "
                         f"{expected_bins} frequency bins, got {n_bins} (spec shape {tuple(spec.shape)})")
    xp = backend.xp
    window = _frame_window(window, n_fft, win_length, spec.dtype, "istft")
    full_length = n_fft + hop * (n_frames - 1)
    start = n_fft // 2 if center else 0
    if length is None:
        length = full_length - 2 * start
    envelope = _overlap_add(xp.broadcast_to(window * window, (n_frames, n_fft)), hop, full_length)
    envelope = envelope[start:start + length]
    if envelope.size and float(xp.abs(envelope).min()) < 1e-11:
        raise ValueError(f"istft: the overlap-added squared window is (nearly) zero somewhere in the kept "
                         f"samples (n_fft={n_fft}, hop_length={hop}, win_length={win_length}, center={center}); "
                         "the signal cannot be recovered there")
    if envelope.shape[0] < length:       # the zero-extended end divides 0 by 1
        envelope = xp.concatenate([envelope, xp.ones(length - envelope.shape[0], dtype=envelope.dtype)])
    return ISTFT.apply(spec, n_fft=n_fft, hop=hop, window=window, envelope=envelope, start=start,
                       length=int(length), full_length=full_length, normalized=bool(normalized))


# -- magnitudes -------------------------------------------------------------------------------


class Magnitude(Function):
    """|z| = sqrt(re^2 + im^2) over the last axis (re, im); dJ/dz = dJ/d|z| z / |z|, 0 at z = 0
    (the subgradient torch's abs uses)."""

    def forward(self, z):
        self.m = backend.xp.sqrt(z[..., 0] * z[..., 0] + z[..., 1] * z[..., 1])
        return self.m

    def _unit(self, z):
        xp = backend.xp
        safe = xp.where(self.m > 0, self.m, 1)
        return z / safe[..., None]

    def backward(self, dy):
        (z,) = [t.data for t in self.inputs]
        return (dy[..., None] * self._unit(z),)

    def backward_graph(self, dy):
        (z,) = self.inputs
        m = self.recorded_output(self.m)
        nonzero = self.m > 0
        safe = elementwise.where(nonzero, m, 1.0)
        unit = z / shape.expand_dims(safe, -1)
        return (shape.expand_dims(elementwise.where(nonzero, dy, 0.0), -1) * unit,)


def magnitude(z: Tensor) -> Tensor:
    """The modulus of a complex tensor stored as (..., 2) real and imaginary parts: (...,)."""
    z = z if isinstance(z, Tensor) else Tensor._constant(z, None)
    if z.ndim < 1 or z.shape[-1] != 2:
        raise ShapeError(f"magnitude: expected (..., 2) real and imaginary parts, got shape {tuple(z.shape)}")
    return Magnitude.apply(z)


def spectrogram(x: Tensor, n_fft: int = 400, hop_length: int | None = None, win_length: int | None = None,
                window=None, power: float | None = 2.0, normalized: bool = False, center: bool = True,
                pad_mode: str = "reflect", onesided: bool = True) -> Tensor:
    """|STFT(x)|^power (..., freq, frames), as ``torchaudio.functional.spectrogram``: the window
    defaults to a periodic Hann window of ``win_length`` (default n_fft) samples and the hop to
    win_length // 2; ``normalized`` divides the STFT by sqrt(sum w^2); ``power`` None returns the
    STFT itself (..., freq, frames, 2). power = 2 is re^2 + im^2 (smooth everywhere)."""
    win_length = n_fft if win_length is None else win_length
    hop_length = max(win_length // 2, 1) if hop_length is None else hop_length
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    if window is None:
        window = hann_window(win_length, dtype=x.dtype)
    spec = stft(x, n_fft, hop_length, win_length, window, center=center, pad_mode=pad_mode, onesided=onesided)
    if normalized:
        w = window.data if isinstance(window, Tensor) else backend.xp.asarray(window)
        spec = spec * float(1.0 / math.sqrt(float((w.astype(backend.xp.float64) ** 2).sum())))
    if power is None:
        return spec
    if power == 2.0:
        return (spec * spec).sum(axis=-1)
    mag = magnitude(spec)
    return mag if power == 1.0 else mag ** float(power)
