"""+ - * / ** @ and negation: gradcheck in float64 and agreement with PyTorch in both dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import nonzero, op_table_tests, positive, randn

DTYPES = [np.float32, np.float64]


# name: (lamina function, torch function, inputs)
CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [randn(3, 4), randn(3, 4, seed=1)]),
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [randn(2, 3, 4), randn(3, 1, seed=1)]),
    "add_broadcast_both": (lambda a, b: a + b, lambda a, b: a + b, [randn(3, 1), randn(1, 4, seed=1)]),
    "add_scalar": (lambda a: a + 2.5, lambda a: a + 2.5, [randn(3, 2)]),
    "radd_scalar": (lambda a: 2.5 + a, lambda a: 2.5 + a, [randn(3, 2)]),
    "add_functional": (F.add, torch.add, [randn(4), randn(2, 4, seed=1)]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [randn(3, 4), randn(3, 4, seed=1)]),
    "sub_broadcast": (lambda a, b: a - b, lambda a, b: a - b, [randn(4), randn(3, 4, seed=1)]),
    "rsub_scalar": (lambda a: 1.5 - a, lambda a: 1.5 - a, [randn(3, 2)]),
    "sub_functional": (F.sub, torch.sub, [randn(2, 1, 3), randn(4, 1, seed=1)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [randn(3, 4), randn(3, 4, seed=1)]),
    "mul_broadcast": (lambda a, b: a * b, lambda a, b: a * b, [randn(3, 1, 4), randn(2, 1, seed=1)]),
    "mul_self": (lambda a: a * a, lambda a: a * a, [randn(5)]),
    "rmul_scalar": (lambda a: 3.0 * a, lambda a: 3.0 * a, [randn(3, 2)]),
    "mul_functional": (F.mul, torch.mul, [randn(2, 3), randn(3, seed=1)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [randn(3, 4), nonzero(3, 4, seed=1)]),
    "div_broadcast": (lambda a, b: a / b, lambda a, b: a / b, [randn(2, 3), nonzero(3, seed=1)]),
    "div_broadcast_numerator": (lambda a, b: a / b, lambda a, b: a / b, [randn(3, 1), nonzero(2, 3, 4, seed=1)]),
    "rdiv_scalar": (lambda a: 2.0 / a, lambda a: 2.0 / a, [nonzero(3, 2)]),
    "div_functional": (F.div, torch.div, [randn(4), nonzero(4, seed=1)]),
    "pow_square": (lambda a: a**2, lambda a: a**2, [randn(3, 4)]),
    "pow_cube": (lambda a: a**3, lambda a: a**3, [randn(3, 4)]),
    "pow_half": (lambda a: a**0.5, lambda a: a**0.5, [positive(3, 4)]),
    "pow_negative": (lambda a: a**-1.5, lambda a: a**-1.5, [positive(3, 4)]),
    "pow_tensor": (lambda a, b: a**b, lambda a, b: a**b, [positive(3, 4), randn(3, 4, seed=1)]),
    "pow_tensor_broadcast": (lambda a, b: a**b, lambda a, b: a**b, [positive(2, 3), randn(3, seed=1)]),
    "pow_tensor_broadcast_base": (lambda a, b: a**b, lambda a, b: a**b, [positive(3), randn(2, 3, seed=1)]),
    "rpow_scalar": (lambda a: 2.0**a, lambda a: 2.0**a, [randn(3, 2)]),
    "power_functional": (lambda a, b: F.power(a, b), torch.pow, [positive(4), randn(4, seed=1)]),
    "neg": (lambda a: -a, lambda a: -a, [randn(3, 4)]),
    "neg_functional": (F.neg, torch.neg, [randn(2, 2)]),
    "matmul_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(3, 4), randn(4, 5, seed=1)]),
    "matmul_batched": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(2, 3, 4), randn(2, 4, 5, seed=1)]),
    "matmul_batched_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(2, 3, 4), randn(4, 2, seed=1)]),
    "matmul_2d_batched": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(3, 4), randn(2, 4, 2, seed=1)]),
    "matmul_batch_broadcast": (lambda a, b: a @ b, lambda a, b: a @ b,
                               [randn(2, 1, 3, 4), randn(3, 4, 2, seed=1)]),
    "matmul_1d_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(4), randn(4, seed=1)]),
    "matmul_1d_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(4), randn(4, 3, seed=1)]),
    "matmul_2d_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(3, 4), randn(4, seed=1)]),
    "matmul_1d_batched": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(4), randn(2, 4, 3, seed=1)]),
    "matmul_batched_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [randn(2, 3, 4), randn(4, seed=1)]),
    "matmul_functional": (F.matmul, torch.matmul, [randn(2, 3), randn(3, 2, seed=1)]),
    "expression": (lambda a, b: (a * b - a / (b * b + 1.0)) ** 2 @ b.T,
                   lambda a, b: (a * b - a / (b * b + 1.0)) ** 2 @ b.T, [randn(3, 4), randn(3, 4, seed=1)]),
}


test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_gradient_only_to_operands_that_require_it():
    a = lamina.tensor(randn(2, 3), requires_grad=True)
    b = lamina.tensor(nonzero(3))
    (a / b - b * a).sum().backward()
    assert b.grad is None
    np.testing.assert_allclose(a.grad, np.broadcast_to(1 / b.data - b.data, (2, 3)), rtol=1e-6)


def test_constant_operand_keeps_tensor_dtype():
    for dtype in DTYPES:
        x = lamina.tensor(randn(3), dtype=dtype, requires_grad=True)
        for y in (x + 1, 1 - x, x * 2.5, 2.5 / x, x**2, 2.0**x, x + np.ones(3)):
            assert y.dtype == dtype


def test_matmul_with_constant_operand():
    w = lamina.tensor(randn(4, 2), requires_grad=True)
    x = randn(3, 4, seed=1).astype(np.float32)
    (x @ w).sum().backward()  # ndarray @ Tensor defers to Tensor.__rmatmul__
    np.testing.assert_allclose(w.grad, x.T @ np.ones((3, 2), np.float32), rtol=1e-6)


@pytest.mark.parametrize(
    ("op", "name"),
    [
        (lambda a, b: a + b, "add"),
        (lambda a, b: a - b, "sub"),
        (lambda a, b: a * b, "mul"),
        (lambda a, b: a / b, "div"),
        (lambda a, b: a**b, "pow"),
    ],
)
def test_broadcast_mismatch_raises_shape_error(op, name):
    a = lamina.tensor(np.ones((2, 3)), requires_grad=True)
    b = lamina.tensor(np.ones((4,)))
    with pytest.raises(lamina.ShapeError) as info:
        op(a, b)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert "(2, 3)" in message and "(4,)" in message


@pytest.mark.parametrize(
    ("a_shape", "b_shape"), [((3, 4), (5, 2)), ((4,), (3,)), ((2, 3, 4), (2, 5, 6)), ((3, 4), (3,))]
)
def test_matmul_mismatch_raises_shape_error(a_shape, b_shape):
    a = lamina.tensor(np.ones(a_shape))
    b = lamina.tensor(np.ones(b_shape))
    with pytest.raises(lamina.ShapeError) as info:
        a @ b
    message = str(info.value)
    assert message.startswith("matmul:")
    assert str(a_shape) in message and str(b_shape) in message


def test_matmul_refuses_scalars():
    with pytest.raises(lamina.ShapeError, match="matmul"):
        lamina.tensor(2.0) @ lamina.tensor(np.ones(3))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("create_graph", [False, True])
def test_pow_tensor_gradients_at_a_zero_or_negative_base_match_torch(create_graph):
    a_np = np.array([0.0, 0.0, 0.0, -2.0, -2.0, 2.0, 0.0])
    b_np = np.array([0.0, 2.0, -1.0, 2.0, 0.5, 0.0, 0.5])
    a, b = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (a_np, b_np))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np))
    grads = lamina.autograd.grad((a**b).sum(), [a, b], create_graph=create_graph)
    (ta**tb).sum().backward()
    for ours, theirs in zip(grads, (ta.grad, tb.grad)):
        np.testing.assert_array_equal(ours.data if isinstance(ours, lamina.Tensor) else ours, theirs.numpy())


def test_an_integer_base_to_a_negative_integer_power_is_a_clear_error():
    base, exponent = lamina.tensor(np.array([2, 3])), lamina.tensor(np.array([-1, 2]))
    with pytest.raises(ValueError, match=r"pow: an integer base \(int64\) to a negative integer exponent.*float"):
        base ** exponent
    np.testing.assert_array_equal((base ** lamina.tensor(np.array([0, 2]))).numpy(), [1, 9])
    np.testing.assert_allclose((lamina.tensor(np.array([2.0, 3.0])) ** exponent).numpy(), [0.5, 9.0])
