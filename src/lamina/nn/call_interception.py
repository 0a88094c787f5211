"""Call interception: functions that wrap every module call while installed.

:func:`intercept_calls` lets tools watch every module call (input and output shapes in
execution order) without changing any layer; :mod:`lamina.analysis` uses it for
:meth:`lamina.nn.Module.summary`, and module hooks ride on it (see :mod:`lamina.nn.module`).
The lists here are shared with :class:`lamina.nn.Module`, whose ``__call__`` runs a call
through them only while one is installed.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.nn.module import Module

# Functions f(module, inputs, kwargs, forward) -> output that wrap every module call while
# installed by ``intercept_calls`` (the last installed is outermost); empty in normal use, when
# ``Module.__call__`` pays only for one truth test of this list.
_CALL_INTERCEPTORS: list[Callable] = []


@contextlib.contextmanager
def intercept_calls(interceptor: Callable) -> Iterator[None]:
    """Within the block, every call ``module(*inputs, **kwargs)`` (after the lazy build) runs
    ``interceptor(module, inputs, kwargs, forward)`` instead of the forward pass, where
    ``forward()`` runs it and returns the output; the interceptor returns the call's result.
    Nested calls (the layers inside a block) are intercepted too, in execution order."""
    _CALL_INTERCEPTORS.append(interceptor)
    try:
        yield
    finally:
        _CALL_INTERCEPTORS.remove(interceptor)


# The modules that have hooks; while there is one, _run_module_hooks is _CALL_INTERCEPTORS[0].
_HOOKED_MODULES: weakref.WeakSet = weakref.WeakSet()


def _run_module_hooks(module: Module, inputs: tuple, kwargs: dict, forward: Callable):
    """The innermost interceptor while any module has hooks: a hooked module's forward with
    its hooks around it. Being innermost, it calls ``module.forward`` itself, with the inputs
    the pre-hooks may have replaced; by the time a hook runs, every level above has started,
    so hooks may be added or removed (and this interceptor with them) from inside a hook."""
    hooks = module.__dict__.get("_module_hooks")
    if hooks:
        return hooks.call(module, inputs, kwargs)
    if not _HOOKED_MODULES:                  # the hooked modules were garbage-collected
        _stop_running_hooks()
    return forward()


def _stop_running_hooks() -> None:
    if _run_module_hooks in _CALL_INTERCEPTORS:
        _CALL_INTERCEPTORS.remove(_run_module_hooks)


def _forget_unhooked_modules() -> None:
    """After a hook's removal: drop the modules left without hooks, and the interceptor with the last."""
    for module in list(_HOOKED_MODULES):
        if not module.__dict__.get("_module_hooks"):
            _HOOKED_MODULES.discard(module)
    if not _HOOKED_MODULES:
        _stop_running_hooks()


def _intercepted_call(module: Module, inputs: tuple, kwargs: dict, interceptors: tuple, level: int):
    # ``interceptors`` is the list as it stood when the call began: one removed meanwhile (a
    # dropped tracker's) does not shift the others under a call in progress
    if level < 0:
        return module.forward(*inputs, **kwargs)
    return interceptors[level](module, inputs, kwargs,
                               lambda: _intercepted_call(module, inputs, kwargs, interceptors, level - 1))
