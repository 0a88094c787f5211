"""ConvMixer (Trockman & Kolter 2022, "Patches Are All You Need?") in timm's layout and names.

A patch embedding followed by blocks that mix space with a large depthwise convolution and
channels with a pointwise one, keeping the resolution and width D throughout:

    z_0 = BN(sigma(Conv_{p x p / p}(x)))                               stem.0, stem.2
    z'_l = BN(sigma(DepthwiseConv_{k x k, same}(z_{l-1}))) + z_{l-1}   blocks.l.0.fn.0, .fn.2
    z_l = BN(sigma(PointwiseConv(z'_l)))                               blocks.l.1, blocks.l.3
    y = head(mean over the pixels of z_depth)

sigma is GELU, or ReLU for ``convmixer_768_32`` (as timm's). Parameter names are timm's, so
:func:`~lamina.models.load_timm_state_dict` loads timm's weights. Parameters with 1000
classes at 224x224x3: convmixer_1536_20 51,625,960 (k 9, p 7); convmixer_768_32 21,110,248
(k 7, p 7); convmixer_1024_20_ks9_p14 24,383,464 (k 9, p 14).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["CONVMIXER_CONFIGS", "ConvMixerResidual", "convmixer", "convmixer_1024_20_ks9_p14", "convmixer_1536_20",
           "convmixer_768_32"]

# variant -> (width D, depth, kernel size, patch size, activation)
CONVMIXER_CONFIGS: dict[str, tuple[int, int, int, int, str]] = {
    "1536_20": (1536, 20, 9, 7, "gelu"), "768_32": (768, 32, 7, 7, "relu"),
    "1024_20_ks9_p14": (1024, 20, 9, 14, "gelu"),
}


@register_layer
class ConvMixerResidual(Block):
    """out = fn(x) + x, the sub-layer ``fn`` keeping the shape of the NHWC map (timm's ``Residual``)."""

    default_name = "residual"

    def __init__(self, fn: Module, name: str | None = None):
        super().__init__(name=name)
        self.fn = fn

    def trace(self, shape, step):
        return step(self.fn, nhwc(self, shape))

    def forward(self, x) -> Tensor:
        return F.add(self.fn(x), x)

    def get_config(self) -> dict:
        return {"fn": nn.layer_to_config(self.fn), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> ConvMixerResidual:
        return cls(nn.layer_from_config(config["fn"]), name=config.get("name"))


def _activation(kind: str) -> Module:
    return nn.GELU(name="1") if kind == "gelu" else nn.ReLU(name="1")


def _mixer_block(dim: int, kernel_size: int, activation: str, name: str) -> nn.Sequential:
    spatial = nn.Sequential(nn.Conv2D(dim, kernel_size, padding=kernel_size // 2, groups=dim, name="0"),
                            _activation(activation), nn.BatchNorm(name="2"), name="fn")
    act = _activation(activation)
    act.name = "2"
    return nn.Sequential(ConvMixerResidual(spatial, name="0"), nn.Conv2D(dim, 1, name="1"), act,
                         nn.BatchNorm(name="3"), name=name)


def convmixer(dim: int = 768, depth: int = 32, kernel_size: int = 9, patch_size: int = 7, activation: str = "gelu",
              num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              classifier_activation: str | None = None, name: str = "convmixer") -> nn.Sequential:
    """A ConvMixer (unbuilt) of width ``dim`` and ``depth`` blocks with ``kernel_size``
    depthwise kernels (odd: 'same' padding k // 2) on ``patch_size`` patches; ``activation``
    'gelu' or 'relu'. Sub-layers ``stem``, ``blocks``, ``pooling``, ``head`` (see the module
    docstring). Outputs logits unless ``classifier_activation``."""
    input_shape = check_input(input_shape, name)
    dim, depth, kernel_size, patch_size = (positive_int(v, f"{name}: {what}") for v, what in
                                           ((dim, "dim"), (depth, "depth"), (kernel_size, "kernel_size"),
                                            (patch_size, "patch_size")))
    if kernel_size % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be odd for 'same' padding, got {kernel_size}")
    if activation not in ("gelu", "relu"):
        raise ValueError(f"{name}: activation must be 'gelu' or 'relu', got {activation!r}")
    stem = nn.Sequential(nn.Conv2D(dim, patch_size, stride=patch_size, name="0"), _activation(activation),
                         nn.BatchNorm(name="2"), name="stem")
    blocks = nn.Sequential(*[_mixer_block(dim, kernel_size, activation, str(k)) for k in range(depth)],
                           name="blocks")
    model = nn.Sequential(stem, blocks, nn.GlobalAvgPool2D(name="pooling"), nn.Dense(num_classes, name="head"),
                          *classifier_layers(classifier_activation), name=name)
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, classifier_activation: str | None) -> nn.Sequential:
    dim, depth, kernel, patch, activation = CONVMIXER_CONFIGS[variant]
    return convmixer(dim, depth, kernel, patch, activation, num_classes=num_classes, input_shape=input_shape,
                     classifier_activation=classifier_activation, name=f"convmixer_{variant}")


def convmixer_1536_20(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                      classifier_activation: str | None = None) -> nn.Sequential:
    """ConvMixer-1536/20: width 1536, 20 blocks, 9x9 kernels, 7x7 patches, GELU; 51,625,960 parameters."""
    return _variant("1536_20", num_classes, input_shape, classifier_activation)


def convmixer_768_32(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                     classifier_activation: str | None = None) -> nn.Sequential:
    """ConvMixer-768/32: width 768, 32 blocks, 7x7 kernels, 7x7 patches, ReLU; 21,110,248 parameters."""
    return _variant("768_32", num_classes, input_shape, classifier_activation)


def convmixer_1024_20_ks9_p14(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                              classifier_activation: str | None = None) -> nn.Sequential:
    """ConvMixer-1024/20 with 9x9 kernels on 14x14 patches, GELU; 24,383,464 parameters."""
    return _variant("1024_20_ks9_p14", num_classes, input_shape, classifier_activation)
