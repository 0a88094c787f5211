r"""L-BFGS: a quasi-Newton method for full-batch optimization.

The course notes ("Second-order optimization") point at the Hessian, the matrix of second
derivatives, which tells the curvature of the cost. Newton's method steps by
:math:`-H^{-1} \nabla J`; for a network with n weights H has n^2 entries, far too many to
form or invert. L-BFGS (Nocedal & Wright, *Numerical Optimization*, ch. 7) never forms
it: it keeps the last m pairs

    s_k = w_{k+1} - w_k            (how far the weights moved)
    y_k = g_{k+1} - g_k            (how much the gradient changed)

and applies an approximation of :math:`H^{-1}` built from them to the gradient in O(m n)
work (the *two-loop recursion*). A pair enters the memory only if it shows positive
curvature, :math:`y_k^T s_k > 10^{-10}`, which keeps the approximation positive definite.

The method needs the same cost at every evaluation, so it is meant for **full-batch**
training (all samples in every evaluation), not for the noisy mini-batch loop of
:class:`~lamina.train.Trainer`. ``step(closure)`` runs up to ``max_iter`` iterations; the
closure re-evaluates the cost (zero the gradients, forward, backward, return the cost).
The semantics are ``torch.optim.LBFGS``'s, followed iteration for iteration: see
:class:`LBFGS`.

The strong Wolfe line search is in :mod:`lamina.optim.lbfgs_line_search` (importable from here
too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lamina import backend, parallel
from lamina.autograd import Tensor
from lamina.autograd.graph import mark_modified
from lamina.optim.inplace import axpy
from lamina.optim.lbfgs_line_search import (  # noqa: F401  (moved there, importable from here too)
    BRACKET_TOLERANCE,
    WOLFE_C1,
    WOLFE_C2,
    _Trial,
    cubic_minimizer,
    strong_wolfe,
)
from lamina.optim.optimizer import Optimizer, ParamsLike

#: A pair (s, y) enters the memory only if y^T s exceeds this (positive curvature).
CURVATURE_THRESHOLD = 1e-10

_LINE_SEARCHES = (None, "strong_wolfe")


class LBFGS(Optimizer):
    r"""Limited-memory BFGS, as ``torch.optim.LBFGS``.

    All trainable parameters are viewed as one vector w (their gradients as one vector g).
    One :meth:`step` is up to ``max_iter`` iterations of:

    1. direction d: at the very first iteration :math:`d = -g`; afterwards the memory gains
       the pair (s, y) of the last iteration if :math:`y^T s > 10^{-10}` (the oldest pair
       leaves when ``history_size`` are kept), and :math:`d = -H g` by the two-loop
       recursion (N&W Algorithm 7.4) with :math:`\rho_i = 1/(y_i^T s_i)` and initial matrix
       :math:`H^0 = \gamma I`, :math:`\gamma = s^T y / y^T y` of the newest pair::

           q = -g
           for i newest .. oldest:  a_i = rho_i s_i.q;   q = q - a_i y_i
           r = gamma q
           for i oldest .. newest:  b = rho_i y_i.r;     r = r + (a_i - b) s_i
           d = r

    2. step length t: ``lr * min(1, 1/|g|_1)`` at the very first iteration (a safe first
       step before any curvature is known), ``lr`` afterwards; with
       ``line_search_fn="strong_wolfe"`` that t is only the first trial of a line search
       for a t meeting the strong Wolfe conditions (N&W Algorithms 3.5 and 3.6, cubic
       interpolation; :func:`strong_wolfe`). Then :math:`w = w + t d`.

    Stopping rules, checked in this order (the first two end the step before the move):

    - at the start of a step: :math:`\max|g| \le` ``tolerance_grad`` (already optimal);
    - :math:`g^T d > -` ``tolerance_change`` (d is not a descent direction);
    - after the move: ``max_iter`` iterations done, ``max_eval`` cost evaluations done in
      this step (default ``max_iter * 5 // 4``), :math:`\max|g| \le` ``tolerance_grad``,
      :math:`\max|t d| \le` ``tolerance_change`` or
      :math:`|J - J_{prev}| <` ``tolerance_change``.

    Without a line search the cost is re-evaluated after each move except the last one
    (the next step's first evaluation gives it). The memory, the last d and t and the
    iteration counters carry over from one step to the next (``memory``; saved by
    :meth:`state_dict`), so a second ``step`` continues the same run: it does not restart
    from a scaled gradient step.

    One parameter group only; no ``weight_decay`` (put a penalty such as
    :func:`lamina.optim.l2` in the cost the closure returns). Parameters that are not
    trainable take no part (their entries of g count as zero).

    Example::

        opt = LBFGS(model.parameters(), line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            cost = F.categorical_cross_entropy(model(x), y, from_logits=True)
            cost.backward()
            return cost

        for _ in range(10):
            opt.step(closure)
    """

    def __init__(self, params: ParamsLike, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None):
        if max_eval is None and _is_count(max_iter):
            max_eval = max_iter * 5 // 4
        super().__init__(params, lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, history_size=history_size,
                         line_search_fn=line_search_fn)
        #: What carries over between steps: counters, last direction and step, the (s, y) pairs.
        self.memory: dict[str, Any] = _empty_memory()

    # -- checks ------------------------------------------------------------------
    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["weight_decay"] != 0:
            raise ValueError(f"{self._name}: weight_decay is not supported (got {hp['weight_decay']!r}); add a "
                             "penalty such as lamina.optim.l2 to the cost the closure returns")
        for name in ("max_iter", "max_eval", "history_size"):
            if not _is_count(hp[name]):
                raise ValueError(f"{self._name}: invalid {name} {hp[name]!r} (must be a positive integer)")
        self._check_number("tolerance_grad", hp["tolerance_grad"], low=0.0)
        self._check_number("tolerance_change", hp["tolerance_change"], low=0.0)
        if hp["line_search_fn"] not in _LINE_SEARCHES:
            raise ValueError(f"{self._name}: invalid line_search_fn {hp['line_search_fn']!r} "
                             "(must be None or 'strong_wolfe')")

    def add_param_group(self, group: dict) -> None:
        """L-BFGS optimizes one vector: a second group is refused."""
        if self.param_groups:
            raise ValueError(f"{self._name}: supports a single parameter group, one is already set "
                             "(put every parameter in one group)")
        super().add_param_group(group)

    # -- the flat vector view of the parameters -------------------------------------
    def _flat_grad(self, params: list[Tensor]):
        """g: every parameter's gradient, flattened and concatenated (zeros where there is none)."""
        xp = backend.xp
        dtype = xp.result_type(*[p.data.dtype for p in params])
        parts = []
        for p in params:
            grad = p.grad
            if grad is None or not getattr(p, "trainable", True):
                parts.append(xp.zeros(p.data.size, dtype=dtype))
            else:
                grad = grad.data if isinstance(grad, Tensor) else grad
                parts.append(xp.asarray(grad, dtype=dtype).ravel())
        return xp.concatenate(parts)

    def _move(self, params: list[Tensor], t: float, d) -> None:
        """w = w + t d, in place, parameter by parameter."""
        offset = 0
        for p in params:
            n = p.data.size
            if getattr(p, "trainable", True):
                axpy(t, d[offset:offset + n].reshape(p.data.shape), p.data)
            offset += n
        mark_modified(*params)

    def _evaluator_along(self, closure: Callable[[], Any], params: list[Tensor], d) -> Callable:
        """``evaluate(t)``: the cost and flat gradient at w + t d, for the line search; puts
        the weights back to w afterwards."""
        start = [p.data.copy() for p in params]

        def evaluate(t: float) -> tuple[float, Any]:
            self._move(params, t, d)
            cost = _cost_value(closure(), self._name)
            grad = self._flat_grad(params)
            for p, w in zip(params, start):
                p.data[...] = w
            mark_modified(*params)
            return cost, grad

        return evaluate

    # -- stepping ----------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Up to ``max_iter`` L-BFGS iterations; returns the cost of the first evaluation
        (before any move), as the closure returned it."""
        if closure is None:
            raise ValueError(f"{self._name}.step: a closure is required: a function that zeroes the gradients, "
                             "computes the cost on the full batch, calls backward() and returns the cost")
        self._resolve()
        with parallel.one_blas_thread():
            return self._iterate(closure)

    def _iterate(self, closure: Callable[[], Any]) -> Any:
        xp = backend.xp
        group = self.param_groups[0]
        params = group["params"]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        memory = self.memory
        self.step_count += 1

        first_loss = closure()
        loss = _cost_value(first_loss, self._name)
        g = self._flat_grad(params)
        evaluations = 1
        memory["func_evals"] += 1
        if _max_abs(g) <= tolerance_grad:
            return first_loss

        d, t = memory["direction"], memory["step_length"]
        s_history, y_history, rho_history = memory["s"], memory["y"], memory["rho"]
        gamma, prev_grad, prev_loss = memory["gamma"], memory["prev_grad"], memory["prev_loss"]
        for iteration in range(1, max_iter + 1):
            memory["n_iter"] += 1
            if memory["n_iter"] == 1:
                d = -g
                s_history, y_history, rho_history = [], [], []
                gamma = 1.0
            else:
                y = g - prev_grad
                s = t * d
                ys = float(y @ s)
                if ys > CURVATURE_THRESHOLD:
                    if len(s_history) == group["history_size"]:
                        del s_history[0], y_history[0], rho_history[0]
                    s_history.append(s)
                    y_history.append(y)
                    rho_history.append(1.0 / ys)
                    gamma = ys / float(y @ y)
                d = two_loop_direction(g, s_history, y_history, rho_history, gamma)
            prev_grad, prev_loss = g, loss

            t = lr * min(1.0, 1.0 / float(xp.abs(g).sum())) if memory["n_iter"] == 1 else lr
            gtd = float(g @ d)
            if gtd > -tolerance_change:
                break

            if group["line_search_fn"] == "strong_wolfe":
                evaluate = self._evaluator_along(closure, params, d)
                loss, g, t, spent = strong_wolfe(evaluate, t, d, loss, g, gtd, max_evals=max_eval - evaluations)
                self._move(params, t, d)
                optimal = _max_abs(g) <= tolerance_grad
            else:
                self._move(params, t, d)
                spent, optimal = 0, False
                if iteration != max_iter:  # the last iteration's cost is the next step's first evaluation
                    loss = _cost_value(closure(), self._name)
                    g = self._flat_grad(params)
                    optimal = _max_abs(g) <= tolerance_grad
                    spent = 1
            evaluations += spent
            memory["func_evals"] += spent

            if (iteration == max_iter or evaluations >= max_eval or optimal
                    or _max_abs(d) * abs(t) <= tolerance_change or abs(loss - prev_loss) < tolerance_change):
                break

        memory.update(direction=d, step_length=t, s=s_history, y=y_history, rho=rho_history, gamma=gamma,
                      prev_grad=prev_grad, prev_loss=prev_loss)
        return first_loss

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base snapshot (hyperparameters, step count) plus ``memory``: the iteration and
        evaluation counters, the last direction, step length, gradient and cost, gamma and
        the (s, y, rho) history, as NumPy copies and plain numbers."""
        saved = super().state_dict()
        memory = self.memory
        vectors = {key: _host_copy(memory[key]) for key in ("direction", "prev_grad")}
        saved["memory"] = {
            "func_evals": memory["func_evals"], "n_iter": memory["n_iter"],
            "step_length": _float_or_none(memory["step_length"]), "gamma": _float_or_none(memory["gamma"]),
            "prev_loss": _float_or_none(memory["prev_loss"]),
            **vectors,
            "s": [_host_copy(v) for v in memory["s"]], "y": [_host_copy(v) for v in memory["y"]],
            "rho": [float(r) for r in memory["rho"]],
        }
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also after a JSON round trip: arrays as lists).
        Checks every saved vector's length against the parameters before changing anything."""
        self._resolve()
        memory = self._restored_memory(state_dict.get("memory"))
        super().load_state_dict({**state_dict, "state": {}})
        self.memory = memory

    def _restored_memory(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        if saved is None:
            return _empty_memory()
        xp = backend.xp
        params = self.params
        size = sum(p.data.size for p in params)
        dtype = xp.result_type(*[p.data.dtype for p in params])

        def vector(value, name: str):
            if value is None:
                return None
            arr = xp.asarray(value, dtype=dtype)
            if arr.shape != (size,):
                raise ValueError(f"{self._name}.load_state_dict: {name} has shape {tuple(arr.shape)}, the "
                                 f"parameters hold {size} values (expected ({size},))")
            return arr

        direction, prev_grad = vector(saved["direction"], "direction"), vector(saved["prev_grad"], "prev_grad")
        s = [vector(v, "an s vector") for v in saved["s"]]
        y = [vector(v, "a y vector") for v in saved["y"]]
        rho = [float(r) for r in saved["rho"]]
        if not len(s) == len(y) == len(rho):
            raise ValueError(f"{self._name}.load_state_dict: the history has {len(s)} s, {len(y)} y and "
                             f"{len(rho)} rho entries (expected as many of each)")
        return {
            "func_evals": int(saved["func_evals"]), "n_iter": int(saved["n_iter"]),
            "direction": direction, "step_length": _float_or_none(saved["step_length"]),
            "s": s, "y": y, "rho": rho, "gamma": _float_or_none(saved["gamma"]),
            "prev_grad": prev_grad, "prev_loss": _float_or_none(saved["prev_loss"]),
        }


def two_loop_direction(g, s_history: list, y_history: list, rho_history: list[float], gamma: float):
    r"""d = -H g by the two-loop recursion (N&W Algorithm 7.4), H the L-BFGS approximation of
    the inverse Hessian from the pairs (s_i, y_i), oldest first, and :math:`H^0 = \gamma I`."""
    q = -g
    alphas = []
    for s, y, rho in zip(reversed(s_history), reversed(y_history), reversed(rho_history)):
        a = rho * float(s @ q)
        axpy(-a, y, q)
        alphas.append(a)
    r = q * gamma
    for s, y, rho, a in zip(s_history, y_history, rho_history, reversed(alphas)):
        b = rho * float(y @ r)
        axpy(a - b, s, r)
    return r


def _empty_memory() -> dict[str, Any]:
    return {"func_evals": 0, "n_iter": 0, "direction": None, "step_length": None, "s": [], "y": [], "rho": [],
            "gamma": None, "prev_grad": None, "prev_loss": None}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _cost_value(cost: Any, name: str) -> float:
    """The closure's cost as a Python float (a scalar tensor, array or number)."""
    if isinstance(cost, Tensor):
        cost = cost.item()
    try:
        return float(cost)
    except (TypeError, ValueError):
        raise ValueError(f"{name}.step: the closure must return the cost (a scalar), "
                         f"got {type(cost).__name__}") from None


def _max_abs(v) -> float:
    return float(backend.xp.abs(v).max()) if v.size else 0.0


def _host_copy(v):
    if v is None:
        return None
    host = backend.to_numpy(v)
    return host.copy() if host is v else host


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
