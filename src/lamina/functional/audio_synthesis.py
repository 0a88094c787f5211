"""Turning spectrograms back into waveforms, mu-law companding and resampling, as torchaudio.

Griffin-Lim (fast Griffin-Lim, Perraudin et al. 2013) estimates the phase of a magnitude
spectrogram S by alternating projections; with alpha = momentum / (1 + momentum) and c_0 = 0,

    c_{k+1} = STFT(ISTFT(S (.) a_k)),    a_{k+1} = (c_{k+1} - alpha c_k) / (|c_{k+1} - alpha c_k| + 1e-16)

and the waveform is ISTFT(S (.) a_n) (torchaudio's update order; alpha = 0 is plain Griffin-Lim).
The initial phase a_0 is all ones (``rand_init=False``) or, as torchaudio's ``torch.rand`` of a
complex dtype, real and imaginary parts uniform in [0, 1) (not unit modulus).

Inverse mel scale: the non-negative spectrogram X (n_freqs, frames) whose mel projection fb^T X
is closest to a mel spectrogram M, as torchaudio >= 2.1 (``torch.linalg.lstsq`` with the 'gels'
driver, then a ReLU): X = relu(pinv(fb^T) M), the minimum-norm least-squares solution for a
full-rank filter bank, clamped at zero.

Mu-law (mu = quantization_channels - 1), for x in [-1, 1]:

    encode  q = floor((sign(x) ln(1 + mu |x|) / ln(1 + mu) + 1) / 2 mu + 1/2)
    decode  y = sign(u) ((1 + mu)^|u| - 1) / mu,   u = 2 q / mu - 1

Resampling by windowed sinc interpolation (torchaudio's ``resample``): with the rates divided by
their gcd (o = orig / g, n = new / g), cut-off b = rolloff min(o, n) and width
w = ceil(lowpass_filter_width o / b), output phase j in [0, n) uses the taps

    k_j[i] = (b / o) sinc(pi t) window(t),   t = clamp(b (i / o - j / n), -L, L),   i in [-w, w + o)

(L = lowpass_filter_width; window cos^2(pi t / 2L) for 'sinc_interp_hann', I0(beta sqrt(1 -
(t / L)^2)) / I0(beta) for 'sinc_interp_kaiser'). The signal, zero-padded by w on the left and
w + o on the right, is convolved with the n kernels at stride o; the interleaved outputs are cut
to ceil(n T / o) samples. The map is linear in the waveform and differentiable.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise, shape
from lamina.functional.activation import relu
from lamina.functional.arithmetic import matmul
from lamina.functional.audio import mel_filterbank
from lamina.functional.spectral import hann_window, istft, magnitude, stft
from lamina.functional.torch_names import conv1d

__all__ = ["apply_resample_kernel", "griffinlim", "griffinlim_initial_phase", "inverse_mel_matrix",
           "inverse_mel_scale", "mu_law_decoding", "mu_law_encoding", "resample", "resample_kernel"]

RESAMPLING_METHODS = ("sinc_interp_hann", "sinc_interp_kaiser")
KAISER_BETA = 14.769656459379492       # torchaudio's default for 'sinc_interp_kaiser'


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(x, None)


def _check_int(value, name: str, op: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    return value


# -- Griffin-Lim ------------------------------------------------------------------------------


def griffinlim_initial_phase(spec_shape: tuple, rand_init: bool = True, seed: int | None = None,
                             dtype=None) -> Tensor:
    """The starting phase (..., freq, frames, 2) (real, imaginary) of :func:`griffinlim`: ones
    (real part 1, imaginary 0) or, with ``rand_init``, both parts uniform in [0, 1) drawn from
    ``numpy.random.default_rng(seed)`` (``lamina.backend.rng`` when seed is None)."""
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    full = tuple(spec_shape) + (2,)
    if not rand_init:
        angles = xp.zeros(full, dtype=dtype)
        angles[..., 0] = 1.0
        return Tensor._wrap(angles)
    import numpy

    rng = backend.rng() if seed is None else numpy.random.default_rng(seed)
    return Tensor._wrap(xp.asarray(rng.random(full)).astype(dtype))


def griffinlim(specgram: Tensor, n_fft: int, hop_length: int | None = None, win_length: int | None = None,
               window=None, power: float = 2.0, n_iter: int = 32, momentum: float = 0.99, length: int | None = None,
               rand_init: bool = True, seed: int | None = None, init_angles=None) -> Tensor:
    """A waveform (..., time) whose STFT magnitude approximates ``specgram`` (..., n_fft // 2 + 1,
    frames) ** (1 / power), by fast Griffin-Lim (see the module docstring), as
    ``torchaudio.functional.griffinlim``. The STFT is centred with reflect padding; the window
    defaults to a periodic Hann window of win_length (n_fft) samples, the hop to win_length // 2.
    ``init_angles`` (..., freq, frames, 2) replaces the initial phase of
    :func:`griffinlim_initial_phase`. Built from differentiable ops."""
    op = "griffinlim"
    spec = _as_tensor(specgram)
    _check_int(n_fft, "n_fft", op)
    _check_int(n_iter, "n_iter", op, minimum=0)
    win_length = n_fft if win_length is None else _check_int(win_length, "win_length", op)
    hop_length = max(win_length // 2, 1) if hop_length is None else _check_int(hop_length, "hop_length", op)
    if win_length > n_fft:
        raise ValueError(f"{op}: win_length={win_length} must not exceed n_fft={n_fft}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"{op}: momentum must be in [0, 1), got {momentum!r}")
    if not power > 0:
        raise ValueError(f"{op}: power must be > 0, got {power!r}")
    if spec.ndim < 2 or spec.shape[-2] != n_fft // 2 + 1:
        raise ShapeError(f"{op}: expected a spectrogram (..., n_fft // 2 + 1 = {n_fft // 2 + 1}, frames) for "
                         f"n_fft={n_fft}, got shape {tuple(spec.shape)}")
    if window is None:
        window = hann_window(win_length, dtype=spec.dtype)
    if init_angles is None:
        angles = griffinlim_initial_phase(spec.shape, rand_init, seed, spec.dtype)
    else:
        angles = _as_tensor(init_angles)
        if tuple(angles.shape) != tuple(spec.shape) + (2,):
            raise ShapeError(f"{op}: init_angles must have shape {tuple(spec.shape) + (2,)} (the spectrogram's "
                             f"plus a (real, imaginary) axis), got {tuple(angles.shape)}")
    amplitude = shape.expand_dims(spec if power == 1 else spec ** (1.0 / power), -1)
    alpha = momentum / (1.0 + momentum)
    sizes = {"n_fft": n_fft, "hop_length": hop_length, "win_length": win_length, "window": window}
    previous = None
    for _ in range(n_iter):
        inverse = istft(amplitude * angles, length=length, **sizes)
        rebuilt = stft(inverse, center=True, pad_mode="reflect", **sizes)
        angles = rebuilt if previous is None or alpha == 0 else rebuilt - alpha * previous
        angles = angles / shape.expand_dims(magnitude(angles) + 1e-16, -1)
        previous = rebuilt
    return istft(amplitude * angles, length=length, **sizes)


# -- inverse mel scale ------------------------------------------------------------------------


def inverse_mel_matrix(n_stft: int, n_mels: int = 128, sample_rate: int = 16000, f_min: float = 0.0,
                       f_max: float | None = None, norm: str | None = None, mel_scale: str = "htk",
                       dtype=None) -> Tensor:
    """pinv(fb^T): the (n_stft, n_mels) matrix taking a mel spectrogram to the minimum-norm
    least-squares linear spectrogram (computed in float64)."""
    f_max = float(sample_rate // 2) if f_max is None else f_max
    fb = mel_filterbank(n_stft, f_min, f_max, n_mels, sample_rate, norm, mel_scale, dtype=backend.xp.float64)
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(backend.xp.linalg.pinv(fb.data.T).astype(dtype))


def inverse_mel_scale(melspec: Tensor, n_stft: int, sample_rate: int = 16000, f_min: float = 0.0,
                      f_max: float | None = None, norm: str | None = None, mel_scale: str = "htk") -> Tensor:
    """A non-negative linear spectrogram (..., n_stft, frames) from a mel spectrogram (...,
    n_mels, frames): relu(pinv(fb^T) M), as ``torchaudio.transforms.InverseMelScale`` (>= 2.1,
    least squares then clamping at zero)."""
    mel = _as_tensor(melspec)
    _check_int(n_stft, "n_stft", "inverse_mel_scale", minimum=2)
    if mel.ndim < 2:
        raise ShapeError(f"inverse_mel_scale: expected a mel spectrogram (..., n_mels, frames), "
                         f"got shape {tuple(mel.shape)}")
    pinv = inverse_mel_matrix(n_stft, mel.shape[-2], sample_rate, f_min, f_max, norm, mel_scale, dtype=mel.dtype)
    return relu(matmul(pinv, mel))


# -- mu-law -----------------------------------------------------------------------------------


def _mu(quantization_channels, op: str) -> float:
    if isinstance(quantization_channels, bool) or not isinstance(quantization_channels, int) \
            or quantization_channels < 2:
        raise ValueError(f"{op}: quantization_channels must be an int >= 2, got {quantization_channels!r}")
    return float(quantization_channels - 1)


def mu_law_encoding(x, quantization_channels: int = 256) -> Tensor:
    """Mu-law codes in {0, ..., quantization_channels - 1} (int64) of a signal in [-1, 1], as
    ``torchaudio.functional.mu_law_encoding`` (the formula in the module docstring; values are
    truncated toward zero after adding 1/2, as torch's cast). Not differentiable."""
    mu = _mu(quantization_channels, "mu_law_encoding")
    xp = backend.xp
    values = _as_tensor(x).data
    if values.dtype.kind != "f":
        raise TypeError(f"mu_law_encoding: expected a float signal in [-1, 1], got dtype {values.dtype}")
    companded = xp.sign(values) * xp.log1p(mu * xp.abs(values)) / math.log1p(mu)
    codes = ((companded + 1.0) / 2.0 * mu + 0.5).astype(xp.int64)
    return Tensor._wrap(codes)


def mu_law_decoding(x_mu, quantization_channels: int = 256) -> Tensor:
    """A signal in [-1, 1] from mu-law codes (any numeric dtype; integers become floats of
    the default dtype), as ``torchaudio.functional.mu_law_decoding``; differentiable in float
    codes."""
    mu = _mu(quantization_channels, "mu_law_decoding")
    codes = _as_tensor(x_mu)
    if codes.dtype.kind != "f":
        codes = Tensor._constant(codes.data.astype(backend.get_default_dtype()), None)
    u = codes * (2.0 / mu) - 1.0
    sign = backend.xp.sign(u.data)
    return (elementwise.exp(elementwise.abs(u) * math.log1p(mu)) - 1.0) * (sign / mu).astype(u.dtype)


# -- resampling -------------------------------------------------------------------------------


def _check_rates(orig_freq, new_freq, op: str) -> tuple[int, int]:
    for name, rate in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{op}: {name} must be a positive rate, got {rate!r}")
        if int(rate) != rate:
            raise ValueError(f"{op}: {name} must be a whole number of Hz, got {rate!r}; scale both rates to "
                             "integers with the same ratio (e.g. 8 and 1 for a factor of 8)")
    return int(orig_freq), int(new_freq)


def resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                    resampling_method: str = "sinc_interp_hann", beta: float | None = None,
                    dtype=None) -> tuple[Tensor, int]:
    """The (n, 2 w + o) interpolation kernels of :func:`resample` (module docstring; rates
    reduced by their gcd) and the width w, computed in float64."""
    op = "resample"
    orig_freq, new_freq = _check_rates(orig_freq, new_freq, op)
    if resampling_method not in RESAMPLING_METHODS:
        raise ValueError(f"{op}: resampling_method must be one of {RESAMPLING_METHODS}, got {resampling_method!r}")
    _check_int(lowpass_filter_width, "lowpass_filter_width", op)
    if not 0 < rolloff <= 1:
        raise ValueError(f"{op}: rolloff must be in (0, 1], got {rolloff!r}")
    xp = backend.xp
    gcd = math.gcd(orig_freq, new_freq)
    o, n = orig_freq // gcd, new_freq // gcd
    cutoff = min(o, n) * rolloff
    width = math.ceil(lowpass_filter_width * o / cutoff)
    taps = xp.arange(-width, width + o, dtype=xp.float64) / o
    phases = -xp.arange(n, dtype=xp.float64) / n
    t = xp.clip((phases[:, None] + taps[None, :]) * cutoff, -lowpass_filter_width, lowpass_filter_width)
    if resampling_method == "sinc_interp_hann":
        window = xp.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    else:
        beta = KAISER_BETA if beta is None else float(beta)
        window = xp.i0(beta * xp.sqrt(1 - (t / lowpass_filter_width) ** 2)) / xp.i0(beta)
    kernels = xp.sinc(t) * window * (cutoff / o)
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(kernels.astype(dtype)), width


def apply_resample_kernel(waveform: Tensor, orig_freq: int, new_freq: int, kernel: Tensor, width: int) -> Tensor:
    """The convolution half of :func:`resample` with a kernel from :func:`resample_kernel`."""
    x = _as_tensor(waveform)
    if x.dtype.kind != "f":
        raise TypeError(f"resample: expected a float waveform, got dtype {x.dtype} (shape {tuple(x.shape)})")
    if x.ndim < 1:
        raise ShapeError(f"resample: expected a waveform (..., time), got shape {tuple(x.shape)}")
    gcd = math.gcd(orig_freq, new_freq)
    o, n = orig_freq // gcd, new_freq // gcd
    lead, length = tuple(x.shape[:-1]), x.shape[-1]
    flat = shape.reshape(x, (-1, length, 1))
    padded = shape.pad(flat, ((0, 0), (width, width + o), (0, 0)))
    if kernel.dtype != x.dtype:
        kernel = Tensor._wrap(kernel.data.astype(x.dtype))
    weight = shape.reshape(kernel, (n, -1, 1))
    out = conv1d(padded, weight, stride=o)                      # (batch, blocks, n): phase j of block b
    out = shape.reshape(out, (flat.shape[0], -1))
    target = math.ceil(n * length / o)
    return shape.reshape(out[:, :target], lead + (target,))


def resample(waveform: Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99, resampling_method: str = "sinc_interp_hann",
             beta: float | None = None) -> Tensor:
    """A waveform (..., time) sampled at ``orig_freq`` resampled to ``new_freq`` by windowed sinc
    interpolation (module docstring), as ``torchaudio.functional.resample``: (..., ceil(time
    new / orig)) with the rates reduced by their gcd; the input itself when the rates are equal."""
    orig_freq, new_freq = _check_rates(orig_freq, new_freq, "resample")
    x = _as_tensor(waveform)
    kernel, width = resample_kernel(orig_freq, new_freq, lowpass_filter_width, rolloff, resampling_method, beta,
                                    dtype=x.dtype)
    if orig_freq == new_freq:
        return x
    return apply_resample_kernel(x, orig_freq, new_freq, kernel, width)
