"""``ctx``: what a :class:`~lamina.autograd.CustomFunction`'s forward leaves for its backward.

One :class:`FunctionCtx` is made per call of ``MyFn.apply`` and handed to ``forward`` (or to
``setup_context``) and then to ``backward``, as PyTorch's ``torch.autograd.function.FunctionCtx``:

- ``save_for_backward(*tensors)`` keeps tensors (inputs, outputs or intermediates) that
  ``backward`` reads back as ``ctx.saved_tensors``; a saved input or output is the very tensor
  on the graph, so a backward written with lamina ops can be differentiated again;
- ``needs_input_grad``: one bool per argument of forward, whether it is a tensor that requires
  grad (so backward may skip the gradients of the others);
- ``mark_non_differentiable(*outputs)``: outputs that get no gradient (indices, masks);
- ``set_materialize_grads(False)``: an output no gradient reached comes to backward as
  ``None`` rather than as zeros;
- any other attribute (``ctx.constant = c``) is the function's own.

``mark_dirty`` (in-place forwards) is refused: lamina's tensors have no in-place operations
nor the version counters that would detect a saved value changed under backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from lamina.autograd import graph
from lamina.autograd.tensor import Tensor

__all__ = ["FunctionCtx", "once_differentiable"]


class FunctionCtx:
    """The context of one call of a custom function (see the module's docstring)."""

    def __init__(self, function_name: str, needs_input_grad: tuple[bool, ...]):
        self._function_name = function_name
        self.needs_input_grad = needs_input_grad
        self._saved: tuple | None = ()
        self._non_differentiable: list = []
        self.materialize_grads = True

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep ``tensors`` (or None) for backward, where ``saved_tensors`` gives them back in order."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{self._function_name}: save_for_backward takes tensors or None; argument {i} "
                                f"is a {type(t).__name__} (keep other values as attributes of ctx)")
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple:
        """The tensors given to :meth:`save_for_backward`."""
        if self._saved is None:
            raise RuntimeError(f"{self._function_name}: its saved tensors were freed by an earlier backward "
                               "through it; call that one with retain_graph=True")
        return self._saved

    def mark_non_differentiable(self, *outputs: Tensor) -> None:
        """Outputs of forward that get no gradient: they do not require grad, and backward
        receives zeros (or None, see :meth:`set_materialize_grads`) for them."""
        for i, t in enumerate(outputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"{self._function_name}: mark_non_differentiable takes output tensors; argument {i} "
                                f"is a {type(t).__name__}")
        self._non_differentiable.extend(outputs)

    def set_materialize_grads(self, value: bool) -> None:
        """Whether an output whose gradient is unknown (no path from the loss reaches it, or it
        is non-differentiable) comes to backward as zeros of its shape (True, the default) or
        as None (False: backward must then handle None)."""
        self.materialize_grads = bool(value)

    def mark_dirty(self, *tensors: Tensor) -> None:
        """Refused: a custom function's forward must not change its inputs in place."""
        raise NotImplementedError(
            f"{self._function_name}: mark_dirty is not supported: lamina tensors have no in-place operations or "
            "version counters, so a forward that overwrites an input cannot be tracked; return a new tensor instead")

    def _release(self) -> None:
        self._saved = None
        self._non_differentiable = []


def once_differentiable(backward: Callable) -> Callable:
    """Decorator for a custom function's ``backward`` that is not itself differentiable (it
    leaves lamina ops, for NumPy on ``.data`` say). It runs without recording; its gradients
    are still right, but with ``grad(..., create_graph=True)`` differentiating them again
    raises an error that names the function, instead of giving silently wrong second
    derivatives."""

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with graph.no_grad():
            return backward(ctx, *grad_outputs)

    wrapper.once_differentiable = True
    return wrapper
