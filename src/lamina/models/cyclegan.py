"""CycleGAN's generator (Zhu et al. 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks"), after Johnson et al.'s style network, laid out as the
authors' reference code's "resnet_9blocks" / "resnet_6blocks":

    c7s1-64:  reflection pad 3 - conv 7x7 (ngf) - norm - ReLU
    d128:     conv 3x3 / 2, pad 1 (2 ngf) - norm - ReLU
    d256:     conv 3x3 / 2, pad 1 (4 ngf) - norm - ReLU
    R256 x n_blocks:  x + [reflection pad 1 - conv 3x3 - norm - ReLU - (dropout) -
                           reflection pad 1 - conv 3x3 - norm](x)
    u128:     transposed conv 3x3 / 2, pad 1, output padding 1 (2 ngf) - norm - ReLU
    u64:      transposed conv 3x3 / 2, pad 1, output padding 1 (ngf) - norm - ReLU
    c7s1-3:   reflection pad 3 - conv 7x7 (out channels, with bias) - tanh

Instance norm (no learned scale or shift) is CycleGAN's; with batch norm the convolutions
before a norm have no bias. Nine blocks for 256x256 images, six for 128x128; 3 -> 3 channels,
ngf 64, nine blocks, instance norm: 11,378,179 parameters.

The discriminator is the 70x70 PatchGAN, :class:`lamina.models.PatchGANDiscriminator`; the
training loop (LSGAN costs, cycle consistency, identity, image pools, linear decay) is
:class:`lamina.train.CycleGANTrainer`.
"""

from __future__ import annotations

from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, PathBlock, nhwc, residual_sum
from lamina.models.pix2pix import check_channels, check_norm, norm_layer
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["ResnetBlock", "ResnetGenerator"]


@register_layer
class ResnetBlock(Block):
    """x + conv_block(x), the block a 3x3 convolution pair with reflection padding (module
    docstring); ``filters`` must equal the input's channels. Sub-layer ``body``."""

    default_name = "resnet_block"

    def __init__(self, filters: int, norm: str | None = "instance", dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "ResnetBlock: filters")
        self.norm = check_norm(norm, "ResnetBlock")
        self.dropout = float(dropout)
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.ReflectionPad2D(1, name="pad1"),
                                   nn.Conv2D(filters, 3, use_bias=bias, name="conv1"),
                                   *norm_layer(norm, "norm1"), nn.ReLU(name="relu")]
        if dropout:
            layers.append(nn.Dropout(dropout, name="dropout"))
        layers += [nn.ReflectionPad2D(1, name="pad2"), nn.Conv2D(filters, 3, use_bias=bias, name="conv2"),
                   *norm_layer(norm, "norm2")]
        self.body = nn.Sequential(*layers, name="body")

    def trace(self, shape, step):
        shape = check_channels(self, shape, self.filters)
        return residual_sum(self, step(self.body, shape), shape)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        check_channels(self, x.shape, self.filters)
        return x + self.body(x)

    def get_config(self) -> dict:
        return {"filters": self.filters, "norm": self.norm, "dropout": self.dropout, "name": self.name}


@register_layer
class ResnetGenerator(PathBlock):
    """CycleGAN's generator (module docstring): (N, H, W, C_in) -> (N, H, W, ``out_channels``)
    in [-1, 1], H and W multiples of 4. ``ngf``: the first layer's filters (64); ``n_blocks``:
    residual blocks (9 or 6); ``norm``: 'instance', 'batch' or None; ``dropout``: the rate in
    the residual blocks (0: CycleGAN's default); ``in_channels`` (when given) refuses other
    channel counts. Sub-layers ``stem``, ``down1``, ``down2``, ``blocks``, ``up1``, ``up2``,
    ``head``."""

    default_name = "resnet_generator"

    def __init__(self, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9, norm: str | None = "instance",
                 dropout: float = 0.0, in_channels: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.out_channels = positive_int(out_channels, "ResnetGenerator: out_channels")
        self.ngf = positive_int(ngf, "ResnetGenerator: ngf")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"ResnetGenerator: n_blocks must be an int >= 0, got {n_blocks!r}")
        self.n_blocks = n_blocks
        self.norm = check_norm(norm, "ResnetGenerator")
        if not 0 <= dropout < 1:
            raise ValueError(f"ResnetGenerator: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.in_channels = None if in_channels is None else positive_int(in_channels, "ResnetGenerator: in_channels")
        bias = norm != "batch"

        def unit(name: str, conv: nn.Module, pad: int = 0) -> nn.Sequential:
            layers = [nn.ReflectionPad2D(pad, name="pad")] if pad else []
            return nn.Sequential(*layers, conv, *norm_layer(norm, "norm"), nn.ReLU(name="relu"), name=name)

        self.stem = unit("stem", nn.Conv2D(ngf, 7, use_bias=bias, name="conv"), pad=3)
        self.down1 = unit("down1", nn.Conv2D(2 * ngf, 3, stride=2, padding=1, use_bias=bias, name="conv"))
        self.down2 = unit("down2", nn.Conv2D(4 * ngf, 3, stride=2, padding=1, use_bias=bias, name="conv"))
        self.blocks = nn.Sequential(*[ResnetBlock(4 * ngf, norm, dropout, name=str(i)) for i in range(n_blocks)],
                                    name="blocks")
        self.up1 = unit("up1", nn.Conv2DTranspose(2 * ngf, 3, stride=2, padding=1, output_padding=1, use_bias=bias,
                                                  name="conv"))
        self.up2 = unit("up2", nn.Conv2DTranspose(ngf, 3, stride=2, padding=1, output_padding=1, use_bias=bias,
                                                  name="conv"))
        self.head = nn.Sequential(nn.ReflectionPad2D(3, name="pad"), nn.Conv2D(out_channels, 7, name="conv"),
                                  nn.Tanh(name="tanh"), name="head")

    def _path(self) -> tuple:
        return self.stem, self.down1, self.down2, self.blocks, self.up1, self.up2, self.head

    def _input_shape(self, shape):
        shape = check_channels(self, nhwc(self, shape), self.in_channels)
        if any(n is not None and (n < 4 or n % 4) for n in shape[1:3]):
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; its height and width must be "
                             "multiples of 4 (the two stride-2 convolutions and the two x2 transposed ones give "
                             "back the input size only then)")
        return shape

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch (batch, height, width, channels)")
        self._input_shape(x.shape)
        return super().forward(x)

    def get_config(self) -> dict:
        return {"out_channels": self.out_channels, "ngf": self.ngf, "n_blocks": self.n_blocks, "norm": self.norm,
                "dropout": self.dropout, "in_channels": self.in_channels, "name": self.name}

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, ngf={self.ngf}, n_blocks={self.n_blocks}, norm={self.norm!r}"
