"""ECAPA-TDNN (Desplanques, Thienpondt and Demuynck 2020, "ECAPA-TDNN: Emphasized Channel
Attention, Propagation and Aggregation in TDNN Based Speaker Verification").

Features (batch, frames, features) (NWC) -> embeddings (batch, embedding_dim):

    h0 = TDNN(C, kernel 5)                                    (Conv1D -> ReLU -> BatchNorm)
    h1, h2, h3 = SE-Res2Net blocks with dilations 2, 3, 4      (each on the previous output)
    h = TDNN(mfa_channels, kernel 1)([h1; h2; h3])            (multi-layer feature aggregation)
    e = Dense(embedding_dim)(BatchNorm(ASP(h)))               (attentive statistics pooling)

An SE-Res2Net block (:class:`SERes2NetBlock`) is TDNN (1 tap) -> Res2Net -> TDNN (1 tap) ->
squeeze-excitation, added to its input. The Res2Net layer cuts the channels into ``scale``
groups x_1 .. x_s; y_1 = x_1, y_2 = K_2(x_2), y_i = K_i(x_i + y_(i-1)), each K_i a TDNN
(kernel 3, the block's dilation) on C / s channels; the output is [y_1; ...; y_s]. The
squeeze-excitation (:class:`SEBlock1D`) scales channel c by sigma(W_2 ReLU(W_1 z + b_1) + b_2)_c,
z the mean over the valid frames. Names and defaults follow SpeechBrain's ECAPA_TDNN
(C = 512, mfa_channels = 3C = 1536, attention and SE bottlenecks 128, 192-d embeddings), except
that the convolutions pad with zeros where SpeechBrain reflects.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.speaker import (
    AttentiveStatisticsPooling,
    TDNNBlock,
    _mask,
    _sequence,
    _uniform_weights,
)
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["ECAPA_TDNN", "Res2NetBlock1D", "SEBlock1D", "SERes2NetBlock"]


@register_with_arguments
class Res2NetBlock1D(Module):
    """The Res2Net layer of the module docstring on (B, T, C): ``channels`` C divisible by
    ``scale``; sub-layers ``blocks.0`` .. ``blocks.(scale - 2)`` (:class:`TDNNBlock`)."""

    def __init__(self, channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "Res2NetBlock1D: channels")
        self.scale = positive_int(scale, "Res2NetBlock1D: scale")
        if self.channels % self.scale:
            raise ValueError(f"Res2NetBlock1D: scale={self.scale} must divide channels={self.channels}")
        width = self.channels // self.scale
        self.blocks = nn.ModuleList([TDNNBlock(width, kernel_size, dilation, name=str(i))
                                     for i in range(self.scale - 1)])

    def forward(self, x) -> Tensor:
        pieces = F.split(x, self.channels // self.scale, axis=-1)
        outputs = [pieces[0]]
        for i, block in enumerate(self.blocks, start=1):
            outputs.append(block(pieces[i] if i == 1 else pieces[i] + outputs[-1]))
        return F.concat(outputs, axis=-1)


@register_with_arguments
class SEBlock1D(Module):
    """Squeeze-excitation over time: x (B, T, C) times sigma(conv2(ReLU(conv1(z)))), z the mean
    over the valid frames (B, 1, C); ``conv1`` to ``se_channels``, ``conv2`` back to C (1 tap)."""

    def __init__(self, channels: int, se_channels: int = 128, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SEBlock1D: channels")
        self.se_channels = positive_int(se_channels, "SEBlock1D: se_channels")
        self.conv1 = nn.Conv1D(self.se_channels, 1, name="conv1")
        self.conv2 = nn.Conv1D(self.channels, 1, name="conv2")

    def forward(self, x, lengths=None) -> Tensor:
        x = _sequence(x, self._label())
        weights = _uniform_weights(_mask(x, lengths, None, self._label()), x.dtype)
        squeezed = (x * weights).sum(axis=1, keepdims=True)
        gates = F.sigmoid(self.conv2(F.relu(self.conv1(squeezed))))
        return x * gates


@register_with_arguments
class SERes2NetBlock(Module):
    """TDNN (1 tap) -> :class:`Res2NetBlock1D` -> TDNN (1 tap) -> :class:`SEBlock1D`, plus the
    input (through a 1-tap Conv1D ``shortcut`` when its channels differ from ``channels``).
    Sub-layers ``tdnn1``, ``res2net_block``, ``tdnn2``, ``se_block`` (SpeechBrain's names)."""

    def __init__(self, channels: int, res2net_scale: int = 8, se_channels: int = 128, kernel_size: int = 3,
                 dilation: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SERes2NetBlock: channels")
        self.tdnn1 = TDNNBlock(self.channels, 1, name="tdnn1")
        self.res2net_block = Res2NetBlock1D(self.channels, res2net_scale, kernel_size, dilation, name="res2net_block")
        self.tdnn2 = TDNNBlock(self.channels, 1, name="tdnn2")
        self.se_block = SEBlock1D(self.channels, se_channels, name="se_block")

    def build(self, input_shape) -> None:
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape     # called with lengths
        if shape[-1] != self.channels:
            self.shortcut = nn.Conv1D(self.channels, 1, name="shortcut")
        self.built = True

    def forward(self, x, lengths=None) -> Tensor:
        x = _sequence(x, self._label())
        residual = self.shortcut(x) if "shortcut" in self._modules else x
        h = self.tdnn2(self.res2net_block(self.tdnn1(x)))
        return self.se_block(h, lengths) + residual


@register_with_arguments
class ECAPA_TDNN(Module):  # noqa: N801 - the paper's and SpeechBrain's name
    """ECAPA-TDNN (see the module docstring): features (B, T, F) -> (B, ``embedding_dim``).

    ``channels`` C (512 or 1024 in the paper), ``mfa_channels`` (3C), ``dilations`` of the
    three SE-Res2Net blocks (2, 3, 4), ``res2net_scale`` 8, ``se_channels`` and
    ``attention_channels`` 128. Sub-layers ``block0``, ``block1`` .. ``block3``, ``mfa``,
    ``asp``, ``asp_bn``, ``fc``. With 80 input features the C = 512 model has 6,194,048
    parameters (SpeechBrain's, the paper's 6.2M); C = 1024 has 20,767,552 with mfa_channels
    3C = 3072 (SpeechBrain's) and 14,660,416 with the paper's 1536 (its 14.7M). The layers are
    built on the first call: call the model once before handing ``parameters()`` to an optimizer."""

    def __init__(self, channels: int = 512, embedding_dim: int = 192, mfa_channels: int | None = None,
                 dilations=(2, 3, 4), res2net_scale: int = 8, se_channels: int = 128, attention_channels: int = 128,
                 global_context: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "ECAPA_TDNN: channels")
        self.embedding_dim = positive_int(embedding_dim, "ECAPA_TDNN: embedding_dim")
        self.mfa_channels = 3 * self.channels if mfa_channels is None else positive_int(
            mfa_channels, "ECAPA_TDNN: mfa_channels")
        self.dilations = tuple(positive_int(d, "ECAPA_TDNN: dilations") for d in dilations)
        if len(self.dilations) < 1:
            raise ValueError("ECAPA_TDNN: dilations must name at least one SE-Res2Net block")
        self.block0 = TDNNBlock(self.channels, 5, name="block0")
        for i, dilation in enumerate(self.dilations, start=1):
            setattr(self, f"block{i}", SERes2NetBlock(self.channels, res2net_scale, se_channels, 3, dilation,
                                                      name=f"block{i}"))
        self.mfa = TDNNBlock(self.mfa_channels, 1, name="mfa")
        self.asp = AttentiveStatisticsPooling(self.mfa_channels, attention_channels, global_context, name="asp")
        self.asp_bn = nn.BatchNorm(name="asp_bn")
        self.fc = nn.Dense(self.embedding_dim, name="fc")

    def forward(self, x, lengths=None) -> Tensor:
        x = _sequence(x, self._label())
        if x.shape[1] < 1:
            raise ShapeError(f"{self._label()}: expected at least one frame, got features of shape {tuple(x.shape)}")
        h = self.block0(x)
        outputs = []
        for i in range(1, len(self.dilations) + 1):
            h = getattr(self, f"block{i}")(h, lengths)
            outputs.append(h)
        h = self.mfa(F.concat(outputs, axis=-1))
        return self.fc(self.asp_bn(self.asp(h, lengths)))
