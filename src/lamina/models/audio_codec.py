"""A small neural audio codec in the manner of SoundStream (Zeghidour et al. 2021) and EnCodec
(Defossez et al. 2022): waveform -> convolutional encoder -> residual vector quantiser ->
mirrored decoder -> waveform.

Waveforms are channel-last (batch, time, channels) (or (batch, time), one channel). The
encoder is a 7-tap convolution to ``channels`` features, then per stride s a residual unit
x + conv1(elu(conv3_dilated(elu(x)))) and a convolution of 2s taps and stride s doubling the
features, then a 3-tap convolution to ``dim``: one latent vector every prod(strides)
samples. A :class:`lamina.nn.ResidualVQ` codes each vector by ``num_quantizers`` indices of
log2(``codebook_size``) bits, so the bitrate is

    n_q log2(K) sample_rate / prod(strides)    bits per second.

The decoder mirrors the encoder with transposed convolutions of 2s taps and stride s. The
training loss (:meth:`AudioCodec.loss`, no adversarial part) is

    L = |x - x_hat|_1 + lambda_stft L_stft(x_hat, x) + L_vq

with L_stft the multi-resolution STFT loss (:func:`lamina.functional.multi_resolution_stft_loss`)
and L_vq the quantiser's loss (the stages' commitment, and codebook, losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Conv1D, Conv1DTranspose, ModuleList, ResidualVQ
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["AudioCodec", "CodecOutput", "CodecResidualUnit"]


class CodecOutput(NamedTuple):
    """An :class:`AudioCodec` forward pass: the reconstruction (batch, time, channels), the
    codes (batch, frames, n_q) and the quantiser's loss."""

    reconstruction: Tensor
    codes: np.ndarray
    vq_loss: Tensor


@register_layer
class CodecResidualUnit(Module):
    """x + conv1x1(elu(conv3(elu(x)), dilation d)) on (batch, time, ``channels``)."""

    def __init__(self, channels: int, dilation: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "CodecResidualUnit: channels")
        self.dilation = positive_int(dilation, "CodecResidualUnit: dilation")
        self.spatial = Conv1D(self.channels, 3, padding=self.dilation, dilation=self.dilation)
        self.project = Conv1D(self.channels, 1)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        return x + self.project(F.elu(self.spatial(F.elu(x))))

    def get_config(self) -> dict:
        return {"channels": self.channels, "dilation": self.dilation, "name": self.name}


@register_layer
class AudioCodec(Module):
    """Encoder, residual vector quantiser and decoder (see the module docstring) for waveforms
    of ``audio_channels`` channels sampled at ``sample_rate`` Hz whose length is a multiple of
    prod(``strides``). The quantiser's options (``commitment_cost``, ``ema``, ``decay``,
    ``dead_code_threshold`` (the last two for ``ema=True`` only), ``quantizer_dropout``, ``seed``)
    are passed on to :class:`lamina.nn.ResidualVQ`. Weights are made at once."""

    def __init__(self, audio_channels: int = 1, channels: int = 8, strides: Sequence[int] = (2, 4), dim: int = 8,
                 num_quantizers: int = 4, codebook_size: int = 16, sample_rate: int = 16000,
                 commitment_cost: float = 0.25, ema: bool = True, decay: float = 0.99,
                 dead_code_threshold: float | None = 2.0, quantizer_dropout: bool = True, seed: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.audio_channels = positive_int(audio_channels, "AudioCodec: audio_channels")
        self.channels = positive_int(channels, "AudioCodec: channels")
        self.strides = tuple(int(s) for s in strides)
        if not self.strides or any(s < 2 or s != float(t) for s, t in zip(self.strides, strides)):
            raise ValueError(f"AudioCodec: strides must be a non-empty sequence of ints >= 2, got {strides!r}")
        self.dim = positive_int(dim, "AudioCodec: dim")
        self.sample_rate = positive_int(sample_rate, "AudioCodec: sample_rate")
        widths = [self.channels * 2 ** (k + 1) for k in range(len(self.strides))]
        self.encoder_in = Conv1D(self.channels, 7, padding=3)
        self.encoder_units = ModuleList([CodecResidualUnit(w // 2) for w in widths])
        self.downs = ModuleList([Conv1D(w, 2 * s, stride=s, padding=(s + 1) // 2)
                                 for w, s in zip(widths, self.strides)])
        self.encoder_out = Conv1D(self.dim, 3, padding=1)
        ema_options = {"decay": decay, "dead_code_threshold": dead_code_threshold} if ema else {}
        self.quantizer = ResidualVQ(num_quantizers, codebook_size, self.dim, commitment_cost, ema=ema,
                                    quantizer_dropout=quantizer_dropout, seed=seed, **ema_options)
        self.decoder_in = Conv1D(widths[-1], 7, padding=3)
        self.ups = ModuleList([Conv1DTranspose(w // 2, 2 * s, stride=s, padding=(s + 1) // 2,
                                               output_padding=2 * ((s + 1) // 2) - s)
                               for w, s in zip(widths[::-1], self.strides[::-1])])
        self.decoder_units = ModuleList([CodecResidualUnit(w // 2) for w in widths[::-1]])
        self.decoder_out = Conv1D(self.audio_channels, 7, padding=3)
        with no_grad(), evaluation_mode(self):               # every layer's weights now, for optimizers
            self.forward(np.zeros((1, self.hop_length, self.audio_channels), dtype=backend.get_default_dtype()))
        self.built = True

    @property
    def hop_length(self) -> int:
        """Samples per latent frame: prod(strides)."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second with the first ``n_q`` stages (all by default): n_q log2(K) frame_rate."""
        return self.quantizer.bits_per_vector(n_q) * self.frame_rate

    def _waveform(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim == 2 and self.audio_channels == 1:
            x = x.reshape((*x.shape, 1))
        if x.ndim != 3 or x.shape[-1] != self.audio_channels or x.shape[1] % self.hop_length:
            raise ShapeError(f"{self._label()}: got a waveform of shape {tuple(x.shape)}; expected (batch, time, "
                             f"{self.audio_channels}) with time a multiple of {self.hop_length} (prod(strides))")
        return x

    def embed(self, x) -> Tensor:
        """The encoder's continuous latents (batch, time / hop_length, dim)."""
        x = self.encoder_in(self._waveform(x))
        for unit, down in zip(self.encoder_units, self.downs):
            x = down(F.elu(unit(x)))
        return self.encoder_out(F.elu(x))

    def synthesize(self, latents) -> Tensor:
        """The decoder: latents (batch, frames, dim) -> waveform (batch, frames hop_length, channels)."""
        latents = as_tensor(latents)
        if latents.ndim != 3 or latents.shape[-1] != self.dim:
            raise ShapeError(f"{self._label()}: got latents of shape {tuple(latents.shape)}; expected (batch, "
                             f"frames, {self.dim})")
        x = self.decoder_in(latents)
        for up, unit in zip(self.ups, self.decoder_units):
            x = unit(up(F.elu(x)))
        return self.decoder_out(F.elu(x))

    def encode(self, x, n_q: int | None = None) -> np.ndarray:
        """Waveforms -> codes (batch, frames, n_q)."""
        with no_grad():
            return self.quantizer.encode(self.embed(x), n_q)

    def decode(self, codes) -> Tensor:
        """Codes (batch, frames, n_q) -> waveforms (batch, frames hop_length, channels)."""
        with no_grad():
            return self.synthesize(self.quantizer.decode(codes))

    def forward(self, x, n_q: int | None = None) -> CodecOutput:
        out = self.quantizer(self.embed(x), n_q)
        return CodecOutput(self.synthesize(out.quantized), out.indices, out.loss)

    def loss(self, x, n_q: int | None = None, stft_weight: float = 1.0, fft_sizes: Sequence[int] = (64, 128, 32),
             hop_sizes: Sequence[int] = (16, 32, 8), win_lengths: Sequence[int] = (64, 128, 32)):
        """The training loss |x - x_hat|_1 + stft_weight L_stft + L_vq (the STFT resolutions are
        given per call; the defaults suit short clips) and the forward pass."""
        x = self._waveform(x)
        out = self.forward(x, n_q)
        loss = (out.reconstruction - x).abs().mean() + out.vq_loss
        if stft_weight:
            pred, target = out.reconstruction.transpose(0, 2, 1), x.transpose(0, 2, 1)
            loss = loss + stft_weight * F.multi_resolution_stft_loss(pred, target, fft_sizes, hop_sizes, win_lengths)
        return loss, out

    def get_config(self) -> dict:
        q = self.quantizer
        options = q.ema_options
        return {"audio_channels": self.audio_channels, "channels": self.channels, "strides": list(self.strides),
                "dim": self.dim, "num_quantizers": q.num_quantizers, "codebook_size": q.num_embeddings,
                "sample_rate": self.sample_rate, "commitment_cost": q.stage0.commitment_cost, "ema": q.ema,
                "decay": options.get("decay", 0.99), "dead_code_threshold": options.get("dead_code_threshold", 2.0),
                "quantizer_dropout": q.quantizer_dropout, "seed": q.seed, "name": self.name}
