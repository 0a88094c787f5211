"""Inference fusion: a layer's element-wise followers applied in place to its fresh output.

At evaluation a batch norm is the per-channel multiply-add y = x scale + shift (running
statistics folded in) and ReLU, ReLU6 and tanh are element-wise: each is one more pass over
the previous layer's whole output, read back from memory, into a new array. When a
:class:`Sequential` runs in evaluation mode with gradients off, each Conv2D or
DepthwiseConv2D followed by a BatchNorm and/or one of those activations (its own
``activation=`` included) is computed as one convolution whose chunks get the multiply-add
and the activation in place while they are still in the cache; a Dense layer gets its
activation (and a following BatchNorm or activation layer) in place on its output. The
results are the same values, computed in the same order; nothing changes in training,
with gradients on, or while a summary or trace is watching the layers.

In training (or with gradients on), an activation layer (ReLU, Tanh) right after a layer
whose output is a fresh array that nothing else reads (a Conv2D, DepthwiseConv2D,
SeparableConv2D or Dense without an activation of its own, or a BatchNorm) writes its
result over that array (:func:`forward_overwriting`): the graph then holds one array
there instead of two, with the same values and gradients.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import graph
from lamina.functional._util import per_channel, with_scalar
from lamina.functional.activation import tanh_values
from lamina.nn import module as module_state
from lamina.nn.activation import ReLU, ReLU6, Tanh, relu6
from lamina.nn.conv import Conv2D, DepthwiseConv2D, SeparableConv2D
from lamina.nn.dense import Dense
from lamina.nn.normalization import BatchNorm


def _relu(o):
    with_scalar(backend.xp.maximum, o, 0, out=o)


def _relu6(o):
    backend.xp.clip(o, 0, 6, out=o)


def _tanh(o):
    tanh_values(o, out=o)


_LAYER_ACTIVATIONS = {ReLU: _relu, ReLU6: _relu6, Tanh: _tanh}
"""Activation layers (exact types) and their in-place forms."""

_OWN_ACTIVATIONS = {F.relu: _relu, relu6: _relu6, F.tanh: _tanh}
"""A layer's own ``activation=`` (as ``get_activation`` resolves a name) -> its in-place form."""


def applies(model) -> bool:
    """Whether ``model``'s forward may fuse: evaluation mode, no gradients, no interceptors."""
    return not model.training and not graph.is_grad_enabled() and not module_state._CALL_INTERCEPTORS


def _own_activation(layer):
    """The in-place form of ``layer``'s own activation: None when it has none, False when it
    has one that cannot run in place."""
    act = layer.activation
    if act is None:
        return None
    if type(act) in _LAYER_ACTIVATIONS:
        return _LAYER_ACTIVATIONS[type(act)]
    return _OWN_ACTIVATIONS.get(act, False)


def _head(layer) -> bool:
    if type(layer) in (Conv2D, DepthwiseConv2D):
        return layer.built and layer.algorithm == "im2col"
    return type(layer) is Dense and layer.built


def _followers(layers: list, i: int, dtype) -> tuple[list, int]:
    """The in-place steps that fuse into ``layers[i]``: its own activation, then an
    evaluation-mode BatchNorm, then an activation layer (each optional, in that order), and
    the index of the first layer left."""
    own = _own_activation(layers[i])
    if own is False:
        return [], i + 1
    steps = [own] if own is not None else []
    j = i + 1
    if j < len(layers) and type(layers[j]) is BatchNorm and layers[j].built and not layers[j].training:
        scale, shift = layers[j].evaluation_affine(dtype)

        def affine(o, scale=scale, shift=shift):
            per_channel(backend.xp.multiply, o, scale, o)
            per_channel(backend.xp.add, o, shift, o)
        steps.append(affine)
        j += 1
    if j < len(layers) and type(layers[j]) in _LAYER_ACTIVATIONS:
        steps.append(_LAYER_ACTIVATIONS[type(layers[j])])
        j += 1
    return steps, j


def _epilogue(steps: list):
    def epilogue(chunk):
        for step in steps:
            step(chunk)
    return epilogue


def forward(layers: list, x):
    """Run ``layers`` in order on ``x``, each fusable layer with its followers in place."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        steps, after = _followers(layers, i, layer.weight.data.dtype) if _head(layer) else ([], i + 1)
        if not steps:
            x = layer(x)
        elif type(layer) is Dense:
            x = layer.apply_weights(x, layer.weight, activate=False)
            _epilogue(steps)(x.data)
        else:
            x = layer.apply_weights(x, layer.weight, epilogue=_epilogue(steps), activate=False)
        i = after
    return x


_FRESH_OUTPUT = (Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNorm)
"""Layers whose output is a new array that their backward does not read."""

_OVERWRITING_LAYERS = {ReLU: F.activation.overwriting(F.relu), Tanh: F.activation.overwriting(F.tanh)}
"""Activation layers (exact types) and the overwriting form of their activation."""


def _overwrites(previous, layer) -> bool:
    return (type(layer) in _OVERWRITING_LAYERS and layer.built and type(previous) in _FRESH_OUTPUT
            and getattr(previous, "activation", None) is None)


def forward_overwriting(layers, x):
    """Run ``layers`` in order on ``x``, an activation layer right after a layer with a fresh
    output writing over that output (see the module docstring)."""
    previous = None
    watched = bool(module_state._CALL_INTERCEPTORS)
    for layer in layers:
        if not watched and _overwrites(previous, layer):
            x = _OVERWRITING_LAYERS[type(layer)](x)
        else:
            x = layer(x)
        previous = layer
    return x
