"""All parameters as one flat vector, and back (``torch.nn.utils.parameters_to_vector`` and
``vector_to_parameters``): for second-order methods that treat the weights as one vector
(a Hessian-vector product, a line search, a hypernetwork's output), and for comparing or
averaging weights."""

from __future__ import annotations

from collections.abc import Iterable

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.shape import concat

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters, who: str) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameters[{i}] is a {type(p).__name__}, expected a tensor (a Parameter)")
    return params


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """The parameters' values, each flattened in row-major order, joined into one vector
    (on the graph: gradients reach the parameters)."""
    params = _as_list(parameters, "parameters_to_vector")
    if not params:
        raise ValueError("parameters_to_vector: no parameters given")
    return concat([p.reshape(-1) for p in params], axis=0)


def vector_to_parameters(vector, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of ``vector`` (as :func:`parameters_to_vector` lays them out)
    into the parameters' values, in place (no graph; the parameters stay the same objects)."""
    params = _as_list(parameters, "vector_to_parameters")
    values = vector.data if isinstance(vector, Tensor) else backend.xp.asarray(vector)
    total = sum(p.size for p in params)
    if values.ndim != 1 or values.size != total:
        raise ShapeError(f"vector_to_parameters: expected a vector of {total} values (the parameters' sizes "
                         f"{[p.size for p in params]} added), got shape {tuple(values.shape)}")
    start = 0
    for p in params:
        p.data[...] = values[start:start + p.size].reshape(p.shape)
        start += p.size
