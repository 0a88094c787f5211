"""CLIP's ResNet image towers (Radford et al. 2021, section 2.4): OpenAI's ``ModifiedResNet``
and the RN50, RN101 and RN50x4 models, in OpenAI's state-dict names below ``visual.``
(``visual.conv1.weight``, ``visual.layer1.0.conv1.weight``, ``visual.attnpool.positional_embedding``).

    stem:       three 3x3 convolutions (width/2 stride 2, width/2, width; each + BN + ReLU),
                then a 2x2 average pool: H / 4
    layer1..4:  bottlenecks of ``width`` 2^(k-1) filters, 4 times as many outputs; the first
                block of layers 2-4 halves the map with an anti-aliased stride: a 2x2 average
                pool after the 3x3 convolution, and a 2x2 average pool before the 1x1
                projection of its shortcut (no strided convolution anywhere)
    attnpool:   the S x S map (S = image_size / 32) read as S^2 tokens t_1..t_S^2 of
                E = 32 width features, z = [mean_i t_i; t_1; ..; t_S^2] + P, and one query,
                z_0's, attending over all of z with ``heads`` heads:
                    out = c_proj(concat_h softmax(q_h K_h^T / sqrt(d)) V_h),
                q = q_proj(z_0), K = k_proj(z), V = v_proj(z)

The tower's output (N, output_dim) is already the image embedding (no separate projection).
:class:`ResNetCLIP` pairs it with lamina's CLIP text tower (:class:`CLIPTextTransformer`,
Hugging Face's layout), which computes what OpenAI's text transformer does;
:func:`lamina.models.load_openai_clip_state_dict` renames OpenAI's text keys onto it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, identity_shortcut, nhwc, residual_sum
from lamina.models.clip import CLIP, LOGIT_SCALE_INIT, _normal
from lamina.models.hf_weights import build_children
from lamina.nn import init as initializers
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.normalization import BatchNorm
from lamina.nn.pooling import AvgPool2D
from lamina.nn.sequential import Sequential

__all__ = ["AttentionPool2d", "CLIPBottleneck", "ModifiedResNet", "ResNetCLIP", "clip_resnet"]

RESNET_VISION_DEFAULTS = {"layers": (3, 4, 6, 3), "width": 64, "heads": 32, "image_size": 224, "num_channels": 3}

CLIP_RESNET_CONFIGS = {
    "rn50": {"text_config": {}, "vision_config": {}, "projection_dim": 1024},
    "rn101": {"text_config": {}, "vision_config": {"layers": (3, 4, 23, 3)}, "projection_dim": 512},
    "rn50x4": {"text_config": {"hidden_size": 640, "intermediate_size": 2560, "num_attention_heads": 10},
               "vision_config": {"layers": (4, 6, 10, 6), "width": 80, "heads": 40, "image_size": 288},
               "projection_dim": 640},
    "tiny": {"text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "max_position_embeddings": 16},
             "vision_config": {"layers": (1, 1, 1, 1), "width": 4, "heads": 2, "image_size": 64},
             "projection_dim": 16},
}
"""OpenAI's RN50, RN101 and RN50x4 (heads = 32 width / 64), and a tiny one for tests."""


def _conv(filters: int, size: int, name: str, stride: int = 1) -> Conv2D:
    return Conv2D(filters, size, stride=stride, padding=size // 2, use_bias=False, name=name)


@register_layer
class CLIPBottleneck(Block):
    """OpenAI's anti-aliased bottleneck (``clip.model.Bottleneck``)::

        out = ReLU(bn3(conv3(pool(ReLU(bn2(conv2(ReLU(bn1(conv1(x))))))))) + shortcut(x))

    conv1 1x1 and conv2 3x3 (padding 1) with ``planes`` filters, conv3 1x1 with 4 ``planes``;
    pool: a ``stride`` x ``stride`` average pool when stride > 1. The shortcut is x, or,
    when the stride or the channel count changes, ``downsample`` = 1x1 conv ('0') + BN ('1')
    after the same average pool (OpenAI's '-1', which has no weights). bn3's scale starts at 0,
    as OpenAI's, so each block starts as its shortcut."""

    default_name = "bottleneck"
    expansion = 4

    def __init__(self, planes: int, stride: int = 1, downsample: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.planes = positive_int(planes, "CLIPBottleneck: planes")
        self.stride = positive_int(stride, "CLIPBottleneck: stride")
        self.has_downsample = bool(downsample)
        self.conv1, self.bn1 = _conv(planes, 1, "conv1"), BatchNorm(name="bn1")
        self.conv2, self.bn2 = _conv(planes, 3, "conv2"), BatchNorm(name="bn2")
        self.conv3, self.bn3 = _conv(planes * self.expansion, 1, "conv3"), BatchNorm(name="bn3")
        self.pool = AvgPool2D(self.stride) if self.stride > 1 else None
        if self.has_downsample:
            self.downsample = Sequential(_conv(planes * self.expansion, 1, "0"), BatchNorm(name="1"),
                                         name="downsample")

    def _pooled(self, shape, step):
        return step(self.pool, shape) if self.pool is not None else shape

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = step(self.bn2, step(self.conv2, step(self.bn1, step(self.conv1, shape))))
        out = step(self.bn3, step(self.conv3, self._pooled(out, step)))
        if self.has_downsample:
            short = step(self.downsample, self._pooled(shape, step))
        else:
            short = identity_shortcut(self, shape, shape[3], self.planes * self.expansion, self.stride)
        return residual_sum(self, out, short)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        if not initializers.is_meta_array(self.bn3.weight):
            self.bn3.weight.data = backend.xp.zeros_like(self.bn3.weight.data)

    def forward(self, x) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.pool is not None:
            out = self.pool(out)
        out = self.bn3(self.conv3(out))
        shortcut = x
        if self.has_downsample:
            shortcut = self.downsample(self.pool(x) if self.pool is not None else x)
        return F.relu(F.add(out, shortcut))

    def get_config(self) -> dict:
        return {"planes": self.planes, "stride": self.stride, "downsample": self.has_downsample, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.planes}, stride={self.stride}" + (", downsample" if self.has_downsample else "")


@register_layer
class AttentionPool2d(Module):
    """OpenAI's attention pooling (module docstring): NHWC maps (N, S, S, E) -> (N, output_dim).
    Sub-layers ``q_proj``, ``k_proj``, ``v_proj`` (E -> E) and ``c_proj`` (E -> output_dim),
    Dense with biases; parameter ``positional_embedding`` (S^2 + 1, E), N(0, 1/E) at first,
    as are the projections' weights."""

    default_name = "attnpool"

    def __init__(self, spatial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.spatial_dim = positive_int(spatial_dim, "AttentionPool2d: spatial_dim")
        self.embed_dim = positive_int(embed_dim, "AttentionPool2d: embed_dim")
        self.num_heads = positive_int(num_heads, "AttentionPool2d: num_heads")
        self.output_dim = self.embed_dim if output_dim is None else positive_int(output_dim,
                                                                                 "AttentionPool2d: output_dim")
        if embed_dim % num_heads:
            raise ValueError(f"AttentionPool2d: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        std = _normal(embed_dim ** -0.5)
        self.q_proj, self.k_proj, self.v_proj = (Dense(embed_dim, kernel_init=std, name=f"{part}_proj")
                                                 for part in "qkv")
        self.c_proj = Dense(self.output_dim, kernel_init=std, name="c_proj")

    def _check(self, shape) -> tuple:
        s, e = self.spatial_dim, self.embed_dim
        if len(shape) != 4 or tuple(shape[1:]) != (s, s, e):
            raise ShapeError(f"{self._label()}: expected NHWC maps (batch, {s}, {s}, {e}), got shape "
                             f"{tuple(shape)}")
        return tuple(shape)

    def build(self, input_shape) -> None:
        shape = self._check(tuple(input_shape))
        e, tokens = self.embed_dim, self.spatial_dim ** 2 + 1
        build_children([*((proj, (shape[0], tokens, e)) for proj in (self.q_proj, self.k_proj, self.v_proj)),
                        (self.c_proj, (shape[0], e))])
        init = _normal(e ** -0.5)
        self.add_parameter("positional_embedding", init((tokens, e), e, e, backend.get_default_dtype()))
        self.built = True

    def compute_output_shape(self, input_shape):
        return (self._check(tuple(input_shape))[0], self.output_dim)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._check(x.shape)
        n, e, h = x.shape[0], self.embed_dim, self.num_heads
        d = e // h
        tokens = F.reshape(x, (n, -1, e))
        z = F.concat([F.mean(tokens, axis=1, keepdims=True), tokens], axis=1)
        z = F.add(z, self.positional_embedding)                                    # (N, T, E)
        q = F.reshape(self.q_proj(F.getitem(z, (slice(None), 0))), (n, h, 1, d))
        k = F.transpose(F.reshape(self.k_proj(z), (n, -1, h, d)), 0, 2, 3, 1)       # (N, h, d, T)
        v = F.transpose(F.reshape(self.v_proj(z), (n, -1, h, d)), 0, 2, 1, 3)       # (N, h, T, d)
        weights = F.softmax(F.mul(F.matmul(q, k), d ** -0.5), axis=-1)              # (N, h, 1, T)
        return self.c_proj(F.reshape(F.matmul(weights, v), (n, e)))

    def get_config(self) -> dict:
        return {"spatial_dim": self.spatial_dim, "embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "output_dim": self.output_dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.spatial_dim}x{self.spatial_dim}, {self.embed_dim} -> {self.output_dim}, heads={self.num_heads}"


def _stage(planes: int, blocks: int, stride: int, in_channels: int, name: str) -> Sequential:
    first = CLIPBottleneck(planes, stride, downsample=stride > 1 or in_channels != planes * 4, name="0")
    return Sequential(first, *(CLIPBottleneck(planes, name=str(i)) for i in range(1, blocks)), name=name)


@register_layer
class ModifiedResNet(Block):
    """OpenAI's ``ModifiedResNet`` (module docstring): NHWC images (N, image_size, image_size,
    num_channels) -> embeddings (N, output_dim). ``layers``: the bottlenecks of each of the four
    stages; ``width``: the stem's width (the stages have width, 2, 4, 8 times it planes);
    ``heads``: the attention pool's heads over E = 32 width features. ``image_size`` must be a
    multiple of 32. Sub-layers conv1..3, bn1..3, avgpool, layer1..4 and attnpool, named as
    OpenAI's."""

    default_name = "visual"

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), output_dim: int = 1024, heads: int = 32,
                 image_size: int = 224, width: int = 64, num_channels: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.layers = tuple(positive_int(n, "ModifiedResNet: layers") for n in layers)
        if len(self.layers) != 4:
            raise ValueError(f"ModifiedResNet: layers must give the blocks of 4 stages, got {tuple(layers)}")
        self.output_dim = positive_int(output_dim, "ModifiedResNet: output_dim")
        self.heads = positive_int(heads, "ModifiedResNet: heads")
        self.image_size = positive_int(image_size, "ModifiedResNet: image_size")
        self.width = positive_int(width, "ModifiedResNet: width")
        self.num_channels = positive_int(num_channels, "ModifiedResNet: num_channels")
        if image_size % 32:
            raise ValueError(f"ModifiedResNet: image_size must be a multiple of 32 (the tower's stride), got "
                             f"{image_size}")
        if width % 2:
            raise ValueError(f"ModifiedResNet: width must be even (the stem's first convolutions have width / 2 "
                             f"filters), got {width}")
        half = width // 2
        self.conv1, self.bn1 = _conv(half, 3, "conv1", stride=2), BatchNorm(name="bn1")
        self.conv2, self.bn2 = _conv(half, 3, "conv2"), BatchNorm(name="bn2")
        self.conv3, self.bn3 = _conv(width, 3, "conv3"), BatchNorm(name="bn3")
        self.avgpool = AvgPool2D(2, name="avgpool")
        channels = width
        for k, blocks in enumerate(self.layers):
            planes = width * 2 ** k
            setattr(self, f"layer{k + 1}", _stage(planes, blocks, 1 if k == 0 else 2, channels, f"layer{k + 1}"))
            channels = planes * CLIPBottleneck.expansion
        self.attnpool = AttentionPool2d(image_size // 32, channels, heads, output_dim, name="attnpool")

    def _path(self) -> tuple:
        stem = (self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3)
        return stem, (self.avgpool, self.layer1, self.layer2, self.layer3, self.layer4, self.attnpool)

    def _check(self, shape) -> tuple:
        expected = (self.image_size, self.image_size, self.num_channels)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ShapeError(f"{self._label()}: expected NHWC images (batch, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}), got shape {tuple(shape)}")
        return tuple(shape)

    def trace(self, shape, step):
        stem, rest = self._path()
        shape = self._check(shape)
        for layer in (*stem, *rest):
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._check(x.shape)
        stem, rest = self._path()
        for conv, bn in zip(stem[::2], stem[1::2]):
            x = F.relu(bn(conv(x)))
        for layer in rest:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {"layers": list(self.layers), "output_dim": self.output_dim, "heads": self.heads,
                "image_size": self.image_size, "width": self.width, "num_channels": self.num_channels,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, width={self.width}, heads={self.heads}, image_size={self.image_size}, "
                f"output_dim={self.output_dim}")


def _vision_config(given: dict | None) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(RESNET_VISION_DEFAULTS))
    if unknown:
        raise ValueError(f"ResNetCLIP: unknown vision_config keys {unknown}; expected some of "
                         f"{sorted(RESNET_VISION_DEFAULTS)}")
    config = {**RESNET_VISION_DEFAULTS, **given}
    config["layers"] = tuple(config["layers"])
    return config


@register_layer
class ResNetCLIP(CLIP):
    """OpenAI's CLIP with a :class:`ModifiedResNet` image tower (sub-module ``visual``, whose
    output is the image embedding) and lamina's CLIP text tower (``text_model``, then the
    bias-free ``text_projection``), called as :class:`CLIP` is. ``vision_config`` keys:
    layers, width, heads, image_size, num_channels (RN50's by default); ``text_config``:
    :class:`CLIP`'s."""

    def __init__(self, text_config: dict | None = None, vision_config: dict | None = None,
                 projection_dim: int = 1024, logit_scale_init_value: float = LOGIT_SCALE_INIT,
                 name: str | None = None):
        super().__init__(text_config, vision_config, projection_dim, logit_scale_init_value, name=name)

    def _add_image_tower(self, vision_config: dict | None) -> None:
        self.vision_config = _vision_config(vision_config)
        self.visual = ModifiedResNet(output_dim=self.projection_dim, name="visual", **self.vision_config)

    def _image_tower_shapes(self) -> list:
        v = self.vision_config
        return [(self.visual, (None, v["image_size"], v["image_size"], v["num_channels"]))]

    def _image_features(self, pixel_values) -> Tensor:
        return self.visual(pixel_values)

    def get_config(self) -> dict:
        config = super().get_config()
        config["vision_config"] = {**self.vision_config, "layers": list(self.vision_config["layers"])}
        return config

    def extra_repr(self) -> str:
        v, t = self.vision_config, self.text_config
        return (f"vision=ModifiedResNet{v['layers']} width {v['width']} at {v['image_size']}, "
                f"text={t['hidden_size']}x{t['num_hidden_layers']}, projection_dim={self.projection_dim}")


def clip_resnet(config: str = "rn50", **options) -> ResNetCLIP:
    """OpenAI's CLIP with a ResNet image tower: ``config`` 'rn50' (102,007,137 parameters),
    'rn101' (119,688,033), 'rn50x4' (178,300,601) or 'tiny' (for tests); ``options`` override
    :class:`ResNetCLIP`'s arguments (``text_config`` / ``vision_config`` entries are merged).
    Unbuilt: the weights are created on the first call or by ``model.build()``."""
    if config not in CLIP_RESNET_CONFIGS:
        raise ValueError(f"clip_resnet: config must be one of {tuple(CLIP_RESNET_CONFIGS)}, got {config!r}")
    base = CLIP_RESNET_CONFIGS[config]
    merged = {**base, **options}
    for key in ("text_config", "vision_config"):
        merged[key] = {**base[key], **options.get(key, {})}
    return ResNetCLIP(**merged)
