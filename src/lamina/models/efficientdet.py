"""EfficientDet (Tan, Pang & Le 2020, "EfficientDet: Scalable and Efficient Object Detection").

A backbone gives maps C3 .. C5 (strides 8, 16, 32); :class:`BiFPN` projects them to
``channels`` (1x1 conv + BN), adds P6 = max_pool(proj(C5)) and P7 = max_pool(P6) (3x3 max pools
of stride 2, padding 1) and runs D :class:`BiFPNLayer` s. Each layer over levels P3 .. P7 fuses
top-down, then bottom-up:

    P_l^td  = conv(fuse(P_l^in, up(P_(l+1)^td)))                    (l = 6 .. 4; P7^td = P7^in)
    P3^out  = conv(fuse(P3^in, up(P4^td)))
    P_l^out = conv(fuse(P_l^in, P_l^td, down(P_(l-1)^out)))        (l = 4 .. 6)
    P7^out  = conv(fuse(P7^in, down(P6^out)))

with nearest upsampling ``up`` to the finer map's size, 3x3/2 max pooling ``down``, ``conv`` a
depthwise-separable 3x3 conv + BN + swish, and the fast normalised fusion

    fuse(I_1 .. I_k) = sum_i w_i / (eps + sum_j w_j) I_i,   w_i = ReLU(v_i),  eps = 1e-4,

v one learned vector per node (ones at first). As in the reference code, the first layer's
bottom-up nodes of P4 and P5 take their P_l^in from second projections of C4 and C5.

The class and box nets are shared across levels: ``head_layers`` x (separable conv + BN +
swish), the BN per level as in the paper, then a separable conv to A C logits (prior bias, as
RetinaNet's) or A 4 box offsets. Anchors, matching, the focal loss, the box loss (smooth-L1 by
default, the paper's Huber loss) and the predictions in evaluation mode are
:class:`~lamina.models.RetinaNet`'s.

``efficientdet_d0``: EfficientNet-B0 stages 3, 5, 7 (40, 112, 320 channels), 64 BiFPN channels,
3 BiFPN layers, 3 head layers, 512x512 input, anchors 4 x stride times 2^(0, 1/3, 2/3) with
ratios 0.5, 1, 2 (RetinaNet's). With 90 classes it has 3,880,067 parameters (the paper's 3.9M;
the count of the Keras implementation in the PAZ library, weights without the batch norms'
running statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish
from lamina.models.efficientnet import EFFICIENTNET_STAGES, efficientnet
from lamina.models.mobilenet_v2 import make_divisible
from lamina.models.retinanet import RetinaNet, flatten_level, prior_bias, retinanet_anchor_sizes
from lamina.nn import init
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["BiFPN", "BiFPNLayer", "EfficientDet", "EfficientDetHead", "EfficientNetFeatures",
           "efficientdet_d0", "efficientdet_tiny", "fast_normalized_fusion"]

FUSION_EPS = 1e-4
BN_MOMENTUM, BN_EPS = 0.99, 1e-3     # the paper's batch norm decay and epsilon


def fast_normalized_fusion(inputs: Sequence[Tensor], weights: Tensor, eps: float = FUSION_EPS) -> Tensor:
    """sum_i w_i / (eps + sum_j w_j) inputs_i with w = ReLU(``weights``), one weight per input."""
    if weights.shape != (len(inputs),):
        raise ShapeError(f"fast_normalized_fusion: got {len(inputs)} inputs and weights of shape {weights.shape}; "
                         f"expected one weight per input")
    w = F.relu(weights)
    normalized = w / (w.sum() + eps)
    out = inputs[0] * normalized[0]
    for i in range(1, len(inputs)):
        out = out + inputs[i] * normalized[i]
    return out


def _channels(channels: int) -> tuple:
    return (None, None, None, int(channels))


def _separable_conv(channels: int, out_channels: int | None = None, name: str | None = None) -> nn.Sequential:
    """depthwise 3x3 (no bias) then pointwise 1x1 (with bias): keys '0', '1'."""
    out_channels = channels if out_channels is None else out_channels
    return nn.Sequential(nn.Conv2D(channels, 3, padding=1, groups=channels, use_bias=False, name="0"),
                         nn.Conv2D(out_channels, 1, name="1"), name=name)


def _norm(momentum: float, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=momentum, eps=BN_EPS, name=name)


def _fusion_node(channels: int, momentum: float, name: str) -> nn.Sequential:
    """What follows a fusion: separable conv ``conv``, BN ``bn``, swish ``act``."""
    return nn.Sequential(_separable_conv(channels, name="conv"), _norm(momentum, "bn"), nn.SiLU(name="act"),
                         name=name)


def _projection(channels: int, momentum: float, name: str) -> nn.Sequential:
    """1x1 conv (with bias) + BN: keys '0', '1'."""
    return nn.Sequential(nn.Conv2D(channels, 1, name="0"), _norm(momentum, "1"), name=name)


def downsample(x: Tensor) -> Tensor:
    """3x3 max pooling of stride 2 and padding 1: (N, H, W, C) -> (N, ceil(H/2), ceil(W/2), C)."""
    return F.max_pool2d(x, 3, stride=2, padding=1)


@register_with_arguments
class BiFPNLayer(Module):
    """One BiFPN layer over ``num_levels`` maps of ``channels`` (module docstring):
    ``forward(features)`` takes the list P3 .. P_L (finest first, each level half its finer
    neighbour's size, rounded up) and gives the fused list. Sub-layers ``top_down.i`` /
    ``bottom_up.i`` (separable conv ``conv``, BN ``bn``) and fusion weights
    ``top_down_weights_i`` / ``bottom_up_weights_i``. ``momentum``: the BNs' (lamina's
    convention: 0.99 keeps 99% of the running statistics at each step)."""

    def __init__(self, channels: int, num_levels: int = 5, eps: float = FUSION_EPS, momentum: float = BN_MOMENTUM,
                 name: str | None = None):
        super().__init__(name=name)
        if int(num_levels) < 2 or int(channels) < 1:
            raise ValueError(f"BiFPNLayer: need channels >= 1 and num_levels >= 2, got {channels!r}, {num_levels!r}")
        self.channels, self.num_levels, self.eps = int(channels), int(num_levels), float(eps)
        # top-down nodes for levels L-2 .. 0, bottom-up nodes for levels 1 .. L-1
        self.top_down = nn.ModuleList(_fusion_node(self.channels, momentum, str(i)) for i in range(num_levels - 1))
        self.bottom_up = nn.ModuleList(_fusion_node(self.channels, momentum, str(i)) for i in range(num_levels - 1))

    def _input_counts(self) -> tuple[list[int], list[int]]:
        return [2] * (self.num_levels - 1), [3] * (self.num_levels - 2) + [2]

    def build(self, input_shape=None) -> None:
        for nodes in (self.top_down, self.bottom_up):
            for block in nodes:
                block.build(_channels(self.channels))
                block.built = True
        top, bottom = self._input_counts()
        dtype = backend.get_default_dtype()
        for kind, counts in (("top_down", top), ("bottom_up", bottom)):
            for i, count in enumerate(counts):
                self.add_parameter(f"{kind}_weights_{i}", backend.xp.ones((count,), dtype=dtype))
        self.built = True

    def _check(self, features) -> list[Tensor]:
        maps = [as_tensor(f) for f in features]
        if len(maps) != self.num_levels:
            raise ShapeError(f"{self._label()}: got {len(maps)} maps; expected {self.num_levels} levels")
        for finer, x in zip([None] + maps, maps):
            if x.ndim != 4 or x.shape[-1] != self.channels:
                raise input_error(self, x, f"a list of NHWC maps with {self.channels} channels")
            if finer is not None and x.shape[1:3] != downsample_size(finer.shape[1:3]):
                raise ShapeError(f"{self._label()}: a level of size {x.shape[1:3]} follows one of {finer.shape[1:3]}; "
                                 f"each level must be half its finer neighbour, rounded up")
        return maps

    def forward(self, features, bottom_up_inputs=None) -> list[Tensor]:
        """``bottom_up_inputs``: maps that replace ``features`` on the bottom-up path (None
        entries keep them): the first layer's second projections of the backbone maps."""
        maps = self._check(features)
        lateral = list(maps) if bottom_up_inputs is None else [
            m if b is None else as_tensor(b) for m, b in zip(maps, bottom_up_inputs)]
        last = self.num_levels - 1
        top_down = [None] * last + [maps[last]]
        for level in range(last - 1, -1, -1):
            up = F.interpolate(top_down[level + 1], size=tuple(maps[level].shape[1:3]), mode="nearest")
            weights = getattr(self, f"top_down_weights_{level}")
            top_down[level] = self.top_down[level](fast_normalized_fusion([maps[level], up], weights, self.eps))
        outputs = [top_down[0]]
        for level in range(1, self.num_levels):
            inputs = [lateral[level]] + ([top_down[level]] if level < last else []) + [downsample(outputs[-1])]
            weights = getattr(self, f"bottom_up_weights_{level - 1}")
            outputs.append(self.bottom_up[level - 1](fast_normalized_fusion(inputs, weights, self.eps)))
        return outputs


def downsample_size(size) -> tuple[int, int]:
    return tuple((int(s) + 1) // 2 for s in size)


@register_with_arguments
class BiFPN(Module):
    """The input projections and ``num_layers`` :class:`BiFPNLayer` s (module docstring):
    ``forward(features)`` takes the backbone's maps (a list, finest first, or a dict in that
    order) of ``in_channels_list`` channels and gives the dict '0', '1', ... of the
    ``num_levels`` output maps P3 .. P7 of ``channels`` each. ``projections.i`` (1x1 conv + BN)
    map the inputs, ``extra`` (1x1 conv + BN) the last input before the first extra level's
    max pooling; the next extra levels pool the previous one. As in the reference code, the
    first layer's bottom-up nodes take second projections ``bottom_up_projections.i`` of the
    inputs 1, 2, ... (C4, C5) that have a top-down node too."""

    def __init__(self, in_channels_list: Sequence[int], channels: int = 64, num_layers: int = 3,
                 num_levels: int = 5, momentum: float = BN_MOMENTUM, name: str | None = None):
        super().__init__(name=name)
        self.in_channels_list = [int(c) for c in in_channels_list]
        self.channels, self.num_layers, self.num_levels = int(channels), int(num_layers), int(num_levels)
        if not self.in_channels_list or self.num_levels < len(self.in_channels_list) or self.num_layers < 1:
            raise ValueError(f"BiFPN: need at least one input, num_levels >= the inputs ({in_channels_list!r}) and "
                             f"num_layers >= 1, got num_levels={num_levels!r}, num_layers={num_layers!r}")
        inputs = range(len(self.in_channels_list))
        self.projections = nn.ModuleList(_projection(self.channels, momentum, str(i)) for i in inputs)
        self.bottom_up_projections = nn.ModuleList(_projection(self.channels, momentum, str(i))
                                                   for i in range(len(self._bottom_up_levels())))
        if self.num_levels > len(self.in_channels_list):
            self.extra = _projection(self.channels, momentum, "extra")
        self.layers = nn.ModuleList(BiFPNLayer(self.channels, self.num_levels, momentum=momentum, name=str(i))
                                    for i in range(self.num_layers))

    def _bottom_up_levels(self) -> list[int]:
        return list(range(1, min(len(self.in_channels_list), self.num_levels - 1)))

    def build(self, input_shape=None) -> None:
        second = [self.in_channels_list[level] for level in self._bottom_up_levels()]
        for blocks, channels_list in ((self.projections, self.in_channels_list), (self.bottom_up_projections, second)):
            for block, channels in zip(blocks, channels_list):
                block.build(_channels(channels))
                block.built = True
        if "extra" in self._modules:
            self.extra.build(_channels(self.in_channels_list[-1]))
            self.extra.built = True
        for layer in self.layers:
            layer.build(None)
            layer.built = True
        self.built = True

    def forward(self, features) -> dict[str, Tensor]:
        maps = [as_tensor(f) for f in (features.values() if isinstance(features, Mapping) else features)]
        if len(maps) != len(self.in_channels_list):
            raise ShapeError(f"{self._label()}: got {len(maps)} maps; expected {len(self.in_channels_list)} "
                             f"(in_channels_list={self.in_channels_list})")
        for x, channels in zip(maps, self.in_channels_list):
            if x.ndim != 4 or x.shape[-1] != channels:
                raise input_error(self, x, f"NHWC maps with channels {self.in_channels_list}")
        levels = [block(x) for block, x in zip(self.projections, maps)]
        if self.num_levels > len(maps):
            levels.append(downsample(self.extra(maps[-1])))
        while len(levels) < self.num_levels:
            levels.append(downsample(levels[-1]))
        bottom_up = [None] * self.num_levels
        for block, level in zip(self.bottom_up_projections, self._bottom_up_levels()):
            bottom_up[level] = block(maps[level])
        levels = self.layers[0](levels, bottom_up)
        for layer in list(self.layers)[1:]:
            levels = layer(levels)
        return {str(i): x for i, x in enumerate(levels)}


@register_with_arguments
class EfficientDetHead(Module):
    """The class net and the box net (module docstring) on ``num_levels`` maps of ``channels``:
    ``forward(features)`` gives {'cls_logits': (N, sum H W A, C), 'bbox_regression':
    (N, sum H W A, 4)} as :class:`~lamina.models.RetinaNetHead`. Shared separable convs
    ``class_net.convs.j`` / ``box_net.convs.j``, per-level BNs ``class_net.norms.l.j``, output
    separable convs ``class_net.output`` / ``box_net.output``."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, num_layers: int = 3,
                 num_levels: int = 5, prior_probability: float = 0.01, momentum: float = BN_MOMENTUM,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels, self.num_anchors, self.num_classes = int(channels), int(num_anchors), int(num_classes)
        self.num_layers, self.num_levels = int(num_layers), int(num_levels)
        self.class_net = self._net(num_anchors * num_classes, prior_bias(prior_probability), momentum, "class_net")
        self.box_net = self._net(num_anchors * 4, 0.0, momentum, "box_net")

    def _net(self, outputs: int, bias: float, momentum: float, name: str) -> Module:
        net = Module(name=name)
        net.convs = nn.ModuleList(_separable_conv(self.channels, name=str(j)) for j in range(self.num_layers))
        net.norms = nn.ModuleList(nn.ModuleList(_norm(momentum, str(j)) for j in range(self.num_layers))
                                  for _ in range(self.num_levels))
        net.output = nn.Sequential(
            nn.Conv2D(self.channels, 3, padding=1, groups=self.channels, use_bias=False, name="0"),
            nn.Conv2D(outputs, 1, bias_init=init.constant(bias), name="1"), name="output")
        return net

    def build(self, input_shape=None) -> None:
        for net in (self.class_net, self.box_net):
            for block in [*net.convs, *[bn for level in net.norms for bn in level], net.output]:
                block.build(_channels(self.channels))
                block.built = True
            net.built = True
        self.built = True

    def _run(self, net: Module, features: list[Tensor], values: int) -> Tensor:
        outs = []
        for level, x in enumerate(features):
            for conv, norm in zip(net.convs, net.norms[level]):
                x = F.silu(norm(conv(x)))
            outs.append(flatten_level(net.output(x), values))
        return F.concat(outs, axis=1)

    def forward(self, features) -> dict[str, Tensor]:
        maps = [as_tensor(f) for f in features]
        if len(maps) != self.num_levels:
            raise ShapeError(f"{self._label()}: got {len(maps)} maps; expected {self.num_levels} levels")
        for x in maps:
            if x.ndim != 4 or x.shape[-1] != self.channels:
                raise input_error(self, x, f"a list of NHWC maps with {self.channels} channels")
        return {"cls_logits": self._run(self.class_net, maps, self.num_classes),
                "bbox_regression": self._run(self.box_net, maps, 4)}


def _stage_channels(width_mult: float) -> list[int]:
    return [make_divisible(stage[4] * width_mult) for stage in EFFICIENTNET_STAGES]


@register_with_arguments
class EfficientNetFeatures(Module):
    """The EfficientNet stem and stages 1 .. max(``returned_stages``) (torchvision's
    ``features.0`` .. ``features.k``, see :func:`~lamina.models.efficientnet`), giving the list of
    the ``returned_stages``' maps; ``out_channels_list`` their channels. Stages 3, 5, 7 are
    EfficientDet's C3, C4, C5 (strides 8, 16, 32)."""

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, returned_stages: Sequence[int] = (3, 5, 7),
                 stochastic_depth_prob: float = 0.0, momentum: float = BN_MOMENTUM, name: str | None = None):
        super().__init__(name=name)
        self.returned_stages = [int(s) for s in returned_stages]
        if not self.returned_stages or self.returned_stages != sorted(set(self.returned_stages)) \
                or not 1 <= self.returned_stages[0] <= self.returned_stages[-1] <= len(EFFICIENTNET_STAGES):
            raise ValueError(f"EfficientNetFeatures: returned_stages must be increasing stages in 1..7, got "
                             f"{returned_stages!r}")
        network = efficientnet(width_mult, depth_mult, stochastic_depth_prob=stochastic_depth_prob, eps=BN_EPS,
                               momentum=momentum)
        stages = list(network._modules["features"].children())[:self.returned_stages[-1] + 1]
        self.features = nn.Sequential(*stages, name="features")
        self.out_channels_list = [_stage_channels(width_mult)[s - 1] for s in self.returned_stages]

    def forward(self, images) -> list[Tensor]:
        x, maps = as_tensor(images), []
        for index, stage in enumerate(self.features.children()):
            x = stage(x)
            if index in self.returned_stages:
                maps.append(x)
        return maps


@register_layer
class EfficientDet(RetinaNet):
    """EfficientDet (module docstring): ``backbone`` gives a list (or dict) of NHWC maps C3 ..
    C5 with ``in_channels_list`` channels (by default ``backbone.out_channels_list``); a
    :class:`BiFPN` (``fpn_channels``, ``fpn_layers``) on ``num_levels`` levels and an
    :class:`EfficientDetHead` (``head_layers``). The other arguments, the training losses
    ('classification', 'bbox_regression') and the evaluation output are
    :class:`~lamina.models.RetinaNet`'s; the box loss defaults to smooth-L1 with beta 0.1."""

    module_options = ("backbone",)

    def __init__(self, backbone: Module, num_classes: int, fpn_channels: int = 64, fpn_layers: int = 3,
                 head_layers: int = 3, in_channels_list: Sequence[int] | None = None, num_levels: int = 5,
                 anchor_sizes=None, aspect_ratios=None, image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.4, topk_candidates: int = 1000, box_loss: str = "smooth_l1",
                 smooth_l1_beta: float = 0.1, prior_probability: float = 0.01, bn_momentum: float = BN_MOMENTUM,
                 name: str | None = None):
        channels = list(getattr(backbone, "out_channels_list", []) if in_channels_list is None else in_channels_list)
        if not channels:
            raise ValueError("EfficientDet: give in_channels_list (the backbone has no out_channels_list)")
        anchor_sizes = retinanet_anchor_sizes() if anchor_sizes is None else anchor_sizes
        aspect_ratios = [[0.5, 1.0, 2.0]] * len(anchor_sizes) if aspect_ratios is None else aspect_ratios
        if len(anchor_sizes) != num_levels:
            raise ValueError(f"EfficientDet: need one list of anchor sizes per level ({num_levels}), got "
                             f"{len(anchor_sizes)}")
        anchors = len(anchor_sizes[0]) * len(aspect_ratios[0])
        head = EfficientDetHead(fpn_channels, anchors, num_classes, head_layers, num_levels, prior_probability,
                                bn_momentum, name="head")
        super().__init__(backbone, num_classes, anchor_sizes, aspect_ratios, head, image_mean, image_std,
                         score_thresh, nms_thresh, detections_per_img, fg_iou_thresh, bg_iou_thresh,
                         topk_candidates, box_loss, smooth_l1_beta, name=name)
        self.bifpn = BiFPN(channels, fpn_channels, fpn_layers, num_levels, bn_momentum, name="bifpn")
        self.fpn_channels, self.fpn_layers, self.head_layers = int(fpn_channels), int(fpn_layers), int(head_layers)
        self.in_channels_list, self.num_levels = [int(c) for c in channels], int(num_levels)
        self.prior_probability, self.bn_momentum = float(prior_probability), float(bn_momentum)

    def build(self, input_shape) -> None:
        self._build_parts(input_shape, self.bifpn, self.head)

    def extract_features(self, images: Tensor) -> list[Tensor]:
        return list(self.bifpn(self.backbone(images)).values())

    def get_config(self) -> dict:
        config = {key: value for key, value in super().get_config().items() if key not in ("head", "head_convs")}
        return {**config, "fpn_channels": self.fpn_channels, "fpn_layers": self.fpn_layers,
                "head_layers": self.head_layers, "in_channels_list": list(self.in_channels_list),
                "num_levels": self.num_levels, "prior_probability": self.prior_probability,
                "bn_momentum": self.bn_momentum}


def efficientdet(width_mult: float, depth_mult: float, num_classes: int, fpn_channels: int, fpn_layers: int,
                 head_layers: int, input_shape, anchor_sizes=None, name: str = "efficientdet",
                 **kwargs) -> EfficientDet:
    input_shape = check_input(input_shape, name)
    backbone = EfficientNetFeatures(width_mult, depth_mult, name="backbone")
    model = EfficientDet(backbone, num_classes, fpn_channels, fpn_layers, head_layers, anchor_sizes=anchor_sizes,
                         name=name, **kwargs)
    return finish(model, input_shape)


def efficientdet_d0(num_classes: int = 90, input_shape: tuple[int, int, int] = (512, 512, 3),
                    **kwargs) -> EfficientDet:
    """EfficientDet-D0 (unbuilt): EfficientNet-B0 features, BiFPN of 64 channels and 3 layers, 3
    head layers, 512x512 (module docstring); ``kwargs`` go to :class:`EfficientDet`."""
    return efficientdet(1.0, 1.0, num_classes, 64, 3, 3, input_shape, name="efficientdet_d0", **kwargs)


def efficientdet_tiny(num_classes: int = 2, input_shape: tuple[int, int, int] = (64, 64, 3),
                      **kwargs) -> EfficientDet:
    """A small EfficientDet for tests and experiments (unbuilt): EfficientNet width 0.25 with one
    block per stage, BiFPN of 16 channels and 1 layer, 1 head layer, anchors 4 x stride with
    one scale (16 .. 256 pixels) unless ``kwargs`` say otherwise."""
    kwargs.setdefault("anchor_sizes", [[4 * 2 ** level] for level in range(3, 8)])
    return efficientdet(0.25, 0.1, num_classes, 16, 1, 1, input_shape, name="efficientdet_tiny", **kwargs)
