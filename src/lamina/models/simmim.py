"""SimMIM (Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling"): mask
random patches, encode the image with a learned mask token in their place, and regress the
raw pixels of the masked patches with a one-layer head.

    masking:  the image is cut into mask patches of s x s pixels (32 in the paper, a multiple
              of the encoder's patch size p); ceil(ratio * count) of them, at random, are masked
              (ratio 0.6) and the mask is repeated onto the encoder's p x p patch grid
              (:func:`simmim_masks`)
    encoder:  a ViT whose masked patch embeddings are replaced by a learned [MASK] vector
              (:class:`~lamina.models.MaskedViTEncoder`)
    head:     the patch tokens (N, H / p, W / p, D) through a 1 x 1 convolution to p^2 C
              channels, then a pixel shuffle by p to (N, H, W, C)
    loss:     L1 on the masked pixels only, averaged over them and the channels
              L = sum_{n,y,x,c} m_{nyx} |y_hat - y| / (C sum m + 1e-5)   (:func:`simmim_loss`)
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.ibot import MaskedViTEncoder
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import pair, positive_int
from lamina.nn.module import as_tensor

__all__ = ["SimMIM", "simmim_loss", "simmim_masks"]

LOSS_EPS = 1e-5


def simmim_masks(batch: int, image_size, patch_size: int, mask_patch_size: int = 32, mask_ratio: float = 0.6,
                 rng=None) -> np.ndarray:
    """SimMIM's random masks on the encoder's patch grid: (batch, (H / p)(W / p)) booleans,
    True where masked, patches row by row. ceil(``mask_ratio`` K) of the K mask patches of
    ``mask_patch_size`` pixels are drawn without replacement per image and each spreads over
    the (s / p)^2 encoder patches it covers. ``rng`` a seed or a NumPy Generator."""
    batch = positive_int(batch, "simmim_masks: batch")
    h, w = pair(image_size, "simmim_masks: image_size")
    p = positive_int(patch_size, "simmim_masks: patch_size")
    s = positive_int(mask_patch_size, "simmim_masks: mask_patch_size")
    if s % p or h % s or w % s:
        raise ValueError(f"simmim_masks: the mask patch size {s} must be a multiple of the patch size {p} and divide "
                         f"the image size {(h, w)}")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"simmim_masks: mask_ratio must be in [0, 1], got {mask_ratio!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rows, cols, scale = h // s, w // s, s // p
    count = math.ceil(mask_ratio * rows * cols)
    masks = np.zeros((batch, rows * cols), dtype=bool)
    for i in range(batch):
        masks[i, rng.permutation(rows * cols)[:count]] = True
    grid = masks.reshape(batch, rows, cols).repeat(scale, axis=1).repeat(scale, axis=2)
    return grid.reshape(batch, -1)


def _pixel_mask(masks, batch: int, image_size: tuple[int, int], patch_size: int, who: str) -> np.ndarray:
    m = np.asarray(backend.to_numpy(masks.data) if isinstance(masks, Tensor) else masks).astype(bool)
    rows, cols = image_size[0] // patch_size, image_size[1] // patch_size
    if m.size != batch * rows * cols or m.shape[0] != batch:
        raise ShapeError(f"{who}: masks of shape {m.shape}; expected ({batch}, {rows * cols}) or ({batch}, {rows}, "
                         f"{cols}), one per {patch_size}x{patch_size} patch")
    m = m.reshape(batch, rows, cols)
    return m.repeat(patch_size, axis=1).repeat(patch_size, axis=2)[..., None]


def simmim_loss(prediction, target, masks, patch_size: int) -> Tensor:
    """L of the module docstring for ``prediction`` and ``target`` (N, H, W, C) and ``masks``
    (N, P) or (N, H / p, W / p) over the ``patch_size`` patch grid (True where masked):
    the mean absolute error over the masked pixels and channels; unmasked pixels do not enter."""
    prediction, target = as_tensor(prediction), as_tensor(target)
    if prediction.ndim != 4 or tuple(prediction.shape) != tuple(target.shape):
        raise ShapeError(f"simmim_loss: prediction of shape {tuple(prediction.shape)} and target of shape "
                         f"{tuple(target.shape)}; expected two NHWC batches of the same shape")
    p = positive_int(patch_size, "simmim_loss: patch_size")
    n, h, w, c = prediction.shape
    if h % p or w % p:
        raise ShapeError(f"simmim_loss: images of {h}x{w} pixels do not split into {p}x{p} patches")
    m = _pixel_mask(masks, n, (h, w), p, "simmim_loss").astype(prediction.dtype)
    error = F.abs(F.sub(prediction, target.detach()))
    return F.div(F.sum(F.mul(error, backend.xp.asarray(m))), float(c * m.sum() + LOSS_EPS))


@register_with_arguments
class SimMIM(Block):
    """SimMIM (module docstring) for (N, H, W, ``channels``) images: ``encoder`` a
    :class:`~lamina.models.MaskedViTEncoder` (``patch_size`` patches, ``d_model`` wide,
    ``depth`` layers of ``num_heads`` heads, MLPs of ``mlp_dim``) and ``decoder`` the 1 x 1
    convolution to patch_size^2 channels x channels. ``model(images, masks)`` gives the
    reconstruction (N, H, W, C); :meth:`loss` its L1 on the masked pixels."""

    default_name = "simmim"

    def __init__(self, patch_size: int = 16, channels: int = 3, d_model: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_dim: int = 3072, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = positive_int(patch_size, "SimMIM: patch_size")
        self.channels = positive_int(channels, "SimMIM: channels")
        self.encoder = MaskedViTEncoder(self.patch_size, d_model, depth, num_heads, mlp_dim, name="encoder")
        self.decoder = nn.Conv2D(self.patch_size ** 2 * self.channels, 1, name="decoder")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        if shape[3] not in (None, self.channels):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; expected {self.channels} channels")
        tokens = step(self.encoder, shape)
        grid = (shape[0], shape[1] // self.patch_size, shape[2] // self.patch_size, tokens[2])
        step(self.decoder, grid)
        return tuple(shape)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if shape and isinstance(shape[0], (tuple, list)):        # first called with (images, masks)
            shape = tuple(shape[0])
        super().build(shape)

    def forward(self, images, masks=None) -> Tensor:
        x = as_tensor(images)
        tokens = self.encoder(x, masks)
        n, h, w = x.shape[0], x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
        grid = F.reshape(F.getitem(tokens, (slice(None), slice(1, None))), n, h, w, tokens.shape[2])
        return F.pixel_shuffle(self.decoder(grid), self.patch_size)

    def loss(self, images, masks) -> Tensor:
        """The masked-pixel L1 (:func:`simmim_loss`) of the reconstruction of ``images``."""
        x = as_tensor(images)
        return simmim_loss(self.forward(x, masks), x, masks, self.patch_size)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}"
