"""MobileViT (Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and
Mobile-friendly Vision Transformer") on NHWC images.

The MobileViT block mixes local information with convolutions and global information with
a transformer, keeping the spatial layout of the feature map (input x of C channels):

    local:   3x3 conv C - BN - SiLU, then 1x1 conv to d channels (no bias, no norm)
    unfold:  the (H, W, d) map cut into N = (H / p_h)(W / p_w) non-overlapping p_h x p_w
             patches; the pixels at the same place in every patch form one sequence, so the
             map becomes P = p_h p_w sequences of N tokens of d features (:func:`unfold_patches`)
    global:  L pre-norm transformer layers (self-attention, FFN d -> d_ff -> d with SiLU) over
             each sequence, then LayerNorm
    fold:    the sequences put back into an (H, W, d) map (:func:`fold_patches`)
    fusion:  1x1 conv to C - BN - SiLU, concatenated with x along the channels (2C), then
             3x3 conv C - BN - SiLU

Every pixel sees the pixels of its patch through the 3x3 convolution and every patch through
the transformer, so each output has the whole image in its receptive field.

The network (:func:`mobilevit`): a 3x3/2 conv - BN - SiLU stem, MobileNet v2 inverted residual
blocks with SiLU (:class:`~lamina.models.InvertedResidual`), three stages each opening with
a stride-2 inverted residual followed by a MobileViT block (2, 4 and 3 transformer layers,
2x2 patches, d_ff = 2d), a 1x1 conv - BN - SiLU, global average pooling, dropout and a
linear classifier. Parameter counts with 1000 classes: mobilevit_xxs 1,272,024;
mobilevit_xs 2,317,848; mobilevit_s 5,578,632 (the paper's 1.3M, 2.3M and 5.6M).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, concat_shapes, finish, nhwc_channels
from lamina.models.mobilenet_v2 import InvertedResidual
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import pair
from lamina.nn.module import as_tensor

__all__ = ["MOBILEVIT_CONFIGS", "MobileViTBlock", "fold_patches", "mobilevit", "mobilevit_s", "mobilevit_xs",
           "mobilevit_xxs", "unfold_patches"]

# variant -> stem, stage-1 and stage-2 channels; (channels, d) of each MobileViT stage; the last 1x1
# conv's width; the inverted residuals' expansion t. Optional keys: "depths" (transformer layers
# of each MobileViT stage, default STAGE_DEPTHS) and "stem_stride" (default 2).
MOBILEVIT_CONFIGS: dict[str, dict] = {
    "xxs": {"channels": (16, 16, 24), "stages": ((48, 64), (64, 80), (80, 96)), "last": 320, "expand": 2},
    "xs": {"channels": (16, 32, 48), "stages": ((64, 96), (80, 120), (96, 144)), "last": 384, "expand": 4},
    "s": {"channels": (16, 32, 64), "stages": ((96, 144), (128, 192), (160, 240)), "last": 640, "expand": 4},
}
STAGE_DEPTHS = (2, 4, 3)     # transformer layers of the three MobileViT blocks


def _check_divisible(x, patch: tuple[int, int], fn: str) -> None:
    if x.ndim != 4 or x.shape[1] % patch[0] or x.shape[2] % patch[1]:
        raise ShapeError(f"{fn}: got a map of shape {tuple(x.shape)}; expected (batch, height, width, channels) "
                         f"with height and width multiples of the patch size {patch}")


def unfold_patches(x, patch_size) -> Tensor:
    """(B, H, W, d) -> (B p_h p_w, N, d): row ``b P + i p_w + j`` is the sequence of the pixels
    at (i, j) inside every patch, the N = (H / p_h)(W / p_w) patches read row by row."""
    x = as_tensor(x)
    ph, pw = pair(patch_size, "unfold_patches: patch_size")
    _check_divisible(x, (ph, pw), "unfold_patches")
    b, h, w, d = x.shape
    x = F.reshape(x, b, h // ph, ph, w // pw, pw, d)
    x = F.transpose(x, 0, 2, 4, 1, 3, 5)
    return F.reshape(x, b * ph * pw, (h // ph) * (w // pw), d)


def fold_patches(x, patch_size, height: int, width: int) -> Tensor:
    """The inverse of :func:`unfold_patches`: (B p_h p_w, N, d) -> (B, height, width, d)."""
    x = as_tensor(x)
    ph, pw = pair(patch_size, "fold_patches: patch_size")
    nh, nw = height // ph, width // pw
    if x.ndim != 3 or height % ph or width % pw or x.shape[0] % (ph * pw) or x.shape[1] != nh * nw:
        raise ShapeError(f"fold_patches: got sequences of shape {tuple(x.shape)} for a {height}x{width} map in "
                         f"{ph}x{pw} patches; expected (batch * {ph * pw}, {nh * nw}, channels)")
    d = x.shape[2]
    x = F.reshape(x, -1, ph, pw, nh, nw, d)
    x = F.transpose(x, 0, 3, 1, 4, 2, 5)
    return F.reshape(x, -1, height, width, d)


def conv_bn_silu(filters: int, kernel_size: int, stride: int = 1, name: str | None = None) -> nn.Sequential:
    """Conv2D ('same' padding, no bias) - BatchNorm - SiLU, layers named '0', '1', '2'."""
    return nn.Sequential(nn.Conv2D(filters, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                                   use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), nn.SiLU(name="2"), name=name)


@register_with_arguments
class MobileViTBlock(Block):
    """The MobileViT block (module docstring) on ``channels`` channels, with ``depth``
    transformer layers of width ``dim`` (d), ``num_heads`` heads and feed-forward width
    ``mlp_dim`` (default 2d) over ``patch_size`` patches. Sub-layers: ``conv_kxk``,
    ``conv_1x1``, ``transformer`` (the layers and a final LayerNorm), ``conv_proj``,
    ``conv_fusion``. Height and width must be multiples of the patch size."""

    default_name = "mobilevit_block"

    def __init__(self, channels: int, dim: int, depth: int = 2, num_heads: int = 4, mlp_dim: int | None = None,
                 patch_size=2, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.channels, self.dim, self.depth, self.num_heads = int(channels), int(dim), int(depth), int(num_heads)
        if min(self.channels, self.dim, self.depth, self.num_heads) < 1 or self.dim % self.num_heads:
            raise ValueError(f"MobileViTBlock: channels, dim, depth and num_heads must be positive with dim a "
                             f"multiple of num_heads, got {channels}, {dim}, {depth}, {num_heads}")
        self.mlp_dim = 2 * self.dim if mlp_dim is None else int(mlp_dim)
        self.patch_size = pair(patch_size, "MobileViTBlock: patch_size")
        self.conv_kxk = conv_bn_silu(self.channels, 3, name="conv_kxk")
        self.conv_1x1 = nn.Conv2D(self.dim, 1, use_bias=False, name="conv_1x1")
        layers = [nn.TransformerEncoderLayer(self.dim, self.num_heads, self.mlp_dim, dropout=dropout,
                                             activation="silu", norm_first=True, name=str(i)) for i in range(depth)]
        self.transformer = nn.Sequential(*layers, nn.LayerNorm(-1, name="norm"), name="transformer")
        self.conv_proj = conv_bn_silu(self.channels, 1, name="conv_proj")
        self.conv_fusion = conv_bn_silu(self.channels, 3, name="conv_fusion")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels, "channels")
        local = step(self.conv_1x1, step(self.conv_kxk, shape))
        ph, pw = self.patch_size
        h, w = shape[1], shape[2]
        if (h is not None and h % ph) or (w is not None and w % pw):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected height and width "
                             f"multiples of the patch size {self.patch_size}")
        tokens = None if h is None or w is None else (h // ph) * (w // pw)
        step(self.transformer, (None, tokens, self.dim))
        projected = step(self.conv_proj, local)
        return step(self.conv_fusion, concat_shapes(self, [shape, projected]))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _, h, w, _ = x.shape
        local = self.conv_1x1(self.conv_kxk(x))
        tokens = self.transformer(unfold_patches(local, self.patch_size))
        projected = self.conv_proj(fold_patches(tokens, self.patch_size, h, w))
        return self.conv_fusion(F.concat([x, projected], axis=-1))

    def extra_repr(self) -> str:
        return (f"{self.channels} channels, d={self.dim}, depth={self.depth}, heads={self.num_heads}, "
                f"patch={self.patch_size}")


def mobilevit(variant: str | dict = "xxs", num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3),
              dropout: float = 0.1, classifier_activation: str | None = None, num_heads: int = 4,
              patch_size=2) -> nn.Sequential:
    """MobileViT (unbuilt) of ``variant`` 'xxs', 'xs' or 's' (:data:`MOBILEVIT_CONFIGS`, the
    paper's widths), or a config dict of the same keys for other sizes; outputs logits unless
    ``classifier_activation``."""
    if isinstance(variant, dict):
        config, variant = variant, "custom"
    elif variant in MOBILEVIT_CONFIGS:
        config = MOBILEVIT_CONFIGS[variant]
    else:
        raise ValueError(f"mobilevit: variant must be one of {sorted(MOBILEVIT_CONFIGS)} or a config dict, "
                         f"got {variant!r}")
    depths = tuple(config.get("depths", STAGE_DEPTHS))
    if len(depths) != len(config["stages"]):
        raise ValueError(f"mobilevit: {len(config['stages'])} MobileViT stages but depths {depths}")
    input_shape = check_input(input_shape, "mobilevit")
    stem, c1, c2 = config["channels"]
    t = config["expand"]
    layers: list = [conv_bn_silu(stem, 3, stride=config.get("stem_stride", 2), name="stem"),
                    InvertedResidual(stem, c1, 1, t, name="stage1", activation="silu"),
                    nn.Sequential(*(InvertedResidual(c1 if i == 0 else c2, c2, 2 if i == 0 else 1, t, name=str(i),
                                                     activation="silu") for i in range(3)), name="stage2")]
    channels = c2
    for k, ((out, dim), depth) in enumerate(zip(config["stages"], depths)):
        layers.append(nn.Sequential(
            InvertedResidual(channels, out, 2, t, name="0", activation="silu"),
            MobileViTBlock(out, dim, depth, num_heads=num_heads, patch_size=patch_size, name="1"),
            name=f"stage{k + 3}"))
        channels = out
    model = nn.Sequential(
        *layers,
        conv_bn_silu(config["last"], 1, name="final_conv"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Dropout(dropout, name="dropout"),
        nn.Dense(num_classes, name="classifier"),
        *classifier_layers(classifier_activation),
        name=f"mobilevit_{variant}",
    )
    return finish(model, input_shape)


def mobilevit_xxs(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3)) -> nn.Sequential:
    """MobileViT-XXS (about 1.3M parameters with 1000 classes)."""
    return mobilevit("xxs", num_classes, input_shape)


def mobilevit_xs(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3)) -> nn.Sequential:
    """MobileViT-XS (about 2.3M parameters with 1000 classes)."""
    return mobilevit("xs", num_classes, input_shape)


def mobilevit_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (256, 256, 3)) -> nn.Sequential:
    """MobileViT-S (about 5.6M parameters with 1000 classes)."""
    return mobilevit("s", num_classes, input_shape)
