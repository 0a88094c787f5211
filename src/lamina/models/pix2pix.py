"""pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
Networks"): the U-Net generator and the PatchGAN discriminator, laid out as in the authors'
reference code ("unet_256" / "unet_128", "basic" / "n_layers" / "pixel").

Generator, ``num_downs`` = n levels (8 for 256x256 images, 7 for 128x128), f_k = ngf
min(2^(k-1), 8) filters at level k (C64-C128-C256-C512-C512-...):

    down_1:  conv 4x4 / 2 (in -> f_1)                                              e_1
    down_k:  conv 4x4 / 2 (f_(k-1) -> f_k) - norm (none at k = n)     e_k = down_k(a_(k-1))
             a_k = LeakyReLU_0.2(e_k), the map passed down and along the skip connection
    up_n:    ReLU - transposed conv 4x4 / 2 (f_n -> f_(n-1)) - norm                 d_n
    up_k:    ReLU - transposed conv 4x4 / 2 (2 f_k -> f_(k-1)) - norm [- dropout 0.5]
             d_k = up_k([a_k, d_(k+1)]), the skip joined first along the channels
    up_1:    ReLU - transposed conv 4x4 / 2 (2 f_1 -> out channels, with bias) - tanh

Dropout (0.5, also the generator's only noise) is in the decoder blocks of levels 5 .. n-1,
the 512-filter ones under the innermost: three for unet_256. (The reference's in-place
LeakyReLU also makes its skip carry a_k rather than e_k; the ReLU that opens up_k gives both
the same output.) With batch norm every convolution but the last has no bias, as in the
reference (even the two that no norm follows).

PatchGAN discriminator (``n_layers`` = 3, the paper's 70x70 receptive field), on the input
image and the output image joined along the channels:

    conv 4x4 / 2 (ndf) - LeakyReLU 0.2
    n_layers - 1 times: conv 4x4 / 2 (ndf min(2^k, 8)) - norm - LeakyReLU 0.2
    conv 4x4 / 1 (ndf min(2^n_layers, 8)) - norm - LeakyReLU 0.2
    conv 4x4 / 1 (1): one logit per patch, (N, 30, 30, 1) for 256x256 inputs

All convolutions pad 1 pixel with zeros. ``n_layers=0`` is the PixelGAN (1x1 receptive
field): conv 1x1 (ndf) - LeakyReLU - conv 1x1 (2 ndf) - norm - LeakyReLU - conv 1x1 (1).

The pix2pix cost (:class:`lamina.train.Pix2PixTrainer`): for input x, target y and D's logits
on the pair [x, image], J_G = gan(D([x, G(x)]), real) + lambda_L1 |G(x) - y|_1 (lambda_L1 =
100, the L1 a mean over pixels), J_D = (gan(D([x, y]), real) + gan(D([x, G(x)]), fake)) / 2.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, PathBlock, nhwc
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["NORMS", "PatchGANDiscriminator", "Pix2PixGenerator", "norm_layer"]

NORMS = ("batch", "instance", None)
SLOPE = 0.2


def check_norm(norm, who: str) -> str | None:
    if norm not in NORMS:
        raise ValueError(f"{who}: norm must be one of {NORMS}, got {norm!r}")
    return norm


def norm_layer(norm: str | None, name: str) -> list[nn.Module]:
    """The reference code's normalization: 'batch' (learned scale and shift), 'instance'
    (no learned parameters, no running statistics) or None (no layer)."""
    if norm == "batch":
        return [nn.BatchNorm(name=name)]
    if norm == "instance":
        return [nn.InstanceNorm2D(name=name)]
    return []


def check_channels(layer: nn.Module, shape, in_channels: int | None) -> tuple:
    """An NHWC ``shape``, with its channels checked against ``in_channels`` when given."""
    shape = nhwc(layer, shape)
    if in_channels is not None and shape[3] is not None and shape[3] != in_channels:
        raise ShapeError(f"{layer._label()}: got an input of shape {tuple(shape)}; expected {in_channels} channels "
                         f"(the model was made for in_channels={in_channels})")
    return shape


@register_layer
class Pix2PixGenerator(Block):
    """The reference U-Net generator (module docstring): (N, H, W, C_in) images -> (N, H, W,
    ``out_channels``) in [-1, 1], H and W divisible by 2^``num_downs`` (256x256 for 8,
    128x128 for 7). Sub-layers ``down1`` .. ``down{n}``, ``up{n}`` .. ``up1``.

    ``ngf``: the filters of the first level (64); ``norm``: 'batch' (pix2pix), 'instance' or
    None; ``dropout``: the rate in the decoder blocks of levels 5 .. n-1 (0.5; 0 for none);
    ``in_channels``: when given, inputs of another channel count are refused.
    unet_256 for 3 -> 3 channels with batch norm has 54,413,955 parameters.
    """

    default_name = "pix2pix_generator"

    def __init__(self, out_channels: int = 3, num_downs: int = 8, ngf: int = 64, norm: str | None = "batch",
                 dropout: float = 0.5, in_channels: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.out_channels = positive_int(out_channels, "Pix2PixGenerator: out_channels")
        self.num_downs = positive_int(num_downs, "Pix2PixGenerator: num_downs")
        if num_downs < 2:
            raise ValueError(f"Pix2PixGenerator: num_downs must be at least 2 (an outermost and an innermost "
                             f"level), got {num_downs}")
        self.ngf = positive_int(ngf, "Pix2PixGenerator: ngf")
        self.norm = check_norm(norm, "Pix2PixGenerator")
        if not 0 <= dropout < 1:
            raise ValueError(f"Pix2PixGenerator: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.in_channels = None if in_channels is None else positive_int(in_channels, "Pix2PixGenerator: in_channels")
        n, bias = num_downs, norm != "batch"
        filters = [ngf * min(2 ** k, 8) for k in range(n)]        # f_1 .. f_n
        for k in range(1, n + 1):
            layers: list[nn.Module] = [nn.Conv2D(filters[k - 1], 4, stride=2, padding=1, use_bias=bias, name="conv")]
            if 1 < k < n:
                layers += norm_layer(norm, "norm")
            setattr(self, f"down{k}", nn.Sequential(*layers, name=f"down{k}"))
        for k in range(n, 0, -1):
            outer = out_channels if k == 1 else filters[k - 2]
            layers = [nn.ReLU(name="relu"), nn.Conv2DTranspose(outer, 4, stride=2, padding=1,
                                                               use_bias=k == 1 or bias, name="conv")]
            if k == 1:
                layers.append(nn.Tanh(name="tanh"))
            else:
                layers += norm_layer(norm, "norm")
            if 5 <= k < n and self.dropout:
                layers.append(nn.Dropout(self.dropout, name="dropout"))
            setattr(self, f"up{k}", nn.Sequential(*layers, name=f"up{k}"))

    def _part(self, kind: str, level: int) -> nn.Module:
        return self._modules[f"{kind}{level}"]

    def _check_size(self, shape) -> None:
        step = 2 ** self.num_downs
        if any(n is not None and (n < step or n % step) for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; its height and width must be "
                             f"multiples of 2^num_downs = {step} (num_downs={self.num_downs}: each level halves "
                             "them exactly)")

    def trace(self, shape, step):
        shape = check_channels(self, shape, self.in_channels)
        self._check_size(shape)
        skips = []
        for k in range(1, self.num_downs + 1):
            shape = step(self._part("down", k), shape)
            skips.append(shape)
        for k in range(self.num_downs, 0, -1):
            if k < self.num_downs:
                shape = (*shape[:3], skips[k - 1][3] + shape[3])
            shape = step(self._part("up", k), shape)
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        check_channels(self, x.shape, self.in_channels)
        self._check_size(x.shape)
        skips = []
        for k in range(1, self.num_downs + 1):
            x = self._part("down", k)(x)
            if k < self.num_downs:
                x = F.leaky_relu(x, SLOPE)
                skips.append(x)
        for k in range(self.num_downs, 0, -1):
            if k < self.num_downs:
                x = F.concat([skips[k - 1], x], axis=-1)
            x = self._part("up", k)(x)
        return x

    def get_config(self) -> dict:
        return {"out_channels": self.out_channels, "num_downs": self.num_downs, "ngf": self.ngf, "norm": self.norm,
                "dropout": self.dropout, "in_channels": self.in_channels, "name": self.name}

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, num_downs={self.num_downs}, ngf={self.ngf}, norm={self.norm!r}"


@register_layer
class PatchGANDiscriminator(PathBlock):
    """The reference "n_layers" discriminator (module docstring): (N, H, W, C) -> (N, H', W', 1)
    logits, one per overlapping patch (70x70 for ``n_layers`` = 3; ``n_layers=0`` is the
    per-pixel PixelGAN). ``ndf``: the first layer's filters (64); ``norm``: 'batch', 'instance'
    or None; ``in_channels`` (when given) refuses other channel counts. For pix2pix the input
    is the condition and the image joined along the channels. 3 layers, ndf 64, 3 channels,
    instance norm: 2,764,737 parameters.
    """

    default_name = "patchgan_discriminator"

    def __init__(self, ndf: int = 64, n_layers: int = 3, norm: str | None = "batch", in_channels: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.ndf = positive_int(ndf, "PatchGANDiscriminator: ndf")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise ValueError(f"PatchGANDiscriminator: n_layers must be an int >= 0, got {n_layers!r}")
        self.n_layers = n_layers
        self.norm = check_norm(norm, "PatchGANDiscriminator")
        self.in_channels = (None if in_channels is None
                            else positive_int(in_channels, "PatchGANDiscriminator: in_channels"))
        bias = norm != "batch"
        if n_layers == 0:
            layers = [nn.Conv2D(ndf, 1, name="conv0"), nn.LeakyReLU(SLOPE, name="act0"),
                      nn.Conv2D(2 * ndf, 1, use_bias=bias, name="conv1"), *norm_layer(norm, "norm1"),
                      nn.LeakyReLU(SLOPE, name="act1"), nn.Conv2D(1, 1, use_bias=bias, name="conv2")]
        else:
            layers = [nn.Conv2D(ndf, 4, stride=2, padding=1, name="conv0"), nn.LeakyReLU(SLOPE, name="act0")]
            for k in range(1, n_layers + 1):
                stride = 2 if k < n_layers else 1
                layers += [nn.Conv2D(ndf * min(2 ** k, 8), 4, stride=stride, padding=1, use_bias=bias,
                                     name=f"conv{k}"),
                           *norm_layer(norm, f"norm{k}"), nn.LeakyReLU(SLOPE, name=f"act{k}")]
            layers.append(nn.Conv2D(1, 4, padding=1, name=f"conv{n_layers + 1}"))
        self.body = nn.Sequential(*layers, name="body")

    def _path(self) -> tuple:
        return (self.body,)

    def _input_shape(self, shape):
        return check_channels(self, shape, self.in_channels)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        check_channels(self, x.shape, self.in_channels)
        return self.body(x)

    def get_config(self) -> dict:
        return {"ndf": self.ndf, "n_layers": self.n_layers, "norm": self.norm, "in_channels": self.in_channels,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"ndf={self.ndf}, n_layers={self.n_layers}, norm={self.norm!r}"
