"""Calling a module with other values for its parameters: ``functional_call``.

``functional_call(model, {"0.weight": w, ...}, x)`` runs ``model(x)`` with the given tensors in
place of the named parameters (and buffers), then puts the module's own back, as
``torch.func.functional_call`` does. The given tensors may be computed ones, on the graph:
meta-learning (MAML) adapts the weights by a gradient step w' = w - lr dJ/dw with the
gradient recorded (``grad(..., create_graph=True)``), evaluates the model at w', and
differentiates that loss back through the step to w. Other uses: per-sample or ensembled
weights, a weight perturbation (sharpness), a hypernetwork's output used as weights.
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["functional_call"]


def _slot(model: Module, name: str) -> tuple[dict, str, bool]:
    """The registry (a module's ``_parameters`` or ``_buffers``) holding ``name`` (dotted, as
    ``named_parameters`` gives it), the key in it, and whether it is a buffer (an array)."""
    owner = model
    *path, attr = name.split(".")
    for part in path:
        child = owner._modules.get(part)
        if child is None:
            break
        owner = child
    else:
        if attr in owner._parameters:
            return owner._parameters, attr, False
        if attr in owner._buffers:
            return owner._buffers, attr, True
    known = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    raise KeyError(f"functional_call: {type(model).__name__} has no parameter or buffer named {name!r}; "
                   f"its names are {known}")


def functional_call(model: Module, values: Mapping[str, object], *args, **kwargs):
    """``model(*args, **kwargs)`` computed with ``values`` (name -> tensor or array) in place of
    the parameters and buffers of those names; the module's own are put back afterwards, even
    if the call raises. Names not given keep the module's values. The model must be built
    (call it once, or ``build(input_shape)``), so that its parameters have names."""
    if not isinstance(model, Module):
        raise TypeError(f"functional_call: expected a Module, got {type(model).__name__}")
    if not model.built and not any(m.built for m in model.modules()):
        raise ValueError(f"functional_call: {type(model).__name__} has no weights yet; call it once or "
                         "build(input_shape) first")
    swapped: list[tuple[dict, str, object]] = []
    try:
        for name, value in values.items():
            registry, key, is_buffer = _slot(model, name)
            current = registry[key]
            if isinstance(value, Tensor):
                replacement = value.data if is_buffer else value       # buffers are arrays, off the graph
            else:
                replacement = backend.xp.asarray(value, dtype=current.dtype)
                replacement = replacement if is_buffer else Tensor(replacement, dtype=current.dtype)
            if tuple(replacement.shape) != tuple(current.shape):
                raise ShapeError(f"functional_call: {name!r} of {type(model).__name__} has shape "
                                 f"{tuple(current.shape)}, got a value of shape {tuple(replacement.shape)}")
            swapped.append((registry, key, current))
            registry[key] = replacement
        return model(*args, **kwargs)
    finally:
        for registry, key, original in reversed(swapped):
            registry[key] = original
