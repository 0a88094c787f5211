"""Sparse ops against torch.sparse (values and gradients to the values and the dense
operands), float64 gradient checks, second derivatives and error messages."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import sparse
from lamina.errors import ShapeError

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks", "ignore:Sparse CSR tensor support")

# a (4, 5) matrix with 8 entries: (0, 2) and (1, 3) stored twice, row 2 empty, rows out of order
INDICES = np.array([[3, 0, 1, 1, 3, 0, 1, 2],
                    [4, 2, 3, 0, 0, 2, 3, 1]])
INDICES[:, 7] = [1, 1]
SHAPE = (4, 5)
NNZ = INDICES.shape[1]
INDICES_3D = np.array([[1, 0, 1, 0, 1, 0],
                       [2, 0, 2, 1, 0, 1],
                       [3, 1, 3, 2, 0, 0]])


def ours(v, indices=INDICES, shape=SHAPE):
    return sparse.sparse_coo_tensor(indices, v, shape)


def theirs(v, indices=INDICES, shape=SHAPE):
    return torch.sparse_coo_tensor(torch.from_numpy(indices), v, shape)


# a coalesced (4, 5) CSR matrix with 6 entries: row 0 at columns 1, 4; row 1 at 2; row 2 empty;
# row 3 at 0, 2, 3
CROW = np.array([0, 2, 3, 3, 6])
COL = np.array([1, 4, 2, 0, 2, 3])


# -- products ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mm_matches_torch(dtype):
    compare_with_torch(lambda v, x: sparse.mm(ours(v), x), lambda v, x: torch.sparse.mm(theirs(v), x),
                       randn(NNZ), randn(5, 3, seed=1), dtype=dtype)


def test_mm_of_csr_and_the_matmul_operator_match_torch():
    compare_with_torch(lambda v, x: sparse.sparse_csr_tensor(CROW, COL, v, SHAPE) @ x,
                       lambda v, x: torch.sparse.mm(torch.sparse_csr_tensor(torch.from_numpy(CROW),
                                                                            torch.from_numpy(COL), v, SHAPE), x),
                       randn(6), randn(5, 3, seed=1), dtype=np.float64)
    compare_with_torch(lambda v, x: ours(v) @ x, lambda v, x: theirs(v) @ x, randn(NNZ), randn(5, seed=1),
                       dtype=np.float64)


def test_mm_gradients_first_and_second_order():
    assert check_gradients(lambda v, x: sparse.mm(ours(v), x), randn(NNZ), randn(5, 3, seed=1))
    assert check_second_derivatives(lambda v, x: sparse.mm(ours(v), x) ** 2, randn(NNZ), randn(5, 3, seed=1))


def test_transposed_product_matches_torch():
    compare_with_torch(lambda v, x: sparse.mm(ours(v).t(), x), lambda v, x: torch.sparse.mm(theirs(v).t(), x),
                       randn(NNZ), randn(4, 2, seed=1), dtype=np.float64)


def test_spmm_batched_over_leading_axes_matches_torch():
    def torch_batched(v, x):
        s = theirs(v)
        return torch.stack([torch.stack([torch.sparse.mm(s, x[i, j]) for j in range(x.shape[1])])
                            for i in range(x.shape[0])])

    compare_with_torch(lambda v, x: sparse.spmm(ours(v), x), torch_batched, randn(NNZ), randn(2, 3, 5, 4, seed=1),
                       dtype=np.float64)
    assert check_gradients(lambda v, x: ours(v) @ x, randn(NNZ), randn(2, 5, 3, seed=1))


def test_addmm_matches_torch():
    compare_with_torch(lambda c, v, x: sparse.addmm(c, ours(v), x, beta=0.5, alpha=-2.0),
                       lambda c, v, x: torch.sparse.addmm(c, theirs(v), x, beta=0.5, alpha=-2.0),
                       randn(4, 3, seed=2), randn(NNZ), randn(5, 3, seed=1), dtype=np.float64)
    assert check_gradients(lambda c, v, x: sparse.addmm(c, ours(v), x, beta=0.5, alpha=-2.0),
                           randn(4, 3, seed=2), randn(NNZ), randn(5, 3, seed=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sampled_addmm_on_csr_matches_torch(dtype):
    def mine(v, a, b):
        out = sparse.sampled_addmm(sparse.sparse_csr_tensor(CROW, COL, v, SHAPE), a, b, beta=0.5, alpha=2.0)
        assert out.layout == "csr"
        return out.values

    def ref(v, a, b):
        s = torch.sparse_csr_tensor(torch.from_numpy(CROW), torch.from_numpy(COL), v, SHAPE)
        return torch.sparse.sampled_addmm(s, a, b, beta=0.5, alpha=2.0).values()

    compare_with_torch(mine, ref, randn(6), randn(4, 3, seed=1), randn(3, 5, seed=2), dtype=dtype)


def test_sampled_addmm_gradients_first_and_second_order():
    def fn(v, a, b):
        return sparse.sampled_addmm(sparse.sparse_csr_tensor(CROW, COL, v, SHAPE), a, b, beta=0.5, alpha=2.0).values

    assert check_gradients(fn, randn(6), randn(4, 3, seed=1), randn(3, 5, seed=2))
    assert check_second_derivatives(lambda v, a, b: fn(v, a, b) ** 2, randn(6), randn(4, 3, seed=1),
                                    randn(3, 5, seed=2))


class _OtherArray(np.ndarray):
    """An ndarray of another type: the products take the path of non-NumPy array modules."""


def test_products_without_scipy_agree_with_scipy():
    from lamina.sparse.pattern import Pattern

    pattern = Pattern(INDICES[0], INDICES[1], SHAPE)
    v, x, y = randn(NNZ), randn(5, 3, seed=1), randn(4, 3, seed=2)
    other = [a.view(_OtherArray) for a in (v, x, y)]
    assert pattern.csr_matrix(other[0]) is None
    assert_close(pattern.matmul(other[0], other[1]), pattern.matmul(v, x), 1e-12)
    assert_close(pattern.transposed_matmul(other[0], other[2]), pattern.transposed_matmul(v, y), 1e-12)
    assert_close(pattern.matmul(v, x), ours(lamina.tensor(v, dtype=np.float64)).to_dense().numpy() @ x, 1e-12)


# -- elementwise and reductions -----------------------------------------------------------------
def test_mul_by_a_dense_tensor_matches_torch():
    values, dense, upstream = randn(NNZ), randn(4, 5, seed=1), randn(4, 5, seed=2)
    v, d = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (values, dense))
    tv, td = (torch.tensor(a, requires_grad=True) for a in (values, dense))
    out, ref = (ours(v) * d).to_dense(), (theirs(tv) * td).to_dense()
    assert_close(out.numpy(), ref.detach().numpy(), 1e-12)
    (out * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    (ref * torch.tensor(upstream)).sum().backward()
    assert_close(v.grad, tv.grad.numpy(), 1e-12, "values' gradient")
    assert_close(d.grad, td.grad.to_dense().numpy(), 1e-12, "dense operand's gradient (torch's is sparse)")
    compare_with_torch(lambda v: (2.5 * ours(v)).to_dense(), lambda v: (2.5 * theirs(v)).to_dense(), randn(NNZ),
                       dtype=np.float64)
    assert check_gradients(lambda v, d: sparse.mul(ours(v), d).values, randn(NNZ), randn(4, 5, seed=1))
    # a row vector broadcast over the rows
    assert check_gradients(lambda v, d: sparse.mul(ours(v), d).to_dense(), randn(NNZ), randn(5, seed=1))


@pytest.mark.parametrize("dim", [None, 0, 1, (0, 1), -1])
def test_sum_matches_torch(dim):
    def ref(v):
        out = torch.sparse.sum(theirs(v)) if dim is None else torch.sparse.sum(theirs(v), dim)
        return out.to_dense() if out.is_sparse else out

    compare_with_torch(lambda v: sparse.sum(ours(v), dim), ref, randn(NNZ), dtype=np.float64)
    assert check_gradients(lambda v: sparse.sum(ours(v), dim), randn(NNZ))


@pytest.mark.parametrize("dim", [0, 2, (0, 2), 3])
def test_sum_of_a_hybrid_3d_tensor_matches_torch(dim):
    shape = (2, 3, 4, 2)
    compare_with_torch(lambda v: ours(v, INDICES_3D, shape).sum(dim),
                       lambda v: torch.sparse.sum(theirs(v, INDICES_3D, shape), dim).to_dense(),
                       randn(6, 2), dtype=np.float64)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch(fn, dim):
    def ref(v):
        # torch 2.13's backward of a sparse softmax along a negative dim fails its own gradcheck:
        # the reference is given the same axis counted from the front
        return getattr(torch.sparse, fn)(theirs(v), dim % 2).coalesce().values()

    compare_with_torch(lambda v: getattr(sparse, fn)(ours(v), dim).values, ref, randn(NNZ), dtype=np.float64)
    compare_with_torch(lambda v: getattr(sparse, fn)(ours(v), dim).values, ref, randn(NNZ, scale=100.0),
                       dtype=np.float32)
    assert check_gradients(lambda v: getattr(sparse, fn)(ours(v), dim).values, randn(NNZ))


@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_softmax_of_a_hybrid_3d_tensor_matches_torch(dim):
    shape = (2, 3, 4, 2)
    compare_with_torch(lambda v: sparse.softmax(ours(v, INDICES_3D, shape), dim).to_dense(),
                       lambda v: torch.sparse.softmax(theirs(v, INDICES_3D, shape), dim).to_dense(),
                       randn(6, 2), dtype=np.float64)


def test_softmax_second_derivatives():
    assert check_second_derivatives(lambda v: sparse.softmax(ours(v), 1).values ** 2, randn(NNZ))
    assert check_second_derivatives(lambda v: sparse.log_softmax(ours(v), 0).values ** 2, randn(NNZ))


# -- errors -------------------------------------------------------------------------------------
def test_errors_name_the_op_and_shapes():
    s = ours(lamina.tensor(randn(NNZ)))
    with pytest.raises(ShapeError, match=r"sparse.mm: .*shape \(4, 5\) by a dense operand of shape \(4, 3\); "
                                         r"expected shape \(5, n\)"):
        sparse.mm(s, lamina.tensor(randn(4, 3)))
    with pytest.raises(TypeError, match=r"sparse.mm: the sparse values have dtype float32 but the dense operand "
                                        r"has float64"):
        sparse.mm(s, lamina.tensor(randn(5, 3), dtype=np.float64))
    with pytest.raises(ShapeError, match=r"sparse.mm: expected a sparse matrix.*shape \(2, 3, 4\)"):
        sparse.mm(ours(lamina.tensor(randn(6)), INDICES_3D, (2, 3, 4)), lamina.tensor(randn(4, 2)))
    with pytest.raises(ShapeError, match=r"sparse.sampled_addmm: A of shape \(4, 3\) times B of shape \(2, 5\)"):
        sparse.sampled_addmm(s, lamina.tensor(randn(4, 3)), lamina.tensor(randn(2, 5)))
    with pytest.raises(ShapeError, match=r"sparse.mul: a dense operand of shape \(3,\) does not broadcast to .*"
                                         r"\(4, 5\)"):
        sparse.mul(s, lamina.tensor(randn(3)))
    with pytest.raises(ShapeError, match=r"sparse.softmax: dim 2 is not .* 2 axes"):
        sparse.softmax(s, 2)
    with pytest.raises(TypeError, match=r"sparse.spmm: the second operand must be dense"):
        s @ s
