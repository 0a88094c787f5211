"""More reductions: logsumexp, prod, std, vector norms, and the running cumsum and cumprod.

Each is one node with a closed-form backward:

- logsumexp y = log sum_j e^(x_j) = m + log sum_j e^(x_j - m), m = max_j x_j, so no e^x
  overflows; dy/dx_j = e^(x_j - y), the softmax g_j(x) of the course notes.
- prod y = prod_j x_j; dy/dx_i = prod_(j != i) x_j, formed as the product of the factors
  left of i times those right of i, so zeros in the input need no special case.
- std s = sqrt((1/(n - ddof)) sum_j (x_j - mean)^2); ds/dx_i = (x_i - mean) / ((n - ddof) s),
  taken as 0 where s = 0 (a constant slice), as PyTorch does.
- norm: ||x||_1 = sum |x_j| (gradient sign x_j), ||x||_2 = sqrt(sum x_j^2) (gradient
  x_j / ||x||_2, taken as 0 at x = 0), ||x||_inf = max |x_j| (the gradient sign x_j split
  evenly among the elements that reach the max, as PyTorch does).
- cumsum y_k = sum_(j <= k) x_j; dJ/dx_i = sum_(k >= i) dJ/dy_k, a cumsum run backwards. On
  large float arrays both run as block matrix products (:func:`_blocked_scan`).
- cumprod y_k = prod_(j <= k) x_j; see :class:`CumProd` for a backward exact where x has zeros.

Dtypes are PyTorch's: prod, cumsum and cumprod of bool and integers run in, and return, int64;
logsumexp takes them to the default float dtype first. float16 input is worked in float32 and
the result rounded back to float16 (prod excepted, as in PyTorch), its gradient too.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.functional._util import normalize_axes
from lamina.functional.elementwise import where
from lamina.functional.reduce import accumulate, in_float32
from lamina.functional.shape import concat, reshape, stack

NORM_ORDERS = (1, 2, math.inf)
"""The vector norm orders :func:`norm` takes, besides 'fro' (the same as 2)."""


def _reduced(keep, axes, keepdims: bool):
    """A result computed with keepdims, squeezed unless ``keepdims``."""
    return keep if keepdims else keep.reshape([n for i, n in enumerate(keep.shape) if i not in axes])


def _check_not_empty(a, axes, op: str) -> None:
    if any(a.shape[i] == 0 for i in axes):
        raise ValueError(f"{op}: cannot reduce an empty axis: input of shape {a.shape}, axes {axes}")


class LogSumExp(Function):
    dtype_rule = "float"                # integers and bool to the default float dtype first, as in torch

    def forward(self, a):
        xp = backend.xp
        self.axes = normalize_axes(self.axis, a.ndim, "logsumexp")
        _check_not_empty(a, self.axes, "logsumexp")
        shift = a.max(axis=self.axes, keepdims=True)
        shift = xp.where(xp.isfinite(shift), shift, 0)  # all -inf (or an inf) in a slice: no shift
        self.a = a
        with numpy.errstate(divide="ignore"):  # a slice of -inf alone sums to 0: log gives -inf, as in torch
            self.y = xp.log(xp.exp(a - shift).sum(axis=self.axes, keepdims=True)) + shift
        return _reduced(self.y, self.axes, self.keepdims)

    def backward(self, dy):
        dy = dy.reshape(self.y.shape)
        return (dy * backend.xp.exp(self.a - self.y),)

    def backward_graph(self, dy):
        y = _recorded_kept(self, self.y)
        return (dy.reshape(self.y.shape) * (self.inputs[0] - y).exp(),)


def _to_last(a, axes):
    """``a`` with the kept axes first and the ``axes`` merged into one last axis."""
    kept = tuple(i for i in range(a.ndim) if i not in axes)
    moved = a.transpose(kept + axes)
    return moved.reshape(tuple(a.shape[i] for i in kept) + (math.prod(a.shape[i] for i in axes),))


def _from_last(g, in_shape, axes):
    """Undo :func:`_to_last` for a gradient ``g`` of the moved shape."""
    kept = tuple(i for i in range(len(in_shape)) if i not in axes)
    order = kept + axes
    g = g.reshape([in_shape[i] for i in order])
    return g.transpose([order.index(i) for i in range(len(order))])


def _exclusive_cumprod(a):
    """Along the last axis, out_i = prod_(j < i) a_j (1 for i = 0)."""
    xp = backend.xp
    out = xp.ones(a.shape, dtype=a.dtype)
    if a.shape[-1] > 1:
        out[..., 1:] = xp.cumprod(a[..., :-1], axis=-1)
    return out


def _recorded_kept(fn: Function, kept) -> Tensor:
    """The output of ``fn`` (a reduction that saved it with keepdims as ``kept``) as a
    tensor on the graph (:meth:`Function.recorded_output`), in the keepdims shape."""
    return fn.recorded_output(_reduced(kept, fn.axes, fn.keepdims)).reshape(kept.shape)


def _to_last_tensor(t: Tensor, axes) -> Tensor:
    """:func:`_to_last` for a tensor, by recorded ops."""
    kept = tuple(i for i in range(t.ndim) if i not in axes)
    merged = math.prod(t.shape[i] for i in axes)      # not -1: a kept axis may have length 0
    return t.transpose(kept + tuple(axes)).reshape(tuple(t.shape[i] for i in kept) + (merged,))


def _from_last_tensor(g: Tensor, in_shape, axes) -> Tensor:
    """:func:`_from_last` for a tensor, by recorded ops."""
    kept = tuple(i for i in range(len(in_shape)) if i not in axes)
    order = kept + tuple(axes)
    g = g.reshape(tuple(in_shape[i] for i in order))
    return g.transpose(tuple(order.index(i) for i in range(len(order))))


def _exclusive_cumprod_tensor(t: Tensor) -> Tensor:
    """:func:`_exclusive_cumprod` for a tensor, by recorded ops (a recorded cumprod)."""
    xp = backend.xp
    if t.shape[-1] <= 1:
        return Tensor._wrap(xp.ones(t.shape, dtype=t.dtype))
    first = Tensor._wrap(xp.ones(t.shape[:-1] + (1,), dtype=t.dtype))
    return concat([first, cumprod(t[..., :-1], axis=-1)], axis=-1)


class Prod(Function):
    def forward(self, a):
        self.axes = normalize_axes(self.axis, a.ndim, "prod")
        self.a = a
        return a.prod(axis=self.axes, keepdims=self.keepdims, dtype=backend.xp.int64 if a.dtype.kind in "biu" else None)

    def backward(self, dy):
        moved = _to_last(self.a, self.axes)
        left = _exclusive_cumprod(moved)
        right = _exclusive_cumprod(moved[..., ::-1])[..., ::-1]
        dy = dy.reshape(moved.shape[:-1] + (1,))
        return (_from_last(left * right * dy, self.a.shape, self.axes),)

    def backward_graph(self, dy):
        moved = _to_last_tensor(self.inputs[0], self.axes)
        left = _exclusive_cumprod_tensor(moved)
        right = _exclusive_cumprod_tensor(moved[..., ::-1])[..., ::-1]
        dy = dy.reshape(moved.shape[:-1] + (1,))
        return (_from_last_tensor(left * right * dy, self.inputs[0].shape, self.axes),)


class Std(Function):
    def forward(self, a):
        xp = backend.xp
        self.axes = normalize_axes(self.axis, a.ndim, "std")
        n = math.prod(a.shape[i] for i in self.axes)
        self.dof = n - self.ddof
        if self.dof <= 0:
            raise ValueError(f"std: ddof={self.ddof} leaves n - ddof = {self.dof} for n = {n} values "
                             f"(input of shape {a.shape}, axes {self.axes}); expected n - ddof > 0")
        self.centred = a - a.mean(axis=self.axes, keepdims=True)
        squares = (self.centred * self.centred).sum(axis=self.axes, keepdims=True)
        self.s = xp.sqrt(squares / self.dof)
        return _reduced(self.s, self.axes, self.keepdims)

    def backward(self, dy):
        xp = backend.xp
        dy = dy.reshape(self.s.shape)
        nonzero = self.s > 0
        scale = xp.where(nonzero, dy / (self.dof * xp.where(nonzero, self.s, 1)), 0)
        return (scale * self.centred,)

    def backward_graph(self, dy):
        x = self.inputs[0]
        s = _recorded_kept(self, self.s)
        nonzero = self.s > 0
        scale = where(nonzero, dy.reshape(self.s.shape) / (self.dof * where(nonzero, s, 1.0)), 0.0)
        return (scale * (x - x.mean(axis=self.axes, keepdims=True)),)


class Norm(Function):
    """The vector norm of order 1, 2 or inf over ``axes``."""

    def forward(self, a):
        xp = backend.xp
        self.axes = normalize_axes(self.axis, a.ndim, "norm")
        self.a = a
        if self.ord == 1:
            y = xp.abs(a).sum(axis=self.axes, keepdims=True)
        elif self.ord == 2:
            y = xp.sqrt((a * a).sum(axis=self.axes, keepdims=True))
        else:
            _check_not_empty(a, self.axes, "norm")
            y = xp.abs(a).max(axis=self.axes, keepdims=True)
        self.y = y
        return _reduced(y, self.axes, self.keepdims)

    def backward(self, dy):
        xp = backend.xp
        a, y = self.a, self.y
        dy = dy.reshape(y.shape)
        if self.ord == 1:
            return (dy * xp.sign(a),)
        if self.ord == 2:
            nonzero = y > 0
            return (xp.where(nonzero, dy / xp.where(nonzero, y, 1), 0) * a,)
        at_max = xp.abs(a) == y
        ties = at_max.sum(axis=self.axes, keepdims=True).astype(dy.dtype)
        return (xp.sign(a) * at_max * (dy / ties),)

    def backward_graph(self, dy):
        y = self.y
        dy = dy.reshape(y.shape)
        if self.ord == 2:
            nonzero = y > 0
            return (where(nonzero, dy / where(nonzero, _recorded_kept(self, y), 1.0), 0.0) * self.inputs[0],)
        # the 1- and inf-norm's slopes (signs, the routing to the maxima) are piecewise constant in x
        return (dy * self.backward(backend.xp.ones(y.shape, dtype=y.dtype))[0],)


def _single_axis(axis, ndim: int, op: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{op}: axis must be one int, got {axis!r}")
    return normalize_axes(axis, ndim, op)[0]


SCAN_BLOCKS = range(16, 41)
"""Block lengths of :func:`_running_sum`'s matrix-product scan: the one nearest 32 that divides
the axis (so that the result fills its array), else 32 with the axis padded."""

SCAN_MIN_SIZE = 1 << 15
"""Arrays with fewer elements (or an axis shorter than 64) use NumPy's cumsum."""

SCAN_MIN_ROWS = 16
"""Fewer running sums than this (a few very long axes) use NumPy's cumsum: one long row gains
nothing from the matrix products (1 x 10^6 values: 32 ms blocked against 4 ms)."""

SCAN_CHUNK_BYTES = 1 << 20
"""Each thread takes its rows through all the scan's steps in chunks of about this size, which
stay in the cache (measured on 2 cores: 256 KiB to 8 MiB within 15% of each other)."""


def _scan_block(n: int) -> int:
    dividing = [b for b in SCAN_BLOCKS if n % b == 0]
    return min(dividing, key=lambda b: abs(b - 32)) if dividing else 32


def _blocked_scan(rows, reverse: bool):
    """Running sums along the rows of the 2-D ``rows``, as matrix products; None where a
    value is not finite (there the sequential cumsum gives the exact pattern of infs and nans).

    NumPy's cumsum adds one element at a time, a few ns each. Here each row is cut into
    blocks of b (:func:`_scan_block`) and, with c_j the sum of the blocks before block j
    (after it when ``reverse``), y = (x with c_j added to the first (last) element of block
    j) @ U, U the b x b triangle of ones: a GEMM, plus a GEMV for the block sums and a running
    sum over them for the c_j, all in the input's float type. Chunks of rows run on lamina's
    threads (:func:`lamina.parallel.split`), each through all the steps while it is in the cache.
    """
    xp = backend.xp
    m, n = rows.shape
    b = _scan_block(n)
    blocks = -(-n // b)
    width = blocks * b
    out = xp.empty((m, width), dtype=rows.dtype)
    ones = xp.ones(b, dtype=rows.dtype)
    upper = xp.tri(b, dtype=rows.dtype).T                    # x @ upper: y_i = sum_(j <= i) x_j
    triangle = upper.T if reverse else upper
    entry = b - 1 if reverse else 0
    step = max(1, SCAN_CHUNK_BYTES // (width * rows.itemsize))
    not_finite = []

    def scan(lo: int, hi: int) -> None:
        work = xp.empty((min(step, hi - lo), width), dtype=rows.dtype)
        work[:, n:] = 0                                      # the padding, where b does not divide n
        for start in range(lo, hi, step):
            stop = min(hi, start + step)
            chunk = work[:stop - start]
            chunk[:, :n] = rows[start:stop]
            pieces = chunk.reshape(-1, b)
            totals = (pieces @ ones).reshape(-1, blocks)
            if not xp.isfinite(totals).all():
                not_finite.append(start)
                return
            chunk.reshape(-1, blocks, b)[:, :, entry] += _blocks_before(totals, reverse)
            xp.matmul(pieces, triangle, out=out[start:stop].reshape(-1, b))

    parallel.split(scan, m, m * width)
    if not_finite:
        return None
    return out if width == n else out[:, :n]


def _blocks_before(totals, reverse: bool):
    """c_j: the sum of the block sums before block j in each row (after it when ``reverse``),
    a running sum over the n / b blocks (few: NumPy's cumsum is cheap here)."""
    xp = backend.xp
    carried = xp.zeros_like(totals)
    if reverse:
        carried[:, :-1] = xp.cumsum(totals[:, :0:-1], axis=1)[:, ::-1]
    else:
        carried[:, 1:] = xp.cumsum(totals[:, :-1], axis=1)
    return carried


def _running_sum(a, axis: int, reverse: bool = False):
    """y_k = sum_(j <= k) x_j along ``axis`` of the array ``a`` (sum_(j >= k) when ``reverse``)."""
    xp = backend.xp
    n = a.shape[axis]
    if (xp.__name__ == "numpy" and a.dtype in (xp.float32, xp.float64) and n >= 64
            and a.size >= SCAN_MIN_SIZE and a.size // n >= SCAN_MIN_ROWS):
        rows = xp.moveaxis(a, axis, -1)
        out = _blocked_scan(rows.reshape(-1, n), reverse)
        if out is not None:
            return xp.moveaxis(out.reshape(rows.shape), -1, axis)
    if reverse:
        return xp.flip(accumulate("cumsum", xp.flip(a, axis), axis=axis), axis)
    return accumulate("cumsum", a, axis=axis)


class CumSum(Function):
    def forward(self, a):
        self.axis = _single_axis(self.axis, a.ndim, "cumsum")
        return _running_sum(a, self.axis)

    def backward(self, dy):
        return (_running_sum(dy, self.axis, reverse=True),)

    backward_graph = Function.linear_backward_graph


def _suffix_recurrence(x, g):
    """S_i = g_i + x_(i+1) S_(i+1) along the last axis (S_(n-1) = g_(n-1)), with no division.

    Recursive doubling: after the step of span d, S_i = s_i + c_i S_(i+d) with
    c_i = prod_(i < j <= i+d) x_j, and S is 0 past the end. Putting the same form in for
    S_(i+d) gives span 2d: s_i <- s_i + c_i s_(i+d), c_i <- c_i c_(i+d). So ceil(log2 n)
    steps over the whole axis, each a few array ops.
    """
    n = x.shape[-1]
    s = g.copy()
    c = x[..., 1:].copy()                     # c_i for i < n - 1; from i = n - 1 on, S_(i+d) = 0
    span = 1
    while span < n:
        s[..., :n - span] += c[..., :n - span] * s[..., span:]
        if 2 * span < n:
            c[..., :n - 2 * span] = c[..., :n - 2 * span] * c[..., span:n - span]
        span *= 2
    return s


class CumProd(Function):
    """y_k = prod_(j <= k) x_j along one axis.

    dJ/dx_i = sum_(k >= i) dJ/dy_k prod_(j <= k, j != i) x_j = L_i S_i, with
    L_i = prod_(j < i) x_j and S_i = sum_(k >= i) dJ/dy_k prod_(i < j <= k) x_j, which
    satisfies S_(n-1) = dJ/dy_(n-1) and S_i = dJ/dy_i + x_(i+1) S_(i+1).

    The backward takes whole lines along the axis at once. With z the first position where
    x_z = 0 (n if there is none): for i < z, dJ/dx_i = (sum_(k >= i) dJ/dy_k y_k) / x_i, a
    reversed cumsum divided by a nonzero x_i; dJ/dx_z = sum_(k >= z) dJ/dy_k w_k, w the cumprod
    of x with x_z taken as 1; dJ/dx_i = 0 for i > z, as each of its products has the factor
    x_z = 0. So zeros get their true gradient, never a division by 0. The division is exact
    while y_k is finite and of normal size for k < z; a line where a product under- or
    overflowed there gets L_i S_i instead, with S from :func:`_suffix_recurrence`.
    """

    def forward(self, a):
        self.axis = _single_axis(self.axis, a.ndim, "cumprod")
        self.a = a
        self.y = accumulate("cumprod", a, axis=self.axis)
        return self.y

    def backward(self, dy):
        xp = backend.xp
        x, y, dy = (xp.moveaxis(v, self.axis, -1) for v in (self.a, self.y, dy))
        n = x.shape[-1]
        if n == 0:
            return (xp.zeros(self.a.shape, dtype=dy.dtype),)
        position = xp.arange(n)
        is_zero = x == 0
        first_zero = xp.where(is_zero.any(axis=-1), is_zero.argmax(axis=-1), n)
        before = position < first_zero[..., None]
        with numpy.errstate(divide="ignore", invalid="ignore", over="ignore"):   # masked out, or redone below
            dx = xp.where(before, xp.flip(xp.cumsum(xp.flip(dy * y, -1), axis=-1), -1) / x, 0)
            exact = (~before | ((xp.abs(y) >= xp.finfo(y.dtype).tiny) & xp.isfinite(dx))).all(axis=-1)
        with_zero = exact & (first_zero < n)
        if with_zero.any():
            z = first_zero[with_zero][:, None]
            w = xp.cumprod(xp.where(position == z, 1, x[with_zero]), axis=-1)
            at_zero = with_zero[..., None] & (position == first_zero[..., None])
            dx[at_zero] = xp.where(position >= z, dy[with_zero] * w, 0).sum(axis=-1)
        if not exact.all():
            redo = ~exact
            dx[redo] = _exclusive_cumprod(x[redo]) * _suffix_recurrence(x[redo], dy[redo])
        return (xp.moveaxis(dx, -1, self.axis),)

    def backward_graph(self, dy):
        # L_i S_i with the recurrence for S run one recorded step per position along the axis
        x = _to_last_tensor(self.inputs[0], (self.axis,))
        g = _to_last_tensor(dy, (self.axis,))
        n = x.shape[-1]
        if n == 0:
            return (dy * 0.0,)
        s = [g[..., n - 1]]
        for i in range(n - 2, -1, -1):
            s.append(g[..., i] + x[..., i + 1] * s[-1])
        s = stack(s[::-1], axis=-1)
        return (_from_last_tensor(_exclusive_cumprod_tensor(x) * s, self.inputs[0].shape, (self.axis,)),)


def vector_order(order, op: str, name: str = "ord"):
    """``order`` as 1, 2 or inf ('fro' is 2), or a ValueError naming ``op`` and its argument ``name``."""
    if isinstance(order, str) and order == "fro":
        return 2
    if isinstance(order, numbers.Real) and not isinstance(order, bool) and order in NORM_ORDERS:
        return order
    raise ValueError(f"{op}: {name} must be one of 1, 2, inf or 'fro', got {order!r}")


def logsumexp(a, axis=None, keepdims: bool = False) -> Tensor:
    """log sum_j e^(x_j) over ``axis`` (None: every axis), computed without overflow; bool and
    integer input is taken to the default float dtype first."""
    return in_float32(lambda t: LogSumExp.apply(t, axis=axis, keepdims=keepdims), a)


def prod(a, axis=None, keepdims: bool = False) -> Tensor:
    """The product of the values over ``axis`` (None: every axis); bool and integers give int64."""
    return Prod.apply(a, axis=axis, keepdims=keepdims)


def std(a, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Standard deviation sqrt((1/(n - ddof)) sum (x - mean)^2) over ``axis``.

    ``ddof`` is NumPy's: the count of degrees of freedom taken off n. PyTorch calls the
    same number ``correction`` (``torch.std(x, correction=ddof)``); ddof=0 (the default,
    as NumPy) is the population value, ddof=1 the unbiased one (PyTorch's default).
    """
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"std: ddof must be an int >= 0, got {ddof!r}")
    return in_float32(lambda t: Std.apply(t, axis=axis, keepdims=keepdims, ddof=ddof), a)


def norm(a, ord=2, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A002 - mirrors NumPy
    """The vector norm of order ``ord`` (1, 2, inf, or 'fro', the same as 2) over ``axis``.

    The values over all the ``axis`` axes (None: every axis) form one vector, as
    ``torch.linalg.vector_norm``: for a matrix and axis=None, ord=2 is the Frobenius
    norm, not NumPy's spectral norm. The gradient of the 2-norm at x = 0 is taken as 0.
    """
    order = vector_order(ord, "norm")
    return in_float32(lambda t: Norm.apply(t, ord=order, axis=axis, keepdims=keepdims), a)


def cumsum(a, axis: int) -> Tensor:
    """Running sums along ``axis``: y_k = x_0 + ... + x_k (bool and integers in int64); a 0-d
    ``a`` is its own running sum, as PyTorch's, for ``axis`` 0 or -1."""
    return _scan_0d(CumSum, a, axis)


def cumprod(a, axis: int) -> Tensor:
    """Running products along ``axis``: y_k = x_0 x_1 ... x_k (bool and integers in int64);
    a 0-d ``a`` as for :func:`cumsum`."""
    return _scan_0d(CumProd, a, axis)


def _scan_0d(op: type[Function], a, axis: int) -> Tensor:
    """``op`` along ``axis``, a 0-d ``a`` (with axis 0 or -1) run as one value along axis 0."""
    if backend.xp.ndim(a.data if isinstance(a, Tensor) else a) or axis not in (0, -1):
        return op.apply(a, axis=axis)
    return reshape(op.apply(reshape(a, (1,)), axis=0), ())

