"""Symbolic read-out of a KAN edge: which library function f fits the edge's values best as
y ~ a f(b x + c) + d (pykan's ``suggest_symbolic``, reduced).

For every (b, c) on a grid the best a and d are the ordinary least-squares line of y on
z = f(b x + c), whose coefficient of determination is R^2 = cov(z, y)^2 / (var z var y); the
(b, c) of the highest R^2 is then searched again on finer grids around it. Arguments outside
f's domain (log, sqrt) rule a (b, c) out.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import functional as F

__all__ = ["SYMBOLIC_FUNCTIONS", "SYMBOLIC_NAMES", "SymbolicFit", "fit_symbolic"]

#: name -> (NumPy function, tensor function), simplest first.
SYMBOLIC_FUNCTIONS = {
    "x": (lambda z: z, lambda z: z),
    "x^2": (np.square, lambda z: z * z),
    "x^3": (lambda z: z * z * z, lambda z: z * z * z),
    "exp": (np.exp, F.exp),
    "sin": (np.sin, F.sin),
    "tanh": (np.tanh, F.tanh),
    "log": (np.log, F.log),
    "sqrt": (np.sqrt, F.sqrt),
    "abs": (np.abs, F.abs),
}
SYMBOLIC_NAMES = tuple(SYMBOLIC_FUNCTIONS)


class SymbolicFit(NamedTuple):
    """y ~ a f(b x + c) + d with ``params`` = (a, b, c, d) and its ``r2`` on the data."""

    function: str
    params: tuple[float, float, float, float]
    r2: float


def _scan(fn, x: np.ndarray, y: np.ndarray, bs: np.ndarray, cs: np.ndarray) -> tuple[float, float, float]:
    """(R^2, b, c) of the best (b, c) on the grid bs x cs."""
    with np.errstate(all="ignore"):
        z = fn(bs[:, None, None] * x + cs[None, :, None])              # (nb, nc, n)
        valid = np.isfinite(z).all(axis=-1)
        zc = z - z.mean(axis=-1, keepdims=True)
        yc = y - y.mean()
        szz = (zc * zc).sum(axis=-1)
        szy = (zc @ yc)
        r2 = szy * szy / (szz * (yc @ yc))
    r2 = np.where(valid & (szz > 1e-12 * x.size) & np.isfinite(r2), r2, -np.inf)
    ib, ic = np.unravel_index(int(np.argmax(r2)), r2.shape)
    return float(r2[ib, ic]), float(bs[ib]), float(cs[ic])


def fit_symbolic(x, y, functions=None, b_range: tuple[float, float] = (-10.0, 10.0),
                 c_range: tuple[float, float] = (-10.0, 10.0), steps: int = 41, zooms: int = 3) -> list[SymbolicFit]:
    """Fit y ~ a f(b x + c) + d for each f in ``functions`` (names from
    :data:`SYMBOLIC_FUNCTIONS`; all of them by default); best R^2 first.

    (b, c) start on a ``steps`` x ``steps`` grid over ``b_range`` x ``c_range``; each of the
    ``zooms`` refinements searches a grid of the same size two cells wide around the best point.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"fit_symbolic: x and y must hold the same number (>= 3) of values, got {x.size} and {y.size}")
    names = SYMBOLIC_NAMES if functions is None else tuple(functions)
    unknown = [n for n in names if n not in SYMBOLIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"fit_symbolic: unknown functions {unknown}; expected names from {SYMBOLIC_NAMES}")
    if np.ptp(y) == 0:                     # a constant: every function with a = 0 fits it exactly
        return [SymbolicFit(n, (0.0, 1.0, 0.0, float(y[0])), 1.0) for n in names]
    fits = []
    for name in names:
        fn = SYMBOLIC_FUNCTIONS[name][0]
        bs, cs = np.linspace(*b_range, steps), np.linspace(*c_range, steps)
        r2, b, c = _scan(fn, x, y, bs, cs)
        for _ in range(zooms):
            if not np.isfinite(r2):
                break
            db, dc = bs[1] - bs[0], cs[1] - cs[0]
            bs, cs = np.linspace(b - db, b + db, steps), np.linspace(c - dc, c + dc, steps)
            r2, b, c = max((r2, b, c), _scan(fn, x, y, bs, cs))
        if not np.isfinite(r2):
            continue
        z = fn(b * x + c)
        a, d = np.polyfit(z, y, 1)
        fits.append(SymbolicFit(name, (float(a), b, c, float(d)), r2))
    return sorted(fits, key=lambda f: -f.r2)
