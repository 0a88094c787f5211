"""Registering a model whose architecture config is exactly its constructor arguments.

``@register_with_arguments`` (or ``@register_with_arguments(modules=("net",))``) registers a
class with :func:`lamina.nn.register_layer` and gives it a ``get_config`` that returns the
arguments its constructor was called with: defaults filled in, keyword options (``**kwargs``)
spread out, ``name`` the layer's name, all in JSON form (tuples and arrays become lists, NumPy
scalars Python numbers, NumPy dtypes their names). The arguments named in ``modules`` are
sub-modules (or lists of them, or None): they are saved as their own
:func:`~lamina.nn.layer_to_config` and rebuilt by ``from_config``, so the class saves only
when they are registered too. A model built at construction is given no sample input when it
is loaded: its sub-modules keep the input shape they were built for, and ``from_config``
builds them for it.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable

import numpy as np

from lamina.nn.layer import build_for_shape, input_shape_config, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module

__all__ = ["register_with_arguments"]


def _json_form(value):
    """``value`` with tuples and arrays as lists, NumPy scalars as numbers, dtypes as names."""
    if isinstance(value, dict):
        return {key: _json_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_form(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, (np.generic, float, int, bool))):
        return np.dtype(value).name
    return value


def _module_config(value, with_shape: bool):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_module_config(item, with_shape) for item in value]
    config = layer_to_config(value)
    return {**config, "input_shape": input_shape_config(value)} if with_shape else config


def _module_from_config(config):
    if config is None:
        return None
    if isinstance(config, list):
        return [_module_from_config(item) for item in config]
    return build_for_shape(layer_from_config(config), config.get("input_shape"))


def register_with_arguments(cls: type[Module] | None = None, *, modules: Iterable[str] = (),
                            name: str | None = None) -> Callable:
    """Class decorator: register ``cls`` (under ``name``, by default its class name) and make its
    config its constructor arguments (module docstring); ``modules`` names the arguments that
    are sub-modules."""
    module_arguments = tuple(modules)

    def decorate(klass: type[Module]) -> type[Module]:
        signature = inspect.signature(klass.__init__)
        spread = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
        unknown = [m for m in module_arguments if m not in signature.parameters]
        if unknown:
            raise ValueError(f"register_with_arguments: {klass.__name__} takes no argument(s) {unknown}")
        original_init = klass.__init__

        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            original_init(self, *args, **kwargs)
            if type(self) is klass:          # a subclass records its own arguments
                arguments = dict(list(bound.arguments.items())[1:])
                for name in spread:
                    arguments.update(arguments.pop(name))
                if "name" in arguments:
                    arguments["name"] = self.name        # the automatic name, when none was given
                object.__setattr__(self, "_constructor_arguments", arguments)

        def get_config(self) -> dict:
            arguments = self.__dict__.get("_constructor_arguments")
            if arguments is None:
                raise NotImplementedError(f"{type(self).__name__} does not describe its configuration")
            built_at_construction = self.build_input_shape is None
            config = {name: _module_config(value, built_at_construction) if name in module_arguments
                      else _json_form(value) for name, value in arguments.items()}
            try:
                json.dumps(config)
            except TypeError as exc:
                raise ValueError(f"{type(self).__name__}.get_config: a constructor argument cannot be "
                                 f"saved as JSON ({exc}); pass plain numbers, strings and lists") from None
            return config

        def from_config(cls_, config: dict) -> Module:
            config = dict(config)
            for name in module_arguments:
                if name in config:
                    config[name] = _module_from_config(config[name])
            return cls_(**config)

        klass.__init__ = __init__
        klass.get_config = get_config
        klass.from_config = classmethod(from_config)
        return register_layer(klass, name=name)

    return decorate(cls) if cls is not None else decorate
