"""Rotary position embedding (RoPE; Su et al., "RoFormer", 2021).

Each pair of features (x_j, x_{j + d/2}) of the step at position p is turned by the angle
p theta_j, with theta_j = base^(-2j / d) for j = 0 .. d/2 - 1:

    y_j       = x_j cos(p theta_j) - x_{j + d/2} sin(p theta_j)
    y_{j+d/2} = x_j sin(p theta_j) + x_{j + d/2} cos(p theta_j)

(the "rotate half" pairing of GPT-NeoX and LLaMA). Applied to the queries and keys of
attention, the score of query position m and key position n,
<R(m) q, R(n) k> = <q, R(n - m) k>, depends on the positions only through their offset.
Built from primitive ops (a rotation is linear in x), so it has first and second derivatives.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import add, mul, sub
from lamina.functional.shape import concat, getitem

__all__ = ["rotary_angles", "rotary_embedding"]


def rotary_angles(positions, d: int, base: float = 10000.0) -> np.ndarray:
    """The angles p theta_j, (T, d/2) in float64, for ``positions`` (T,) and d features."""
    theta = base ** (-np.arange(0, d // 2, dtype=np.float64) * 2.0 / d)
    return np.asarray(positions, dtype=np.float64)[:, None] * theta[None, :]


def rotary_embedding(x, offset: int = 0, base: float = 10000.0, positions=None) -> Tensor:
    """Rotate the features of ``x`` (..., T, d), d even, by their positions: ``offset`` +
    0 .. T-1 by default, or the given ``positions`` (T,)."""
    x = x if isinstance(x, Tensor) else Tensor._constant(backend.xp.asarray(x))
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ShapeError(f"rotary_embedding: expected an input (..., steps, features) with an even number of "
                         f"features, got shape {tuple(x.shape)}")
    if not base > 0:
        raise ValueError(f"rotary_embedding: base must be > 0, got {base!r}")
    t, d = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = offset + np.arange(t)
    positions = np.asarray(positions)
    if positions.shape != (t,):
        raise ShapeError(f"rotary_embedding: positions of shape {positions.shape} for {t} steps; expected ({t},)")
    angles = rotary_angles(positions, d, base)
    dtype = x.data.dtype
    cos = backend.xp.asarray(np.cos(angles), dtype=dtype)
    sin = backend.xp.asarray(np.sin(angles), dtype=dtype)
    half = d // 2
    first = getitem(x, (Ellipsis, slice(0, half)))
    second = getitem(x, (Ellipsis, slice(half, d)))
    return concat([sub(mul(first, cos), mul(second, sin)), add(mul(first, sin), mul(second, cos))], axis=-1)
