"""Feature pyramid networks (Lin et al. 2017, "Feature Pyramid Networks for Object Detection")
in torchvision's layout, and the ResNet + FPN backbone of its detectors.

Given backbone maps C_1 .. C_L (finest first), the FPN makes maps P_1 .. P_L of
``out_channels`` each, top-down:

    I_L = lateral_L(C_L),   I_l = lateral_l(C_l) + upsample_nearest(I_(l+1)) to C_l's size
    P_l = output_l(I_l)

with 1x1 lateral convolutions (``inner_blocks.l.0``) and 3x3 output convolutions
(``layer_blocks.l.0``), both with a bias, no norm and no activation; their weights start
uniform with bound sqrt(3 / fan_in) (kaiming_uniform with a = 1), their biases at 0. An extra
block then adds coarser levels: :class:`LastLevelMaxPool` ('pool': P_L subsampled by 2, a
1x1 max pool of stride 2; Faster R-CNN) or :class:`LastLevelP6P7` (RetinaNet, FCOS:
P6 = conv3x3/2(P5 or C5), P7 = conv3x3/2(ReLU(P6))).

:class:`BackboneWithFPN` is torchvision's ``BackboneWithFPN`` on a ResNet body
(:func:`resnet_fpn_backbone`): keys ``body.conv1.weight``, ``body.layer2.0.conv1.weight``,
``fpn.inner_blocks.0.0.weight``, ... The body's batch norms are frozen by default
(:class:`FrozenBatchNorm2D`, the fixed affine map torchvision's detectors use, whose
statistics and affine weights are buffers, not parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.resnet import BLOCKS
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "BackboneWithFPN", "FeaturePyramidNetwork", "FrozenBatchNorm2D", "LastLevelMaxPool", "LastLevelP6P7",
    "resnet_fpn_backbone",
]

RESNET_STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def _channels_shape(channels: int) -> tuple:
    return (None, None, None, int(channels))


def _fpn_conv(filters: int, kernel_size: int, stride: int = 1, name: str | None = None) -> nn.Conv2D:
    """A convolution with bias and kaiming_uniform(a=1) weights (bound sqrt(3 / fan_in) =
    lecun_uniform), as torchvision initializes the FPN's and the P6/P7 convolutions."""
    return nn.Conv2D(filters, kernel_size, stride=stride, padding=kernel_size // 2, kernel_init="lecun_uniform",
                     bias_init="zeros", name=name)


@register_layer
class FrozenBatchNorm2D(Module):
    """Batch normalization with fixed statistics and affine weights (torchvision's
    FrozenBatchNorm2d): y = x scale + shift per channel, scale = weight / sqrt(running_var +
    eps), shift = bias - running_mean scale. All four arrays are buffers (loaded from a state
    dict, never trained), the same in training and evaluation."""

    default_name = "frozen_batch_norm"

    def __init__(self, eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        if eps <= 0:
            raise ValueError(f"FrozenBatchNorm2D: eps must be positive, got {eps!r}")
        self.eps = float(eps)

    def build(self, input_shape) -> None:
        c = tuple(input_shape)[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {tuple(input_shape)} must be known")
        xp, dtype = backend.xp, backend.get_default_dtype()
        self.register_buffer("weight", xp.ones((c,), dtype=dtype))
        self.register_buffer("bias", xp.zeros((c,), dtype=dtype))
        self.register_buffer("running_mean", xp.zeros((c,), dtype=dtype))
        self.register_buffer("running_var", xp.ones((c,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c = self.weight.shape[0]
        if x.shape[-1] != c:
            raise input_error(self, x, f"(batch, ..., C) with C={c} channels on the last axis")
        xp = backend.xp
        scale = self.weight * (1.0 / xp.sqrt(self.running_var + self.eps))
        shift = self.bias - self.running_mean * scale
        return x * Tensor(scale.astype(x.dtype)) + Tensor(shift.astype(x.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"eps": self.eps, "name": self.name}


@register_layer
class LastLevelMaxPool(Module):
    """FPN extra block 'pool': P_(L+1) = max_pool(P_L, 1, stride 2), as torchvision's."""

    default_name = "last_level_max_pool"
    names = ("pool",)

    def build(self, input_shape) -> None:
        self.built = True

    def forward(self, results: list, features: list) -> list:
        return [F.max_pool2d(results[-1], 1, stride=2)]

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class LastLevelP6P7(Module):
    """FPN extra blocks 'p6', 'p7' of RetinaNet: P6 = conv3x3/2(x), P7 = conv3x3/2(ReLU(P6)), x
    the FPN's last output P5 when ``in_channels == out_channels`` else the backbone's last map C5
    (torchvision's rule)."""

    default_name = "last_level_p6p7"
    names = ("p6", "p7")

    def __init__(self, in_channels: int, out_channels: int, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.use_p5 = self.in_channels == self.out_channels
        self.p6 = _fpn_conv(out_channels, 3, stride=2, name="p6")
        self.p7 = _fpn_conv(out_channels, 3, stride=2, name="p7")

    def build(self, input_shape) -> None:
        self.p6.build(_channels_shape(self.in_channels))
        self.p7.build(_channels_shape(self.out_channels))
        self.p6.built = self.p7.built = self.built = True

    def forward(self, results: list, features: list) -> list:
        p6 = self.p6(results[-1] if self.use_p5 else features[-1])
        return [p6, self.p7(F.relu(p6))]

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "name": self.name}


def _single_conv(conv: nn.Conv2D, name: str) -> nn.Sequential:
    """torchvision's Conv2dNormActivation without norm and activation: the conv at key '0'."""
    return nn.Sequential(conv, name=name)


@register_layer
class FeaturePyramidNetwork(Module):
    """torchvision's FeaturePyramidNetwork (module docstring) on NHWC maps.

    ``forward(features)`` takes a dict name -> (N, h_l, w_l, in_channels_list[l]) map, finest
    first (or a list, named '0', '1', ...), and returns a dict of the same names (then the
    extra block's, 'pool' or 'p6', 'p7') -> (N, h_l, w_l, out_channels) maps.
    """

    default_name = "fpn"

    def __init__(self, in_channels_list: Sequence[int], out_channels: int, extra_blocks: Module | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels_list = [int(c) for c in in_channels_list]
        if not self.in_channels_list or min(self.in_channels_list) < 1 or int(out_channels) < 1:
            raise ValueError(f"FeaturePyramidNetwork: in_channels_list must hold positive channel counts and "
                             f"out_channels be positive, got {in_channels_list!r} and {out_channels!r}")
        self.out_channels = int(out_channels)
        self.inner_blocks = nn.ModuleList(_single_conv(_fpn_conv(out_channels, 1, name="0"), str(i))
                                          for i in range(len(self.in_channels_list)))
        self.layer_blocks = nn.ModuleList(_single_conv(_fpn_conv(out_channels, 3, name="0"), str(i))
                                          for i in range(len(self.in_channels_list)))
        if extra_blocks is not None:
            self.extra_blocks = extra_blocks

    @property
    def extra(self) -> Module | None:
        return self._modules.get("extra_blocks")

    def build(self, input_shape=None) -> None:
        for inner, layer, channels in zip(self.inner_blocks, self.layer_blocks, self.in_channels_list):
            for block, shape in ((inner, _channels_shape(channels)), (layer, _channels_shape(self.out_channels))):
                block.build(shape)
                block.built = True
        if self.extra is not None:
            self.extra.build(None)
            self.extra.built = True
        self.built = True

    def _named_inputs(self, features) -> tuple[list[str], list[Tensor]]:
        if isinstance(features, Mapping):
            names, maps = list(features.keys()), [as_tensor(v) for v in features.values()]
        else:
            maps = [as_tensor(v) for v in features]
            names = [str(i) for i in range(len(maps))]
        if len(maps) != len(self.in_channels_list):
            raise ShapeError(f"{self._label()}: got {len(maps)} feature maps; expected {len(self.in_channels_list)} "
                             f"(in_channels_list={self.in_channels_list})")
        for name, x, channels in zip(names, maps, self.in_channels_list):
            if x.ndim != 4 or x.shape[-1] != channels:
                raise input_error(self, x, f"an NHWC map with {channels} channels for feature {name!r}")
        return names, maps

    def forward(self, features) -> dict[str, Tensor]:
        names, maps = self._named_inputs(features)
        inner = self.inner_blocks[len(maps) - 1](maps[-1])
        results = [self.layer_blocks[len(maps) - 1](inner)]
        for level in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[level](maps[level])
            top_down = F.interpolate(inner, size=tuple(lateral.shape[1:3]), mode="nearest")
            inner = F.add(lateral, top_down)
            results.insert(0, self.layer_blocks[level](inner))
        if self.extra is not None:
            results += self.extra(results, maps)
            names = names + list(self.extra.names)
        return dict(zip(names, results))

    def get_config(self) -> dict:
        extra = None if self.extra is None else layer_to_config(self.extra)
        return {"in_channels_list": list(self.in_channels_list), "out_channels": self.out_channels,
                "extra_blocks": extra, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> FeaturePyramidNetwork:
        config = dict(config)
        extra = config.pop("extra_blocks", None)
        return cls(**config, extra_blocks=None if extra is None else layer_from_config(extra))


def _resnet_body(depth: int, width: int, in_stages: int, frozen_batch_norm: bool) -> nn.Sequential:
    """The ResNet stem and stages layer1 .. layer``in_stages`` (torchvision's names), stage k
    with ``width`` 2^(k-1) filters per block (64: the ImageNet ResNets)."""
    block, counts = BLOCKS[depth]
    layers: list = [nn.Conv2D(width, 7, stride=2, padding=3, use_bias=False, name="conv1"), nn.BatchNorm(name="bn1"),
                    nn.ReLU(name="relu"), nn.MaxPool2D(3, stride=2, padding=1, name="maxpool")]
    channels = width
    for k in range(in_stages):
        filters, stride = width * 2**k, (1 if k == 0 else 2)
        out = filters * block.expansion
        blocks = [block(filters, stride=stride, downsample=stride != 1 or channels != out, name="0")]
        blocks += [block(filters, name=str(j)) for j in range(1, counts[k])]
        layers.append(nn.Sequential(*blocks, name=f"layer{k + 1}"))
        channels = out
    body = nn.Sequential(*layers, name="body")
    if frozen_batch_norm:
        _freeze_batch_norms(body)
    return body


def _freeze_batch_norms(module: Module) -> None:
    """Replace every (unbuilt) BatchNorm below ``module`` by a FrozenBatchNorm2D of the same name."""
    for child_module in list(module.modules()):
        for key, child in list(child_module._modules.items()):
            if isinstance(child, nn.BatchNorm):
                child_module._modules[key] = FrozenBatchNorm2D(eps=child.eps, name=child.name)


@register_layer
class BackboneWithFPN(Module):
    """A ResNet body and an FPN on its ``returned_layers`` (torchvision's BackboneWithFPN from
    ``_resnet_fpn_extractor``): ``forward(images)`` gives the dict of FPN maps, named '0', '1',
    ... for the returned stages, then the extra block's names.

    ``depth`` 18, 34, 50, 101 or 152; ``width`` the filters of layer1's blocks (64 for the
    ImageNet ResNets; smaller for small experiments); ``trainable_layers`` (0 to 5) leaves the
    last that many of conv1, layer1 .. layer4 trainable, the rest frozen (bn1 too but for 5);
    ``extra_blocks`` 'pool', 'p6p7' (P6 from P5), 'p6p7_c5' (P6 from C5) or None.
    """

    default_name = "backbone"

    def __init__(self, depth: int = 50, returned_layers: Sequence[int] = (1, 2, 3, 4), out_channels: int = 256,
                 extra_blocks: str | None = "pool", trainable_layers: int = 5, frozen_batch_norm: bool = True,
                 width: int = 64, name: str | None = "backbone"):
        super().__init__(name=name)
        if depth not in BLOCKS:
            raise ValueError(f"BackboneWithFPN: depth must be one of {sorted(BLOCKS)}, got {depth!r}")
        returned = [int(k) for k in returned_layers]
        if not returned or returned != sorted(set(returned)) or returned[0] < 1 or returned[-1] > 4:
            raise ValueError(f"BackboneWithFPN: returned_layers must be increasing stages in 1..4, got "
                             f"{returned_layers!r}")
        if not 0 <= int(trainable_layers) <= 5:
            raise ValueError(f"BackboneWithFPN: trainable_layers must lie in 0..5, got {trainable_layers!r}")
        if extra_blocks not in (None, "pool", "p6p7", "p6p7_c5"):
            raise ValueError(f"BackboneWithFPN: extra_blocks must be 'pool', 'p6p7', 'p6p7_c5' or None, got "
                             f"{extra_blocks!r}")
        self.depth, self.returned_layers, self.width = int(depth), returned, int(width)
        self.out_channels, self.extra_kind = int(out_channels), extra_blocks
        self.trainable_layers, self.frozen_batch_norm = int(trainable_layers), bool(frozen_batch_norm)
        expansion = BLOCKS[self.depth][0].expansion
        self.in_channels_list = [self.width * 2 ** (k - 1) * expansion for k in returned]
        self.body = _resnet_body(self.depth, self.width, returned[-1], self.frozen_batch_norm)
        self.fpn = FeaturePyramidNetwork(self.in_channels_list, self.out_channels, self._extra(), name="fpn")

    def _extra(self) -> Module | None:
        if self.extra_kind == "pool":
            return LastLevelMaxPool(name="extra_blocks")
        if self.extra_kind == "p6p7":
            return LastLevelP6P7(self.out_channels, self.out_channels, name="extra_blocks")
        if self.extra_kind == "p6p7_c5":
            return LastLevelP6P7(self.in_channels_list[-1], self.out_channels, name="extra_blocks")
        return None

    def build(self, input_shape) -> None:
        self.body.build(tuple(input_shape))
        self.body.built = True
        self.fpn.build()
        self.fpn.built = True
        trained = list(reversed(RESNET_STAGES))[:self.trainable_layers]
        trained += ["bn1"] if self.trainable_layers == 5 else []
        for name, layer in self.body.named_children():
            if name not in trained:
                layer.freeze()
        self.built = True

    def forward(self, images) -> dict[str, Tensor]:
        x = as_tensor(images)
        returned = {f"layer{k}": str(i) for i, k in enumerate(self.returned_layers)}
        features = {}
        for name, layer in self.body.named_children():
            x = layer(x)
            if name in returned:
                features[returned[name]] = x
        return self.fpn(features)

    def get_config(self) -> dict:
        return {"depth": self.depth, "returned_layers": list(self.returned_layers), "out_channels": self.out_channels,
                "extra_blocks": self.extra_kind, "trainable_layers": self.trainable_layers,
                "frozen_batch_norm": self.frozen_batch_norm, "width": self.width, "name": self.name}


def resnet_fpn_backbone(depth: int = 50, trainable_layers: int = 5, returned_layers: Sequence[int] | None = None,
                        extra_blocks: str | None = "pool", out_channels: int = 256, frozen_batch_norm: bool = True,
                        width: int = 64) -> BackboneWithFPN:
    """torchvision's ``resnet_fpn_backbone``: a ResNet-``depth`` body with an FPN of
    ``out_channels`` on ``returned_layers`` (default all four stages) and an ``extra_blocks``
    level (see :class:`BackboneWithFPN`); unbuilt (built on the first call or by ``build``).

    Note the default ``trainable_layers=5``: with no pretrained weights every stage learns
    (torchvision's default 3 applies to pretrained backbones)."""
    return BackboneWithFPN(depth, tuple(returned_layers or (1, 2, 3, 4)), out_channels, extra_blocks,
                           trainable_layers, frozen_batch_norm, width)
