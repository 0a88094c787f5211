"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"): a score for every class at every pixel.

A contracting path (the encoder) and an expanding path (the decoder) of ``depth`` levels
each, joined at the bottom by a bottleneck:

    enc_l:    (conv 3x3 - [BN] - ReLU) x 2, F_l = base_filters 2^(l-1) filters,
              then pool_l, a 2x2 max pool halving the map (l = 1 .. depth)
    bottleneck: the same double convolution with base_filters 2^depth filters
    up_l:     doubles the map and halves the channels to F_l: a 2x2 transposed convolution
              of stride 2 (``upsampling='transpose'``, the paper's "up-convolution") or a
              bilinear resize followed by a 1x1 convolution (``'bilinear'``)
    dec_l:    the skip connection [enc_l's output, up_l's output] joined along the channels
              (2 F_l of them), then the double convolution with F_l filters (l = depth .. 1)
    head:     a 1x1 convolution to ``num_classes`` scores per pixel (logits)

The skip connections hand the decoder the encoder's fine detail at every scale, which the
pooled bottleneck has lost, so that the boundaries of the predicted regions are sharp.

``padding='same'`` keeps the maps' sizes through the convolutions: the output has the
input's height and width, which must be divisible by 2^depth. ``padding='valid'`` is the
paper's layout: each convolution trims a pixel at every border, the output is smaller than
the input (572x572 -> 388x388 for depth 4), and each skip connection is cropped about its
centre to the size of the upsampled map. With ``batch_norm`` the 3x3 convolutions have no
bias (batch normalization's shift replaces it); without, they have one.

Train it with a per-pixel cross-entropy: ``categorical_cross_entropy(logits, labels,
from_logits=True)`` takes the (N, H, W, num_classes) scores with (N, H, W) integer labels.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, PathBlock, check_input, classifier_layers, concat_shapes, finish, nhwc
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["DoubleConv", "UNet", "unet"]

PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")


@register_layer
class DoubleConv(PathBlock):
    """Two 3x3 convolutions of ``filters`` filters, each followed by batch normalization (with
    ``batch_norm``) and a ReLU: U-Net's unit at every level. Sub-layers ``conv1``, [``bn1``],
    ``relu1``, ``conv2``, [``bn2``], ``relu2``."""

    default_name = "double_conv"

    def __init__(self, filters: int, padding: str = "same", batch_norm: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "DoubleConv: filters")
        if padding not in PADDINGS:
            raise ValueError(f"DoubleConv: padding must be one of {PADDINGS}, got {padding!r}")
        self.padding, self.batch_norm = padding, bool(batch_norm)
        for k in (1, 2):
            setattr(self, f"conv{k}", nn.Conv2D(filters, 3, padding=padding, use_bias=not batch_norm, name=f"conv{k}"))
            if batch_norm:
                setattr(self, f"bn{k}", nn.BatchNorm(name=f"bn{k}"))
            setattr(self, f"relu{k}", nn.ReLU(name=f"relu{k}"))

    def _path(self):
        return tuple(self._modules.values())

    def get_config(self) -> dict:
        return {"filters": self.filters, "padding": self.padding, "batch_norm": self.batch_norm, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.filters}, padding={self.padding!r}" + (", batch_norm" if self.batch_norm else "")


def _upsampler(filters: int, upsampling: str, name: str) -> nn.Module:
    """A layer doubling the height and width of a map and giving it ``filters`` channels."""
    if upsampling == "transpose":
        return nn.Conv2DTranspose(filters, 2, stride=2, name=name)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", name="upsample"),
                         nn.Conv2D(filters, 1, name="conv"), name=name)


def _center_crop_offsets(skip_shape, shape) -> tuple[int, int]:
    """The top and left offsets of a centred (h, w) window of ``shape`` in ``skip_shape``."""
    return (skip_shape[1] - shape[1]) // 2, (skip_shape[2] - shape[2]) // 2


@register_layer
class UNet(Block):
    """The whole U-Net (see the module docstring): sub-layers ``enc1``, ``pool1``, ...,
    ``enc{depth}``, ``pool{depth}``, ``bottleneck``, ``up{depth}``, ``dec{depth}``, ...,
    ``up1``, ``dec1``, ``head`` (and ``predictions`` with ``classifier_activation``).
    (N, H, W, C) images -> (N, H', W', num_classes) scores, H' = H and W' = W with
    ``padding='same'``."""

    default_name = "unet"

    def __init__(self, num_classes: int, depth: int = 4, base_filters: int = 64, padding: str = "same",
                 batch_norm: bool = True, upsampling: str = "transpose", classifier_activation: str | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "UNet: num_classes")
        self.depth = positive_int(depth, "UNet: depth")
        self.base_filters = positive_int(base_filters, "UNet: base_filters")
        if padding not in PADDINGS:
            raise ValueError(f"UNet: padding must be one of {PADDINGS}, got {padding!r}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"UNet: upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
        self.padding, self.batch_norm, self.upsampling = padding, bool(batch_norm), upsampling
        self.classifier_activation = classifier_activation
        filters = [base_filters * 2 ** level for level in range(depth + 1)]  # F_1 .. F_depth, then the bottleneck's
        for level in range(1, depth + 1):
            setattr(self, f"enc{level}", DoubleConv(filters[level - 1], padding, batch_norm, name=f"enc{level}"))
            setattr(self, f"pool{level}", nn.MaxPool2D(2, name=f"pool{level}"))
        self.bottleneck = DoubleConv(filters[depth], padding, batch_norm, name="bottleneck")
        for level in range(depth, 0, -1):
            setattr(self, f"up{level}", _upsampler(filters[level - 1], upsampling, f"up{level}"))
            setattr(self, f"dec{level}", DoubleConv(filters[level - 1], padding, batch_norm, name=f"dec{level}"))
        self.head = nn.Conv2D(num_classes, 1, name="head")
        for layer in classifier_layers(classifier_activation):
            setattr(self, layer.name, layer)

    def _level(self, kind: str, level: int) -> nn.Module:
        return self._modules[f"{kind}{level}"]

    def _check_size(self, shape, level: int, what: str) -> None:
        """The map entering pool_l must have even sides (its rows and columns pair up)."""
        h, w = shape[1], shape[2]
        if (h is not None and (h < 2 or h % 2)) or (w is not None and (w < 2 or w % 2)):
            if self.padding == "same":
                raise ShapeError(f"{self._label()}: got an input of {what}; with padding='same' the height and "
                                 f"width must be divisible by 2^depth = {2 ** self.depth}")
            raise ShapeError(f"{self._label()}: got an input of {what}; with padding='valid' the map reaching "
                             f"pool{level} is {h}x{w}, which 2x2 pooling cannot halve (it needs even sides; each "
                             "3x3 convolution trims 2 pixels)")

    def _check_positive(self, shape, what: str) -> None:
        if any(n is not None and n < 1 for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of {what}, too small for depth {self.depth} with "
                             "padding='valid' (the maps shrink to nothing)")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        what = f"shape {tuple(shape)}"
        skips = []
        for level in range(1, self.depth + 1):
            shape = step(self._level("enc", level), shape)
            self._check_positive(shape, what)
            self._check_size(shape, level, what)
            skips.append(shape)
            shape = step(self._level("pool", level), shape)
        shape = step(self.bottleneck, shape)
        self._check_positive(shape, what)
        for level in range(self.depth, 0, -1):
            shape = step(self._level("up", level), shape)
            # the skip connection, cropped to the upsampled map's size, joins it
            shape = concat_shapes(self, [(*shape[:3], skips[level - 1][3]), shape])
            shape = step(self._level("dec", level), shape)
            self._check_positive(shape, what)
        shape = step(self.head, shape)
        if "predictions" in self._modules:
            shape = step(self.predictions, shape)
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        what = f"shape {tuple(x.shape)}"
        skips = []
        for level in range(1, self.depth + 1):
            x = self._level("enc", level)(x)
            self._check_positive(x.shape, what)
            self._check_size(x.shape, level, what)
            skips.append(x)
            x = self._level("pool", level)(x)
        x = self.bottleneck(x)
        for level in range(self.depth, 0, -1):
            x = self._level("up", level)(x)
            skip = skips[level - 1]
            if skip.shape[1:3] != x.shape[1:3]:
                top, left = _center_crop_offsets(skip.shape, x.shape)
                skip = F.getitem(skip, (slice(None), slice(top, top + x.shape[1]), slice(left, left + x.shape[2])))
            x = self._level("dec", level)(F.concat([skip, x], axis=-1))
        x = self.head(x)
        if "predictions" in self._modules:
            x = self.predictions(x)
        return x

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "depth": self.depth, "base_filters": self.base_filters,
                "padding": self.padding, "batch_norm": self.batch_norm, "upsampling": self.upsampling,
                "classifier_activation": self.classifier_activation, "name": self.name}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, depth={self.depth}, base_filters={self.base_filters}, "
                f"padding={self.padding!r}, upsampling={self.upsampling!r}")


def _check_input_size(input_shape: tuple[int, int, int], depth: int, padding: str) -> None:
    """With padding='same', height and width must be divisible by 2^depth; with 'valid', every
    map entering a pooling must have even sides and no map may shrink to nothing."""
    h, w, _ = input_shape
    if padding == "same":
        if h % 2 ** depth or w % 2 ** depth:
            raise ValueError(f"unet: input_shape {input_shape} has a height and width not divisible by "
                             f"2^depth = {2 ** depth} (depth {depth}); with padding='same' each of the {depth} "
                             "poolings halves them exactly")
        return
    for n in (h, w):
        for _ in range(depth):  # two 3x3 convolutions trim 4 pixels, then the pooling halves
            n -= 4
            if n < 2 or n % 2:
                raise ValueError(f"unet: input_shape {input_shape} does not fit depth {depth} with padding='valid': "
                                 "every map entering a 2x2 pooling (its size less 4 for the two 3x3 convolutions) "
                                 "must have even sides of at least 2 (e.g. 572x572 for depth 4)")
            n //= 2
        n -= 4  # the bottleneck
        for _ in range(depth):  # upsampling doubles, the two convolutions trim 4
            n = 2 * n - 4 if n >= 1 else n
        if n < 1:
            raise ValueError(f"unet: input_shape {input_shape} is too small for depth {depth} with "
                             "padding='valid' (the maps shrink to nothing)")


def unet(input_shape: tuple[int, int, int] = (256, 256, 3), num_classes: int = 2, depth: int = 4,
         base_filters: int = 64, padding: str = "same", batch_norm: bool = True, upsampling: str = "transpose",
         classifier_activation: str | None = None) -> UNet:
    """A U-Net (unbuilt) for images of ``input_shape`` (height, width, channels): ``depth``
    levels of double 3x3 convolutions with base_filters 2^(l-1) filters, max pooling, a
    bottleneck, and a decoder that upsamples (``upsampling``: 'transpose' or 'bilinear'),
    joins the skip connection and convolves; scores (N, H', W', num_classes) per pixel
    (logits unless ``classifier_activation``). See the module docstring.

    ``padding='same'`` (height and width divisible by 2^depth, else a ``ValueError``) gives
    an output of the input's size; ``'valid'`` is the paper's cropping layout.
    Depth 4, 64 base filters, 2 classes, transposed convolutions: 31,030,658 parameters
    without batch norm (the paper's network), 31,036,546 with it.
    """
    input_shape = check_input(input_shape, "unet")
    depth = positive_int(depth, "unet: depth")
    if padding not in PADDINGS:
        raise ValueError(f"unet: padding must be one of {PADDINGS}, got {padding!r}")
    _check_input_size(input_shape, depth, padding)
    model = UNet(num_classes, depth=depth, base_filters=base_filters, padding=padding, batch_norm=batch_norm,
                 upsampling=upsampling, classifier_activation=classifier_activation, name="unet")
    return finish(model, input_shape)
