"""More ONNX operators (:mod:`lamina.export.onnx_import`): the rarer activations, local
response normalization, depth/space rearrangements, rounding, arg-extremes, top-k, running
sums, triangles and remainders."""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.export.onnx_import_ops import register_unary, same_layout
from lamina.export.onnx_import_values import (
    Node,
    Permuted,
    array,
    axis_of,
    constant,
    ints,
    plain,
    register_onnx_op,
)

# -- more activations -----------------------------------------------------------------------------
for _op, _fn in {
    # y = gamma elu(x, alpha)
    "Selu": lambda n, x: F.elu(x, n.attr("alpha", 1.6732632423543772)) * n.attr("gamma", 1.0507009873554805),
    "Celu": lambda n, x: F.celu(x, n.attr("alpha", 1.0)),
    "Softsign": lambda n, x: x / (F.abs(x) + 1.0),
    "Mish": lambda n, x: F.mish(x),
    # y = x - bias above lambd, x + bias below -lambd, 0 between
    "Shrink": lambda n, x: _shrink(x, n.attr("lambd", 0.5), n.attr("bias", 0.0)),
    "ThresholdedRelu": lambda n, x: F.where(x.data > n.attr("alpha", 1.0), x, 0.0),
}.items():
    register_unary(_op, _fn)


def _shrink(x, lambd: float, bias: float):
    """y = x - bias above lambd, x + bias below -lambd, 0 between."""
    return F.where(x.data > lambd, x - bias, F.where(x.data < -lambd, x + bias, 0.0))


@register_onnx_op("PRelu", layout_aware=True)
def _prelu(node: Node, x, slope):
    """y = x where x >= 0, slope x elsewhere: relu(x) - slope relu(-x)."""
    a, s, perm = same_layout(x, slope)
    return Permuted(F.relu(a) - s * F.relu(-a), perm)


@register_onnx_op("LRN")
def _lrn(node: Node, x):
    """y = x / (bias + alpha / size * sum of x^2 over the channels c - (size - 1) // 2 to
    c + size // 2)^beta, on (N, C, ...)."""
    size = node.attr("size")
    before, after = (size - 1) // 2, size // 2
    squares = F.pad(x * x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))
    channels = x.shape[1]
    total = F.getitem(squares, (slice(None), slice(0, channels)))
    for k in range(1, size):
        total = total + F.getitem(squares, (slice(None), slice(k, k + channels)))
    scale = total * (node.attr("alpha", 1e-4) / size) + node.attr("bias", 1.0)
    return x / F.power(scale, node.attr("beta", 0.75))


@register_onnx_op("DepthToSpace")
def _depth_to_space(node: Node, x):
    """(N, C, H, W) -> (N, C / b^2, H b, W b); 'DCR' takes the block offsets from the leading
    channels, 'CRD' from the trailing ones."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    if node.attr("mode", "DCR") == "DCR":
        y = F.transpose(F.reshape(x, (n, b, b, c // (b * b), h, w)), (0, 3, 4, 1, 5, 2))
    else:
        y = F.transpose(F.reshape(x, (n, c // (b * b), b, b, h, w)), (0, 1, 4, 2, 5, 3))
    return F.reshape(y, (n, c // (b * b), h * b, w * b))


@register_onnx_op("SpaceToDepth")
def _space_to_depth(node: Node, x):
    """(N, C, H, W) -> (N, C b^2, H / b, W / b), the block offsets leading the channels."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    y = F.transpose(F.reshape(x, (n, c, h // b, b, w // b, b)), (0, 3, 5, 1, 2, 4))
    return F.reshape(y, (n, c * b * b, h // b, w // b))


# -- rounding, arg-extremes, top-k, running sums, triangles, remainders -------------------------------
for _op, _fn in {"Floor": F.floor, "Ceil": F.ceil, "Round": F.round, "Sign": F.sign}.items():
    register_unary(_op, lambda n, x, fn=_fn: fn(x))


def _arg_extreme(pick):
    def run(node: Node, x):
        """The index of the first (or with select_last_index the last) extreme along axis."""
        a = array(x)
        axis = axis_of(node.attr("axis", 0), a.ndim, node)
        if node.attr("select_last_index", 0):
            found = a.shape[axis] - 1 - pick(np.flip(a, axis), axis=axis)
        else:
            found = pick(a, axis=axis)
        if node.attr("keepdims", 1):
            found = np.expand_dims(found, axis)
        return constant(found.astype(np.int64))
    return run


register_onnx_op("ArgMax", _arg_extreme(np.argmax))
register_onnx_op("ArgMin", _arg_extreme(np.argmin))


@register_onnx_op("TopK")
def _top_k(node: Node, x, k):
    """The k largest (or smallest) values along axis and their indices."""
    axis = axis_of(node.attr("axis", -1), x.ndim, node)
    largest = bool(node.attr("largest", 1))
    count = ints(k)[0]
    if plain(x):
        order = np.argsort(-array(x) if largest else array(x), axis=axis, kind="stable")
        index = np.take(order, np.arange(count), axis=axis)
        return constant(np.take_along_axis(array(x), index, axis)), constant(index)
    values, index = F.topk(x, count, axis=axis, largest=largest, sorted=True)
    return values, constant(np.asarray(index, dtype=np.int64))


@register_onnx_op("CumSum")
def _cumsum(node: Node, x, axis):
    """Running sums along axis; ``reverse`` sums from the end, ``exclusive`` leaves out the
    element itself."""
    a = axis_of(ints(axis)[0], x.ndim, node)
    reverse, exclusive = node.attr("reverse", 0), node.attr("exclusive", 0)
    if plain(x):
        v = np.flip(array(x), a) if reverse else array(x)
        total = np.cumsum(v, axis=a) - (v if exclusive else 0)
        return constant(np.flip(total, a) if reverse else total)
    v = F.flip(x, a) if reverse else x
    total = F.cumsum(v, a)
    if exclusive:
        total = total - v
    return F.flip(total, a) if reverse else total


@register_onnx_op("Trilu")
def _trilu(node: Node, x, k=None):
    """The upper (default) or lower triangle of the last two axes, shifted by k diagonals."""
    shift = ints(k)[0] if k is not None else 0
    upper = node.attr("upper", 1)
    if plain(x):
        return constant(np.triu(array(x), shift) if upper else np.tril(array(x), shift))
    return F.triu(x, shift) if upper else F.tril(x, shift)


@register_onnx_op("Mod")
def _mod(node: Node, a, b):
    """The remainder with the sign of the divisor, or of the dividend with fmod=1."""
    truncated = bool(node.attr("fmod", 0))
    if plain(a, b):
        return constant(np.fmod(array(a), array(b)) if truncated else np.mod(array(a), array(b)))
    return F.fmod(a, b) if truncated else F.remainder(a, b)


for _op, _fn in {"Tan": F.tan, "Asin": F.asin, "Acos": F.acos, "Atan": F.atan, "Sinh": F.sinh, "Cosh": F.cosh,
                 "Asinh": F.asinh, "Acosh": F.acosh, "Atanh": F.atanh}.items():
    register_unary(_op, lambda n, x, fn=_fn: fn(x))
register_onnx_op("IsNaN", lambda node, x: constant(np.isnan(array(x))))
register_onnx_op("IsInf", lambda node, x: constant(
    (np.isposinf(array(x)) & bool(node.attr("detect_positive", 1)))
    | (np.isneginf(array(x)) & bool(node.attr("detect_negative", 1)))))


@register_onnx_op("Mean")
def _mean(node: Node, *xs):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total / float(len(xs)) if len(xs) > 1 else total


# -- indices ----------------------------------------------------------------------------------------
def _indices(node: Node, x, indices, axis: int) -> np.ndarray:
    index = array(indices).astype(np.int64)
    n = x.shape[axis]
    if index.size and (index.min() < -n or index.max() >= n):
        raise IndexError(f"{node.where()}: indices in [{index.min()}, {index.max()}] are out of range for axis "
                         f"{axis} of size {n}")
    return np.where(index < 0, index + n, index)


@register_onnx_op("GatherElements")
def _gather_elements(node: Node, x, indices):
    """y[..., i, ...] = x[..., indices[..., i, ...], ...] along axis; y takes indices' shape."""
    axis = axis_of(node.attr("axis", 0), x.ndim, node)
    index = _indices(node, x, indices, axis)
    if plain(x):
        return constant(np.take_along_axis(array(x), index, axis))
    return F.gather(x, axis, index)


@register_onnx_op("ScatterElements")
def _scatter_elements(node: Node, x, indices, updates):
    """x with the updates written (or with reduction='add' added) at indices along axis."""
    axis = axis_of(node.attr("axis", 0), x.ndim, node)
    index = _indices(node, x, indices, axis)
    reduction = node.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise NotImplementedError(f"{node.where()}: reduction {reduction!r}; expected 'none' or 'add'")
    if plain(x, updates):
        out = array(x).copy()
        where = list(np.indices(index.shape))
        where[axis] = index
        if reduction == "add":
            np.add.at(out, tuple(where), array(updates))
        else:
            out[tuple(where)] = array(updates)
        return constant(out)
    if reduction == "add":
        return F.scatter_add(x, axis, index, updates)
    return F.scatter(x, axis, index, updates)


@register_onnx_op("NonZero")
def _non_zero(node: Node, x):
    """The indices of the nonzero entries, one row per axis: (rank, count)."""
    return constant(np.array(np.nonzero(array(x)), dtype=np.int64).reshape(len(x.shape), -1))


@register_onnx_op("OneHot")
def _one_hot(node: Node, indices, depth, values):
    """values[1] where the new axis equals the index (negative ones counted from depth), values[0]
    elsewhere."""
    n = int(array(depth).reshape(-1)[0])
    index = array(indices).astype(np.int64)
    index = np.where(index < 0, index + n, index)
    axis = node.attr("axis", -1)
    axis = axis + index.ndim + 1 if axis < 0 else axis
    hot = np.expand_dims(index, axis) == np.arange(n).reshape((-1,) + (1,) * (index.ndim - axis))
    off, on = array(values)
    return constant(np.where(hot, on, off))
