"""cosine_similarity, normalize, pairwise_distance and cdist against torch, and in use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import compare_with_torch, op_table_tests, randn
from lamina.functional import similarity as S


def with_rows(x, rows):
    """``x`` with some rows replaced: {row index: values}."""
    x = x.copy()
    for i, values in rows.items():
        x[i] = values
    return x


# name: (lamina function, torch function, inputs)
CASES = {
    "cosine_last_axis": (S.cosine_similarity, lambda a, b: TF.cosine_similarity(a, b, dim=-1),
                         [randn(4, 5), randn(4, 5, seed=1)]),
    "cosine_axis_0": (lambda a, b: S.cosine_similarity(a, b, axis=0), lambda a, b: TF.cosine_similarity(a, b, dim=0),
                      [randn(4, 5), randn(4, 5, seed=1)]),
    "cosine_middle_axis": (lambda a, b: S.cosine_similarity(a, b, axis=1),
                           lambda a, b: TF.cosine_similarity(a, b, dim=1), [randn(2, 3, 4), randn(2, 3, 4, seed=1)]),
    "cosine_broadcast": (S.cosine_similarity, lambda a, b: TF.cosine_similarity(a, b, dim=-1),
                         [randn(3, 1, 4), randn(5, 4, seed=1)]),
    "normalize_p2": (S.normalize, lambda x: TF.normalize(x, dim=-1), [randn(4, 5, seed=2)]),
    "normalize_p1_axis_0": (lambda x: S.normalize(x, p=1, axis=0), lambda x: TF.normalize(x, p=1, dim=0),
                            [randn(4, 5)]),
    "normalize_inf": (lambda x: S.normalize(x, p=np.inf, axis=1), lambda x: TF.normalize(x, p=float("inf"), dim=1),
                      [randn(2, 3, 4)]),
    "normalize_two_axes": (lambda x: S.normalize(x, axis=(1, 2)), lambda x: TF.normalize(x, dim=(1, 2)),
                           [randn(2, 3, 4, seed=2)]),
    "pairwise_p2": (S.pairwise_distance, TF.pairwise_distance, [randn(4, 5), randn(4, 5, seed=1)]),
    "pairwise_p1": (lambda a, b: S.pairwise_distance(a, b, p=1), lambda a, b: TF.pairwise_distance(a, b, p=1),
                    [randn(4, 5), randn(4, 5, seed=1)]),
    "pairwise_inf": (lambda a, b: S.pairwise_distance(a, b, p=np.inf),
                     lambda a, b: TF.pairwise_distance(a, b, p=float("inf")), [randn(4, 5), randn(4, 5, seed=1)]),
    "pairwise_broadcast": (S.pairwise_distance, TF.pairwise_distance, [randn(4, 5), randn(5, seed=1)]),
    "pairwise_batched": (S.pairwise_distance, TF.pairwise_distance, [randn(2, 3, 4), randn(3, 4, seed=1)]),
    "cdist": (S.cdist, torch.cdist, [randn(4, 3), randn(5, 3, seed=1)]),
    "cdist_batched": (S.cdist, torch.cdist, [randn(2, 4, 3), randn(2, 5, 3, seed=1)]),
    "cdist_batch_broadcast": (S.cdist, torch.cdist, [randn(2, 1, 4, 3), randn(3, 5, 3, seed=1)]),
    "cdist_p1": (lambda a, b: S.cdist(a, b, 1), lambda a, b: torch.cdist(a, b, 1), [randn(4, 3), randn(5, 3, seed=1)]),
    "cdist_p3_batch_broadcast": (lambda a, b: S.cdist(a, b, 3), lambda a, b: torch.cdist(a, b, 3),
                                 [randn(2, 1, 4, 3), randn(3, 5, 3, seed=1)]),
    "cdist_p0_5": (lambda a, b: S.cdist(a, b, 0.5), lambda a, b: torch.cdist(a, b, 0.5),
                   [randn(4, 3), randn(5, 3, seed=1)]),
    "cdist_inf": (lambda a, b: S.cdist(a, b, np.inf), lambda a, b: torch.cdist(a, b, np.inf),
                  [randn(2, 4, 3), randn(2, 5, 3, seed=1)]),
    "cdist_p0": (lambda a, b: S.cdist(a, b, 0), lambda a, b: torch.cdist(a, b, 0), [randn(4, 3), randn(5, 3, seed=1)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


# -- cosine similarity -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_clamps_each_norm_and_matches_torch_gradients(dtype):
    """Rows with norms below eps (one all zero): torch 2.x raises each norm to eps outside
    the graph, and the gradients still flow through the norms; the values and gradients
    must agree with it, and none may be nan."""
    eps = 1e-3
    a = with_rows(randn(4, 3), {0: [1e-5, 0.0, 0.0], 1: [0.0, 0.0, 0.0], 2: [2e-4, -1e-4, 3e-4]})
    b = with_rows(randn(4, 3, seed=1), {0: [2e-5, 1e-5, 0.0], 1: [1.0, 2.0, 2.0], 2: [3.0, 0.5, -1.0]})
    out = compare_with_torch(lambda x, y: S.cosine_similarity(x, y, eps=eps),
                             lambda x, y: TF.cosine_similarity(x, y, eps=eps), a, b, dtype=dtype)[0].numpy()
    assert out[1] == 0.0
    assert abs(out[0]) < 1e-3  # the product of the norms, 2e-10, is far below eps: divided by eps^2


def test_cosine_broadcasts_before_taking_norms_as_torch():
    """a (1, 3) against b (4, 3) along axis 0: each column of a is repeated 4 times first, so
    its norm is 2 |a_j|; cos is then blind to a's scale, and its gradient to a is 0."""
    a, b = randn(1, 3, seed=2), randn(4, 3, seed=1)
    compare_with_torch(lambda x, y: S.cosine_similarity(x, y, axis=0), lambda x, y: TF.cosine_similarity(x, y, dim=0),
                       a, b, grad=[False, True])
    x = lamina.tensor(a, requires_grad=True, dtype=np.float64)
    out = S.cosine_similarity(x, b, axis=0)
    np.testing.assert_allclose(out.numpy(), np.sign(a[0]) * b.sum(axis=0) / (2 * np.linalg.norm(b, axis=0)),
                               rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, np.zeros((1, 3)), atol=1e-12)


def test_cosine_of_parallel_and_opposite_vectors():
    a = lamina.tensor(np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), dtype=np.float64)
    b = lamina.tensor(np.array([[2.0, 4.0, 6.0], [0.0, 5.0, 0.0], [-1.0, -2.0, -3.0]]), dtype=np.float64)
    np.testing.assert_allclose(S.cosine_similarity(a, b).numpy(), [1.0, 0.0, -1.0], atol=1e-15)


# -- normalize -----------------------------------------------------------------------------


def test_normalize_gives_unit_vectors_and_leaves_zero_vectors_at_zero():
    x = with_rows(randn(3, 4), {1: [0.0, 0.0, 0.0, 0.0]})
    out = compare_with_torch(S.normalize, lambda t: TF.normalize(t, dim=-1), x, dtype=np.float64)[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2]], axis=1), [1.0, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(out[1], np.zeros(4))


def test_normalize_below_eps_divides_by_eps_as_torch():
    x = np.array([[3e-4, -4e-4], [3.0, 4.0]])
    out = compare_with_torch(lambda t: S.normalize(t, eps=1e-2), lambda t: TF.normalize(t, eps=1e-2), x,
                             dtype=np.float64)[0].numpy()
    np.testing.assert_allclose(out, [[3e-2, -4e-2], [0.6, 0.8]], rtol=1e-12)


# -- pairwise distance ---------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2, np.inf])
def test_pairwise_distance_of_equal_rows_has_a_finite_gradient_as_torch(p):
    a = randn(3, 4)
    b = with_rows(randn(3, 4, seed=1), {1: a[1]})
    compare_with_torch(lambda x, y: S.pairwise_distance(x, y, p=p),
                       lambda x, y: TF.pairwise_distance(x, y, p=float(p)), a, b, dtype=np.float64)
    x = lamina.tensor(a, requires_grad=True, dtype=np.float64)
    S.pairwise_distance(x, b, p=p).sum().backward()
    assert np.isfinite(x.grad).all()


# -- cdist -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cdist_at_zero_distance_has_zero_gradient_as_torch(dtype):
    a = with_rows(randn(3, 2), {0: [1.0, 2.0]})
    b = with_rows(randn(4, 2, seed=1), {2: [1.0, 2.0]})
    out = compare_with_torch(S.cdist, torch.cdist, a, b, dtype=dtype)[0].numpy()
    assert out[0, 2] == 0.0
    x = lamina.tensor(a, requires_grad=True, dtype=dtype)
    y = lamina.tensor(b, requires_grad=True, dtype=dtype)
    upstream = np.zeros((3, 4), dtype=dtype)
    upstream[0, 2] = 1.0                           # only the zero distance feeds the loss
    S.cdist(x, y).backward(upstream)
    np.testing.assert_array_equal(x.grad, np.zeros((3, 2)))
    np.testing.assert_array_equal(y.grad, np.zeros((4, 2)))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0, 1.5, 3.0, np.inf])
def test_cdist_of_any_p_with_repeated_coordinates_and_rows_matches_torch(p):
    # a row of a equals a row of b, other pairs share coordinates, and max |difference| ties
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, -2.0, 4.0]])
    b = np.array([[1.0, 2.0, 3.0], [1.0, -2.0, 3.0], [3.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    compare_with_torch(lambda x, y: S.cdist(x, y, p), lambda x, y: torch.cdist(x, y, p), a, b, dtype=np.float64)


def test_cdist_values_match_the_distances_of_every_pair():
    a, b = randn(3, 4), randn(5, 4, seed=1)
    out = S.cdist(lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64)).numpy()
    expected = [[np.linalg.norm(a[i] - b[j]) for j in range(5)] for i in range(3)]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_cdist_keeps_small_distances_between_large_vectors():
    """Exact differences: ||a||^2 + ||b||^2 - 2 a.b would lose a distance of 1e-3 at norms of 1e3."""
    a = np.full((1, 4), 1000.0)
    b = a + np.array([[1e-3, 0.0, 0.0, 0.0]])
    out = S.cdist(lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64)).numpy()
    np.testing.assert_allclose(out, [[1e-3]], rtol=1e-9)


def test_cdist_of_many_rows_with_near_duplicates_equals_the_exact_differences():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 60, 8)) * 50
    b = np.concatenate([a[:, :30] + 1e-4 * rng.standard_normal((2, 30, 8)), rng.standard_normal((2, 40, 8))], axis=1)
    out = S.cdist(lamina.tensor(a, dtype=np.float64), lamina.tensor(b, dtype=np.float64)).numpy()
    exact = np.sqrt(((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(axis=-1))
    np.testing.assert_allclose(out, exact, rtol=1e-10)
    assert out[:, :30, :30].diagonal(axis1=1, axis2=2).max() < 1e-3       # the near-duplicates, kept exactly
    # torch's own product form (its default beyond 25 rows) gives 0.06 for the 2e-4 ones in float32
    exact_torch = lambda x, y: torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")  # noqa: E731
    compare_with_torch(S.cdist, exact_torch, a[0], b[0], dtype=np.float32)


def test_nearest_stored_image_by_cdist_mostly_shares_the_label():
    """The course notes' image retrieval on 8x8 digits: the stored image nearest each query
    (by Euclidean distance between pixel vectors) has the query's label most of the time."""
    x, y = lamina.data.load_digits(size=8)
    (stored, stored_y), _, (queries, query_y) = lamina.data.train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    flat = lambda images: lamina.tensor(images.reshape(len(images), -1) / 16.0)  # noqa: E731
    nearest = S.cdist(flat(queries), flat(stored)).numpy().argmin(axis=1)
    assert np.mean(stored_y[nearest] == query_y) > 0.9


# -- bad input -------------------------------------------------------------------------------


def test_shapes_that_do_not_fit_raise_shape_errors_naming_the_op():
    with pytest.raises(lamina.ShapeError, match=r"cosine_similarity: .*\(3, 4\) and \(5,\)"):
        S.cosine_similarity(randn(3, 4), randn(5))
    with pytest.raises(lamina.ShapeError, match=r"pairwise_distance: .*\(3, 4\) and \(2, 4\)"):
        S.pairwise_distance(randn(3, 4), randn(2, 4))
    with pytest.raises(lamina.ShapeError, match=r"cdist: .*\(3, 4\) and \(5, 3\).*same length d"):
        S.cdist(randn(3, 4), randn(5, 3))
    with pytest.raises(lamina.ShapeError, match=r"cdist: .*\(4,\) and \(5, 4\)"):
        S.cdist(randn(4), randn(5, 4))
    with pytest.raises(lamina.ShapeError, match=r"cdist: the leading \(batch\) axes of shapes \(2, 3, 4\) and \(5, 6"):
        S.cdist(randn(2, 3, 4), randn(5, 6, 4))
    with pytest.raises(lamina.ShapeError, match=r"cdist: .*\(3, 4\) and \(5, 3\).*same length d"):
        S.cdist(randn(3, 4), randn(5, 3), p=1)
    with pytest.raises(lamina.ShapeError, match=r"cosine_similarity: axis 2"):
        S.cosine_similarity(randn(3, 4), randn(3, 4), axis=2)


def test_bad_orders_and_eps_raise_value_errors():
    with pytest.raises(ValueError, match=r"normalize: p must be one of 1, 2, inf or 'fro', got 3"):
        S.normalize(randn(3, 4), p=3)
    with pytest.raises(ValueError, match=r"pairwise_distance: p must be one of"):
        S.pairwise_distance(randn(3, 4), randn(3, 4), p=0)
    with pytest.raises(ValueError, match=r"cosine_similarity: eps must be a number >= 0, got -1"):
        S.cosine_similarity(randn(3, 4), randn(3, 4), eps=-1)
    with pytest.raises(ValueError, match=r"cosine_similarity: axis must be one int"):
        S.cosine_similarity(randn(3, 4), randn(3, 4), axis=(0, 1))

    with pytest.raises(ValueError, match=r"cdist: p must be a number >= 0 \(or inf\), got -1"):
        S.cdist(randn(3, 4), randn(2, 4), p=-1)
