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


# -- edge cases ---------------------------------------------------------------------------------
def test_addmm_with_beta_zero_ignores_nan_and_inf_in_input_as_torch():
    bad = np.full((4, 3), np.nan)
    bad[0, 0], bad[1, 2] = np.inf, -np.inf
    out = compare_with_torch(lambda c, v, x: sparse.addmm(c, ours(v), x, beta=0.0, alpha=1.5),
                             lambda c, v, x: torch.sparse.addmm(c, theirs(v), x, beta=0.0, alpha=1.5),
                             bad, randn(NNZ), randn(5, 3, seed=1), dtype=np.float64, grad=[False, True, True])
    assert np.isfinite(out[0].numpy()).all()
    # a row broadcast to (m, n) is still accepted, one that does not broadcast is refused
    compare_with_torch(lambda c, v, x: sparse.addmm(c, ours(v), x, beta=0.0),
                       lambda c, v, x: torch.sparse.addmm(c, theirs(v), x, beta=0.0),
                       np.full((3,), np.nan), randn(NNZ), randn(5, 3, seed=1), dtype=np.float64, grad=False)
    with pytest.raises(ShapeError, match=r"sparse.addmm: input of shape \(3, 3\) does not broadcast to the shape "
                                         r"\(4, 3\) of S X"):
        sparse.addmm(lamina.tensor(randn(3, 3)), ours(lamina.tensor(randn(NNZ))), lamina.tensor(randn(5, 3)),
                     beta=0.0)


def test_sampled_addmm_with_beta_zero_reads_only_the_positions_of_s():
    v = randn(6)
    v[2], v[4] = np.nan, np.inf
    a, b = randn(4, 3, seed=1), randn(3, 5, seed=2)
    s = sparse.sparse_csr_tensor(CROW, COL, lamina.tensor(v, dtype=np.float64), SHAPE)
    out = sparse.sampled_addmm(s, lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64),
                               beta=0.0, alpha=2.0)
    finite = torch.sparse_csr_tensor(torch.from_numpy(CROW), torch.from_numpy(COL), torch.zeros(6, dtype=torch.float64),
                                     SHAPE)
    ref = torch.sparse.sampled_addmm(finite, torch.tensor(a), torch.tensor(b), beta=0.0, alpha=2.0)
    assert_close(out.values.numpy(), ref.values().numpy(), 1e-12)


def test_sum_takes_numpy_integer_dims_and_rejects_others():
    compare_with_torch(lambda v: sparse.sum(ours(v), np.int64(1)), lambda v: torch.sparse.sum(theirs(v), 1).to_dense(),
                       randn(NNZ), dtype=np.float64)
    compare_with_torch(lambda v: ours(v).sum((np.int32(0), np.int64(-1))), lambda v: torch.sparse.sum(theirs(v)),
                       randn(NNZ), dtype=np.float64)
    compare_with_torch(lambda v: sparse.softmax(ours(v), np.int64(1)).values,
                       lambda v: torch.sparse.softmax(theirs(v), 1).coalesce().values(), randn(NNZ), dtype=np.float64)
    s = ours(lamina.tensor(randn(NNZ)))
    for dim in (1.0, "0", True):
        with pytest.raises(TypeError, match=r"sparse.sum: dim must be an int or a tuple/list of ints"):
            sparse.sum(s, dim)


def test_dense_times_sparse_gives_the_sparse_product_as_torch():
    values, dense = randn(NNZ), randn(4, 5, seed=1)
    v, d = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (values, dense))
    tv, td = (torch.tensor(a, requires_grad=True) for a in (values, dense))
    out, ref = d * ours(v), td * theirs(tv)
    assert isinstance(out, sparse.SparseTensor) and out.shape == SHAPE
    assert_close(out.to_dense().numpy(), ref.to_dense().detach().numpy(), 1e-12)
    out.to_dense().sum().backward()
    ref.to_dense().sum().backward()
    assert_close(v.grad, tv.grad.numpy(), 1e-12, "values' gradient")
    assert_close(d.grad, td.grad.to_dense().numpy(), 1e-12, "dense operand's gradient")


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_dense_matmul_sparse_matches_torch(layout):
    def mine(x, v):
        return x @ (ours(v) if layout == "coo" else sparse.sparse_csr_tensor(CROW, COL, v[:6], SHAPE))

    def reference(v):
        if layout == "coo":
            return theirs(v)
        return torch.sparse_csr_tensor(torch.from_numpy(CROW), torch.from_numpy(COL), v[:6], SHAPE)

    compare_with_torch(mine, lambda x, v: x @ reference(v), randn(3, 4, seed=1), randn(NNZ), dtype=np.float64)
    # a vector and a batch of matrices, against torch's product with the dense matrix
    for shape in [(4,), (2, 3, 4)]:
        compare_with_torch(mine, lambda x, v: x @ reference(v).to_dense(), randn(*shape, seed=1), randn(NNZ),
                           dtype=np.float64)
    assert check_gradients(mine, randn(2, 3, 4, seed=1), randn(NNZ))


def test_dense_operators_with_a_sparse_operand_defer_or_say_unsupported():
    s = ours(lamina.tensor(randn(NNZ)))
    d = lamina.tensor(randn(4, 5))
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for /: 'Tensor' and 'SparseTensor'"):
        d / s
    with pytest.raises(ShapeError, match=r"sparse.dense_spmm: cannot multiply a dense operand of shape \(3, 5\) by "
                                         r"a sparse matrix of shape \(4, 5\); expected .*\(n, 4\)"):
        lamina.tensor(randn(3, 5)) @ s


# a second (4, 5) pattern: (0, 2) stored twice and shared with INDICES, (1, 0) shared, (2, 2) its own
OTHER_INDICES = np.array([[0, 1, 2, 0],
                          [2, 0, 2, 2]])
ARITHMETIC = {
    "S + T": (lambda s, t: s + t, lambda s, t: s + t),
    "S - T": (lambda s, t: s - t, lambda s, t: s - t),
    "S * T": (lambda s, t: s * t, lambda s, t: s * t),
    "S * S": (lambda s, t: s * s, lambda s, t: s * s),
    "-S": (lambda s, t: -s, lambda s, t: -s),
    "S / 2": (lambda s, t: s / 2.0, lambda s, t: s / 2.0),
    "alpha": (lambda s, t: sparse.add(s, t, alpha=-2.5), lambda s, t: torch.add(s, t, alpha=-2.5)),
}


@pytest.mark.parametrize("name", list(ARITHMETIC))
def test_arithmetic_of_sparse_tensors_matches_torch(name):
    ours_fn, torch_fn = ARITHMETIC[name]
    out = compare_with_torch(lambda v, w: ours_fn(ours(v), ours(w, OTHER_INDICES)).to_dense(),
                             lambda v, w: torch_fn(theirs(v), theirs(w, OTHER_INDICES)).to_dense(),
                             randn(NNZ), randn(4, seed=1), dtype=np.float64)
    assert out[0].shape == SHAPE
    result = ours_fn(ours(lamina.tensor(randn(NNZ))), ours(lamina.tensor(randn(4, seed=1)), OTHER_INDICES))
    assert isinstance(result, sparse.SparseTensor)
    if name in ("S + T", "S - T", "S * T", "S * S", "alpha"):
        assert result.is_coalesced() and len(set(result.flat_index().tolist())) == result.nnz


def test_arithmetic_keeps_csr_and_adds_dense_operands_as_torch():
    s = sparse.sparse_csr_tensor(CROW, COL, lamina.tensor(randn(6), dtype=np.float64), SHAPE)
    t = ours(lamina.tensor(randn(4, seed=1), dtype=np.float64), OTHER_INDICES).to_sparse_csr()
    assert (s + t).layout == (s * t).layout == (-s).layout == "csr"
    assert_close((s * t).to_dense().numpy(), s.to_dense().numpy() * t.to_dense().numpy(), 1e-12)
    compare_with_torch(lambda d, v: d + ours(v), lambda d, v: d + theirs(v), randn(4, 5, seed=2), randn(NNZ),
                       dtype=np.float64)
    compare_with_torch(lambda d, v: d - ours(v), lambda d, v: d - theirs(v), randn(4, 5, seed=2), randn(NNZ),
                       dtype=np.float64)
    compare_with_torch(lambda d, v: ours(v) - d, lambda d, v: theirs(v).to_dense() - d, randn(4, 5, seed=2),
                       randn(NNZ), dtype=np.float64)
    assert check_gradients(lambda v, w: (ours(v) * ours(w, OTHER_INDICES)).values, randn(NNZ), randn(4, seed=1))


def test_arithmetic_errors_name_the_op():
    s = ours(lamina.tensor(randn(NNZ)))
    with pytest.raises(ShapeError, match=r"sparse.add: sparse tensors of shapes \(4, 5\) and \(5, 4\)"):
        s + s.t()
    with pytest.raises(TypeError, match=r"sparse.mul: sparse tensors of dtypes float32 and float64"):
        s * ours(lamina.tensor(randn(NNZ), dtype=np.float64))
    with pytest.raises(TypeError, match=r"sparse.add: adding a number .* shape \(4, 5\)"):
        s + 1.0
    with pytest.raises(ShapeError, match=r"sparse.div: the divisor must be a number or a 0-d tensor, got shape "
                                         r"\(4, 5\)"):
        s / lamina.tensor(randn(4, 5))
