"""RAFT's convolutional blocks (Teed & Deng 2020): the conv-norm-ReLU unit, the residual and
bottleneck blocks, the feature / context encoder (:class:`FeatureEncoder`) and the update block's
parts: the motion encoder, the convolutional GRU cells, the flow head and the convex-upsampling
mask predictor. :mod:`lamina.models.raft` assembles them into the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module

__all__ = [
    "BottleneckBlock", "ConvGRU", "FeatureEncoder", "FlowHead", "MaskPredictor", "MotionEncoder", "RecurrentBlock",
    "ResidualBlock", "UpdateBlock", "conv_norm_activation",
]

NORMS = ("batch", "instance", None)
DOWNSAMPLE = 8


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _constant(array) -> Tensor:
    """A constant tensor of the array's own dtype."""
    return Tensor(backend.xp.asarray(array), dtype=array.dtype)


def _channels(channels: int):
    return (None, None, None, int(channels))


def _build(layer: Module, channels: int) -> None:
    """Build ``layer`` for inputs of ``channels`` channels (blocks of this module ignore it)."""
    if not layer.built:
        shape = _channels(channels)
        layer.build(shape)
        layer.built = True
        if layer.build_input_shape is None:
            layer.build_input_shape = shape


def _norm_layer(norm: str | None) -> Module | None:
    if norm not in NORMS:
        raise ValueError(f"RAFT: norm must be one of {NORMS}, got {norm!r}")
    if norm == "batch":
        return nn.BatchNorm(name="1")
    if norm == "instance":
        return nn.InstanceNorm2D(name="1")
    return None


def conv_norm_activation(out_channels: int, kernel_size: int, stride: int = 1, norm: str | None = None,
                         relu: bool = True, name: str | None = None) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` as RAFT uses it: a Conv2D '0' (with bias, 'same'
    padding (k - 1) / 2), then the norm '1' if any, then a ReLU."""
    layers: list[Module] = [nn.Conv2D(out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                                      name="0")]
    norm_layer = _norm_layer(norm)
    if norm_layer is not None:
        layers.append(norm_layer)
    if relu:
        layers.append(nn.ReLU(name=str(len(layers))))
    return nn.Sequential(*layers, name=name)


class _Built(Module):
    """A block whose sub-layers' input channels are known when it is made: ``build`` builds
    each of them for its channels (listed by :meth:`_inputs`), whatever the input shape."""

    def _inputs(self) -> list[tuple[Module, int]]:
        raise NotImplementedError

    def build(self, input_shape=None) -> None:
        for layer, channels in self._inputs():
            _build(layer, channels)
        self.built = True


# -- encoders -------------------------------------------------------------------------------
class ResidualBlock(_Built):
    """relu(downsample(x) + convnormrelu2(convnormrelu1(x))), 3 x 3 convolutions (the first
    with ``stride``); ``downsample`` a 1 x 1 projection (conv and norm, no ReLU) when the
    stride is not 1, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, stride: int = 1,
                 always_project: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.convnormrelu1 = conv_norm_activation(out_channels, 3, stride, norm, name="convnormrelu1")
        self.convnormrelu2 = conv_norm_activation(out_channels, 3, 1, norm, name="convnormrelu2")
        if stride != 1 or always_project:
            self.downsample = conv_norm_activation(out_channels, 1, stride, norm, relu=False, name="downsample")

    def _inputs(self):
        projection = self._modules.get("downsample")
        return [(self.convnormrelu1, self.in_channels), (self.convnormrelu2, self.out_channels),
                *([(projection, self.in_channels)] if projection is not None else [])]

    def forward(self, x) -> Tensor:
        x = _tensor(x)
        y = self.convnormrelu2(self.convnormrelu1(x))
        projection = self._modules.get("downsample")
        return F.relu((projection(x) if projection is not None else x) + y)


class BottleneckBlock(_Built):
    """relu(downsample(x) + 1x1(3x3(1x1(x)))) with out_channels / 4 channels inside, the 3 x 3
    convolution strided; ``downsample`` as in :class:`ResidualBlock`."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, stride: int = 1,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        inner = out_channels // 4
        self.convnormrelu1 = conv_norm_activation(inner, 1, 1, norm, name="convnormrelu1")
        self.convnormrelu2 = conv_norm_activation(inner, 3, stride, norm, name="convnormrelu2")
        self.convnormrelu3 = conv_norm_activation(out_channels, 1, 1, norm, name="convnormrelu3")
        if stride != 1:
            self.downsample = conv_norm_activation(out_channels, 1, stride, norm, relu=False, name="downsample")

    def _inputs(self):
        inner = self.out_channels // 4
        projection = self._modules.get("downsample")
        return [(self.convnormrelu1, self.in_channels), (self.convnormrelu2, inner), (self.convnormrelu3, inner),
                *([(projection, self.in_channels)] if projection is not None else [])]

    def forward(self, x) -> Tensor:
        x = _tensor(x)
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        projection = self._modules.get("downsample")
        return F.relu((projection(x) if projection is not None else x) + y)


BLOCKS = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}


@register_with_arguments
class FeatureEncoder(_Built):
    """The feature (and context) encoder: a 7 x 7 stride-2 ``convnormrelu`` to layers[0]
    channels, three stages ``layer1``..``layer3`` of two blocks each (first strides
    ``strides[1:]``), a 1 x 1 ``conv`` to layers[4] channels; with the default strides it
    downsamples by 8."""

    def __init__(self, block: str = "residual", layers: Sequence[int] = (64, 64, 96, 128, 256),
                 strides: Sequence[int] = (2, 1, 2, 2), norm: str | None = "batch", in_channels: int = 3,
                 name: str | None = None):
        super().__init__(name=name)
        if len(layers) != 5 or len(strides) != 4:
            raise ValueError(f"FeatureEncoder: expected 5 layer widths and 4 strides, got layers={tuple(layers)}, "
                             f"strides={tuple(strides)}")
        if block not in BLOCKS:
            raise ValueError(f"FeatureEncoder: block must be one of {tuple(BLOCKS)}, got {block!r}")
        self.layers, self.strides, self.in_channels = tuple(int(n) for n in layers), tuple(strides), in_channels
        self.convnormrelu = conv_norm_activation(layers[0], 7, strides[0], norm, name="convnormrelu")
        for stage in range(1, 4):
            cin, cout, stride = layers[stage - 1], layers[stage], strides[stage]
            setattr(self, f"layer{stage}", nn.Sequential(BLOCKS[block](cin, cout, norm, stride, name="0"),
                                                         BLOCKS[block](cout, cout, norm, 1, name="1"),
                                                         name=f"layer{stage}"))
        self.conv = nn.Conv2D(layers[4], 1, name="conv")
        self.output_dim = self.layers[4]
        self.downsample_factor = int(np.prod(self.strides))

    def _inputs(self):
        blocks = []
        for stage in range(1, 4):
            first, second = getattr(self, f"layer{stage}")
            blocks += [(first, self.layers[stage - 1]), (second, self.layers[stage])]
        return [(self.convnormrelu, self.in_channels), *blocks, (self.conv, self.layers[3])]

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        for stage in range(1, 4):
            getattr(self, f"layer{stage}").built = True

    def forward(self, x) -> Tensor:
        x = self.convnormrelu(_tensor(x))
        return self.conv(self.layer3(self.layer2(self.layer1(x))))


# -- the update block ---------------------------------------------------------------------
@register_with_arguments
class MotionEncoder(_Built):
    """[relu(conv(concat(corr branch, flow branch))), flow]: the correlation features through
    ``convcorr1`` (1 x 1) and ``convcorr2`` (3 x 3, if two corr layers), the flow through
    ``convflow1`` (7 x 7) and ``convflow2`` (3 x 3), all with ReLU; ``out_channels`` in all."""

    def __init__(self, in_channels_corr: int, corr_layers: Sequence[int] = (256, 192),
                 flow_layers: Sequence[int] = (128, 64), out_channels: int = 128, name: str | None = None):
        super().__init__(name=name)
        if len(flow_layers) != 2 or len(corr_layers) not in (1, 2):
            raise ValueError(f"MotionEncoder: expected 1 or 2 corr_layers and 2 flow_layers, got {tuple(corr_layers)} "
                             f"and {tuple(flow_layers)}")
        self.in_channels_corr, self.out_channels = int(in_channels_corr), int(out_channels)
        self.corr_layers, self.flow_layers = tuple(corr_layers), tuple(flow_layers)
        self.convcorr1 = conv_norm_activation(corr_layers[0], 1, name="convcorr1")
        if len(corr_layers) == 2:
            self.convcorr2 = conv_norm_activation(corr_layers[1], 3, name="convcorr2")
        self.convflow1 = conv_norm_activation(flow_layers[0], 7, name="convflow1")
        self.convflow2 = conv_norm_activation(flow_layers[1], 3, name="convflow2")
        self.conv = conv_norm_activation(out_channels - 2, 3, name="conv")

    def _inputs(self):
        second = self._modules.get("convcorr2")
        return [(self.convcorr1, self.in_channels_corr), *([(second, self.corr_layers[0])] if second else []),
                (self.convflow1, 2), (self.convflow2, self.flow_layers[0]),
                (self.conv, self.corr_layers[-1] + self.flow_layers[-1])]

    def forward(self, flow, corr_features) -> Tensor:
        flow = _tensor(flow)
        corr = self.convcorr1(_tensor(corr_features))
        second = self._modules.get("convcorr2")
        corr = second(corr) if second is not None else corr
        motion = self.convflow2(self.convflow1(flow))
        return F.concat([self.conv(F.concat([corr, motion], axis=-1)), flow], axis=-1)


@register_with_arguments
class ConvGRU(_Built):
    """A convolutional GRU cell, ``gru(h, x)``:

        z = sigmoid(convz([h, x])),  r = sigmoid(convr([h, x])),
        q = tanh(convq([r h, x])),   h' = (1 - z) h + z q.
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size, padding, name: str | None = None):
        super().__init__(name=name)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        for gate in "zrq":
            setattr(self, f"conv{gate}", nn.Conv2D(hidden_size, kernel_size, padding=padding, name=f"conv{gate}"))

    def _inputs(self):
        both = self.input_size + self.hidden_size
        return [(self.convz, both), (self.convr, both), (self.convq, both)]

    def forward(self, h, x) -> Tensor:
        h, x = _tensor(h), _tensor(x)
        hx = F.concat([h, x], axis=-1)
        z = F.sigmoid(self.convz(hx))
        r = F.sigmoid(self.convr(hx))
        q = F.tanh(self.convq(F.concat([r * h, x], axis=-1)))
        return h + z * (q - h)


@register_with_arguments
class RecurrentBlock(_Built):
    """One or two :class:`ConvGRU` cells in turn (``convgru1``, ``convgru2``), each with its own
    kernel: RAFT large's separable (1 x 5) then (5 x 1) pair, RAFT small's single 3 x 3."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size=((1, 5), (5, 1)), padding=((0, 2), (2, 0)),
                 name: str | None = None):
        super().__init__(name=name)
        if len(kernel_size) != len(padding) or len(kernel_size) not in (1, 2):
            raise ValueError(f"RecurrentBlock: expected 1 or 2 kernel sizes with as many paddings, got {kernel_size} "
                             f"and {padding}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.cells = len(kernel_size)
        for i, (kernel, pad) in enumerate(zip(kernel_size, padding), start=1):
            setattr(self, f"convgru{i}", ConvGRU(input_size, hidden_size, kernel, pad, name=f"convgru{i}"))

    def _inputs(self):
        return [(getattr(self, f"convgru{i}"), 0) for i in range(1, self.cells + 1)]

    def forward(self, h, x) -> Tensor:
        for i in range(1, self.cells + 1):
            h = getattr(self, f"convgru{i}")(h, x)
        return h


@register_with_arguments
class FlowHead(_Built):
    """delta flow = conv2(relu(conv1(h))), 3 x 3 convolutions to ``hidden_size`` then 2 channels."""

    def __init__(self, in_channels: int, hidden_size: int, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.hidden_size = int(in_channels), int(hidden_size)
        self.conv1 = nn.Conv2D(hidden_size, 3, padding=1, name="conv1")
        self.conv2 = nn.Conv2D(2, 3, padding=1, name="conv2")

    def _inputs(self):
        return [(self.conv1, self.in_channels), (self.conv2, self.hidden_size)]

    def forward(self, x) -> Tensor:
        return self.conv2(F.relu(self.conv1(_tensor(x))))


@register_with_arguments(modules=("motion_encoder", "recurrent_block", "flow_head"))
class UpdateBlock(_Built):
    """``update(h, context, corr_features, flow) -> (h', delta_flow)``: the motion encoder,
    the recurrent block on [context, motion features], the flow head on h'."""

    def __init__(self, motion_encoder: MotionEncoder, recurrent_block: RecurrentBlock, flow_head: FlowHead,
                 name: str | None = None):
        super().__init__(name=name)
        self.motion_encoder, self.recurrent_block, self.flow_head = motion_encoder, recurrent_block, flow_head
        self.hidden_state_size = recurrent_block.hidden_size

    def _inputs(self):
        return [(self.motion_encoder, 0), (self.recurrent_block, 0), (self.flow_head, 0)]

    def forward(self, hidden_state, context, corr_features, flow) -> tuple[Tensor, Tensor]:
        motion = self.motion_encoder(flow, corr_features)
        hidden_state = self.recurrent_block(hidden_state, F.concat([_tensor(context), motion], axis=-1))
        return hidden_state, self.flow_head(hidden_state)


@register_with_arguments
class MaskPredictor(_Built):
    """The convex-upsampling weights: multiplier * conv(convrelu(h)), 8 * 8 * 9 channels (for
    each of the 8 x 8 fine pixels of a coarse one, a logit per coarse 3 x 3 neighbour).
    The 0.25 multiplier scales the branch's gradient, as in the original code."""

    def __init__(self, in_channels: int, hidden_size: int = 256, multiplier: float = 0.25, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.hidden_size, self.multiplier = int(in_channels), int(hidden_size), float(multiplier)
        self.convrelu = conv_norm_activation(hidden_size, 3, name="convrelu")
        self.conv = nn.Conv2D(DOWNSAMPLE * DOWNSAMPLE * 9, 1, name="conv")

    def _inputs(self):
        return [(self.convrelu, self.in_channels), (self.conv, self.hidden_size)]

    def forward(self, x) -> Tensor:
        return self.conv(self.convrelu(_tensor(x))) * self.multiplier
