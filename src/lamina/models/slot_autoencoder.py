"""The Slot Attention autoencoder for unsupervised object discovery (Locatello et al. 2020), on
NHWC images, with a spatial broadcast decoder (Watters et al. 2019) at the image's resolution.

    encoder:  Conv2D(channels, k, ReLU) x encoder_layers,  + SoftPositionEmbed
              flatten the pixels -> LN -> Dense(channels, ReLU) -> Dense(channels)
              slots = SlotAttention(num_slots, channels)                      (batch, K, channels)
    decoder:  each slot broadcast over the h x w grid, + SoftPositionEmbed,
              Conv2D(channels, k, ReLU) x decoder_layers -> Conv2D(c + 1, 3)
              -> an image x_k (h, w, c) and a logit alpha_k (h, w, 1) per slot
    masks m_k = softmax over the slots of alpha_k;   reconstruction = sum_k m_k x_k

SoftPositionEmbed adds a Dense projection of the four grid channels [y, x, 1 - y, 1 - x]
(y, x in [0, 1]) to the features, as the reference code does. Train by the mean squared error of
the reconstruction; the masks then divide the image into objects, one per slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import Conv2D, Dense, LayerNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.slot_attention import SlotAttention

__all__ = ["SlotAttentionAutoEncoder", "SlotReconstruction", "SoftPositionEmbed", "position_grid"]


def position_grid(height: int, width: int, dtype=None):
    """The (height, width, 4) grid [y, x, 1 - y, 1 - x], y and x from 0 to 1 along each axis."""
    y, x = numpy.meshgrid(numpy.linspace(0.0, 1.0, height), numpy.linspace(0.0, 1.0, width), indexing="ij")
    grid = numpy.stack([y, x, 1.0 - y, 1.0 - x], axis=-1)
    return backend.xp.asarray(grid, dtype=dtype or backend.get_default_dtype())


@register_with_arguments
class SoftPositionEmbed(Module):
    """x + Dense(grid): the position grid's four channels projected to the ``channels`` of the
    NHWC feature map x (batch, h, w, channels) and added. Sub-layer ``dense``."""

    def __init__(self, channels: int, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SoftPositionEmbed: channels")
        self.dense = Dense(self.channels, kernel_init="xavier_uniform")

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise input_error(self, x, f"feature maps (batch, height, width, {self.channels})")
        grid = Tensor(position_grid(x.shape[1], x.shape[2], x.dtype), dtype=x.dtype)
        return x + self.dense(grid)


@dataclass
class SlotReconstruction:
    """What :class:`SlotAttentionAutoEncoder` returns: the ``reconstruction`` (batch, h, w, c),
    each slot's image ``slot_images`` (batch, K, h, w, c), its ``masks`` (batch, K, h, w, 1)
    (summing to 1 over the slots) and the ``slots`` (batch, K, channels)."""

    reconstruction: Tensor
    slot_images: Tensor
    masks: Tensor
    slots: Tensor


@register_with_arguments
class SlotAttentionAutoEncoder(Module):
    """The object-discovery autoencoder (module docstring) for images of ``resolution`` (h, w)
    and ``image_channels`` c. ``model(images, slots=None, seed=None)`` returns a
    :class:`SlotReconstruction`; ``slots`` and ``seed`` go to the :class:`lamina.nn.SlotAttention`
    (given initial slots, or the seed of their sampling). Sub-layers ``encoder`` (Conv2D list),
    ``encoder_position``, ``norm``, ``mlp_hidden``, ``mlp_out``, ``slot_attention``,
    ``decoder_position``, ``decoder`` (Conv2D list) and ``output``."""

    def __init__(self, resolution: tuple[int, int], num_slots: int = 4, image_channels: int = 3, channels: int = 32,
                 iters: int = 3, hidden_dim: int = 64, encoder_layers: int = 2, decoder_layers: int = 2,
                 kernel_size: int = 5, name: str | None = None):
        super().__init__(name=name)
        self.resolution = tuple(positive_int(s, "SlotAttentionAutoEncoder: resolution") for s in resolution)
        if len(self.resolution) != 2:
            raise ValueError(f"SlotAttentionAutoEncoder: resolution must be (height, width), got {resolution!r}")
        self.num_slots = positive_int(num_slots, "SlotAttentionAutoEncoder: num_slots")
        self.image_channels = positive_int(image_channels, "SlotAttentionAutoEncoder: image_channels")
        self.channels = positive_int(channels, "SlotAttentionAutoEncoder: channels")
        positive_int(kernel_size, "SlotAttentionAutoEncoder: kernel_size")
        for count, what in ((encoder_layers, "encoder_layers"), (decoder_layers, "decoder_layers")):
            positive_int(count, f"SlotAttentionAutoEncoder: {what}")

        def convs(count: int) -> ModuleList:
            return ModuleList([Conv2D(channels, kernel_size, padding="same", activation="relu")
                               for _ in range(count)])

        self.encoder = convs(encoder_layers)
        self.encoder_position = SoftPositionEmbed(channels)
        self.norm = LayerNorm()
        self.mlp_hidden = Dense(channels, activation="relu")
        self.mlp_out = Dense(channels)
        self.slot_attention = SlotAttention(num_slots, channels, iters=iters, hidden_dim=hidden_dim)
        self.decoder_position = SoftPositionEmbed(channels)
        self.decoder = convs(decoder_layers)
        self.output = Conv2D(self.image_channels + 1, 3, padding="same")

    def encode(self, images, slots=None, seed: int | None = None) -> Tensor:
        """The slots (batch, K, channels) of NHWC ``images``."""
        images = as_tensor(images)
        h, w = self.resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (h, w, self.image_channels):
            raise input_error(self, images, f"images (batch, {h}, {w}, {self.image_channels})")
        x = images
        for conv in self.encoder:
            x = conv(x)
        x = F.reshape(self.encoder_position(x), images.shape[0], h * w, self.channels)
        x = self.mlp_out(self.mlp_hidden(self.norm(x)))
        return self.slot_attention(x, slots=slots, seed=seed)

    def decode(self, slots) -> SlotReconstruction:
        """Each slot broadcast over the grid and decoded; the images combined by the masks."""
        slots = as_tensor(slots)
        n, k, d = slots.shape
        h, w = self.resolution
        x = F.broadcast_to(F.reshape(slots, n * k, 1, 1, d), (n * k, h, w, d))
        x = self.decoder_position(x)
        for conv in self.decoder:
            x = conv(x)
        out = F.reshape(self.output(x), n, k, h, w, self.image_channels + 1)
        images = out[..., :self.image_channels]
        masks = F.softmax(out[..., self.image_channels:], axis=1)
        return SlotReconstruction(F.sum(images * masks, axis=1), images, masks, slots)

    def forward(self, images, slots=None, seed: int | None = None) -> SlotReconstruction:
        return self.decode(self.encode(images, slots=slots, seed=seed))

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, num_slots={self.num_slots}, channels={self.channels}"
