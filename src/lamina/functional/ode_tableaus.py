"""Explicit Runge-Kutta methods as Butcher tableaus, and one step of any of them.

A method with stages s computes, from y at t and a step h,

    k_i = f(t + c_i h, y + h sum_{j<i} a_ij k_j),   y_new = y + h sum_i b_i k_i,

and an embedded pair also gives the error estimate h sum_i e_i k_i (e = b - b*, b* the
weights of the lower-order solution). A method whose last stage is f(t + h, y_new) is
"first same as last" (FSAL): that stage is the next step's k_1, so a step costs s - 1
evaluations.

The stages are computed with tensor ops, so gradients flow through a step; the error
estimate is read from the arrays, since only the step-size controller uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction as F

from lamina.autograd import Tensor

__all__ = ["ADAPTIVE", "FIXED", "Tableau", "interpolate", "rk_step"]


@dataclass(frozen=True)
class Tableau:
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]   # a[i] holds a_{i+1, 0..i}: the weights of stage i + 1
    b: tuple[float, ...]
    error: tuple[float, ...] | None = None   # b - b*, for an embedded pair
    order: int = 1                            # the order of the solution kept
    fsal: bool = False
    dense: tuple[float, ...] | None = None    # the continuous extension's d_i (dopri5)


def _floats(*values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


EULER = Tableau(c=(0.0,), a=(), b=(1.0,), order=1)

MIDPOINT = Tableau(c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0), order=2)

# Kutta's 3/8 rule (torchdiffeq's "rk4"): fourth order, as the classic RK4.
RK4_38 = Tableau(
    c=_floats(0, F(1, 3), F(2, 3), 1),
    a=(_floats(F(1, 3)), _floats(F(-1, 3), 1), _floats(1, -1, 1)),
    b=_floats(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
    order=4,
)

# Bogacki and Shampine's 3(2) pair, FSAL.
BOSH3 = Tableau(
    c=_floats(0, F(1, 2), F(3, 4), 1),
    a=(_floats(F(1, 2)), _floats(0, F(3, 4)), _floats(F(2, 9), F(1, 3), F(4, 9))),
    b=_floats(F(2, 9), F(1, 3), F(4, 9), 0),
    error=_floats(F(2, 9) - F(7, 24), F(1, 3) - F(1, 4), F(4, 9) - F(1, 3), -F(1, 8)),
    order=3,
    fsal=True,
)

_DOPRI5_B = (F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0))
_DOPRI5_B_LOW = (F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40))

# Dormand and Prince's 5(4) pair, FSAL, with Hairer's fourth-order continuous extension.
DOPRI5 = Tableau(
    c=_floats(0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1),
    a=(
        _floats(F(1, 5)),
        _floats(F(3, 40), F(9, 40)),
        _floats(F(44, 45), F(-56, 15), F(32, 9)),
        _floats(F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)),
        _floats(F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)),
        _floats(*_DOPRI5_B[:6]),
    ),
    b=_floats(*_DOPRI5_B),
    error=_floats(*(hi - lo for hi, lo in zip(_DOPRI5_B, _DOPRI5_B_LOW))),
    order=5,
    fsal=True,
    dense=_floats(F(-12715105075, 11282082432), 0, F(87487479700, 32700410799), F(-10690763975, 1880347072),
                  F(701980252875, 199316789632), F(-1453857185, 822651844), F(69997945, 29380423)),
)

FIXED = {"euler": EULER, "midpoint": MIDPOINT, "rk4": RK4_38}
ADAPTIVE = {"dopri5": DOPRI5, "bosh3": BOSH3}


def _weighted_sum(weights, stages: list[Tensor]) -> Tensor | None:
    """sum_i w_i k_i, skipping the zero weights (None if all are zero)."""
    total = None
    for w, k in zip(weights, stages):
        if w != 0.0:
            term = k * w
            total = term if total is None else total + term
    return total


def _combine(y: Tensor, h: float, weights, stages: list[Tensor]) -> Tensor:
    """y + h sum_i w_i k_i."""
    total = _weighted_sum(weights, stages)
    return y if total is None else y + total * h


def rk_step(func: Callable, tableau: Tableau, t: float, y: Tensor, h: float, k1: Tensor | None = None):
    """One step from (t, y): ``(y_new, stages, error)``, the error estimate an array (None
    for a method without an embedded pair). ``k1`` = f(t, y) when already known (FSAL)."""
    stages = [func(t, y) if k1 is None else k1]
    for c, weights in zip(tableau.c[1:], tableau.a):
        if tableau.fsal and len(stages) == len(tableau.c) - 1:
            y_new = _combine(y, h, weights, stages)       # the last row of a is b
            stages.append(func(t + c * h, y_new))
            break
        stages.append(func(t + c * h, _combine(y, h, weights, stages)))
    else:
        y_new = _combine(y, h, tableau.b, stages)
    error = None
    if tableau.error is not None:
        error = sum(e * k.data for e, k in zip(tableau.error, stages) if e != 0.0) * h
    return y_new, stages, error


def interpolate(tableau: Tableau, y0: Tensor, y1: Tensor, stages: list[Tensor], h: float, theta: float) -> Tensor:
    """The solution at t + theta h inside an accepted step, 0 < theta < 1.

    With D = y1 - y0, B = h k_1 - D and C = D - h f(t + h, y1) - B,

        y(theta) = y0 + theta (D + (1 - theta) (B + theta (C + (1 - theta) E))),

    which for E = 0 is the cubic Hermite interpolant of y0, y1 and their slopes (used by
    bosh3, third order), and for dopri5, with E = h sum_i d_i k_i, Hairer's fourth-order
    continuous extension (Hairer, Norsett and Wanner, Solving ODEs I, II.6)."""
    diff = y1 - y0
    start_slope = stages[0] * h - diff
    end_curve = diff - stages[-1] * h - start_slope
    inner = end_curve
    if tableau.dense is not None:
        inner = inner + _weighted_sum(tableau.dense, stages) * (h * (1.0 - theta))
    return y0 + (diff + (start_slope + inner * theta) * (1.0 - theta)) * theta
