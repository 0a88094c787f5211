"""``DEQ``: a deep equilibrium layer, z* = f(z*, x) found by a fixed-point solver and
differentiated implicitly (see :func:`lamina.functional.deq_fixed_point`)."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.deq import GRADIENTS, DEQStats, deq_fixed_point, jacobian_penalty
from lamina.functional.fixed_point import SOLVERS
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DEQ"]


@register_layer
class DEQ(Module):
    """The equilibrium z* = ``f(z*, x)`` of the module ``f`` for the input x (``forward(x, z0=None)``,
    z0 zeros of x's shape by default: give f an input already mapped to the state's size).

    ``solver`` ('anderson', 'broyden' or 'fixed_point'), ``tol``, ``max_iter`` and the solver's
    other keywords in ``solver_options`` find z*; the backward pass solves the implicit
    gradient's fixed point with ``backward_solver``, ``backward_tol``, ``backward_max_iter``
    (the forward ones by default). ``gradient='phantom'`` uses the Jacobian-free gradient
    (``phantom_steps`` recorded steps of f from z*, damped by ``phantom_damping``).

    With ``jacobian_samples`` > 0, each training call also sets ``jacobian_loss``: Hutchinson's
    estimate of ||df/dz||_F^2 / dim at z* (Bai et al. 2021) from that many random vectors, to
    be added (weighted) to the loss to keep f contractive; None otherwise. ``stats`` holds the
    last call's solver results (:class:`~lamina.functional.DEQStats`).
    """

    def __init__(self, f: Module, solver: str = "anderson", tol: float = 1e-4, max_iter: int = 30,
                 solver_options: dict | None = None, backward_solver: str | None = None,
                 backward_tol: float | None = None, backward_max_iter: int | None = None,
                 gradient: str = "implicit", phantom_steps: int = 1, phantom_damping: float = 1.0,
                 jacobian_samples: int = 0, raise_on_failure: bool = False, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(f, Module):
            raise TypeError(f"DEQ: f must be a Module taking (z, x), got {type(f).__name__}")
        for what, value in (("solver", solver), ("backward_solver", backward_solver)):
            if value is not None and value not in SOLVERS:
                raise ValueError(f"DEQ: unknown {what} {value!r}; expected one of {sorted(SOLVERS)}")
        if gradient not in GRADIENTS:
            raise ValueError(f"DEQ: gradient must be one of {GRADIENTS}, got {gradient!r}")
        if isinstance(jacobian_samples, bool) or not isinstance(jacobian_samples, int) or jacobian_samples < 0:
            raise ValueError(f"DEQ: jacobian_samples must be an int >= 0, got {jacobian_samples!r}")
        self.f = f
        self.solver, self.tol, self.max_iter = solver, tol, max_iter
        self.solver_options = dict(solver_options or {})
        self.backward_solver, self.backward_tol, self.backward_max_iter = backward_solver, backward_tol, \
            backward_max_iter
        self.gradient, self.phantom_steps, self.phantom_damping = gradient, phantom_steps, phantom_damping
        self.jacobian_samples, self.raise_on_failure = jacobian_samples, bool(raise_on_failure)
        self.stats = DEQStats()
        self.jacobian_loss = None

    def forward(self, x, z0=None) -> Tensor:
        x = as_tensor(x)
        if z0 is None:
            z0 = Tensor._wrap(backend.xp.zeros(x.shape, dtype=x.dtype))
        if not all(m.built for m in self.f.modules()):
            with no_grad():
                self.f(as_tensor(z0), x)          # let f's layers create their weights
        self.stats = DEQStats()
        params = [p for p in self.f.parameters() if p.requires_grad]
        z = deq_fixed_point(self.f, x, z0, params, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
                            solver_options=self.solver_options, backward_solver=self.backward_solver,
                            backward_tol=self.backward_tol, backward_max_iter=self.backward_max_iter,
                            gradient=self.gradient, phantom_steps=self.phantom_steps,
                            phantom_damping=self.phantom_damping, raise_on_failure=self.raise_on_failure,
                            stats=self.stats)
        self.jacobian_loss = None
        if self.training and self.jacobian_samples:
            self.jacobian_loss = jacobian_penalty(self.f, z.detach(), x, samples=self.jacobian_samples)
        return z

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"f": layer_to_config(self.f), "solver": self.solver, "tol": self.tol, "max_iter": self.max_iter,
                "solver_options": self.solver_options, "backward_solver": self.backward_solver,
                "backward_tol": self.backward_tol, "backward_max_iter": self.backward_max_iter,
                "gradient": self.gradient, "phantom_steps": self.phantom_steps,
                "phantom_damping": self.phantom_damping, "jacobian_samples": self.jacobian_samples,
                "raise_on_failure": self.raise_on_failure, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> DEQ:
        config = dict(config)
        return cls(layer_from_config(config.pop("f")), **config)

    def extra_repr(self) -> str:
        return f"solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, gradient={self.gradient!r}"
