"""A Dense layer whose weight is stored in 4 bits (NF4 or FP4, :mod:`lamina.nn.quant4`), the
frozen base of QLoRA.

    z = g(x dequantize(W_4bit) + b)

The weight is kept only as packed 4-bit codes and block statistics and is dequantized at each
call, in the compute dtype (the input's floating dtype, or ``compute_dtype`` with the input
cast to it and the output cast back); ``cache_dequantized=True`` keeps the float copy between
calls instead (faster, at the float weight's memory). The dequantized weight is a constant:
gradients flow to the input (and to the float bias, a parameter), never to the 4-bit weight.

The weight is quantized in PyTorch's (out_features, in_features) order, W^T flattened row by
row, so that the blocks run along a unit's inputs and the packed codes and maxima are those
bitsandbytes' ``Linear4bit`` holds for the same ``torch.nn.Linear`` weight.

Buffers (the state dict): ``weight`` (uint8, the packed codes), ``weight_absmax`` (float32
block maxima, or their uint8 codes with ``compress_statistics``), and with
``compress_statistics`` ``weight_nested_absmax`` (float32, one per 256 blocks) and
``weight_offset`` (0-d float32, the maxima's mean). The code tables are constants of
``quant_type``.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.dense import Dense, LinearFunction
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.quant4 import (
    QUANT_TYPES,
    QuantState,
    _check_blocksize,
    _check_quant_type,
    dequantize_4bit,
    dynamic_code,
    quantize_4bit,
)

__all__ = ["Dense4bit"]


def _floating_dtype(dtype):
    if dtype is None:
        return None
    try:
        found = numpy.dtype(dtype)
    except TypeError:
        found = None
    if found is None or found.kind != "f":
        raise ValueError(f"Dense4bit: compute_dtype must be a floating dtype or None, got {dtype!r}")
    return found


@register_layer
class Dense4bit(Module):
    """A fully connected layer a = g(x W + b) with W (n_in, units) frozen in 4 bits.

    ``quant_type`` 'nf4' (QLoRA's NormalFloat) or 'fp4'; ``blocksize`` values per block
    maximum; ``compress_statistics`` quantizes the maxima too (double quantization);
    ``compute_dtype`` the dtype of the product (None: the input's). Built from a trained
    Dense with :meth:`from_dense` (or :func:`lamina.nn.quantize_model_4bit` for a model);
    built on its first call like Dense, its fresh weight is drawn by ``kernel_init`` and
    quantized."""

    streamable = True

    def __init__(self, units: int, activation=None, use_bias: bool = True, quant_type: str = "nf4",
                 blocksize: int = 64, compress_statistics: bool = True, compute_dtype=None,
                 cache_dequantized: bool = False, kernel_init="he_uniform", bias_init="zeros",
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense4bit: units must be a positive int, got {units!r}")
        self.units = units
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.quant_type = _check_quant_type(quant_type, "Dense4bit")
        self.blocksize = _check_blocksize(blocksize, "Dense4bit")
        self.compress_statistics = bool(compress_statistics)
        self.compute_dtype = _floating_dtype(compute_dtype)
        self.cache_dequantized = bool(cache_dequantized)
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.in_features = None
        self._cache = None

    @classmethod
    def from_dense(cls, dense: Dense, quant_type: str = "nf4", blocksize: int = 64,
                   compress_statistics: bool = True, compute_dtype=None, cache_dequantized: bool = False
                   ) -> Dense4bit:
        """The built ``dense`` with its weight quantized (its bias, activation and name kept)."""
        if not isinstance(dense, Dense):
            raise TypeError(f"Dense4bit.from_dense: expected a Dense layer, got {type(dense).__name__}")
        if not dense.built:
            raise ValueError(f"Dense4bit.from_dense: {dense._label()} has no weights yet; call it on an input "
                             "first")
        layer = cls(dense.units, None, dense.use_bias, quant_type, blocksize, compress_statistics, compute_dtype,
                    cache_dequantized, kernel_init=dense.kernel_init, bias_init=dense.bias_init, name=dense.name)
        layer.activation, layer.activation_spec = dense.activation, dense.activation_spec
        layer.set_weight(dense.weight.data)
        if dense.use_bias:
            layer.add_parameter("bias", dense.bias.data.copy(), trainable=dense.bias.trainable)
        layer.built = True
        layer.build_input_shape = dense.build_input_shape
        return layer

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        n_in = shape[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of the input shape {shape} must be known")
        dtype = backend.get_default_dtype()
        self.set_weight(initializers.get(self.kernel_init)((n_in, self.units), n_in, self.units, dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.get(self.bias_init)((self.units,), n_in, self.units, dtype))
        self.built = True

    # -- the 4-bit weight ----------------------------------------------------------------------
    def set_weight(self, weight) -> None:
        """Quantize the float ``weight`` (n_in, units) into the layer's buffers (replacing them)."""
        weight = backend.xp.asarray(weight.data if isinstance(weight, Tensor) else weight)
        if weight.ndim != 2 or weight.shape[1] != self.units:
            raise ShapeError(f"{self._label()}.set_weight: expected a weight of shape (n_in, {self.units}), got "
                             f"{tuple(weight.shape)}")
        if self.in_features is not None and weight.shape[0] != self.in_features:
            raise ShapeError(f"{self._label()}.set_weight: the layer has {self.in_features} inputs; got a weight "
                             f"of shape {tuple(weight.shape)}")
        packed, state = quantize_4bit(weight.T, self.blocksize, self.quant_type, self.compress_statistics)
        self.in_features = int(weight.shape[0])
        self.register_buffer("weight", packed)
        self.register_buffer("weight_absmax", state.absmax)
        if state.nested is not None:
            self.register_buffer("weight_nested_absmax", state.nested.absmax)
            self.register_buffer("weight_offset", state.offset)
        self._cache = None

    @property
    def quant_state(self) -> QuantState:
        """The :class:`QuantState` of W^T (units, n_in), read from the buffers."""
        state = QuantState(absmax=self.weight_absmax, shape=(self.units, self.in_features),
                           dtype=numpy.dtype(numpy.float32), blocksize=self.blocksize, quant_type=self.quant_type,
                           code=QUANT_TYPES[self.quant_type])
        if self.compress_statistics:
            nested_absmax = backend.xp.asarray(self.weight_nested_absmax, dtype=numpy.float32)
            state.offset = backend.xp.asarray(self.weight_offset, dtype=numpy.float32)
            state.nested = QuantState(absmax=nested_absmax, shape=(state.n_blocks,),
                                      dtype=numpy.dtype(numpy.float32), blocksize=256, quant_type="dynamic8",
                                      code=dynamic_code())
        return state

    def dequantized_weight(self, dtype=None):
        """W (n_in, units) as a float array in ``dtype`` (default float32)."""
        dtype = numpy.dtype(numpy.float32 if dtype is None else dtype)
        if self.cache_dequantized:
            buffers = (self.weight, self.weight_absmax)
            if self._cache is not None and self._cache[0] == dtype and all(
                    a is b for a, b in zip(self._cache[1], buffers)):
                return self._cache[2]
        weight = dequantize_4bit(self.weight, self.quant_state, dtype).T
        if self.cache_dequantized:
            self._cache = (dtype, buffers, weight)
        return weight

    def to_dense(self) -> Dense:
        """A float :class:`Dense` with the dequantized weight (float32, or the compute dtype),
        the bias and activation: the layer with its 4 bits undone."""
        dense = Dense(self.units, None, self.use_bias, self.kernel_init, self.bias_init, name=self.name)
        dense.activation, dense.activation_spec = self.activation, self.activation_spec
        weight = self.dequantized_weight(self.compute_dtype)
        dense.add_parameter("weight", backend.xp.ascontiguousarray(weight))
        if self.use_bias:
            dense.add_parameter("bias", self.bias.data.copy(), trainable=self.bias.trainable)
        dense.built = True
        dense.build_input_shape = self.build_input_shape
        return dense

    # -- running -------------------------------------------------------------------------------
    def forward(self, x) -> Tensor:
        return self.apply_weights(x)

    def apply_weights(self, x, activate: bool = True) -> Tensor:
        """x W + b with W dequantized (then the activation unless ``activate=False``)."""
        if type(x) is not Tensor:
            x = as_tensor(x)
        if not x.data.shape or x.data.shape[-1] != self.in_features:
            raise input_error(self, x, f"(batch, ..., {self.in_features}): the last axis must have the "
                                       f"{self.in_features} features the layer was built for")
        given = x.dtype if x.dtype.kind == "f" else numpy.dtype(backend.get_default_dtype())
        dtype = self.compute_dtype or given
        weight = Tensor._wrap(self.dequantized_weight(dtype))
        inputs = [cast(x, dtype) if x.dtype.kind == "f" else Tensor._wrap(x.data.astype(dtype)), weight]
        if self.use_bias:
            inputs.append(cast(self.bias, dtype))
        z = LinearFunction.apply(*inputs)
        z = z if z.dtype == given else cast(z, given)
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        if self.built and shape[-1] is not None and shape[-1] != self.in_features:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the layer "
                             f"was built for {self.in_features}")
        return shape[:-1] + (self.units,)

    def macs(self, input_shapes, output_shapes) -> int:
        """Multiply-accumulates per sample, for the model summary."""
        return int(numpy.prod(output_shapes[0][:-1], dtype=numpy.int64)) * self.in_features * self.units

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "activation": activation_config(self),
            "use_bias": self.use_bias,
            "quant_type": self.quant_type,
            "blocksize": self.blocksize,
            "compress_statistics": self.compress_statistics,
            "compute_dtype": None if self.compute_dtype is None else self.compute_dtype.name,
            "cache_dequantized": self.cache_dequantized,
            "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        act = self.activation_spec if isinstance(self.activation_spec, str) else None
        n_in = self.in_features if self.built else "?"
        double = ", double quant" if self.compress_statistics else ""
        return (f"{n_in} -> {self.units}" + (f", activation={act!r}" if act else "")
                + ("" if self.use_bias else ", use_bias=False") + f", {self.quant_type}, blocksize={self.blocksize}"
                + double)
