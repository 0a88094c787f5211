"""The Fourier neural operator (Li et al., 2021, "Fourier Neural Operator for Parametric Partial
Differential Equations"; FNO): a network that maps functions sampled on a periodic grid to
functions on the same grid, learned once and evaluable at any resolution.

    lift:        v_0 = P(a(x), x), a pointwise Dense of the input channels and, with
                 ``append_grid``, the normalised coordinates x_i = i / n in [0, 1)
                 (``grid="periodic"``) or x_i = i / (n - 1) in [0, 1] (``grid="closed"``,
                 the reference code's) (``lift``)
    pad:         with ``padding`` = p, v_0 gets p zeros after the end of every spatial axis
    blocks:      v_{l+1} = sigma( K_l v_l + W_l v_l ),  l = 0 .. layers - 1, with K_l the
                 spectral convolution (``spectral{l}``: the lowest ``modes`` frequencies mixed
                 by learned complex weights) and W_l a pointwise linear map (a 1x1
                 convolution, ``pointwise{l}``); sigma = GELU except after the last block
    crop:        with ``padding``, v_L is cut back to the input's grid
    project:     u(x) = Q_2 GELU(Q_1 v_L(x)), Dense ``projection_units`` (128) then Dense
                 ``out_channels`` (``project_hidden``, ``project_out``)

Every weight acts either pointwise or on a fixed set of frequencies, so the same model runs
on grids of any size with at least 2 ``modes`` points per axis. The Fourier layers see their
input as periodic; for a problem that is not (Darcy flow with a zero boundary value), the
zero ``padding`` of the reference code gives the blocks room to leave the periodic wrap-around
outside the cropped domain (Li et al. use p = 9 at 85 x 85 points).
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


GRIDS = ("periodic", "closed")


def grid_coordinates(spatial: tuple, dtype, kind: str = "periodic") -> Tensor:
    """The normalised coordinates of a grid of ``spatial`` sizes, shape (*spatial, len(spatial)):
    channel d holds x_d = i_d / n_d in [0, 1) for a ``"periodic"`` grid, or i_d / (n_d - 1) in
    [0, 1] for a ``"closed"`` one (both ends, the reference code's ``linspace(0, 1, n)``, for
    grids of nodes such as Darcy flow's). Either way a coarse grid's points lie on a finer
    one's: x_i at n points is x_{2i} at 2n (periodic), or at 2n - 1 (closed)."""
    if kind not in GRIDS:
        raise ValueError(f"grid_coordinates: kind must be one of {GRIDS}, got {kind!r}")
    xp = backend.xp
    if kind == "periodic":
        axes = [xp.arange(n) / n for n in spatial]
    else:
        axes = [xp.arange(n) / max(n - 1, 1) for n in spatial]
    grids = xp.meshgrid(*axes, indexing="ij")
    return Tensor._wrap(xp.stack(grids, axis=-1).astype(dtype))


class _FNO(Block):
    """What FNO1D and FNO2D share; subclasses set ``spatial_axes`` and ``spectral_layer``."""

    spatial_axes = 0
    spectral_layer: type = nn.Module

    def __init__(self, modes, width: int, layers: int = 4, in_channels: int = 1, out_channels: int = 1,
                 append_grid: bool = True, projection_units: int = 128, padding: int = 0,
                 grid: str = "periodic", name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.width = positive_int(width, f"{who}: width")
        self.layers = positive_int(layers, f"{who}: layers")
        self.in_channels = positive_int(in_channels, f"{who}: in_channels")
        self.out_channels = positive_int(out_channels, f"{who}: out_channels")
        self.projection_units = positive_int(projection_units, f"{who}: projection_units")
        self.append_grid = bool(append_grid)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"{who}: padding must be an int >= 0, got {padding!r}")
        self.padding = padding
        if grid not in GRIDS:
            raise ValueError(f"{who}: grid must be one of {GRIDS}, got {grid!r}")
        self.grid = grid
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
        lifted = step(self.lift, shape)
        shape = self._padded_shape(lifted)
        for k in range(self.layers):
            spectral = step(self._modules[f"spectral{k}"], shape)
            shape = step(self._modules[f"pointwise{k}"], shape)
            if tuple(spectral) != tuple(shape):
                raise ShapeError(f"{self._label()}: block {k} gives shapes {spectral} and {shape}")
        shape = (*lifted[:-1], shape[-1])
        shape = step(self.project_hidden, shape)
        return step(self.project_out, shape)

    def _padded_shape(self, shape) -> tuple:
        spatial = [None if n is None else n + self.padding for n in shape[1:-1]]
        return (shape[0], *spatial, shape[-1])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != self.spatial_axes + 2 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, self._expected())
        spatial = tuple(x.shape[1:-1])
        if self.append_grid:
            grid = grid_coordinates(spatial, x.dtype, self.grid)
            grid = F.broadcast_to(grid, (x.shape[0], *grid.shape))
            x = F.concat([x, grid], axis=-1)
        v = self.lift(x)
        if self.padding:
            v = F.pad(v, ((0, 0), *[(0, self.padding)] * self.spatial_axes, (0, 0)))
        for k in range(self.layers):
            v = F.add(self._modules[f"spectral{k}"](v), self._modules[f"pointwise{k}"](v))
            if k < self.layers - 1:
                v = F.gelu(v)
        if self.padding:
            v = v[(slice(None), *[slice(0, n) for n in spatial])]
        return self.project_out(F.gelu(self.project_hidden(v)))

    def get_config(self) -> dict:
        modes = self.modes[0] if self.spatial_axes == 1 else list(self.modes)
        return {"modes": modes, "width": self.width, "layers": self.layers, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "append_grid": self.append_grid,
                "projection_units": self.projection_units, "padding": self.padding, "grid": self.grid,
                "name": self.name}

    def extra_repr(self) -> str:
        modes = self.modes[0] if self.spatial_axes == 1 else self.modes
        return (f"modes={modes}, width={self.width}, layers={self.layers}, in_channels={self.in_channels}, "
                f"out_channels={self.out_channels}, append_grid={self.append_grid}" + self._options_repr())

    def _options_repr(self) -> str:
        parts = [f", padding={self.padding}"] if self.padding else []
        if self.grid != "periodic":
            parts.append(f", grid={self.grid!r}")
        return "".join(parts)


@register_layer
class FNO1D(_FNO):
    """The Fourier neural operator on functions of one variable: (batch, length, in_channels)
    -> (batch, length, out_channels) at any length with (length + padding) // 2 + 1 >= modes.
    Sub-layers ``lift``, ``spectral0`` / ``pointwise0`` .. (``layers`` of each),
    ``project_hidden``, ``project_out``; see the module docstring."""

    default_name = "fno1d"
    spatial_axes = 1
    spectral_layer = nn.SpectralConv1D


@register_layer
class FNO2D(_FNO):
    """The Fourier neural operator on NHWC fields of two variables: (batch, h, w, in_channels)
    -> (batch, h, w, out_channels) at any h + padding >= 2 m1, (w + padding) // 2 + 1 >= m2, with
    ``modes`` = (m1, m2) or one int for both. Sub-layers as :class:`FNO1D`'s, with
    SpectralConv2D; with ``append_grid`` the coordinates of the height, then of the width,
    are appended to the input channels."""

    default_name = "fno2d"
    spatial_axes = 2
    spectral_layer = nn.SpectralConv2D
