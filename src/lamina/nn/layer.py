"""What every layer shares: the class registry behind saved architectures, automatic
names, and the input checks that produce readable :class:`lamina.ShapeError` messages.

A layer's architecture is ``{"class_name": "Dense", "config": {...}}``: the registered class
name and the JSON-serialisable constructor arguments from ``layer.get_config()``.
:func:`layer_to_config` writes it and :func:`layer_from_config` rebuilds the layer (without
its weights, which travel in the state dict).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["add_layer_source", "build_for_shape", "default_name", "input_shape_config", "layer_from_config",
           "layer_to_config", "register_layer", "registered_layers"]

_REGISTRY: dict[str, type[Module]] = {}
_SOURCES: list[Callable[[], object]] = []


def add_layer_source(load: Callable[[], object]) -> None:
    """Register ``load``, a function that imports modules registering more layers (a package
    that ``import lamina`` leaves for first use, such as the model zoo). It runs once, the
    first time the registry is read whole or misses a name."""
    _SOURCES.append(load)


def _load_sources() -> None:
    while _SOURCES:
        _SOURCES.pop(0)()


def register_layer(cls: type[Module] | None = None, *, name: str | None = None):
    """Class decorator registering a layer under its class name (or ``name``) so that
    :func:`layer_from_config` can find it; returns the class unchanged."""

    def decorate(klass: type[Module]) -> type[Module]:
        if not (isinstance(klass, type) and issubclass(klass, Module)):
            raise TypeError(f"register_layer: expected a Module subclass, got {klass!r}")
        key = name or klass.__name__
        previous = _REGISTRY.get(key)
        if previous is not None and previous is not klass and (
            previous.__module__, previous.__qualname__) != (klass.__module__, klass.__qualname__):
            raise ValueError(f"register_layer: the name {key!r} is already taken by {previous!r}")
        _REGISTRY[key] = klass
        return klass

    return decorate(cls) if cls is not None else decorate


def registered_layers() -> dict[str, type[Module]]:
    """A copy of the registry, every layer package loaded: class name -> class."""
    _load_sources()
    return dict(_REGISTRY)


def layer_to_config(layer: Module) -> dict:
    """``{"class_name": ..., "config": layer.get_config()}`` for a registered layer."""
    class_name = next((k for k, v in _REGISTRY.items() if v is type(layer)), None)
    parametrized = sorted(getattr(type(layer), "_parametrized_names", None) or ())
    if class_name is None and parametrized:
        raise ValueError(
            f"layer_to_config: {layer._label()} has parametrizations ({', '.join(parametrized)}), "
            "which an architecture config cannot hold; save its state_dict, or call "
            "nn.parametrize.remove_parametrizations first"
        )
    if class_name is None:
        raise ValueError(
            f"layer_to_config: {type(layer).__name__} is not registered; decorate the class with "
            "@lamina.nn.register_layer to save architectures that use it"
        )
    return {"class_name": class_name, "config": layer.get_config()}


def layer_from_config(config: dict) -> Module:
    """Rebuild a layer (unbuilt, fresh weights on first call) from :func:`layer_to_config`'s dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(
            f"layer_from_config: expected a dict with 'class_name' and 'config', got {config!r}"
        )
    class_name = config["class_name"]
    if class_name not in _REGISTRY:
        _load_sources()
    cls = _REGISTRY.get(class_name)
    if cls is None:
        close = difflib.get_close_matches(str(class_name), list(_REGISTRY), n=5)
        hint = f"; the closest registered names: {close}" if close else ""
        raise ValueError(
            f"layer_from_config: unknown layer class {class_name!r} (none of the {len(_REGISTRY)} registered "
            f"layers, lamina.nn.registered_layers(), has that name){hint}; a layer class of your own must be "
            "registered with lamina.nn.register_layer before loading"
        )
    return cls.from_config(dict(config.get("config", {})))


def input_shape_config(layer: Module) -> list | None:
    """The input shape ``layer`` was built for as JSON lists, the batch axis None (a list of
    shapes for several inputs; None for a layer built at construction): what a wrapper that
    needs its child built puts in its config, for :func:`build_for_shape`."""
    def as_list(shape):
        if shape and isinstance(shape[0], (list, tuple)):
            return [as_list(s) for s in shape]
        return [None] + [None if n is None else int(n) for n in shape[1:]]

    shape = layer.build_input_shape
    return None if shape is None else as_list(shape)


def build_for_shape(layer: Module, shape: list | None) -> Module:
    """Build ``layer`` by a call (no graph) on one sample of zeros of ``shape`` (from
    :func:`input_shape_config`; integer zeros for a layer that reads ids; what the layer's
    ``build_sample_inputs(shapes)`` gives where it has one); returns it."""
    if shape is None:
        return layer
    shapes = shape if shape and isinstance(shape[0], list) else [shape]
    dtype = "int64" if reads_ids(layer) else backend.get_default_dtype()
    hook = getattr(layer, "build_sample_inputs", None)
    with no_grad():
        if hook is not None:
            layer(*hook(shapes))
            return layer
        layer(*[Tensor(backend.xp.zeros([1] + [1 if n is None else n for n in s[1:]], dtype=dtype)) for s in shapes])
    return layer


def default_name(layer: Module | type[Module]) -> str:
    """The automatic, Keras-like name of a layer class: ``Dense`` -> ``'dense'``,
    ``MaxPool2D`` -> ``'max_pool2d'``; a class may set ``default_name`` itself."""
    cls = layer if isinstance(layer, type) else type(layer)
    explicit = cls.__dict__.get("default_name")
    if isinstance(explicit, str):
        return explicit
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])", "_", cls.__name__).lower()


# -- input checks ------------------------------------------------------------------------
def describe(x) -> str:
    """``'shape (2, 3) float32'`` for an array or tensor."""
    shape = tuple(getattr(x, "shape", ()))
    dtype = getattr(x, "dtype", type(x).__name__)
    return f"shape {shape} ({dtype})"


def input_error(layer: Module, x, expected: str) -> ShapeError:
    """A ShapeError naming the layer, the input's shape and dtype, and what was expected."""
    return ShapeError(f"{layer._label()}: got an input of {describe(x)}; expected {expected}")


def check_shape_ndim(layer: Module, input_shape, ndim: int | tuple[int, ...], expected: str) -> tuple:
    """The same check on a bare shape (``compute_output_shape``, ``build``)."""
    if input_shape is None:
        raise ShapeError(f"{layer._label()}: no input shape given; expected {expected}")
    shape = tuple(input_shape)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if len(shape) not in allowed:
        raise ShapeError(f"{layer._label()}: got an input shape {shape}; expected {expected}")
    return shape


def compact(value):
    """A pair of equal ints as one int (what the functional kernels take most simply)."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


def pair(value, what: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair (kernel sizes, strides, paddings)."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected an int or a pair of ints, got {value!r}") from None
    return int(a), int(b)


def positive_int(value, what: str) -> int:
    """``value`` checked to be an int >= 1 (bools refused); ``what`` names it in the
    ValueError, e.g. 'Conv2D: filters'."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def head_split(embed_dim, num_heads, who: str) -> tuple[int, int, int]:
    """(embed_dim, num_heads, head_dim = embed_dim / num_heads), each checked to be a positive
    int and embed_dim a multiple of num_heads; ``who`` names the layer in the ValueError."""
    embed_dim = positive_int(embed_dim, f"{who}: embed_dim")
    num_heads = positive_int(num_heads, f"{who}: num_heads")
    if embed_dim % num_heads:
        raise ValueError(f"{who}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}; each head "
                         "gets embed_dim / num_heads features")
    return embed_dim, num_heads, embed_dim // num_heads


def dropout_rate(value, who: str) -> float:
    """A dropout probability checked to lie in [0, 1); ``who`` names the layer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{who}: dropout must be in [0, 1), got {value!r}")
    return float(value)


def reads_ids(model: Module) -> bool:
    """Whether ``model``'s first layer takes integer ids (an Embedding's ``reads_ids``), so
    that a sample input for it must be integers, not values."""
    for module in model.modules():
        if not module._modules or module._parameters:
            return bool(getattr(module, "reads_ids", False))
    return False


def reads_strings(model: Module) -> bool:
    """Whether ``model``'s first layer takes strings (a text preprocessing layer's
    ``reads_strings``), so that a sample input for it must be strings."""
    for module in model.modules():
        if not module._modules or module._parameters:
            return bool(getattr(module, "reads_strings", False))
    return False
