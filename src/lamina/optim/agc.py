"""Adaptive gradient clipping (Brock, De, Smith, Simonyan 2021, "High-Performance Large-Scale
Image Recognition Without Normalization"), in place on ``p.grad`` between backward and ``step()``.

Each unit i of a weight (one output neuron or filter: the row of its incoming weights) has
its gradient G_i clipped relative to the size of its weights W_i:

    G_i <- lambda · max(||W_i||, eps) / ||G_i|| · G_i    where ||G_i|| / max(||W_i||, eps) > lambda

(Frobenius norms). The units of a lamina weight: a Dense (n_in, n_out) weight has one per
column (the norm runs over axis 0), a convolution (K, f_h, f_w, c_in) one per filter (over all
axes but 0); a vector (bias, gain) or scalar is one unit. The paper leaves the final
classifier unclipped: pass its parameters to ``exclude``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.module import Module
from lamina.optim.optimizer import Optimizer
from lamina.optim.wrapper import OptimizerWrapper

__all__ = ["AGC", "adaptive_clip_grad", "unitwise_norm"]


def unitwise_norm(x):
    """The Frobenius norm of each unit of the array ``x`` (module docstring), shaped to broadcast
    against ``x``."""
    xp = backend.xp
    if x.ndim <= 1:
        return xp.sqrt(xp.sum(x * x))
    axes = (0,) if x.ndim == 2 else tuple(range(1, x.ndim))
    return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=True))


def _tensors(params) -> list[Tensor]:
    if isinstance(params, Module):
        return list(params.parameters())
    if isinstance(params, Tensor):
        return [params]
    return list(params)


def adaptive_clip_grad(parameters: Module | Tensor | Iterable[Tensor], clipping: float = 0.01,
                       eps: float = 1e-3) -> None:
    """Clip the gradient of every unit of ``parameters`` whose ratio ||G_i|| / max(||W_i||, eps)
    exceeds ``clipping`` (lambda) down to that ratio, in place (module docstring). Parameters
    without a gradient are skipped."""
    if not clipping > 0:
        raise ValueError(f"adaptive_clip_grad: clipping must be > 0, got {clipping!r}")
    if not eps > 0:
        raise ValueError(f"adaptive_clip_grad: eps must be > 0, got {eps!r}")
    xp = backend.xp
    for p in _tensors(parameters):
        grad = p.grad
        if grad is None:
            continue
        g = grad.data if isinstance(grad, Tensor) else grad
        max_norm = clipping * xp.maximum(unitwise_norm(p.data), eps)
        g_norm = unitwise_norm(g)
        # tiny floor: a zero gradient is left alone (its ratio is 0, never above lambda)
        scale = xp.where(g_norm > max_norm, max_norm / xp.maximum(g_norm, 1e-6), 1.0)
        g *= scale.astype(g.dtype, copy=False)


class AGC(OptimizerWrapper):
    """Any lamina optimizer with adaptive gradient clipping before each step::

        opt = AGC(SGD(model.parameters(), lr=0.4, momentum=0.9), clipping=0.01, exclude=model.fc)

    ``step()`` clips the gradients of the inner optimizer's parameters, except those of
    ``exclude`` (a module, a tensor or tensors: the final classifier in the paper; read at each
    step, so a lazily built module may be given before it has weights), then steps.
    ``clipping`` lambda and ``eps`` are :func:`adaptive_clip_grad`'s."""

    def __init__(self, optimizer: Optimizer, clipping: float = 0.01, eps: float = 1e-3,
                 exclude: Module | Tensor | Iterable[Tensor] | None = None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"AGC: optimizer must be a lamina optimizer (lamina.optim.Optimizer), got "
                            f"{type(optimizer).__name__}")
        if not clipping > 0 or not eps > 0:
            raise ValueError(f"AGC: clipping and eps must be > 0, got {clipping!r} and {eps!r}")
        self.optimizer = optimizer
        self.clipping, self.eps = float(clipping), float(eps)
        self.exclude = exclude if isinstance(exclude, (Module, Tensor)) or exclude is None else list(exclude)

    def clipped_parameters(self) -> list[Tensor]:
        """The inner optimizer's parameters less the excluded ones."""
        skip = set() if self.exclude is None else {id(p) for p in _tensors(self.exclude)}
        return [p for p in self.optimizer.params if id(p) not in skip]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Clip, then one inner step; a ``closure`` (recomputing the loss and the gradients) is
        called first, and its loss returned."""
        loss = closure() if closure is not None else None
        adaptive_clip_grad(self.clipped_parameters(), self.clipping, self.eps)
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict (AGC itself keeps no state)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
