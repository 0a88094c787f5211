"""QuartzNet (Kriman et al., "QuartzNet: Deep Automatic Speech Recognition with 1D Time-Channel
Separable Convolutions", 2020) and Jasper's dense residual (Li et al., "Jasper: An End-to-End
Convolutional Neural Acoustic Model", 2019): fully convolutional CTC recognisers over
(batch, frames, features) spectrogram features.

A time-channel separable convolution (TCS) is a depthwise convolution over time, one kernel of
K taps per channel, followed by a pointwise (1x1) convolution that mixes the channels:

    TCS(x)[t, o] = sum_c W_p[o, c] sum_j W_d[j, c] x[s t + d j - p, c]

with stride s, dilation d and p = d (K - 1) // 2 zeros at both ends, so that
T_out = floor((T + 2p - d (K - 1) - 1) / s) + 1 (= ceil(T / s) for odd K). It holds
C_in K + C_in C_out weights instead of the C_in K C_out of a plain convolution.

A block B_i repeats R sub-blocks TCS - BN - ReLU; its residual, a 1x1 convolution and a batch
norm of the block's input, is added after the last batch norm, before the last ReLU:

    y = ReLU(BN(TCS(...ReLU(BN(TCS(x)))...)) + BN(Conv1x1(x)))

Jasper's dense residual adds one such 1x1 convolution + BN term for the input of every block
before it as well (the prologue's output and each earlier block's output), so block i sees
sum_{j <= i} BN_j(Conv1x1_j(x_j)).

The B x R network: C1 (a TCS layer of stride 2), B blocks of R sub-blocks, C2 (dilated), C3
(1x1) and C4, a 1x1 convolution with a bias to the characters and the CTC blank; the model
returns log-probabilities for :func:`lamina.functional.ctc_loss`. As in the published
configs, the batch norms use eps = 1e-3 and the convolutions have no bias (but C4). Padded
frames are not masked inside the network: utterances of a batch should be of similar length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.hf_weights import build_children
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dropout import Dropout
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm
from lamina.text.ctc_decode import ctc_greedy_decode
from lamina.vision.ocr_metrics import character_error_rate

__all__ = ["JASPER_TINY", "QUARTZNET_TINY", "QuartzNet", "QuartzNetBlock", "TCSConv1D", "conv_output_length",
           "greedy_transcribe", "jasper_tiny", "quartznet_5x5", "quartznet_15x5", "quartznet_ctc_loss",
           "quartznet_tiny", "word_error_rate"]

_BN_EPS = 1e-3


def conv_output_length(length, kernel_size: int, stride: int = 1, dilation: int = 1):
    """Frames after a convolution with p = d (K - 1) // 2 zeros at both ends:
    floor((T + 2p - d (K - 1) - 1) / s) + 1 (an int, or an array for an array of lengths)."""
    padding = dilation * (kernel_size - 1) // 2
    return (np.asarray(length) + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


@register_with_arguments
class TCSConv1D(Module):
    """Time-channel separable 1-D convolution on (batch, frames, in_channels): a depthwise
    convolution over time (``depthwise``, weight (C_in, K, 1)) then a pointwise one
    (``pointwise``, weight (C_out, 1, C_in)), both without bias; ``separable=False`` makes it
    one plain convolution (``conv``, weight (C_out, K, C_in)), as in Jasper."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 separable: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "TCSConv1D: in_channels")
        self.out_channels = positive_int(out_channels, "TCSConv1D: out_channels")
        self.kernel_size = positive_int(kernel_size, "TCSConv1D: kernel_size")
        self.stride = positive_int(stride, "TCSConv1D: stride")
        self.dilation = positive_int(dilation, "TCSConv1D: dilation")
        self.separable = bool(separable)
        padding = self.dilation * (self.kernel_size - 1) // 2
        if self.separable:
            self.depthwise = Conv1D(in_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                                    groups=in_channels, use_bias=False)
            self.pointwise = Conv1D(out_channels, 1, use_bias=False)
        else:
            self.conv = Conv1D(out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                               use_bias=False)

    def build(self, input_shape) -> None:
        shape = (None, None, self.in_channels)
        if self.separable:
            build_children([(self.depthwise, shape), (self.pointwise, shape)])
        else:
            build_children([(self.conv, shape)])
        self.built = True

    def output_length(self, length):
        """Frames out for ``length`` frames in (:func:`conv_output_length`)."""
        return conv_output_length(length, self.kernel_size, self.stride, self.dilation)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ShapeError(f"TCSConv1D: expected (batch, frames, {self.in_channels}) input, got shape "
                             f"{tuple(x.shape)}")
        if self.separable:
            return self.pointwise(self.depthwise(x))
        return self.conv(x)


@register_with_arguments
class QuartzNetBlock(Module):
    """R sub-blocks TCS - BN - ReLU - Dropout (module docstring); with ``residual`` the 1x1
    conv + BN of each of ``residual_inputs`` (channel counts of the inputs the residual sums
    over: the block's own input, and earlier ones for Jasper's dense residual) is added
    before the last ReLU. Called as ``block(x)`` or ``block(x, [x_1, ..., x_n])`` with the
    residual inputs, in the order of ``residual_inputs``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, repeat: int = 1, stride: int = 1,
                 dilation: int = 1, separable: bool = True, residual: bool = True,
                 residual_inputs: Sequence[int] | None = None, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "QuartzNetBlock: in_channels")
        self.out_channels = positive_int(out_channels, "QuartzNetBlock: out_channels")
        repeat = positive_int(repeat, "QuartzNetBlock: repeat")
        self.residual = bool(residual)
        if self.residual and stride != 1:
            raise ValueError(f"QuartzNetBlock: a residual block keeps the frame rate (stride 1), got stride {stride}")
        self.residual_inputs = [int(c) for c in (residual_inputs or [in_channels])] if self.residual else []
        self.convs = ModuleList([TCSConv1D(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                                           stride if i == 0 else 1, dilation, separable) for i in range(repeat)])
        self.norms = ModuleList([BatchNorm(eps=_BN_EPS) for _ in range(repeat)])
        self.residual_convs = ModuleList([Conv1D(out_channels, 1, use_bias=False) for _ in self.residual_inputs])
        self.residual_norms = ModuleList([BatchNorm(eps=_BN_EPS) for _ in self.residual_inputs])
        self.dropout = Dropout(dropout)

    def build(self, input_shape) -> None:
        out = (None, None, self.out_channels)
        build_children([(conv, (None, None, conv.in_channels)) for conv in self.convs]
                       + [(norm, out) for norm in self.norms]
                       + [(conv, (None, None, c)) for conv, c in zip(self.residual_convs, self.residual_inputs)]
                       + [(norm, out) for norm in self.residual_norms])
        self.built = True

    def output_length(self, length):
        """Frames out for ``length`` frames in."""
        for conv in self.convs:
            length = conv.output_length(length)
        return length

    def forward(self, x, residual_inputs=None) -> Tensor:
        x = as_tensor(x)
        sources = [x] if residual_inputs is None else [as_tensor(r) for r in residual_inputs]
        if self.residual and len(sources) != len(self.residual_inputs):
            raise ShapeError(f"QuartzNetBlock: expected {len(self.residual_inputs)} residual inputs (channels "
                             f"{self.residual_inputs}), got {len(sources)}")
        y = x
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            y = norm(conv(y))
            if i == last:
                for source, conv1x1, bn in zip(sources, self.residual_convs, self.residual_norms):
                    y = F.add(y, bn(conv1x1(source)))
            y = self.dropout(F.relu(y))
        return y


@register_with_arguments
class QuartzNet(Module):
    """The B x R network (module docstring) on (batch, frames, num_features) features, returning
    (batch, frames', num_classes) CTC log-probabilities, frames' = ``output_length(frames)``.

    ``prologue`` (filters, kernel, stride) is C1; ``blocks`` lists (filters, kernel) of each
    residual block B_i (already repeated: 15 entries for 15x5), each of ``repeat`` sub-blocks;
    ``epilogue`` lists (filters, kernel, dilation) of C2, C3, ...; C4 maps to ``num_classes``
    (characters + blank). ``dense_residual``: Jasper's dense residual; ``separable=False``:
    plain convolutions (Jasper)."""

    def __init__(self, num_features: int, num_classes: int, prologue: Sequence[int] = (256, 33, 2),
                 blocks: Sequence[Sequence[int]] = ((256, 33), (256, 39), (512, 51), (512, 63), (512, 75)),
                 repeat: int = 5, epilogue: Sequence[Sequence[int]] = ((512, 87, 2), (1024, 1, 1)),
                 separable: bool = True, dense_residual: bool = False, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_features = positive_int(num_features, "QuartzNet: num_features")
        self.num_classes = positive_int(num_classes, "QuartzNet: num_classes")
        if num_classes < 2:
            raise ValueError(f"QuartzNet: num_classes counts the characters and the blank, at least 2, got "
                             f"{num_classes}")
        filters, kernel, stride = (int(v) for v in prologue)
        self.prologue = QuartzNetBlock(num_features, filters, kernel, stride=stride, separable=separable,
                                       residual=False, dropout=dropout)
        channels, seen = filters, [filters]
        body = []
        for filters, kernel in ((int(f), int(k)) for f, k in blocks):
            body.append(QuartzNetBlock(channels, filters, kernel, repeat=repeat, separable=separable,
                                       residual_inputs=list(seen) if dense_residual else [channels], dropout=dropout))
            channels = filters
            seen.append(filters)
        self.blocks = ModuleList(body)
        tail = []
        for filters, kernel, dilation in ((int(f), int(k), int(d)) for f, k, d in epilogue):
            tail.append(QuartzNetBlock(channels, filters, kernel, dilation=dilation,
                                       separable=separable and kernel > 1, residual=False, dropout=dropout))
            channels = filters
        self.epilogue = ModuleList(tail)
        self.dense_residual = bool(dense_residual)
        self.classifier = Conv1D(num_classes, 1, use_bias=True)
        self.classifier_channels = channels

    def build(self, input_shape) -> None:
        build_children([(self.prologue, None)] + [(block, None) for block in self.blocks]
                       + [(layer, None) for layer in self.epilogue]
                       + [(self.classifier, (None, None, self.classifier_channels))])
        self.built = True

    def output_length(self, length):
        """Frames out for ``length`` frames in (an int or an array of lengths)."""
        for layer in [self.prologue, *self.blocks, *self.epilogue]:
            length = layer.output_length(length)
        return length

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[-1] != self.num_features:
            raise ShapeError(f"QuartzNet: expected (batch, frames, {self.num_features}) features, got shape {shape}")
        x = self.prologue(x)
        seen = [x]
        for block in self.blocks:
            x = block(x, seen if self.dense_residual else None)
            seen.append(x)
        for layer in self.epilogue:
            x = layer(x)
        return F.log_softmax(self.classifier(x), axis=-1)


def quartznet_5x5(num_classes: int = 29, num_features: int = 64, dropout: float = 0.0) -> QuartzNet:
    """QuartzNet 5x5: 5 blocks of 5 sub-blocks (kernels 33 .. 75, 256 and 512 channels);
    6.7M parameters in the paper (English: 28 characters + blank, 64 mel features)."""
    return QuartzNet(num_features, num_classes, repeat=5, dropout=dropout)


def quartznet_15x5(num_classes: int = 29, num_features: int = 64, dropout: float = 0.0) -> QuartzNet:
    """QuartzNet 15x5: each of the 5x5 model's blocks three times; 18.9M parameters in the paper."""
    blocks = [spec for spec in ((256, 33), (256, 39), (512, 51), (512, 63), (512, 75)) for _ in range(3)]
    return QuartzNet(num_features, num_classes, blocks=blocks, repeat=5, dropout=dropout)


QUARTZNET_TINY = {"prologue": (32, 11, 2), "blocks": ((32, 11), (48, 13)), "repeat": 2,
                  "epilogue": ((48, 15, 2), (64, 1, 1))}
JASPER_TINY = {**QUARTZNET_TINY, "separable": False, "dense_residual": True}


def quartznet_tiny(num_classes: int, num_features: int, dropout: float = 0.0) -> QuartzNet:
    """A small 2x2 QuartzNet (:data:`QUARTZNET_TINY`) for tests and toy data."""
    return QuartzNet(num_features, num_classes, dropout=dropout, **QUARTZNET_TINY)


def jasper_tiny(num_classes: int, num_features: int, dropout: float = 0.0) -> QuartzNet:
    """A small Jasper (plain convolutions, dense residual; :data:`JASPER_TINY`)."""
    return QuartzNet(num_features, num_classes, dropout=dropout, **JASPER_TINY)


def quartznet_ctc_loss(model: QuartzNet, features, lengths, targets, target_lengths) -> Tensor:
    """The CTC loss (blank 0, 'mean' reduction) of ``model`` on (batch, frames, features) with
    per-utterance frame ``lengths``; ``targets`` padded (batch, S) label ids in [1, classes)."""
    log_probs = model(features)
    out_lengths = np.minimum(model.output_length(np.asarray(lengths)), log_probs.shape[1])
    return F.ctc_loss(log_probs, targets, out_lengths, target_lengths, blank=0)


def greedy_transcribe(model: QuartzNet, features, alphabet: str, lengths=None) -> list[str]:
    """Greedy CTC decoding to text: id 0 is the blank, id k the character ``alphabet[k - 1]``."""
    if model.num_classes != len(alphabet) + 1:
        raise ValueError(f"greedy_transcribe: the model has {model.num_classes} classes, the alphabet of "
                         f"{len(alphabet)} characters needs {len(alphabet) + 1} (with the blank)")
    log_probs = model(features).numpy()
    frames = None if lengths is None else np.minimum(model.output_length(np.asarray(lengths)), log_probs.shape[1])
    ids = ctc_greedy_decode(log_probs, blank=0, lengths=frames)
    return ["".join(alphabet[k - 1] for k in row) for row in ids]


def word_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """WER = sum_i D(words(p_i), words(r_i)) / sum_i |words(r_i)|, D the Levenshtein distance
    over whitespace-separated words (:func:`lamina.vision.character_error_rate` over words)."""
    return character_error_rate([p.split() for p in predictions], [r.split() for r in references])
