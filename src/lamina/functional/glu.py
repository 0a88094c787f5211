"""Gated linear unit (Dauphin et al. 2017), as PyTorch's ``F.glu``: the input is cut in two
halves a, b along ``axis`` and

    y = a * sigma(b),

so y has half the length of x along ``axis``. Built from split, sigmoid and a product, its
gradients of every order are theirs: dJ/da = dJ/dy sigma(b), dJ/db = dJ/dy a sigma(b) (1 - sigma(b)).
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import sigmoid
from lamina.functional.indexing import split

__all__ = ["glu"]


def glu(x: Tensor, axis: int = -1) -> Tensor:
    """y = a * sigma(b) for x = [a, b] split in halves along ``axis`` (its length must be even)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"glu: axis must be an int in [{-x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, "
                         f"got {axis!r}")
    n = x.shape[axis]
    if n % 2:
        raise ShapeError(f"glu: x of shape {tuple(x.shape)} has {n} entries along axis {axis}; expected an even "
                         "number, halved into the values and the gates")
    a, b = split(x, n // 2, axis=axis)
    return a * sigmoid(b)
