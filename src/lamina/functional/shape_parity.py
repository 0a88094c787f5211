"""Shape and construction ops after PyTorch: movedim, unflatten, narrow, kron, outer, tensordot,
cross, meshgrid, cartesian_prod, tril_indices, triu_indices, diag, diagflat, block_diag, rot90
and vander.

Every differentiable one is a composite of ops that already have first and second
derivatives (transpose, reshape, slicing, padding, broadcasting, products and sums), so it
gets both without a backward of its own. Axes follow NumPy (``axis=``, negatives counting
from the end); the index constructors return integer arrays, as the other index ops do.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import matmul, mul, sub
from lamina.functional.indexing import _one_axis, _raw, _shape_of, _whole_number, flip
from lamina.functional.linalg_structure import diag_embed, diagonal
from lamina.functional.shape import broadcast_to, concat, getitem, pad, reshape, stack, swapaxes, transpose


def _axes_tuple(axes, ndim: int, op: str, name: str) -> tuple[int, ...]:
    """An int or a sequence of ints as distinct axes in [0, ndim)."""
    items = (axes,) if isinstance(axes, int) else tuple(axes)
    out = tuple(_one_axis(a, ndim, op) for a in items)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: {name} {axes!r} repeats an axis")
    return out


def _broadcast_shape(op: str, *shapes) -> tuple[int, ...]:
    try:
        return tuple(backend.xp.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(f"{op}: shapes {listed} cannot be broadcast together") from None


def _broadcast(x, shape):
    return x if tuple(_shape_of(x)) == tuple(shape) else broadcast_to(x, shape)


def movedim(x, source, destination) -> Tensor:
    """x with its axes ``source`` moved to positions ``destination`` (ints or sequences of the
    same length), the other axes keeping their order (``numpy.moveaxis``, ``torch.movedim``)."""
    ndim = len(_shape_of(x))
    src = _axes_tuple(source, ndim, "movedim", "source")
    dst = _axes_tuple(destination, ndim, "movedim", "destination")
    if len(src) != len(dst):
        raise ValueError(f"movedim: source {source!r} and destination {destination!r} must have the same length")
    order = [a for a in range(ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, *order) if order != list(range(ndim)) else reshape(x, _shape_of(x))


def unflatten(x, axis: int, sizes) -> Tensor:
    """x with axis ``axis`` split into axes of ``sizes`` (whose product is its length; one entry
    may be -1, inferred), as ``torch.unflatten``."""
    shape = tuple(_shape_of(x))
    axis = _one_axis(axis, len(shape), "unflatten")
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise ValueError("unflatten: sizes must not be empty")
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise ValueError(f"unflatten: sizes {sizes} may hold at most one -1 and no other negative value")
    n = shape[axis]
    if (-1 in sizes and (known == 0 or n % known)) or (-1 not in sizes and known != n):
        raise ShapeError(f"unflatten: sizes {sizes} do not split axis {axis} of length {n} of x of shape {shape}")
    sizes = tuple(n // known if s == -1 else s for s in sizes)
    return reshape(x, shape[:axis] + sizes + shape[axis + 1:])


def narrow(x, axis: int, start: int, length: int) -> Tensor:
    """The ``length`` entries of x from ``start`` on along ``axis`` (a negative start counts from the end)."""
    shape = tuple(_shape_of(x))
    axis = _one_axis(axis, len(shape), "narrow")
    n = shape[axis]
    if isinstance(start, bool) or not isinstance(start, int) or not -n <= start <= n:
        raise ValueError(f"narrow: start must be an int in [{-n}, {n}] for axis {axis} of x of shape {shape}, "
                         f"got {start!r}")
    start %= n if n else 1
    length = _whole_number(length, "narrow", "length")
    if start + length > n:
        raise ShapeError(f"narrow: start {start} + length {length} exceeds the length {n} of axis {axis} "
                         f"of x of shape {shape}")
    return getitem(x, (slice(None),) * axis + (slice(start, start + length),))


def outer(a, b) -> Tensor:
    """The outer product y_ij = a_i b_j of two vectors."""
    sa, sb = _shape_of(a), _shape_of(b)
    if len(sa) != 1 or len(sb) != 1:
        raise ShapeError(f"outer: expected two 1-D inputs, got shapes {tuple(sa)} and {tuple(sb)}")
    return mul(reshape(a, (sa[0], 1)), reshape(b, (1, sb[0])))


def kron(a, b) -> Tensor:
    """The Kronecker product: y[i_0 m_0 + j_0, ..] = a[i_0, ..] b[j_0, ..] with m the shape of b
    (the shorter shape padded with leading 1s), as ``torch.kron``."""
    sa, sb = tuple(_shape_of(a)), tuple(_shape_of(b))
    d = max(len(sa), len(sb))
    sa, sb = (1,) * (d - len(sa)) + sa, (1,) * (d - len(sb)) + sb
    spread_a = tuple(v for n in sa for v in (n, 1))
    spread_b = tuple(v for n in sb for v in (1, n))
    product = mul(reshape(a, spread_a), reshape(b, spread_b))
    return reshape(product, tuple(p * q for p, q in zip(sa, sb)))


def tensordot(a, b, dims=2) -> Tensor:
    """sum over the contracted axes of a[free_a, k] b[k, free_b], as ``torch.tensordot``: ``dims``
    an int d contracts the last d axes of a with the first d of b; a pair of sequences names the
    axes of a and of b to contract, in matching order."""
    sa, sb = tuple(_shape_of(a)), tuple(_shape_of(b))
    if isinstance(dims, int) and not isinstance(dims, bool):
        if not 0 <= dims <= min(len(sa), len(sb)):
            raise ShapeError(f"tensordot: dims {dims} must lie in [0, {min(len(sa), len(sb))}] "
                             f"for shapes {sa} and {sb}")
        axes_a, axes_b = tuple(range(len(sa) - dims, len(sa))), tuple(range(dims))
    else:
        try:
            first, second = dims
        except (TypeError, ValueError):
            raise ValueError(f"tensordot: dims must be an int or a pair of axis sequences, got {dims!r}") from None
        axes_a = _axes_tuple(first, len(sa), "tensordot", "the axes of a")
        axes_b = _axes_tuple(second, len(sb), "tensordot", "the axes of b")
        if len(axes_a) != len(axes_b):
            raise ValueError(f"tensordot: dims {dims!r} name {len(axes_a)} axes of a but {len(axes_b)} of b")
    for i, j in zip(axes_a, axes_b):
        if sa[i] != sb[j]:
            raise ShapeError(f"tensordot: axis {i} of a of shape {sa} (length {sa[i]}) does not match axis {j} "
                             f"of b of shape {sb} (length {sb[j]})")
    free_a = [i for i in range(len(sa)) if i not in axes_a]
    free_b = [j for j in range(len(sb)) if j not in axes_b]
    k = math.prod(sa[i] for i in axes_a)
    m, n = math.prod(sa[i] for i in free_a), math.prod(sb[j] for j in free_b)   # not -1: k may be 0
    left = reshape(transpose(a, *(free_a + list(axes_a))) if sa else a, (m, k))
    right = reshape(transpose(b, *(list(axes_b) + free_b)) if sb else b, (k, n))
    out_shape = tuple(sa[i] for i in free_a) + tuple(sb[j] for j in free_b)
    return reshape(matmul(left, right), out_shape)


def cross(a, b, axis: int = -1) -> Tensor:
    """The cross product a x b of 3-vectors along ``axis`` (inputs broadcast together first), as
    ``torch.linalg.cross``: (a_1 b_2 - a_2 b_1, a_2 b_0 - a_0 b_2, a_0 b_1 - a_1 b_0)."""
    shape = _broadcast_shape("cross", _shape_of(a), _shape_of(b))
    axis = _one_axis(axis, len(shape), "cross")
    if shape[axis] != 3:
        raise ShapeError(f"cross: axis {axis} of the broadcast shape {shape} (from {tuple(_shape_of(a))} and "
                         f"{tuple(_shape_of(b))}) has length {shape[axis]}, expected 3")
    a, b = _broadcast(a, shape), _broadcast(b, shape)

    def part(t, i):
        return getitem(t, (slice(None),) * axis + (i,))

    a0, a1, a2 = (part(a, i) for i in range(3))
    b0, b1, b2 = (part(b, i) for i in range(3))
    return stack([sub(mul(a1, b2), mul(a2, b1)), sub(mul(a2, b0), mul(a0, b2)), sub(mul(a0, b1), mul(a1, b0))],
                 axis=axis)


def _vectors(tensors, op: str) -> list:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    for t in tensors:
        if len(_shape_of(t)) > 1:
            raise ShapeError(f"{op}: expected 0-D or 1-D inputs, got shapes {[tuple(_shape_of(u)) for u in tensors]}")
    return [reshape(t, (-1,)) if len(_shape_of(t)) == 0 else t for t in tensors]


def meshgrid(*tensors, indexing: str = "ij") -> list[Tensor]:
    """Coordinate grids from 1-D inputs t_0 .. t_{k-1}: out_i[j_0, .., j_{k-1}] = t_i[j_i] with
    ``indexing="ij"`` (torch's default); ``"xy"`` swaps the first two grid axes (NumPy's default)."""
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    vectors = _vectors(tensors, "meshgrid")
    place = list(range(len(vectors)))
    if indexing == "xy" and len(vectors) >= 2:
        place[0], place[1] = 1, 0
    grid = [0] * len(vectors)
    for i, v in zip(place, vectors):
        grid[i] = _shape_of(v)[0]
    grids = []
    for i, v in zip(place, vectors):
        shape = [1] * len(vectors)
        shape[i] = grid[i]
        grids.append(broadcast_to(reshape(v, tuple(shape)), tuple(grid)))
    return grids


def cartesian_prod(*tensors) -> Tensor:
    """Every tuple (t_0[j_0], .., t_{k-1}[j_{k-1}]) in row-major order, as rows of a (prod n_i, k)
    tensor (a single input is returned as it is), as ``torch.cartesian_prod``."""
    vectors = _vectors(tensors, "cartesian_prod")
    if not vectors:
        raise ValueError("cartesian_prod: expected at least one input")
    if len(vectors) == 1:
        return vectors[0]
    return stack([reshape(g, (-1,)) for g in meshgrid(*vectors, indexing="ij")], axis=1)


def _triangle_indices(row: int, col: int, offset: int, op: str, pick):
    row, col = _whole_number(row, op, "row"), _whole_number(col, op, "col")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ValueError(f"{op}: offset must be an int, got {offset!r}")
    rows, cols = pick(row, offset, col)
    return backend.xp.stack([rows, cols]).astype(backend.xp.int64)


def tril_indices(row: int, col: int, offset: int = 0):
    """The (2, N) row and column indices of the lower triangle (j - i <= offset) of a row x col
    matrix, in row-major order (an int64 array), as ``torch.tril_indices``."""
    return _triangle_indices(row, col, offset, "tril_indices", backend.xp.tril_indices)


def triu_indices(row: int, col: int, offset: int = 0):
    """The (2, N) row and column indices of the upper triangle (j - i >= offset) of a row x col
    matrix, in row-major order (an int64 array), as ``torch.triu_indices``."""
    return _triangle_indices(row, col, offset, "triu_indices", backend.xp.triu_indices)


def diag(x, offset: int = 0) -> Tensor:
    """A square matrix with the vector x on its ``offset`` diagonal, or the ``offset`` diagonal
    of the matrix x as a vector, as ``torch.diag``."""
    shape = tuple(_shape_of(x))
    if len(shape) == 1:
        return diag_embed(x, offset)
    if len(shape) == 2:
        return diagonal(x, offset)
    raise ShapeError(f"diag: expected a 1-D or 2-D input, got shape {shape}")


def diagflat(x, offset: int = 0) -> Tensor:
    """A square matrix with the flattened x on its ``offset`` diagonal."""
    return diag_embed(reshape(x, (-1,)), offset)


def block_diag(*tensors) -> Tensor:
    """The block-diagonal matrix of the inputs (0-D read as 1 x 1, 1-D as one row), zeros off the
    blocks, as ``torch.block_diag``."""
    blocks = []
    for t in tensors:
        shape = tuple(_shape_of(t))
        if len(shape) > 2:
            raise ShapeError(f"block_diag: expected inputs of at most 2 dimensions, got shapes "
                             f"{[tuple(_shape_of(u)) for u in tensors]}")
        blocks.append(reshape(t, (1, -1) if len(shape) == 1 else (1, 1)) if len(shape) < 2 else t)
    if not blocks:
        return Tensor._wrap(backend.xp.zeros((1, 0), dtype=backend.get_default_dtype()))
    width = sum(_shape_of(b)[1] for b in blocks)
    rows, left = [], 0
    for b in blocks:
        c = _shape_of(b)[1]
        rows.append(pad(b, ((0, 0), (left, width - left - c))))
        left += c
    return concat(rows, axis=0)


def rot90(x, k: int = 1, axes=(0, 1)) -> Tensor:
    """x rotated by 90 degrees k times in the plane of ``axes``, from the first axis towards the
    second (``numpy.rot90``, ``torch.rot90``)."""
    shape = tuple(_shape_of(x))
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"rot90: k must be an int, got {k!r}")
    if len(tuple(axes)) != 2:
        raise ValueError(f"rot90: axes must be two axes, got {axes!r}")
    first, second = _axes_tuple(axes, len(shape), "rot90", "axes")
    k %= 4
    if k == 0:
        return reshape(x, shape)
    if k == 2:
        return flip(x, (first, second))
    if k == 1:
        return swapaxes(flip(x, second), first, second)
    return flip(swapaxes(x, first, second), second)


def vander(x, n: int | None = None, increasing: bool = False) -> Tensor:
    """The Vandermonde matrix of the vector x: column j is x^(n-1-j) (x^j with ``increasing``),
    n columns (len(x) by default), as ``torch.vander``."""
    shape = tuple(_shape_of(x))
    if len(shape) != 1:
        raise ShapeError(f"vander: expected a 1-D input, got shape {shape}")
    n = shape[0] if n is None else _whole_number(n, "vander", "n")
    dtype = _raw(x).dtype if _raw(x).dtype.kind == "f" else backend.get_default_dtype()
    columns = [backend.xp.ones(shape, dtype=dtype)] if n else []
    for _ in range(1, n):
        columns.append(x if len(columns) == 1 else mul(columns[-1], x))
    if not columns:
        return Tensor._wrap(backend.xp.zeros(shape + (0,), dtype=dtype))
    return stack(columns if increasing else columns[::-1], axis=1)
