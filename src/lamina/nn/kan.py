"""Kolmogorov-Arnold network layers (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks").

A KAN layer puts a learnable function phi_{j,i} on every edge from input i to output j and
sums at the nodes: y_j = sum_i phi_{j,i}(x_i). :class:`KANLinear` follows efficient-kan:

    phi_{j,i}(x) = w_b[j, i] silu(x) + s[j, i] sum_c c[j, i, c] B_c(x)

with B_c the B-splines of order k on a grid of G intervals (extended by k knots each side,
:func:`lamina.functional.b_spline_basis`), so y = silu(x) W_b^T + B(x) (s * C)^T over the
flattened (input, coefficient) axis. Weights keep efficient-kan's names and layouts
(``base_weight`` (units, n_in), ``spline_weight`` (units, n_in, G + k), ``spline_scaler``
(units, n_in), buffer ``grid`` (n_in, G + 2k + 1)), so its tensors copy over one to one. Buffers
``symbolic_index`` and ``symbolic_params`` record the edges replaced by formulas
(:meth:`KANLinear.fix_symbolic`).

:class:`FastKANLayer` (Li 2024, FastKAN) puts Gaussian radial basis functions on a fixed
grid in place of the B-splines, after a layer norm: y = RBF(LN(x)) W_s^T + silu(x) W_b^T + b.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.bsplines import b_spline_basis, check_grid_arguments, extended_grid, gaussian_rbf_basis
from lamina.nn.activation import get_activation, serialize_activation
from lamina.nn.dense import linear
from lamina.nn.kan_symbolic import SYMBOLIC_FUNCTIONS, SYMBOLIC_NAMES
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.sample_norm import LayerNorm

__all__ = ["FastKANLayer", "KANLinear", "kaiming_uniform"]


def kaiming_uniform(shape: tuple, a: float, dtype) -> np.ndarray:
    """torch's ``kaiming_uniform_(w, a)`` on a (fan_out, fan_in, ...) weight: U(-bound, bound)
    with bound = sqrt(2 / (1 + a^2)) sqrt(3 / fan_in)."""
    fan_in = int(np.prod(shape[1:]))
    bound = math.sqrt(2.0 / (1.0 + a * a)) * math.sqrt(3.0 / fan_in)
    return (backend.rng().uniform(-bound, bound, size=shape)).astype(dtype)


def linear_nt(x: Tensor, weight: Tensor, bias=None) -> Tensor:
    """x W^T (+ b) for a torch-layout weight (out, in)."""
    return linear(x, weight.T, bias)


def _check_input(layer: Module, x: Tensor, n_in: int) -> None:
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise input_error(layer, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} features "
                                    "the layer was built for")


@register_layer
class KANLinear(Module):
    """A KAN layer with B-spline edge functions (efficient-kan's ``KANLinear``), lazily built
    on the input width; see the module docstring for the formula.

    ``grid_size`` G intervals on ``grid_range``, splines of order ``spline_order`` k;
    initialisation as efficient-kan: ``base_weight`` kaiming-uniform with a = sqrt(5)
    ``scale_base``, the spline coefficients a least-squares fit of uniform noise of amplitude
    ``scale_noise`` / G (times ``scale_spline`` without a standalone scaler), ``spline_scaler``
    kaiming-uniform with a = sqrt(5) ``scale_spline``. ``grid_eps`` mixes the uniform grid into
    the data's quantiles in :meth:`update_grid`.
    """

    def __init__(self, units: int, grid_size: int = 5, spline_order: int = 3, grid_range=(-1.0, 1.0),
                 base_activation="silu", scale_noise: float = 0.1, scale_base: float = 1.0,
                 scale_spline: float = 1.0, enable_standalone_scale_spline: bool = True, grid_eps: float = 0.02,
                 name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "KANLinear: units")
        check_grid_arguments("KANLinear", grid_size, spline_order, grid_range)
        self.grid_size, self.spline_order = int(grid_size), int(spline_order)
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.base_activation_spec = base_activation
        self.base_activation = get_activation(base_activation)
        self.scale_noise, self.scale_base = float(scale_noise), float(scale_base)
        self.scale_spline = float(scale_spline)
        self.enable_standalone_scale_spline = bool(enable_standalone_scale_spline)
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"KANLinear: grid_eps must be in [0, 1], got {grid_eps!r}")
        self.grid_eps = float(grid_eps)

    # -- weights -----------------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        dtype = backend.get_default_dtype()
        units, g, k = self.units, self.grid_size, self.spline_order
        grid = np.tile(extended_grid(g, k, self.grid_range, np.float64), (n_in, 1))
        self.register_buffer("grid", grid.astype(dtype))
        self.add_parameter("base_weight", kaiming_uniform((units, n_in), math.sqrt(5) * self.scale_base, dtype))
        noise = (backend.rng().random((g + 1, n_in, units)) - 0.5) * self.scale_noise / g
        knots = grid.T[k:grid.shape[1] - k]                        # the G + 1 points of the plain grid
        coeff = self._fit_coefficients(knots, noise, grid)
        if not self.enable_standalone_scale_spline:
            coeff = coeff * self.scale_spline
        self.add_parameter("spline_weight", coeff.astype(dtype))
        if self.enable_standalone_scale_spline:
            scaler = kaiming_uniform((units, n_in), math.sqrt(5) * self.scale_spline, dtype)
            self.add_parameter("spline_scaler", scaler)
        self.register_buffer("symbolic_index", np.full((units, n_in), -1, dtype=np.int64))
        self.register_buffer("symbolic_params", np.zeros((units, n_in, 4), dtype=dtype))
        self.built = True

    @property
    def in_features(self) -> int:
        return self.base_weight.shape[1]

    def scaled_spline_weight(self) -> Tensor:
        """s[j, i] c[j, i, :] (the coefficients alone without a standalone scaler)."""
        weight = read_parameter(self, "spline_weight")
        if self.enable_standalone_scale_spline:
            return weight * read_parameter(self, "spline_scaler")[..., None]
        return weight

    def b_splines(self, x) -> Tensor:
        """The basis at ``x`` (batch, n_in) on this layer's grid: (batch, n_in, G + k)."""
        return b_spline_basis(x, self.grid, self.spline_order)

    def _fit_coefficients(self, x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """efficient-kan's ``curve2coeff``: per input i, the least-squares c with
        B(x_i) c = y_i; x (batch, n_in), y (batch, n_in, units) -> (units, n_in, G + k)."""
        basis = b_spline_basis(np.asarray(x, np.float64), grid.astype(np.float64), self.spline_order).numpy()
        coeff = [np.linalg.lstsq(basis[:, i, :], y[:, i, :], rcond=None)[0] for i in range(basis.shape[1])]
        return np.stack(coeff).transpose(2, 0, 1)                    # (n_in, G + k, units) -> (units, n_in, G + k)

    # -- running ---------------------------------------------------------------------------------------
    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        n_in = self.in_features
        _check_input(self, x, n_in)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, n_in)
        base_weight, spline_weight = read_parameter(self, "base_weight"), self.scaled_spline_weight()
        symbolic = self.symbolic_index >= 0
        if symbolic.any():                      # fixed edges: their numeric parts leave the sum
            numeric = Tensor._constant((~symbolic).astype(base_weight.dtype), base_weight.dtype)
            base_weight, spline_weight = base_weight * numeric, spline_weight * numeric[..., None]
        basis = self.b_splines(x2).reshape(x2.shape[0], -1)
        out = linear_nt(basis, spline_weight.reshape(self.units, -1))
        if self.base_activation is not None:
            out = out + linear_nt(self.base_activation(x2), base_weight)
        if symbolic.any():
            out = out + self._symbolic_output(x2)
        return out.reshape(*lead, self.units)

    def edge_activations(self, x) -> np.ndarray:
        """phi_{j,i}(x_i) for every sample and edge, (batch, units, n_in), without gradients
        (pruning, plots, symbolic fits)."""
        with no_grad():
            x = as_tensor(x)
            _check_input(self, x, self.in_features)
            x2 = x.reshape(-1, self.in_features)
            basis = self.b_splines(x2).numpy()
            phi = np.einsum("bic,jic->bji", basis, self.scaled_spline_weight().numpy())
            if self.base_activation is not None:
                phi = phi + self.base_activation(x2).numpy()[:, None, :] * self.base_weight.numpy()
            for j, i in zip(*np.nonzero(self.symbolic_index >= 0)):
                phi[:, j, i] = self._symbolic_edge(x2[:, i], j, i).numpy()
        return phi

    # -- grids -------------------------------------------------------------------------------------------
    def update_grid(self, x, margin: float = 0.01, grid_eps: float | None = None) -> None:
        """efficient-kan's grid update: a grid from the data, then the spline refitted to keep
        the layer's outputs on ``x`` (batch, n_in); see :meth:`regrid`."""
        self.regrid(x, self.grid_size, margin, grid_eps)

    def regrid(self, x, grid_size: int, margin: float = 0.01, grid_eps: float | None = None) -> None:
        """Move to a grid of ``grid_size`` intervals made from the data ``x`` and refit the
        spline coefficients by least squares to the current spline's values on ``x``.

        Per input, the G + 1 knots are grid_eps u + (1 - grid_eps) q: q the data's quantiles
        (sorted samples at linspace(0, batch - 1, G + 1), truncated), u the uniform grid on
        [min - margin, max + margin]; k more knots of the uniform step extend each side. The
        refit divides by ``spline_scaler`` so that the scaled spline is what is kept (with a
        standalone scaler efficient-kan's own refit leaves it out). Growing ``grid_size`` is
        pykan's grid extension. The base branch is unchanged.
        """
        check_grid_arguments(self._label(), grid_size, self.spline_order, self.grid_range)
        grid_eps = self.grid_eps if grid_eps is None else float(grid_eps)
        x = np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float64)
        n_in = self.in_features
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ShapeError(f"{self._label()}.regrid: x must have shape (batch, {n_in}), got {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"{self._label()}.regrid: needs at least 2 samples, got {x.shape[0]}")
        old_grid = self.grid.astype(np.float64)
        basis = b_spline_basis(x, old_grid, self.spline_order).numpy()
        scaled = self.scaled_spline_weight().numpy().astype(np.float64)
        spline_out = np.einsum("bic,jic->bij", basis, scaled)          # (batch, n_in, units)
        grid = data_grid(x, grid_size, self.spline_order, margin, grid_eps)
        coeff = self._fit_coefficients(x, spline_out, grid)
        if self.enable_standalone_scale_spline:
            scaler = self.spline_scaler.numpy().astype(np.float64)[..., None]
            coeff = np.divide(coeff, scaler, out=np.zeros_like(coeff), where=scaler != 0)
        dtype = self.spline_weight.dtype
        self.register_buffer("grid", grid.astype(dtype))
        if grid_size == self.grid_size:
            self.spline_weight.data[...] = coeff.astype(dtype)   # in place: optimisers keep their reference
        else:
            self.add_parameter("spline_weight", coeff.astype(dtype))
            self.grid_size = int(grid_size)

    # -- regularisation ----------------------------------------------------------------------------------
    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Tensor:
        """efficient-kan's surrogate of the KAN paper's L1 and entropy penalties:
        l_{j,i} = mean_c |c[j, i, c]|, L1 = sum l, p = l / L1, entropy = -sum p log p;
        returns regularize_activation L1 + regularize_entropy entropy."""
        l1 = read_parameter(self, "spline_weight").abs().mean(axis=-1)
        total = l1.sum()
        p = l1 / total
        entropy = -(p * p.log()).sum()
        return regularize_activation * total + regularize_entropy * entropy

    # -- symbolic edges ---------------------------------------------------------------------------------
    def fix_symbolic(self, out_node: int, in_node: int, function: str, params) -> None:
        """Replace the edge in_node -> out_node by a * f(b x + c) + d, f from the symbolic library
        (``params`` = (a, b, c, d)); the edge's spline and base weights no longer count."""
        if function not in SYMBOLIC_FUNCTIONS:
            raise ValueError(f"{self._label()}.fix_symbolic: unknown function {function!r}; expected one of "
                             f"{SYMBOLIC_NAMES}")
        if not (0 <= out_node < self.units and 0 <= in_node < self.in_features):
            raise IndexError(f"{self._label()}.fix_symbolic: edge {in_node} -> {out_node} is outside "
                             f"{self.in_features} inputs and {self.units} outputs")
        self.symbolic_index[out_node, in_node] = SYMBOLIC_NAMES.index(function)
        self.symbolic_params[out_node, in_node] = np.asarray(params, dtype=np.float64)

    def unfix_symbolic(self, out_node: int, in_node: int) -> None:
        """Give the edge in_node -> out_node back to its spline."""
        self.symbolic_index[out_node, in_node] = -1

    def _symbolic_edge(self, column: Tensor, out_node: int, in_node: int) -> Tensor:
        a, b, c, d = (float(v) for v in self.symbolic_params[out_node, in_node])
        fn = SYMBOLIC_FUNCTIONS[SYMBOLIC_NAMES[int(self.symbolic_index[out_node, in_node])]][1]
        return a * fn(column * b + c) + d

    def _symbolic_output(self, x2: Tensor) -> Tensor:
        total = None
        for j, i in zip(*np.nonzero(self.symbolic_index >= 0)):
            one_hot = np.zeros(self.units, dtype=x2.dtype)
            one_hot[j] = 1.0
            term = self._symbolic_edge(x2[:, int(i)], int(j), int(i))[:, None] * one_hot
            total = term if total is None else total + term
        return total

    # -- description --------------------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        if self.built and shape[-1] is not None and shape[-1] != self.in_features:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the layer "
                             f"was built for {self.in_features}")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, "grid_size": self.grid_size, "spline_order": self.spline_order,
                "grid_range": list(self.grid_range), "base_activation": serialize_activation(self.base_activation_spec),
                "scale_noise": self.scale_noise, "scale_base": self.scale_base, "scale_spline": self.scale_spline,
                "enable_standalone_scale_spline": self.enable_standalone_scale_spline, "grid_eps": self.grid_eps,
                "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.in_features if self.built else "?"
        return f"{n_in} -> {self.units}, grid_size={self.grid_size}, spline_order={self.spline_order}"


def data_grid(x: np.ndarray, grid_size: int, spline_order: int, margin: float, grid_eps: float) -> np.ndarray:
    """The extended grid (n_in, G + 2k + 1) of :meth:`KANLinear.regrid` for the data x (batch, n_in)."""
    batch = x.shape[0]
    x_sorted = np.sort(x, axis=0)
    adaptive = x_sorted[np.linspace(0, batch - 1, grid_size + 1).astype(np.int64)]
    step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / grid_size
    uniform = np.arange(grid_size + 1)[:, None] * step + x_sorted[0] - margin
    grid = grid_eps * uniform + (1 - grid_eps) * adaptive
    below = grid[:1] - step * np.arange(spline_order, 0, -1)[:, None]
    above = grid[-1:] + step * np.arange(1, spline_order + 1)[:, None]
    return np.concatenate([below, grid, above]).T


@register_layer
class FastKANLayer(Module):
    """FastKAN (Li 2024): y = RBF(LN(x)) W_s^T + silu(x) W_b^T + b.

    RBF puts ``num_grids`` Gaussians exp(-((x - c_m) / h)^2) at the centres c_m =
    linspace(grid_min, grid_max, num_grids), h = (grid_max - grid_min) / (num_grids - 1)
    unless ``denominator`` is given; LN is a layer norm over the features (left out for one
    input feature or ``use_layernorm=False``). Weights: ``spline_weight`` (units, n_in
    num_grids), truncated normal of std ``spline_weight_init_scale``; ``base_weight`` (units,
    n_in) and ``base_bias`` as torch's Linear (``use_base_update=False`` leaves them out).
    """

    def __init__(self, units: int, grid_min: float = -2.0, grid_max: float = 2.0, num_grids: int = 8,
                 use_base_update: bool = True, use_layernorm: bool = True, base_activation="silu",
                 spline_weight_init_scale: float = 0.1, denominator: float | None = None, name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "FastKANLayer: units")
        self.num_grids = positive_int(num_grids, "FastKANLayer: num_grids")
        if not (np.isfinite(grid_min) and np.isfinite(grid_max) and grid_min < grid_max):
            raise ValueError(f"FastKANLayer: need finite grid_min < grid_max, got {grid_min!r}, {grid_max!r}")
        if denominator is None and self.num_grids < 2:
            raise ValueError("FastKANLayer: num_grids must be >= 2 unless denominator is given")
        self.grid_min, self.grid_max = float(grid_min), float(grid_max)
        self.denominator = float(denominator) if denominator is not None else (
            (self.grid_max - self.grid_min) / (self.num_grids - 1))
        if not self.denominator > 0:
            raise ValueError(f"FastKANLayer: denominator must be > 0, got {denominator!r}")
        self.use_base_update, self.use_layernorm = bool(use_base_update), bool(use_layernorm)
        self.base_activation_spec = base_activation
        self.base_activation = get_activation(base_activation)
        self.spline_weight_init_scale = float(spline_weight_init_scale)
        self.centers = np.linspace(self.grid_min, self.grid_max, self.num_grids)
        if self.use_layernorm:
            self.layernorm = LayerNorm()

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        dtype = backend.get_default_dtype()
        if self.use_layernorm and n_in == 1:
            del self.layernorm
        scale = self.spline_weight_init_scale
        weight = backend.rng().standard_normal((self.units, n_in * self.num_grids)) * scale
        weight = np.clip(weight, -2.0, 2.0)               # torch's trunc_normal_ cuts at [-2, 2]
        self.add_parameter("spline_weight", weight.astype(dtype))
        if self.use_base_update:
            self.add_parameter("base_weight", kaiming_uniform((self.units, n_in), math.sqrt(5), dtype))
            bound = 1.0 / math.sqrt(n_in)
            self.add_parameter("base_bias", backend.rng().uniform(-bound, bound, self.units).astype(dtype))
        self.built = True

    @property
    def in_features(self) -> int:
        return self.spline_weight.shape[1] // self.num_grids

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_input(self, x, self.in_features)
        h = self.layernorm(x) if "layernorm" in self._modules else x
        basis = gaussian_rbf_basis(h, self.centers, self.denominator)
        out = linear_nt(basis.reshape(*x.shape[:-1], -1), read_parameter(self, "spline_weight"))
        if self.use_base_update:
            act = self.base_activation(x) if self.base_activation is not None else x
            out = out + linear_nt(act, read_parameter(self, "base_weight"), read_parameter(self, "base_bias"))
        return out

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"units": self.units, "grid_min": self.grid_min, "grid_max": self.grid_max,
                "num_grids": self.num_grids, "use_base_update": self.use_base_update,
                "use_layernorm": self.use_layernorm, "base_activation": serialize_activation(self.base_activation_spec),
                "spline_weight_init_scale": self.spline_weight_init_scale, "denominator": self.denominator,
                "name": self.name}
