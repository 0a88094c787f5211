"""PoolFormer (Yu et al. 2022, "MetaFormer is Actually What You Need for Vision").

A MetaFormer whose token mixer is plain average pooling, so the mixing has no parameters.
On an NHWC map x of C channels:

    Pooling(x) = AvgPool_{3x3, stride 1, pad 1, padding not counted}(x) - x
    y = x + drop_path(s_1 · Pooling(GroupNorm_1(x)))
    out = y + drop_path(s_2 · MLP(GroupNorm_1(y))),   MLP = 1x1 conv rC - GELU - 1x1 conv C

GroupNorm_1 is GroupNorm with one group (each sample normalised over H, W and C), s_1 and
s_2 learned per-channel layer scales and r the MLP ratio (4). The subtraction of x makes
the mixer give the change of each token, since the block adds x back.

The network: a 7x7/4 patch embedding (padding 2), four stages of blocks joined by 3x3/2
patch embeddings (padding 1), a final GroupNorm_1, global average pooling and a linear head.
Configurations (blocks per stage, widths, layer-scale init) and parameters with 1000 classes
at 224x224x3: S12 (2, 2, 6, 2), (64, 128, 320, 512), 1e-5: 11,915,176; S24 (4, 4, 12, 4), same
widths, 1e-5: 21,388,968; S36 (6, 6, 18, 6), same widths, 1e-6: 30,862,760; M36 (6, 6, 18, 6),
(96, 192, 384, 768), 1e-6: 56,172,520; M48 (8, 8, 24, 8), same widths, 1e-6: 73,473,448.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc, nhwc_channels
from lamina.nn.layer import positive_int, register_layer

__all__ = ["POOLFORMER_CONFIGS", "PoolFormerBlock", "PoolingMixer", "poolformer", "poolformer_m36",
           "poolformer_m48", "poolformer_s12", "poolformer_s24", "poolformer_s36"]

# variant -> (blocks per stage, channels per stage, layer-scale init)
POOLFORMER_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "s12": ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5),
    "s24": ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5),
    "s36": ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6),
    "m36": ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6),
    "m48": ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6),
}


def _odd_pool_size(pool_size) -> int:
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1 or pool_size % 2 == 0:
        raise ValueError(f"PoolingMixer: pool_size must be a positive odd int (the map keeps its size), "
                         f"got {pool_size!r}")
    return pool_size


@register_layer
class PoolingMixer(nn.Module):
    """PoolFormer's token mixer on an NHWC map: AvgPool(x) - x, the average over each
    ``pool_size`` x ``pool_size`` window (stride 1, zero padding pool_size // 2 not counted
    in the window size, as PyTorch's ``count_include_pad=False``) minus the token itself."""

    default_name = "pooling_mixer"

    def __init__(self, pool_size: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.pool_size = _odd_pool_size(pool_size)

    def build(self, input_shape) -> None:
        nhwc(self, input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return nhwc(self, input_shape)

    def forward(self, x) -> Tensor:
        pooled = F.avg_pool2d(x, self.pool_size, stride=1, padding=self.pool_size // 2, count_include_pad=False)
        return F.sub(pooled, x)

    def get_config(self) -> dict:
        return {"pool_size": self.pool_size, "name": self.name}

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


@register_layer
class PoolFormerBlock(Block):
    """A MetaFormer block on an NHWC map of ``channels`` channels (see the module docstring):
    y = x + s_1 · mixer(norm1(x)), out = y + s_2 · mlp(norm2(y)), the norms GroupNorm with one
    group, the mixer :class:`PoolingMixer`, the MLP two 1x1 convolutions (``mlp_ratio`` ·
    channels hidden, GELU). ``layer_scale1``/``layer_scale2`` start at ``layer_scale_init``;
    ``stochastic_depth_prob`` drops each branch in training."""

    default_name = "poolformer_block"

    def __init__(self, channels: int, pool_size: int = 3, mlp_ratio: int = 4, layer_scale_init: float = 1e-5,
                 stochastic_depth_prob: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "PoolFormerBlock: channels")
        self.mlp_ratio = positive_int(mlp_ratio, "PoolFormerBlock: mlp_ratio")
        self.layer_scale_init = float(layer_scale_init)
        self.norm1 = nn.GroupNorm(1, name="norm1")
        self.token_mixer = PoolingMixer(pool_size, name="token_mixer")
        self.norm2 = nn.GroupNorm(1, name="norm2")
        self.mlp = nn.Sequential(nn.Conv2D(self.mlp_ratio * self.channels, 1, name="fc1"), nn.GELU(name="act"),
                                 nn.Conv2D(self.channels, 1, name="fc2"), name="mlp")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels, "channels")
        step(self.token_mixer, step(self.norm1, shape))
        return step(self.mlp, step(self.norm2, shape))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        for scale in ("layer_scale1", "layer_scale2"):
            self.add_parameter(scale, backend.xp.full((self.channels,), self.layer_scale_init,
                                                      dtype=backend.get_default_dtype()))

    def forward(self, x) -> Tensor:
        mixed = F.mul(self.token_mixer(self.norm1(x)), self._parameters["layer_scale1"])
        x = F.add(x, self.stochastic_depth(mixed))
        transformed = F.mul(self.mlp(self.norm2(x)), self._parameters["layer_scale2"])
        return F.add(x, self.stochastic_depth(transformed))

    def get_config(self) -> dict:
        return {"channels": self.channels, "pool_size": self.token_mixer.pool_size, "mlp_ratio": self.mlp_ratio,
                "layer_scale_init": self.layer_scale_init, "stochastic_depth_prob": self.stochastic_depth.p,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.channels}, pool_size={self.token_mixer.pool_size}, p={self.stochastic_depth.p:.3g}"


def _check_config(layers, widths) -> tuple[tuple[int, ...], tuple[int, ...]]:
    blocks = tuple(layers) if isinstance(layers, (tuple, list)) else ()
    dims = tuple(widths) if isinstance(widths, (tuple, list)) else ()
    if (not blocks or len(blocks) != len(dims)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in blocks + dims)):
        raise ValueError(f"poolformer: layers and widths must be equally long sequences of positive ints, "
                         f"got {layers!r} and {widths!r}")
    return blocks, dims


def poolformer(layers: Sequence[int] = (2, 2, 6, 2), widths: Sequence[int] = (64, 128, 320, 512),
               layer_scale_init: float = 1e-5, pool_size: int = 3, mlp_ratio: int = 4,
               stochastic_depth_prob: float = 0.0, num_classes: int = 1000,
               input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
               name: str = "poolformer") -> nn.Sequential:
    """A PoolFormer (unbuilt): stage i has ``layers[i]`` :class:`PoolFormerBlock` of
    ``widths[i]`` channels; the stem is a 7x7/4 conv, each later stage starts with a 3x3/2
    conv; then GroupNorm_1, global average pooling and a Dense head (see the module
    docstring). Block l of the L blocks drops its branches with probability
    ``stochastic_depth_prob`` · l / (L - 1). Outputs logits unless ``classifier_activation``."""
    blocks, dims = _check_config(layers, widths)
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")
    input_shape = check_input(input_shape, name)
    features: list = [nn.Conv2D(dims[0], 7, stride=4, padding=2)]
    total, index = sum(blocks), 0
    for stage, (count, width) in enumerate(zip(blocks, dims)):
        if stage:
            features.append(nn.Conv2D(width, 3, stride=2, padding=1))
        stage_blocks = []
        for i in range(count):
            p = stochastic_depth_prob * index / max(total - 1, 1)
            stage_blocks.append(PoolFormerBlock(width, pool_size, mlp_ratio, layer_scale_init, p, name=str(i)))
            index += 1
        features.append(nn.Sequential(*stage_blocks))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.GroupNorm(1, name="norm"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Dense(num_classes, name="head"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float,
             classifier_activation: str | None) -> nn.Sequential:
    layers, widths, scale = POOLFORMER_CONFIGS[variant]
    return poolformer(layers, widths, scale, stochastic_depth_prob=stochastic_depth_prob, num_classes=num_classes,
                      input_shape=input_shape, classifier_activation=classifier_activation,
                      name=f"poolformer_{variant}")


def poolformer_s12(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float = 0.0, classifier_activation: str | None = None) -> nn.Sequential:
    """PoolFormer-S12: blocks (2, 2, 6, 2), widths (64, 128, 320, 512); 11,915,176 parameters."""
    return _variant("s12", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def poolformer_s24(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float = 0.0, classifier_activation: str | None = None) -> nn.Sequential:
    """PoolFormer-S24: blocks (4, 4, 12, 4), widths (64, 128, 320, 512); 21,388,968 parameters."""
    return _variant("s24", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def poolformer_s36(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float = 0.0, classifier_activation: str | None = None) -> nn.Sequential:
    """PoolFormer-S36: blocks (6, 6, 18, 6), widths (64, 128, 320, 512); 30,862,760 parameters."""
    return _variant("s36", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def poolformer_m36(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float = 0.0, classifier_activation: str | None = None) -> nn.Sequential:
    """PoolFormer-M36: blocks (6, 6, 18, 6), widths (96, 192, 384, 768); 56,172,520 parameters."""
    return _variant("m36", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def poolformer_m48(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   stochastic_depth_prob: float = 0.0, classifier_activation: str | None = None) -> nn.Sequential:
    """PoolFormer-M48: blocks (8, 8, 24, 8), widths (96, 192, 384, 768); 73,473,448 parameters."""
    return _variant("m48", num_classes, input_shape, stochastic_depth_prob, classifier_activation)
