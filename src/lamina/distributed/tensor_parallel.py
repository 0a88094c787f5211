"""Tensor parallelism (Megatron-LM): one layer's weight split over the ranks of the default group.

Two conjugate ops carry the communication, each the other's backward:

- ``f`` = :func:`copy_to_parallel_region`: identity forward, all-reduce (sum) of the gradient
  backward, since every rank's copy of x feeds a different part of the output, so
  dJ/dx = sum_r dJ_r/dx.
- ``g`` = :func:`reduce_from_parallel_region`: all-reduce (sum) forward, identity backward,
  since y = sum_r y_r gives dJ/dy_r = dJ/dy on every rank.

:class:`ColumnParallelDense` keeps columns [r k, (r + 1) k) of the weight W (in, out), k =
out / R: y_r = f(x) W_r + b_r, the rank's slice of the output (all of it with
``gather_output=True``). :class:`RowParallelDense` keeps rows [r k, (r + 1) k), k = in / R,
and takes the rank's slice x_r of the input: y = g(x_r W_r) + b. A column layer followed by
a row layer (:func:`tensor_parallel_mlp`) needs one all-reduce forward and one backward, the
hidden activations never leaving their rank.

``group=``: a subgroup from :func:`~lamina.distributed.new_group` to split over instead of the
default group (the tensor-parallel group of a 2-D mesh); R and r are then its size and rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.autograd import Function, Tensor
from lamina.distributed.collectives import all_gather, all_reduce
from lamina.distributed.group import resolve_group
from lamina.errors import ShapeError
from lamina.nn.dense import Dense, LinearFunction
from lamina.nn.module import as_tensor, read_parameter
from lamina.nn.sequential import Sequential

__all__ = ["ColumnParallelDense", "RowParallelDense", "copy_to_parallel_region", "gather_from_parallel_region",
           "reduce_from_parallel_region", "tensor_parallel_mlp"]


def _summed(array: np.ndarray, group: Any) -> np.ndarray:
    out = np.array(array, copy=True)
    all_reduce(out, group=group)
    return out


class CopyToParallel(Function):
    """f: y = x; dJ/dx = sum over the ranks of dJ/dy."""

    group = None

    def forward(self, x):
        return np.array(x, copy=True)

    def backward(self, dy):
        return (_summed(dy, self.group),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (ReduceFromParallel.apply(dy, group=self.group),)


class ReduceFromParallel(Function):
    """g: y = sum over the ranks of x; dJ/dx = dJ/dy."""

    group = None

    def forward(self, x):
        return _summed(x, self.group)

    def backward(self, dy):
        return (np.array(dy, copy=True),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (CopyToParallel.apply(dy, group=self.group),)


class GatherFromParallel(Function):
    """y = the ranks' x concatenated along the last axis; dJ/dx = this rank's slice of dJ/dy."""

    group = None

    def forward(self, x):
        group = resolve_group(self.group, "gather_from_parallel_region")
        parts = [np.empty_like(x) for _ in range(group.world_size)]
        all_gather(parts, np.ascontiguousarray(x), group=group)
        self.rank, self.width = group.rank, x.shape[-1]
        return np.concatenate(parts, axis=-1)

    def backward(self, dy):
        return (np.array(dy[..., self.rank * self.width:(self.rank + 1) * self.width], copy=True),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy[..., self.rank * self.width:(self.rank + 1) * self.width],)


def copy_to_parallel_region(x: Any, group: Any = None) -> Tensor:
    """Megatron's f: identity forward, all-reduce (sum) of the gradient backward."""
    return CopyToParallel.apply(as_tensor(x), group=resolve_group(group, "copy_to_parallel_region"))


def reduce_from_parallel_region(x: Any, group: Any = None) -> Tensor:
    """Megatron's g: all-reduce (sum) forward, identity backward."""
    return ReduceFromParallel.apply(as_tensor(x), group=resolve_group(group, "reduce_from_parallel_region"))


def gather_from_parallel_region(x: Any, group: Any = None) -> Tensor:
    """Every rank's ``x`` concatenated along the last axis, in rank order; backward keeps this
    rank's slice of the gradient."""
    return GatherFromParallel.apply(as_tensor(x), group=resolve_group(group, "gather_from_parallel_region"))


def _split(what: str, features: int, group: Any = None) -> tuple[int, int]:
    """(this rank, the width of its slice) of ``features`` split over the ranks (of ``group``)."""
    group = resolve_group(group, what)
    if features % group.world_size:
        raise ShapeError(f"{what}: {features} features cannot be split evenly over world_size = {group.world_size} "
                         "ranks; use a multiple of the world size")
    return group.rank, features // group.world_size


class ColumnParallelDense(Dense):
    """A Dense layer of ``units`` outputs whose weight columns (and bias) are split over the
    ranks: rank r computes outputs [r k, (r + 1) k), k = units / world_size, from the whole
    input. ``gather_output=True`` all-gathers the slices into the whole output. ``group``: the
    ranks to split over (the default group when None)."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, gather_output: bool = False,
                 kernel_init="he_uniform", bias_init="zeros", name: str | None = None, group: Any = None) -> None:
        super().__init__(units, activation=activation, use_bias=use_bias, kernel_init=kernel_init,
                         bias_init=bias_init, name=name)
        self.gather_output = bool(gather_output)
        self.rank, self.local_units = _split("ColumnParallelDense", units, group)
        object.__setattr__(self, "group", group)

    def build(self, input_shape) -> None:
        full = self.units
        self.units = self.local_units             # Dense builds (in, units): the rank's columns
        try:
            super().build(input_shape)
        finally:
            self.units = full

    def forward(self, x) -> Tensor:
        y = self.apply_weights(copy_to_parallel_region(x, self.group), read_parameter(self, "weight"))
        return gather_from_parallel_region(y, self.group) if self.gather_output else y

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        return shape[:-1] + (self.units if self.gather_output else self.local_units,)

    @classmethod
    def from_dense(cls, dense: Dense, gather_output: bool = False, group: Any = None) -> ColumnParallelDense:
        """This rank's column slice of a built ``dense`` layer (its activation kept)."""
        layer = cls(dense.units, activation=dense.activation, use_bias=dense.use_bias, gather_output=gather_output,
                    group=group)
        columns = slice(layer.rank * layer.local_units, (layer.rank + 1) * layer.local_units)
        layer.add_parameter("weight", np.array(dense.weight.data[:, columns]))
        if dense.use_bias:
            layer.add_parameter("bias", np.array(dense.bias.data[columns]))
        layer.built = True
        return layer

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, columns {self.rank * self.local_units}:{(self.rank + 1) * self.local_units}"


class RowParallelDense(Dense):
    """A Dense layer whose weight rows are split over the ranks: rank r multiplies its slice of
    the input features by its rows, the partial outputs are all-reduced, then the (whole) bias
    and the activation are applied. ``input_is_parallel=True`` (after a
    :class:`ColumnParallelDense`): the input is already this rank's slice; otherwise the layer
    takes the slice of the whole input itself. ``group``: the ranks to split over (the default
    group when None)."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, input_is_parallel: bool = True,
                 kernel_init="he_uniform", bias_init="zeros", name: str | None = None, group: Any = None) -> None:
        super().__init__(units, activation=activation, use_bias=use_bias, kernel_init=kernel_init,
                         bias_init=bias_init, name=name)
        self.input_is_parallel = bool(input_is_parallel)
        self.rank = resolve_group(group, "RowParallelDense").rank
        object.__setattr__(self, "group", group)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if not self.input_is_parallel and shape and shape[-1] is not None:
            shape = shape[:-1] + (_split("RowParallelDense", shape[-1], self.group)[1],)
        super().build(shape)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        weight = read_parameter(self, "weight")
        rows = weight.shape[0]
        if not self.input_is_parallel:
            # f before slicing: each rank's gradient covers its own slice, the all-reduce joins them
            x = copy_to_parallel_region(x, self.group)[..., self.rank * rows:(self.rank + 1) * rows]
        if not x.shape or x.shape[-1] != rows:
            raise ShapeError(f"{self._label()}: the input has shape {tuple(x.shape)}; expected (batch, ..., {rows}), "
                             "this rank's slice of the features")
        z = reduce_from_parallel_region(LinearFunction.apply(x, weight), self.group)
        if self.use_bias:
            z = z + read_parameter(self, "bias")
        return self.activation(z) if self.activation is not None else z

    @classmethod
    def from_dense(cls, dense: Dense, input_is_parallel: bool = True, group: Any = None) -> RowParallelDense:
        """This rank's row slice of a built ``dense`` layer (the whole bias, its activation kept)."""
        layer = cls(dense.units, activation=dense.activation, use_bias=dense.use_bias,
                    input_is_parallel=input_is_parallel, group=group)
        rank, rows = _split("RowParallelDense", dense.weight.shape[0], group)
        layer.add_parameter("weight", np.array(dense.weight.data[rank * rows:(rank + 1) * rows]))
        if dense.use_bias:
            layer.add_parameter("bias", np.array(dense.bias.data))
        layer.built = True
        return layer


def tensor_parallel_mlp(hidden_units: int, output_units: int, activation: Any = "relu",
                        use_bias: bool = True, group: Any = None) -> Sequential:
    """Column-parallel Dense(hidden_units, activation) then row-parallel Dense(output_units):
    Megatron's MLP block, one all-reduce forward and one backward (over ``group``)."""
    return Sequential(ColumnParallelDense(hidden_units, activation=activation, use_bias=use_bias, group=group),
                      RowParallelDense(output_units, use_bias=use_bias, group=group))
