"""Group convolutions on images for the groups p4 (the four quarter turns) and p4m (quarter
turns and mirrors), after Cohen & Welling (2016, "Group Equivariant Convolutional Networks").

A p4 / p4m feature map is an NHWC array with one more axis, the group axis: (N, H, W, C, |G|),
|G| = 4 for p4 and 8 for p4m. Element g = 4 m + r (r in 0..3, m in 0..1) is the transformation
T_g: rotate by r quarter turns (``numpy.rot90`` on the (height, width) axes), then, when m = 1,
mirror the width axis. Composition follows from F R^a = R^-a F (F a mirror, R a quarter turn):

    (m1, r1) (m2, r2) = (m1 xor m2, (-1)^m2 r1 + r2 mod 4)

Lifting correlation (image -> group map, weights (K, f, f, C)), for each filter k and g:

    y[., ., k, g] = x * T_g(w_k)

Group correlation (group map -> group map, weights (K, f, f, C, |G|)): the filter for output
element g is the spatial transform of the filter with its group axis permuted,

    y[., ., k, g] = sum_s x[., ., :, s] * T_g(w_k[., ., :, g^-1 s])

Both build the transformed filter bank (K |G|, f, f, C |G_in|) with one index gather of the
weights and run one ordinary :func:`lamina.functional.conv2d` on the input with its channel and
group axes merged, so gradients (of any order) come from existing ops. Equivariance: with
L_h x = T_h x for an image and (L_h x)[., ., :, s] = T_h(x[., ., :, h^-1 s]) for a group map,
y(L_h x) = L_h y(x), exactly when the grid the output is sampled on maps to itself under T_h
(see :func:`group_conv2d`).
"""

from __future__ import annotations

from functools import cache

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv import conv2d
from lamina.functional.indexing import flip, index_select
from lamina.functional.shape_parity import rot90

__all__ = ["GROUP_ORDERS", "group_action", "group_conv2d", "group_filter_bank", "group_inverse", "group_pool",
           "group_product", "group_transform"]

GROUP_ORDERS = {"p4": 4, "p4m": 8}
"""The number of elements of each supported group (the length of a feature map's group axis)."""


def _order(group: str, op: str) -> int:
    if group not in GROUP_ORDERS:
        raise ValueError(f"{op}: group must be one of {sorted(GROUP_ORDERS)}, got {group!r}")
    return GROUP_ORDERS[group]


def group_transform(a, element: int, axes=(0, 1)):
    """T_g of the NumPy array ``a`` in the plane of ``axes``: ``element`` = 4 m + r quarter turns
    r, then a mirror of the second axis when m = 1."""
    turned = numpy.rot90(a, element % 4, axes=axes)
    return numpy.flip(turned, axis=axes[1]) if element >= 4 else turned


@cache
def _tables(group: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(product[a, b] = index of a b, inverse[a]) found by composing the transformations of a
    grid whose eight images are all different."""
    order = _order(group, "group tables")
    probe = numpy.arange(9).reshape(3, 3)
    images = [group_transform(probe, g) for g in range(order)]

    def which(image) -> int:
        return next(g for g, candidate in enumerate(images) if numpy.array_equal(candidate, image))
    product = numpy.array([[which(group_transform(images[b], a)) for b in range(order)] for a in range(order)])
    inverse = numpy.array([int(numpy.flatnonzero(product[a] == 0)[0]) for a in range(order)])
    return product, inverse


def group_product(group: str) -> numpy.ndarray:
    """The multiplication table of ``group`` ('p4' or 'p4m'): entry [a, b] is the index of a b
    (T_a applied after T_b)."""
    return _tables(group)[0].copy()


def group_inverse(group: str) -> numpy.ndarray:
    """inverse[g] is the index of g^-1 in ``group``."""
    return _tables(group)[1].copy()


def _spatial_sources(f: int, element: int) -> numpy.ndarray:
    """(f, f) flat positions: T_g(w)[i, j] = w.flat[sources[i, j]] for an (f, f) kernel w."""
    return group_transform(numpy.arange(f * f).reshape(f, f), element)


@cache
def _bank_index(group: str, k: int, f: int, c: int, g_in: int) -> numpy.ndarray:
    """Flat positions in the weights (K, f, f, C[, |G_in|]) of the bank (K, |G|, f, f, C, |G_in|)."""
    order = GROUP_ORDERS[group]
    product, inverse = _tables(group)
    spatial = numpy.stack([_spatial_sources(f, g) for g in range(order)])            # (|G|, f, f)
    if g_in == 1:
        group_source = numpy.zeros((order, 1), dtype=numpy.int64)
    else:
        group_source = product[inverse]                                              # [g, s] = g^-1 s
    index = (numpy.arange(k)[:, None, None, None, None, None] * (f * f)
             + spatial[None, :, :, :, None, None]) * (c * g_in)
    index = index + numpy.arange(c)[:, None] * g_in + group_source[None, :, None, None, None, :]
    return index.reshape(-1)


def _check_weight(weight, op: str) -> tuple[int, int, int, int]:
    shape = tuple(weight.shape)
    if len(shape) not in (4, 5):
        raise ShapeError(f"{op}: expected weights (K, f, f, C) (lifting) or (K, f, f, C, |G|) (group), got "
                         f"shape {shape}")
    if shape[1] != shape[2]:
        raise ShapeError(f"{op}: the kernel must be square (a quarter turn maps it to itself), got a "
                         f"{shape[1]}x{shape[2]} kernel (weight shape {shape})")
    return shape[0], shape[1], shape[3], shape[4] if len(shape) == 5 else 1


def group_filter_bank(weight, group: str = "p4") -> Tensor:
    """The transformed filters (K |G|, f, f, C |G_in|) of ``weight``: row k |G| + g holds T_g(w_k)
    for lifting weights (K, f, f, C) (|G_in| = 1), and T_g(w_k[..., g^-1 s]) at column c |G_in| + s
    for group weights (K, f, f, C, |G|) (module docstring). One gather: its gradient sums the
    |G| transformed copies back onto each weight."""
    op = "group_filter_bank"
    order = _order(group, op)
    k, f, c, g_in = _check_weight(weight, op)
    if g_in not in (1, order):
        raise ShapeError(f"{op}: weights of shape {tuple(weight.shape)} have a group axis of {g_in}; "
                         f"{group} has {order} elements")
    flat = weight.reshape(-1) if isinstance(weight, Tensor) else numpy.asarray(weight).reshape(-1)
    bank = index_select(flat, 0, _bank_index(group, k, f, c, g_in))
    return bank.reshape(k * order, f, f, c * g_in)


def group_conv2d(x, weight, bias=None, group: str = "p4", stride=1, padding=0) -> Tensor:
    """The lifting (weights (K, f, f, C), x (N, H, W, C)) or group (weights (K, f, f, C, |G|), x
    (N, H, W, C, |G|)) correlation of the module docstring, plus ``bias`` (K,) shared by the |G|
    maps of each filter: output (N, H', W', K, |G|), H' and W' as :func:`conv2d` for ``stride``
    and ``padding``.

    Equivariance is exact when the output's sampling grid is symmetric: symmetric padding p
    (an int, 'valid', or 'same' with an odd f) and a stride s dividing H + 2p - f (and W + 2p - f),
    e.g. every stride-1 'valid' layer, stride-1 'same' with an odd kernel for any size, stride 2
    'same' with an odd kernel on an odd size. 'same' with an even kernel pads one side more and a
    stride that does not divide leaves out a border on one side only: rotating such inputs moves
    the sampling grid, and the output is equivariant only up to that shift.
    """
    op = "group_conv2d"
    order = _order(group, op)
    k, f, c, g_in = _check_weight(weight, op)
    xs = tuple(x.shape)
    lifting = g_in == 1 and len(weight.shape) == 4
    expected = (f"an image batch (N, H, W, {c})" if lifting
                else f"a {group} feature map (N, H, W, {c}, {order})")
    want_ndim = 4 if lifting else 5
    if len(xs) != want_ndim or xs[3] != c or (not lifting and xs[4] != g_in):
        hint = ""
        if lifting and len(xs) == 5:
            hint = " (a group feature map goes through a group convolution with weights (K, f, f, C, |G|))"
        elif not lifting and len(xs) == 4:
            hint = " (lift an image to the group first, with weights (K, f, f, C))"
        raise ShapeError(f"{op}: expected x as {expected} for weights of shape {tuple(weight.shape)}, "
                         f"got shape {xs}{hint}")
    if not lifting and g_in != order:
        raise ShapeError(f"{op}: weights of shape {tuple(weight.shape)} have a group axis of {g_in}; "
                         f"{group} has {order} elements")
    merged = x.reshape(*xs[:3], c * g_in)
    y = conv2d(merged, group_filter_bank(weight, group), None, stride=stride, padding=padding)
    y = y.reshape(*y.shape[:3], k, order)
    return y if bias is None else y + bias.reshape(k, 1)


def group_action(x, element: int, group: str = "p4") -> Tensor:
    """L_g x: an image batch (N, H, W, C) transformed by T_g on (H, W); a feature map
    (N, H, W, C, |G|) transformed by T_g with its group axis permuted, out[..., s] = T_g(x[..., g^-1 s]).
    The layers of :mod:`lamina.nn.group_conv` commute with it (see :func:`group_conv2d`)."""
    op = "group_action"
    order = _order(group, op)
    if not 0 <= int(element) < order:
        raise ValueError(f"{op}: element must be in 0..{order - 1} for {group}, got {element!r}")
    element = int(element)
    if x.ndim not in (4, 5) or (x.ndim == 5 and x.shape[4] != order):
        raise ShapeError(f"{op}: expected an image batch (N, H, W, C) or a {group} feature map "
                         f"(N, H, W, C, {order}), got shape {tuple(x.shape)}")
    y = rot90(x, element % 4, axes=(1, 2))
    if element >= 4:
        y = flip(y, 2)
    if x.ndim == 5:
        product, inverse = _tables(group)
        y = index_select(y, 4, product[inverse[element]])
    return y


def group_pool(x, reduction: str = "max") -> Tensor:
    """The maximum or mean over the group axis of a feature map (N, H, W, K, |G|): (N, H, W, K),
    which an element of the group only moves in space (invariant along the group axis)."""
    if reduction not in ("max", "mean"):
        raise ValueError(f"group_pool: reduction must be 'max' or 'mean', got {reduction!r}")
    if x.ndim != 5:
        raise ShapeError(f"group_pool: expected a group feature map (N, H, W, K, |G|), got shape "
                         f"{tuple(x.shape)}")
    return x.max(axis=-1) if reduction == "max" else x.mean(axis=-1)
