"""Channel shuffle (Zhang et al. 2018, ShuffleNet): after grouped convolutions, each group's
channels are spread over all the groups so that the next grouped layer mixes information
from every group. For an NHWC volume with C = g n channels seen as a (g, n) grid (group,
channel in group), the shuffle transposes the grid:

    out[..., j g + i] = x[..., i n + j]      (i < g, j < n)

a reshape (N, H, W, g, n) -> transpose of the last two axes -> reshape (N, H, W, C), the
same channel order as torchvision's NCHW ``channel_shuffle``. It only permutes, so its
gradient is the inverse permutation of the upstream gradient.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["ChannelShuffle", "channel_shuffle"]


def _check_groups(groups, what: str) -> int:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{what}: groups must be a positive int, got {groups!r}")
    return groups


def _check_channels(channels, groups: int, shape, what: str) -> None:
    if channels is not None and channels % groups:
        raise ShapeError(f"{what}: the {channels} channels of the input of shape {tuple(shape)} do not split "
                         f"into {groups} equal groups")


def channel_shuffle(x, groups: int) -> Tensor:
    """Shuffle the channels (last axis) of ``x`` across ``groups`` groups (see the module
    docstring); the channels must be a multiple of ``groups``."""
    groups = _check_groups(groups, "channel_shuffle")
    x = as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"channel_shuffle: expected an input (batch, ..., channels), got shape {tuple(x.shape)}")
    *lead, channels = x.shape
    _check_channels(channels, groups, x.shape, "channel_shuffle")
    if groups == 1:
        return x
    grid = F.reshape(x, *lead, groups, channels // groups)
    return F.reshape(F.swapaxes(grid, -1, -2), *lead, channels)


@register_layer
class ChannelShuffle(Module):
    """Shuffles the channels of an NHWC volume across ``groups`` groups (ShuffleNet;
    torch.nn.ChannelShuffle's order); no weights."""

    default_name = "channel_shuffle"

    def __init__(self, groups: int, name: str | None = None):
        super().__init__(name=name)
        self.groups = _check_groups(groups, "ChannelShuffle")

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self.compute_output_shape(x.shape)
        return channel_shuffle(x, self.groups)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")
        _check_channels(shape[3], self.groups, shape, self._label())
        return shape

    def get_config(self) -> dict:
        return {"groups": self.groups, "name": self.name}

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
