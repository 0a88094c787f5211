"""Containers that register what they hold: PyTorch's ``ModuleList``, ``ModuleDict``,
``ParameterList`` and ``ParameterDict``.

A plain Python list of layers stored on a module is invisible to it: its parameters are
missing from ``parameters()`` (so no optimizer updates them), from ``state_dict()`` and from
``train()``/``eval()``. These containers are modules whose entries are registered sub-modules
or parameters, so a model written in the PyTorch style

    class MLP(nn.Module):
        def __init__(self, widths):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Dense(n, activation="relu") for n in widths)
            self.head = nn.Dense(10)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

has the parameter names ``blocks.0.weight``, ``blocks.1.bias``, ``head.weight``, ... The lists
store their entries under the keys "0", "1", ... and number them again after an insertion
or a deletion; the dicts keep insertion order. A container has no forward pass of its own.

Differences from PyTorch: ``insert`` follows ``list.insert`` for negative and past-the-end
indices, both lists also support ``insert``, ``del`` and ``pop``, and the parameter
containers accept only Parameters, tensors and arrays (an array or tensor is wrapped into a
trainable Parameter on the same data, as PyTorch wraps a tensor).
"""

from __future__ import annotations

import itertools
import operator
from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.module import Module
from lamina.nn.parameter import Parameter

__all__ = ["ModuleDict", "ModuleList", "ParameterDict", "ParameterList"]


class _Container(Module):
    """What the four containers share: the registry their entries live in, the check of an
    entry, and the refusal to be called."""

    #: The Module registry that holds the entries: "_modules" or "_parameters".
    _registry = "_modules"
    #: How to use the container instead of calling it (for the error message).
    _usage = "iterate it and call each module"

    @property
    def _entries(self) -> OrderedDict:
        return self.__dict__[self._registry]

    def _checked(self, value):
        """The value to store for ``value``, or a TypeError naming the container."""
        raise NotImplementedError

    def forward(self, *inputs, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is a container and has no forward pass: {self._usage} "
                                  "in the forward of the module that owns it")

    __call__ = forward


class _ModuleEntries(_Container):
    def _checked(self, value) -> Module:
        if not isinstance(value, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, got {type(value).__name__}")
        return value


class _ParameterEntries(_Container):
    _registry = "_parameters"
    _usage = "index it and use the parameters"

    def _checked(self, value) -> Parameter:
        if isinstance(value, Parameter):
            return value
        if isinstance(value, Tensor):
            data = value.data
        elif isinstance(value, (numpy.ndarray, backend.xp.ndarray)):
            data = value
        else:
            raise TypeError(f"{type(self).__name__}: expected a Parameter, a Tensor or an array, "
                            f"got {type(value).__name__}")
        if data.dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}: a parameter holds floating-point numbers, got an array of "
                            f"dtype {data.dtype} and shape {tuple(data.shape)}")
        return Parameter(data, dtype=data.dtype)

    def __repr__(self) -> str:
        lines = [f"  ({key}): {param!r}" for key, param in self._entries.items()]
        return f"{type(self).__name__}(" + ("\n" + "\n".join(lines) + "\n" if lines else "") + ")"


# -- lists ---------------------------------------------------------------------------


class _ListContainer(_Container):
    """Entries under the keys "0", "1", ..., "n-1", in order."""

    def __init__(self, values: Iterable | None = None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def _renumber(self, values: list) -> None:
        entries = self._entries
        entries.clear()
        entries.update((str(i), value) for i, value in enumerate(values))

    def _position(self, index) -> int:
        """``index`` as a position in 0..len-1 (a negative index counts from the end)."""
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers or slices, "
                            f"got {type(index).__name__}") from None
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"{type(self).__name__} index {index} is out of range for {size} entries")
        return index + size if index < 0 else index

    def _checked_all(self, values, method: str) -> list:
        if isinstance(values, (Tensor, numpy.ndarray, backend.xp.ndarray)) or not isinstance(values, Iterable):
            raise TypeError(f"{type(self).__name__}.{method} expects an iterable of entries, "
                            f"got {type(values).__name__}")
        return [self._checked(value) for value in values]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator:
        return iter(list(self._entries.values()))

    def __contains__(self, value) -> bool:
        return any(entry is value for entry in self._entries.values())

    def __getitem__(self, index):
        """An entry, or for a slice a new container of the same entries."""
        if isinstance(index, slice):
            return type(self)(list(self._entries.values())[index])
        return self._entries[str(self._position(index))]

    def __setitem__(self, index, value) -> None:
        self._entries[str(self._position(index))] = self._checked(value)

    def __delitem__(self, index) -> None:
        values = list(self._entries.values())
        del values[index if isinstance(index, slice) else self._position(index)]
        self._renumber(values)

    def append(self, value) -> _ListContainer:
        """Add ``value`` at the end; returns self."""
        self._entries[str(len(self))] = self._checked(value)
        return self

    def extend(self, values: Iterable) -> _ListContainer:
        """Add every entry of ``values`` at the end (all checked before any is added); returns self."""
        for value in self._checked_all(values, "extend"):
            self._entries[str(len(self))] = value
        return self

    def insert(self, index: int, value) -> None:
        """Put ``value`` before position ``index`` (as ``list.insert``), the later entries moving up one key."""
        values = list(self._entries.values())
        values.insert(operator.index(index), self._checked(value))
        self._renumber(values)

    def pop(self, index: int | slice = -1):
        """Remove and return the entry at ``index`` (the last by default)."""
        value = self[index]
        del self[index]
        return value

    def __add__(self, other: Iterable) -> _ListContainer:
        """A new container of this one's entries followed by ``other``'s."""
        return type(self)(itertools.chain(self, self._checked_all(other, "__add__")))

    def __iadd__(self, other: Iterable) -> _ListContainer:
        return self.extend(other)


class ModuleList(_ListContainer, _ModuleEntries):
    """Sub-modules in a list: ``ModuleList([Dense(64), Dense(64)])``, registered as "0", "1", ...

    Supports ``len``, iteration, ``in``, ``ml[i]`` (negative counts from the end), ``ml[i:j]``
    (a new ModuleList of the same modules), ``ml[i] = module``, ``del ml[i]`` (the later
    entries are numbered again), :meth:`append`, :meth:`extend`, :meth:`insert`, :meth:`pop`,
    ``+`` and ``+=``. Calling it raises: iterate it in the owner's ``forward``.
    """

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__(modules)


class ParameterList(_ListContainer, _ParameterEntries):
    """Parameters in a list, registered as "0", "1", ...: the list operations of
    :class:`ModuleList`. An array or tensor given is wrapped into a trainable Parameter."""

    def __init__(self, values: Iterable | None = None):
        super().__init__(values)


# -- dicts ---------------------------------------------------------------------------


class _DictContainer(_Container):
    """Entries under string keys, in insertion order."""

    def __init__(self, values: Mapping | Iterable | None = None):
        super().__init__()
        if values is not None:
            self.update(values)

    def _checked_key(self, key) -> str:
        """``key`` if it can name an entry: a non-empty string without dots that is not
        already an attribute of the container (``training``, ``keys``, ...)."""
        who = type(self).__name__
        if not isinstance(key, str):
            raise TypeError(f"{who}: keys must be strings, got {key!r} of type {type(key).__name__}")
        if key == "":
            raise KeyError(f"{who}: a key cannot be the empty string")
        if "." in key:
            raise KeyError(f"{who}: a key cannot contain '.' (it separates the parts of parameter names), "
                           f"got {key!r}")
        if key not in self._entries and hasattr(self, key):
            raise KeyError(f"{who}: the key {key!r} clashes with an attribute of {who} (attribute {key!r} "
                           "already exists); choose another key")
        return key

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __contains__(self, key) -> bool:
        return key in self._entries

    def _require(self, key) -> None:
        if key not in self._entries:
            raise KeyError(f"{type(self).__name__}: no entry {key!r}; keys: {list(self._entries)}")

    def __getitem__(self, key: str):
        self._require(key)
        return self._entries[key]

    def __setitem__(self, key: str, value) -> None:
        self._entries[self._checked_key(key)] = self._checked(value)

    def __delitem__(self, key: str) -> None:
        self._require(key)
        del self._entries[key]

    def keys(self) -> KeysView[str]:
        return self._entries.keys()

    def values(self) -> ValuesView:
        return self._entries.values()

    def items(self) -> ItemsView:
        return self._entries.items()

    def get(self, key: str, default=None):
        return self._entries.get(key, default)

    def pop(self, key: str):
        """Remove the entry ``key`` and return it."""
        self._require(key)
        return self._entries.pop(key)

    def clear(self) -> None:
        self._entries.clear()

    def update(self, values: Mapping | Iterable) -> None:
        """Set the entries of a mapping, or of an iterable of (key, value) pairs, in their
        order; all are checked before any is set."""
        who = type(self).__name__
        if isinstance(values, (Mapping, _DictContainer)):
            pairs = list(values.items())
        elif isinstance(values, Iterable) and not isinstance(values, (str, Tensor, numpy.ndarray)):
            pairs = []
            for i, pair in enumerate(values):
                if not isinstance(pair, Iterable) or isinstance(pair, str):
                    raise TypeError(f"{who}.update: element #{i} should be a (key, value) pair, "
                                    f"got {type(pair).__name__}")
                pair = tuple(pair)
                if len(pair) != 2:
                    raise ValueError(f"{who}.update: element #{i} has length {len(pair)}; a (key, value) pair "
                                     "has length 2")
                pairs.append(pair)
        else:
            raise TypeError(f"{who}.update expects a mapping or an iterable of (key, value) pairs, "
                            f"got {type(values).__name__}")
        checked = [(self._checked_key(key), self._checked(value)) for key, value in pairs]
        self._entries.update(checked)


class ModuleDict(_DictContainer, _ModuleEntries):
    """Sub-modules by name: ``ModuleDict({"cls": Dense(10), "box": Dense(4)})`` (or pairs).

    Supports ``len``, iteration over the keys, ``in``, ``md[key]``, ``md[key] = module``,
    ``del md[key]``, :meth:`keys`, :meth:`values`, :meth:`items`, :meth:`get`,
    :meth:`update`, :meth:`pop` and :meth:`clear`, in insertion order. Keys are non-empty
    strings without dots that are not attributes of the container. Calling it raises.
    """

    _usage = "look up its modules and call them"

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None):
        super().__init__(modules)


class ParameterDict(_DictContainer, _ParameterEntries):
    """Parameters by name: the dict operations of :class:`ModuleDict`. An array or tensor
    given is wrapped into a trainable Parameter."""

    def __init__(self, parameters: Mapping | Iterable | None = None):
        super().__init__(parameters)
