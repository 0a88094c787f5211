r"""Regularization via the cost function: penalty terms R to add to the cost.

Course notes, "Regularization via cost function"::

    J = (1/m) sum_j L(y_hat, y) + R

    L2 (weight decay):  R = lambda * sum w^2          (default lambda: 0.01)
    L1:                 R = lambda * sum |w|
    Elastic net:        R = lambda_L1 * sum |w| + lambda_L2 * sum w^2

The 1/m averages the loss only; R carries no 1/m and no 1/2 (Keras's convention too),
so the gradient of the L2 term is :math:`2\lambda w` and that of the L1 term
:math:`\lambda\,\mathrm{sign}(w)` (0 at w = 0). Note ``weight_decay=wd`` in the
optimizers adds ``wd*w`` to the gradient, i.e. it equals ``l2(wd/2)``.

"Regularizing bias parameters: not often, doesn't have a big impact": biases are left
out unless ``include_bias=True``. A parameter counts as a bias when its (last) name is
``b`` or ends with ``bias``, or when it has fewer than 2 dimensions (this also leaves
out batch-norm's scale and shift, as is usual). Given a plain list of parameters (no
names), the 1-D (and 0-D) ones are treated as biases.

Each function returns a callable ``reg(model_or_params) -> Tensor``; the term is built
from lamina ops, so ``(loss + reg(model)).backward()`` differentiates it.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.module import Module

ParamsOrModel = Module | Tensor | Iterable[Tensor] | Iterable[tuple[str, Tensor]]


def is_bias(name: str | None, param: Tensor) -> bool:
    """Whether a parameter is a bias for regularization (see the module docstring)."""
    if param.ndim < 2:
        return True
    if name is None:
        return False
    last = name.rsplit(".", 1)[-1]
    return last == "b" or last.endswith("bias")


class Regularizer:
    r"""The elastic-net penalty :math:`R = \lambda_{L1}\sum|w| + \lambda_{L2}\sum w^2`
    over the selected parameters (L1 or L2 alone when the other coefficient is 0)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0, include_bias: bool = False):
        for name, value in (("l1", l1), ("l2", l2)):
            if not (isinstance(value, numbers.Real) and value >= 0):
                raise ValueError(f"Regularizer: invalid {name} coefficient {value!r} (must be >= 0)")
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.include_bias = bool(include_bias)

    def parameters(self, model_or_params: ParamsOrModel) -> list[Tensor]:
        """The parameters the penalty covers (biases dropped unless ``include_bias``)."""
        if isinstance(model_or_params, Module):
            named: Iterable = model_or_params.named_parameters()
        elif isinstance(model_or_params, Tensor):
            named = [(None, model_or_params)]
        else:
            named = [(item[0], item[1]) if isinstance(item, tuple) else (None, item) for item in model_or_params]
        return [p for name, p in named if self.include_bias or not is_bias(name, p)]

    def __call__(self, model_or_params: ParamsOrModel) -> Tensor:
        total = None
        for p in self.parameters(model_or_params):
            term = None
            if self.l1:
                term = self.l1 * p.abs().sum()
            if self.l2:
                sq = self.l2 * (p * p).sum()
                term = sq if term is None else term + sq
            if term is not None:
                total = term if total is None else total + term
        if total is None:
            return Tensor(backend.xp.zeros((), dtype=backend.get_default_dtype()))
        return total

    def __repr__(self) -> str:
        return f"Regularizer(l1={self.l1}, l2={self.l2}, include_bias={self.include_bias})"


def l2(lam: float = 0.01, include_bias: bool = False) -> Regularizer:
    r"""L2 regularization (weight decay): :math:`R = \lambda \sum w^2`, gradient
    :math:`2\lambda w` (course notes' formula and default :math:`\lambda = 0.01`)."""
    return Regularizer(l2=lam, include_bias=include_bias)


def l1(lam: float = 0.01, include_bias: bool = False) -> Regularizer:
    r"""L1 regularization: :math:`R = \lambda \sum |w|`, gradient :math:`\lambda\,\mathrm{sign}(w)`."""
    return Regularizer(l1=lam, include_bias=include_bias)


def elastic_net(l1: float = 0.01, l2: float = 0.01, include_bias: bool = False) -> Regularizer:
    r"""Elastic net: :math:`R = \lambda_{L1}\sum|w| + \lambda_{L2}\sum w^2`."""
    return Regularizer(l1=l1, l2=l2, include_bias=include_bias)
