"""Image super-resolution and denoising networks (NHWC, any image size):

* :class:`SRCNN` (Dong, Loy, He & Tang 2014): three convolutions, 9x9 (patch extraction),
  1x1 (non-linear mapping), 5x5 (reconstruction), on a low-resolution image already
  upsampled (bicubic) to the target size; 'same' padding keeps the size.
* :class:`ESPCN` (Shi et al. 2016): the work is done at low resolution, then a sub-pixel
  convolution (c r^2 channels rearranged by a pixel shuffle) makes the r-times larger image.
* :class:`EDSR` (Lim, Son, Kim, Nah & Lee 2017): residual blocks conv-ReLU-conv without batch
  norm, their output scaled by ``res_scale`` before the skip, a global skip over the body, and
  an upsampler of sub-pixel convolutions (one x2 or x3 stage, or two x2 stages for x4).
  The defaults are the paper's baseline: 16 blocks of 64 filters, res_scale 1.
* :class:`SRResNet` (Ledig et al. 2017, the generator of SRGAN): the same plan with batch
  norm in the blocks (conv-BN-PReLU-conv-BN), 9x9 convolutions at both ends and PReLU after
  each x2 sub-pixel stage.
* :class:`DnCNN` (Zhang, Zuo, Chen, Meng & Zhang 2017): conv-ReLU, (depth - 2) x
  conv-BN-ReLU, conv; it predicts the noise, and returns the input minus it (residual learning).
"""

from __future__ import annotations

from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, PathBlock, nhwc, residual_sum
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["DnCNN", "EDSR", "ESPCN", "SRCNN", "EDSRResidualBlock", "SRResNet", "SRResNetBlock"]


def _positive(value, what: str) -> int:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


@register_with_arguments
class SRCNN(PathBlock):
    """SRCNN's 9-1-5 network: Conv 9x9 (``filters[0]``) - ReLU - Conv 1x1 (``filters[1]``) -
    ReLU - Conv 5x5 (``channels``), all 'same'. Input: the bicubic-upsampled image."""

    default_name = "srcnn"

    def __init__(self, channels: int = 1, filters: tuple[int, int] = (64, 32), name: str | None = None):
        super().__init__(name=name)
        self.channels = _positive(channels, "SRCNN: channels")
        self.extraction = nn.Conv2D(filters[0], 9, padding="same", activation="relu", name="extraction")
        self.mapping = nn.Conv2D(filters[1], 1, activation="relu", name="mapping")
        self.reconstruction = nn.Conv2D(channels, 5, padding="same", name="reconstruction")

    def _path(self) -> tuple:
        return self.extraction, self.mapping, self.reconstruction


@register_with_arguments
class ESPCN(PathBlock):
    """ESPCN: Conv 5x5 (``filters[0]``) - tanh - Conv 3x3 (``filters[1]``) - tanh - Conv 3x3
    (``channels * scale^2``) - pixel shuffle (``scale``); (N, H, W, c) -> (N, H r, W r, c)."""

    default_name = "espcn"

    def __init__(self, scale: int = 2, channels: int = 1, filters: tuple[int, int] = (64, 32),
                 name: str | None = None):
        super().__init__(name=name)
        self.scale = _positive(scale, "ESPCN: scale")
        self.channels = _positive(channels, "ESPCN: channels")
        self.conv1 = nn.Conv2D(filters[0], 5, padding="same", activation="tanh", name="conv1")
        self.conv2 = nn.Conv2D(filters[1], 3, padding="same", activation="tanh", name="conv2")
        self.subpixel = nn.Conv2D(channels * scale * scale, 3, padding="same", name="subpixel")
        self.shuffle = nn.PixelShuffle(scale, name="shuffle")

    def _path(self) -> tuple:
        return self.conv1, self.conv2, self.subpixel, self.shuffle


@register_with_arguments
class EDSRResidualBlock(Block):
    """x + res_scale * Conv3x3(ReLU(Conv3x3(x))), no batch norm (EDSR's ResBlock)."""

    default_name = "edsr_block"

    def __init__(self, filters: int = 64, res_scale: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.res_scale = float(res_scale)
        self.conv1 = nn.Conv2D(filters, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = nn.Conv2D(filters, 3, padding="same", name="conv2")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        return residual_sum(self, step(self.conv2, step(self.conv1, shape)), shape)

    def forward(self, x) -> Tensor:
        branch = self.conv2(self.conv1(x))
        return x + (branch if self.res_scale == 1.0 else branch * self.res_scale)


def _upsampler(scale: int, filters: int) -> nn.Sequential:
    """Sub-pixel upsampling: Conv3x3 (filters r^2) + pixel shuffle r, once for x2 / x3, twice
    (r = 2) for x4 (EDSR's Upsampler; any power of 2 repeats the x2 stage)."""
    if scale & (scale - 1) == 0:
        stages = [2] * (scale.bit_length() - 1)
    elif scale == 3:
        stages = [3]
    else:
        raise ValueError(f"EDSR: scale must be 3 or a power of 2 (2, 4, 8), got {scale!r}")
    layers = []
    for i, r in enumerate(stages):
        layers += [nn.Conv2D(filters * r * r, 3, padding="same", name=f"conv{i}"),
                   nn.PixelShuffle(r, name=f"shuffle{i}")]
    return nn.Sequential(*layers, name="upsampler")


class _SkipTrunk(Block):
    """tail(upsampler(h + body(h))), h = head(x): EDSR's and SRResNet's trunk, a skip from the
    head around the residual body; subclasses make ``head``, ``body``, ``upsampler`` and ``tail``."""

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        features = step(self.head, shape)
        features = residual_sum(self, step(self.body, features), features)
        return step(self.tail, step(self.upsampler, features))

    def reconstruct(self, x) -> Tensor:
        features = self.head(x)
        return self.tail(self.upsampler(features + self.body(features)))


@register_with_arguments
class EDSR(_SkipTrunk):
    """EDSR: head Conv3x3 (``filters``) -> body (``blocks`` residual blocks + Conv3x3) with a
    skip from the head -> upsampler (x ``scale``) -> Conv3x3 (``channels``). ``mean`` (one value
    per channel, e.g. DIV2K's RGB mean (0.4488, 0.4371, 0.4040) times the data range) is
    subtracted at the input and added back at the output; None: nothing is. Baseline
    (defaults): 16 blocks, 64 filters, res_scale 1; the paper's large model: 32 blocks,
    256 filters, res_scale 0.1."""

    default_name = "edsr"

    def __init__(self, scale: int = 2, channels: int = 3, filters: int = 64, blocks: int = 16,
                 res_scale: float = 1.0, mean=None, name: str | None = None):
        super().__init__(name=name)
        self.scale = _positive(scale, "EDSR: scale")
        self.channels = _positive(channels, "EDSR: channels")
        _positive(blocks, "EDSR: blocks")
        if mean is not None and len(mean) != channels:
            raise ValueError(f"EDSR: mean must hold one value per channel ({channels}), got {mean!r}")
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.head = nn.Conv2D(filters, 3, padding="same", name="head")
        self.body = nn.Sequential(*[EDSRResidualBlock(filters, res_scale, name=str(i)) for i in range(blocks)],
                                  nn.Conv2D(filters, 3, padding="same", name=str(blocks)), name="body")
        self.upsampler = _upsampler(scale, filters)
        self.tail = nn.Conv2D(channels, 3, padding="same", name="tail")

    def forward(self, x) -> Tensor:
        if self.mean is not None:
            x = x - Tensor(self.mean, dtype=x.dtype)
        out = self.reconstruct(x)
        return out if self.mean is None else out + Tensor(self.mean, dtype=out.dtype)


@register_with_arguments
class SRResNetBlock(Block):
    """x + BN(Conv3x3(PReLU(BN(Conv3x3(x))))) (SRResNet's residual block)."""

    default_name = "srresnet_block"

    def __init__(self, filters: int = 64, name: str | None = None):
        super().__init__(name=name)
        self.conv1 = nn.Conv2D(filters, 3, padding="same", name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.act = nn.PReLU(shared=True, name="act")
        self.conv2 = nn.Conv2D(filters, 3, padding="same", name="conv2")
        self.bn2 = nn.BatchNorm(name="bn2")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = shape
        for layer in (self.conv1, self.bn1, self.act, self.conv2, self.bn2):
            out = step(layer, out)
        return residual_sum(self, out, shape)

    def forward(self, x) -> Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


@register_with_arguments
class SRResNet(_SkipTrunk):
    """SRResNet: Conv9x9 (``filters``) - PReLU -> ``blocks`` residual blocks + Conv3x3 - BN with a
    skip from the head -> log2(``scale``) x (Conv3x3 (4 ``filters``) - pixel shuffle 2 - PReLU) ->
    Conv9x9 (``channels``). PReLUs have one slope each (PyTorch's ``nn.PReLU()``). The paper's
    configuration: 16 blocks of 64 filters, x4."""

    default_name = "srresnet"

    def __init__(self, scale: int = 4, channels: int = 3, filters: int = 64, blocks: int = 16,
                 name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(scale, int) and scale >= 2 and scale & (scale - 1) == 0):
            raise ValueError(f"SRResNet: scale must be a power of 2 (2, 4, 8), got {scale!r}")
        self.scale = scale
        self.channels = _positive(channels, "SRResNet: channels")
        _positive(blocks, "SRResNet: blocks")
        self.head = nn.Sequential(nn.Conv2D(filters, 9, padding="same", name="conv"),
                                  nn.PReLU(shared=True, name="act"), name="head")
        self.body = nn.Sequential(*[SRResNetBlock(filters, name=str(i)) for i in range(blocks)],
                                  nn.Conv2D(filters, 3, padding="same", name="conv"), nn.BatchNorm(name="bn"),
                                  name="body")
        stages = []
        for i in range(scale.bit_length() - 1):
            stages += [nn.Conv2D(4 * filters, 3, padding="same", name=f"conv{i}"),
                       nn.PixelShuffle(2, name=f"shuffle{i}"), nn.PReLU(shared=True, name=f"act{i}")]
        self.upsampler = nn.Sequential(*stages, name="upsampler")
        self.tail = nn.Conv2D(channels, 9, padding="same", name="tail")

    def forward(self, x) -> Tensor:
        return self.reconstruct(x)


@register_with_arguments
class DnCNN(Block):
    """DnCNN: Conv3x3 (``filters``) - ReLU, ``depth - 2`` x (Conv3x3 without bias - BatchNorm -
    ReLU), Conv3x3 (``channels``) giving the noise estimate v(y); the output is y - v(y).
    The paper uses depth 17 for Gaussian denoising at a known noise level."""

    default_name = "dncnn"

    def __init__(self, channels: int = 1, depth: int = 17, filters: int = 64, name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(depth, int) and depth >= 2):
            raise ValueError(f"DnCNN: depth must be an integer >= 2, got {depth!r}")
        self.channels = _positive(channels, "DnCNN: channels")
        layers = [nn.Conv2D(filters, 3, padding="same", activation="relu", name="0")]
        for i in range(1, depth - 1):
            layers += [nn.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{i}.conv"),
                       nn.BatchNorm(name=f"{i}.bn"), nn.ReLU(name=f"{i}.relu")]
        layers.append(nn.Conv2D(channels, 3, padding="same", name=str(depth - 1)))
        self.noise = nn.Sequential(*layers, name="noise")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        return residual_sum(self, step(self.noise, shape), shape)

    def forward(self, x) -> Tensor:
        return x - self.noise(x)
