"""Turning a list of samples into a batch: :func:`default_collate`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lamina.data.dataset import is_multi_input

__all__ = ["default_collate"]


def default_collate(samples: list) -> Any:
    """Stack a list of samples into one batch, component by component.

    - a sample that is a tuple ``(x, y, ...)`` gives a tuple of batches, one per component;
    - a dict sample gives a dict of batches, one per key (the keys of the first sample);
    - inside a component, a group of several inputs (a tuple or list of arrays, see
      :func:`~lamina.data.dataset.is_multi_input`), a tuple holding an array among numbers
      (``(1, array)``), a tuple of groups or a dict is collated recursively in the same way;
    - anything else (an array, a number, a list of numbers) is stacked with ``np.stack``
      along a new first axis, the batch axis.
    """
    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError(f"default_collate: expected a non-empty list of samples; got {samples!r:.80}")
    first = samples[0]
    if isinstance(first, tuple):
        return _columns(samples, "default_collate")
    return _collate_component(samples)


def _collate_component(values: list) -> Any:
    first = values[0]
    if isinstance(first, Mapping):
        return _by_key(values)
    if isinstance(first, (tuple, list)) and (is_multi_input(first) or any(_is_component(item) for item in first)):
        return _columns(values, "default_collate")
    return np.stack([np.asarray(v) for v in values])


def _is_component(item: Any) -> bool:
    """Whether ``item`` makes the tuple or list holding it a tuple of components rather than
    one array: a group, a dict, or an array with an axis (which cannot stand among numbers)."""
    if isinstance(item, (tuple, list, Mapping)):
        return not _is_number_list(item)
    return len(getattr(item, "shape", ())) >= 1


def _is_number_list(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and all(isinstance(v, (int, float, complex, np.generic)) for v in item)


def _columns(values: list, where: str) -> tuple:
    width = len(values[0])
    for k, value in enumerate(values):
        if not isinstance(value, (tuple, list)) or len(value) != width:
            raise ValueError(f"{where}: sample 0 has {width} components but sample {k} is "
                             f"{_describe(value)}; every sample must have the same structure")
    return tuple(_collate_component([value[c] for value in values]) for c in range(width))


def _by_key(values: list) -> dict:
    keys = list(values[0])
    for k, value in enumerate(values):
        if not isinstance(value, Mapping) or set(value) != set(keys):
            raise ValueError(f"default_collate: sample 0 has keys {keys} but sample {k} is {_describe(value)}; "
                             "every sample must have the same keys")
    return {key: _collate_component([value[key] for value in values]) for key in keys}


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a dict with keys {list(value)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} components"
    return f"a {type(value).__name__}"
