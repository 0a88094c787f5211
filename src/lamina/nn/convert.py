"""Turning fully connected layers into convolutions (course notes, object detection:
"convolutional implementation of sliding windows").

A Dense layer of n units reading the flattened (h, w, c) volume is the same computation as
a Conv2D with n filters of size (h, w, c) applied without padding: each filter is one
column of the Dense weight reshaped to (h, w, c) (lamina's Flatten reads NHWC volumes in
(h, w, c) order). The Dense layers after it read a vector, i.e. a 1x1 map: they become 1x1
convolutions. On the input size the network was built for the result is a (1, 1, n) map
holding the same numbers; on a larger image every layer slides, and output cell (i, j) is
what the original network gives for the window of the image at (i · S, j · S), S the
product of the strides before the first Dense layer, without recomputing the overlap.

A global average pooling feeding Dense layers becomes an average pool over the map size it
was built for (stride 1), and an adaptive average pool that is the identity at the built
size is dropped (on a larger image it would squash the map).
"""

from __future__ import annotations

from lamina import backend
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.module import Module
from lamina.nn.pooling import AvgPool2D, GlobalAvgPool2D
from lamina.nn.reshape import Flatten, Identity
from lamina.nn.sequential import Sequential

__all__ = ["fully_connected_to_conv"]


def _conv_from_dense(dense: Dense, kernel_hw: tuple[int, int], channels: int) -> Conv2D:
    """A built Conv2D computing ``dense`` on an (h, w, c) window (c = ``channels``)."""
    h, w = kernel_hw
    units = dense.units
    conv = Conv2D(units, (h, w), use_bias=dense.use_bias, name=dense.name,
                  activation=dense.activation if dense.activation_spec is None else dense.activation_spec)
    conv.build((None, h, w, channels))
    conv.built = True
    conv.build_input_shape = (None, h, w, channels)
    weight = dense.weight.data  # (h w c, units), rows in (h, w, c) order
    conv.weight.data = backend.xp.ascontiguousarray(weight.T.reshape(units, h, w, channels))
    if dense.use_bias:
        conv.bias.data = dense.bias.data.copy()
    return conv


class _State:
    """What the walk carries: the current shape and whether the values are a flattened volume."""

    def __init__(self, shape: tuple):
        self.shape = shape
        self.flat_from: tuple[int, int, int] | None = None  # (h, w, c) of the flattened volume
        self.vector = False  # the values are (N, units) from an earlier Dense: now a 1x1 map


def _is_elementwise(layer: Module) -> bool:
    """Layers that act on the last axis only (or element by element) and so work on maps too."""
    from lamina.nn import activation, normalization

    elementwise = (Dropout, Identity, normalization.BatchNorm, activation._Elementwise, activation.PReLU)
    return isinstance(layer, elementwise)


def _convert(seq: Sequential, state: _State) -> Sequential:
    out: list[Module] = []
    for layer in seq:
        shape = state.shape
        if isinstance(layer, Sequential):
            out.append(_convert(layer, state))
            continue
        if isinstance(layer, Flatten):
            if len(shape) != 4:
                raise ValueError(f"fully_connected_to_conv: {layer._label()} flattens a shape {shape}; only "
                                 "4-D (N, h, w, c) volumes can be turned into convolutions")
            state.flat_from = tuple(shape[1:])
            state.shape = tuple(layer.compute_output_shape(shape))
            continue  # the Flatten disappears: the first Dense becomes an (h, w) convolution
        if isinstance(layer, GlobalAvgPool2D):
            h, w = shape[1], shape[2]
            pool = AvgPool2D((h, w), stride=1, name=layer.name)
            out.append(pool)
            state.vector = True
            state.shape = tuple(layer.compute_output_shape(shape))
            continue
        if type(layer).__name__ == "AdaptiveAvgPool2D" and len(shape) == 4:
            new_shape = tuple(layer.compute_output_shape(shape))
            if tuple(new_shape[1:3]) != tuple(shape[1:3]):
                raise ValueError(f"fully_connected_to_conv: {layer._label()} resizes the map {shape} to "
                                 f"{new_shape}; only an adaptive pool that is the identity can be dropped")
            state.shape = new_shape
            continue
        if isinstance(layer, Dense):
            if not layer.built:
                raise ValueError(f"fully_connected_to_conv: {layer._label()} is not built; build the model first")
            n_in = layer.weight.shape[0]
            if state.flat_from is not None:
                h, w, c = state.flat_from
                if h * w * c != n_in:
                    raise ValueError(f"fully_connected_to_conv: {layer._label()} reads {n_in} features but the "
                                     f"flattened volume is {state.flat_from}")
                out.append(_conv_from_dense(layer, (h, w), c))
                state.flat_from = None
            elif state.vector:
                out.append(_conv_from_dense(layer, (1, 1), n_in))
            else:
                raise ValueError(f"fully_connected_to_conv: {layer._label()} does not follow a Flatten or a "
                                 "global average pooling of a 4-D volume")
            state.vector = True
            state.shape = tuple(layer.compute_output_shape(shape))
            continue
        if (state.flat_from is not None or state.vector) and not _is_elementwise(layer):
            raise ValueError(f"fully_connected_to_conv: cannot convert {layer._label()} after the fully "
                             "connected part (only dropout, activations and batch norm can sit between "
                             "the Dense layers)")
        out.append(layer)
        state.shape = tuple(layer.compute_output_shape(shape))
    result = Sequential(*out, name=seq.name)
    result.built = True  # every layer in it is built
    return result


def fully_connected_to_conv(model: Sequential) -> Sequential:
    """The course's conversion of Flatten + Dense layers into convolutions (sliding windows).

    ``model``: a built Sequential (nested Sequentials allowed) whose fully connected part
    follows a Flatten (or a global average pooling) of a 4-D volume. Returns a new
    Sequential in which the Flatten is gone, the first Dense(n) is a Conv2D with n filters
    of the flattened volume's (h, w) size, the following Dense layers are 1x1 Conv2Ds
    (same names, weights copied, activations kept); every other layer is *shared* with
    ``model``. On the built input size the output is (N, 1, 1, n) with exactly the original
    values; on a larger image it is the grid of the original network's outputs on every
    window (stride: the product of the strides before the Dense layers).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"fully_connected_to_conv: expected a Sequential, got {type(model).__name__}")
    if not model.built or model.build_input_shape is None:
        raise ValueError("fully_connected_to_conv: build the model first (call it on an input or "
                         "model.build(input_shape))")
    state = _State(tuple(model.build_input_shape))
    converted = _convert(model, state)
    if state.flat_from is not None:
        raise ValueError("fully_connected_to_conv: the model ends with a Flatten and no Dense layer")
    converted.build_input_shape = tuple(model.build_input_shape)
    converted.built = True
    return converted
