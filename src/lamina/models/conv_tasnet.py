"""Conv-TasNet (Luo & Mesgarani 2019): time-domain source separation with masks on a learned
filterbank.

A mixture x (batch, T) is cut into frames of L samples with a hop of L / 2 (zeros appended so
the frames cover it) and encoded by N filters, w = relu(conv1d(x, U)) (batch, M, N); sequences
are channels-last (batch, frames, channels) as everywhere in lamina. The separator, a temporal
convolutional network, normalises w (gLN or cLN), projects it to B channels and runs R
repeats of X blocks with dilations 1, 2, ..., 2^(X-1); block (r, l) maps its input u to

    h = norm(prelu(u W_in + b_in)),   h = norm(prelu(depthwise_conv_{P, dilation 2^l}(h)))
    u <- u + h W_res + b_res,         skip <- skip + h W_skip + b_skip

(the last block has no residual output). The masks are m = sigmoid(prelu(skip) W_m + b_m)
(or relu), one (M, N) mask per source, and each source is decoded from w (.) m_s by the
transposed convolution with N filters of L samples (overlap-add), then cut to T samples.

gLN normalises each example over all its frames and channels, cLN each frame over its
channels alone (so cLN keeps the network causal); both scale and shift per channel. The
depthwise convolutions pad (P - 1) d samples split between the two ends, or all on the left
when ``causal``. One mask frame reads 1 + R (P - 1)(2^X - 1) encoder frames: the receptive
field, L + (that - 1) L / 2 samples.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["ChannelwiseLayerNorm", "ConvTasNet", "GlobalLayerNorm", "TemporalConvBlock"]

NORMS = ("gLN", "cLN")
MASK_ACTIVATIONS = ("sigmoid", "relu")


def _glorot(module: Module, name: str, shape: tuple, fan_in: int, fan_out: int) -> None:
    module.add_parameter(name, initializers.get("xavier_uniform")(shape, fan_in, fan_out,
                                                                    backend.get_default_dtype()))


def _constant(module: Module, name: str, size: int, value: float) -> None:
    module.add_parameter(name, backend.xp.full(size, value, dtype=backend.get_default_dtype()))


def _check_sequence(module: Module, x: Tensor, channels: int) -> None:
    if x.ndim != 3 or x.shape[-1] != channels:
        raise ShapeError(f"{module._label()}: expected (batch, frames, {channels}) sequences, got shape "
                         f"{tuple(x.shape)}")


@register_layer
class GlobalLayerNorm(Module):
    """gLN: y = gamma (x - mean) / sqrt(var + eps) + beta, mean and (biased) variance over all
    frames and channels of each example (x (batch, frames, C)); gamma, beta (C,). Equals
    PyTorch's GroupNorm(1, C) on (batch, C, frames)."""

    def __init__(self, channels: int, eps: float = 1e-8, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "GlobalLayerNorm: channels")
        self.eps = float(eps)
        _constant(self, "gamma", self.channels, 1.0)
        _constant(self, "beta", self.channels, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        _check_sequence(self, x, self.channels)
        centred = x - x.mean(axis=(1, 2), keepdims=True)
        variance = (centred * centred).mean(axis=(1, 2), keepdims=True)
        return centred / F.sqrt(variance + self.eps) * self.gamma + self.beta

    def get_config(self) -> dict:
        return {"channels": self.channels, "eps": self.eps, "name": self.name}


@register_layer
class ChannelwiseLayerNorm(GlobalLayerNorm):
    """cLN: as :class:`GlobalLayerNorm` with the statistics of each frame's C channels alone
    (PyTorch's LayerNorm(C) on (batch, frames, C))."""

    def forward(self, x: Tensor) -> Tensor:
        _check_sequence(self, x, self.channels)
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / F.sqrt(variance + self.eps) * self.gamma + self.beta


def _norm(kind: str, channels: int) -> Module:
    return GlobalLayerNorm(channels) if kind == "gLN" else ChannelwiseLayerNorm(channels)


@register_layer
class TemporalConvBlock(Module):
    """One separator block (see the module docstring): 1 x 1 convolution B -> H, PReLU, norm,
    depthwise convolution of P taps ``dilation`` apart, PReLU, norm, then 1 x 1 projections to
    the residual and skip paths (B each). ``forward`` maps u (batch, frames, B) to (u +
    residual, skip); with ``residual=False`` u passes unchanged. Weights: ``in_weight`` (B, H),
    ``depthwise_weight`` (H, P, 1) (lamina's Conv1D layout), ``residual_weight`` and
    ``skip_weight`` (H, B); the PReLUs have one slope each (0.25 at first)."""

    def __init__(self, io_channels: int, hidden_channels: int, kernel_size: int, dilation: int = 1,
                 norm: str = "gLN", causal: bool = False, residual: bool = True, name: str | None = None):
        super().__init__(name=name)
        b = self.io_channels = positive_int(io_channels, "TemporalConvBlock: io_channels")
        h = self.hidden_channels = positive_int(hidden_channels, "TemporalConvBlock: hidden_channels")
        p = self.kernel_size = positive_int(kernel_size, "TemporalConvBlock: kernel_size")
        self.dilation = positive_int(dilation, "TemporalConvBlock: dilation")
        if norm not in NORMS:
            raise ValueError(f"TemporalConvBlock: norm must be one of {NORMS}, got {norm!r}")
        self.norm, self.causal, self.residual = norm, bool(causal), bool(residual)
        _glorot(self, "in_weight", (b, h), b, h)
        _constant(self, "in_bias", h, 0.0)
        _constant(self, "in_slope", 1, 0.25)
        self.in_norm = _norm(norm, h)
        _glorot(self, "depthwise_weight", (h, p, 1), p, p)
        _constant(self, "depthwise_bias", h, 0.0)
        _constant(self, "depthwise_slope", 1, 0.25)
        self.depthwise_norm = _norm(norm, h)
        if self.residual:
            _glorot(self, "residual_weight", (h, b), h, b)
            _constant(self, "residual_bias", b, 0.0)
        _glorot(self, "skip_weight", (h, b), h, b)
        _constant(self, "skip_bias", b, 0.0)

    @property
    def padding(self) -> tuple[int, int]:
        """Zeros (before, after) the depthwise convolution's input: (P - 1) d in all."""
        reach = (self.kernel_size - 1) * self.dilation
        before = reach if self.causal else reach // 2
        return before, reach - before

    def forward(self, u: Tensor):
        _check_sequence(self, u, self.io_channels)
        h = self.in_norm(F.prelu(F.matmul(u, self.in_weight) + self.in_bias, self.in_slope))
        h = F.conv1d(F.pad(h, ((0, 0), self.padding, (0, 0))), self.depthwise_weight, self.depthwise_bias,
                     dilation=self.dilation, groups=self.hidden_channels)
        h = self.depthwise_norm(F.prelu(h, self.depthwise_slope))
        skip = F.matmul(h, self.skip_weight) + self.skip_bias
        if not self.residual:
            return u, skip
        return u + F.matmul(h, self.residual_weight) + self.residual_bias, skip

    def get_config(self) -> dict:
        return {"io_channels": self.io_channels, "hidden_channels": self.hidden_channels,
                "kernel_size": self.kernel_size, "dilation": self.dilation, "norm": self.norm,
                "causal": self.causal, "residual": self.residual, "name": self.name}


@register_layer
class ConvTasNet(Module):
    """Conv-TasNet: mixtures (batch, time) -> separated sources (batch, num_sources, time).

    Hyper-parameters as the paper names them: N encoder filters of L samples (hop L // 2), B
    bottleneck (and skip) channels, H channels inside the blocks, kernel size P, X blocks per
    repeat, R repeats. ``norm``: 'gLN' or 'cLN'; ``causal`` pads the depthwise convolutions on
    the left only (use it with 'cLN'); ``mask_activation``: 'sigmoid' or 'relu'. Parameters:
    ``encoder_weight`` (N, L, 1) and ``decoder_weight`` (N, L, 1) (no biases), the separator's
    ``bottleneck_weight`` (N, B), ``mask_weight`` (B, S N) with their biases, ``output_slope``
    and the blocks in ``blocks``."""

    def __init__(self, N: int = 512, L: int = 16, B: int = 128, H: int = 512, P: int = 3, X: int = 8,
                 R: int = 3, num_sources: int = 2, norm: str = "gLN", causal: bool = False,
                 mask_activation: str = "sigmoid", name: str | None = None):
        super().__init__(name=name)
        n = self.N = positive_int(N, "ConvTasNet: N")
        self.L = positive_int(L, "ConvTasNet: L")
        if self.L < 2:
            raise ValueError(f"ConvTasNet: L must be at least 2 (the hop is L // 2), got {L!r}")
        b = self.B = positive_int(B, "ConvTasNet: B")
        self.H = positive_int(H, "ConvTasNet: H")
        self.P = positive_int(P, "ConvTasNet: P")
        self.X = positive_int(X, "ConvTasNet: X")
        self.R = positive_int(R, "ConvTasNet: R")
        s = self.num_sources = positive_int(num_sources, "ConvTasNet: num_sources")
        if norm not in NORMS:
            raise ValueError(f"ConvTasNet: norm must be one of {NORMS}, got {norm!r}")
        if mask_activation not in MASK_ACTIVATIONS:
            raise ValueError(f"ConvTasNet: mask_activation must be one of {MASK_ACTIVATIONS}, got {mask_activation!r}")
        self.norm, self.causal, self.mask_activation = norm, bool(causal), mask_activation
        _glorot(self, "encoder_weight", (n, self.L, 1), self.L, n)
        self.input_norm = _norm(norm, n)
        _glorot(self, "bottleneck_weight", (n, b), n, b)
        _constant(self, "bottleneck_bias", b, 0.0)
        count = self.R * self.X
        self.blocks = ModuleList([
            TemporalConvBlock(b, self.H, self.P, 2 ** (i % self.X), norm, self.causal, residual=i < count - 1)
            for i in range(count)])
        _constant(self, "output_slope", 1, 0.25)
        _glorot(self, "mask_weight", (b, s * n), b, s * n)
        _constant(self, "mask_bias", s * n, 0.0)
        _glorot(self, "decoder_weight", (n, self.L, 1), n, self.L)

    @property
    def stride(self) -> int:
        """The encoder's hop: L // 2 samples."""
        return self.L // 2

    @property
    def receptive_field_frames(self) -> int:
        """Encoder frames one mask frame reads: 1 + R (P - 1)(2^X - 1)."""
        return 1 + self.R * (self.P - 1) * (2 ** self.X - 1)

    @property
    def receptive_field(self) -> int:
        """Samples of the mixture one mask frame reads: L + (frames - 1) L // 2."""
        return self.L + (self.receptive_field_frames - 1) * self.stride

    def padded_length(self, length: int) -> int:
        """The smallest L + k L // 2 >= ``length``: the samples the frames cover."""
        frames = -(-max(length - self.L, 0) // self.stride)
        return self.L + frames * self.stride

    def encode(self, mixture) -> Tensor:
        """relu(conv1d(x, U)): mixtures (batch, time) -> encoder frames (batch, M, N)."""
        x = mixture if isinstance(mixture, Tensor) else Tensor._constant(mixture, None)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ShapeError(f"{self._label()}: expected mixtures (batch, time), got shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind != "f":
            raise TypeError(f"{self._label()}: expected floating mixtures, got dtype {x.dtype}")
        extra = self.padded_length(x.shape[1]) - x.shape[1]
        frames = F.pad(F.expand_dims(x, -1), ((0, 0), (0, extra), (0, 0)))
        return F.relu(F.conv1d(frames, self.encoder_weight, stride=self.stride))

    def masks(self, features: Tensor) -> Tensor:
        """The separator: encoder frames (batch, M, N) -> masks (batch, S, M, N)."""
        _check_sequence(self, features, self.N)
        u = F.matmul(self.input_norm(features), self.bottleneck_weight) + self.bottleneck_bias
        skip = None
        for block in self.blocks:
            u, part = block(u)
            skip = part if skip is None else skip + part
        logits = F.matmul(F.prelu(skip, self.output_slope), self.mask_weight) + self.mask_bias
        masks = F.sigmoid(logits) if self.mask_activation == "sigmoid" else F.relu(logits)
        batch, frames = features.shape[:2]
        return F.transpose(F.reshape(masks, (batch, frames, self.num_sources, self.N)), (0, 2, 1, 3))

    def decode(self, masked: Tensor, length: int) -> Tensor:
        """Transposed convolution of masked frames (batch, S, M, N) -> sources (batch, S, length)."""
        batch, sources, frames, n = masked.shape
        flat = F.reshape(masked, (batch * sources, frames, n))
        signal = F.conv_transpose1d(flat, self.decoder_weight, stride=self.stride)
        return F.reshape(signal, (batch, sources, signal.shape[1]))[:, :, :length]

    def forward(self, mixture) -> Tensor:
        mixture = mixture if isinstance(mixture, Tensor) else Tensor._constant(mixture, None)
        features = self.encode(mixture)
        masked = F.expand_dims(features, 1) * self.masks(features)
        return self.decode(masked, mixture.shape[1])

    def get_config(self) -> dict:
        return {"N": self.N, "L": self.L, "B": self.B, "H": self.H, "P": self.P, "X": self.X, "R": self.R,
                "num_sources": self.num_sources, "norm": self.norm, "causal": self.causal,
                "mask_activation": self.mask_activation, "name": self.name}
