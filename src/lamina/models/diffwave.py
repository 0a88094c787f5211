"""DiffWave (Kong et al. 2021, "DiffWave: A Versatile Diffusion Model for Audio Synthesis"): a
non-autoregressive diffusion model of raw waveforms.

The network eps_theta(x_t, t, c) predicts the noise in a noisy waveform x_t (batch, L).
Sequences are channels-last, (batch, L, C), as elsewhere in lamina:

    h = relu(x_t W_in + b_in)                                    (1 x 1 conv, 1 -> C)
    e = swish(swish(emb(t) W_1 + b_1) W_2 + b_2)                 (emb: 128 sinusoids, 512 units)
    for layer i = 0 .. N-1, dilation d_i = 2^(i mod cycle):
        y = h + (e D_i + d_i)                                    (the step, per layer)
        z = conv_{d_i}(y) + (c V_i + v_i)                        (kernel 3, 'same'; C -> 2C)
        u = sigmoid(z_1) (.) tanh(z_2)                           (z split in two halves of C)
        [r, s_i] = u O_i + o_i                                   (1 x 1, C -> 2C)
        h = (h + r) / sqrt(2)
    eps = relu((sum_i s_i / sqrt(N)) W_s + b_s) W_out + b_out   (1 x 1 convs; W_out starts at 0)

emb(t) = [sin(10^(0 * 4/63) t), .., sin(10^(63 * 4/63) t), cos(10^(0 * 4/63) t), .., cos(..)]
for step t = 0 .. T-1; a fractional step (fast sampling) takes the linear interpolation of its
two integer neighbours' vectors, as the authors' code does. The conditioner c is a mel
spectrogram (batch, frames, n_mels) upsampled to the waveform's rate by two transposed 2-D
convolutions over (time, mel) of one channel (kernel (2s, 3), stride (s, 1), leaky ReLU 0.4),
s = 16 each for a hop of 256 samples; ``n_mels=None`` makes the unconditional model.

Training (:meth:`DiffWave.loss`) and sampling (:meth:`DiffWave.sample`, the full reverse
process or the fast schedules of :mod:`lamina.models.diffwave_sampling`) use the linear
schedule beta_t from ``beta_start`` to ``beta_end`` over T steps (1e-4 .. 0.05, T = 50).

Presets (:data:`DIFFWAVE_CONFIGS`, 80 mel bins, dilation cycle 10): :func:`diffwave_base`
(C = 64, 30 layers, T = 50): 2,619,971 parameters; :func:`diffwave_large` (C = 128, 30 layers,
T = 200, betas 1e-4 .. 0.02): 6,885,315. These are the counts of the authors' published code;
the paper's table gives 2.64M and 6.91M (0.8% and 0.4% more).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.diffwave_sampling import DiffWaveSampling
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["DIFFWAVE_CONFIGS", "DiffWave", "DiffWaveResidualLayer", "DiffusionStepEmbedding",
           "SpectrogramUpsampler", "diffwave_base", "diffwave_large", "diffwave_step_features", "diffwave_tiny"]

# preset -> (residual channels C, layers N, dilation cycle, T, beta_start, beta_end)
DIFFWAVE_CONFIGS: dict[str, tuple[int, int, int, int, float, float]] = {
    "base": (64, 30, 10, 50, 1e-4, 0.05), "large": (128, 30, 10, 200, 1e-4, 0.02)}
LEAKY_SLOPE = 0.4


def _parameter(module: Module, name: str, kind: str, shape: tuple, fan_in: int, fan_out: int) -> None:
    module.add_parameter(name, initializers.get(kind)(shape, fan_in, fan_out, backend.get_default_dtype()))


def diffwave_step_features(t, dim: int = 128, dtype=None):
    """The (N, ``dim``) sinusoidal features of N diffusion steps t: columns j < dim / 2 hold
    sin(10^(4 j / (dim/2 - 1)) t), the others the cosines; a fractional t interpolates its two
    integer neighbours' rows linearly. A constant array (no gradient flows to t)."""
    dim = positive_int(dim, "diffwave_step_features: dim")
    if dim % 2 or dim < 4:
        raise ValueError(f"diffwave_step_features: dim must be an even number >= 4, got {dim}")
    steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=np.float64)
    if steps.ndim != 1:
        raise ShapeError(f"diffwave_step_features: t must be a 1-D array of N steps, got shape {steps.shape}")
    half = dim // 2
    frequencies = 10.0 ** (np.arange(half) * 4.0 / (half - 1))

    def table(k):
        angles = k[:, None] * frequencies
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    low = np.floor(steps)
    fraction = (steps - low)[:, None]
    rows = table(low) if not np.any(fraction) else (1 - fraction) * table(low) + fraction * table(low + 1)
    return backend.xp.asarray(rows.astype(dtype or backend.get_default_dtype()))


@register_with_arguments
class DiffusionStepEmbedding(Module):
    """e = swish(swish(emb(t) W_1 + b_1) W_2 + b_2): the sinusoids of
    :func:`diffwave_step_features` (``dim``) through two dense layers of ``hidden`` units.
    ``forward(t)`` takes N steps (ints or fractional) and returns (N, hidden)."""

    def __init__(self, dim: int = 128, hidden: int = 512, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "DiffusionStepEmbedding: dim")
        self.hidden = positive_int(hidden, "DiffusionStepEmbedding: hidden")
        _parameter(self, "weight1", "xavier_uniform", (self.dim, self.hidden), self.dim, self.hidden)
        _parameter(self, "bias1", "zeros", (self.hidden,), 1, 1)
        _parameter(self, "weight2", "xavier_uniform", (self.hidden, self.hidden), self.hidden, self.hidden)
        _parameter(self, "bias2", "zeros", (self.hidden,), 1, 1)

    def forward(self, t) -> Tensor:
        features = Tensor._wrap(diffwave_step_features(t, self.dim, self.weight1.dtype))
        h = F.silu(F.matmul(features, self.weight1) + self.bias1)
        return F.silu(F.matmul(h, self.weight2) + self.bias2)


@register_with_arguments
class SpectrogramUpsampler(Module):
    """Mel frames (batch, F, n_mels) -> (batch, F prod(strides), n_mels): per stride s, a
    transposed convolution of the one-channel (time, mel) image with a (2s, 3) kernel, stride
    (s, 1) and padding (s / 2, 1), then leaky ReLU (slope 0.4). Strides must be even."""

    def __init__(self, strides=(16, 16), name: str | None = None):
        super().__init__(name=name)
        self.strides = [positive_int(s, "SpectrogramUpsampler: strides") for s in strides]
        if not self.strides or any(s % 2 for s in self.strides):
            raise ValueError(f"SpectrogramUpsampler: strides must be one or more even ints, got {strides!r}")
        for i, s in enumerate(self.strides):
            _parameter(self, f"weight{i}", "he_uniform", (1, 2 * s, 3, 1), 6 * s, 6 * s)
            _parameter(self, f"bias{i}", "zeros", (1,), 1, 1)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    def forward(self, mel) -> Tensor:
        mel = as_tensor(mel)
        if mel.ndim != 3:
            raise ShapeError(f"{self._label()}: expected mel frames (batch, frames, n_mels), got {describe(mel)}")
        x = F.expand_dims(mel, -1)
        for i, s in enumerate(self.strides):
            x = F.conv_transpose2d(x, getattr(self, f"weight{i}"), getattr(self, f"bias{i}"), stride=(s, 1),
                                   padding=(s // 2, 1))
            x = F.leaky_relu(x, LEAKY_SLOPE)
        return x[..., 0]


@register_with_arguments
class DiffWaveResidualLayer(Module):
    """One residual layer of the module notes: ``forward(h, e, c)`` maps h (batch, L, C), the
    step features e (batch, E) and the upsampled conditioner c (batch, L, n_mels) or None to
    ((h + r) / sqrt(2), s). ``conv_weight`` (2C, 3, C) is lamina's Conv1D layout; the 1 x 1
    convolutions are matrices (``step_weight`` (E, C), ``cond_weight`` (n_mels, 2C),
    ``out_weight`` (C, 2C))."""

    def __init__(self, channels: int, dilation: int = 1, step_channels: int = 512, n_mels: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        c = self.channels = positive_int(channels, "DiffWaveResidualLayer: channels")
        self.dilation = positive_int(dilation, "DiffWaveResidualLayer: dilation")
        e = self.step_channels = positive_int(step_channels, "DiffWaveResidualLayer: step_channels")
        self.n_mels = None if n_mels is None else positive_int(n_mels, "DiffWaveResidualLayer: n_mels")
        _parameter(self, "step_weight", "xavier_uniform", (e, c), e, c)
        _parameter(self, "step_bias", "zeros", (c,), 1, 1)
        _parameter(self, "conv_weight", "he_normal", (2 * c, 3, c), 3 * c, 6 * c)
        _parameter(self, "conv_bias", "zeros", (2 * c,), 1, 1)
        if self.n_mels:
            _parameter(self, "cond_weight", "he_normal", (self.n_mels, 2 * c), self.n_mels, 2 * c)
            _parameter(self, "cond_bias", "zeros", (2 * c,), 1, 1)
        _parameter(self, "out_weight", "he_normal", (c, 2 * c), c, 2 * c)
        _parameter(self, "out_bias", "zeros", (2 * c,), 1, 1)

    def forward(self, h, e, cond=None) -> tuple[Tensor, Tensor]:
        h, e = as_tensor(h), as_tensor(e)
        c = self.channels
        if h.ndim != 3 or h.shape[2] != c or e.shape != (h.shape[0], self.step_channels):
            raise ShapeError(f"{self._label()}: expected h (batch, L, {c}) and step features (batch, "
                             f"{self.step_channels}), got {describe(h)} and {describe(e)}")
        if (cond is None) != (self.n_mels is None):
            raise ValueError(f"{self._label()}: n_mels={self.n_mels}; the conditioner must be "
                             f"{'None' if self.n_mels is None else '(batch, L, n_mels)'}")
        y = h + F.expand_dims(F.matmul(e, self.step_weight) + self.step_bias, 1)
        z = F.conv1d(y, self.conv_weight, self.conv_bias, padding=self.dilation, dilation=self.dilation)
        if self.n_mels:
            z = z + F.matmul(as_tensor(cond), self.cond_weight) + self.cond_bias
        u = z[..., :c].sigmoid() * z[..., c:].tanh()
        out = F.matmul(u, self.out_weight) + self.out_bias
        return (h + out[..., :c]) * (1.0 / math.sqrt(2.0)), out[..., c:]


@register_with_arguments
class DiffWave(DiffWaveSampling, Module):
    """The DiffWave network of the module notes, with its schedule: ``forward(audio, t, mel)``
    maps noisy waveforms (batch, L), N steps t in [0, T-1] (ints, or fractional from fast
    sampling) and, when conditional, mel frames (batch, L / hop, n_mels) to the predicted
    noise (batch, L). ``n_mels=None``: unconditional. ``loss_type``: 'l1' (the authors' code) or
    'l2' (the paper's). :meth:`loss` and :meth:`sample` train and sample it."""

    def __init__(self, residual_channels: int = 64, residual_layers: int = 30, dilation_cycle: int = 10,
                 n_mels: int | None = 80, num_timesteps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.05,
                 step_dim: int = 128, step_hidden: int = 512, upsample_strides=(16, 16), loss_type: str = "l1",
                 name: str | None = None):
        super().__init__(name=name)
        c = self.residual_channels = positive_int(residual_channels, "DiffWave: residual_channels")
        self.residual_layers = positive_int(residual_layers, "DiffWave: residual_layers")
        self.dilation_cycle = positive_int(dilation_cycle, "DiffWave: dilation_cycle")
        self.n_mels = None if n_mels is None else positive_int(n_mels, "DiffWave: n_mels")
        self.init_schedule(num_timesteps, beta_start, beta_end, loss_type)
        _parameter(self, "input_weight", "he_normal", (1, c), 1, c)
        _parameter(self, "input_bias", "zeros", (c,), 1, 1)
        self.step_embedding = DiffusionStepEmbedding(step_dim, step_hidden)
        self.upsampler = SpectrogramUpsampler(upsample_strides) if self.n_mels else None
        self.layers = ModuleList([DiffWaveResidualLayer(c, 2 ** (i % self.dilation_cycle), step_hidden, self.n_mels)
                                  for i in range(self.residual_layers)])
        _parameter(self, "skip_weight", "he_normal", (c, c), c, c)
        _parameter(self, "skip_bias", "zeros", (c,), 1, 1)
        _parameter(self, "output_weight", "zeros", (c, 1), c, 1)
        _parameter(self, "output_bias", "zeros", (1,), 1, 1)

    @property
    def hop_length(self) -> int | None:
        """Waveform samples per mel frame (None when unconditional)."""
        return None if self.upsampler is None else self.upsampler.hop_length

    def _steps(self, t, n: int) -> np.ndarray:
        steps = np.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t)
        if steps.dtype.kind not in "iuf":
            raise TypeError(f"{self._label()}: steps t must be numbers, got {describe(steps)}")
        steps = np.full(n, steps, dtype=np.float64) if steps.ndim == 0 else steps.astype(np.float64)
        if steps.shape != (n,):
            raise ShapeError(f"{self._label()}: steps t of shape {steps.shape} do not fit a batch of {n}; "
                             f"expected ({n},)")
        if steps.size and (steps.min() < 0 or steps.max() > self.num_timesteps - 1):
            raise ValueError(f"{self._label()}: steps must lie in [0, {self.num_timesteps - 1}], got values from "
                             f"{steps.min()} to {steps.max()}")
        return steps

    def _conditioner(self, mel, batch: int, length: int):
        if self.n_mels is None:
            if mel is not None:
                raise ValueError(f"{self._label()}: is unconditional (n_mels=None), got a mel spectrogram")
            return None
        if mel is None:
            raise ValueError(f"{self._label()}: needs mel frames (batch, frames, {self.n_mels})")
        mel = as_tensor(mel)
        hop = self.hop_length
        if mel.ndim != 3 or mel.shape[0] != batch or mel.shape[2] != self.n_mels or mel.shape[1] * hop != length:
            raise ShapeError(f"{self._label()}: mel frames must be (batch={batch}, frames={length / hop:g}, "
                             f"{self.n_mels}) for {length} samples at hop {hop}, got {describe(mel)}")
        return self.upsampler(mel)

    def forward(self, audio, t, mel=None) -> Tensor:
        audio = as_tensor(audio)
        if audio.ndim != 2:
            raise ShapeError(f"{self._label()}: expected waveforms (batch, samples), got {describe(audio)}")
        batch, length = audio.shape
        steps = self._steps(t, batch)
        cond = self._conditioner(mel, batch, length)
        h = F.relu(F.expand_dims(audio, -1) * self.input_weight + self.input_bias)
        e = self.step_embedding(steps)
        skips = None
        for layer in self.layers:
            h, skip = layer(h, e, cond)
            skips = skip if skips is None else skips + skip
        hidden = F.relu(F.matmul(skips * (1.0 / math.sqrt(len(self.layers))), self.skip_weight) + self.skip_bias)
        return (F.matmul(hidden, self.output_weight) + self.output_bias)[..., 0]


def _preset(variant: str, n_mels: int | None, loss_type: str) -> DiffWave:
    c, layers, cycle, steps, start, end = DIFFWAVE_CONFIGS[variant]
    return DiffWave(c, layers, cycle, n_mels, steps, start, end, loss_type=loss_type)


def diffwave_base(n_mels: int | None = 80, loss_type: str = "l1") -> DiffWave:
    """DiffWave BASE: C = 64, 30 layers, dilation cycle 10, T = 50 (betas 1e-4 .. 0.05)."""
    return _preset("base", n_mels, loss_type)


def diffwave_large(n_mels: int | None = 80, loss_type: str = "l1") -> DiffWave:
    """DiffWave LARGE: C = 128, 30 layers, dilation cycle 10, T = 200 (betas 1e-4 .. 0.02)."""
    return _preset("large", n_mels, loss_type)


def diffwave_tiny(n_mels: int | None = None, residual_channels: int = 16, residual_layers: int = 6,
                  dilation_cycle: int = 6, num_timesteps: int = 50, loss_type: str = "l1") -> DiffWave:
    """A small DiffWave for tests and toy data: C = 16, 6 layers (dilations 1 .. 32), a 16-d
    step embedding of 32 units, hop 16 (two strides of 4) when conditional, T = 50."""
    return DiffWave(residual_channels, residual_layers, dilation_cycle, n_mels, num_timesteps, step_dim=16,
                    step_hidden=32, upsample_strides=(4, 4), loss_type=loss_type)
