"""VQGAN (Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image
Synthesis"): a convolutional VQ autoencoder trained with a perceptual and a patch-wise
adversarial loss, whose code maps a transformer then models (:mod:`lamina.models.vqgan_prior`).

Encoder E (the reference's layout): conv_in 3x3 to ``base_channels``; for each level l of
``channel_multipliers`` ``num_res_blocks`` residual blocks of base_channels * m_l, then (all but
the last level) a downsampling by a stride-2 3x3 convolution after one row and column of zeros
at the bottom and right; at the lowest resolution res - non-local - res; then GroupNorm, swish,
conv 3x3 to ``z_channels`` and a 1x1 convolution to ``embedding_dim``. The decoder G mirrors it
(1x1 conv, conv_in, res - non-local - res, ``num_res_blocks`` + 1 residual blocks per level,
nearest 2x upsampling + conv 3x3 between levels, GroupNorm, swish, conv_out 3x3 to the image's
channels). swish(x) = x sigmoid(x).

Residual block (:class:`VQGANResBlock`), GN a GroupNorm of ``groups`` groups:

    h = conv3(swish(GN(x))),  h = conv3(swish(GN(h))),  y = skip(x) + h

skip a 1x1 convolution when the channel count changes, the identity otherwise.

Non-local block (:class:`NonLocalBlock`), single-head self-attention over the H W positions:

    h = GN(x),  q, k, v = h W_q, h W_k, h W_v  (1x1 convolutions),
    y = x + proj(softmax(q k^T / sqrt(C)) v)

Quantiser (:class:`lamina.nn.VectorQuantizer`): z_q = z + sg(e_k - z) with the loss
||sg(z) - e_k||^2 + beta ||z - sg(e_k)||^2, beta = 0.25; with ``l2_normalize`` (ViT-VQGAN's
codes) z and the codebook are unit-normalised before the nearest-code search, so that the
distance is the cosine one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.vector_quantize import VQResult, vector_quantize
from lamina.models.vqvae import _VQAutoencoder
from lamina.nn import Conv2D, Dropout, GroupNorm, ModuleList, UpSampling2D, VectorQuantizer, ZeroPadding2D
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor, evaluation_mode

__all__ = ["NonLocalBlock", "VQGAN", "VQGANOutput", "VQGANResBlock", "vqgan_tiny"]


class VQGANOutput(NamedTuple):
    """A VQGAN's forward pass: the reconstruction, the quantiser's loss, the perplexity of the
    codes used and the index map (N, h, w)."""

    reconstruction: Tensor
    vq_loss: Tensor
    perplexity: float
    indices: np.ndarray


def _check_nhwc(layer: Module, x: Tensor) -> None:
    if x.ndim != 4:
        raise input_error(layer, x, "a 4-D NHWC batch (batch, height, width, channels)")


@register_with_arguments
class VQGANResBlock(Module):
    """(N, H, W, C_in) -> (N, H, W, ``channels``): h = conv3(swish(GN(x))), h =
    conv3(swish(GN(h))), y = skip(x) + h (module docstring); ``skip`` is a 1x1 convolution
    made on the first call when C_in != channels. ``dropout`` between the two convolutions."""

    def __init__(self, channels: int, groups: int = 32, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "VQGANResBlock: channels")
        self.groups = positive_int(groups, "VQGANResBlock: groups")
        if not 0 <= dropout < 1:
            raise ValueError(f"VQGANResBlock: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.norm1, self.norm2 = GroupNorm(groups, name="norm1"), GroupNorm(groups, name="norm2")
        self.conv1 = Conv2D(channels, 3, padding=1, name="conv1")
        self.conv2 = Conv2D(channels, 3, padding=1, name="conv2")
        if self.dropout:
            self.drop = Dropout(self.dropout, name="drop")

    def build(self, input_shape) -> None:
        c_in = input_shape[-1]
        if c_in % self.groups or self.channels % self.groups:
            raise ShapeError(f"{self._label()}: {c_in} input and {self.channels} output channels; both must be "
                             f"multiples of groups={self.groups}")
        if c_in != self.channels:
            self.skip = Conv2D(self.channels, 1, name="skip")
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_nhwc(self, x)
        if not self.built:
            self.build(x.shape)
        h = self.conv1(F.silu(self.norm1(x)))
        h = F.silu(self.norm2(h))
        if self.dropout:
            h = self.drop(h)
        h = self.conv2(h)
        skip = self.skip(x) if "skip" in self._modules else x
        return skip + h


@register_with_arguments
class NonLocalBlock(Module):
    """Single-head self-attention over the positions of (N, H, W, C), added to the input:
    y = x + proj(softmax(q k^T / sqrt(C)) v), q, k, v 1x1 convolutions of GN(x) (module
    docstring)."""

    def __init__(self, groups: int = 32, name: str | None = None):
        super().__init__(name=name)
        self.groups = positive_int(groups, "NonLocalBlock: groups")
        self.norm = GroupNorm(groups, name="norm")

    def build(self, input_shape) -> None:
        c = input_shape[-1]
        if c % self.groups:
            raise ShapeError(f"{self._label()}: {c} channels is not a multiple of groups={self.groups}")
        for part in ("q", "k", "v", "proj"):
            setattr(self, part, Conv2D(c, 1, name=part))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_nhwc(self, x)
        if not self.built:
            self.build(x.shape)
        n, height, width, c = x.shape
        h = self.norm(x)
        q, k, v = (getattr(self, part)(h).reshape((n, height * width, c)) for part in ("q", "k", "v"))
        weights = F.softmax(F.matmul(q, F.transpose(k, 0, 2, 1)) * (float(c) ** -0.5), axis=-1)
        out = F.matmul(weights, v).reshape((n, height, width, c))
        return x + self.proj(out)


@register_with_arguments
class VQGAN(_VQAutoencoder):
    """The VQGAN autoencoder (module docstring) for NHWC images of ``channels`` channels whose
    sides are multiples of 2^(len(channel_multipliers) - 1) (the downsampling factor f).
    ``base_channels`` * each multiplier gives a level's width; ``num_res_blocks`` per level,
    ``z_channels`` at the bottleneck, a codebook of ``num_embeddings`` codes of
    ``embedding_dim``, commitment ``beta``, GroupNorm of ``groups`` groups. Weights are made at
    once. The reference's f16 ImageNet model is base_channels=128, (1, 1, 2, 2, 4), 2 blocks,
    z_channels=256, 16384 codes of 256 (with non-local blocks also at 16x16, left out here).

    ``model(x)`` gives a :class:`VQGANOutput`; :meth:`encode`, :meth:`decode`,
    :meth:`decode_indices` the halves; :attr:`last_layer` is G's last weight, the one the
    adaptive GAN weight (:func:`lamina.train.adaptive_weight`) is measured on.
    """

    def __init__(self, channels: int = 3, base_channels: int = 128, channel_multipliers=(1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_channels: int = 256, num_embeddings: int = 1024, embedding_dim: int = 256,
                 beta: float = 0.25, groups: int = 32, l2_normalize: bool = False, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "VQGAN: channels")
        multipliers = tuple(positive_int(m, "VQGAN: channel_multipliers") for m in channel_multipliers)
        if not multipliers:
            raise ValueError("VQGAN: channel_multipliers must name at least one level")
        self.multipliers = multipliers
        self.num_res_blocks = positive_int(num_res_blocks, "VQGAN: num_res_blocks")
        self.l2_normalize = bool(l2_normalize)
        widths = [positive_int(base_channels, "VQGAN: base_channels") * m for m in multipliers]
        self.encoder_in = Conv2D(widths[0], 3, padding=1, name="encoder_in")
        down = []
        for level, width in enumerate(widths):
            stage = [VQGANResBlock(width, groups, dropout) for _ in range(self.num_res_blocks)]
            if level < len(widths) - 1:
                stage += [ZeroPadding2D(((0, 1), (0, 1))), Conv2D(width, 3, stride=2)]
            down.append(ModuleList(stage))
        self.down = ModuleList(down)
        self.encoder_mid = self._middle(widths[-1], groups, dropout)
        self.encoder_norm = GroupNorm(groups, name="encoder_norm")
        self.encoder_out = Conv2D(positive_int(z_channels, "VQGAN: z_channels"), 3, padding=1, name="encoder_out")
        self.quant_conv = Conv2D(positive_int(embedding_dim, "VQGAN: embedding_dim"), 1, name="quant_conv")
        self.quantizer = VectorQuantizer(num_embeddings, embedding_dim, beta, name="quantizer")
        self.post_quant_conv = Conv2D(z_channels, 1, name="post_quant_conv")
        self.decoder_in = Conv2D(widths[-1], 3, padding=1, name="decoder_in")
        self.decoder_mid = self._middle(widths[-1], groups, dropout)
        up = []
        for level in reversed(range(len(widths))):
            stage = [VQGANResBlock(widths[level], groups, dropout) for _ in range(self.num_res_blocks + 1)]
            if level > 0:
                stage += [UpSampling2D(2), Conv2D(widths[level], 3, padding=1)]
            up.append(ModuleList(stage))
        self.up = ModuleList(up)
        self.decoder_norm = GroupNorm(groups, name="decoder_norm")
        self.decoder_out = Conv2D(self.channels, 3, padding=1, name="decoder_out")
        side = self.factor
        with no_grad(), evaluation_mode(self):               # every layer's weights now, for optimizers
            self.forward(np.zeros((1, side, side, self.channels), dtype=backend.get_default_dtype()))
        self.built = True

    @staticmethod
    def _middle(width: int, groups: int, dropout: float) -> ModuleList:
        return ModuleList([VQGANResBlock(width, groups, dropout), NonLocalBlock(groups),
                           VQGANResBlock(width, groups, dropout)])

    @property
    def factor(self) -> int:
        """The downsampling factor f = 2^(levels - 1)."""
        return 2 ** (len(self.multipliers) - 1)

    @property
    def last_layer(self) -> Tensor:
        """The weight of the decoder's last convolution."""
        return self.decoder_out.weight

    def latent_shape(self, image_shape) -> tuple[int, int]:
        """The (h, w) of the index map of an image of (H, W[, C])."""
        height, width = int(image_shape[0]), int(image_shape[1])
        if height % self.factor or width % self.factor:
            raise ShapeError(f"{self._label()}: images of {height}x{width} pixels; expected a height and width that "
                             f"are multiples of the downsampling factor {self.factor}")
        return height // self.factor, width // self.factor

    def encode(self, x) -> VQResult:
        """Images (N, H, W, C) -> the quantiser's output on the latent grid: quantized
        (N, h, w, D), loss, perplexity, indices (N, h, w)."""
        h = self.encoder_in(self._checked_images(x))
        for stage in self.down:
            for layer in stage:
                h = layer(h)
        for layer in self.encoder_mid:
            h = layer(h)
        z = self.quant_conv(self.encoder_out(F.silu(self.encoder_norm(h))))
        return self.quantize(z)

    def quantize(self, z) -> VQResult:
        """The nearest codes of z (..., D) (cosine ones with ``l2_normalize``)."""
        if not self.l2_normalize:
            return self.quantizer(z)
        return vector_quantize(F.normalize(z, axis=-1), F.normalize(self.quantizer.embeddings, axis=-1),
                               self.quantizer.commitment_cost)

    def codebook(self) -> Tensor:
        """The codes the decoder reads: the table, unit-normalised with ``l2_normalize``."""
        table = self.quantizer.embeddings
        return F.normalize(table, axis=-1) if self.l2_normalize else table

    def decode(self, quantized) -> Tensor:
        """Codes (N, h, w, D) -> images (N, f h, f w, C)."""
        h = self.decoder_in(self.post_quant_conv(self._checked_codes(quantized)))
        for layer in self.decoder_mid:
            h = layer(h)
        for stage in self.up:
            for layer in stage:
                h = layer(h)
        return self.decoder_out(F.silu(self.decoder_norm(h)))

    def decode_indices(self, indices) -> Tensor:
        """Index maps (N, h, w) of ints in [0, num_embeddings) -> images."""
        indices = self._checked_index_maps(indices)
        self.quantizer.lookup(indices)                           # checks the range
        codes = F.take_rows(self.codebook(), indices.reshape(-1))
        return self.decode(codes.reshape((*indices.shape, self.embedding_dim)))

    def forward(self, x) -> VQGANOutput:
        out = self.encode(x)
        return VQGANOutput(self.decode(out.quantized), out.loss, out.perplexity, out.indices)


def vqgan_tiny(channels: int = 1, **options) -> VQGAN:
    """A VQGAN small enough for 8x8 images on a CPU: base_channels 16, levels (1, 2) (f = 2),
    one residual block per level, z_channels 16, 32 codes of 8, GroupNorm of 4 groups;
    ``options`` override :class:`VQGAN`'s arguments."""
    settings = {"base_channels": 16, "channel_multipliers": (1, 2), "num_res_blocks": 1, "z_channels": 16,
                "num_embeddings": 32, "embedding_dim": 8, "groups": 4}
    return VQGAN(channels, **{**settings, **options})
