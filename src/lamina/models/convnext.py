"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") in torchvision's layout and names.

A ResNet modernised step by step towards a vision transformer. Its block, on a C-channel map:

    7x7 depthwise conv (bias) - LayerNorm over the channels - FC 4C - GELU - FC C
    out = x + drop_path(gamma · branch)

gamma is a learned per-channel layer scale (initialised to 1e-6, so every block starts
close to the identity) and drop_path stochastic depth. In NHWC the channels are the last
axis, so the LayerNorm is a plain LayerNorm of the last axis and the two FC layers (the
transformer's MLP) are Dense layers applied to every pixel, with no transposes.

The network: features.0 the "patchify" stem (4x4/4 conv + LayerNorm); four stages of
blocks (features.1, 3, 5, 7) with widths C_1..C_4, joined by downsampling layers (LayerNorm
+ 2x2/2 conv: features.2, 4, 6); global average pooling; classifier (LayerNorm, flatten, FC).
LayerNorms use eps 1e-6. Block l of the L blocks drops its branch with probability
p l / (L - 1). Configurations (blocks per stage, widths, p) and parameters with 1000 classes:
tiny (3, 3, 9, 3), (96, 192, 384, 768), 0.1: 28,589,128; small (3, 3, 27, 3), same widths,
0.4: 50,223,688; base (3, 3, 27, 3), (128, 256, 512, 1024), 0.5: 88,591,464; large (3, 3, 27,
3), (192, 384, 768, 1536), 0.5: 197,767,336.

ConvNeXt V2 (Woo et al. 2023, ``version=2``): each block puts a GlobalResponseNorm of the 4C
features between the GELU and the second FC and drops the layer scale; the rest is unchanged.
Configurations and parameters with 1000 classes: atto (2, 2, 6, 2), (40, 80, 160, 320):
3,708,400; femto (2, 2, 6, 2), (48, 96, 192, 384): 5,233,240; pico (2, 2, 6, 2), (64, 128,
256, 512): 9,066,280; nano (2, 2, 8, 2), (80, 160, 320, 640): 15,623,800; tiny (3, 3, 9, 3),
(96, 192, 384, 768): 28,635,496.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.nn.layer import register_layer

__all__ = ["CONVNEXTV2_CONFIGS", "CONVNEXT_CONFIGS", "ConvNeXtBlock", "ConvNeXtV2Block", "convnext", "convnext_base",
           "convnext_large", "convnext_small", "convnext_tiny", "convnextv2_atto", "convnextv2_femto",
           "convnextv2_nano", "convnextv2_pico", "convnextv2_tiny"]

# variant -> (blocks per stage, channels per stage, stochastic-depth probability)
CONVNEXT_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536), 0.5),
}
# ConvNeXt V2 (Woo et al. 2023): variant -> the same triple (p: the paper's ImageNet-1K fine-tuning)
CONVNEXTV2_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320), 0.1),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384), 0.1),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512), 0.1),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640), 0.2),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.2),
}
LAYER_NORM_EPS = 1e-6


def _branch(channels: int, global_response_norm: bool) -> nn.Sequential:
    """7x7 depthwise conv '0', LayerNorm '2', Dense 4C '3', GELU '4', [GlobalResponseNorm
    'grn' (V2)], Dense C '5'."""
    layers = [nn.Conv2D(channels, 7, padding=3, groups=channels, name="0"),
              nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="2"),
              nn.Dense(4 * channels, name="3"),
              nn.GELU(name="4")]
    if global_response_norm:
        layers.append(nn.GlobalResponseNorm(4 * channels, name="grn"))
    return nn.Sequential(*layers, nn.Dense(channels, name="5"), name="block")


def _check_channels(channels, layer: str) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"{layer}: channels must be a positive int, got {channels!r}")
    return channels


@register_layer
class ConvNeXtBlock(Block):
    """out = x + stochastic_depth(layer_scale · block(x)) on an NHWC map of ``channels``
    channels, ``block`` = [7x7 depthwise conv '0', LayerNorm '2', Dense 4C '3', GELU '4',
    Dense C '5'] (torchvision's indices: its 1 and 6 are the NCHW <-> NHWC permutes lamina does
    not need). ``layer_scale`` (gamma, one value per channel) starts at ``layer_scale_init``;
    ``stochastic_depth_prob`` is the drop probability of the branch in training."""

    default_name = "convnext_block"
    torch_channel_parameters = ("layer_scale",)  # PyTorch keeps gamma as (C, 1, 1)

    def __init__(self, channels: int, layer_scale_init: float = 1e-6, stochastic_depth_prob: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        _check_channels(channels, "ConvNeXtBlock")
        self.channels, self.layer_scale_init = channels, float(layer_scale_init)
        self.block = _branch(channels, global_response_norm=False)
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels, "channels")
        return step(self.block, shape)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        xp = backend.xp
        self.add_parameter("layer_scale", xp.full((self.channels,), self.layer_scale_init,
                                                  dtype=backend.get_default_dtype()))

    def forward(self, x) -> Tensor:
        branch = F.mul(self.block(x), self._parameters["layer_scale"])
        return F.add(self.stochastic_depth(branch), x)

    def get_config(self) -> dict:
        return {"channels": self.channels, "layer_scale_init": self.layer_scale_init,
                "stochastic_depth_prob": self.stochastic_depth.p, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.channels}, p={self.stochastic_depth.p:.3g}"


@register_layer
class ConvNeXtV2Block(Block):
    """The ConvNeXt V2 block: out = x + stochastic_depth(block(x)) with ``block`` the V1 branch
    plus a :class:`~lamina.nn.GlobalResponseNorm` ('grn') after the GELU, and no layer scale."""

    default_name = "convnextv2_block"

    def __init__(self, channels: int, stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.channels = _check_channels(channels, "ConvNeXtV2Block")
        self.block = _branch(channels, global_response_norm=True)
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels, "channels")
        return step(self.block, shape)

    def forward(self, x) -> Tensor:
        return F.add(self.stochastic_depth(self.block(x)), x)

    def get_config(self) -> dict:
        return {"channels": self.channels, "stochastic_depth_prob": self.stochastic_depth.p, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.channels}, p={self.stochastic_depth.p:.3g}"


def _check_config(block_setting, channels) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks = tuple(block_setting) if isinstance(block_setting, (tuple, list)) else ()
    widths = tuple(channels) if isinstance(channels, (tuple, list)) else ()
    if (not blocks or len(blocks) != len(widths)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in blocks + widths)):
        raise ValueError(f"convnext: block_setting and channels must be equally long sequences of positive ints, "
                         f"got {block_setting!r} and {channels!r}")
    return blocks, widths


def convnext(block_setting: Sequence[int] = (3, 3, 9, 3), channels: Sequence[int] = (96, 192, 384, 768),
             stochastic_depth_prob: float = 0.1, layer_scale: float = 1e-6, num_classes: int = 1000,
             input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
             name: str = "convnext", version: int = 1) -> nn.Sequential:
    """A ConvNeXt (unbuilt) in torchvision's layout: stage i has ``block_setting[i]`` blocks of
    ``channels[i]`` channels (see the module docstring). Outputs logits unless
    ``classifier_activation``. ``version=2`` gives ConvNeXt V2: :class:`ConvNeXtV2Block`s
    (global response normalization, no layer scale: ``layer_scale`` is then unused)."""
    if version not in (1, 2) or isinstance(version, bool):
        raise ValueError(f"{name}: version must be 1 or 2, got {version!r}")
    blocks, widths = _check_config(block_setting, channels)
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
    input_shape = check_input(input_shape, name)
    features: list = [nn.Sequential(nn.Conv2D(widths[0], 4, stride=4, name="0"),
                                    nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="1"))]
    total, index = sum(blocks), 0
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        stage_blocks = []
        for i in range(count):
            p = stochastic_depth_prob * index / max(total - 1, 1)
            stage_blocks.append(ConvNeXtBlock(width, layer_scale, p, name=str(i)) if version == 1
                                else ConvNeXtV2Block(width, p, name=str(i)))
            index += 1
        features.append(nn.Sequential(*stage_blocks))
        if stage + 1 < len(widths):
            features.append(nn.Sequential(nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="0"),
                                          nn.Conv2D(widths[stage + 1], 2, stride=2, name="1")))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Sequential(nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="0"), nn.Flatten(name="1"),
                      nn.Dense(num_classes, name="2"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float | None,
             classifier_activation: str | None) -> nn.Sequential:
    blocks, widths, p = CONVNEXT_CONFIGS[variant]
    return convnext(blocks, widths, p if stochastic_depth_prob is None else stochastic_depth_prob,
                    num_classes=num_classes, input_shape=input_shape, classifier_activation=classifier_activation,
                    name=f"convnext_{variant}")


def convnext_tiny(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  stochastic_depth_prob: float | None = None,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt-T: blocks (3, 3, 9, 3), widths (96, 192, 384, 768), p = 0.1; 28,589,128
    parameters with 1000 classes (about 4.46 G multiply-adds at 224x224)."""
    return _variant("tiny", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnext_small(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float | None = None,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt-S: blocks (3, 3, 27, 3), widths (96, 192, 384, 768), p = 0.4; 50,223,688 parameters."""
    return _variant("small", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnext_base(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  stochastic_depth_prob: float | None = None,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt-B: blocks (3, 3, 27, 3), widths (128, 256, 512, 1024), p = 0.5; 88,591,464 parameters."""
    return _variant("base", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnext_large(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float | None = None,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt-L: blocks (3, 3, 27, 3), widths (192, 384, 768, 1536), p = 0.5; 197,767,336 parameters."""
    return _variant("large", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def _v2_variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float | None,
                classifier_activation: str | None) -> nn.Sequential:
    blocks, widths, p = CONVNEXTV2_CONFIGS[variant]
    return convnext(blocks, widths, p if stochastic_depth_prob is None else stochastic_depth_prob,
                    num_classes=num_classes, input_shape=input_shape, classifier_activation=classifier_activation,
                    name=f"convnextv2_{variant}", version=2)


def convnextv2_atto(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    stochastic_depth_prob: float | None = None,
                    classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt V2-Atto: blocks (2, 2, 6, 2), widths (40, 80, 160, 320); 3,708,400 parameters."""
    return _v2_variant("atto", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnextv2_femto(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                     stochastic_depth_prob: float | None = None,
                     classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt V2-Femto: blocks (2, 2, 6, 2), widths (48, 96, 192, 384); 5,233,240 parameters."""
    return _v2_variant("femto", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnextv2_pico(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    stochastic_depth_prob: float | None = None,
                    classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt V2-Pico: blocks (2, 2, 6, 2), widths (64, 128, 256, 512); 9,066,280 parameters."""
    return _v2_variant("pico", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnextv2_nano(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    stochastic_depth_prob: float | None = None,
                    classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt V2-Nano: blocks (2, 2, 8, 2), widths (80, 160, 320, 640); 15,623,800 parameters."""
    return _v2_variant("nano", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def convnextv2_tiny(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    stochastic_depth_prob: float | None = None,
                    classifier_activation: str | None = None) -> nn.Sequential:
    """ConvNeXt V2-Tiny: blocks (3, 3, 9, 3), widths (96, 192, 384, 768); 28,635,496 parameters."""
    return _v2_variant("tiny", num_classes, input_shape, stochastic_depth_prob, classifier_activation)
