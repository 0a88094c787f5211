"""ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation"), in the layout of the authors' Torch code.

* Initial block: [3x3 conv of stride 2 (padding 1, no bias) to 16 - C_in maps, 2x2 max pooling of
  the input] joined along the channels (16 maps), then BN and PReLU.
* Bottleneck of C_in -> C_out channels, r = C_out / 4 inside: the main branch is a 1x1 projection
  to r (2x2 of stride 2 when downsampling; no bias) - BN - act - the main conv - BN - act - 1x1
  expansion to C_out (no bias) - BN - spatial dropout; the main conv is a 3x3 conv ('regular'),
  a 3x3 conv of dilation d ('dilated') or a 5x1 conv (no bias) then a 1x5 conv ('asymmetric').
  The shortcut is the input itself or, when downsampling, its 2x2 max pooling (the positions of
  the maxima kept) padded with zero channels up to C_out. Output: act(main + shortcut).
* Upsampling bottleneck: main branch 1x1 (no bias) - BN - ReLU - 3x3 transposed conv of stride 2
  (padding 1, output padding 1) - BN - ReLU - 1x1 (no bias) - BN; shortcut 1x1 conv (no bias) -
  BN - max unpooling at the positions kept by the matching downsampling. Output ReLU(sum).
* Stages: initial; 1.0 downsampling to 64, 1.1-1.4 regular (dropout 0.01); 2.0 downsampling to
  128, then stages 2 and 3 both regular, dilated 2, asymmetric 5, dilated 4, regular, dilated 8,
  asymmetric 5, dilated 16 (dropout 0.1); 4.0 upsampling to 64, 4.1-4.2 regular; 5.0 upsampling
  to 16, 5.1 regular; a 2x2 transposed conv of stride 2 to the classes. The encoder's activation
  is PReLU (one slope per channel), the decoder's ReLU, and every BN has eps 1e-3.

:func:`enet` at the paper's sizes has 363,843 parameters with 12 classes (CamVid's 11 and void);
the paper quotes "0.37 M" (Table 3). ``forward`` gives (N, H, W, classes) logits for H and W divisible by 8.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc_channels
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["ENET_KINDS", "ENET_MIDDLE_PATTERN", "ENet", "ENetBottleneck", "ENetDownsampling",
           "ENetInitialBlock", "ENetUpsampling", "enet", "enet_small"]

ENET_KINDS = ("regular", "dilated", "asymmetric")
ENET_MIDDLE_PATTERN = (("regular", 1), ("dilated", 2), ("asymmetric", 5), ("dilated", 4), ("regular", 1),
                       ("dilated", 8), ("asymmetric", 5), ("dilated", 16))
BN_EPS = 1e-3


def _activation(prelu: bool, name: str):
    return nn.PReLU(name=name) if prelu else nn.ReLU(name=name)


def _bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(eps=BN_EPS, name=name)


def _check_channels(label: str, in_channels: int, out_channels: int) -> tuple[int, int]:
    return positive_int(in_channels, f"{label}: in_channels"), positive_int(out_channels, f"{label}: out_channels")


def _even_map(layer, shape, channels):
    shape = nhwc_channels(layer, shape, channels)
    if any(n is not None and n % 2 for n in shape[1:3]):
        raise ShapeError(f"{layer._label()}: the map {tuple(shape)} must have an even height and width")
    return shape


@register_with_arguments
class ENetInitialBlock(Block):
    """ENet's initial block (module docstring): sub-layers ``conv``, ``pool``, ``bn``, ``act``."""

    default_name = "initial"

    def __init__(self, in_channels: int = 3, out_channels: int = 16, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = _check_channels("ENetInitialBlock", in_channels, out_channels)
        if self.out_channels <= self.in_channels:
            raise ValueError(f"ENetInitialBlock: out_channels ({out_channels}) must exceed in_channels "
                             f"({in_channels})")
        self.conv = nn.Conv2D(self.out_channels - self.in_channels, 3, stride=2, padding=1, use_bias=False,
                              name="conv")
        self.pool = nn.MaxPool2D(2, name="pool")
        self.bn = _bn("bn")
        self.act = nn.PReLU(name="act")

    def trace(self, shape, step):
        shape = _even_map(self, shape, self.in_channels)
        step(self.conv, shape)
        pooled = step(self.pool, shape)
        return step(self.act, step(self.bn, (*pooled[:3], self.out_channels)))

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        _even_map(self, tuple(x.shape), self.in_channels)
        return self.act(self.bn(F.concat([self.conv(x), self.pool(x)], axis=-1)))


def _main_conv(kind: str, channels: int, dilation: int, kernel: int) -> nn.Sequential:
    if kind == "asymmetric":
        return nn.Sequential(nn.Conv2D(channels, (kernel, 1), padding=(kernel // 2, 0), use_bias=False, name="0"),
                             nn.Conv2D(channels, (1, kernel), padding=(0, kernel // 2), name="1"), name="conv")
    return nn.Sequential(nn.Conv2D(channels, 3, padding=dilation, dilation=dilation, name="0"), name="conv")


@register_with_arguments
class ENetBottleneck(Block):
    """A non-downsampling bottleneck of ``channels`` channels (module docstring): ``kind``
    'regular', 'dilated' (``dilation``) or 'asymmetric' (``kernel`` x 1 then 1 x ``kernel``).
    Sub-layers ``project``, ``bn1``, ``act1``, ``conv`` ('0' [, '1']), ``bn2``, ``act2``,
    ``expand``, ``bn3``, ``dropout``, ``act``."""

    default_name = "bottleneck"

    def __init__(self, channels: int, kind: str = "regular", dilation: int = 1, kernel: int = 5,
                 dropout: float = 0.1, prelu: bool = True, projection_ratio: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "ENetBottleneck: channels")
        if kind not in ENET_KINDS:
            raise ValueError(f"ENetBottleneck: kind must be one of {ENET_KINDS}, got {kind!r}")
        self.kind, self.dilation, self.kernel = kind, positive_int(dilation, "ENetBottleneck: dilation"), kernel
        if kind == "asymmetric" and (positive_int(kernel, "ENetBottleneck: kernel") % 2 == 0):
            raise ValueError(f"ENetBottleneck: the asymmetric kernel must be odd, got {kernel}")
        inner = max(1, self.channels // positive_int(projection_ratio, "ENetBottleneck: projection_ratio"))
        self.project = nn.Conv2D(inner, 1, use_bias=False, name="project")
        self.bn1, self.act1 = _bn("bn1"), _activation(prelu, "act1")
        self.conv = _main_conv(kind, inner, self.dilation if kind == "dilated" else 1, kernel)
        self.bn2, self.act2 = _bn("bn2"), _activation(prelu, "act2")
        self.expand = nn.Conv2D(self.channels, 1, use_bias=False, name="expand")
        self.bn3 = _bn("bn3")
        self.dropout = nn.SpatialDropout2D(dropout, name="dropout")
        self.act = _activation(prelu, "act")

    def _main(self):
        return (self.project, self.bn1, self.act1, self.conv, self.bn2, self.act2, self.expand, self.bn3,
                self.dropout)

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels)
        out = shape
        for layer in self._main():
            out = step(layer, out)
        return step(self.act, out)

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        nhwc_channels(self, tuple(x.shape), self.channels)
        out = x
        for layer in self._main():
            out = layer(out)
        return self.act(out + x)


@register_with_arguments
class ENetDownsampling(Block):
    """A downsampling bottleneck (module docstring): ``forward(x)`` gives (y, indices), the
    positions of the shortcut pooling's maxima for :class:`ENetUpsampling`. Sub-layers as
    :class:`ENetBottleneck` ('conv' a 3x3 conv) and ``pool``."""

    default_name = "downsampling"

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1, prelu: bool = True,
                 projection_ratio: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = _check_channels("ENetDownsampling", in_channels, out_channels)
        if self.out_channels < self.in_channels:
            raise ValueError(f"ENetDownsampling: out_channels ({out_channels}) must be at least in_channels "
                             f"({in_channels})")
        inner = max(1, self.out_channels // positive_int(projection_ratio, "ENetDownsampling: projection_ratio"))
        self.project = nn.Conv2D(inner, 2, stride=2, use_bias=False, name="project")
        self.bn1, self.act1 = _bn("bn1"), _activation(prelu, "act1")
        self.conv = nn.Conv2D(inner, 3, padding=1, name="conv")
        self.bn2, self.act2 = _bn("bn2"), _activation(prelu, "act2")
        self.expand = nn.Conv2D(self.out_channels, 1, use_bias=False, name="expand")
        self.bn3 = _bn("bn3")
        self.dropout = nn.SpatialDropout2D(dropout, name="dropout")
        self.pool = nn.MaxPool2D(2, return_indices=True, name="pool")
        self.act = _activation(prelu, "act")

    def _main(self):
        return (self.project, self.bn1, self.act1, self.conv, self.bn2, self.act2, self.expand, self.bn3,
                self.dropout)

    def trace(self, shape, step):
        out = _even_map(self, shape, self.in_channels)
        for layer in self._main():
            out = step(layer, out)
        return step(self.act, out)

    def forward(self, x) -> tuple[Tensor, object]:
        x = x if isinstance(x, Tensor) else Tensor(x)
        _even_map(self, tuple(x.shape), self.in_channels)
        out = x
        for layer in self._main():
            out = layer(out)
        shortcut, indices = self.pool(x)
        extra = self.out_channels - self.in_channels
        if extra:
            shortcut = F.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
        return self.act(out + shortcut), indices


@register_with_arguments
class ENetUpsampling(Block):
    """An upsampling bottleneck (module docstring): ``forward(x, indices)`` doubles the height
    and width, ``indices`` those of the matching :class:`ENetDownsampling` (out_channels maps).
    Sub-layers ``project``, ``bn1``, ``act1``, ``conv`` (transposed), ``bn2``, ``act2``,
    ``expand``, ``bn3``, ``shortcut``, ``shortcut_bn``, ``unpool``, ``act``."""

    default_name = "upsampling"

    def __init__(self, in_channels: int, out_channels: int, prelu: bool = False, projection_ratio: int = 4,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.out_channels = _check_channels("ENetUpsampling", in_channels, out_channels)
        inner = max(1, self.out_channels // positive_int(projection_ratio, "ENetUpsampling: projection_ratio"))
        self.project = nn.Conv2D(inner, 1, use_bias=False, name="project")
        self.bn1, self.act1 = _bn("bn1"), _activation(prelu, "act1")
        self.conv = nn.Conv2DTranspose(inner, 3, stride=2, padding=1, output_padding=1, name="conv")
        self.bn2, self.act2 = _bn("bn2"), _activation(prelu, "act2")
        self.expand = nn.Conv2D(self.out_channels, 1, use_bias=False, name="expand")
        self.bn3 = _bn("bn3")
        self.shortcut = nn.Conv2D(self.out_channels, 1, use_bias=False, name="shortcut")
        self.shortcut_bn = _bn("shortcut_bn")
        self.unpool = nn.MaxUnpool2D(2, name="unpool")
        self.act = _activation(prelu, "act")

    def _main(self):
        return (self.project, self.bn1, self.act1, self.conv, self.bn2, self.act2, self.expand, self.bn3)

    def trace(self, shape, step):
        if shape and isinstance(shape[0], (list, tuple)):     # the shapes of (x, indices)
            shape = shape[0]
        shape = nhwc_channels(self, shape, self.in_channels)
        step(self.shortcut_bn, step(self.shortcut, shape))
        out = shape
        for layer in self._main():
            out = step(layer, out)
        return step(self.act, out)

    def forward(self, x, indices) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        nhwc_channels(self, tuple(x.shape), self.in_channels)
        out = x
        for layer in self._main():
            out = layer(out)
        shortcut = self.unpool(self.shortcut_bn(self.shortcut(x)), indices, output_size=tuple(out.shape[1:3]))
        return self.act(out + shortcut)


@register_with_arguments
class ENet(Block):
    """ENet (module docstring). ``widths`` (initial, stage 1, stage 2) channels, ``stage1_blocks``
    regular bottlenecks after 1.0, ``middle_stages`` repeats of ``pattern`` ((kind, dilation or
    asymmetric kernel) pairs) after 2.0, ``stage4_blocks`` and ``stage5_blocks`` regular decoder
    bottlenecks. Sub-layers ``initial``, ``down1``, ``stage1`` (a Sequential), ``down2``,
    ``stage2`` (a Sequential of all the middle bottlenecks), ``up4``, ``stage4``, ``up5``,
    ``stage5`` and ``fullconv``."""

    default_name = "enet"

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(16, 64, 128), stage1_blocks: int = 4,
                 middle_stages: int = 2, pattern=ENET_MIDDLE_PATTERN, stage4_blocks: int = 2,
                 stage5_blocks: int = 1, dropouts=(0.01, 0.1), name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "ENet: num_classes")
        self.in_channels = positive_int(in_channels, "ENet: in_channels")
        if len(widths) != 3 or len(dropouts) != 2:
            raise ValueError(f"ENet: widths must hold 3 channel counts and dropouts 2 rates, got {widths!r} "
                             f"and {dropouts!r}")
        w0, w1, w2 = (positive_int(w, "ENet: widths") for w in widths)
        self.initial = ENetInitialBlock(self.in_channels, w0, name="initial")
        self.down1 = ENetDownsampling(w0, w1, dropouts[0], name="down1")
        self.stage1 = nn.Sequential(*[ENetBottleneck(w1, dropout=dropouts[0], name=str(k))
                                      for k in range(stage1_blocks)], name="stage1")
        self.down2 = ENetDownsampling(w1, w2, dropouts[1], name="down2")
        middle = [self._middle(w2, kind, size, dropouts[1], str(k))
                  for k, (kind, size) in enumerate(tuple(pattern) * middle_stages)]
        self.stage2 = nn.Sequential(*middle, name="stage2")
        self.up4 = ENetUpsampling(w2, w1, name="up4")
        self.stage4 = nn.Sequential(*[ENetBottleneck(w1, dropout=0.0, prelu=False, name=str(k))
                                      for k in range(stage4_blocks)], name="stage4")
        self.up5 = ENetUpsampling(w1, w0, name="up5")
        self.stage5 = nn.Sequential(*[ENetBottleneck(w0, dropout=0.0, prelu=False, name=str(k))
                                      for k in range(stage5_blocks)], name="stage5")
        self.fullconv = nn.Conv2DTranspose(self.num_classes, 2, stride=2, name="fullconv")

    @staticmethod
    def _middle(channels: int, kind: str, size: int, dropout: float, name: str) -> ENetBottleneck:
        if kind == "asymmetric":
            return ENetBottleneck(channels, kind, kernel=size, dropout=dropout, name=name)
        return ENetBottleneck(channels, kind, dilation=size, dropout=dropout, name=name)

    def _check(self, shape):
        shape = nhwc_channels(self, shape, self.in_channels)
        if any(n is not None and n % 8 for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: the input {tuple(shape)} must have a height and width divisible by 8")
        return shape

    def trace(self, shape, step):
        shape = self._check(shape)
        for layer in (self.initial, self.down1, self.stage1, self.down2, self.stage2, self.up4, self.stage4,
                      self.up5, self.stage5, self.fullconv):
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        self._check(tuple(x.shape))
        x, indices1 = self.down1(self.initial(x))
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage4(self.up4(self.stage2(x), indices2))
        x = self.stage5(self.up5(x, indices1))
        return self.fullconv(x)


def enet(num_classes: int = 12, input_shape: tuple[int, int, int] = (512, 512, 3)) -> ENet:
    """ENet at the paper's sizes (module docstring; unbuilt): 363,843 parameters with 12 classes."""
    input_shape = check_input(input_shape, "enet")
    return finish(ENet(num_classes, input_shape[2]), input_shape)


def enet_small(num_classes: int, input_shape: tuple[int, int, int], widths=(8, 16, 32)) -> ENet:
    """A small ENet: one regular bottleneck in stages 1, 4 and 5, and stage 2 regular, dilated
    2, asymmetric 5, dilated 4 (unbuilt)."""
    input_shape = check_input(input_shape, "enet_small")
    model = ENet(num_classes, input_shape[2], widths, stage1_blocks=1, middle_stages=1,
                 pattern=ENET_MIDDLE_PATTERN[:4], stage4_blocks=1, stage5_blocks=1, name="enet_small")
    return finish(model, input_shape)
