"""lamina.analysis.hessian: Hessian-vector products, top eigenvalues and Hutchinson's trace
of a small network's cross-entropy, against the full Hessian built by torch; the exact
spectrum of a least-squares cost; batches averaged; the model and its gradients left alone."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.analysis.hessian import hessian_eigenvalues, hessian_trace, hessian_vector_product
from lamina.data import ArrayDataset, DataLoader
from lamina.errors import ShapeError


def cross_entropy(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


@pytest.fixture
def problem():
    """Dense(4, tanh) -> Dense(3) on 3 features (31 parameters) in float64, a fixed batch of
    20 samples, and the exact Hessian of its mean cross-entropy built by torch over the
    flattened parameters (in ``model.parameters()`` order)."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(3)
    model = nn.Sequential(nn.Dense(4, activation="tanh", bias_init="uniform"), nn.Dense(3, bias_init="uniform"))
    model.build((None, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    y = rng.integers(0, 3, 20)
    shapes = [p.shape for p in model.parameters()]
    flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])

    def torch_cost(w):
        parts, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(w[start:start + size].reshape(shape))
            start += size
        w1, b1, w2, b2 = parts
        logits = torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2  # lamina's Dense: z = x W + b, W (in, out)
        return torch.nn.functional.cross_entropy(logits, torch.tensor(y))

    hessian = torch.autograd.functional.hessian(torch_cost, torch.tensor(flat)).numpy()
    return model, x, y, hessian, shapes


def split(flat, shapes):
    return [part.reshape(shape) for part, shape in zip(np.split(flat, np.cumsum([np.prod(s) for s in shapes])[:-1]),
                                                       shapes)]


def largest_by_magnitude(matrix, k):
    values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(-np.abs(values))[:k]
    return values[order], vectors[:, order]


def test_hessian_vector_product_matches_torch_hessian(problem):
    model, x, y, hessian, shapes = problem
    assert hessian.shape == (31, 31)
    v = np.random.default_rng(1).normal(size=31)
    product = hessian_vector_product(model, cross_entropy, x, y, split(v, shapes))
    assert [p.shape for p in product] == shapes
    assert_close(np.concatenate([p.ravel() for p in product]), hessian @ v, 1e-10, "H v")


def test_top_eigenpairs_match_numpy(problem):
    model, x, y, hessian, shapes = problem
    expected_values, expected_vectors = largest_by_magnitude(hessian, 4)  # the 4th is negative
    found = hessian_eigenvalues(model, cross_entropy, x, y, top_k=4, max_iter=2000, tol=1e-13, seed=0)
    assert len(found.eigenvalues) == len(found.eigenvectors) == 4
    assert_close(found.eigenvalues, expected_values, 1e-6, "eigenvalues")
    for vector, expected in zip(found.eigenvectors, expected_vectors.T):
        flat = np.concatenate([part.ravel() for part in vector])
        assert abs(np.linalg.norm(flat) - 1) < 1e-12
        sign = np.sign(flat @ expected)
        assert_close(sign * flat, expected, 1e-4, "eigenvector")


def test_hutchinson_trace_is_within_three_standard_errors(problem):
    model, x, y, hessian, _ = problem
    estimate = hessian_trace(model, cross_entropy, x, y, samples=300, seed=0)
    exact = np.trace(hessian)
    assert 0 < estimate.standard_error < 0.5 * abs(exact)
    assert abs(estimate.mean - exact) <= 3 * estimate.standard_error


def test_batches_are_averaged_by_size(problem):
    model, x, y, hessian, shapes = problem
    v = np.random.default_rng(2).normal(size=31)
    loader = DataLoader(ArrayDataset(x, y), batch_size=8, shuffle=False)  # batches of 8, 8 and 4
    product = hessian_vector_product(model, cross_entropy, loader, None, split(v, shapes))
    assert_close(np.concatenate([p.ravel() for p in product]), hessian @ v, 1e-10, "H v over batches")
    batches = [(x[:13], y[:13]), (x[13:], y[13:])]
    top = hessian_eigenvalues(model, cross_entropy, batches, None, top_k=1, max_iter=2000, tol=1e-13)
    assert_close(top.eigenvalues, largest_by_magnitude(hessian, 1)[0], 1e-6, "top eigenvalue over batches")


def test_parameters_gradients_and_modes_are_left_alone(problem):
    model, x, y, _, shapes = problem
    params = model.parameters()
    before = [p.numpy().copy() for p in params]
    for p in params:
        p.grad = np.full(p.shape, 7.0)
    model.train()
    model[1].eval()
    hessian_eigenvalues(model, cross_entropy, x, y, top_k=2, max_iter=5)
    hessian_trace(model, cross_entropy, x, y, samples=2)
    for p, value in zip(params, before):
        np.testing.assert_array_equal(p.grad, np.full(p.shape, 7.0))
        np.testing.assert_array_equal(p.numpy(), value)
    assert model.training and model[0].training and not model[1].training


def test_least_squares_spectrum_is_exact():
    """J(w) = mean_i (x_i . w - y_i)^2 has the constant Hessian H = 2 X^T X / m."""
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.2])
    y = rng.normal(size=(40, 1))
    model = nn.Sequential(nn.Dense(1, use_bias=False))
    model.build((None, 6))
    expected = np.sort(np.linalg.eigvalsh(2 * x.T @ x / 40))[::-1]
    found = hessian_eigenvalues(model, F.mean_squared_error, x, y, top_k=6, max_iter=3000, tol=1e-14)
    assert_close(found.eigenvalues, expected, 1e-7, "least-squares eigenvalues")
    assert min(found.eigenvalues) > 0  # a convex cost curves upward in every direction
    trace = hessian_trace(model, F.mean_squared_error, x, y, samples=50)
    assert abs(trace.mean - expected.sum()) <= 3 * trace.standard_error


def test_bad_input_raises_clear_errors(problem):
    model, x, y, _, shapes = problem
    zeros = [np.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        hessian_eigenvalues(model, cross_entropy, x, y, top_k=0)
    with pytest.raises(ValueError, match="top_k=32 but the model has only 31"):
        hessian_eigenvalues(model, cross_entropy, x, y, top_k=32)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        hessian_trace(model, cross_entropy, x, y, samples=0)
    with pytest.raises(ValueError, match="3 vectors for 4 trainable parameters"):
        hessian_vector_product(model, cross_entropy, x, y, zeros[:3])
    with pytest.raises(ShapeError, match=r"parameter 'dense_1.weight' has shape \(3, 4\)"):
        hessian_vector_product(model, cross_entropy, x, y, zeros[:2] + [np.zeros((3, 4))] + zeros[3:])
    with pytest.raises(ValueError, match="must return a scalar"):
        hessian_vector_product(model, lambda z, t: z, x, y, zeros)
    with pytest.raises(TypeError, match="iterable of \\(x, y\\) batches"):
        hessian_trace(model, cross_entropy, x, None)
