"""The Fourier neural operator (Li et al., 2021, "Fourier Neural Operator for Parametric Partial
Differential Equations"; FNO): a network that maps functions sampled on a periodic grid to
functions on the same grid, learned once and evaluable at any resolution.

    lift:        v_0 = P(a(x), x), a pointwise Dense of the input channels and, with
                 ``append_grid``, the normalised coordinates x_i = i / n in [0, 1) (``lift``)
    blocks:      v_{l+1} = sigma( K_l v_l + W_l v_l ),  l = 0 .. layers - 1, with K_l the
                 spectral convolution (``spectral{l}``: the lowest ``modes`` frequencies mixed
                 by learned complex weights) and W_l a pointwise linear map (a 1x1
                 convolution, ``pointwise{l}``); sigma = GELU except after the last block
    project:     u(x) = Q_2 GELU(Q_1 v_L(x)), Dense ``projection_units`` (128) then Dense
                 ``out_channels`` (``project_hidden``, ``project_out``)

Every weight acts either pointwise or on a fixed set of frequencies, so the same model runs
on grids of any size with at least 2 ``modes`` points per axis (it assumes periodic inputs;
the reference code's zero padding for non-periodic problems is not included).
:class:`FNO1D` reads (batch, length, in_channels); :class:`FNO2D` NHWC (batch, h, w,
in_channels).
"""

from __future__ import annotations

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["FNO1D", "FNO2D", "grid_coordinates"]


def grid_coordinates(spatial: tuple, dtype) -> Tensor:
    """The normalised coordinates of a periodic grid of ``spatial`` sizes, shape (*spatial,
    len(spatial)): channel d holds x_d = i_d / n_d in [0, 1). (The reference code spaces n
    points over [0, 1] with both ends; i / n keeps a coarse grid's points on a finer one's, so
    x_i at n points is x_{2i} at 2n.)"""
    xp = backend.xp
    axes = [xp.arange(n) / n for n in spatial]
    grids = xp.meshgrid(*axes, indexing="ij")
    return Tensor._wrap(xp.stack(grids, axis=-1).astype(dtype))


class _FNO(Block):
    """What FNO1D and FNO2D share; subclasses set ``spatial_axes`` and ``spectral_layer``."""

    spatial_axes = 0
    spectral_layer: type = nn.Module

    def __init__(self, modes, width: int, layers: int = 4, in_channels: int = 1, out_channels: int = 1,
                 append_grid: bool = True, projection_units: int = 128, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.width = positive_int(width, f"{who}: width")
        self.layers = positive_int(layers, f"{who}: layers")
        self.in_channels = positive_int(in_channels, f"{who}: in_channels")
        self.out_channels = positive_int(out_channels, f"{who}: out_channels")
        self.projection_units = positive_int(projection_units, f"{who}: projection_units")
        self.append_grid = bool(append_grid)
        self.lift = nn.Dense(width, name="lift")
        for k in range(layers):
            spectral = self.spectral_layer(width, modes, name=f"spectral{k}")
            setattr(self, f"spectral{k}", spectral)
            setattr(self, f"pointwise{k}", nn.Dense(width, name=f"pointwise{k}"))
        self.modes = spectral.modes
        self.project_hidden = nn.Dense(projection_units, name="project_hidden")
        self.project_out = nn.Dense(out_channels, name="project_out")

    def _spatial_names(self) -> str:
        return "length" if self.spatial_axes == 1 else "h, w"

    def _expected(self) -> str:
        return f"(batch, {self._spatial_names()}, {self.in_channels})"

    def _check_shape(self, shape) -> tuple:
        shape = check_shape_ndim(self, shape, self.spatial_axes + 2, self._expected())
        if shape[-1] is not None and shape[-1] != self.in_channels:
            raise ShapeError(f"{self._label()}: expected inputs of shape {self._expected()}, got {tuple(shape)} "
                             f"(the model was made for in_channels={self.in_channels})")
        return shape

    def trace(self, shape, step):
        shape = self._check_shape(shape)
        if self.append_grid:
            shape = (*shape[:-1], self.in_channels + self.spatial_axes)
        shape = step(self.lift, shape)
        for k in range(self.layers):
            spectral = step(self._modules[f"spectral{k}"], shape)
            shape = step(self._modules[f"pointwise{k}"], shape)
            if tuple(spectral) != tuple(shape):
                raise ShapeError(f"{self._label()}: block {k} gives shapes {spectral} and {shape}")
        shape = step(self.project_hidden, shape)
        return step(self.project_out, shape)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != self.spatial_axes + 2 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, self._expected())
        if self.append_grid:
            grid = grid_coordinates(tuple(x.shape[1:-1]), x.dtype)
            grid = F.broadcast_to(grid, (x.shape[0], *grid.shape))
            x = F.concat([x, grid], axis=-1)
        v = self.lift(x)
        for k in range(self.layers):
            v = F.add(self._modules[f"spectral{k}"](v), self._modules[f"pointwise{k}"](v))
            if k < self.layers - 1:
                v = F.gelu(v)
        return self.project_out(F.gelu(self.project_hidden(v)))

    def get_config(self) -> dict:
        modes = self.modes[0] if self.spatial_axes == 1 else list(self.modes)
        return {"modes": modes, "width": self.width, "layers": self.layers, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "append_grid": self.append_grid,
                "projection_units": self.projection_units, "name": self.name}

    def extra_repr(self) -> str:
        modes = self.modes[0] if self.spatial_axes == 1 else self.modes
        return (f"modes={modes}, width={self.width}, layers={self.layers}, in_channels={self.in_channels}, "
                f"out_channels={self.out_channels}, append_grid={self.append_grid}")


@register_layer
class FNO1D(_FNO):
    """The Fourier neural operator on functions of one periodic variable: (batch, length,
    in_channels) -> (batch, length, out_channels) at any length with length // 2 + 1 >= modes.
    Sub-layers ``lift``, ``spectral0`` / ``pointwise0`` .. (``layers`` of each),
    ``project_hidden``, ``project_out``; see the module docstring."""

    default_name = "fno1d"
    spatial_axes = 1
    spectral_layer = nn.SpectralConv1D


@register_layer
class FNO2D(_FNO):
    """The Fourier neural operator on NHWC fields of two periodic variables: (batch, h, w,
    in_channels) -> (batch, h, w, out_channels) at any h >= 2 m1, w // 2 + 1 >= m2, with
    ``modes`` = (m1, m2) or one int for both. Sub-layers as :class:`FNO1D`'s, with
    SpectralConv2D; with ``append_grid`` the coordinates of the height, then of the width,
    are appended to the input channels."""

    default_name = "fno2d"
    spatial_axes = 2
    spectral_layer = nn.SpectralConv2D
