"""``FP8Dense``: a Dense layer computing as an FP8 GEMM would, with the hybrid recipe of
Micikevicius et al. (2022) and Transformer Engine: E4M3 in the forward, E5M2 in the backward.

With per-tensor scales s_x, s_w, s_g (see :mod:`lamina.amp.fp8`):

    forward:   y  = (E4M3(x s_x) · E4M3(W s_w)) / (s_x s_w) + b      (matmul in float32)
    backward:  g  = E5M2(dy s_g) / s_g
               dx = g (E4M3(W s_w) / s_w)^T,   dW = (E4M3(x s_x) / s_x)^T g,   db = sum of dy

the rounding itself passing gradients straight through. The state of the three scalings is
kept in two buffers, rows (input, weight, output gradient): ``amax_history`` (3, length) and
``scale`` (3,). While training, each call records the amaxes of x and W and each backward that
of dy, and then recomputes the scale from the history (delayed scaling: the scale used at a
step comes from the steps before it). ``scaling="current"`` takes each scale from the tensor
being quantized instead, and ``scaling="none"`` quantizes with scale 1 (no state is kept).
In evaluation mode the state is read, never changed.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy

from lamina import backend
from lamina.amp.fp8 import fake_quantize_fp8, quantize_fp8, scale_from_amax, update_amax_history
from lamina.autograd import Function, Tensor
from lamina.nn.activation import activate_fresh
from lamina.nn.dense import Dense, linear
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.quantize import _replace, copy_with_layers

__all__ = ["FP8Dense", "convert_to_fp8"]

INPUT, WEIGHT, GRAD_OUTPUT = 0, 1, 2
SCALINGS = ("delayed", "current", "none")
AMAX_ALGOS = ("max", "most_recent")


def _amax(array) -> numpy.float32:
    return numpy.float32(backend.to_numpy(backend.xp.abs(array).max())) if array.size else numpy.float32(0)


class _ToFP8(Function):
    """q = FP8(x s) (the raw FP8 values, not divided back); dq/dx = s (straight through)."""

    def forward(self, x):
        return quantize_fp8(x, self.fmt, self.scale)

    def backward(self, dy):
        return (dy * dy.dtype.type(self.scale),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy * self.scale,)


class _GradientToFP8(Function):
    """Identity in the forward; the backward gives E5M2(dy s_g) / s_g and updates the layer's
    output-gradient scaling."""

    def forward(self, y):
        return y.copy()

    def backward(self, dy):
        return (quantize_fp8(dy, self.layer.backward_format, self._scale(dy)) / dy.dtype.type(self.scale)
                ).astype(dy.dtype),

    def backward_graph(self, dy: Tensor) -> tuple:
        return (fake_quantize_fp8(dy, self.layer.backward_format, float(self._scale(dy.data))),)

    def _scale(self, dy) -> float:
        self.scale = float(self.layer._scale_for(GRAD_OUTPUT, dy, self.layer.backward_format))
        return self.scale


@register_layer
class FP8Dense(Dense):
    """A Dense layer with FP8 emulation (E4M3 forward, E5M2 gradients, per-tensor scales).

    ``margin``: the scales are divided by 2^margin (headroom). ``amax_history_len`` and
    ``amax_compute_algo`` (``"max"`` or ``"most_recent"``): delayed scaling's history.
    ``scaling``: ``"delayed"`` (the default), ``"current"`` or ``"none"`` (scale 1). ``fp8_gradients=False`` keeps
    the output gradient in float (for comparison). The other arguments are Dense's.
    """

    forward_format, backward_format = "e4m3", "e5m2"

    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_init="he_uniform",
                 bias_init="zeros", margin: int = 0, amax_history_len: int = 16, amax_compute_algo: str = "max",
                 scaling: str = "delayed", fp8_gradients: bool = True, name: str | None = None):
        super().__init__(units, activation, use_bias, kernel_init, bias_init, name=name)
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"FP8Dense: margin must be an int >= 0, got {margin!r}")
        if isinstance(amax_history_len, bool) or not isinstance(amax_history_len, int) or amax_history_len < 1:
            raise ValueError(f"FP8Dense: amax_history_len must be a positive int, got {amax_history_len!r}")
        if amax_compute_algo not in AMAX_ALGOS:
            raise ValueError(f"FP8Dense: amax_compute_algo must be one of {AMAX_ALGOS}, got {amax_compute_algo!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"FP8Dense: scaling must be one of {SCALINGS}, got {scaling!r}")
        self.margin, self.amax_history_len = margin, amax_history_len
        self.amax_compute_algo, self.scaling = amax_compute_algo, scaling
        self.fp8_gradients = bool(fp8_gradients)

    @classmethod
    def from_dense(cls, layer: Dense, **fp8_options) -> FP8Dense:
        """The FP8 form of the built Dense ``layer``, sharing its parameters, with a fresh
        scaling state; ``fp8_options`` are FP8Dense's own arguments."""
        options = cls(1, **fp8_options)                 # checks the options
        fp8 = cls.__new__(cls)
        fp8.__dict__.update(layer.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(fp8, registry, OrderedDict(layer.__dict__[registry]))
        for name in ("margin", "amax_history_len", "amax_compute_algo", "scaling", "fp8_gradients"):
            setattr(fp8, name, getattr(options, name))
        fp8.add_scaling_state()
        return fp8

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_scaling_state()

    def add_scaling_state(self) -> None:
        """Fresh buffers: amax histories of zeros, scales of one."""
        xp = backend.xp
        self.register_buffer("amax_history", xp.zeros((3, self.amax_history_len), dtype=numpy.float32))
        self.register_buffer("scale", xp.ones((3,), dtype=numpy.float32))

    def _scale_for(self, row: int, array, fmt: str) -> numpy.float32:
        """The scale to quantize ``array`` (row ``row`` of the state) with now; in training the
        array's amax is recorded and the delayed scale updated afterwards."""
        amax = _amax(array)
        previous = numpy.float32(backend.to_numpy(self.scale[row]))
        if self.scaling == "none":
            return numpy.float32(1)
        if self.scaling == "current":
            now = numpy.float32(scale_from_amax(amax, fmt, self.margin, previous))
        else:
            now = previous
        if self.training:
            history = update_amax_history(self.amax_history[row], amax)
            self.amax_history[row] = history
            summary = history.max() if self.amax_compute_algo == "max" else history[0]
            self.scale[row] = now if self.scaling == "current" else scale_from_amax(
                summary, fmt, self.margin, previous)
        return now

    def apply_weights(self, x, weight, activate: bool = True) -> Tensor:
        if type(x) is not Tensor:
            x = as_tensor(x)
        n_in = weight.shape[0]
        if not x.data.shape or x.data.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} "
                                       "features the layer was built for")
        fmt = self.forward_format
        s_x = float(self._scale_for(INPUT, x.data, fmt))
        s_w = float(self._scale_for(WEIGHT, weight.data, fmt))
        product = linear(_ToFP8.apply(x, fmt=fmt, scale=s_x), _ToFP8.apply(weight, fmt=fmt, scale=s_w))
        z = product * Tensor(numpy.asarray(1.0 / (s_x * s_w), dtype=product.dtype))
        if self.fp8_gradients:
            z = _GradientToFP8.apply(z, layer=self)
        if self.use_bias:
            z = z + read_parameter(self, "bias")
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin, "amax_history_len": self.amax_history_len,
                "amax_compute_algo": self.amax_compute_algo, "scaling": self.scaling,
                "fp8_gradients": self.fp8_gradients}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, fp8 e4m3/e5m2, {self.scaling} scaling"
                f"{'' if self.fp8_gradients else ', float gradients'}")


def convert_to_fp8(model: Module, **fp8_options) -> Module:
    """A copy of ``model`` whose Dense layers (of that exact type, built) are :class:`FP8Dense`
    with the same weights and a fresh scaling state; ``fp8_options`` (``margin``,
    ``amax_history_len``, ``amax_compute_algo``, ``scaling``, ``fp8_gradients``) go to each."""
    duplicate, found = copy_with_layers(model, Dense, (Dense,), "convert_to_fp8", "converting it")
    return _replace(duplicate, {key: FP8Dense.from_dense(layer, **fp8_options) for key, layer in found.items()})
