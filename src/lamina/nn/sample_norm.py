"""Layer and group normalization: each sample normalised over its own values (no batch
statistics, the same in training and evaluation), as one node each with the closed-form
backward.

Layer normalization normalises a sample over its trailing axes (transformers, RNNs); group
normalization an image over H, W and a group of channels (detection and segmentation nets
with small batches; groups = C is instance normalization).

This module holds the layers; the nodes and the kernels they run on are in
:mod:`lamina.nn.sample_norm_functions` (importable from here too).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.sample_norm_functions import (  # noqa: F401  (moved there, importable from here too)
    CHUNK_BYTES,
    SMALL_LAYER_NORM,
    GroupNormFunction,
    LayerNormFunction,
    _channel_totals,
    _chunks,
    _fold,
    _group_means,
    _row_means,
    _spread,
    _standardize,
    _standardize_rows,
    _standardized_backward,
    standardized_backward_graph,
)

__all__ = ["GroupNorm", "GroupNormFunction", "LayerNorm", "LayerNormFunction"]


def _affine_operands(layer: Module, shape: tuple[int, ...], dtype):
    """(gamma, beta) for the layer's function: its parameters, or constants 1 and 0 (beta
    alone when the layer has a weight but no bias)."""
    xp = backend.xp
    if not layer.affine:
        return Tensor._wrap(xp.ones(shape, dtype=dtype)), Tensor._wrap(xp.zeros(shape, dtype=dtype))
    if not getattr(layer, "use_bias", True):
        return read_parameter(layer, "weight"), Tensor._wrap(xp.zeros(shape, dtype=dtype))
    return read_parameter(layer, "weight"), read_parameter(layer, "bias")


def _check_eps(layer: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a positive number, got {eps!r}")
    return float(eps)


@register_layer
class LayerNorm(Module):
    """Layer normalization: each sample normalised over its trailing ``axes`` (an int or a
    tuple, negative or positive, that must be the last axes, as PyTorch's
    ``normalized_shape``): y = gamma (x - mu) / sqrt(var + eps) + beta, with mu and the
    biased var of the sample's values over those axes.

    ``axes=-1`` normalises the features of (N, D) or the channels of each NHWC pixel;
    ``axes=(-3, -2, -1)`` a whole NHWC image. The same in training and evaluation (no
    running statistics). Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0)
    of the normalised shape, also reachable as ``gamma`` and ``beta``; ``affine=False``
    (PyTorch's ``elementwise_affine=False``) leaves them out, ``bias=False`` (PyTorch's
    ``bias=False``) leaves out beta alone: y = gamma (x - mu) / sqrt(var + eps).
    """

    default_name = "layer_norm"

    def __init__(self, axes: int | tuple[int, ...] = -1, eps: float = 1e-5, affine: bool = True,
                 bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.axes = _axes_tuple(axes)
        self.eps = _check_eps("LayerNorm", eps)
        self.affine = bool(affine)
        self.use_bias = bool(bias)
        self.normalized_shape: tuple[int, ...] | None = None

    @property
    def streamable(self) -> bool:
        return len(self.axes) == 1         # the last axis alone: each step on its own

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    def _trailing(self, shape: tuple, what: str) -> int:
        """How many trailing axes of ``shape`` the layer normalises (a ShapeError unless
        ``axes`` are the last ones of ``shape``, the batch axis excluded)."""
        ndim = len(shape)
        k = len(self.axes)
        resolved = sorted(a + ndim if a < 0 else a for a in self.axes)
        if resolved != list(range(ndim - k, ndim)) or k >= ndim:
            raise ShapeError(
                f"{self._label()}: axes={_axes_repr(self.axes)} are not the trailing axes of the {what} "
                f"{shape}; expected {k} of the last axes 1..{ndim - 1} (the batch axis 0 is never normalised)")
        return k

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ...) with at least 2 axes")
        k = self._trailing(shape, "input shape")
        normalized = shape[len(shape) - k:]
        if any(s is None for s in normalized):
            raise ShapeError(f"{self._label()}: the normalised axes of {shape} must be known")
        self.normalized_shape = tuple(int(s) for s in normalized)
        if self.affine:
            xp, dtype = backend.xp, backend.get_default_dtype()
            self.add_parameter("weight", xp.ones(self.normalized_shape, dtype=dtype))
            if self.use_bias:
                self.add_parameter("bias", xp.zeros(self.normalized_shape, dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        normalized = self.normalized_shape
        shape = x.data.shape
        # the usual last-axis norm needs only the last check below (_trailing's answer is 1 then)
        if not (self.axes == (-1,) and len(shape) >= 2 and shape[-1:] == normalized):
            if x.ndim < 2:
                raise input_error(self, x, f"(batch, ..., {', '.join(map(str, normalized))}) with at least 2 axes")
            k = self._trailing(tuple(shape), "input of shape")
            if tuple(shape[x.ndim - k:]) != normalized:
                raise input_error(self, x, f"the normalised axes {_axes_repr(self.axes)} of shape {normalized} "
                                           "(the shape the layer was built for)")
        gamma, beta = _affine_operands(self, normalized, x.dtype)
        return LayerNormFunction.apply(x, gamma, beta, eps=self.eps)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(2, 9)), "(batch, ...) with at least 2 axes")
        k = self._trailing(shape, "input shape")
        normalized = shape[len(shape) - k:]
        if self.normalized_shape is not None and any(
                s is not None and s != t for s, t in zip(normalized, self.normalized_shape)):
            raise ShapeError(f"{self._label()}: input shape {shape} has {normalized} on the normalised axes; the "
                             f"layer was built for {self.normalized_shape}")
        return shape

    def get_config(self) -> dict:
        axes = self.axes[0] if len(self.axes) == 1 else list(self.axes)
        bias = {} if self.use_bias else {"bias": False}      # older configs stay as they were
        return {"axes": axes, "eps": self.eps, "affine": self.affine, **bias, "name": self.name}

    def extra_repr(self) -> str:
        normalized = self.normalized_shape if self.normalized_shape is not None else "?"
        return (f"{normalized}, axes={_axes_repr(self.axes)}, eps={self.eps}"
                + ("" if self.affine else ", affine=False") + ("" if self.use_bias else ", bias=False"))


def _axes_repr(axes: tuple[int, ...]):
    return axes[0] if len(axes) == 1 else axes


def _axes_tuple(axes) -> tuple[int, ...]:
    """LayerNorm's ``axes`` as a tuple of ints, checked as far as no input shape is needed:
    distinct, and trailing where all have one sign (negative: -k..-1; positive: consecutive,
    never the batch axis 0)."""
    items = (axes,) if isinstance(axes, int) else axes
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"LayerNorm: axes must be an int or a tuple of ints, got {axes!r}") from None
    if not items or any(isinstance(a, bool) or not isinstance(a, int) for a in items):
        raise TypeError(f"LayerNorm: axes must be an int or a non-empty tuple of ints, got {axes!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"LayerNorm: axes {axes!r} repeat an axis")
    k, ordered = len(items), sorted(items)
    if ordered[-1] < 0 and ordered != list(range(-k, 0)):
        raise ValueError(f"LayerNorm: axes {axes!r} are not the trailing axes; expected the last {k} "
                         f"axes, {tuple(range(-k, 0))}")
    if ordered[0] >= 0 and (ordered[0] == 0 or ordered != list(range(ordered[0], ordered[0] + k))):
        raise ValueError(f"LayerNorm: axes {axes!r} must be consecutive trailing axes after the batch axis 0")
    return tuple(int(a) for a in items)


@register_layer
class GroupNorm(Module):
    """Group normalization of channels-last inputs (N, ..., C): (N, C), sequences (N, L, C),
    NHWC images (N, H, W, C), volumes (N, D, H, W, C). The C channels are split into
    ``groups`` contiguous groups and each sample's group is normalised over its positions and
    its C / groups channels, y = gamma (x - mu) / sqrt(var + eps) + beta with the biased
    var, then gamma and beta act per channel: PyTorch's ``GroupNorm(groups, C)`` on the
    channels-first input. ``groups=1`` normalises whole samples, ``groups=C`` each channel alone
    (instance normalization). The same in training and evaluation (no running statistics).

    Parameters ``weight`` (gamma, init 1) and ``bias`` (beta, init 0) of size C, also
    reachable as ``gamma`` and ``beta``; ``affine=False`` leaves them out.
    """

    default_name = "group_norm"
    _EXPECTED = "(batch, ..., channels): (batch, channels), (batch, length, channels), NHWC or NDHWC"
    _RANKS = (2, 3, 4, 5, 6)

    def __init__(self, groups: int, eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name=name)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"GroupNorm: groups must be a positive int, got {groups!r}")
        self.groups = groups
        self.eps = _check_eps("GroupNorm", eps)
        self.affine = bool(affine)
        self.num_channels: int | None = None

    @property
    def gamma(self):
        return self._parameters.get("weight")

    @property
    def beta(self):
        return self._parameters.get("bias")

    def _check_channels(self, shape: tuple) -> None:
        c = shape[-1]
        if c is not None and c % self.groups:
            raise ShapeError(f"{self._label()}: the input shape {shape} has C={c} channels, which do not split "
                             f"into groups={self.groups} equal groups; C must be divisible by groups")

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, self._RANKS, self._EXPECTED)
        c = shape[-1]
        if c is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        self._check_channels(shape)
        self.num_channels = int(c)
        if self.affine:
            xp, dtype = backend.xp, backend.get_default_dtype()
            self.add_parameter("weight", xp.ones((c,), dtype=dtype))
            self.add_parameter("bias", xp.zeros((c,), dtype=dtype))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c = self.num_channels
        if x.ndim not in self._RANKS or x.shape[-1] != c:
            hint = ""
            if x.ndim > 2 and x.shape[1] == c:
                hint = "; it looks channels-first: move the channels last, e.g. NCHW with x.transpose(0, 2, 3, 1)"
            raise input_error(self, x, f"{self._EXPECTED} with C={c} channels on the last axis{hint}")
        gamma, beta = _affine_operands(self, (c,), x.dtype)
        return GroupNormFunction.apply(x, gamma, beta, groups=self.groups, eps=self.eps)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, self._RANKS, self._EXPECTED)
        self._check_channels(shape)
        if self.num_channels is not None and shape[-1] is not None and shape[-1] != self.num_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} channels; the layer "
                             f"was built for C={self.num_channels}")
        return shape

    def get_config(self) -> dict:
        return {"groups": self.groups, "eps": self.eps, "affine": self.affine, "name": self.name}

    def extra_repr(self) -> str:
        c = self.num_channels if self.num_channels is not None else "?"
        return f"{self.groups}, {c}, eps={self.eps}" + ("" if self.affine else ", affine=False")
