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

The blocks are in :mod:`lamina.models.raft_blocks` and the correlation in
:mod:`lamina.models.raft_correlation`; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish
from lamina.models.raft_blocks import (  # noqa: F401  (moved there, importable from here too)
    BLOCKS,
    DOWNSAMPLE,
    NORMS,
    BottleneckBlock,
    ConvGRU,
    FeatureEncoder,
    FlowHead,
    MaskPredictor,
    MotionEncoder,
    RecurrentBlock,
    ResidualBlock,
    UpdateBlock,
    _build,
    _Built,
    _channels,
    _constant,
    _norm_layer,
    _tensor,
    conv_norm_activation,
)
from lamina.models.raft_correlation import (  # noqa: F401  (moved there, importable from here too)
    CorrBlock,
    _offsets,
    correlation_pyramid,
    correlation_volume,
    index_pyramid,
)
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module

__all__ = [
    "RAFT", "BottleneckBlock", "ConvGRU", "CorrBlock", "FeatureEncoder", "FlowHead", "MaskPredictor",
    "MotionEncoder", "RecurrentBlock", "ResidualBlock", "UpdateBlock", "conv_norm_activation",
    "correlation_pyramid", "correlation_volume", "index_pyramid", "make_coords_grid", "raft", "raft_large",
    "raft_small", "upsample_flow",
]


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
