"""``odeint_adjoint``: :func:`odeint` whose gradients come from the adjoint method, with
memory that does not grow with the number of steps (Chen et al., 2018, section 2).

The forward solve keeps no graph, only the solution at the requested times. For a loss L
on those, the adjoint a(t) = dL/dy(t) and the parameter gradient g solve, backwards in time,

    dy/dt = f(t, y, theta),   da/dt = -a^T df/dy,   dg/dt = -a^T df/dtheta,

from g = 0 and a = dL/dy(t_N) at the last time; at each earlier requested time t_i the
adjoint jumps by dL/dy(t_i), and y restarts from the stored forward solution there. At t_0,
a = dL/dy0 and g = dL/dtheta. The vector-Jacobian products a^T df/dy and a^T df/dtheta
come from one backward pass through one evaluation of f; the augmented system is solved
with the same kind of solver (``adjoint_method``, ``adjoint_rtol``, ``adjoint_atol``), its
error norm the largest of the RMS norms of y, a and each parameter's g.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina.autograd import Function, Tensor, enable_grad, grad, no_grad
from lamina.functional.ode import Problem, odeint
from lamina.functional.shape import stack

__all__ = ["odeint_adjoint"]


def odeint_adjoint(func: Callable, y0, t, method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9,
                   options: dict | None = None, adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None, adjoint_options: dict | None = None,
                   adjoint_params=None):
    """:func:`odeint`'s solution, differentiated by the adjoint method.

    ``func`` is a module (its parameters that require grad get gradients) or, with
    ``adjoint_params`` (the tensors ``func`` reads that should get gradients), any callable.
    A module whose layers are not built yet is called once on (t[0], y0) to build them.
    ``adjoint_method``, ``adjoint_rtol`` and ``adjoint_atol`` default to the forward solve's,
    ``adjoint_options`` to ``options`` when the method is the same. The times get no gradient."""
    who = "odeint_adjoint"
    problem = Problem(func, y0, t, method, rtol, atol, options, who)
    if adjoint_params is None:
        if not callable(getattr(func, "parameters", None)) or not callable(getattr(func, "modules", None)):
            raise TypeError(f"{who}: func must be a Module (whose parameters get gradients) unless adjoint_params "
                            f"lists the tensors to differentiate, got {type(func).__name__}")
        _build(func, problem)
        params = [p for p in func.parameters() if p.requires_grad]
    else:
        params = list(adjoint_params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{who}: adjoint_params[{i}] must be a Tensor, got {type(p).__name__}")
    backward_method = adjoint_method or method
    if adjoint_options is None and backward_method == method:
        adjoint_options = options
    backward_problem = Problem(func, y0, t, backward_method, rtol if adjoint_rtol is None else adjoint_rtol,
                               atol if adjoint_atol is None else adjoint_atol, adjoint_options, who)
    solution = AdjointSolve.apply(problem.flat_y0, *params, problem=problem, backward_problem=backward_problem,
                                  params=params)
    return problem.unflatten(solution) if problem.is_tuple else solution


def _build(func, problem: Problem) -> None:
    """Call a module with unbuilt layers once, so that its parameters exist."""
    if all(m.built for m in func.modules()):
        return
    with no_grad():
        problem.flat_func(float(problem.times[0]), problem.flat_y0)


class AdjointSolve(Function):
    """The solution at every requested time as one node over (y0, parameters); backward
    solves the adjoint system. Keywords: ``problem`` (the forward :class:`Problem`),
    ``backward_problem`` (its method and tolerances for the adjoint), ``params``."""

    def forward(self, y0, *param_arrays):
        with no_grad():
            states = self.problem.solve(Tensor._wrap(y0))
        self.states = backend.xp.stack([s.data for s in states])
        return self.states

    def backward(self, dy):
        states, times, direction = self.states, self.problem.times, self.problem.direction
        adjoint = dy[-1].copy()
        param_grads = [backend.xp.zeros(p.shape, dtype=p.dtype) for p in self.params]
        for i in range(len(times) - 1, 0, -1):
            start = (Tensor._wrap(states[i]), Tensor._wrap(adjoint), *[Tensor._wrap(g) for g in param_grads])
            span = [direction * times[i], direction * times[i - 1]]
            with no_grad():
                ends = odeint(self._augmented, start, span, method=self.backward_problem.method,
                              rtol=self.backward_problem.rtol, atol=self.backward_problem.atol,
                              options=self.backward_problem.options, who="odeint_adjoint (backward)")
            adjoint = ends[1].data[-1] + dy[i - 1]
            param_grads = [g.data[-1] for g in ends[2:]]
        needs = self.needs_grad
        return (adjoint if needs[0] else None, *[g if need else None for g, need in zip(param_grads, needs[1:])])

    def composite(self, y0: Tensor, *params: Tensor) -> Tensor:
        """The same solution through the solver's steps (``func`` reads the parameters
        themselves): gradients of gradients differentiate this."""
        return stack(self.problem.solve(y0))

    backward_graph = Function.composite_backward_graph

    def _augmented(self, t: Tensor, state: tuple) -> tuple:
        """(f, -a^T df/dy, -a^T df/dtheta) at (t, y) for the adjoint a."""
        y, adjoint = state[0], state[1]
        with enable_grad():
            leaf = Tensor._wrap(y.data)
            leaf.requires_grad = True
            f = self.problem.flat_func(float(t.data) * self.problem.direction, leaf)
            if self.problem.direction < 0:
                f = -f                         # flat_func gives d/ds; the adjoint runs in t
            wanted = [leaf, *self.params]
            found = (grad(f, wanted, adjoint.data, allow_unused=True) if f.requires_grad
                     else [None] * len(wanted))
        vjps = [backend.xp.zeros(w.shape, dtype=w.dtype) if g is None else -g for g, w in zip(found, wanted)]
        return (Tensor._wrap(f.data), *[Tensor._wrap(v) for v in vjps])
