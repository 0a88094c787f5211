"""Layer wrappers: ``TimeDistributed`` applies one layer to every step of a sequence.

A sequence of T frames, feature vectors or images, (N, T, ...), goes through the same layer at
each step, with the same weights, as Keras' ``TimeDistributed``: a CNN encoding every frame
of a video before a recurrent layer, or a Dense classifier on every output of a recurrent
layer. The time axis is folded into the batch axis, the layer runs once on the N T inputs,
and its output is unfolded:

    (N, T, ...) -> (N T, ...) -> layer -> (N T, ...out) -> (N, T, ...out)

Both reshapes are graph ops, so gradients flow through to the input and the layer's weights.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["TimeDistributed"]

_EXPECTED = "an input (batch, time, ...) with at least 3 axes; the layer is applied to each time step"


def _fold(n, t):
    """The folded batch size N T (None when either is unknown)."""
    return None if n is None or t is None else n * t


@register_layer
class TimeDistributed(Module):
    """``layer`` applied to each time step of an (N, T, ...) input: out[:, t] = layer(x[:, t]).

    One set of weights serves every step (the wrapped layer, registered as the sub-layer
    ``layer``: state dict keys ``layer.weight``, ...). The wrapped layer builds on its first
    call from the shape of one step, (N T, ...), and must return one tensor with one row per
    input row. ``lamina.analysis.summary`` gives the wrapper one row: the whole sequence's
    output shape, the wrapped layer's parameters and T times its MACs for one step.
    """

    # each step's output depends on that step alone, so a sequence may be fed step by step
    streamable = True

    def __init__(self, layer, name: str | None = None):
        super().__init__(name=name)
        if isinstance(layer, dict):
            layer = layer_from_config(layer)
        if not isinstance(layer, Module):
            raise TypeError(f"TimeDistributed: expected a layer (a Module) to wrap, got {type(layer).__name__}")
        self.layer = layer

    def _step_shape(self, input_shape) -> tuple:
        """(N T, ...): the input shape with time folded into the batch axis."""
        if input_shape is None or len(input_shape) < 3:
            shown = None if input_shape is None else tuple(input_shape)
            raise ShapeError(f"{self._label()}: got an input shape {shown}; expected {_EXPECTED}")
        n, t, *rest = input_shape
        return (_fold(n, t), *rest)

    def build(self, input_shape) -> None:
        step = self._step_shape(input_shape)
        if not self.layer.built:
            self.layer.build(step)
            self.layer.built = True
            self.layer.build_input_shape = step
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 3:
            raise input_error(self, x, _EXPECTED)
        n, t = x.shape[:2]
        out = self.layer(F.reshape(x, (n * t, *x.shape[2:])))
        if not isinstance(out, Tensor):
            raise TypeError(f"{self._label()}: the wrapped {self.layer._label()} returned "
                            f"{type(out).__name__}; TimeDistributed needs a layer with one output tensor")
        if out.ndim == 0 or out.shape[0] != n * t:
            raise ShapeError(f"{self._label()}: the wrapped {self.layer._label()} turned the {n * t} folded steps "
                             f"of an input of shape {tuple(x.shape)} into an output of shape {tuple(out.shape)}; "
                             "it must keep one output row per input row")
        return F.reshape(out, (n, t, *out.shape[1:]))

    def compute_output_shape(self, input_shape):
        step = self._step_shape(input_shape)
        out = self.layer.compute_output_shape(step)
        if isinstance(out, list):
            raise TypeError(f"{self._label()}: the wrapped {self.layer._label()} has several outputs; "
                            "TimeDistributed needs a layer with one output tensor")
        n, t = tuple(input_shape)[:2]
        return (n, t, *tuple(out)[1:])

    def get_config(self) -> dict:
        return {"layer": layer_to_config(self.layer), "name": self.name}
