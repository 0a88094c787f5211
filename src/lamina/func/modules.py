"""Modules as functions of their weights, under torch.func's names: ``functional_call`` and
``stack_module_state`` (for ensembles: ``vmap`` over the stacked weights of several models)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call as _module_call
from lamina.nn.module import Module

__all__ = ["functional_call", "stack_module_state"]


def functional_call(module: Module, parameter_and_buffer_dicts, args=(), kwargs: dict | None = None, *,
                    strict: bool = False):
    """``module(*args, **kwargs)`` with the named parameters and buffers of
    ``parameter_and_buffer_dicts`` (one dict name -> tensor, or a tuple of dicts such as
    (params, buffers)) in place of the module's own, as ``torch.func.functional_call``. ``args``
    that is not a tuple is the one positional argument. With ``strict``, every parameter and
    buffer must be given. A buffer that the call updates (BatchNorm's running statistics in
    training mode) is written into the tensor given for it, as torch does. Built on
    :func:`lamina.nn.functional_call`."""
    dicts = parameter_and_buffer_dicts
    dicts = [dicts] if isinstance(dicts, Mapping) else list(dicts)
    values: dict = {}
    for d in dicts:
        if not isinstance(d, Mapping):
            raise TypeError(f"functional_call: expected dicts of name -> tensor, got {type(d).__name__}")
        twice = sorted(set(values) & set(d))
        if twice:
            raise ValueError(f"functional_call: {twice} given in more than one dict")
        values.update(d)
    if strict:
        names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
        missing = [n for n in names if n not in values]
        if missing:
            raise KeyError(f"functional_call(strict=True): no value given for {missing} of {type(module).__name__}")
    args = args if isinstance(args, tuple) else (args,)
    return _module_call(module, values, *args, **(kwargs or {}))


def stack_module_state(models: Sequence[Module]) -> tuple[dict, dict]:
    """(params, buffers): each parameter (buffer) of ``models`` (built, of one architecture)
    stacked along a new first axis, name -> tensor, as ``torch.func.stack_module_state``. The
    stacked parameters are new leaves that require grad (training them trains the ensemble);
    ``vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)))(params, buffers, x)`` runs
    every model on x (``in_dims=(0, 0, None)``)."""
    models = list(models)
    if not models or not all(isinstance(m, Module) for m in models):
        raise TypeError("stack_module_state: expected a non-empty list of Modules")
    first = models[0]
    if not first.built and not any(m.built for m in first.modules()):
        raise ValueError(f"stack_module_state: {type(first).__name__} has no weights yet; call it once or "
                         "build(input_shape) first")

    def state(model: Module) -> tuple[dict, dict]:
        params = {n: p.data for n, p in model.named_parameters()}
        buffers = {n: backend.xp.asarray(getattr(b, "data", b)) for n, b in model.named_buffers()}
        return params, buffers

    reference = state(first)
    collected = [reference] + [state(m) for m in models[1:]]
    for k, (model, found) in enumerate(zip(models, collected)):
        for what, ref, got in (("parameters", reference[0], found[0]), ("buffers", reference[1], found[1])):
            shapes = {n: tuple(a.shape) for n, a in got.items()}
            expected = {n: tuple(a.shape) for n, a in ref.items()}
            if type(model) is not type(first) or shapes != expected:
                raise ShapeError(f"stack_module_state: model {k} ({type(model).__name__}) differs from model 0 "
                                 f"({type(first).__name__}) in its {what}: {shapes} vs {expected}")
    params = {n: Tensor(backend.xp.stack([c[0][n] for c in collected]), requires_grad=True, dtype=a.dtype)
              for n, a in reference[0].items()}
    buffers = {n: Tensor._wrap(backend.xp.stack([c[1][n] for c in collected])) for n in reference[1]}
    return params, buffers
