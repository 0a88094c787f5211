"""Tensor-parallel Dense layers on 2 forked processes against the unsplit layers in PyTorch, and
the backward rules of the f / g / gather ops."""

import numpy as np
import pytest
import torch

import lamina
import lamina.distributed as dist
from lamina import nn
from lamina.autograd import grad
from lamina.distributed import (
    ColumnParallelDense,
    RowParallelDense,
    copy_to_parallel_region,
    gather_from_parallel_region,
    reduce_from_parallel_region,
)
from lamina.errors import ShapeError

TIGHT = dict(rtol=0, atol=1e-10)


def rank_data(rank, shape, offset=0):
    return np.random.default_rng(10 * rank + offset).standard_normal(shape)


def as_input(array):
    return lamina.tensor(array, dtype=np.float64, requires_grad=True)


def unsplit_mlp():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="tanh"), nn.Dense(3))
    model.build((None, 5))
    return model.double()


def torch_mlp(model, x, dy):
    """The unsplit MLP in PyTorch: outputs and the gradients of sum(out * dy)."""
    weights = [torch.tensor(p.data, requires_grad=True) for p in model.parameters()]
    w1, b1, w2, b2 = weights
    xt = torch.tensor(x, requires_grad=True)
    out = torch.tanh(xt @ w1 + b1) @ w2 + b2
    (out * torch.tensor(dy)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), [w.grad.numpy() for w in weights]


def _column_then_row(rank, x, dy):
    full = unsplit_mlp()
    expected_out, expected_dx, (dw1, db1, dw2, db2) = torch_mlp(full, x, dy)
    column = ColumnParallelDense.from_dense(full[0])
    row = RowParallelDense.from_dense(full[1])
    assert column.weight.shape == (5, 4) and row.weight.shape == (4, 3)
    xt = as_input(x)
    out = row(column(xt))
    (out * lamina.tensor(dy, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(out.data, expected_out, **TIGHT)
    np.testing.assert_allclose(xt.grad, expected_dx, **TIGHT)
    mine = slice(4 * rank, 4 * (rank + 1))
    np.testing.assert_allclose(column.weight.grad, dw1[:, mine], **TIGHT)
    np.testing.assert_allclose(column.bias.grad, db1[mine], **TIGHT)
    np.testing.assert_allclose(row.weight.grad, dw2[mine], **TIGHT)
    np.testing.assert_allclose(row.bias.grad, db2, **TIGHT)


def test_column_then_row_parallel_mlp_equals_the_unsplit_mlp(run_ranks):
    rng = np.random.default_rng(0)
    run_ranks(_column_then_row, 2, rng.standard_normal((6, 5)), rng.standard_normal((6, 3)))


def _gathered_column_and_whole_input_row(rank, x, dy):
    lamina.manual_seed(1)
    dense = nn.Dense(6)
    dense.build((None, 4))
    dense = dense.double()
    w, b = (torch.tensor(p.data, requires_grad=True) for p in (dense.weight, dense.bias))
    xt = torch.tensor(x, requires_grad=True)
    expected = xt @ w + b
    (expected * torch.tensor(dy)).sum().backward()
    mine = slice(3 * rank, 3 * (rank + 1))
    column = ColumnParallelDense.from_dense(dense, gather_output=True)
    inputs = as_input(x)
    out = column(inputs)
    (out * lamina.tensor(dy, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(inputs.grad, xt.grad.numpy(), **TIGHT)
    np.testing.assert_allclose(column.weight.grad, w.grad.numpy()[:, mine], **TIGHT)

    row_dense = nn.Dense(2)
    row_dense.build((None, 6))
    row_dense = row_dense.double()
    wr, br = (torch.tensor(p.data, requires_grad=True) for p in (row_dense.weight, row_dense.bias))
    h = torch.tensor(out.data, requires_grad=True)
    (h @ wr + br).sum().backward()
    row = RowParallelDense.from_dense(row_dense, input_is_parallel=False)
    hidden = as_input(out.data)
    row(hidden).sum().backward()
    np.testing.assert_allclose(hidden.grad, h.grad.numpy(), **TIGHT)      # whole, after the all-reduce
    np.testing.assert_allclose(row.weight.grad, wr.grad.numpy()[mine], **TIGHT)


def test_gathered_column_and_row_on_the_whole_input(run_ranks):
    rng = np.random.default_rng(1)
    run_ranks(_gathered_column_and_whole_input_row, 2, rng.standard_normal((3, 4)), rng.standard_normal((3, 6)))


def _f_and_g_rules(rank):
    x = [rank_data(r, (2, 3)) for r in range(2)]
    w = [rank_data(r, (2, 3), offset=1) for r in range(2)]

    xt = as_input(x[rank])             # f: identity forward, gradients summed over the ranks backward
    y = copy_to_parallel_region(xt)
    np.testing.assert_array_equal(y.data, x[rank])
    (y * lamina.tensor(w[rank], dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(xt.grad, w[0] + w[1], **TIGHT)

    xt = as_input(x[rank])             # g: summed forward, identity backward
    y = reduce_from_parallel_region(xt)
    np.testing.assert_allclose(y.data, x[0] + x[1], **TIGHT)
    (y * lamina.tensor(w[rank], dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(xt.grad, w[rank], **TIGHT)

    xt = as_input(x[rank])             # gather: concatenated forward, own slice backward
    y = gather_from_parallel_region(xt)
    np.testing.assert_allclose(y.data, np.concatenate(x, axis=-1), **TIGHT)
    v = rank_data(5, (2, 6))
    (y * lamina.tensor(v, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(xt.grad, v[:, 3 * rank:3 * (rank + 1)], **TIGHT)

    # second derivatives: J = sum_r sum(f(x_r)^3); dJ/dx_r = sum_r' 3 x_r'^2 (f's backward);
    # d/dx_r sum(dJ/dx_r * v) = sum_r' 6 x_r' v (g's backward is identity, then f's sums again)
    xt = as_input(x[rank])
    (first,) = grad((copy_to_parallel_region(xt) ** 3).sum(), [xt], create_graph=True)
    np.testing.assert_allclose(first.data, 3 * x[0] ** 2 + 3 * x[1] ** 2, **TIGHT)
    v = rank_data(7, (2, 3))
    (second,) = grad((first * lamina.tensor(v, dtype=np.float64)).sum(), [xt])
    np.testing.assert_allclose(second, 6 * (x[0] + x[1]) * v, **TIGHT)


def test_f_and_g_backward_rules(run_ranks):
    run_ranks(_f_and_g_rules, 2)


def _uneven_split(rank):
    with pytest.raises(ShapeError, match="cannot be split evenly"):
        ColumnParallelDense(5)
    mlp = dist.tensor_parallel_mlp(8, 3)
    out = mlp(lamina.tensor(rank_data(0, (2, 5))))
    assert out.shape == (2, 3)
    with pytest.raises(ShapeError, match="this rank's slice"):
        mlp[1](lamina.tensor(rank_data(0, (2, 8))))
    row = RowParallelDense(3, input_is_parallel=False)
    assert row(lamina.tensor(rank_data(0, (2, 8)))).shape == (2, 3)
    assert row.weight.shape == (4, 3)


def test_errors_and_the_mlp_helper(run_ranks):
    run_ranks(_uneven_split, 2)
