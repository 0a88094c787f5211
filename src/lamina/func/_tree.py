"""Nested containers of values (dicts, lists, tuples and namedtuples of tensors: a model's
parameters by name, a tuple of outputs) flattened to a list of leaves and rebuilt from one."""

from __future__ import annotations

LEAF = None
"""The spec of a leaf: anything that is not a dict, list or tuple (namedtuples included)."""


def flatten(tree) -> tuple[list, object]:
    """(leaves in order, spec): dict entries in insertion order, then list and tuple items; a
    namedtuple is a tuple whose spec keeps its type, so that it is rebuilt as one."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves: list):
    if isinstance(tree, dict):
        return ("dict", tuple(tree), tuple(_flatten(v, leaves) for v in tree.values()))
    if isinstance(tree, (list, tuple)):
        kind = type(tree) if hasattr(tree, "_fields") else "tuple" if isinstance(tree, tuple) else "list"
        return (kind, len(tree), tuple(_flatten(v, leaves) for v in tree))
    leaves.append(tree)
    return LEAF


def unflatten(spec, leaves) -> object:
    """The tree of ``spec`` holding ``leaves`` (in :func:`flatten`'s order)."""
    it = iter(leaves)
    return _build(spec, it)


def _build(spec, it):
    if spec is LEAF:
        return next(it)
    kind, keys, children = spec
    if kind == "dict":
        return {k: _build(c, it) for k, c in zip(keys, children)}
    items = [_build(c, it) for c in children]
    if kind == "tuple":
        return tuple(items)
    return items if kind == "list" else kind(*items)


def broadcast_prefix(prefix, tree, where: str) -> list:
    """One entry of ``prefix`` per leaf of ``tree``: ``prefix`` is a leaf (an int or None,
    used for every leaf below) or a container of ``tree``'s own structure down to some depth."""
    if not isinstance(prefix, (dict, list, tuple)):
        return [prefix] * len(flatten(tree)[0])
    if isinstance(prefix, dict) != isinstance(tree, dict) or (
            isinstance(prefix, dict) and set(prefix) != set(tree)) or (
            not isinstance(prefix, dict) and (not isinstance(tree, (list, tuple)) or len(prefix) != len(tree))):
        raise ValueError(f"{where}: the dims {prefix!r} do not match the structure of the value they describe")
    items = [(prefix[k], tree[k]) for k in tree] if isinstance(tree, dict) else list(zip(prefix, tree))
    out: list = []
    for p, t in items:
        out.extend(broadcast_prefix(p, t, where))
    return out
