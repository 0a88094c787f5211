"""Element-wise ops combine dtypes as PyTorch's type promotion does: the highest category
(bool < integer < float) decides, 0-d tensors and plain numbers only when their category is
higher, true division and float functions of integers give the default float dtype."""

import itertools
import warnings

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina.autograd.function import result_dtype

DTYPES = [np.bool_, np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64]
SHAPES = [((3,), (3,)), ((3,), ()), ((), (3,)), ((), ())]
BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "maximum": (F.maximum, torch.maximum),
    "where": (lambda a, b: F.where(np.array([True, False, True]), a, b),
              lambda a, b: torch.where(torch.tensor([True, False, True]), a, b)),
}


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _pair(da, db, sa, sb):
    a, b = np.full(sa, 2, dtype=da), np.full(sb, 1, dtype=db)
    ours = lamina.tensor(a, dtype=a.dtype), lamina.tensor(b, dtype=b.dtype)
    return ours, (torch.from_numpy(a), torch.from_numpy(b))


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops_give_torch_result_dtype(op):
    ours, theirs = BINARY[op]
    checked = 0
    for da, db in itertools.product(DTYPES, DTYPES):
        for sa, sb in SHAPES:
            (la, lb), (ta, tb) = _pair(da, db, sa, sb)
            try:
                expected = theirs(ta, tb)
            except RuntimeError:                      # torch refuses (bool subtraction): not compared
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = ours(la, lb)
            assert str(got.dtype) == _name(expected.dtype), (op, da, sa, db, sb)
            np.testing.assert_allclose(got.numpy().astype(np.float64), expected.double().numpy())
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("number", [3, 2.5, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_plain_number_counts_only_for_its_category(number, dtype):
    a = np.ones(3, dtype)
    for ours, theirs in ((lambda x: x + number, lambda x: x + number), (lambda x: number * x, lambda x: number * x),
                         (lambda x: x / number, lambda x: x / number)):
        try:
            expected = theirs(torch.from_numpy(a))
        except RuntimeError:
            continue
        assert str(ours(lamina.tensor(a, dtype=a.dtype)).dtype) == _name(expected.dtype)


@pytest.mark.parametrize("fn", ["exp", "log", "sqrt", "sigmoid", "tanh", "sin", "cos", "log1p", "expm1", "rsqrt"])
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int32, np.int64])
def test_float_functions_of_integers_give_the_default_float_dtype(fn, dtype):
    a = np.arange(1, 4).astype(dtype)
    got = getattr(F, fn)(lamina.tensor(a, dtype=a.dtype))
    expected = getattr(torch, fn)(torch.from_numpy(a))
    assert str(got.dtype) == _name(expected.dtype)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_integer_division_follows_the_default_float_dtype():
    a = lamina.tensor(np.array([1, 2, 3]))
    assert (a / a).dtype == np.float32
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    try:
        assert (a / a).dtype == np.float64
    finally:
        lamina.backend.set_default_dtype(before)


def test_gradients_come_back_in_each_operands_dtype():
    x = lamina.tensor(np.arange(3.0), dtype=np.float32, requires_grad=True)
    s = lamina.tensor(np.array(2.0), dtype=np.float64, requires_grad=True)
    y = (x * s).sum()
    y.backward()
    tx = torch.arange(3.0, requires_grad=True)
    ts = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    ty = (tx * ts).sum()
    ty.backward()
    assert y.dtype == np.float32 and str(ty.dtype) == "torch.float32"
    assert x.grad.dtype == np.float32 and s.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, tx.grad.numpy())
    np.testing.assert_allclose(s.grad, ts.grad.numpy())


def test_an_integer_mask_keeps_a_float32_graph_in_float32():
    w = lamina.tensor(np.ones((2, 3)), dtype=np.float32, requires_grad=True)
    mask = lamina.tensor(np.array([[1, 0, 1], [0, 1, 1]]))
    out = (w * mask).sum()
    out.backward()
    assert out.dtype == np.float32 and w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, mask.numpy())


def test_result_dtype_rules():
    f16, f32, f64, i32, i64, b = (np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, bool))
    assert result_dtype([i64], [], []) == i64
    assert result_dtype([i64, f16], [], []) == f16
    assert result_dtype([f32], [f64], []) == f32
    assert result_dtype([i32], [f64], []) == f64
    assert result_dtype([i32], [], [f64]) == lamina.backend.get_default_dtype()
    assert result_dtype([b], [], [i64]) == i64
    assert result_dtype([i32], [], [i64]) == i32
    assert result_dtype([i32], [], [], to_float=True) == lamina.backend.get_default_dtype()
