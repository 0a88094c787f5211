"""Attach operators and methods to :class:`~lamina.autograd.Tensor`.

The engine's Tensor knows nothing of the ops above it; importing this module (done by
``lamina.functional``) gives it ``+ - * / ** @``, comparisons, indexing and the methods
``x.sum()``, ``x.relu()`` and so on.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional import activation as A
from lamina.functional import arithmetic as M
from lamina.functional import elementwise as E
from lamina.functional import indexing as I
from lamina.functional import indexing_parity as IP
from lamina.functional import math_more as MM
from lamina.functional import math_parity as MP
from lamina.functional import reduce as R
from lamina.functional import reduce_more as RM
from lamina.functional import scan_parity as SC
from lamina.functional import shape as S
from lamina.functional import shape_parity as SP
from lamina.functional import stats_parity as ST

_PLAIN_OPERANDS = (Tensor, int, float, numpy.ndarray, numpy.generic)


def _operator(fn):
    """``fn`` as a binary operator method. An operand whose class sets ``handles_tensor_operators``
    (a sparse tensor) gets NotImplemented, so that Python calls its own reflected operator."""

    def method(self, other):
        if not isinstance(other, _PLAIN_OPERANDS) and getattr(other, "handles_tensor_operators", False):
            return NotImplemented
        return fn(self, other)

    return method


def _swap(fn):
    return _operator(lambda self, other: fn(other, self))


def _compare(op):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(backend.xp.asarray(op(self.data, other)))  # 0-d: an array, not a scalar

    return method


def install() -> None:
    T = Tensor
    T.__add__, T.__radd__ = _operator(M.add), _swap(M.add)
    T.__sub__, T.__rsub__ = _operator(M.sub), _swap(M.sub)
    T.__mul__, T.__rmul__ = _operator(M.mul), _swap(M.mul)
    T.__truediv__, T.__rtruediv__ = _operator(M.div), _swap(M.div)
    T.__pow__, T.__rpow__ = _operator(M.power), _swap(M.power)
    T.__matmul__, T.__rmatmul__ = _operator(M.matmul), _swap(M.matmul)
    T.__neg__ = M.neg
    T.__getitem__ = S.getitem
    T.__lt__ = _compare(lambda a, b: a < b)
    T.__le__ = _compare(lambda a, b: a <= b)
    T.__gt__ = _compare(lambda a, b: a > b)
    T.__ge__ = _compare(lambda a, b: a >= b)
    T.__eq__ = _compare(lambda a, b: a == b)
    T.__ne__ = _compare(lambda a, b: a != b)
    T.__hash__ = object.__hash__

    T.reshape = S.reshape
    T.transpose = S.transpose
    T.T = property(lambda self: S.transpose(self))
    T.swapaxes = S.swapaxes
    T.flatten = S.flatten
    T.expand_dims = S.expand_dims
    T.squeeze = S.squeeze
    T.broadcast_to = S.broadcast_to

    T.sum = R.sum
    T.mean = R.mean
    T.var = R.var
    T.max = R.max
    T.min = R.min

    T.exp = E.exp
    T.log = E.log
    T.sqrt = E.sqrt
    T.abs = E.abs
    T.__abs__ = E.abs
    T.clip = E.clip

    for name in ("gather", "index_select", "scatter_add", "masked_fill", "sort", "topk", "argmax", "argmin",
                 "flip", "roll", "tile", "repeat_interleave", "split", "chunk"):
        setattr(T, name, getattr(I, name))
    for name in ("sin", "cos", "tan", "log1p", "expm1", "square", "reciprocal", "rsqrt", "log2", "log10", "sign",
                 "floor", "round"):
        setattr(T, name, getattr(MM, name))
    for name in ("logsumexp", "prod", "std", "norm", "cumsum", "cumprod"):
        setattr(T, name, getattr(RM, name))
    for name in ("take", "take_along_dim", "scatter", "scatter_reduce", "index_add", "index_copy", "index_fill",
                 "masked_select", "masked_scatter", "nonzero", "argsort", "msort", "unique", "histc", "bincount"):
        setattr(T, name, getattr(IP, name))
    for name in ("movedim", "unflatten", "narrow", "kron", "outer", "cross", "diag", "diagflat", "rot90"):
        setattr(T, name, getattr(SP, name))

    for name in ("sinh", "cosh", "asinh", "acosh", "atanh", "asin", "acos", "atan", "exp2", "sinc", "heaviside",
                 "frac", "trunc", "ceil", "fmod", "remainder", "copysign", "hypot", "logaddexp", "logaddexp2", "lerp",
                 "addcmul", "addcdiv", "clamp", "isclose", "allclose"):
        setattr(T, name, getattr(MP, name))
    for name in ("amax", "amin", "aminmax", "nansum", "nanmean", "median", "nanmedian", "kthvalue", "mode",
                 "quantile", "nanquantile", "count_nonzero", "all", "any", "cov", "corrcoef", "renorm", "dist"):
        setattr(T, name, getattr(ST, name))
    for name in ("diff", "logcumsumexp", "cummax", "cummin"):
        setattr(T, name, getattr(SC, name))

    T.sigmoid = A.sigmoid
    T.tanh = A.tanh
    T.relu = A.relu
    T.leaky_relu = A.leaky_relu
    T.elu = A.elu
    T.selu = A.selu
    T.softmax = A.softmax
    T.log_softmax = A.log_softmax
