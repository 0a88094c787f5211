"""``Sequential``: layers applied one after the other, a^[l] = layer_l(a^[l-1]).

Naming: every layer is stored as a sub-module under its ``name``. A layer created without
a name is named automatically the way Keras does it, but per Sequential: the snake-case
class name for the first of its class ('dense', 'conv2d', 'batch_norm', 'max_pool2d'),
then 'dense_1', 'dense_2', ... So ``named_parameters()`` gives ``'dense.weight'``,
``'dense_1.bias'``, and a nested Sequential adds its own prefix
(``'sequential.dense.weight'``). The name is written into the layer (``layer.name``), so a
slice ``model[1:]`` keeps the same keys. Explicit names must be unique within a Sequential.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

from lamina.autograd import Tensor
from lamina.nn import fusion
from lamina.nn.layer import default_name, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module

__all__ = ["Sequential"]


@register_layer
class Sequential(Module):
    """A stack of layers: ``Sequential(Dense(64, 'relu'), Dense(10))`` or ``Sequential([...])``.

    Supports ``len``, iteration, ``model[i]`` (a layer), ``model['dense_1']`` (by name),
    ``model[i:j]`` (a Sequential sharing the same layer objects), and, as PyTorch's,
    :meth:`append`, :meth:`extend`, :meth:`insert`, :meth:`pop`, ``model[i] = layer`` and
    ``del model[i]`` (an index, a slice or a name).
    Building it (on the first call, or with :meth:`build`) builds each layer in turn from the
    previous layer's ``compute_output_shape``.
    """

    def __init__(self, *layers: Module, name: str | None = None):
        super().__init__(name=name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            self.append(layer)

    @property
    def streamable(self) -> bool:
        return all(layer.streamable for layer in self._modules.values())

    # -- container -----------------------------------------------------------
    def append(self, layer: Module) -> Sequential:
        """Add ``layer`` at the end (named automatically if it has no name); returns self."""
        key = self._key_for(layer)
        self._modules[key] = layer
        return self

    def extend(self, layers) -> Sequential:
        """Append each of ``layers`` in turn; returns self."""
        for layer in layers:
            self.append(layer)
        return self

    def insert(self, index: int, layer: Module) -> Sequential:
        """Put ``layer`` before position ``index`` (-len <= index <= len, as PyTorch's; len
        appends); returns self."""
        items = list(self._modules.items())
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"Sequential.insert: the index must be an int, got {type(index).__name__}") from None
        if not -len(items) <= index <= len(items):
            raise IndexError(f"Sequential.insert: index {index} out of range for {len(items)} layers")
        key = self._key_for(layer)
        items.insert(index + len(items) if index < 0 else index, (key, layer))
        self._reorder(items)
        return self

    def pop(self, index: int | str = -1) -> Module:
        """Remove the layer at ``index`` (or named ``index``) and return it."""
        layer = self[index]
        del self[index]
        return layer

    def __setitem__(self, index, layer: Module) -> None:
        """Replace the layer at ``index`` (or named ``index``) by ``layer``, in the same place."""
        if isinstance(index, slice):
            raise TypeError("Sequential: a slice cannot be assigned; replace one layer at a time (an index or a name)")
        old = self[index]
        items = list(self._modules.items())
        position = next(i for i, (_, existing) in enumerate(items) if existing is old)
        del self._modules[items[position][0]]          # its name is free for the new layer
        try:
            items[position] = (self._key_for(layer), layer)
        finally:
            self._reorder(items)                       # the old layer stays if the new one is refused

    def __delitem__(self, index) -> None:
        if isinstance(index, slice):
            doomed = {id(layer) for layer in self.layers[index]}
        else:
            doomed = {id(self[index])}
        self._reorder([(key, layer) for key, layer in self._modules.items() if id(layer) not in doomed])

    def _key_for(self, layer: Module) -> str:
        """The name ``layer`` will be stored under (naming it if it has none), after the checks."""
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: expected a layer (a Module), got {type(layer).__name__}")
        if any(existing is layer for existing in self._modules.values()):
            raise ValueError(f"Sequential: the layer {layer._label()} is already in this Sequential")
        if layer.name is not None:
            key = str(layer.name)
            if key in self._modules:
                raise ValueError(f"Sequential: two layers named {key!r}; layer names must be unique")
            return key
        key = self._free_name(default_name(layer))
        layer.name = key
        return key

    def _reorder(self, items: list) -> None:
        self._modules.clear()
        self._modules.update(items)

    def _free_name(self, base: str) -> str:
        if base not in self._modules:
            return base
        i = 1
        while f"{base}_{i}" in self._modules:
            i += 1
        return f"{base}_{i}"

    @property
    def layers(self) -> list[Module]:
        return list(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        if isinstance(index, str):
            try:
                return self._modules[index]
            except KeyError:
                raise KeyError(f"Sequential: no layer named {index!r}; layers: {list(self._modules)}") from None
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"Sequential indices must be ints, slices or layer names, got "
                            f"{type(index).__name__}") from None
        layers = self.layers
        if not -len(layers) <= index < len(layers):
            raise IndexError(f"Sequential index {index} out of range for {len(layers)} layers")
        return layers[index]

    # -- running -------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Build every layer in order, feeding each the previous layer's output shape."""
        shape = tuple(input_shape)
        self.build_input_shape = shape
        for layer in self:
            if not layer.built:
                layer.build(shape)
                layer.built = True
            try:
                shape = tuple(layer.compute_output_shape(shape))
            except NotImplementedError:
                break  # the remaining layers build lazily on the first call
        self.built = True

    def forward(self, x) -> Tensor:
        if fusion.applies(self):             # evaluation without gradients: conv -> BN -> ReLU fused
            return fusion.forward(list(self), x)
        return fusion.forward_overwriting(self, x)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    # -- architecture ----------------------------------------------------------
    def get_config(self) -> dict:
        return {"layers": [layer_to_config(layer) for layer in self], "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        layers = [layer_from_config(c) for c in config.get("layers", [])]
        return cls(*layers, name=config.get("name"))
