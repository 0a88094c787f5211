"""Weight normalization and spectral normalization: wrappers that recompute a layer's weight
from other parameters before every call.

``WeightNorm`` (Salimans & Kingma, 2016) gives each output unit's weight vector a learned
length g apart from its direction v:

    w = g v / ||v||,   the norm over every axis of v but the output-unit axis

so that gradient descent adjusts the scale of a unit's pre-activation and its direction
separately. ``SpectralNorm`` (Miyato et al., 2018) divides the weight by an estimate of its
largest singular value, bounding the layer's Lipschitz constant by 1:

    W_mat = the weight with the output-unit axis first, reshaped to (units, -1)
    power iteration, u and v kept between calls and advanced only in training:
        u <- W_mat v / ||W_mat v||,   v <- W_mat^T u / ||W_mat^T u||
    sigma = u^T W_mat v,   w = W / sigma

with u and v held constant in the gradient of sigma (dsigma/dW = u v^T). The order of the
two updates is that of ``torch.nn.utils.parametrizations.spectral_norm`` (the paper updates
v first); the estimate converges to the same sigma either way.

The output-unit axis is the last one of a Dense weight (n_in, units) and of a
Conv2DTranspose weight (c_in, f_h, f_w, K), the first one of the convolution weights
(K, f_h, f_w, c_in) and (K, f, c_in); ``axis`` names it for other layers. A grouped
Conv2DTranspose's last axis holds K/groups units of every group (output channel
k = group K/groups + j sits at index j among the input channels of its group), so
WeightNorm gives it K gains, one per output channel, each normalising its group's slice
only, as separate ungrouped transposed convolutions per group would.
The weights (c_in, f, K / groups) and (c_in, f_d, f_h, f_w, K / groups) of Conv1DTranspose and
Conv3DTranspose keep their units on the last axis for SpectralNorm (the output channels, as
PyTorch's spectral_norm, dim=1) and on the first for WeightNorm (as PyTorch's weight_norm, dim=0).

How the wrapped layer gets the computed weight: the wrapper takes the layer's weight
parameter over (it becomes g and v, or weight_orig) and before each call sets the layer's
weight attribute to the freshly computed tensor, so the layer's own forward (its checks,
bias and activation) runs unchanged and the gradient flows back to g and v through it.
After the call the attribute holds a constant copy of that weight (for shapes and
inspection); the wrapped layer no longer owns a weight parameter.
"""

from __future__ import annotations

import numbers

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn import init as initializers
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.conv_transpose_nd import Conv1DTranspose, Conv3DTranspose
from lamina.nn.dense import Dense
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module
from lamina.nn.parameter import Parameter

__all__ = ["SpectralNorm", "WeightNorm"]

# layers whose weights keep the output units on the last axis; the others keep them first
_UNITS_LAST = (Dense, Conv2DTranspose)
# SpectralNorm's: the N-d transposed convolutions' output channels too
_SPECTRAL_UNITS_LAST = (*_UNITS_LAST, Conv1DTranspose, Conv3DTranspose)

# power iterations run when SpectralNorm takes a weight over, so that sigma starts close
_WARMUP_ITERATIONS = 15


class _WeightWrapper(Module):
    """What both wrappers share: taking the wrapped layer's weight over and substituting
    the computed weight for it during each call."""

    # layers whose output-unit axis defaults to the weight's last one
    _units_last: tuple[type, ...] = _UNITS_LAST

    def __init__(self, layer, weight: str, axis: int | None, name: str | None):
        super().__init__(name=name)
        if isinstance(layer, dict):
            layer = layer_from_config(layer)
        if not isinstance(layer, Module):
            raise TypeError(f"{self._label()}: expected a layer with a weight (Dense, Conv2D, ...) to wrap, "
                            f"got {type(layer).__name__}")
        if not isinstance(weight, str) or not weight.isidentifier():
            raise ValueError(f"{self._label()}: weight must name the wrapped layer's weight parameter, "
                             f"got {weight!r}")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, numbers.Integral)):
            raise ValueError(f"{self._label()}: axis must be None (the layer's output-unit axis) or an int, "
                             f"got {axis!r}")
        self.layer = layer
        self.weight_name = weight
        self.axis = None if axis is None else int(axis)
        self.owns_weight = False
        self.shape_only = False
        if not layer.built and type(layer).build is Module.build:
            raise TypeError(f"{self._label()}: the wrapped {layer._label()} creates no weights; wrap a layer "
                            f"with a {weight!r} parameter such as Dense or Conv2D")

    def _take_over_if_built(self) -> None:
        """The end of a subclass's constructor: a built layer's weight is taken over at once."""
        if self.layer.built:
            self._take_over()

    # -- subclasses --------------------------------------------------------------------
    def _adopt(self, weight: Parameter) -> None:
        """Create the wrapper's parameters and buffers from the layer's initial weight."""
        raise NotImplementedError

    def compute_weight(self) -> Tensor:
        """The weight the wrapped layer uses, computed from the wrapper's parameters."""
        raise NotImplementedError

    # -- taking the weight over --------------------------------------------------------
    def _take_over(self) -> None:
        param = self.layer._parameters.get(self.weight_name)
        if param is None:
            raise TypeError(
                f"{self._label()}: the wrapped {self.layer._label()} has no parameter {self.weight_name!r} to "
                f"normalize (its parameters: {sorted(self.layer._parameters)}); wrap a layer with a weight such "
                "as Dense or Conv2D, or name the weight with weight=..."
            )
        self.unit_axis = self._resolve_axis(param.ndim)
        # built by a summary's trace (lamina.nn.init.meta): zero weights that only carry shapes
        self.shape_only = initializers.is_meta()
        self._adopt(param)
        delattr(self.layer, self.weight_name)
        self.owns_weight = True
        with no_grad():
            self._set_layer_weight(self.compute_weight().detach())

    def _resolve_axis(self, ndim: int) -> int:
        axis = self.axis
        if axis is None:
            axis = -1 if isinstance(self.layer, self._units_last) else 0
        if not -ndim <= axis < ndim:
            raise ValueError(f"{self._label()}: axis {self.axis} is out of range for the {ndim}-D weight "
                             f"{self.weight_name!r} of the wrapped {self.layer._label()}")
        return axis % ndim

    def _set_layer_weight(self, weight: Tensor) -> None:
        # a plain attribute, not a registered parameter: the layer reads it, nothing learns it
        object.__setattr__(self.layer, self.weight_name, weight)

    def _reduced_axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(i for i in range(ndim) if i != self.unit_axis)

    # -- running ---------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
            self.layer.build_input_shape = input_shape
        if not self.owns_weight:
            self._take_over()
        self.built = True

    def forward(self, *inputs, **kwargs):
        weight = self.compute_weight()
        self._set_layer_weight(weight)
        try:
            return self.layer(*inputs, **kwargs)
        finally:
            self._set_layer_weight(weight.detach())

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {"layer": layer_to_config(self.layer), "weight": self.weight_name, "axis": self.axis,
                "name": self.name}


@register_layer
class WeightNorm(_WeightWrapper):
    """``layer`` with its weight reparametrised as w = g v / ||v||, one gain g per output unit
    (the norm runs over every axis of v but the output-unit axis).

    g and v are the trainable parameters (state dict keys ``g``, ``v`` and the wrapped layer's
    others under ``layer.``); they start at g = ||w||, v = w, so the wrapped layer initially
    computes what the plain one does. The wrapped layer builds on the first call if it is not
    built yet. ``weight`` names the layer's weight parameter and ``axis`` its output-unit
    axis (default: the last for Dense and Conv2DTranspose, the first for convolutions; a
    grouped Conv2DTranspose gets one gain per output channel, see the module docstring).
    """

    def __init__(self, layer, weight: str = "weight", axis: int | None = None, name: str | None = None):
        super().__init__(layer, weight, axis, name)
        self._take_over_if_built()

    def _adopt(self, weight: Parameter) -> None:
        data = weight.data
        self.unit_groups = self._unit_groups()
        if self.shape_only:
            units = data.shape[self.unit_axis] * self.unit_groups
            self.g = Parameter(initializers.meta_array((units,), data.dtype))
            self.v = Parameter(data)
            return
        grouped = self._grouped_shape(data.shape)
        norms = backend.xp.sqrt((data * data).reshape(grouped).sum(axis=self._norm_axes(len(grouped))))
        norms = norms.reshape(-1)
        dead = numpy.flatnonzero(backend.to_numpy(norms) == 0)
        if dead.size:
            raise ValueError(f"{self._label()}: output units {dead.tolist()} of the wrapped {self.layer._label()} "
                             "have an all-zero weight, whose direction v / ||v|| is undefined; initialise the "
                             "weight with nonzero values")
        self.g = Parameter(norms, trainable=weight.trainable, dtype=data.dtype)
        self.v = Parameter(data.copy(), trainable=weight.trainable, dtype=data.dtype)

    def _unit_groups(self) -> int:
        """How many groups share the output-unit axis: a grouped Conv2DTranspose's, with the
        default axis; 1 otherwise."""
        if self.axis is None and isinstance(self.layer, Conv2DTranspose):
            return self.layer.groups
        return 1

    def _grouped_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """v's shape with its first (input-channel) axis split into (groups, c_in / groups)
        when units are grouped; unchanged otherwise."""
        if self.unit_groups == 1:
            return tuple(shape)
        return (self.unit_groups, shape[0] // self.unit_groups, *shape[1:])

    def _norm_axes(self, ndim: int) -> tuple[int, ...]:
        """The axes of the grouped view of v that each unit's norm runs over."""
        if self.unit_groups == 1:
            return self._reduced_axes(ndim)
        return tuple(range(1, ndim - 1))

    def compute_weight(self) -> Tensor:
        """w = g v / ||v|| with g broadcast along the output-unit axis (along the group and
        unit axes of v's grouped view for a grouped Conv2DTranspose)."""
        v = self.v
        if self.shape_only:
            return v.detach()
        grouped_shape = self._grouped_shape(v.shape)
        grouped = F.reshape(v, grouped_shape) if self.unit_groups > 1 else v
        ndim = len(grouped_shape)
        norm_axes = self._norm_axes(ndim)
        norm = F.sqrt(F.sum(F.mul(grouped, grouped), axis=norm_axes, keepdims=True))
        gain = F.reshape(self.g, tuple(1 if i in norm_axes else grouped_shape[i] for i in range(ndim)))
        weight = F.mul(grouped, F.div(gain, norm))
        return F.reshape(weight, v.shape) if self.unit_groups > 1 else weight

    def extra_repr(self) -> str:
        return f"weight={self.weight_name!r}"


@register_layer
class SpectralNorm(_WeightWrapper):
    """``layer`` with its weight divided by its largest singular value sigma, estimated by
    power iteration (``n_power_iterations`` steps per training call from the u and v kept
    since the last one; none in evaluation, where the stored u and v give sigma).

    The raw weight is the trainable parameter ``weight_orig``; u (units,) and v (the other
    axes flattened) are buffers, saved in the state dict. ``eps`` guards the normalisation
    of u and v. ``weight`` and ``axis`` as for :class:`WeightNorm`, but the default axis of a
    Conv1DTranspose or Conv3DTranspose weight is its last (output-channel) one, as PyTorch's.
    """

    _units_last = _SPECTRAL_UNITS_LAST

    def __init__(self, layer, n_power_iterations: int = 1, eps: float = 1e-12, weight: str = "weight",
                 axis: int | None = None, name: str | None = None):
        super().__init__(layer, weight, axis, name)
        if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, numbers.Integral) \
                or n_power_iterations < 1:
            raise ValueError(f"{self._label()}: n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"{self._label()}: eps must be a positive number, got {eps!r}")
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)
        self._take_over_if_built()

    def _adopt(self, weight: Parameter) -> None:
        self.weight_orig = Parameter(weight.data, trainable=weight.trainable, dtype=weight.data.dtype)
        matrix = self._matrix(weight.data)
        if self.shape_only:
            self.register_buffer("u", initializers.meta_array((matrix.shape[0],), matrix.dtype))
            self.register_buffer("v", initializers.meta_array((matrix.shape[1],), matrix.dtype))
            return
        for buffer, size in (("u", matrix.shape[0]), ("v", matrix.shape[1])):
            start = backend.xp.asarray(backend.rng().standard_normal(size).astype(matrix.dtype))
            self.register_buffer(buffer, _normalized(start, self.eps))
        self._power_iteration(matrix, _WARMUP_ITERATIONS)

    def _matrix(self, weight):
        """W_mat: the weight array with the output-unit axis first, as (units, -1)."""
        moved = backend.xp.moveaxis(weight, self.unit_axis, 0)
        return moved.reshape(moved.shape[0], -1)

    def _power_iteration(self, matrix, steps: int) -> None:
        u, v = self.u, self.v
        for _ in range(steps):
            u = _normalized(matrix @ v, self.eps)
            v = _normalized(matrix.T @ u, self.eps)
        self.u, self.v = u, v

    @property
    def sigma(self) -> float:
        """u^T W_mat v with the stored u and v: the current estimate of the weight's largest
        singular value."""
        return float(self.u @ (self._matrix(self.weight_orig.data) @ self.v))

    def compute_weight(self) -> Tensor:
        """W / sigma with sigma = sum(W * u v^T), u and v constants (v^T's entries laid out
        like W's axes other than the output-unit axis)."""
        w = self.weight_orig
        if self.shape_only:
            return w.detach()
        moved_shape = backend.xp.moveaxis(w.data, self.unit_axis, 0).shape
        uv = backend.xp.moveaxis(backend.xp.outer(self.u, self.v).reshape(moved_shape), 0, self.unit_axis)
        sigma = F.sum(F.mul(w, Tensor._wrap(uv)))
        return F.div(w, sigma)

    def forward(self, *inputs, **kwargs):
        if self.training and not self.shape_only:
            self._power_iteration(self._matrix(self.weight_orig.data), self.n_power_iterations)
        return super().forward(*inputs, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_power_iterations": self.n_power_iterations, "eps": self.eps}

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}"


def _normalized(x, eps: float):
    """x / max(||x||, eps)."""
    return x / max(float(backend.xp.sqrt((x * x).sum())), eps)
