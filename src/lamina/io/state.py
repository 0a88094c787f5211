"""Nested state (dicts, lists, numbers, strings, arrays) split into JSON and named arrays.

Lets a checkpoint hold optimizer and training state in one safetensors file: every array
is stored as a tensor under its path, and the JSON tree keeps ``{"__array__": path}``
where it stood. Nothing is pickled.
"""

from __future__ import annotations

import numpy as np

_ARRAY = "__array__"


def flatten_state(obj, prefix: str = "") -> tuple[object, dict[str, np.ndarray]]:
    """(JSON-ready tree, {path: array}) for a nested state."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node, path):
        if isinstance(node, np.ndarray) or hasattr(node, "__array_namespace__"):
            arrays[path] = np.asarray(node)
            return {_ARRAY: path}
        if isinstance(node, np.generic):
            return node.item()
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, f"{path}/k{i}"), walk(v, f"{path}/{i}")] for i, (k, v) in
                                 enumerate(node.items())]}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"flatten_state: cannot store a {type(node).__name__} at {path or '/'}")

    return walk(obj, prefix), arrays


def unflatten_state(tree, arrays: dict[str, np.ndarray]):
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if _ARRAY in tree:
            return arrays[tree[_ARRAY]]
        return {unflatten_state(k, arrays): unflatten_state(v, arrays) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [unflatten_state(v, arrays) for v in tree]
    return tree
