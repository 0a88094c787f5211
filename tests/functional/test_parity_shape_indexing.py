"""Shape, indexing, search and construction ops against PyTorch (lamina.functional.shape_parity
and indexing_parity): values and gradients in float32 and float64, gradient checks, second
derivatives, the tie and duplicate-index rules, empty inputs and the error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    op_table_tests,
    randn,
)
from lamina.functional import indexing_parity as IP
from lamina.functional import shape_parity as SP
from lamina.functional import stack

INDEX = np.array([[0, 2, 1, 2], [1, 0, 0, 1]])            # duplicates within every row
UNIQUE_INDEX = np.array([[2, 0, 1], [1, 2, 0]])            # a permutation per row
SLICES = np.array([2, 0, 2])
T = torch.from_numpy


def ties(*shape, seed=0):
    """Values from a few levels, so that maxima tie."""
    return np.random.default_rng(seed).integers(-2, 3, shape).astype(np.float64)


def with_zeros(*shape, seed=0):
    x = randn(*shape, seed=seed)
    x.reshape(-1)[::3] = 0.0
    return x


# name: (lamina function, torch function, inputs)
CASES = {
    "movedim": (lambda x: SP.movedim(x, 0, -1), lambda x: torch.movedim(x, 0, -1), [randn(2, 3, 4)]),
    "movedim_many": (lambda x: SP.movedim(x, (0, 1), (2, 0)), lambda x: torch.movedim(x, (0, 1), (2, 0)),
                     [randn(2, 3, 4)]),
    "unflatten": (lambda x: SP.unflatten(x, 1, (2, -1)), lambda x: torch.unflatten(x, 1, (2, -1)), [randn(3, 6)]),
    "narrow": (lambda x: SP.narrow(x, 1, -3, 2), lambda x: torch.narrow(x, 1, -3, 2), [randn(3, 5)]),
    "take": (lambda x: IP.take(x, np.array([[0, 5], [5, 11]])), lambda x: torch.take(x, T(np.array([[0, 5], [5, 11]]))),
             [randn(3, 4)]),
    "take_along_dim": (lambda x: IP.take_along_dim(x, INDEX[:, None, :], axis=2),
                       lambda x: torch.take_along_dim(x, T(INDEX[:, None, :]), dim=2), [randn(2, 3, 4)]),
    "take_along_dim_flat": (lambda x: IP.take_along_dim(x, INDEX), lambda x: torch.take_along_dim(x, T(INDEX)),
                            [randn(2, 3)]),
    "scatter": (lambda x, s: IP.scatter(x, 1, UNIQUE_INDEX, s), lambda x, s: torch.scatter(x, 1, T(UNIQUE_INDEX), s),
                [randn(2, 4), randn(2, 3, seed=1)]),
    "scatter_value": (lambda x: IP.scatter(x, 0, INDEX[:1], 2.5), lambda x: torch.scatter(x, 0, T(INDEX[:1]), 2.5),
                      [randn(3, 4)]),
    "scatter_reduce_sum": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "sum"),
                           lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "sum"),
                           [randn(2, 4), randn(2, 4, seed=1)]),
    "scatter_reduce_sum_no_self": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "sum", include_self=False),
                                   lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "sum", include_self=False),
                                   [randn(2, 4), randn(2, 4, seed=1)]),
    "scatter_reduce_mean": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "mean"),
                            lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "mean"), [randn(2, 4), randn(2, 4)]),
    "scatter_reduce_mean_no_self": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "mean", include_self=False),
                                    lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "mean", include_self=False),
                                    [randn(2, 4), randn(2, 4, seed=1)]),
    "scatter_reduce_amax": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "amax"),
                            lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "amax"),
                           [randn(2, 4), randn(2, 4, seed=1)]),
    "scatter_reduce_amin_no_self": (lambda x, s: IP.scatter_reduce(x, 0, INDEX[:, :3], s, "amin", include_self=False),
                                    lambda x, s: torch.scatter_reduce(x, 0, T(INDEX[:, :3]), s, "amin",
                                                                      include_self=False),
                                    [randn(3, 3), randn(2, 3, seed=1)]),
    "scatter_reduce_prod": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "prod"),
                            lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "prod"),
                           [randn(2, 4), randn(2, 4, seed=1)]),
    "scatter_reduce_prod_no_self": (lambda x, s: IP.scatter_reduce(x, 1, INDEX, s, "prod", include_self=False),
                                    lambda x, s: torch.scatter_reduce(x, 1, T(INDEX), s, "prod", include_self=False),
                                    [randn(2, 4), randn(2, 4, seed=1)]),
    "index_add": (lambda x, s: IP.index_add(x, 0, SLICES, s, alpha=2.0),
                  lambda x, s: torch.index_add(x, 0, T(SLICES), s, alpha=2.0), [randn(3, 4), randn(3, 4, seed=1)]),
    "index_copy": (lambda x, s: IP.index_copy(x, 1, SLICES[1:], s),
                   lambda x, s: torch.index_copy(x, 1, T(SLICES[1:]), s), [randn(3, 4), randn(3, 2, seed=1)]),
    "index_fill": (lambda x: IP.index_fill(x, 1, SLICES, -1.5), lambda x: torch.index_fill(x, 1, T(SLICES), -1.5),
                   [randn(2, 3)]),
    "masked_select": (lambda x: IP.masked_select(x, np.array([True, False, True])),
                      lambda x: torch.masked_select(x, torch.tensor([True, False, True])), [randn(2, 3)]),
    "masked_scatter": (lambda x, s: IP.masked_scatter(x, np.array([[True], [False], [True]]) & (INDEX[0] > 0), s),
                       lambda x, s: torch.masked_scatter(x, torch.tensor(np.array([[True], [False], [True]])
                                                                         & (INDEX[0] > 0)), s),
                       [randn(3, 4), randn(2, 5, seed=1)]),
    "msort": (IP.msort, torch.msort, [randn(4, 3)]),
    "outer": (SP.outer, torch.outer, [randn(3), randn(4, seed=1)]),
    "kron": (SP.kron, torch.kron, [randn(2, 3), randn(3, 1, 2, seed=1)]),
    "tensordot_int": (lambda a, b: SP.tensordot(a, b, 2), lambda a, b: torch.tensordot(a, b, 2),
                      [randn(2, 3, 4), randn(3, 4, 2, seed=1)]),
    "tensordot_pairs": (lambda a, b: SP.tensordot(a, b, ([0, 2], [2, 0])),
                        lambda a, b: torch.tensordot(a, b, ([0, 2], [2, 0])), [randn(2, 3, 4), randn(4, 5, 2, seed=1)]),
    "tensordot_outer": (lambda a, b: SP.tensordot(a, b, 0), lambda a, b: torch.tensordot(a, b, 0),
                        [randn(2, 3), randn(2, seed=1)]),
    "cross": (lambda a, b: SP.cross(a, b, axis=0), lambda a, b: torch.linalg.cross(a, b, dim=0),
              [randn(3, 4, seed=3), randn(3, 1, seed=1)]),
    "meshgrid_ij": (lambda a, b: stack(SP.meshgrid(a, b)),
                    lambda a, b: torch.stack(torch.meshgrid(a, b, indexing="ij")), [randn(3), randn(2, seed=1)]),
    "meshgrid_xy": (lambda a, b, c: stack(SP.meshgrid(a, b, c, indexing="xy")),
                    lambda a, b, c: torch.stack(torch.meshgrid(a, b, c, indexing="xy")),
                    [randn(3), randn(2, seed=1), randn(4, seed=2)]),
    "cartesian_prod": (SP.cartesian_prod, torch.cartesian_prod, [randn(3), randn(2, seed=1)]),
    "diag_vector": (lambda x: SP.diag(x, 1), lambda x: torch.diag(x, 1), [randn(3)]),
    "diag_matrix": (lambda x: SP.diag(x, -1), lambda x: torch.diag(x, -1), [randn(3, 4)]),
    "diagflat": (lambda x: SP.diagflat(x, -2), lambda x: torch.diagflat(x, -2), [randn(2, 2)]),
    "block_diag": (SP.block_diag, torch.block_diag,
                   [randn(2, 3), randn(3, seed=1), randn(seed=2), randn(1, 2, seed=3)]),
    "rot90": (lambda x: SP.rot90(x), lambda x: torch.rot90(x), [randn(2, 3, 4)]),
    "rot90_k2": (lambda x: SP.rot90(x, 2, (1, 2)), lambda x: torch.rot90(x, 2, (1, 2)), [randn(2, 3, 4)]),
    "rot90_k3": (lambda x: SP.rot90(x, -1, (2, 0)), lambda x: torch.rot90(x, -1, (2, 0)), [randn(2, 3, 4)]),
    # torch.vander's own backward fails (an in-place write), so the reference is x^j written out
    "vander": (lambda x: SP.vander(x, 4), lambda x: x[:, None] ** torch.arange(3, -1, -1), [randn(3)]),
    "vander_increasing": (lambda x: SP.vander(x, increasing=True), lambda x: x[:, None] ** torch.arange(4),
                          [randn(4)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)

SECOND_ORDER = ["scatter", "scatter_reduce_mean_no_self", "scatter_reduce_amax", "scatter_reduce_prod",
                "scatter_reduce_prod_no_self", "masked_scatter", "index_add", "kron", "tensordot_pairs", "cross",
                "take_along_dim", "vander", "block_diag"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_derivatives_match_torch(name):
    ours, theirs, inputs = CASES[name]
    if name in ("kron", "tensordot_pairs", "cross", "vander"):      # nonlinear: torch's Hessian-vector products
        compare_double_backward_with_torch(ours, theirs, *inputs)
    else:
        assert check_second_derivatives(lambda *xs: ours(*xs) ** 2, *inputs)


def test_scatter_keeps_the_last_of_duplicate_writes_and_only_it_gets_a_gradient():
    x, src = randn(2, 4), randn(2, 4, seed=1)
    ours = IP.scatter(lamina.tensor(x, dtype=np.float64), 1, INDEX, lamina.tensor(src, dtype=np.float64)).numpy()
    np.testing.assert_array_equal(ours, torch.scatter(T(x), 1, T(INDEX), T(src)).numpy())
    s = lamina.tensor(src, requires_grad=True)
    IP.scatter(lamina.tensor(x, dtype=np.float64), 1, INDEX, s).sum().backward()
    # row 0 writes places 0, 2, 1, 2: the first 2 is overwritten; row 1 writes 1, 0, 0, 1: the first two are
    np.testing.assert_array_equal(s.grad, [[1, 0, 1, 1], [0, 0, 1, 1]])


def test_scatter_reduce_extreme_shares_add_up_to_the_upstream_gradient():
    x, src = ties(3, 4), ties(3, 4, seed=1)
    index = np.random.default_rng(2).integers(0, 3, (3, 4))
    for include_self in (True, False):
        xs, ss = lamina.tensor(x, requires_grad=True), lamina.tensor(src, requires_grad=True)
        IP.scatter_reduce(xs, 0, index, ss, "amax", include_self).sum().backward()
        assert np.isclose(xs.grad.sum() + ss.grad.sum(), x.size)
    assert check_gradients(lambda x, s: IP.scatter(x, 1, INDEX, s), x, src)


def test_index_copy_keeps_the_last_of_repeated_slices():
    out = IP.index_copy(lamina.tensor(np.zeros((3, 2))), 0, SLICES, lamina.tensor(np.arange(6.0).reshape(3, 2)))
    np.testing.assert_array_equal(out.numpy(), [[2, 3], [0, 0], [4, 5]])


@pytest.mark.parametrize("reduce", ["amax", "amin"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_extremes_share_the_gradient_among_ties_as_torch(reduce, include_self):
    x, src = ties(3, 4), ties(3, 4, seed=1)
    if not include_self:
        # torch then still counts an x equal to the result among the ties (giving it no gradient), so
        # the shares fall short of dJ/dy; lamina shares among the values that take part
        x = x + 0.5
    index = np.random.default_rng(2).integers(0, 3, (3, 4))
    compare_with_torch(lambda x, s: IP.scatter_reduce(x, 0, index, s, reduce, include_self),
                       lambda x, s: torch.scatter_reduce(x, 0, T(index), s, reduce, include_self=include_self),
                       x, src, dtype=np.float64)


@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_prod_with_zero_factors_matches_torch(include_self):
    x, src = with_zeros(2, 4), with_zeros(2, 6, seed=1)
    index = np.array([[0, 0, 1, 1, 3, 3], [2, 2, 2, 1, 1, 0]])

    def fn(x, s):
        return IP.scatter_reduce(x, 1, index, s, "prod", include_self)

    compare_with_torch(fn, lambda x, s: torch.scatter_reduce(x, 1, T(index), s, "prod", include_self=include_self),
                       x, src, dtype=np.float64)
    assert check_gradients(fn, x, src)
    assert check_second_derivatives(fn, x, src)


def test_second_derivatives_of_shape_ops_through_a_nonlinear_function():
    assert check_second_derivatives(lambda x: SP.movedim(x, 0, 1).sin() * SP.rot90(x).cos(), randn(3, 3))
    assert check_second_derivatives(lambda x: IP.masked_select(x, np.array([True, False, True])) ** 3, randn(2, 3))


def test_outputs_are_torch_methods_too():
    x = lamina.tensor(randn(2, 3, 4))
    np.testing.assert_array_equal(x.movedim(0, 2).numpy(), torch.tensor(x.numpy()).movedim(0, 2).numpy())
    assert x.narrow(2, 1, 2).shape == (2, 3, 2)
    assert x.argsort(axis=1).shape == (2, 3, 4)


@pytest.mark.parametrize("descending", [False, True])
def test_argsort_is_stable_and_puts_nan_as_torch(descending):
    x = np.array([[2.0, np.nan, 1.0, 2.0, 1.0, -np.inf], [0.0, 0.0, 0.0, 3.0, np.nan, np.nan]])
    expected = torch.argsort(T(x), dim=1, descending=descending, stable=True).numpy()
    np.testing.assert_array_equal(IP.argsort(x, axis=1, descending=descending), expected)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_unique_matches_torch(axis):
    x = np.array([[3, 1, 3], [0, 1, 0], [3, 1, 3], [2, 2, 2]], dtype=np.int64)
    values, inverse, counts = IP.unique(lamina.tensor(x), return_inverse=True, return_counts=True, axis=axis)
    t_values, t_inverse, t_counts = torch.unique(T(x), return_inverse=True, return_counts=True, dim=axis)
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(inverse, t_inverse.numpy())
    np.testing.assert_array_equal(counts, t_counts.numpy())


def test_unique_keeps_every_nan_apart_as_torch():
    x = np.array([[np.nan, 1.0, np.nan], [1.0, -np.nan, 0.0]])
    values, inverse, counts = IP.unique(x, return_inverse=True, return_counts=True)
    t_values, t_inverse, t_counts = torch.unique(T(x), return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(inverse, t_inverse.numpy())
    np.testing.assert_array_equal(counts, t_counts.numpy())
    rows = np.array([[np.nan, 1.0], [0.0, 1.0], [np.nan, 1.0], [0.0, 1.0]])
    values, inverse, counts = IP.unique(rows, return_inverse=True, return_counts=True, axis=0)
    np.testing.assert_array_equal(values.numpy(), [[0.0, 1.0], [np.nan, 1.0], [np.nan, 1.0]])
    np.testing.assert_array_equal(inverse, [1, 0, 2, 0])
    np.testing.assert_array_equal(counts, [2, 1, 1])    # torch's row order (and so grouping) around NaN rows varies


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_unique_consecutive_matches_torch(axis):
    x = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0], [np.nan, 0.0, 0.0], [np.nan, 0.0, 0.0], [1.0, 1.0, 2.0]])
    for inverse in (False, True):
        for counts in (False, True):
            ours = IP.unique_consecutive(x, return_inverse=inverse, return_counts=counts, axis=axis)
            theirs = torch.unique_consecutive(T(x), return_inverse=inverse, return_counts=counts, dim=axis)
            ours, theirs = (ours, theirs) if inverse or counts else ((ours,), (theirs,))
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs):
                a = a if isinstance(a, np.ndarray) else a.numpy()
                assert a.shape == b.shape and a.dtype == b.numpy().dtype
                np.testing.assert_array_equal(a, b.numpy())


def test_unique_consecutive_of_empty_and_scalar_inputs_as_torch():
    for x, axis in [(np.zeros(0), None), (np.zeros((0, 3)), 0), (np.array(3.0), None), (np.zeros((2, 0)), None)]:
        ours = IP.unique_consecutive(x, return_inverse=True, return_counts=True, axis=axis)
        theirs = torch.unique_consecutive(T(x), return_inverse=True, return_counts=True, dim=axis)
        for a, b in zip(ours, theirs):
            a = a if isinstance(a, np.ndarray) else a.numpy()
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(lamina.ShapeError, match=r"unique_consecutive: slices along axis 0 of x of shape \(3, 0\)"):
        IP.unique_consecutive(np.zeros((3, 0)), axis=0)


def test_unique_of_an_empty_input_is_empty():
    assert IP.unique(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_and_bucketize_match_torch(side):
    seq = np.array([[1.0, 2.0, 2.0, 5.0], [-1.0, 0.0, 0.0, 0.0]])
    values = np.array([[2.0, 0.5, 5.0, 9.0, -3.0], [0.0, -1.0, 1.0, -2.0, 0.0]])
    right = side == "right"
    np.testing.assert_array_equal(IP.searchsorted(seq, values, side=side),
                                  torch.searchsorted(T(seq), T(values), side=side).numpy())
    np.testing.assert_array_equal(IP.searchsorted(seq[0], values, right=right),
                                  torch.searchsorted(T(seq[0]), T(values), right=right).numpy())
    np.testing.assert_array_equal(IP.bucketize(values, seq[0], right=right),
                                  torch.bucketize(T(values), T(seq[0]), right=right).numpy())
    assert IP.searchsorted(seq[0], values, out_int32=True).dtype == np.int32


def test_searchsorted_with_a_sorter_matches_torch():
    seq = np.array([5.0, 1.0, 3.0, 2.0])
    sorter = np.argsort(seq)
    values = np.array([0.0, 2.0, 2.5, 6.0])
    np.testing.assert_array_equal(IP.searchsorted(seq, values, sorter=sorter),
                                  torch.searchsorted(T(seq), T(values), sorter=T(sorter)).numpy())


@pytest.mark.parametrize("use_sorter", [False, True])
def test_searchsorted_with_an_empty_last_axis_matches_torch(use_sorter):
    for seq, values in [(np.ones((2, 3)), np.zeros((2, 0))), (np.zeros((2, 0)), np.ones((2, 1))),
                        (np.zeros((2, 0)), np.zeros((2, 0)))]:
        sorter = np.zeros(seq.shape, np.int64) if use_sorter else None
        expected = torch.searchsorted(T(seq), T(values), sorter=None if sorter is None else T(sorter)).numpy()
        ours = IP.searchsorted(seq, values, sorter=sorter)
        assert ours.shape == expected.shape
        np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_and_bucketize_compare_with_nan_as_torch(side):
    nan = np.nan
    seq = np.array([[1.0, 2.0, nan], [1.0, nan, nan], [-1.0, 0.0, 3.0]])
    values = np.array([[nan, np.inf, 1.5], [0.0, 1.0, 2.0], [nan, 3.0, -5.0]])
    np.testing.assert_array_equal(IP.searchsorted(seq, values, side=side),
                                  torch.searchsorted(T(seq), T(values), side=side).numpy())
    for row in seq:
        np.testing.assert_array_equal(IP.searchsorted(row, values, side=side),
                                      torch.searchsorted(T(row), T(values), side=side).numpy())
        np.testing.assert_array_equal(IP.bucketize(values, row, right=side == "right"),
                                      torch.bucketize(T(values), T(row), right=side == "right").numpy())


@pytest.mark.parametrize("bins, low, high", [(4, 0.0, 0.0), (5, -1.0, 2.0), (3, 0.0, 3.0)])
def test_histc_matches_torch(bins, low, high):
    x = np.concatenate([randn(40), [-1.0, 0.0, 1.0, 2.0, 3.0]]).astype(np.float32)
    np.testing.assert_array_equal(IP.histc(lamina.tensor(x), bins, low, high).numpy(),
                                  torch.histc(T(x), bins, low, high).numpy())


def test_weighted_bincount_matches_torch_and_is_differentiable_in_the_weights():
    x, w = np.array([0, 3, 3, 1, 0]), randn(5)
    ours = IP.bincount(x, lamina.tensor(w, dtype=np.float64), minlength=6)
    np.testing.assert_allclose(ours.numpy(), torch.bincount(T(x), T(w), minlength=6).numpy(), rtol=1e-12)
    assert check_gradients(lambda w: IP.bincount(x, w, minlength=6), w)      # torch has no gradient here


def test_bincount_and_nonzero_match_torch():
    x = np.array([4, 0, 1, 4, 4])
    np.testing.assert_array_equal(IP.bincount(x), torch.bincount(T(x)).numpy())
    np.testing.assert_array_equal(IP.bincount(np.zeros(0, dtype=np.int64), minlength=3), [0, 0, 0])
    a = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    np.testing.assert_array_equal(IP.nonzero(a), torch.nonzero(T(a)).numpy())
    for ours, theirs in zip(IP.nonzero(a, as_tuple=True), torch.nonzero(T(a), as_tuple=True)):
        np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize("offset", [-1, 0, 2])
def test_triangle_indices_match_torch(offset):
    np.testing.assert_array_equal(SP.tril_indices(3, 4, offset), torch.tril_indices(3, 4, offset).numpy())
    np.testing.assert_array_equal(SP.triu_indices(4, 3, offset), torch.triu_indices(4, 3, offset).numpy())


def test_empty_inputs_work_where_torch_allows_them():
    empty = np.zeros((2, 0))
    assert IP.masked_select(lamina.tensor(empty), np.zeros((2, 0), dtype=bool)).shape == (0,)
    no_index = np.zeros((2, 0), dtype=np.int64)
    assert IP.scatter(lamina.tensor(randn(2, 3)), 1, no_index, lamina.tensor(empty)).shape == (2, 3)
    assert IP.take(lamina.tensor(randn(2, 3)), np.zeros(0, dtype=np.int64)).shape == (0,)
    assert SP.outer(lamina.tensor(np.zeros(0)), lamina.tensor(randn(3))).shape == (0, 3)
    assert SP.vander(lamina.tensor(randn(3)), 0).shape == (3, 0)


ERRORS = [
    (lambda: SP.movedim(randn(2, 3), (0, 1), 0), ValueError, "movedim: source .* and destination .* same length"),
    (lambda: SP.unflatten(randn(2, 6), 1, (4, -1)), lamina.ShapeError,
     r"unflatten: sizes \(4, -1\) do not split axis 1 of length 6 .*\(2, 6\)"),
    (lambda: SP.narrow(randn(2, 6), 1, 4, 3), lamina.ShapeError, r"narrow: start 4 \+ length 3 exceeds the length 6"),
    (lambda: SP.tensordot(randn(2, 3), randn(2, 3), 1), lamina.ShapeError,
     r"tensordot: axis 1 of a of shape \(2, 3\) \(length 3\) does not match axis 0 of b"),
    (lambda: SP.cross(randn(2, 4), randn(2, 4)), lamina.ShapeError,
     r"cross: axis 1 .* \(2, 4\) .* length 4, expected 3"),
    (lambda: SP.outer(randn(2, 2), randn(2)), lamina.ShapeError,
     r"outer: expected two 1-D inputs, got shapes \(2, 2\)"),
    (lambda: SP.diag(randn(2, 2, 2)), lamina.ShapeError, r"diag: expected a 1-D or 2-D input, got shape \(2, 2, 2\)"),
    (lambda: SP.meshgrid(randn(2), indexing="yx"), ValueError, "meshgrid: indexing must be 'ij' or 'xy'"),
    (lambda: IP.take(randn(2, 3), [6]), ValueError, r"take: index 6 is out of range for x of shape \(2, 3\)"),
    (lambda: IP.take_along_dim(randn(2, 3), np.zeros(2, dtype=np.int64), axis=0), lamina.ShapeError,
     r"take_along_dim: indices of shape \(2,\) must have as many axes as x of shape \(2, 3\)"),
    (lambda: IP.scatter(randn(2, 3), 1, INDEX, randn(2, 3)), lamina.ShapeError,
     r"scatter: index of shape \(2, 4\) is longer than src of shape \(2, 3\) on some axis"),
    (lambda: IP.scatter(randn(2, 3), 1, INDEX[:, :3] + 1, randn(2, 3)), ValueError,
     r"scatter: index 3 is out of range for axis 1 of x of shape \(2, 3\) of length 3; expected values in \[-3, 3\)"),
    (lambda: IP.scatter_reduce(randn(2, 4), 1, INDEX, randn(2, 4), "max"), ValueError,
     "scatter_reduce: reduce must be one of"),
    (lambda: IP.index_add(randn(3, 4), 0, SLICES, randn(2, 4)), lamina.ShapeError,
     r"index_add: source of shape \(2, 4\) does not fit x of shape \(3, 4\) .* expected shape \(3, 4\)"),
    (lambda: IP.masked_select(randn(2, 3), np.ones(3)), ValueError, "masked_select: mask must be boolean"),
    (lambda: IP.masked_scatter(randn(2, 3), np.ones((2, 3), dtype=bool), randn(5)), lamina.ShapeError,
     r"masked_scatter: mask selects 6 places but source of shape \(5,\) holds only 5"),
    (lambda: IP.searchsorted(randn(2, 3), randn(3, 2)), lamina.ShapeError,
     r"searchsorted: values of shape \(3, 2\) must share the leading axes of sorted_sequence of shape \(2, 3\)"),
    (lambda: IP.searchsorted(randn(3), randn(2), right=True, side="left"), ValueError,
     "searchsorted: side='left' contradicts right=True"),
    (lambda: IP.bincount(np.array([1, -1])), ValueError, "bincount: x must hold non-negative integers, got -1"),
    (lambda: IP.histc(randn(3), 4, 2.0, 1.0), ValueError, "histc: min 2.0 must not exceed max 1.0"),
]


@pytest.mark.parametrize("case", range(len(ERRORS)))
def test_errors_name_the_function_and_the_shapes(case):
    call, kind, message = ERRORS[case]
    with pytest.raises(kind, match=message):
        call()


@pytest.mark.parametrize("sa, sb, dims", [((2, 0), (0, 3), 1), ((0, 2), (2, 3), 1), ((2, 3), (3, 0), 1),
                                          ((2, 0, 4), (0, 4, 5), 2), ((2, 0), (2, 0), ([0, 1], [0, 1]))], ids=str)
def test_tensordot_with_axes_of_length_zero_matches_torch(sa, sb, dims):
    a = lamina.tensor(np.ones(sa), dtype=np.float64, requires_grad=True)
    b = lamina.tensor(np.ones(sb), dtype=np.float64, requires_grad=True)
    y = SP.tensordot(a, b, dims)
    expected = torch.tensordot(torch.ones(sa, dtype=torch.float64), torch.ones(sb, dtype=torch.float64), dims)
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    assert y.shape == tuple(expected.shape)
    y.sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
