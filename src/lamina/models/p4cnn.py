"""A small group-equivariant CNN (Cohen & Welling 2016, the P4CNN of their rotated-MNIST
experiment, at toy size):

    P4ConvZ2(c_1, f, 'same') -> GroupBatchNorm -> ReLU
    P4ConvP4(c_i, f, 'same') -> GroupBatchNorm -> ReLU     for each further c_i
    GroupPool (max over the rotations) -> mean over the pixels -> Dense(num_classes)

With ``group='p4m'`` the layers are the p4m ones (mirrors too). Every stage commutes with the
group (stride 1, 'same', odd kernels), and the group and spatial pools forget the pose: the
logits of an image and of its quarter turns (and mirror images, for p4m) are equal, whatever
the weights. A c-channel group layer holds |G| times the weights of a c-channel Conv2D, as
its input has |G| maps per channel.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, ReLU, Sequential
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.group_conv import GroupBatchNorm, GroupPool, P4ConvP4, P4ConvZ2, P4MConvP4M, P4MConvZ2
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["P4CNN", "p4cnn"]

_LAYERS = {"p4": (P4ConvZ2, P4ConvP4), "p4m": (P4MConvZ2, P4MConvP4M)}


@register_with_arguments
class P4CNN(Module):
    """A rotation- (p4) or rotation-and-mirror- (p4m) invariant classifier of NHWC images (module
    docstring). Sub-layers ``features`` (the group convolutions), ``group_pool`` and
    ``classifier``; ``model(images)`` gives logits (N, num_classes)."""

    def __init__(self, num_classes: int = 10, channels=(8, 8, 8), kernel_size: int = 3, group: str = "p4",
                 reduction: str = "max", name: str | None = None):
        super().__init__(name=name)
        if group not in _LAYERS:
            raise ValueError(f"P4CNN: group must be 'p4' or 'p4m', got {group!r}")
        channels = tuple(channels)
        if not channels:
            raise ValueError("P4CNN: channels must name at least one layer, got ()")
        self.num_classes = positive_int(num_classes, "P4CNN: num_classes")
        self.channels = tuple(positive_int(c, "P4CNN: channels") for c in channels)
        self.kernel_size = positive_int(kernel_size, "P4CNN: kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"P4CNN: kernel_size must be odd ('same' padding of an even kernel is one-sided "
                             f"and breaks the invariance), got {kernel_size}")
        self.group = group
        lifting, group_conv = _LAYERS[group]
        layers = []
        for i, c in enumerate(self.channels):
            conv = lifting if i == 0 else group_conv
            layers += [conv(c, self.kernel_size, padding="same", use_bias=False), GroupBatchNorm(), ReLU()]
        self.features = Sequential(*layers)
        self.group_pool = GroupPool(reduction)
        self.classifier = Dense(self.num_classes)

    def forward(self, images) -> Tensor:
        images = as_tensor(images)
        if images.ndim != 4:
            raise ShapeError(f"P4CNN: images of shape {tuple(images.shape)}; expected NHWC images (N, H, W, C)")
        pooled = self.group_pool(self.features(images))          # (N, H, W, K)
        return self.classifier(pooled.mean(axis=(1, 2)))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, channels={self.channels}, group={self.group!r}"


def p4cnn(num_classes: int = 10, channels=(8, 8, 8), kernel_size: int = 3, group: str = "p4",
          reduction: str = "max") -> P4CNN:
    """A :class:`P4CNN` (``group='p4m'`` for the mirror-invariant variant)."""
    return P4CNN(num_classes, channels, kernel_size, group, reduction)
