"""How a pruned parameter is held (for the methods of :mod:`lamina.nn.prune`, which choose the
masks): the parameter w_orig, the mask M and the forward pre-hook that gives the layer
w = w_orig * M at each call; installing a mask, making a pruning permanent (:func:`remove`),
applying the masks without a call (:func:`apply_masks`) and telling pruned modules
(:func:`is_pruned`).

How the layer's forward uses the product: pruning moves the parameter object, in place in the
module's parameter order, to ``<name>_orig`` (so an optimizer made before pruning still trains
it), registers the mask as the buffer ``<name>_mask`` (both are in the state dict, so a model
pruned the same way loads them) and registers a forward pre-hook that, before each call, sets
the plain attribute ``module.<name>`` to ``<name>_orig * <name>_mask``, computed in the graph.
The layer's own forward, checks and all, runs unchanged on it, for any layer and any parameter
it reads as an attribute. Between calls ``module.<name>`` holds the product of the last call
(or of the pruning): after an optimizer step or ``load_state_dict`` the next call refreshes it.

Inference fusion (:mod:`lamina.nn.fusion`) reads a layer's weight attribute directly, without
calling the layer. It cannot bypass the mask: while any module has a hook, every ``Sequential``
runs its layers one call each, without fusion (:mod:`lamina.nn.module`), so each pruned layer's
hook runs on every call. Fusion comes back once :func:`remove` has made every pruning permanent
(and no other hook is left).

A deep copy of a pruned module (``copy.deepcopy``, weight averaging, transfer learning) is
pruned too: it has its own ``<name>_orig``, ``<name>_mask`` and hook, although a copy drops
the hooks a user registered (:mod:`lamina.nn.hooks`). So is a pickled one (sent to another
process, say): the pickle holds the hook with the module.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.hooks import HookHandle
from lamina.nn.module import Module

__all__ = ["apply_masks", "is_pruned", "remove"]


class _ApplyMask:
    """The forward pre-hook of one pruned parameter: ``module.<name> = <name>_orig * <name>_mask``.
    It reads both from the module at each call, so ``load_state_dict`` may replace them. It
    belongs to the module's computation, so a deep copy or a pickle of the module keeps it."""

    copied_with_module = True

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module: Module, inputs: tuple) -> None:
        _set_product(module, self.name)


def _set_product(module: Module, name: str) -> None:
    orig = module._parameters[name + "_orig"]
    mask = module._buffers[name + "_mask"]
    # a plain attribute, not a registered parameter: the layer reads it, w_orig is what learns
    object.__setattr__(module, name, F.mul(orig, Tensor._wrap(mask)))


def _pruned(module: Module) -> dict[str, HookHandle]:
    """Pruned parameter name -> the handle of its forward pre-hook, read from the module's hooks."""
    hooks = module.__dict__.get("_module_hooks")
    if not hooks:
        return {}
    return {hook.name: handle for handle, hook in hooks.forward_pre.items() if isinstance(hook, _ApplyMask)}


def _install(module: Module, name: str, keep: numpy.ndarray) -> None:
    """Make ``keep`` the mask of ``module.<name>``, pruning the parameter first if it is not yet."""
    if name not in _pruned(module):
        _rename(module._parameters, name, name + "_orig")
        module.register_forward_pre_hook(_ApplyMask(name))
    dtype = module._parameters[name + "_orig"].data.dtype
    module.register_buffer(name + "_mask", backend.xp.asarray(keep.astype(dtype)))
    with no_grad():
        _set_product(module, name)


def _rename(registry: OrderedDict, old: str, new: str) -> None:
    """Rename a key of ``registry`` in place, keeping its position (and so the parameter order)."""
    items = [(new if key == old else key, value) for key, value in registry.items()]
    registry.clear()
    registry.update(items)


def remove(module: Module, name: str) -> Module:
    """Make the pruning of ``module.<name>`` permanent: the parameter ``<name>`` (the same object
    as ``<name>_orig``, back at its place) now holds w_orig * M, and ``<name>_orig``,
    ``<name>_mask`` and the hook are gone, so the state dict has its usual keys. Pruned entries
    are zero but free to learn again. Returns ``module``."""
    who = "prune.remove"
    if not isinstance(module, Module):
        raise ValueError(f"{who}: expected a lamina Module, got {type(module).__name__}")
    handles = _pruned(module)
    if name not in handles:
        raise ValueError(f"{who}: parameter {name!r} of {module._label()} is not pruned "
                         f"(its pruned parameters: {sorted(handles)})")
    handles[name].remove()
    mask = module._buffers.pop(name + "_mask")
    orig = module._parameters[name + "_orig"]
    backend.xp.multiply(orig.data, mask, out=orig.data)
    del module.__dict__[name]
    _rename(module._parameters, name + "_orig", name)
    return module


def apply_masks(module: Module) -> Module:
    """Set every pruned weight of ``module`` and its sub-modules to w_orig * M now, as their
    next call would: for code that reads a layer's weights without calling it (ONNX export
    does this first). Returns ``module``."""
    with no_grad():
        for owner in module.modules():
            for name in _pruned(owner):
                _set_product(owner, name)
    return module


def is_pruned(module: Module) -> bool:
    """Whether ``module`` or any module below it has a pruned parameter."""
    return any(_pruned(m) for m in module.modules())

