"""ONNX operators on values of any layout: arithmetic, activations, reductions, shapes,
indexing and comparisons (:mod:`lamina.export.onnx_import`). Floating values run lamina's
ops (gradients flow); integer and boolean values, which carry shapes and indices, run on
NumPy arrays."""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.export.onnx_import_values import (
    Node,
    Permuted,
    array,
    axis_of,
    constant,
    held,
    ints,
    is_float,
    logical,
    plain,
    register_onnx_op,
    transposed,
)
from lamina.nn.dense import linear


# -- elementwise, kept in the input's layout ----------------------------------------------------
def register_unary(op_type: str, fn):
    """Register ``fn(node, tensor)``, an elementwise op, run on a held value as it is."""
    def run(node: Node, x):
        v = held(x)
        return Permuted(fn(node, v.tensor), v.perm)
    register_onnx_op(op_type, run, layout_aware=True)


for _op, _fn in {
    "Relu": lambda n, x: F.relu(x),
    "Sigmoid": lambda n, x: F.sigmoid(x),
    "Tanh": lambda n, x: F.tanh(x),
    "Neg": lambda n, x: F.neg(x),
    "Abs": lambda n, x: F.abs(x),
    "Sqrt": lambda n, x: F.sqrt(x),
    "Exp": lambda n, x: F.exp(x),
    "Log": lambda n, x: F.log(x),
    "Reciprocal": lambda n, x: F.reciprocal(x),
    "Erf": lambda n, x: F.erf(x),
    "Sin": lambda n, x: F.sin(x),
    "Cos": lambda n, x: F.cos(x),
    "Softplus": lambda n, x: F.softplus(x),
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.attr("alpha", 0.01)),
    "Elu": lambda n, x: F.elu(x, n.attr("alpha", 1.0)),
    "Gelu": lambda n, x: F.gelu(x, approximate=n.attr("approximate", "none")),
    # y = max(0, min(1, alpha x + beta))
    "HardSigmoid": lambda n, x: F.clip(x * n.attr("alpha", 0.2) + n.attr("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda n, x: F.hard_swish(x),
    "Identity": lambda n, x: x,
}.items():
    register_unary(_op, _fn)


@register_onnx_op("Dropout", layout_aware=True)
def _dropout(node: Node, x, ratio=None, training_mode=None):
    """Inference: the identity (and an all-true mask when asked for)."""
    if node.outputs > 1:
        return x, constant(np.ones(held(x).shape, dtype=bool))
    return x


@register_onnx_op("Clip", layout_aware=True)
def _clip(node: Node, x, low=None, high=None):
    """min(max(x, low), high); the bounds are inputs (opset 11 on) or attributes."""
    low = node.attr("min") if low is None else array(low).item()
    high = node.attr("max") if high is None else array(high).item()
    v = held(x)
    if plain(x):
        return constant(np.clip(array(x), low, high))
    return Permuted(F.clip(v.tensor, low, high), v.perm)


def _int_divide(a, b):
    """Integer division rounding toward zero, as ONNX's Div on integers."""
    q = np.abs(a) // np.abs(b)
    return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))


_BINARY = {
    "Add": (F.add, np.add),
    "Sub": (F.sub, np.subtract),
    "Mul": (F.mul, np.multiply),
    "Div": (F.div, _int_divide),
    "Pow": (None, np.power),
}


def same_layout(a, b) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Both operands of an elementwise op in one layout, and that layout's permutation. When
    one is held transposed and the other is not, the other is given the full rank and
    permuted alike (broadcasting commutes with transposition), so the result stays held."""
    a, b = held(a), held(b)
    if a.perm == b.perm:
        return a.tensor, b.tensor, a.perm
    rank = max(a.ndim, b.ndim)
    for lead, other in ((a, b), (b, a)):
        if lead.ndim == rank and other.perm == tuple(range(other.ndim)):
            flat = other.tensor
            if flat.ndim < rank:
                flat = F.reshape(flat, (1,) * (rank - flat.ndim) + tuple(flat.shape))
            flat = transposed(flat, _inverse(lead.perm))
            return (lead.tensor, flat, lead.perm) if lead is a else (flat, lead.tensor, lead.perm)
    return logical(a), logical(b), tuple(range(rank))


def _inverse(perm) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _binary(op_type: str, lamina_fn, numpy_fn):
    def run(node: Node, a, b):
        if plain(a, b):
            return constant(numpy_fn(array(a), array(b)))
        x, y, perm = same_layout(a, b)
        if op_type == "Pow":
            exponent = array(y) if not (isinstance(y, Tensor) and y.requires_grad) else None
            out = (F.power(x, float(exponent.item())) if exponent is not None and exponent.size == 1
                   else F.power(x, y))
        else:
            out = lamina_fn(x, y)
        return Permuted(out, perm)
    register_onnx_op(op_type, run, layout_aware=True)


for _op, (_lamina_fn, _numpy_fn) in _BINARY.items():
    _binary(_op, _lamina_fn, _numpy_fn)


@register_onnx_op("Max")
def _max(node: Node, *xs):
    return _fold(xs, F.maximum, np.maximum)


@register_onnx_op("Min")
def _min(node: Node, *xs):
    return _fold(xs, F.minimum, np.minimum)


@register_onnx_op("Sum")
def _sum(node: Node, *xs):
    return _fold(xs, F.add, np.add)


def _fold(xs, lamina_fn, numpy_fn):
    if plain(*xs):
        return constant(numpy_fn.reduce([array(x) for x in xs]) if len(xs) > 1 else array(xs[0]))
    out = xs[0]
    for x in xs[1:]:
        out = lamina_fn(out, x)
    return out


_COMPARISONS = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
                "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
                "Xor": np.logical_xor}
for _op, _cmp in _COMPARISONS.items():
    register_onnx_op(_op, lambda node, a, b, cmp=_cmp: constant(cmp(array(a), array(b))))
register_onnx_op("Not", lambda node, a: constant(np.logical_not(array(a))))


@register_onnx_op("Where")
def _where(node: Node, cond, a, b):
    if plain(a, b):
        return constant(np.where(array(cond), array(a), array(b)))
    shape = np.broadcast_shapes(array(cond).shape, tuple(a.shape), tuple(b.shape))
    return F.where(np.broadcast_to(array(cond), shape), F.broadcast_to(a, shape), F.broadcast_to(b, shape))


class _FloatCast(Function):
    """y = x in another floating dtype; dJ/dx = dJ/dy in x's dtype."""

    def forward(self, x):
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, dy):
        return (dy.astype(self.source),)

    backward_graph = Function.linear_backward_graph


def float_cast(x, dtype) -> Tensor:
    """x in another floating dtype, gradients flowing back in x's."""
    return _FloatCast.apply(x, dtype=np.dtype(dtype))


@register_onnx_op("Cast", layout_aware=True)
def _cast(node: Node, x):
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(node.attr("to")))
    v = held(x)
    if v.tensor.dtype == dtype:
        return x
    if dtype.kind == "f" and is_float(x):
        return Permuted(float_cast(v.tensor, dtype), v.perm)
    return constant(array(x).astype(dtype))


# -- matrix products, softmax, reductions -------------------------------------------------------
@register_onnx_op("MatMul")
def _matmul(node: Node, a, b):
    if plain(a, b):
        return constant(np.matmul(array(a), array(b)))
    return F.matmul(a, b)


@register_onnx_op("Gemm")
def _gemm(node: Node, a, b, c=None):
    """Y = alpha A' B' + beta C, A' = A^T with transA, B' = B^T with transB."""
    if node.attr("transA", 0):
        a = F.transpose(a, (1, 0))
    if node.attr("transB", 0):
        b = F.transpose(b, (1, 0))
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    bias_row = c is None or (beta == 1.0 and c.ndim == 1 and c.shape[0] == b.shape[1])
    if alpha == 1.0 and bias_row and is_float(a) and is_float(b) and (c is None or is_float(c)):
        return linear(a, b, c)                   # one fused node, the Dense layer's
    y = F.matmul(a, b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@register_onnx_op("Einsum")
def _einsum(node: Node, *xs):
    return F.einsum(node.attr("equation").replace(" ", ""), *xs)


def _softmax_like(fn):
    def run(node: Node, x):
        """Over ``axis`` (default -1); before opset 13 over all the axes from ``axis`` (default
        1) on, as one flattened axis."""
        if node.opset >= 13:
            return fn(x, axis_of(node.attr("axis", -1), x.ndim, node))
        axis = axis_of(node.attr("axis", 1), x.ndim, node)
        flat = F.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
        return F.reshape(fn(flat, 1), tuple(x.shape))
    return run


register_onnx_op("Softmax", _softmax_like(F.softmax))
register_onnx_op("LogSoftmax", _softmax_like(F.log_softmax))


def _reduce_axes(node: Node, x, axes_input) -> tuple[int, ...] | None:
    """The axes to reduce: the input (opset 18 on; ReduceSum from 13) or the attribute; none
    given means all of them, or none with noop_with_empty_axes."""
    axes = ints(axes_input) if axes_input is not None else node.attr("axes")
    if not axes:
        return () if node.attr("noop_with_empty_axes", 0) else None
    return tuple(axis_of(a, x.ndim, node) for a in axes)


def _reduction(op_type: str, lamina_fn, numpy_fn):
    def run(node: Node, x, axes=None):
        chosen = _reduce_axes(node, x, axes)
        keep = bool(node.attr("keepdims", 1))
        if chosen == ():
            return x
        if plain(x):
            return constant(numpy_fn(array(x), axis=chosen, keepdims=keep))
        return lamina_fn(x, axis=chosen, keepdims=keep)
    register_onnx_op(op_type, run)


_reduction("ReduceMean", F.mean, np.mean)
_reduction("ReduceSum", F.sum, np.sum)
_reduction("ReduceMax", F.max, np.max)
_reduction("ReduceMin", F.min, np.min)
_reduction("ReduceProd", F.prod, np.prod)


# -- shapes ----------------------------------------------------------------------------------------
@register_onnx_op("Shape", layout_aware=True)
def _shape(node: Node, x):
    shape = held(x).shape
    start, end = node.attr("start", 0), node.attr("end", len(shape))
    return constant(np.array(shape[start:end], dtype=np.int64))


@register_onnx_op("Size")
def _size(node: Node, x):
    return constant(np.array(math.prod(x.shape), dtype=np.int64))


@register_onnx_op("Transpose", layout_aware=True)
def _transpose(node: Node, x):
    """Only the permutation changes: logical = transpose(t, p) then q gives transpose(t, p[q])."""
    v = held(x)
    perm = node.attr("perm") or list(range(v.ndim))[::-1]
    if len(perm) != v.ndim:
        raise ShapeError(f"{node.where()}: perm {perm} for a value of shape {v.shape}")
    return Permuted(v.tensor, tuple(v.perm[p] for p in perm))


def _reshape_to(x, shape):
    return constant(array(x).reshape(shape)) if plain(x) else F.reshape(x, tuple(shape))


@register_onnx_op("Reshape")
def _reshape(node: Node, x, shape):
    """A 0 copies the input's size on that axis (unless allowzero), a -1 is inferred."""
    target = ints(shape)
    if not node.attr("allowzero", 0):
        target = [x.shape[i] if n == 0 else n for i, n in enumerate(target)]
    if target.count(-1) == 1:
        known = math.prod(n for n in target if n != -1)
        target[target.index(-1)] = math.prod(x.shape) // known if known else 0
    if math.prod(target) != math.prod(x.shape):
        raise ShapeError(f"{node.where()}: cannot reshape a value of shape {tuple(x.shape)} to {ints(shape)}")
    return _reshape_to(x, target)


@register_onnx_op("Flatten")
def _flatten(node: Node, x):
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return _reshape_to(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _axes_of(node: Node, axes, rank: int) -> list[int]:
    found = ints(axes) if axes is not None else node.attr("axes")
    return sorted(axis_of(a, rank, node) for a in found) if found is not None else None


@register_onnx_op("Squeeze")
def _squeeze(node: Node, x, axes=None):
    chosen = _axes_of(node, axes, x.ndim)
    if chosen is None:
        chosen = [i for i, n in enumerate(x.shape) if n == 1]
    for a in chosen:
        if x.shape[a] != 1:
            raise ShapeError(f"{node.where()}: axis {a} of a value of shape {tuple(x.shape)} is not 1")
    return _reshape_to(x, [n for i, n in enumerate(x.shape) if i not in chosen])


@register_onnx_op("Unsqueeze")
def _unsqueeze(node: Node, x, axes=None):
    rank = x.ndim + len(ints(axes) if axes is not None else node.attr("axes"))
    shape, source = [], iter(x.shape)
    chosen = _axes_of(node, axes, rank)
    for i in range(rank):
        shape.append(1 if i in chosen else next(source))
    return _reshape_to(x, shape)


@register_onnx_op("Concat", layout_aware=True)
def _concat(node: Node, *xs):
    """Values held in one same layout are joined as they are, along the matching axis."""
    rank = held(xs[0]).ndim
    axis = axis_of(node.attr("axis"), rank, node)
    if plain(*xs):
        return constant(np.concatenate([array(x) for x in xs], axis=axis))
    perms = {held(x).perm for x in xs}
    if len(perms) == 1:
        perm = perms.pop()
        return Permuted(F.concat([held(x).tensor for x in xs], axis=perm[axis]), perm)
    return F.concat([logical(x) for x in xs], axis=axis)


@register_onnx_op("Split")
def _split(node: Node, x, split=None):
    axis = axis_of(node.attr("axis", 0), x.ndim, node)
    n = x.shape[axis]
    sizes = ints(split) if split is not None else node.attr("split")
    if not sizes:
        parts = node.attr("num_outputs", node.outputs)
        size = -(-n // parts)
        sizes = [min(size, n - k * size) for k in range(parts)]
    if sum(sizes) != n:
        raise ShapeError(f"{node.where()}: sizes {sizes} do not add up to axis {axis} of shape {tuple(x.shape)}")
    bounds = np.cumsum([0, *sizes])
    return tuple(_take_slice(x, axis, slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:]))


def _take_slice(x, axis: int, s: slice):
    index = (slice(None),) * axis + (s,)
    return constant(array(x)[index]) if plain(x) else F.getitem(x, index)


@register_onnx_op("Slice", layout_aware=True)
def _slice(node: Node, x, starts, ends, axes=None, steps=None):
    """x[starts:ends:steps] on ``axes``; out-of-range bounds are clamped as Python's are.
    A value held transposed is sliced on the matching axes and stays held."""
    v = held(x)
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * v.ndim
    for a, b, e, s in zip(axes, starts, ends, steps):
        index[v.perm[axis_of(a, v.ndim, node)]] = slice(b, e, s)
    index = tuple(index)
    if plain(x):
        return constant(np.asarray(v.tensor.data)[index].transpose(v.perm))
    return Permuted(F.getitem(v.tensor, index), v.perm)


@register_onnx_op("Gather")
def _gather(node: Node, x, indices):
    """y = take(x, indices, axis): y's shape is x's with ``axis`` replaced by indices'."""
    axis = axis_of(node.attr("axis", 0), x.ndim, node)
    index = array(indices).astype(np.int64)
    n = x.shape[axis]
    if index.size and (index.min() < -n or index.max() >= n):
        raise IndexError(f"{node.where()}: indices in [{index.min()}, {index.max()}] are out of range for axis "
                         f"{axis} of size {n}")
    index = np.where(index < 0, index + n, index)
    if plain(x):
        return constant(np.take(array(x), index, axis=axis))
    picked = F.index_select(x, axis, index.reshape(-1))
    return F.reshape(picked, tuple(x.shape[:axis]) + index.shape + tuple(x.shape[axis + 1:]))


@register_onnx_op("Expand")
def _expand(node: Node, x, shape):
    target = np.broadcast_shapes(tuple(x.shape), tuple(ints(shape)))
    return constant(np.broadcast_to(array(x), target).copy()) if plain(x) else F.broadcast_to(x, target)


@register_onnx_op("Tile")
def _tile(node: Node, x, repeats):
    reps = ints(repeats)
    return constant(np.tile(array(x), reps)) if plain(x) else F.tile(x, reps)


@register_onnx_op("Range")
def _range(node: Node, start, limit, delta):
    first = array(start).item()
    return constant(np.arange(first, array(limit).item(), array(delta).item(), dtype=array(start).dtype))


@register_onnx_op("Constant")
def _constant(node: Node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            value = node.attrs[key]
            if key.startswith("value_float"):
                return constant(np.array(value, dtype=np.float32))
            if key.startswith("value_int"):
                return constant(np.array(value, dtype=np.int64))
            return constant(value)
    raise NotImplementedError(f"{node.where()}: only tensor, float(s) and int(s) values are supported, got "
                              f"{sorted(node.attrs)}")


@register_onnx_op("ConstantOfShape")
def _constant_of_shape(node: Node, shape):
    value = node.attr("value", np.zeros(1, dtype=np.float32))
    return constant(np.full(ints(shape), np.asarray(value).reshape(-1)[0], dtype=np.asarray(value).dtype))


@register_onnx_op("Pad", layout_aware=True)
def _pad(node: Node, x, pads=None, value=None, axes=None):
    """Constant, 'reflect' (the edge not repeated), 'edge' or 'wrap' padding of the chosen
    axes; negative pads crop. A value held transposed is padded on the matching axes."""
    v = held(x)
    amounts = ints(pads) if pads is not None else node.attr("pads")
    chosen = [axis_of(a, v.ndim, node) for a in ints(axes)] if axes is not None else list(range(v.ndim))
    k = len(chosen)
    sides = [(0, 0)] * v.ndim                       # (before, after) per axis of the held tensor
    for i, a in enumerate(chosen):
        sides[v.perm[a]] = (amounts[i], amounts[i + k])
    mode = node.attr("mode", "constant")
    fill = 0.0 if value is None or array(value).size == 0 else array(value).item()
    t = v.tensor
    if any(min(s) < 0 for s in sides):
        crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for (b, e), n in zip(sides, t.shape))
        t = constant(np.asarray(t.data)[crop]) if plain(x) else F.getitem(t, crop)
    widths = tuple((max(b, 0), max(e, 0)) for b, e in sides)
    if plain(x):
        kwargs = {"constant_values": fill} if mode == "constant" else {}
        return constant(np.pad(np.asarray(t.data), widths, mode=mode, **kwargs).transpose(v.perm))
    if mode == "constant":
        return Permuted(F.pad(t, widths, value=fill), v.perm)
    if mode not in ("reflect", "edge", "wrap"):
        raise NotImplementedError(f"{node.where()}: mode {mode!r}; expected 'constant', 'reflect', 'edge' or 'wrap'")
    for a, (before, after) in enumerate(widths):
        if before or after:
            source = np.pad(np.arange(t.shape[a]), (before, after), mode=mode)
            t = F.index_select(t, a, source)
    return Permuted(t, v.perm)
