"""The two ways to march an ODE y' = f(t, y) over increasing times: fixed steps on a grid,
and adaptive steps chosen by an error controller.

Both take ``f(t: float, y: Tensor) -> Tensor`` and return the solution at each requested
time, computed with tensor ops so that gradients flow through the steps taken (the step
sizes themselves are constants).

Adaptive control (Hairer, Norsett and Wanner, Solving ODEs I, II.4). A step from (t, y) to
y1 is accepted when the error ratio

    r = norm(err / (atol + rtol max(|y|, |y1|))),   norm = root mean square

is at most 1, and the next step is h * clip(safety r^(-1/p), dfactor, ifactor), p the
order of the solution kept (a rejected step only shrinks). The requested times are read
off the accepted steps by the method's interpolant (dopri5's continuous extension), not
hit by shortening steps, except the last one, which the steps end on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.ode_tableaus import Tableau, interpolate, rk_step

__all__ = ["ADAPTIVE_OPTIONS", "FIXED_OPTIONS", "rms_norm", "solve_adaptive", "solve_fixed"]

FIXED_OPTIONS = {"step_size": None}
ADAPTIVE_OPTIONS = {"first_step": None, "max_num_steps": 100_000, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2}


def rms_norm(x) -> float:
    """sqrt(mean(x^2)) of an array (0 for an empty one)."""
    return float(backend.xp.sqrt(backend.xp.mean(x * x))) if x.size else 0.0


def fixed_grid(times: numpy.ndarray, step_size: float | None) -> numpy.ndarray:
    """The steps' end points: the requested times, and with ``step_size`` the points
    t_0 + i h too (one closer than h / 10^6 to a requested time is left out)."""
    if step_size is None:
        return times
    count = math.ceil((times[-1] - times[0]) / step_size)
    uniform = times[0] + step_size * numpy.arange(1, count)
    gap = numpy.abs(uniform[:, None] - times[None, :]).min(axis=1) if uniform.size else uniform
    return numpy.union1d(times, uniform[gap > step_size * 1e-6])


def solve_fixed(f: Callable, tableau: Tableau, times: numpy.ndarray, y0: Tensor,
                step_size: float | None) -> list[Tensor]:
    """y at each of ``times`` by fixed steps over :func:`fixed_grid`'s points."""
    grid = fixed_grid(times, step_size)
    wanted = set(times.tolist())
    y, outputs = y0, [y0]
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist()):
        y, _, _ = rk_step(f, tableau, t, y, t_next - t)
        if t_next in wanted:
            outputs.append(y)
    return outputs


def initial_step(f: Callable, order: int, t: float, y: Tensor, f0: Tensor, rtol: float, atol: float,
                 norm: Callable) -> float:
    """A first step whose error should be near the tolerance (Hairer et al., II.4): from the
    sizes of y, f(t, y) and a finite-difference second derivative; one more evaluation."""
    xp = backend.xp
    scale = atol + rtol * xp.abs(y.data)
    d0, d1 = norm(y.data / scale), norm(f0.data / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    with no_grad():
        f1 = f(t + h0, Tensor._wrap(y.data + h0 * f0.data)).data
    d2 = norm((f1 - f0.data) / scale) / h0
    largest = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if largest <= 1e-15 else (0.01 / largest) ** (1.0 / order)
    return min(100.0 * h0, h1)


def solve_adaptive(f: Callable, tableau: Tableau, times: numpy.ndarray, y0: Tensor, rtol: float, atol: float,
                   norm: Callable, options: dict, who: str = "odeint") -> list[Tensor]:
    """y at each of ``times`` by the embedded pair ``tableau`` (FSAL) under error control."""
    if len(times) == 1:
        return [y0]
    xp = backend.xp
    end = float(times[-1])
    t, y = float(times[0]), y0
    k1 = f(t, y)
    h = options["first_step"] or initial_step(f, tableau.order, t, y, k1, rtol, atol, norm)
    outputs, index, steps = [y0], 1, 0
    while index < len(times):
        last = h >= end - t
        if last:
            h = end - t
        if t + h == t:
            raise RuntimeError(f"{who}: the step size underflowed at t={t!r} (h={h!r}); the problem may be "
                               "stiff or the solution blow up there")
        steps += 1
        if steps > options["max_num_steps"]:
            raise RuntimeError(f"{who}: more than max_num_steps={options['max_num_steps']} steps before t={end!r} "
                               f"(reached t={t!r}); loosen rtol/atol or raise options['max_num_steps']")
        y_new, stages, error = rk_step(f, tableau, t, y, h, k1)
        ratio = norm(error / (atol + rtol * xp.maximum(xp.abs(y.data), xp.abs(y_new.data))))
        if ratio <= 1.0:
            t_new = end if last else t + h
            while index < len(times) and times[index] <= t_new:
                theta = (float(times[index]) - t) / h
                outputs.append(y_new if theta >= 1.0 else interpolate(tableau, y, y_new, stages, h, theta))
                index += 1
            t, y, k1 = t_new, y_new, stages[-1]
        h *= _step_factor(ratio, tableau.order, options)
    return outputs


def _step_factor(ratio: float, order: int, options: dict) -> float:
    """safety r^(-1/p), clipped to [dfactor, ifactor], at most 1 after a rejection."""
    if not math.isfinite(ratio):
        return options["dfactor"]
    if ratio == 0.0:
        return options["ifactor"]
    factor = min(options["ifactor"], max(options["dfactor"], options["safety"] * ratio ** (-1.0 / order)))
    return factor if ratio <= 1.0 else min(factor, 1.0)
