"""``odeint``: the solution of an initial value problem y' = f(t, y), y(t_0) = y_0, at given
times, differentiable through the solver's steps (torchdiffeq's interface; Chen et al., 2018,
"Neural ordinary differential equations").

Methods: the fixed-step ``euler`` (order 1), ``midpoint`` (2) and ``rk4`` (4, Kutta's 3/8
rule, as torchdiffeq's), and the adaptive ``dopri5`` (Dormand-Prince 5(4)) and ``bosh3``
(Bogacki-Shampine 3(2)); see :mod:`lamina.functional.ode_solvers` for the step-size control
and :mod:`lamina.functional.ode_tableaus` for the methods.

The state is a tensor, or a tuple of tensors solved together (then ``func`` receives and
returns tuples, and the error norm is the largest of the parts' RMS norms). Times may
decrease: the problem is then solved in s = -t.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.ode_solvers import ADAPTIVE_OPTIONS, FIXED_OPTIONS, rms_norm, solve_adaptive, solve_fixed
from lamina.functional.ode_tableaus import ADAPTIVE, FIXED
from lamina.functional.shape import concat, stack

__all__ = ["METHODS", "odeint"]

METHODS = sorted(FIXED) + sorted(ADAPTIVE)


def odeint(func: Callable, y0, t, method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9,
           options: dict | None = None, who: str = "odeint"):
    """y(t_i) for every time of ``t``, stacked on a new first axis (``y0``'s shape after it; a
    tuple of such stacks for a tuple ``y0``).

    ``func(t, y)`` (a module or any callable) gives dy/dt for a 0-d tensor ``t`` and a state
    ``y`` shaped as ``y0``. ``t`` is a 1-D array, list or tensor of strictly increasing or
    strictly decreasing times, ``t[0]`` the initial time. ``options``: ``step_size`` for the
    fixed-step methods (default: one step between consecutive times; with it, steps of that
    size, cut short to land on every requested time); ``first_step``, ``max_num_steps``,
    ``safety``, ``ifactor``, ``dfactor`` for the adaptive ones. ``rtol``/``atol`` are the
    adaptive methods' tolerances.

    Gradients reach ``y0`` and whatever ``func`` reads (a module's parameters) by
    back-propagation through every step; :func:`odeint_adjoint` gets them with memory that
    does not grow with the number of steps."""
    problem = Problem(func, y0, t, method, rtol, atol, options, who)
    return problem.unpack_solution(problem.solve(problem.flat_y0))


class Problem:
    """A checked initial value problem, with the state as one tensor (tuple states are
    flattened into one vector) and the times made increasing."""

    def __init__(self, func, y0, t, method, rtol, atol, options, who):
        self.func, self.who = func, who
        if not callable(func):
            raise TypeError(f"{who}: func must be callable as func(t, y), got {type(func).__name__}")
        self.is_tuple = isinstance(y0, (tuple, list))
        parts = tuple(y0) if self.is_tuple else (y0,)
        if not parts:
            raise ValueError(f"{who}: y0 is an empty tuple")
        for i, part in enumerate(parts):
            if not isinstance(part, Tensor):
                raise TypeError(f"{who}: y0{f'[{i}]' if self.is_tuple else ''} must be a lamina Tensor, "
                                f"got {type(part).__name__}")
            if part.dtype.kind != "f":
                raise TypeError(f"{who}: y0 must be floating point, got dtype {part.dtype}")
        self.shapes = [part.shape for part in parts]
        self.dtype = parts[0].dtype
        self.flat_y0 = concat([p.reshape(-1) for p in parts]) if self.is_tuple else parts[0]
        self.times, self.direction = check_times(t, who)
        self.method = check_method(method, who)
        self.options = check_options(method, options, who)
        self.rtol, self.atol = check_tolerances(rtol, atol, who)
        self.sizes = [int(numpy.prod(shape)) for shape in self.shapes]

    def solve(self, flat_y0: Tensor) -> list[Tensor]:
        """The (flat) state at every time."""
        if self.method in FIXED:
            return solve_fixed(self.flat_func, FIXED[self.method], self.times, flat_y0, self.options["step_size"])
        return solve_adaptive(self.flat_func, ADAPTIVE[self.method], self.times, flat_y0, self.rtol, self.atol,
                              self.norm, self.options, self.who)

    def flat_func(self, s: float, y: Tensor) -> Tensor:
        """dy/ds for s = direction * t, on the flat state; checks what ``func`` returns."""
        time = Tensor._wrap(backend.xp.asarray(self.direction * s, dtype=self.dtype))
        out = self.func(time, self.unflatten(y) if self.is_tuple else y)
        self._check_output(out)
        if self.is_tuple:
            out = concat([o.reshape(-1) for o in out])
        return -out if self.direction < 0 else out

    def unflatten(self, flat: Tensor) -> tuple:
        """A flat state (or a stack of them on axis 0) as the tuple of parts."""
        lead, parts, start = flat.shape[:-1], [], 0
        for size, shape in zip(self.sizes, self.shapes):
            parts.append(flat[..., start:start + size].reshape(*lead, *shape))
            start += size
        return tuple(parts)

    def norm(self, x) -> float:
        """RMS norm of an error vector; for a tuple state the largest of the parts'."""
        if not self.is_tuple:
            return rms_norm(x)
        bounds = numpy.cumsum([0] + self.sizes)
        return max(rms_norm(x[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:]))

    def unpack_solution(self, states: list[Tensor]):
        solution = stack(states)
        return self.unflatten(solution) if self.is_tuple else solution

    def _check_output(self, out) -> None:
        expected = "a tuple of tensors shaped as y0's parts" if self.is_tuple else "a Tensor shaped as y0"
        got = [out] if not self.is_tuple else list(out) if isinstance(out, (tuple, list)) else None
        if got is None or len(got) != len(self.shapes) or not all(isinstance(o, Tensor) for o in got):
            raise TypeError(f"{self.who}: func(t, y) must return {expected}, got {_describe(out)}")
        for i, (o, shape) in enumerate(zip(got, self.shapes)):
            if o.shape != shape:
                part = f"part {i}" if self.is_tuple else "a tensor"
                raise ShapeError(f"{self.who}: func(t, y) returned {part} of shape {o.shape} for a state of shape "
                                 f"{shape}; dy/dt must have the state's shape")


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a Tensor of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__


def check_times(t, who: str) -> tuple[numpy.ndarray, float]:
    """The times as float64, made increasing, and the direction (1 or -1)."""
    times = numpy.asarray(backend.to_numpy(t.data) if isinstance(t, Tensor) else t, dtype=numpy.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"{who}: t must be a 1-D array of times, got shape {times.shape}")
    if not numpy.isfinite(times).all():
        raise ValueError(f"{who}: t must hold finite times, got {times.tolist()}")
    steps = numpy.diff(times)
    direction = -1.0 if steps.size and steps[0] < 0 else 1.0
    bad = numpy.flatnonzero(steps * direction <= 0)
    if bad.size:
        i = int(bad[0])
        order = "decreasing" if direction < 0 else "increasing"
        raise ValueError(f"{who}: t must be strictly increasing or strictly decreasing; t[0..1] are {order} but "
                         f"t[{i}]={float(times[i])!r}, t[{i + 1}]={float(times[i + 1])!r}")
    return times * direction, direction


def check_method(method, who: str) -> str:
    if method not in FIXED and method not in ADAPTIVE:
        raise ValueError(f"{who}: unknown method {method!r}; expected one of {METHODS}")
    return method


def check_options(method: str, options: dict | None, who: str) -> dict:
    """The method's options with their defaults filled in; an unknown key raises."""
    defaults = FIXED_OPTIONS if method in FIXED else ADAPTIVE_OPTIONS
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{who}: unknown option(s) {unknown} for method {method!r}; it takes {sorted(defaults)}")
    merged = {**defaults, **options}
    for key in ("step_size", "first_step"):
        value = merged.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{who}: options[{key!r}] must be a positive number, got {value!r}")
    return merged


def check_tolerances(rtol, atol, who: str) -> tuple[float, float]:
    rtol, atol = float(rtol), float(atol)
    if rtol < 0 or atol < 0 or rtol + atol == 0:
        raise ValueError(f"{who}: rtol and atol must be >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    return rtol, atol
