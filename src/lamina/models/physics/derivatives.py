"""Derivatives of a network's output with respect to its inputs, the terms of a PDE residual.

For inputs x (N, d) and outputs u (N, m) of a *pointwise* network (row n of u depends on row n
of x only: no batch statistics), du_c/dx is the gradient of sum_n u[n, c] with respect to x,
one backward pass for all N points. Every derivative is recorded on the graph
(``create_graph=True``), so a loss built from it can be differentiated once more (with respect
to the weights when training a PINN, or again with respect to x for a higher derivative)::

    du/dx_i            = derivative(u, x, wrt=i)
    d2u/dx_i^2         = derivative(u, x, wrt=i, order=2)
    d2u/dx_i dx_j      = derivative(u, x, wrt=(i, j))
    sum_i d2u/dx_i^2   = laplacian(u, x)
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend
from lamina.autograd import Tensor, grad
from lamina.errors import ShapeError

__all__ = ["derivative", "gradient", "laplacian"]

MAX_ORDER = 2


def _check_points(u, x, where: str) -> None:
    if not isinstance(x, Tensor) or not isinstance(u, Tensor):
        raise TypeError(f"{where}: u and x must be Tensors, got {type(u).__name__} and {type(x).__name__}")
    if x.ndim != 2:
        raise ShapeError(f"{where}: the points x must have shape (N, d), got {tuple(x.shape)}")
    if not x.requires_grad:
        raise ValueError(f"{where}: the points x (shape {tuple(x.shape)}) must require grad, and u be computed "
                         "from them: lamina.tensor(points, requires_grad=True)")
    if not u.requires_grad:
        raise ValueError(f"{where}: u (shape {tuple(u.shape)}) is not on the graph of x: compute it from x "
                         "outside no_grad")
    if u.ndim not in (1, 2) or u.shape[0] != x.shape[0]:
        raise ShapeError(f"{where}: u must have shape (N,) or (N, m) for the N = {x.shape[0]} points x, "
                         f"got {tuple(u.shape)}")


def _column(u: Tensor, component: int, where: str) -> Tensor:
    """u[:, component] as (N, 1)."""
    width = 1 if u.ndim == 1 else u.shape[1]
    if isinstance(component, bool) or not isinstance(component, int) or not 0 <= component < width:
        raise ValueError(f"{where}: component must be an int in [0, {width}) for u of shape {tuple(u.shape)}, "
                         f"got {component!r}")
    return u.reshape(-1, 1) if u.ndim == 1 else u[:, component:component + 1]


def _gradient_of_column(column: Tensor, x: Tensor) -> Tensor:
    """d column / dx (N, d) on the graph; zeros where the column does not depend on x."""
    if column.requires_grad:
        (g,) = grad(column.sum(), x, allow_unused=True, create_graph=True)
        if g is not None:
            return g if isinstance(g, Tensor) else Tensor._wrap(g)
    return Tensor._wrap(backend.xp.zeros(x.shape, dtype=x.dtype))


def gradient(u: Tensor, x: Tensor, component: int = 0) -> Tensor:
    """du_c/dx of shape (N, d): every first derivative of output ``component`` c at once."""
    _check_points(u, x, "gradient")
    return _gradient_of_column(_column(u, component, "gradient"), x)


def _coordinates(wrt, order, dims: int) -> tuple[int, ...]:
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"derivative: order must be 1 or 2, got {order!r}")
    if order > MAX_ORDER:
        raise ValueError(f"derivative: order {order} is unsupported (at most {MAX_ORDER}); differentiate the "
                         "result again with derivative(...) for a higher one")
    coordinates = tuple(wrt) if isinstance(wrt, Sequence) else (wrt,) * order
    if not 1 <= len(coordinates) <= MAX_ORDER:
        raise ValueError(f"derivative: wrt must name 1 or 2 input coordinates, got {wrt!r}")
    if isinstance(wrt, Sequence) and order not in (1, len(coordinates)):
        raise ValueError(f"derivative: wrt={wrt!r} names {len(coordinates)} coordinates but order={order}")
    for i in coordinates:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < dims:
            raise ValueError(f"derivative: input coordinates must be ints in [0, {dims}) for x of shape (N, {dims}), "
                             f"got wrt={wrt!r}")
    return coordinates


def derivative(u: Tensor, x: Tensor, wrt: int | Sequence[int] = 0, order: int = 1, component: int = 0) -> Tensor:
    """The derivative of output ``component`` of u with respect to input coordinates ``wrt``,
    shape (N, 1): du_c/dx_i (``wrt=i``), d2u_c/dx_i^2 (``wrt=i, order=2``) or the mixed
    d2u_c/dx_i dx_j (``wrt=(i, j)``). Orders above 2 raise; apply it to its own result instead."""
    _check_points(u, x, "derivative")
    coordinates = _coordinates(wrt, order, x.shape[1])
    value = _column(u, component, "derivative")
    for i in coordinates:
        value = _gradient_of_column(value, x)[:, i:i + 1]
    return value


def laplacian(u: Tensor, x: Tensor, component: int = 0, dims: Sequence[int] | None = None) -> Tensor:
    """sum_i d2u_c/dx_i^2 over the coordinates ``dims`` (default all), shape (N, 1); pass the
    spatial coordinates only for inputs that also hold the time."""
    _check_points(u, x, "laplacian")
    dims = tuple(range(x.shape[1])) if dims is None else tuple(dims)
    if not dims:
        raise ValueError("laplacian: dims must name at least one input coordinate")
    for i in dims:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < x.shape[1]:
            raise ValueError(f"laplacian: dims must be ints in [0, {x.shape[1]}) for x of shape "
                             f"{tuple(x.shape)}, got {dims!r}")
    first = gradient(u, x, component)
    total = None
    for i in dims:
        second = _gradient_of_column(first[:, i:i + 1], x)[:, i:i + 1]
        total = second if total is None else total + second
    return total
