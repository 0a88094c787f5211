"""SparseTensor: construction, to_dense, coalesce, conversions (COO, CSR, dense, scipy),
transpose, and the error messages, against torch.sparse."""

import numpy as np
import pytest
import scipy.sparse
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import sparse
from lamina.errors import ShapeError

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks", "ignore:Sparse CSR tensor support")

# a (4, 5) matrix with 7 entries: (0, 2) and (1, 3) stored twice, rows out of order, row 2 empty
INDICES = np.array([[3, 0, 1, 1, 3, 0, 1],
                    [4, 2, 3, 0, 0, 2, 3]])
SHAPE = (4, 5)
# a 3-D pattern (2, 3, 4) with a repeated position
INDICES_3D = np.array([[1, 0, 1, 0, 1],
                       [2, 0, 2, 1, 0],
                       [3, 1, 3, 2, 0]])


def coo(indices, shape):
    return (lambda v: sparse.sparse_coo_tensor(indices, v, shape),
            lambda v: torch.sparse_coo_tensor(torch.from_numpy(indices), v, shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_dense_matches_torch_with_duplicates(dtype):
    ours, theirs = coo(INDICES, SHAPE)
    compare_with_torch(lambda v: ours(v).to_dense(), lambda v: theirs(v).to_dense(), randn(7), dtype=dtype)


def test_to_dense_of_a_hybrid_3d_tensor_matches_torch():
    # two sparse axes, one dense axis of 3
    ours, theirs = coo(INDICES, SHAPE + (3,))
    compare_with_torch(lambda v: ours(v).to_dense(), lambda v: theirs(v).to_dense(), randn(7, 3), dtype=np.float64)
    ours, theirs = coo(INDICES_3D, (2, 3, 4))
    compare_with_torch(lambda v: ours(v).to_dense(), lambda v: theirs(v).to_dense(), randn(5), dtype=np.float64)


def test_coalesce_sums_duplicates_and_sorts_like_torch():
    ours, theirs = coo(INDICES, SHAPE)
    mine = ours(lamina.tensor(randn(7), dtype=np.float64)).coalesce()
    ref = theirs(torch.tensor(randn(7))).coalesce()
    assert mine.is_coalesced() and mine.nnz == 5
    np.testing.assert_array_equal(mine.indices, ref.indices().numpy())
    compare_with_torch(lambda v: ours(v).coalesce().values, lambda v: theirs(v).coalesce().values(), randn(7))
    compare_with_torch(lambda v: sparse.sparse_coo_tensor(INDICES_3D, v, (2, 3, 4, 2)).coalesce().values,
                       lambda v: torch.sparse_coo_tensor(torch.from_numpy(INDICES_3D), v, (2, 3, 4, 2))
                       .coalesce().values(), randn(5, 2), dtype=np.float64)


def test_gradients_of_to_dense_and_coalesce():
    ours, _ = coo(INDICES, SHAPE)
    assert check_gradients(lambda v: ours(v).to_dense(), randn(7))
    assert check_gradients(lambda v: ours(v).coalesce().values * 1.5, randn(7))
    assert check_second_derivatives(lambda v: ours(v).coalesce().to_dense() ** 2, randn(7))


def test_from_dense_and_tensor_to_sparse_match_torch():
    x = randn(4, 5) * (randn(4, 5, seed=1) > 0)
    mine = lamina.tensor(x, dtype=np.float64).to_sparse()
    ref = torch.tensor(x).to_sparse()
    np.testing.assert_array_equal(mine.indices, ref.indices().numpy())
    assert mine.is_coalesced() and mine.nnz == ref._nnz()
    # gradient back to the dense tensor: only through the stored (non-zero) entries
    compare_with_torch(lambda t: t.to_sparse().to_dense() * 2.0, lambda t: t.to_sparse().to_dense() * 2.0, x,
                       dtype=np.float64)
    compare_with_torch(lambda t: sparse.from_dense(t, 1).to_dense(), lambda t: t.to_sparse(1).to_dense(),
                       x, dtype=np.float64)
    assert check_gradients(lambda t: t.to_sparse().values * t.to_sparse(1).values.sum(), randn(4, 5))


def test_csr_construction_and_round_trips_match_torch():
    dense = randn(4, 5) * (randn(4, 5, seed=2) > 0.3)
    ref = torch.tensor(dense).to_sparse_csr()
    mine = sparse.sparse_csr_tensor(ref.crow_indices().numpy(), ref.col_indices().numpy(),
                                    lamina.tensor(ref.values().numpy(), dtype=np.float64), SHAPE)
    assert mine.layout == "csr" and mine.is_coalesced()
    assert_close(mine.to_dense().numpy(), dense, 0)
    from_dense = lamina.tensor(dense, dtype=np.float64).to_sparse_csr()
    np.testing.assert_array_equal(from_dense.crow_indices, ref.crow_indices().numpy())
    np.testing.assert_array_equal(from_dense.col_indices, ref.col_indices().numpy())
    # COO with duplicates -> CSR coalesces, as torch's to_sparse_csr
    ours, theirs = coo(INDICES, SHAPE)
    values = randn(7)
    csr = ours(lamina.tensor(values, dtype=np.float64)).to_sparse_csr()
    ref = theirs(torch.tensor(values)).to_sparse_csr()
    np.testing.assert_array_equal(csr.crow_indices, ref.crow_indices().numpy())
    np.testing.assert_array_equal(csr.col_indices, ref.col_indices().numpy())
    assert_close(csr.values.numpy(), ref.values().numpy(), 1e-12)
    back = csr.to_sparse_coo()
    assert back.layout == "coo" and back.is_coalesced()
    assert_close(back.to_dense().numpy(), ref.to_dense().numpy(), 1e-12)
    assert check_gradients(lambda v: ours(v).to_sparse_csr().values, values)


def test_scipy_round_trip():
    ours, _ = coo(INDICES, SHAPE)
    values = randn(7)
    s = ours(lamina.tensor(values, dtype=np.float64))
    matrix = s.to_scipy()
    assert matrix.format == "coo"
    assert_close(matrix.toarray(), s.to_dense().numpy(), 1e-12)
    csr = scipy.sparse.random(6, 7, density=0.3, format="csr", random_state=0)
    mine = sparse.from_scipy(csr, dtype=np.float64)
    assert mine.layout == "csr" and mine.dtype == np.float64
    assert_close(mine.to_dense().numpy(), csr.toarray(), 0)
    assert (mine.to_scipy() != csr).nnz == 0
    assert sparse.from_scipy(csr.tocsc()).layout == "coo"


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_transpose_matches_torch(layout):
    ours, theirs = coo(INDICES, SHAPE)

    def mine(v):
        s = ours(v) if layout == "coo" else ours(v).to_sparse_csr()
        t = s.t()
        assert t.layout == layout and t.shape == (5, 4)
        return t.to_dense()

    compare_with_torch(mine, lambda v: theirs(v).t().to_dense(), randn(7), dtype=np.float64)
    assert check_gradients(mine, randn(7))


def test_constructor_errors_name_the_op_and_shapes():
    v = lamina.tensor(randn(7))
    with pytest.raises(ShapeError, match=r"sparse_coo_tensor: values of shape \(6,\).*indices of shape \(2, 7\)"):
        sparse.sparse_coo_tensor(INDICES, randn(6))
    with pytest.raises(ShapeError, match=r"sparse_coo_tensor: an index 4 on axis 1 is out of range for shape"):
        sparse.sparse_coo_tensor(INDICES, v, (4, 4))
    with pytest.raises(ShapeError, match=r"sparse_coo_tensor: shape \(4, 5, 2\) does not fit 2 sparse axes"):
        sparse.sparse_coo_tensor(INDICES, v, (4, 5, 2))
    with pytest.raises(TypeError, match=r"sparse_coo_tensor: indices must hold integers"):
        sparse.sparse_coo_tensor(INDICES.astype(float), v)
    with pytest.raises(ValueError, match=r"sparse_csr_tensor: crow_indices must start at 0.*nnz = 2"):
        sparse.sparse_csr_tensor([0, 1, 1], [0, 1], [1.0, 2.0])
    with pytest.raises(ShapeError, match=r"to_sparse_csr: expected a sparse matrix.*shape \(2, 3, 4\)"):
        sparse.sparse_coo_tensor(INDICES_3D, randn(5)).to_sparse_csr()
    with pytest.raises(ValueError, match=r"crow_indices: defined for the 'csr' layout"):
        _ = sparse.sparse_coo_tensor(INDICES, v).crow_indices


def test_shape_is_inferred_and_attributes():
    s = sparse.sparse_coo_tensor(INDICES, lamina.tensor(randn(7, 2), requires_grad=True))
    assert s.shape == (4, 5, 2) and s.sparse_dim == 2 and s.dense_dim == 1 and s.nnz == 7
    assert s.requires_grad and not s.detach().requires_grad and not s.is_coalesced()
    assert s.dtype == np.float32


@pytest.mark.parametrize("shape, sparse_dim", [((0, 3), 1), ((2, 0, 3), 1), ((2, 0, 3), 2), ((3, 0), 1), ((0,), 1)])
def test_to_sparse_of_a_tensor_with_an_empty_axis_matches_torch(shape, sparse_dim):
    x = np.zeros(shape)
    mine, ref = lamina.tensor(x, dtype=np.float64).to_sparse(sparse_dim), torch.tensor(x).to_sparse(sparse_dim)
    assert mine.shape == tuple(ref.shape) and mine.nnz == ref._nnz() == 0
    assert tuple(mine.indices.shape) == tuple(ref.indices().shape)
    assert tuple(mine.values.shape) == tuple(ref.values().shape)
    assert mine.to_dense().shape == shape
