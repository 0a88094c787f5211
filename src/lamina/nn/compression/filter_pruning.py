"""Structured filter pruning that removes channels, making the network smaller (Li et al. 2017,
"Pruning Filters for Efficient ConvNets"; Liu et al. 2017, "network slimming").

Pruning filter k of a Conv2D (or unit k of a Dense layer) in a Sequential model deletes:

* its slice of the layer's weight and bias (``filters``/``units`` shrink);
* channel k of the layers that act on each channel alone up to the next layer that mixes
  channels: BatchNorm (gamma, beta, running statistics), elementwise activations, pooling,
  dropout; a DepthwiseConv2D loses its filters k m .. k m + m - 1 (m the depth multiplier),
  whose output channels are then removed the same way;
* the matching inputs of that next layer: the input-channel slice W[..., k] of a Conv2D; the
  rows of a Dense layer after GlobalAvgPool2D (row k) or after Flatten (rows (y w + x) C + k
  of an (h, w, C) volume, NHWC order).

What stays exactly equal: the pruned model computes the original model with the removed
channels set to zero at the input of that next channel-mixing layer (the zeros are then
multiplied away). It is *not* the original with the filter's weights zeroed: behind a
BatchNorm a zero filter still outputs beta - gamma mu / sqrt(var + eps), which the next layer
saw and no longer sees.

Scores for ``amount`` (the filters of smallest score go): ``'l1'`` sum |W_k| (Li et al.),
``'l2'`` ||W_k||_2, ``'bn_gamma'`` |gamma_k| of the BatchNorm right after the layer (Liu et al.;
train with an L1 penalty on gamma for it to be meaningful).

Supported topology: a Sequential (nested Sequentials flattened) whose pruned layer is followed,
after channelwise layers, by a Conv2D with groups=1, a DepthwiseConv2D or a Dense layer; or a
functional ``Model`` with residual ``Add`` blocks, where the channels joined by an Add are
pruned together (:mod:`.graph_pruning`). Grouped convolutions, Softmax over the channels and
any other layer are refused with an error.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterable

import numpy as np

from lamina import backend
from lamina.nn.activation import Activation, Softmax, _Elementwise
from lamina.nn.compression.low_rank import _leaf_layers
from lamina.nn.conv import Conv2D, DepthwiseConv2D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.functional_model import Model
from lamina.nn.module import Module
from lamina.nn.normalization import BatchNorm
from lamina.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from lamina.nn.reshape import Flatten, Identity
from lamina.nn.sequential import Sequential

__all__ = ["CRITERIA", "filter_scores", "prune_filters"]

CRITERIA = ("l1", "l2", "bn_gamma")
WHO = "prune_filters"
_CHANNELWISE = (Dropout, Identity, MaxPool2D, AvgPool2D)


def _is_channelwise(layer: Module) -> bool:
    if isinstance(layer, Softmax):
        return False
    if isinstance(layer, Activation):
        return "softmax" not in layer.activation
    return isinstance(layer, (_Elementwise, *_CHANNELWISE))


def _take(module: Module, name: str, keep: np.ndarray, axis: int) -> None:
    """Keep the entries ``keep`` of ``module.<name>`` (a parameter or buffer) along ``axis``."""
    if name in module._parameters:
        param = module._parameters[name]
        param.data = backend.xp.ascontiguousarray(backend.xp.take(param.data, backend.xp.asarray(keep), axis=axis))
        param.grad = None
    else:
        module._buffers[name] = backend.xp.ascontiguousarray(
            backend.xp.take(module._buffers[name], backend.xp.asarray(keep), axis=axis))


def _check_plain(layer: Module) -> None:
    if any(key.endswith("_orig") for key in layer._parameters):
        raise ValueError(f"{WHO}: {layer._label()} has pruning masks; make them permanent with "
                         "lamina.nn.prune.remove before removing filters")


def _locate(leaves: list, layer) -> int:
    paths = [path for path, *_ in leaves]
    for i, (path, _, _, module) in enumerate(leaves):
        if module is layer or path == layer:
            return i
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool) and -len(leaves) <= layer < len(leaves):
        return int(layer) % len(leaves)
    raise ValueError(f"{WHO}: layer {layer!r} not found; the model's layers: {paths}")


def filter_scores(model: Sequential, layer, criterion: str = "l1") -> np.ndarray:
    """The score of each output filter (unit) of ``layer`` (a dotted path, an index into the
    flattened layers or the layer itself): see the module docstring."""
    if criterion not in CRITERIA:
        raise ValueError(f"{WHO}: criterion must be one of {CRITERIA}, got {criterion!r}")
    leaves = list(_leaf_layers(model))
    index = _locate(leaves, layer)
    target = leaves[index][3]
    _check_target(target, leaves[index][0])
    if criterion == "bn_gamma":
        after = leaves[index + 1][3] if index + 1 < len(leaves) else None
        if not isinstance(after, BatchNorm) or not after.affine:
            raise ValueError(f"{WHO}: criterion 'bn_gamma' needs an affine BatchNorm right after "
                             f"{leaves[index][0]!r}, found {type(after).__name__ if after else 'the end of the model'}")
        return np.abs(backend.to_numpy(after.weight.data)).astype(np.float64)
    w = backend.to_numpy(target.weight.data).astype(np.float64)
    rows = w.reshape(w.shape[0], -1) if isinstance(target, Conv2D) else w.T
    return np.abs(rows).sum(axis=1) if criterion == "l1" else np.sqrt((rows ** 2).sum(axis=1))


def _check_target(target: Module, path: str) -> None:
    if type(target) not in (Conv2D, Dense):
        raise ValueError(f"{WHO}: layer {path!r} is a {type(target).__name__}; filters are removed from Conv2D "
                         "and Dense layers")
    if isinstance(target, Conv2D) and target.groups != 1:
        raise ValueError(f"{WHO}: layer {path!r} is a grouped convolution (groups={target.groups}); unsupported")
    if not target.built:
        raise ValueError(f"{WHO}: layer {path!r} is not built; call the model on an input first")
    spec = target.activation_spec
    if isinstance(spec, str) and "softmax" in spec:
        raise ValueError(f"{WHO}: layer {path!r} ends in a softmax over its units; removing one changes the others")
    _check_plain(target)


def _removed(scores: np.ndarray, indices, amount) -> np.ndarray:
    n = scores.size
    if (indices is None) == (amount is None):
        raise ValueError(f"{WHO}: give exactly one of indices and amount, got indices={indices!r}, amount={amount!r}")
    if indices is not None:
        chosen = np.asarray(list(indices) if isinstance(indices, Iterable) else [indices])
        if chosen.size and (chosen.dtype.kind not in "iu" or chosen.min() < 0 or chosen.max() >= n):
            raise ValueError(f"{WHO}: indices must be ints in [0, {n - 1}], got {list(chosen.tolist())}")
        if np.unique(chosen).size != chosen.size:
            raise ValueError(f"{WHO}: indices must not repeat, got {list(chosen.tolist())}")
    else:
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
            raise ValueError(f"{WHO}: amount must be an int count or a fraction in [0, 1), got {amount!r}")
        if isinstance(amount, numbers.Integral):
            count = int(amount)
            if not 0 <= count < n:
                raise ValueError(f"{WHO}: amount {count} is out of range: the layer has {n} filters and must keep one")
        else:
            if not 0.0 <= amount < 1.0:
                raise ValueError(f"{WHO}: a fractional amount must be in [0, 1), got {amount!r}")
            count = min(round(amount * n), n - 1)
        chosen = np.argsort(scores, kind="stable")[:count]
    if chosen.size >= n:
        raise ValueError(f"{WHO}: removing {chosen.size} of the {n} filters would leave none")
    return np.sort(chosen.astype(np.int64))


def prune_filters(model: Sequential, layer, indices: Iterable[int] | int | None = None,
                  amount: int | float | None = None, criterion: str = "l1") -> tuple[Sequential, np.ndarray]:
    """Remove output filters (Conv2D) or units (Dense) of ``layer`` from a built Sequential
    ``model`` and the matching channels of the layers after it (module docstring); the model
    itself is left unchanged.

    ``layer``: a dotted path ('conv2d', 'block.conv2d_1'), an index into the flattened layers,
    or the layer object of ``model``; for a functional ``Model``, the layer's name (its whole
    channel group is pruned, :mod:`lamina.nn.compression.graph_pruning`). Remove the filters
    ``indices``, or the ``amount`` of smallest ``criterion`` score ('l1', 'l2', 'bn_gamma'):
    an int count or a fraction in [0, 1) (rounded; at least one filter stays).
    Returns (the new model, the removed indices)."""
    if isinstance(model, Model):
        from lamina.nn.compression.graph_pruning import prune_graph_filters

        return prune_graph_filters(model, layer, indices, amount, criterion)
    if not isinstance(model, Sequential):
        raise ValueError(f"{WHO}: expected a Sequential or a functional Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{WHO}: the model is not built; call it on an input or build(input_shape) first")
    scores = filter_scores(model, layer, criterion)
    removed = _removed(scores, indices, amount)
    index = _locate(list(_leaf_layers(model)), layer)
    new = copy.deepcopy(model)
    leaves = list(_leaf_layers(new))
    shapes = _input_shapes(new, [leaf for *_, leaf in leaves])
    keep = np.setdiff1d(np.arange(scores.size), removed)
    target = leaves[index][3]
    if isinstance(target, Conv2D):
        _take(target, "weight", keep, 0)
        target.filters = int(keep.size)
    else:
        _take(target, "weight", keep, 1)
        target.units = int(keep.size)
    if target.use_bias:
        _take(target, "bias", keep, 0)
    _shrink_following(leaves, shapes, index + 1, keep, scores.size)
    return new, removed


def _input_shapes(model: Sequential, layers: list[Module]) -> list[tuple]:
    shape = tuple(model.build_input_shape)
    shapes = []
    for layer in layers:
        shapes.append(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shapes


def _shrink_following(leaves: list, shapes: list, start: int, keep: np.ndarray, channels: int) -> None:
    """Remove the channels not in ``keep`` (of ``channels``) from the layers from ``start`` on,
    up to and including the next channel-mixing layer."""
    for i in range(start, len(leaves)):
        path, _, _, layer = leaves[i]
        _check_plain(layer)
        if isinstance(layer, BatchNorm):
            for name in ("weight", "bias") if layer.affine else ():
                _take(layer, name, keep, 0)
            for name in ("running_mean", "running_var"):
                _take(layer, name, keep, 0)
        elif isinstance(layer, DepthwiseConv2D):
            m = layer.depth_multiplier
            keep = (keep[:, None] * m + np.arange(m)).reshape(-1)
            channels *= m
            _take(layer, "weight", keep, 0)
            if layer.use_bias:
                _take(layer, "bias", keep, 0)
        elif type(layer) is Conv2D:
            if layer.groups != 1:
                raise ValueError(f"{WHO}: the next layer {path!r} is a grouped convolution (groups={layer.groups}); "
                                 "unsupported")
            _take(layer, "weight", keep, 3)
            return
        elif type(layer) is Dense:
            _take(layer, "weight", keep, 0)
            return
        elif isinstance(layer, Flatten):
            return _shrink_after_flatten(leaves, shapes, i, keep, channels)
        elif not (isinstance(layer, GlobalAvgPool2D) or _is_channelwise(layer)):
            raise ValueError(f"{WHO}: cannot remove channels through layer {path!r} ({type(layer).__name__}); "
                             "supported after the pruned layer: BatchNorm, elementwise activations, pooling, "
                             "dropout, DepthwiseConv2D, then Conv2D or Dense (residual blocks are not supported)")
    raise ValueError(f"{WHO}: the pruned channels reach the model's output; the last layer's outputs cannot "
                     "be removed")


def _shrink_after_flatten(leaves: list, shapes: list, at: int, keep: np.ndarray, channels: int) -> None:
    volume = shapes[at][1:]
    if any(n is None for n in volume) or volume[-1] != channels:
        raise ValueError(f"{WHO}: Flatten at {leaves[at][0]!r} sees an input of shape {shapes[at]}; expected a "
                         f"known (h, w, {channels}) volume")
    positions = int(np.prod(volume[:-1]))
    rows = (np.arange(positions)[:, None] * channels + keep[None, :]).reshape(-1)
    for i in range(at + 1, len(leaves)):
        path, _, _, layer = leaves[i]
        if type(layer) is Dense:
            _check_plain(layer)
            _take(layer, "weight", rows, 0)
            return
        if not isinstance(layer, Dropout | Identity):
            raise ValueError(f"{WHO}: after Flatten, expected a Dense layer; found {path!r} ({type(layer).__name__})")
    raise ValueError(f"{WHO}: the pruned channels reach the model's output after Flatten")
