"""Axis algebra in the einops notation: ``rearrange``, ``reduce``, ``repeat``, ``pack``, ``unpack``.

A pattern names the input's axes on the left of ``->`` and the output's on the right:

- ``"b h w c -> b (h w) c"``: a group in parentheses is one axis whose length is the product of
  its members' (merged on the right, split on the left: ``"b (h p) w c -> b h p w c"`` with ``p=2``);
- ``"... c -> c ..."``: ``...`` stands for all the axes not named (at most once per side);
- ``1`` or ``()`` is an axis of length 1: dropped from the left, inserted on the right;
- in :func:`reduce`, the axes missing on the right are reduced over, and a number on the left
  is an unnamed axis of that length to reduce (``"b (h 2) (w 2) c -> b h w c"`` pools 2 x 2);
- in :func:`repeat`, the axes only on the right are new: their values are copies, and their
  lengths come from keywords or are numbers in the pattern (``"h w -> h w 3"``).

Each call is at most reshape -> reduction -> transpose -> broadcast -> reshape, all existing
ops, so gradients and second derivatives come with them. Parsed patterns and the plans
computed for an input shape are cached, so a pattern in a training loop is parsed once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.reduce import mean as _mean
from lamina.functional.reduce import sum as _sum
from lamina.functional.reduce_more import prod as _prod
from lamina.functional.shape import broadcast_to, concat, getitem, reshape, stack, transpose
from lamina.functional.stats_parity import all as _all
from lamina.functional.stats_parity import amax, amin
from lamina.functional.stats_parity import any as _any

__all__ = ["pack", "rearrange", "reduce", "repeat", "unpack"]

ELLIPSIS = "..."
REDUCTIONS: dict[str, Callable] = {"mean": _mean, "sum": _sum, "max": amax, "min": amin, "prod": _prod,
                                   "any": _any, "all": _all}
"""The named reductions of :func:`reduce`; 'any' and 'all' give booleans and no gradient."""


@dataclass(frozen=True)
class _Side:
    """One side of a pattern: its groups, tuples of axis names, ``...`` or lengths (ints); an
    axis outside parentheses is a group of one, and a ``...`` outside them is the string itself."""

    groups: tuple

    @property
    def names(self) -> set[str]:
        return {a for g in self.groups if g != ELLIPSIS for a in g if isinstance(a, str) and a != ELLIPSIS}

    @property
    def has_ellipsis(self) -> bool:
        return any(g == ELLIPSIS or ELLIPSIS in g for g in self.groups)


@dataclass(frozen=True)
class _Pattern:
    text: str
    left: _Side
    right: _Side


def _fail(op: str, pattern: str, message: str, shape=None) -> ShapeError:
    where = f"{op}({pattern!r})" + ("" if shape is None else f" on an input of shape {tuple(shape)}")
    return ShapeError(f"{where}: {message}")


def _parse_side(text: str, op: str, pattern: str, side: str) -> _Side:
    groups, current = [], None
    seen: set[str] = set()
    for token in text.replace("(", " ( ").replace(")", " ) ").split():
        if token == "(":
            if current is not None:
                raise _fail(op, pattern, f"nested parentheses on the {side}")
            current = []
            continue
        if token == ")":
            if current is None:
                raise _fail(op, pattern, f"')' without '(' on the {side}")
            groups.append(tuple(current))
            current = None
            continue
        if token == ELLIPSIS:
            if ELLIPSIS in seen:
                raise _fail(op, pattern, f"'...' twice on the {side}")
            if current is not None and side == "left":
                raise _fail(op, pattern, "'...' inside parentheses on the left (only the right may group it)")
            seen.add(ELLIPSIS)
            axis = ELLIPSIS
        elif token.isdecimal():
            axis = int(token)
            if axis < 1:
                raise _fail(op, pattern, f"an unnamed axis must have a positive length, got {token}")
        elif token.isidentifier():
            if token in seen:
                raise _fail(op, pattern, f"the axis {token!r} appears twice on the {side}")
            seen.add(token)
            axis = token
        else:
            raise _fail(op, pattern, f"{token!r} on the {side} is neither an axis name, a number, '...' nor "
                                     "a parenthesis")
        if current is None:
            groups.append(ELLIPSIS if axis == ELLIPSIS else (axis,))
        else:
            current.append(axis)
    if current is not None:
        raise _fail(op, pattern, f"'(' not closed on the {side}")
    return _Side(tuple(groups))


@functools.lru_cache(maxsize=512)
def _parse(pattern: str, op: str) -> _Pattern:
    """The pattern's two sides, checked for what ``op`` allows (independent of any shape)."""
    if not isinstance(pattern, str) or pattern.count("->") != 1:
        raise _fail(op, pattern, "a pattern is 'left -> right' with one '->'")
    left_text, right_text = pattern.split("->")
    left = _parse_side(left_text, op, pattern, "left")
    right = _parse_side(right_text, op, pattern, "right")
    unknown = sorted(right.names - left.names)
    dropped = sorted(left.names - right.names)
    if op == "rearrange" and unknown:
        raise _fail(op, pattern, f"unknown axis {unknown} on the right: every output axis must be on the left "
                                 "(repeat creates new axes)")
    if op == "rearrange" and dropped:
        raise _fail(op, pattern, f"the axes {dropped} of the left are missing on the right "
                                 "(reduce removes axes)")
    if op == "reduce" and unknown:
        raise _fail(op, pattern, f"unknown axis {unknown} on the right: reduce only keeps or removes axes")
    if op == "repeat" and dropped:
        raise _fail(op, pattern, f"the axes {dropped} of the left are missing on the right "
                                 "(repeat only adds axes; reduce removes them)")
    if right.has_ellipsis and not left.has_ellipsis:
        raise _fail(op, pattern, "'...' on the right but not on the left")
    if left.has_ellipsis and not right.has_ellipsis and op != "reduce":
        raise _fail(op, pattern, "'...' on the left but not on the right")
    numbers = {name: [a for g in side.groups if g != ELLIPSIS for a in g if isinstance(a, int) and a != 1]
               for name, side in (("left", left), ("right", right))}
    if op != "reduce" and numbers["left"]:
        raise _fail(op, pattern, f"an unnamed axis of length {numbers['left'][0]} on the left: only reduce "
                                 "may remove one (name it to keep it)")
    if op != "repeat" and numbers["right"]:
        raise _fail(op, pattern, f"an unnamed axis of length {numbers['right'][0]} on the right: only repeat "
                                 "may create one")
    return _Pattern(pattern, left, right)


def _check_sizes(parsed: _Pattern, op: str, sizes: dict) -> None:
    names = parsed.left.names | parsed.right.names
    for name, n in sizes.items():
        if name not in names:
            raise _fail(op, parsed.text, f"a length is given for the axis {name!r}, which the pattern does not "
                                         f"have (its axes: {sorted(names)})")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise _fail(op, parsed.text, f"the length of the axis {name!r} must be a positive int, got {n!r}")


@dataclass(frozen=True)
class _Plan:
    """What one call does to an input of one shape (None: skip the step)."""

    split: tuple | None          # reshape to one axis per elementary axis of the left
    reduced: tuple[int, ...]     # positions (in split) reduced over
    permutation: tuple | None
    inserted: tuple | None       # reshape adding the length-1 places of repeat's new axes
    broadcast: tuple | None      # their full lengths
    output: tuple                # the output's shape


def _expand_ellipsis(groups, n: int) -> list[tuple]:
    """Groups with ``...`` replaced by ``n`` axes named '...0', '...1' (not identifiers, so
    they clash with no name): each its own group when alone, members of the group in parentheses."""
    names = tuple(f"{ELLIPSIS}{i}" for i in range(n))
    out = []
    for g in groups:
        if g == ELLIPSIS:
            out.extend((name,) for name in names)
        elif ELLIPSIS in g:
            k = g.index(ELLIPSIS)
            out.append(g[:k] + names + g[k + 1:])
        else:
            out.append(g)
    return out


def _product(values):
    return None if any(v is None for v in values) else math.prod(values)


@functools.lru_cache(maxsize=1024)
def _plan(pattern: str, op: str, shape: tuple, sizes: tuple) -> _Plan:
    """The steps for an input of ``shape`` (entries may be None: unknown, for shape inference)."""
    parsed = _parse(pattern, op)
    left, right = parsed.left, parsed.right
    fixed = len(left.groups) - left.has_ellipsis
    if len(shape) < fixed or (len(shape) != fixed and not left.has_ellipsis):
        wanted = f"at least {fixed}" if left.has_ellipsis else f"{fixed}"
        raise _fail(op, pattern, f"the left names {wanted} axes, the input has {len(shape)}", shape)
    left_groups = _expand_ellipsis(left.groups, len(shape) - fixed)
    right_groups = _expand_ellipsis(right.groups, len(shape) - fixed)

    # anonymous axes get keys of their own: ('#', side, group, position)
    def keyed(groups, side):
        return [tuple(a if isinstance(a, str) else ("#", side, i, j, a) for j, a in enumerate(g))
                for i, g in enumerate(groups)]

    left_groups, right_groups = keyed(left_groups, "left"), keyed(right_groups, "right")
    length = dict(sizes)
    for key in (a for g in left_groups + right_groups for a in g if isinstance(a, tuple)):
        length[key] = key[-1]
    for group, dim in zip(left_groups, shape):
        unknown = [a for a in group if a not in length]
        known = _product([length[a] for a in group if a in length])
        if len(unknown) > 1:
            raise _fail(op, pattern, f"cannot infer the lengths of {unknown} in one group: give all but one "
                                     "as keywords", shape)
        if dim is None or known is None:
            for a in unknown:
                length[a] = None
        elif unknown:
            if known == 0 or dim % known:
                raise _fail(op, pattern, f"an axis of length {dim} cannot be split into {_show(group)} with "
                                         f"{_lengths(group, length)}", shape)
            length[unknown[0]] = dim // known
        elif known != dim:
            raise _fail(op, pattern, f"an axis of length {dim} does not match {_show(group)} = "
                                     f"{_lengths(group, length)}", shape)
    for group in right_groups:
        for a in group:
            if a not in length:
                raise _fail(op, pattern, f"the new axis {a!r} needs its length as a keyword ({a}=...)", shape)

    def unit(a):
        return isinstance(a, tuple) and a[-1] == 1

    elementary = [a for g in left_groups for a in g if not unit(a)]
    on_right = {a for g in right_groups for a in g}
    reduced = tuple(i for i, a in enumerate(elementary) if a not in on_right)
    kept = [a for a in elementary if a in on_right]
    right_elementary = [a for g in right_groups for a in g if not unit(a)]
    existing = [a for a in right_elementary if a in kept]
    permutation = tuple(kept.index(a) for a in existing)
    split = tuple(length[a] for a in elementary)
    new_axes = len(existing) != len(right_elementary)
    output = tuple(_product([length[a] for a in g]) for g in right_groups)
    return _Plan(
        split=None if split == tuple(shape) else split,
        reduced=reduced,
        permutation=None if permutation == tuple(range(len(permutation))) else permutation,
        inserted=tuple(length[a] if a in kept else 1 for a in right_elementary) if new_axes else None,
        broadcast=tuple(length[a] for a in right_elementary) if new_axes else None,
        output=output,
    )


def _show(group) -> str:
    names = [a if isinstance(a, str) else str(a[-1]) for a in group]
    return "(" + " ".join(names) + ")"


def _lengths(group, length) -> str:
    named = [f"{a}={length[a]}" for a in group if isinstance(a, str) and a in length]
    return ", ".join(named) if named else "no lengths given"


def _sizes_key(op: str, pattern: str, sizes: dict) -> tuple:
    _check_sizes(_parse(pattern, op), op, sizes)
    return tuple(sorted(sizes.items()))


def steps(op: str, pattern: str, shape: Sequence, sizes: dict) -> _Plan:
    """What ``op`` ('rearrange', 'reduce' or 'repeat') does to an input of ``shape``, whose
    entries may be None (unknown): the reshape, reduction, transpose and broadcast it makes,
    with None for a length that depends on an unknown one (for exporters and shape inference)."""
    return _plan(pattern, op, tuple(shape), _sizes_key(op, pattern, sizes))


def output_shape(op: str, pattern: str, shape: Sequence, **sizes) -> tuple:
    """The shape ``op`` gives for an input of ``shape`` (entries may be None, see :func:`steps`)."""
    return steps(op, pattern, shape, sizes).output


def check_pattern(op: str, pattern: str, sizes: dict) -> None:
    """Raise the error ``op`` would raise for ``pattern`` and ``sizes`` regardless of the input."""
    _sizes_key(op, pattern, sizes)


def _as_input(x) -> Tensor:
    if isinstance(x, (list, tuple)):
        return stack(list(x), axis=0)          # einops' convention: a list is stacked on a first axis
    return x if isinstance(x, Tensor) else Tensor(x)


def _apply(x, op: str, pattern: str, sizes: dict, reduction=None) -> Tensor:
    x = _as_input(x)
    plan = steps(op, pattern, x.shape, sizes)
    if plan.split is not None:
        x = reshape(x, plan.split)
    if plan.reduced:
        x = reduction(x, plan.reduced)
    if plan.permutation is not None:
        x = transpose(x, plan.permutation)
    if plan.inserted is not None:
        x = broadcast_to(reshape(x, plan.inserted), plan.broadcast)
    if tuple(x.shape) != plan.output:
        x = reshape(x, plan.output)
    return x


def rearrange(x, pattern: str, /, **axis_sizes: int) -> Tensor:
    """Reorder, merge and split axes by a pattern, e.g. ``rearrange(x, "b h w c -> b (h w) c")``
    or, cutting 2 x 2 patches, ``rearrange(x, "b (h p) (w q) c -> b h w (p q c)", p=2, q=2)``.
    Every value is kept: the output is a permutation of the input's values. ``x`` may be a
    list of tensors of one shape, stacked on a new first axis."""
    return _apply(x, "rearrange", pattern, axis_sizes)


def reduce(x, pattern: str, /, reduction: str | Callable = "mean", **axis_sizes: int) -> Tensor:
    """Reduce over the axes of the left that the right leaves out, e.g. global average pooling
    ``reduce(x, "b h w c -> b c", "mean")`` or 2 x 2 max pooling
    ``reduce(x, "b (h 2) (w 2) c -> b h w c", "max")``. ``reduction`` is 'mean', 'sum',
    'max', 'min', 'prod' (differentiable; the gradient of max and min is shared among ties),
    'any' or 'all' (booleans), or a callable ``f(tensor, axes) -> tensor``."""
    if callable(reduction):
        fn = reduction
    elif reduction in REDUCTIONS:
        fn = functools.partial(_keyword_axes, REDUCTIONS[reduction])
    else:
        raise ValueError(f"reduce({pattern!r}): unknown reduction {reduction!r}; expected one of "
                         f"{sorted(REDUCTIONS)} or a callable f(tensor, axes)")
    return _apply(x, "reduce", pattern, axis_sizes, fn)


def _keyword_axes(fn, x, axes):
    return fn(x, axis=axes)


def repeat(x, pattern: str, /, **axis_sizes: int) -> Tensor:
    """Copy values along new axes, e.g. ``repeat(x, "h w -> h w c", c=3)`` (a gray image as
    RGB) or ``repeat(x, "b h w c -> b (h 2) (w 2) c")`` (nearest-neighbour upsampling). The
    gradient of a copied value is the sum over its copies."""
    return _apply(x, "repeat", pattern, axis_sizes)


# -- pack / unpack -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _parse_pack(pattern: str, op: str) -> tuple[int, int]:
    """(axes before '*', axes after it) of a pack pattern such as 'b * c'."""
    names = pattern.split() if isinstance(pattern, str) else None
    if not names or names.count("*") != 1:
        raise ShapeError(f"{op}({pattern!r}): the pattern names axes and holds one '*', as 'b * c'")
    for name in names:
        if name != "*" and not name.isidentifier():
            raise ShapeError(f"{op}({pattern!r}): {name!r} is not an axis name (parentheses, numbers and '...' "
                             "are not allowed in a pack pattern)")
    named = [n for n in names if n != "*"]
    if len(set(named)) != len(named):
        raise ShapeError(f"{op}({pattern!r}): an axis name appears twice")
    star = names.index("*")
    return star, len(names) - star - 1


def pack(tensors: Sequence, pattern: str) -> tuple[Tensor, list[tuple[int, ...]]]:
    """Join tensors that agree on the named axes, their other axes (where ``*`` is) flattened
    into one and concatenated: ``pack([a, b], "b * c")`` with a (2, 5, c) and b (2, 3, 4, c)
    gives (2, 17, c) and the shapes [(5,), (3, 4)] that :func:`unpack` needs to undo it."""
    before, after = _parse_pack(pattern, "pack")
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ShapeError(f"pack({pattern!r}): expected a non-empty list of tensors, got {type(tensors).__name__}")
    flattened, shapes = [], []
    for i, t in enumerate(tensors):
        t = t if isinstance(t, Tensor) else Tensor(t)
        if t.ndim < before + after:
            raise ShapeError(f"pack({pattern!r}): tensor {i} of shape {tuple(t.shape)} has fewer than the "
                             f"{before + after} named axes")
        star = tuple(t.shape[before:t.ndim - after])
        shapes.append(star)
        target = tuple(t.shape[:before]) + (math.prod(star),) + tuple(t.shape[t.ndim - after:])
        flattened.append(t if target == tuple(t.shape) else reshape(t, target))
    try:
        packed = flattened[0] if len(flattened) == 1 else concat(flattened, axis=before)
    except ShapeError:
        raise ShapeError(f"pack({pattern!r}): the tensors disagree on the named axes: shapes "
                         f"{[tuple(t.shape) for t in tensors]}") from None
    return packed, shapes


def unpack(packed, packed_shapes: Sequence[Sequence[int]], pattern: str) -> list[Tensor]:
    """The inverse of :func:`pack`: the tensors, cut from ``packed``'s ``*`` axis and given
    the shapes ``packed_shapes`` there (one of them may hold a -1, inferred)."""
    before, after = _parse_pack(pattern, "unpack")
    packed = packed if isinstance(packed, Tensor) else Tensor(packed)
    if packed.ndim != before + after + 1:
        raise ShapeError(f"unpack({pattern!r}): the packed tensor of shape {tuple(packed.shape)} should have "
                         f"{before + after + 1} axes")
    shapes = [tuple(int(n) for n in s) for s in packed_shapes]
    total = packed.shape[before]
    open_ones = [i for i, s in enumerate(shapes) if -1 in s]
    if len(open_ones) > 1 or any(s.count(-1) > 1 for s in shapes):
        raise ShapeError(f"unpack({pattern!r}): only one -1 may appear in packed_shapes {shapes}")
    known = sum(math.prod(s) for s in shapes if -1 not in s)
    if open_ones:
        i = open_ones[0]
        rest = math.prod(n for n in shapes[i] if n != -1)
        if total < known or rest == 0 or (total - known) % rest:
            raise ShapeError(f"unpack({pattern!r}): cannot infer the -1 of {shapes[i]}: the packed axis has "
                             f"length {total}, the other shapes take {known}")
        shapes[i] = tuple((total - known) // rest if n == -1 else n for n in shapes[i])
    elif known != total:
        raise ShapeError(f"unpack({pattern!r}): packed_shapes {shapes} hold {known} values per position, the "
                         f"packed axis of shape {tuple(packed.shape)} has {total}")
    outer, inner = tuple(packed.shape[:before]), tuple(packed.shape[before + 1:])
    pieces, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        piece = getitem(packed, (slice(None),) * before + (slice(start, start + n),))
        pieces.append(reshape(piece, outer + shape + inner))
        start += n
    return pieces
