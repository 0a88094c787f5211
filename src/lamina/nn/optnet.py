"""OptNet: a quadratic program as a layer (Amos & Kolter 2017, "OptNet: Differentiable Optimization
as a Layer in Neural Networks").

The layer maps its input x (batch, n_vars) to

    z*(x) = argmin_z 1/2 z^T Q z + x^T z   s.t.   G z <= h,   A z = b,

with learned Q = L L^T + eps I (L lower triangular), G, A, and the right-hand sides kept feasible
by construction as in the paper: h = G z0 + |s0|, b = A z0 for a learned point z0 and slack s0,
so z0 satisfies every constraint. The solve and its gradient (implicit differentiation of the KKT
conditions) are :func:`lamina.functional.qp_solve`. A right-hand side ``h`` given to the call
(shared or one per sample) replaces the learned one.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["OptNetLayer"]


@register_layer
class OptNetLayer(Module):
    """The QP layer z*(x) of the module docstring; parameters ``L`` (n, n), ``G`` (m, n), ``z0`` (n,),
    ``s0`` (m,) and ``A`` (k, n) for n = ``n_vars``, m = ``n_ineq``, k = ``n_eq``."""

    default_name = "optnet"

    def __init__(self, n_vars: int, n_ineq: int, n_eq: int = 0, eps: float = 1e-4, seed: int = 0,
                 name: str | None = None):
        super().__init__(name=name)
        self.n_vars = positive_int(n_vars, "OptNetLayer: n_vars")
        if isinstance(n_ineq, bool) or not isinstance(n_ineq, int) or n_ineq < 0:
            raise ValueError(f"OptNetLayer: n_ineq must be an integer >= 0, got {n_ineq!r}")
        if isinstance(n_eq, bool) or not isinstance(n_eq, int) or not 0 <= n_eq < n_vars:
            raise ValueError(f"OptNetLayer: n_eq must be an integer in [0, n_vars) = [0, {n_vars}), got {n_eq!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"OptNetLayer: eps must be a positive number, got {eps!r}")
        self.n_ineq, self.n_eq, self.eps, self.seed = n_ineq, n_eq, float(eps), seed
        dtype = backend.get_default_dtype()
        rng = np.random.default_rng(seed)
        n = self.n_vars
        self.add_parameter("L", backend.xp.asarray(np.eye(n), dtype=dtype))
        self.add_parameter("G", backend.xp.asarray(rng.standard_normal((n_ineq, n)) / np.sqrt(n), dtype=dtype))
        self.add_parameter("z0", backend.xp.zeros(n, dtype=dtype))
        self.add_parameter("s0", backend.xp.ones(n_ineq, dtype=dtype))
        self.add_parameter("A", backend.xp.asarray(rng.standard_normal((n_eq, n)) / np.sqrt(n), dtype=dtype))
        self.built = True

    def matrices(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(Q, G, h, A, b) of the layer's QP, on the graph."""
        n, dtype = self.n_vars, self.L.dtype
        L = self.L * Tensor(np.tril(np.ones((n, n))), dtype=dtype)
        Q = L @ L.T + Tensor(self.eps * np.eye(n), dtype=dtype)
        h = F.matmul(self.G, self.z0) + F.abs(self.s0)
        b = F.matmul(self.A, self.z0)
        return Q, self.G, h, self.A, b

    def forward(self, x, h=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.n_vars:
            raise input_error(self, x, f"(batch, {self.n_vars}) or ({self.n_vars},)")
        Q, G, learned_h, A, b = self.matrices()
        h = learned_h if h is None else as_tensor(h)
        if self.n_ineq == 0:
            G = h = None
        if self.n_eq == 0:
            A = b = None
        return F.qp_solve(Q, x, G, h, A, b)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"n_vars": self.n_vars, "n_ineq": self.n_ineq, "n_eq": self.n_eq, "eps": self.eps,
                "seed": self.seed, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.n_vars}, n_ineq={self.n_ineq}, n_eq={self.n_eq}"
