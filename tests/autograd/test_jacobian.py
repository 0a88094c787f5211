"""jacobian and vjp against torch.autograd.functional, and their edge cases."""

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina.autograd.derivatives import jacobian, vjp


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_jacobian_of_softmax_matches_torch_and_the_closed_form():
    x = _randn(5)
    ours = jacobian(lambda t: F.softmax(t), x)
    theirs = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    s = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(ours, np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-14)


def test_jacobian_of_a_matrix_function_of_two_inputs_matches_torch():
    a, b = _randn(2, 3, seed=1), _randn(3, 4, seed=2)
    ours = jacobian(lambda p, q: F.tanh(p @ q), (a, b))
    theirs = torch.autograd.functional.jacobian(lambda p, q: torch.tanh(p @ q), (torch.tensor(a), torch.tensor(b)))
    assert isinstance(ours, tuple) and len(ours) == 2
    for mine, ref in zip(ours, theirs):
        assert mine.shape == tuple(ref.shape)
        np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-12, atol=1e-14)


def test_jacobian_of_a_scalar_is_the_gradient_and_unused_inputs_get_zeros():
    x, unused = _randn(4, seed=3), _randn(2, seed=4)
    grad_x, grad_unused = jacobian(lambda p, q: (p * p).sum(), (x, unused))
    np.testing.assert_allclose(grad_x, 2 * x)
    np.testing.assert_array_equal(grad_unused, np.zeros(2))
    constant = jacobian(lambda p: lamina.tensor(np.ones(3)), x)
    assert constant.shape == (3, 4) and not constant.any()


def test_vjp_matches_torch_and_leaves_the_inputs_alone():
    x = _randn(3, 4, seed=5)
    v = _randn(3, seed=6)
    before = x.copy()
    value, product = vjp(lambda t: F.logsumexp(t, axis=1), x, v)
    ref_value, ref_product = torch.autograd.functional.vjp(lambda t: torch.logsumexp(t, 1), torch.tensor(x),
                                                           torch.tensor(v))
    np.testing.assert_allclose(value, ref_value.numpy(), rtol=1e-12)
    np.testing.assert_allclose(product, ref_product.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(x, before)


def test_inputs_keep_their_dtype_and_tensors_are_not_touched():
    t = lamina.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    jac = jacobian(lambda p: p * 2, t)
    assert jac.dtype == np.float32 and t.grad is None
    np.testing.assert_array_equal(jac, 2 * np.eye(3))


def test_bad_inputs_raise_named_errors():
    with pytest.raises(TypeError, match=r"jacobian: inputs\[0\] has dtype int64"):
        jacobian(lambda t: t.sum(), np.arange(3))
    with pytest.raises(TypeError, match="vjp: fn must return a Tensor, got float"):
        vjp(lambda t: 1.0, np.ones(2))
    with pytest.raises(ValueError, match="jacobian: no inputs given"):
        jacobian(lambda: None, ())
