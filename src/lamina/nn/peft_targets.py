"""Choosing and replacing the layers a parameter-efficient method adapts: the checks and the
in-place swap that DoRA, IA3, LoHa, LoKr and VeRA share with :func:`~lamina.nn.apply_lora`
(whose target selection they reuse: a layer type, module names or a predicate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lamina.nn.dense import Dense
from lamina.nn.lora import LoRAAdapter, LoRADense, _selector
from lamina.nn.module import Module

ADAPTED_LAYERS: list[type] = [LoRADense, LoRAAdapter]
"""The wrapper and adapter types whose insides are never chosen again (each method adds its own)."""


def check_dense(dense, who: str) -> None:
    """A built plain :class:`Dense`, or a TypeError/ValueError naming ``who``."""
    if not isinstance(dense, Dense):
        raise TypeError(f"{who}: expected a Dense layer to adapt, got {type(dense).__name__}")
    if not dense.built:
        raise ValueError(f"{who}: {dense._label()} has no weights yet; call it on an input or build it before "
                         "adapting it")


def check_rank(r: int, n_in: int, n_out: int, who: str) -> None:
    """A rank r with 1 <= r <= min(n_in, n_out), or a ValueError naming the layer's sizes."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{who}: r (the rank) must be a positive integer, got {r!r}")
    if r > min(n_in, n_out):
        raise ValueError(f"{who}: rank r={r} is larger than the layer's dimensions ({n_in} inputs, {n_out} "
                         f"outputs); a low-rank update needs r <= {min(n_in, n_out)}")


def adaptable_modules(model: Module) -> Iterator[tuple[str, Module]]:
    """(dotted path, module) of ``model`` and its sub-modules, not inside an adapted layer."""
    skipped = tuple(ADAPTED_LAYERS)
    stack = [("", model)]
    while stack:
        path, module = stack.pop()
        if isinstance(module, skipped):
            continue
        yield path, module
        children = [(f"{path}.{k}" if path else k, child) for k, child in module.named_children()]
        stack.extend(reversed(children))


def selector(target) -> Callable[[str, Module], bool]:
    """:func:`~lamina.nn.apply_lora`'s target forms (a type, a tuple of types, names or a
    predicate), and also a list or tuple mixing types and names."""
    if isinstance(target, (list, tuple)) and target and any(isinstance(t, type) for t in target) \
            and not all(isinstance(t, type) for t in target):
        parts = [_selector(t) for t in target]
        return lambda path, module: any(choose(path, module) for choose in parts)
    return _selector(target)


def chosen_layers(model: Module, target, kinds: tuple[type, ...], who: str) -> list[tuple[str, Module]]:
    """The (path, layer) of ``model`` of the types ``kinds`` that ``target`` chooses; a
    ValueError naming the target when there are none."""
    choose = selector(target)
    found = [(path, module) for path, module in adaptable_modules(model)
             if isinstance(module, kinds) and type(module) not in ADAPTED_LAYERS and choose(path, module)]
    if not found:
        kinds_named = ", ".join(kind.__name__ for kind in kinds)
        raise ValueError(f"{who}: no {kinds_named} layer of {model._label()} matches the target {target!r} (an "
                         "unknown module name, or a type the model does not hold)")
    return found


def swap(model: Module, path: str, new: Module, who: str) -> Module:
    """Put ``new`` in place of the module at ``path`` (the model itself when path is '');
    returns the model, or ``new`` when it replaces the model."""
    from lamina.nn.functional_model import Model

    if not path:
        return new
    parent_path, _, key = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    if isinstance(parent, Model):
        raise ValueError(f"{who}: {path} is called by the graph of the functional {parent._label()}, which cannot "
                         "swap its layers")
    setattr(parent, key, new)
    return model


def chosen_built_layers(model: Module, target, kinds: tuple[type, ...], who: str) -> list[tuple[str, Module]]:
    """:func:`chosen_layers`, each of which must already have its weights (else ValueError)."""
    found = chosen_layers(model, target, kinds, who)
    for path, module in found:
        if not module.built:
            raise ValueError(f"{who}: {module._label()} ({path or 'the model'}) has no weights yet; call the model "
                             "on an input first")
    return found


def replace_dense(model: Module, target, make: Callable[[Dense], Module], who: str) -> Module:
    """Freeze ``model`` and replace each Dense layer ``target`` chooses by ``make(dense)``."""
    found = chosen_built_layers(model, target, (Dense,), who)
    model.freeze()
    result = model
    for path, dense in found:
        result = swap(model, path, make(dense), who)
    return result
