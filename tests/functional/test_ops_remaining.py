import numpy as np
import pytest
import torch
from tests.helpers import check_second_derivatives, compare_with_torch, op_table_tests, randn

import lamina
import lamina.functional as F
import lamina.nn.functional as NF
from lamina.errors import ShapeError

pytestmark = pytest.mark.filterwarnings("ignore:index_reduce.*beta")

INDEX = np.array([0, 2, 0, 3, 2])  # repeats, and slice 1 receives nothing


def _index_reduce_case(reduce, include_self):
    def ours(x, s):
        return F.index_reduce(x, 1, INDEX, s, reduce, include_self=include_self)

    def theirs(x, s):
        return x.index_reduce(1, torch.tensor(INDEX), s, reduce, include_self=include_self)

    return ours, theirs, [randn(3, 4, 2, seed=1), randn(3, 5, 2, seed=2)]


WITH_INF = np.array([1.5, np.nan, np.inf, -2.0, -np.inf, 0.25])

CASES = {
    "combinations": (lambda x: F.combinations(x), lambda x: torch.combinations(x), [randn(5)]),
    "combinations_r3_replacement": (lambda x: F.combinations(x, 3, with_replacement=True),
                                    lambda x: torch.combinations(x, 3, with_replacement=True), [randn(4)]),
    "atleast_1d": (lambda x: F.atleast_1d(x), lambda x: torch.atleast_1d(x), [np.array(0.7)]),
    "atleast_2d": (lambda x: F.atleast_2d(x), lambda x: torch.atleast_2d(x), [randn(3)]),
    "atleast_3d_vector": (lambda x: F.atleast_3d(x), lambda x: torch.atleast_3d(x), [randn(3)]),
    "atleast_3d_matrix": (lambda x: F.atleast_3d(x), lambda x: torch.atleast_3d(x), [randn(2, 3)]),
    "nan_to_num": (lambda x: F.nan_to_num(x, nan=0.5, posinf=9.0, neginf=-7.0),
                   lambda x: torch.nan_to_num(x, nan=0.5, posinf=9.0, neginf=-7.0), [WITH_INF]),
    **{f"index_reduce_{r}_{'self' if s else 'noself'}": _index_reduce_case(r, s)
       for r in ("prod", "mean", "amax", "amin") for s in (True, False)},
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_re_exported_for_nn_functional():
    for name in ("combinations", "histogram", "index_reduce", "atleast_1d", "atleast_2d", "atleast_3d",
                 "nan_to_num", "isin"):
        assert getattr(NF, name) is getattr(F, name), name
        assert name in F.__all__


def test_second_derivatives_of_the_composites():
    assert check_second_derivatives(lambda x: F.combinations(x) ** 2, randn(4))
    assert check_second_derivatives(lambda x, s: F.index_reduce(x, 0, INDEX[:3], s, "prod"),
                                    randn(4, 2, seed=3), randn(3, 2, seed=4))


def test_combinations_edge_cases_match_torch():
    x = np.arange(3.0)
    assert F.combinations(lamina.tensor(x), 0).shape == tuple(torch.combinations(torch.tensor(x), 0).shape)
    assert F.combinations(lamina.tensor(x[:2]), 3).shape == (0, 3)
    with pytest.raises(ShapeError, match="combinations: x must be 1-D"):
        F.combinations(lamina.tensor(np.ones((2, 2))))


def test_atleast_several_tensors_give_a_tuple():
    a, b, c = F.atleast_3d(lamina.tensor(1.0), lamina.tensor(np.ones(2)), lamina.tensor(np.ones((2, 3, 4, 5))))
    assert (a.shape, b.shape, c.shape) == ((1, 1, 1), (1, 2, 1), (2, 3, 4, 5))
    assert [t.shape for t in F.atleast_2d([lamina.tensor(np.ones(2)), lamina.tensor(2.0)])] == [(1, 2), (1, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_to_num_defaults_are_the_dtype_limits(dtype):
    x = WITH_INF.astype(dtype)
    ours = F.nan_to_num(lamina.tensor(x, dtype=dtype)).numpy()
    np.testing.assert_array_equal(ours, torch.nan_to_num(torch.tensor(x)).numpy())
    assert ours.dtype == dtype
    ints = lamina.tensor(np.array([1, 2]))
    assert F.nan_to_num(ints) is ints


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    {"bins": 5}, {"bins": 4, "range": (-1.0, 1.5)}, {"bins": 6, "density": True}, {"bins": 3, "weight": True},
    {"bins": np.array([-3.0, -0.5, 0.0, 0.2, 3.0])},
])
def test_histogram_matches_torch(options, dtype):
    x = randn(40, seed=5).astype(dtype)
    weights = np.abs(randn(40, seed=6)).astype(dtype)
    ours_opts, torch_opts = dict(options), dict(options)
    if options.get("weight"):
        ours_opts["weight"], torch_opts["weight"] = lamina.tensor(weights, dtype=dtype), torch.tensor(weights)
    if not isinstance(options["bins"], int):
        edges = options["bins"].astype(dtype)
        ours_opts["bins"], torch_opts["bins"] = edges, torch.tensor(edges)
    hist, edges = F.histogram(lamina.tensor(x, dtype=dtype), **ours_opts)
    ref_hist, ref_edges = torch.histogram(torch.tensor(x), **torch_opts)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(hist.numpy(), ref_hist.numpy(), rtol=rtol)
    np.testing.assert_allclose(edges.numpy(), ref_edges.numpy(), rtol=rtol, atol=rtol)
    assert hist.dtype == dtype and not hist.requires_grad


def test_histogram_refuses_bad_input():
    with pytest.raises(TypeError, match="histogram: x must be a floating"):
        F.histogram(lamina.tensor(np.array([1, 2])))
    with pytest.raises(ValueError, match="increasing"):
        F.histogram(lamina.tensor(np.ones(3)), bins=np.array([1.0, 0.0, 2.0]))


def test_isin_matches_torch():
    a = np.array([[1, 4, 2], [7, 2, 9]])
    for test, invert in (([2, 9, 11], False), ([2, 9, 11], True), (4, False)):
        ours = F.isin(lamina.tensor(a), test, invert=invert).numpy()
        expected = torch.isin(torch.tensor(a), torch.tensor(test), invert=invert).numpy()
        np.testing.assert_array_equal(ours, expected)
    x = np.array([0.5, 1.5, 2.5])
    np.testing.assert_array_equal(F.isin(lamina.tensor(x), lamina.tensor(np.array([1.5]))).numpy(),
                                  [False, True, False])


def test_index_reduce_refuses_sum_and_bad_shapes():
    x, s = lamina.tensor(randn(3, 4)), lamina.tensor(randn(3, 5))
    with pytest.raises(ValueError, match="index_reduce: reduce must be one of"):
        F.index_reduce(x, 1, INDEX, s, "sum")
    with pytest.raises(ShapeError, match="index_reduce"):
        F.index_reduce(x, 1, INDEX[:2], s, "mean")


def test_index_reduce_ties_share_the_gradient_as_torch():
    x = np.array([[1.0, 3.0], [2.0, 0.0]])
    src = np.array([[3.0, 3.0], [2.0, -1.0]])
    compare_with_torch(lambda a, b: F.index_reduce(a, 1, np.array([1, 1]), b, "amax"),
                       lambda a, b: a.index_reduce(1, torch.tensor([1, 1]), b, "amax"), x, src, dtype=np.float64)
