"""RAFT (Teed & Deng 2020, "Recurrent All-Pairs Field Transforms for Optical Flow") in
torchvision's layout, on NHWC images.

Given two images I1, I2 of shape (N, H, W, 3), H and W multiples of 8:

1. a feature encoder g maps both to (N, H/8, W/8, D) maps f1, f2; a context encoder of I1
   gives the initial hidden state h = tanh(part 1) and the context c = relu(part 2);
2. the all-pairs correlation volume C[n, i, j, k, l] = <f1[n, i, j], f2[n, k, l]> / sqrt(D)
   is average-pooled over (k, l) by 2, 4, 8 ... into a pyramid of ``num_levels`` levels;
3. starting from the flow 0 (coordinates x1 = x0, the pixel grid), every iteration looks
   the pyramid up around x1 (level l at x1 / 2^l + d for the (2 r + 1)^2 offsets d with
   |d|_inf <= r, bilinearly), encodes the motion (correlation features and current flow),
   updates h with a convolutional GRU on [context, motion] and adds the flow head's
   delta to x1; the flow x1 - x0 is upsampled by 8 either convexly (each fine pixel a
   softmax-weighted mix of its coarse 3 x 3 neighbourhood, weights from a mask predictor;
   RAFT large) or bilinearly (RAFT small). x1 is detached before each lookup.

``model(image1, image2, num_flow_updates=12)`` returns the list of the upsampled flows
(N, H, W, 2), (dx, dy) in pixels, one per iteration. Names and layouts follow
torchvision's ``raft_large`` (5,257,536 parameters) and ``raft_small`` (990,162), so
:func:`lamina.models.load_torchvision_state_dict` loads their state dicts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish
from lamina.models.constructor_config import register_with_arguments
from lamina.nn.module import Module

__all__ = [
    "RAFT", "BottleneckBlock", "ConvGRU", "CorrBlock", "FeatureEncoder", "FlowHead", "MaskPredictor",
    "MotionEncoder", "RecurrentBlock", "ResidualBlock", "UpdateBlock", "conv_norm_activation",
    "correlation_pyramid", "correlation_volume", "index_pyramid", "make_coords_grid", "raft", "raft_large",
    "raft_small", "upsample_flow",
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


# -- correlation ----------------------------------------------------------------------------
def correlation_volume(fmap1, fmap2) -> Tensor:
    """C[n, i, j, k, l] = <f1[n, i, j], f2[n, k, l]> / sqrt(D) of two (N, h, w, D) maps, as
    (N h w, h, w, 1): one single-channel 'image' over (k, l) per source pixel (n, i, j)."""
    fmap1, fmap2 = _tensor(fmap1), _tensor(fmap2)
    if fmap1.ndim != 4 or tuple(fmap1.shape) != tuple(fmap2.shape):
        raise ShapeError(f"correlation_volume: expected two (N, h, w, D) feature maps of one shape, got "
                         f"{tuple(fmap1.shape)} and {tuple(fmap2.shape)}")
    n, h, w, d = fmap1.shape
    rows1 = F.reshape(fmap1, n, h * w, d)
    rows2 = F.reshape(fmap2, n, h * w, d)
    corr = F.matmul(rows1, F.transpose(rows2, 0, 2, 1)) * (1.0 / float(np.sqrt(d)))
    return F.reshape(corr, n * h * w, h, w, 1)


def correlation_pyramid(volume, num_levels: int) -> list[Tensor]:
    """The volume and its 2 x 2 average-pooled versions over the target pixels: ``num_levels``
    levels, level l of size (h / 2^l, w / 2^l), each at least 2 x 2 (the lookup's aligned
    corners divide by size - 1)."""
    levels = [_tensor(volume)]
    for _ in range(num_levels - 1):
        if min(levels[-1].shape[1:3]) < 4:
            raise ShapeError(f"correlation_pyramid: level {len(levels) - 1} of shape {tuple(levels[-1].shape)} is "
                             f"too small to pool into a level of at least 2 x 2 (num_levels={num_levels}); use "
                             "fewer levels or larger images")
        levels.append(F.avg_pool2d(levels[-1], 2, 2))
    return levels


def _offsets(radius: int, dtype) -> np.ndarray:
    """(1, 2r + 1, 2r + 1, 2) with [0, a, b] = (a - r, b - r): the x offset runs along the
    first window axis and the y offset along the second, as torchvision orders them."""
    side = np.arange(-radius, radius + 1, dtype=dtype)
    dx, dy = np.meshgrid(side, side, indexing="ij")
    return np.stack([dx, dy], axis=-1)[None]


def index_pyramid(pyramid: Sequence[Tensor], coords, radius: int) -> Tensor:
    """The correlation features at the (N, h, w, 2) pixel coordinates ``coords`` (x, y):
    every level l read bilinearly (zeros outside) at coords / 2^l + d for the (2r + 1)^2
    offsets |d|_inf <= r, as (N, h, w, levels (2r + 1)^2), levels outermost."""
    coords = _tensor(coords)
    n, h, w, _ = coords.shape
    if pyramid[0].shape[0] != n * h * w:
        raise ShapeError(f"index_pyramid: coordinates of shape {tuple(coords.shape)} do not match a pyramid with "
                         f"{pyramid[0].shape[0]} source pixels (expected N h w)")
    side = 2 * radius + 1
    offsets = _constant(_offsets(radius, coords.dtype))
    centres = F.reshape(coords, n * h * w, 1, 1, 2)
    features = []
    for level, volume in enumerate(pyramid):
        rows, cols = volume.shape[1:3]
        if min(rows, cols) < 2:
            raise ShapeError(f"index_pyramid: level {level} has shape {tuple(volume.shape)}; bilinear lookup with "
                             "aligned corners needs at least 2 x 2 target pixels (use fewer levels)")
        # absolute pixels -> grid_sample's [-1, 1] with aligned corners: 2 x / (size - 1) - 1
        scale = np.array([2.0 / (cols - 1), 2.0 / (rows - 1)], dtype=coords.dtype) / 2.0 ** level
        grid = (centres * _constant(scale) + offsets * _constant(scale * 2.0 ** level)) - 1.0
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        features.append(F.reshape(sampled, n, h, w, side * side))
    return F.concat(features, axis=-1)


@register_with_arguments
class CorrBlock(Module):
    """The correlation block: ``build_pyramid(fmap1, fmap2)`` keeps the pyramid of
    ``num_levels`` levels, ``index_pyramid(coords)`` reads it around the coordinates with
    radius ``radius``; ``out_channels`` = levels (2r + 1)^2. No weights."""

    def __init__(self, num_levels: int = 4, radius: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.num_levels, self.radius = int(num_levels), int(radius)
        self.out_channels = self.num_levels * (2 * self.radius + 1) ** 2
        self.corr_pyramid: list[Tensor] = []

    def build(self, input_shape=None) -> None:
        self.built = True

    def build_pyramid(self, fmap1, fmap2) -> list[Tensor]:
        self.corr_pyramid = correlation_pyramid(correlation_volume(fmap1, fmap2), self.num_levels)
        return self.corr_pyramid

    def index_pyramid(self, centroids_coords) -> Tensor:
        if not self.corr_pyramid:
            raise RuntimeError(f"{self._label()}: call build_pyramid before index_pyramid")
        return index_pyramid(self.corr_pyramid, centroids_coords, self.radius)

    def forward(self, fmap1, fmap2, centroids_coords) -> Tensor:
        self.build_pyramid(fmap1, fmap2)
        return self.index_pyramid(centroids_coords)


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


# -- coordinates and upsampling --------------------------------------------------------------
def make_coords_grid(batch_size: int, h: int, w: int, dtype=None):
    """The (batch_size, h, w, 2) pixel grid, [n, i, j] = (j, i): (x, y) of every pixel."""
    dtype = backend.get_default_dtype() if dtype is None else dtype
    xs, ys = np.meshgrid(np.arange(w, dtype=dtype), np.arange(h, dtype=dtype), indexing="xy")
    grid = np.stack([xs, ys], axis=-1)[None]
    return backend.xp.asarray(np.repeat(grid, batch_size, axis=0))


def upsample_flow(flow, up_mask=None) -> Tensor:
    """A (N, h, w, 2) flow at 1/8 resolution to (N, 8h, 8w, 2) full-resolution pixels.

    Without a mask: 8 x bilinear interpolation with aligned corners. With a (N, h, w, 576)
    mask: fine pixel (a, b) of coarse pixel (i, j) is sum_k softmax_k(mask[i, j, k, a, b])
    8 flow(neighbour k), over the 3 x 3 neighbours k of (i, j) (zero outside the map);
    the mask's channels are ordered (k, a, b)."""
    flow = _tensor(flow)
    if flow.ndim != 4 or flow.shape[3] != 2:
        raise ShapeError(f"upsample_flow: expected a flow of shape (N, h, w, 2), got {tuple(flow.shape)}")
    n, h, w, _ = flow.shape
    s = DOWNSAMPLE
    if up_mask is None:
        return F.interpolate(flow, size=(s * h, s * w), mode="bilinear", align_corners=True) * float(s)
    up_mask = _tensor(up_mask)
    if tuple(up_mask.shape) != (n, h, w, 9 * s * s):
        raise ShapeError(f"upsample_flow: expected a mask of shape {(n, h, w, 9 * s * s)} for a flow of shape "
                         f"{tuple(flow.shape)}, got {tuple(up_mask.shape)}")
    weights = F.softmax(F.reshape(up_mask, n, h, w, 9, s, s, 1), axis=3)
    neighbours = F.reshape(F.unfold(flow * float(s), 3, padding=1), n, h, w, 9, 1, 1, 2)
    fine = F.sum(weights * neighbours, axis=3)                                  # (n, h, w, s, s, 2)
    return F.reshape(F.transpose(fine, 0, 1, 3, 2, 4, 5), n, s * h, s * w, 2)


# -- the model ------------------------------------------------------------------------------
@register_with_arguments(modules=("feature_encoder", "context_encoder", "corr_block", "update_block", "mask_predictor"))
class RAFT(Module):
    """RAFT (module docstring): ``feature_encoder``, ``context_encoder``, ``corr_block``,
    ``update_block`` and an optional ``mask_predictor`` (convex upsampling; bilinear
    without). ``model(image1, image2, num_flow_updates=12)`` -> list of (N, H, W, 2) flows."""

    def __init__(self, feature_encoder: FeatureEncoder, context_encoder: FeatureEncoder, corr_block: CorrBlock,
                 update_block: UpdateBlock, mask_predictor: MaskPredictor | None = None, name: str | None = None):
        super().__init__(name=name)
        self.feature_encoder, self.context_encoder = feature_encoder, context_encoder
        self.corr_block, self.update_block = corr_block, update_block
        if mask_predictor is not None:
            self.mask_predictor = mask_predictor
        if context_encoder.output_dim <= update_block.hidden_state_size:
            raise ValueError(f"RAFT: the context encoder gives {context_encoder.output_dim} channels; it must give "
                             f"more than the hidden state's {update_block.hidden_state_size}")

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            channels = layer.in_channels if isinstance(layer, FeatureEncoder) else 0
            _build(layer, channels)
        self.built = True

    def _check_images(self, image1: Tensor, image2: Tensor) -> None:
        if image1.ndim != 4 or tuple(image1.shape) != tuple(image2.shape):
            raise ShapeError(f"{self._label()}: expected two (N, H, W, C) images of one shape, got "
                             f"{tuple(image1.shape)} and {tuple(image2.shape)}")
        h, w = image1.shape[1:3]
        if h % DOWNSAMPLE or w % DOWNSAMPLE:
            raise ShapeError(f"{self._label()}: the image height and width must be multiples of {DOWNSAMPLE}, got "
                             f"{h} x {w}")

    def forward(self, image1, image2, num_flow_updates: int = 12) -> list[Tensor]:
        image1, image2 = _tensor(image1), _tensor(image2)
        self._check_images(image1, image2)
        n, h, w = image1.shape[0], image1.shape[1] // DOWNSAMPLE, image1.shape[2] // DOWNSAMPLE
        fmap1, fmap2 = F.split(self.feature_encoder(F.concat([image1, image2], axis=0)), [n, n], axis=0)
        if tuple(fmap1.shape[1:3]) != (h, w):
            raise ShapeError(f"{self._label()}: the feature encoder gives maps of shape {tuple(fmap1.shape)}; "
                             f"expected a downsampling by {DOWNSAMPLE}")
        self.corr_block.build_pyramid(fmap1, fmap2)
        hidden_size = self.update_block.hidden_state_size
        context_out = self.context_encoder(image1)
        hidden, context = F.split(context_out, [hidden_size, context_out.shape[3] - hidden_size], axis=-1)
        hidden, context = F.tanh(hidden), F.relu(context)
        coords0 = _constant(make_coords_grid(n, h, w, image1.dtype))
        coords1 = coords0
        mask_predictor = self._modules.get("mask_predictor")
        predictions = []
        for _ in range(int(num_flow_updates)):
            coords1 = coords1.detach()
            corr_features = self.corr_block.index_pyramid(coords1)
            hidden, delta = self.update_block(hidden, context, corr_features, coords1 - coords0)
            coords1 = coords1 + delta
            up_mask = mask_predictor(hidden) if mask_predictor is not None else None
            predictions.append(upsample_flow(coords1 - coords0, up_mask))
        return predictions


def raft(feature_layers: Sequence[int] = (64, 64, 96, 128, 256), feature_block: str = "residual",
         feature_norm: str | None = "instance", context_layers: Sequence[int] = (64, 64, 96, 128, 256),
         context_block: str = "residual", context_norm: str | None = "batch", num_levels: int = 4, radius: int = 4,
         motion_corr_layers: Sequence[int] = (256, 192), motion_flow_layers: Sequence[int] = (128, 64),
         motion_out_channels: int = 128, hidden_size: int = 128, gru_kernels=((1, 5), (5, 1)),
         gru_paddings=((0, 2), (2, 0)), flow_head_hidden_size: int = 256, mask_hidden_size: int | None = 256,
         input_shape: tuple[int, int, int] = (368, 496, 3)) -> RAFT:
    """A RAFT of any size (unbuilt; the defaults are RAFT large's). ``mask_hidden_size`` None
    upsamples bilinearly instead of convexly."""
    input_shape = check_input(input_shape, "raft")
    feature_encoder = FeatureEncoder(feature_block, feature_layers, norm=feature_norm, in_channels=input_shape[2],
                                     name="feature_encoder")
    context_encoder = FeatureEncoder(context_block, context_layers, norm=context_norm, in_channels=input_shape[2],
                                     name="context_encoder")
    corr_block = CorrBlock(num_levels, radius, name="corr_block")
    motion_encoder = MotionEncoder(corr_block.out_channels, motion_corr_layers, motion_flow_layers,
                                   motion_out_channels, name="motion_encoder")
    recurrent_block = RecurrentBlock(motion_out_channels + context_layers[-1] - hidden_size, hidden_size,
                                     gru_kernels, gru_paddings, name="recurrent_block")
    flow_head = FlowHead(hidden_size, flow_head_hidden_size, name="flow_head")
    update_block = UpdateBlock(motion_encoder, recurrent_block, flow_head, name="update_block")
    mask_predictor = None if mask_hidden_size is None else MaskPredictor(hidden_size, mask_hidden_size,
                                                                         name="mask_predictor")
    model = RAFT(feature_encoder, context_encoder, corr_block, update_block, mask_predictor, name="raft")
    return finish(model, input_shape)


def raft_large(input_shape: tuple[int, int, int] = (368, 496, 3)) -> RAFT:
    """torchvision's ``raft_large`` (unbuilt): residual encoders (instance norm for the
    features, batch norm for the context), 4 levels of radius 4, separable GRUs, convex
    upsampling; 5,257,536 parameters."""
    return raft(input_shape=input_shape)


def raft_small(input_shape: tuple[int, int, int] = (368, 496, 3)) -> RAFT:
    """torchvision's ``raft_small`` (unbuilt): bottleneck encoders (instance norm for the
    features, none for the context), 4 levels of radius 3, one 3 x 3 GRU, bilinear
    upsampling; 990,162 parameters."""
    return raft(feature_layers=(32, 32, 64, 96, 128), feature_block="bottleneck", feature_norm="instance",
                context_layers=(32, 32, 64, 96, 160), context_block="bottleneck", context_norm=None, num_levels=4,
                radius=3, motion_corr_layers=(96,), motion_flow_layers=(64, 32), motion_out_channels=82,
                hidden_size=96, gru_kernels=(3,), gru_paddings=(1,), flow_head_hidden_size=128,
                mask_hidden_size=None, input_shape=input_shape)
