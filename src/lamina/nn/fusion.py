"""Inference fusion: convolution, batch norm and ReLU in one pass over each chunk.

At evaluation a batch norm is the per-channel multiply-add y = x scale + shift (running
statistics folded in) and a ReLU is an element-wise maximum: two more passes over a
convolution's whole output, read back from memory. When a :class:`Sequential` runs in
evaluation mode with gradients off, each run of Conv2D (or DepthwiseConv2D) -> BatchNorm
-> ReLU / ReLU6 (the activation optional) is computed as one convolution whose chunks get
the multiply-add and the activation while they are still in the cache. The results are the
same values, computed in the same order; nothing changes in training, with gradients on,
or while a summary or trace is watching the layers.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import graph
from lamina.nn import module as module_state
from lamina.nn.activation import ReLU, ReLU6
from lamina.nn.conv import Conv2D, DepthwiseConv2D
from lamina.nn.normalization import BatchNorm

_ACTIVATIONS = {ReLU: lambda o: backend.xp.maximum(o, 0, out=o), ReLU6: lambda o: backend.xp.clip(o, 0, 6, out=o)}


def applies(model) -> bool:
    """Whether ``model``'s forward may fuse: evaluation mode, no gradients, no interceptors."""
    return not model.training and not graph.is_grad_enabled() and not module_state._CALL_INTERCEPTORS


def _fusable(conv, norm) -> bool:
    return (type(conv) in (Conv2D, DepthwiseConv2D) and conv.built and conv.activation is None
            and conv.algorithm == "im2col" and type(norm) is BatchNorm and norm.built and not norm.training)


def _epilogue(norm: BatchNorm, activation, dtype):
    scale, shift = norm.evaluation_affine(dtype)
    act = _ACTIVATIONS.get(type(activation))

    def epilogue(chunk):
        chunk *= scale
        chunk += shift
        if act is not None:
            act(chunk)
    return epilogue


def forward(layers: list, x):
    """Run ``layers`` in order on ``x``, fusing each convolution -> batch norm (-> ReLU)."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        norm = layers[i + 1] if i + 1 < len(layers) else None
        if norm is not None and _fusable(layer, norm):
            after = layers[i + 2] if i + 2 < len(layers) else None
            activation = after if type(after) in _ACTIVATIONS else None
            dtype = layer.weight.data.dtype
            x = layer.apply_weights(x, layer.weight, epilogue=_epilogue(norm, activation, dtype))
            i += 3 if activation is not None else 2
        else:
            x = layer(x)
            i += 1
    return x
