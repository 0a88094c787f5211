"""Reading models to merge as state dicts, checking that they share one architecture, and
building the merged state dict entry by entry.

Every merge walks the entries of the first model (the base, where the method has one) and
sorts each into one of three kinds:

* non-float entries (integer or boolean buffers such as counters): copied from the first
  model after checking that every model holds the same values;
* float buffers (batch-norm running statistics): combined by the method's buffer rule
  (a plain average for most methods; see :mod:`lamina.nn.merging`);
* float weights: combined by the method's own rule.

Buffers are known only from :class:`~lamina.nn.Module` inputs (``named_buffers``); in a
plain state dict every float entry counts as a weight.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.module import Module

ModelLike = Module | Mapping


@dataclass
class States:
    """The state dicts of the models to merge (in the order given) and the names of their buffers."""

    who: str
    dicts: list[dict] = field(default_factory=list)
    buffers: set[str] = field(default_factory=set)

    @property
    def keys(self) -> list[str]:
        return list(self.dicts[0])


def state_of(model: ModelLike, who: str) -> tuple[dict, set[str]]:
    """(name -> array, buffer names) of a Module or a state dict (arrays are not copied)."""
    if isinstance(model, Module):
        return dict(model.state_dict()), {name for name, buf in model.named_buffers() if buf is not None}
    if isinstance(model, Mapping):
        return {key: backend.xp.asarray(value) for key, value in model.items()}, set()
    raise TypeError(f"{who}: expected a lamina Module or a state dict (a mapping name -> array), "
                    f"got {type(model).__name__}")


def collect(models: Sequence[ModelLike], who: str, at_least: int = 1) -> States:
    """The models' state dicts, checked to share keys and shapes (the first one is the reference)."""
    if isinstance(models, (Module, Mapping)) or not isinstance(models, Sequence):
        raise TypeError(f"{who}: expected a list of models or state dicts, got {type(models).__name__}")
    if len(models) < at_least:
        raise ValueError(f"{who}: needs at least {at_least} model(s), got {len(models)}")
    states = States(who)
    for model in models:
        state, buffers = state_of(model, who)
        states.dicts.append(state)
        states.buffers |= buffers
    reference = states.dicts[0]
    for index, state in enumerate(states.dicts[1:], start=1):
        check_same_architecture(reference, state, who, f"model {index}")
    return states


def check_same_architecture(reference: Mapping, other: Mapping, who: str, name: str) -> None:
    """Raise naming the first key that ``other`` lacks, adds, or holds with another shape or kind."""
    missing = [key for key in reference if key not in other]
    extra = [key for key in other if key not in reference]
    if missing or extra:
        raise KeyError(f"{who}: {name} does not have the architecture of model 0: missing keys {missing[:5]}, "
                       f"unexpected keys {extra[:5]}")
    for key, value in reference.items():
        theirs = other[key]
        if tuple(theirs.shape) != tuple(value.shape):
            raise ShapeError(f"{who}: {key!r} has shape {tuple(theirs.shape)} in {name} but "
                             f"{tuple(value.shape)} in model 0")
        if is_float(theirs) != is_float(value):
            raise TypeError(f"{who}: {key!r} is {theirs.dtype} in {name} but {value.dtype} in model 0 "
                            "(a float entry against a non-float one)")


def is_float(array) -> bool:
    return np.dtype(array.dtype).kind in "fc"


def as_float64(array):
    return backend.xp.asarray(array, dtype=np.float64)


def copied_if_equal(states: States, key: str):
    """A non-float entry: the first model's, after checking that all models agree on it."""
    first = states.dicts[0][key]
    for index, state in enumerate(states.dicts[1:], start=1):
        if not bool(backend.xp.array_equal(state[key], first)):
            raise ValueError(f"{states.who}: the non-float entry {key!r} ({first.dtype}) differs between model 0 "
                             f"and model {index}; such entries are copied, not merged, so they must agree")
    return first.copy()


def merge_entries(states: States, weight_rule: Callable[[str, list], object],
                  buffer_rule: Callable[[str, list], object]) -> OrderedDict:
    """The merged state dict: each float entry from ``weight_rule`` or ``buffer_rule`` (given its
    key and the models' values as float64 arrays, the result cast to the first model's dtype),
    each non-float entry copied."""
    merged = OrderedDict()
    for key in states.keys:
        first = states.dicts[0][key]
        if not is_float(first):
            merged[key] = copied_if_equal(states, key)
            continue
        values = [as_float64(state[key]) for state in states.dicts]
        rule = buffer_rule if key in states.buffers else weight_rule
        merged[key] = backend.xp.asarray(rule(key, values), dtype=first.dtype)
    return merged


def mean_of(values: list, start: int = 0):
    """The plain average of ``values[start:]`` (the buffer rule of most methods)."""
    chosen = values[start:]
    return sum(chosen[1:], chosen[0].copy()) / len(chosen)


def check_unit_interval(value, who: str, name: str, closed_low: bool = False, closed_high: bool = True) -> float:
    """``value`` as a float, checked to lie in (0, 1] (or the bounds asked for)."""
    low, high = ("[" if closed_low else "("), ("]" if closed_high else ")")
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value >= 0 if closed_low else value > 0) and (value <= 1 if closed_high else value < 1)
    if not ok:
        raise ValueError(f"{who}: {name} must be a number in {low}0, 1{high}, got {value!r}")
    return value


def per_model(value, count: int, who: str, name: str) -> list[float]:
    """A number for each of ``count`` models, from one number or a sequence of ``count``."""
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return [float(value)] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"{who}: {name} needs one number per model ({count}), got {len(values)}")
    return [float(v) for v in values]
