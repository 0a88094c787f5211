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
    known = list(model.state_dict())            # every path, tied aliases included
    raise KeyError(f"functional_call: {type(model).__name__} has no parameter or buffer named {name!r}; "
                   f"its names are {known}")


def _places(model: Module, held: list) -> dict[int, list[tuple[dict, str]]]:
    """For each object of ``held`` (by identity): every (registry, key) of the model's modules
    holding it, so that a tied parameter is found in each layer that uses it."""
    wanted = {id(value) for value in held}
    places: dict[int, list[tuple[dict, str]]] = {}
    for module in model.modules():
        for registry in (module._parameters, module._buffers):
            for key, value in registry.items():
                if id(value) in wanted:
                    places.setdefault(id(value), []).append((registry, key))
    return places


def _write_back(entry: tuple[str, object, object], places: list[tuple[dict, str]]) -> None:
    """Copy a buffer that the call assigned anew (BatchNorm's running statistics in training)
    into the value given for it, in place, as torch's modules update the given tensor."""
    name, value, replacement = entry
    updated = next((registry[key] for registry, key in places if registry[key] is not replacement), None)
    if updated is None or isinstance(replacement, Tensor):      # unchanged, or a parameter
        return
    target = value.data if isinstance(value, Tensor) else value
    if not isinstance(target, backend.xp.ndarray) or target is updated:
        return
    updated = getattr(updated, "data", updated)
    if tuple(target.shape) != tuple(updated.shape):
        raise ShapeError(f"functional_call: the call set buffer {name!r} to shape {tuple(updated.shape)}; the "
                         f"value given for it has shape {tuple(target.shape)}")
    target[...] = updated


def functional_call(model: Module, values: Mapping[str, object], *args, **kwargs):
    """``model(*args, **kwargs)`` computed with ``values`` (name -> tensor or array) in place of
    the parameters and buffers of those names; the module's own are put back afterwards, even
    if the call raises. Names not given keep the module's values. The model must be built
    (call it once, or ``build(input_shape)``), so that its parameters have names.

    A parameter (or buffer) held in several places, tied weights (``m[1].weight = m[0].weight``)
    or a sub-module used twice, is replaced in every place, as ``torch.func.functional_call``
    does with ``tie_weights=True``; tied names given different values are an error.

    A buffer that the call updates (BatchNorm's running statistics in training mode) is
    written into the tensor or array given for it, in place, as torch does; the module's own
    buffer is left as it was."""
    if not isinstance(model, Module):
        raise TypeError(f"functional_call: expected a Module, got {type(model).__name__}")
    if not model.built and not any(m.built for m in model.modules()):
        raise ValueError(f"functional_call: {type(model).__name__} has no weights yet; call it once or "
                         "build(input_shape) first")
    given: dict[int, tuple[str, object, object]] = {}     # id(own value) -> (name, value, replacement)
    owns = []
    for name, value in values.items():
        registry, key, is_buffer = _slot(model, name)
        current = registry[key]
        if id(current) in given:
            first, first_value, _ = given[id(current)]
            if first_value is not value:
                raise ValueError(f"functional_call: {first!r} and {name!r} of {type(model).__name__} are tied "
                                 "(one parameter or buffer) but were given different values")
            continue
        if isinstance(value, Tensor):
            replacement = value.data if is_buffer else value       # buffers are arrays, off the graph
        else:
            replacement = backend.xp.asarray(value, dtype=current.dtype)
            replacement = replacement if is_buffer else Tensor(replacement, dtype=current.dtype)
        if tuple(replacement.shape) != tuple(current.shape):
            raise ShapeError(f"functional_call: {name!r} of {type(model).__name__} has shape "
                             f"{tuple(current.shape)}, got a value of shape {tuple(replacement.shape)}")
        given[id(current)] = (name, value, replacement)
        owns.append(current)
    swapped: list[tuple[dict, str, object]] = []
    try:
        placed = _places(model, owns)
        for own_id, places in placed.items():
            replacement = given[own_id][2]
            for registry, key in places:
                swapped.append((registry, key, registry[key]))
                registry[key] = replacement
        output = model(*args, **kwargs)
        for own_id, places in placed.items():
            _write_back(given[own_id], places)
        return output
    finally:
        for registry, key, original in reversed(swapped):
            registry[key] = original
