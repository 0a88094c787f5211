r"""The strong Wolfe line search of :class:`~lamina.optim.LBFGS` (Nocedal & Wright, *Numerical
Optimization*, Algorithms 3.5 and 3.6): :func:`strong_wolfe` looks along a direction d for a
step length t with sufficient decrease and a small slope, bracketing and then zooming with
:func:`cubic_minimizer`, the minimiser of the cubic through two trials' costs and slopes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from lamina import backend

__all__ = ["BRACKET_TOLERANCE", "WOLFE_C1", "WOLFE_C2", "cubic_minimizer", "strong_wolfe"]

#: Line-search constants: sufficient decrease (Armijo) c1, curvature c2 (N&W 3.7).
WOLFE_C1, WOLFE_C2 = 1e-4, 0.9
#: The line search stops narrowing a bracket whose width times max|d| is below this.
BRACKET_TOLERANCE = 1e-9


class _Trial(NamedTuple):
    """A point on the search line w + t d: its cost f, gradient g and slope g.d."""

    t: float
    f: float
    g: Any
    slope: float


def cubic_minimizer(a: _Trial, b: _Trial, bounds: tuple[float, float] | None = None) -> float:
    r"""The minimiser of the cubic through two trials' costs and slopes (N&W eq. 3.59),
    clipped to ``bounds`` (default: between the two); their midpoint when the cubic has no
    minimum. With x1 < x2::

        d1 = g1 + g2 - 3 (f1 - f2)/(x1 - x2),   d2 = sqrt(d1^2 - g1 g2)
        x  = x2 - (x2 - x1) (g2 + d2 - d1) / (g2 - g1 + 2 d2)
    """
    low, high = (a, b) if a.t <= b.t else (b, a)
    lower, upper = bounds if bounds is not None else (low.t, high.t)
    if low.t == high.t:
        return (lower + upper) / 2
    d1 = low.slope + high.slope - 3 * (low.f - high.f) / (low.t - high.t)
    d2_squared = d1 * d1 - low.slope * high.slope
    if d2_squared < 0:
        return (lower + upper) / 2
    d2 = math.sqrt(d2_squared)
    t = high.t - (high.t - low.t) * ((high.slope + d2 - d1) / (high.slope - low.slope + 2 * d2))
    return min(max(t, lower), upper)


def strong_wolfe(evaluate: Callable[[float], tuple[float, Any]], t: float, d, f0: float, g0, slope0: float,
                 max_evals: int = 25, c1: float = WOLFE_C1, c2: float = WOLFE_C2,
                 tolerance: float = BRACKET_TOLERANCE) -> tuple[float, Any, float, int]:
    r"""A step length along d meeting the strong Wolfe conditions (N&W 3.7)::

        f(t) <= f(0) + c1 t f'(0)              (sufficient decrease)
        |f'(t)| <= c2 |f'(0)|                  (curvature)

    ``evaluate(t)`` returns the cost and flat gradient at w + t d (and leaves w as it was);
    f0, g0 and ``slope0`` = g0.d < 0 are those at t = 0. Returns (f, g, t, evaluations).

    *Bracketing* (N&W Algorithm 3.5): from the first trial t, while neither condition
    settles it, extrapolate to the cubic minimiser through the last two trials, kept within
    [t + 0.01 (t - t_prev), 10 t]; stop once an interval is known to contain a good step:
    the trial breaks sufficient decrease, is no lower than the previous one (from the third
    trial on), or slopes upwards. *Zoom* (Algorithm 3.6): try the cubic minimiser inside the
    interval, nudged to 10% of its width from the ends when it comes too close to one twice
    in a row or lands on one, and keep the subinterval that still brackets a good step;
    stop when one satisfies both conditions or the interval is narrower than ``tolerance``
    (in max|t d|). At most ``max_evals`` evaluations after the first; the lowest trial so
    far is returned when they run out.
    """
    d_size = float(backend.xp.abs(d).max())
    previous = _Trial(0.0, f0, g0, slope0)
    f, g = evaluate(t)
    current = _Trial(t, f, g, float(g @ d))
    evaluations, tries = 1, 0
    bracket: list[_Trial] | None = None
    while tries < max_evals:
        if current.f > f0 + c1 * current.t * slope0 or (tries > 1 and current.f >= previous.f):
            bracket = [previous, current]
            break
        if abs(current.slope) <= -c2 * slope0:
            return current.f, current.g, current.t, evaluations
        if current.slope >= 0:
            bracket = [previous, current]
            break
        t = cubic_minimizer(previous, current,
                            bounds=(current.t + 0.01 * (current.t - previous.t), current.t * 10))
        previous = current
        f, g = evaluate(t)
        current = _Trial(t, f, g, float(g @ d))
        evaluations += 1
        tries += 1
    if bracket is None:  # out of evaluations while still extrapolating
        best = current if current.f < f0 else _Trial(0.0, f0, g0, slope0)
        return best.f, best.g, best.t, evaluations

    low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
    too_close_before = False
    while tries < max_evals:
        left, right = min(bracket[0].t, bracket[1].t), max(bracket[0].t, bracket[1].t)
        if (right - left) * d_size < tolerance:
            break
        t = cubic_minimizer(bracket[0], bracket[1])
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if too_close_before or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                too_close_before = False
            else:
                too_close_before = True
        else:
            too_close_before = False
        f, g = evaluate(t)
        current = _Trial(t, f, g, float(g @ d))
        evaluations += 1
        tries += 1
        if current.f > f0 + c1 * t * slope0 or current.f >= bracket[low].f:
            bracket[high] = current
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
            continue
        satisfied = abs(current.slope) <= -c2 * slope0
        if not satisfied and current.slope * (bracket[high].t - bracket[low].t) >= 0:
            bracket[high] = bracket[low]
        bracket[low] = current
        if satisfied:
            break
    best = bracket[low]
    return best.f, best.g, best.t, evaluations
