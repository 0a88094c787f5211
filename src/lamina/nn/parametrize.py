"""Parametrizations, after ``torch.nn.utils.parametrize``: a module's parameter replaced by a
function of another tensor, recomputed on every read.

``register_parametrization(module, "weight", p)`` takes the parameter ``weight`` of ``module``
over. What is learned from then on is ``original``; what the module reads as ``module.weight``
is ``p(original)`` (with several parametrizations registered on one name, the composition
``p_k(... p_1(original))``), a tensor on the graph, so gradients flow back to ``original``:

    original = p.right_inverse(weight)   if p has one, else weight
    module.weight = p_k(... p_1(original))

The parametrization modules and ``original`` live in a sub-module ``parametrizations`` of the
module, so the state dict names them as PyTorch does: ``parametrizations.weight.original``,
and a parametrization's own buffers as ``parametrizations.weight.0.<buffer>``. Assigning
``module.weight = value`` stores ``right_inverse(value)`` (each parametrization's, last to
first) in ``original``.

As in PyTorch, the module's class is swapped for a subclass made for it (``ParametrizedDense``)
that computes the parametrized names as properties. That class is not registered for
architecture configs: save the state dict, or :func:`remove_parametrizations` before
``layer_to_config``. Inside ``with cached():`` each parametrized tensor is computed once and
reused (a recurrent layer reading its weight at every step, say).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lamina.autograd import Tensor, no_grad
from lamina.nn.module import Module
from lamina.nn.parameter import Parameter

__all__ = ["ParametrizationList", "cached", "is_parametrized", "register_parametrization",
           "remove_parametrizations"]

# (id(module), name) -> tensor, while a ``cached()`` block is open; None outside one
_CACHE: dict | None = None


@contextlib.contextmanager
def cached() -> Iterator[None]:
    """Within the block every parametrized tensor is computed on its first read and reused."""
    global _CACHE
    outer = _CACHE
    if outer is None:
        _CACHE = {}
    try:
        yield
    finally:
        if outer is None:
            _CACHE = None


class ParametrizationList(Module):
    """The parametrizations of one tensor (children ``0``, ``1``, ...) and the learned
    ``original``; calling it gives the parametrized tensor."""

    def __init__(self, original: Parameter, parametrization: Module):
        super().__init__()
        self.original = original
        self.append(parametrization)

    def append(self, parametrization: Module) -> None:
        setattr(self, str(len(self._modules)), parametrization)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self) -> Tensor:
        x = self.original
        for parametrization in self._modules.values():
            x = parametrization(x)
        return x

    def right_inverse(self, value):
        """``original`` for a wanted value: each parametrization's ``right_inverse``, last to first."""
        for parametrization in reversed(list(self._modules.values())):
            inverse = getattr(parametrization, "right_inverse", None)
            if inverse is not None:
                value = inverse(value)
        return value


def is_parametrized(module: Module, name: str | None = None) -> bool:
    """Whether ``module`` has a parametrization (on ``name``, when given)."""
    lists = module.__dict__.get("_modules", {}).get("parametrizations")
    if lists is None or not getattr(type(module), "_parametrized_names", None):
        return False
    return name is None or name in lists._modules


def register_parametrization(module: Module, name: str, parametrization: Module, *, unsafe: bool = False) -> Module:
    """Make ``module.<name>`` read as ``parametrization(original)`` (see the module docstring);
    a second call on the same name composes. ``unsafe`` skips the check that the parametrized
    tensor keeps the shape and dtype of the parameter it replaces. Returns ``module``."""
    what = f"register_parametrization({type(module).__name__}, {name!r})"
    if not isinstance(parametrization, Module):
        raise TypeError(f"{what}: expected a lamina Module as the parametrization, "
                        f"got {type(parametrization).__name__}")
    parametrization.built = True
    if is_parametrized(module, name):
        lists = module._modules["parametrizations"]._modules[name]
        before = getattr(module, name)
        lists.append(parametrization)
        if not unsafe:
            _check_same_kind(what, before, getattr(module, name))
        return module
    param = module.__dict__.get("_parameters", {}).get(name)
    if param is None:
        built = "" if module.built else " (the module is not built yet: call it once or build(input_shape) first)"
        raise ValueError(f"{what}: the module has no parameter {name!r}{built}; its parameters are "
                         f"{sorted(module._parameters)}")
    with no_grad():
        inverse = getattr(parametrization, "right_inverse", None)
        start = param.data if inverse is None else _array(inverse(param.detach()))
    original = Parameter(start.copy() if start is param.data else start, trainable=param.trainable,
                         dtype=start.dtype)
    del module._parameters[name]
    lists = ParametrizationList(original, parametrization)
    lists.built = True
    if "parametrizations" not in module._modules:
        holder = Module()
        holder.built = True
        module.parametrizations = holder
    setattr(module._modules["parametrizations"], name, lists)
    _add_property(module, name)
    if not unsafe:
        _check_same_kind(what, param, getattr(module, name))
    return module


def remove_parametrizations(module: Module, name: str, leave_parametrized: bool = True) -> Module:
    """Undo :func:`register_parametrization` on ``name``: the module owns a plain parameter
    again, holding the parametrized value (``leave_parametrized=True``) or ``original``."""
    if not is_parametrized(module, name):
        raise ValueError(f"remove_parametrizations({type(module).__name__}, {name!r}): the module has no "
                         f"parametrization on {name!r}")
    holder = module._modules["parametrizations"]
    lists = holder._modules[name]
    original = lists.original
    if leave_parametrized:
        with no_grad():
            value = _array(lists())
    else:
        value = original.data
    del holder._modules[name]
    _drop_property(module, name)
    module._parameters[name] = Parameter(value, trainable=original.trainable, dtype=value.dtype)
    if not holder._modules:
        del module._modules["parametrizations"]
    return module


def _check_same_kind(what: str, before, after) -> None:
    if tuple(after.shape) != tuple(before.shape) or after.dtype != before.dtype:
        raise ValueError(f"{what}: the parametrization changes the tensor from shape {tuple(before.shape)} "
                         f"{before.dtype} to {tuple(after.shape)} {after.dtype}; a parametrization must keep "
                         "both (pass unsafe=True to allow it)")


def _array(value):
    return value.data if isinstance(value, Tensor) else value


def _add_property(module: Module, name: str) -> None:
    cls = type(module)
    if not getattr(cls, "_parametrized_names", None):
        cls = type(f"Parametrized{cls.__name__}", (cls,), {"_parametrized_names": set(), "_plain_class": cls,
                                                          "__setattr__": _parametrized_setattr})
        object.__setattr__(module, "__class__", cls)
    cls._parametrized_names.add(name)
    setattr(cls, name, property(lambda self: _parametrized_value(self, name)))


def _drop_property(module: Module, name: str) -> None:
    cls = type(module)
    cls._parametrized_names.discard(name)
    delattr(cls, name)
    if not cls._parametrized_names:
        object.__setattr__(module, "__class__", cls._plain_class)


def _parametrized_value(module: Module, name: str) -> Tensor:
    lists = module._modules["parametrizations"]._modules[name]
    if _CACHE is None:
        return lists()
    key = (id(module), name)
    if key not in _CACHE:
        _CACHE[key] = lists()
    return _CACHE[key]


def _parametrized_setattr(module: Module, key: str, value) -> None:
    if key in type(module)._parametrized_names:
        lists = module._modules["parametrizations"]._modules[key]
        with no_grad():
            new = _array(lists.right_inverse(value))
        lists.original.data = new.astype(lists.original.data.dtype, copy=True)
        return
    Module.__setattr__(module, key, value)
