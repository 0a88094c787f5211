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


INT, F32, BOOL = np.array([1, 2, 4]), np.array([0.5, 1.0, 2.0], np.float32), np.array([True, False, True])
MORE = {
    "reciprocal of integers": (lambda L: F.reciprocal(L(INT)), lambda T: torch.reciprocal(T(INT))),
    "float32 ** numpy float64": (lambda L: L(F32) ** np.float64(2.0), lambda T: T(F32) ** np.float64(2.0)),
    "integers ** 2.5": (lambda L: L(INT) ** 2.5, lambda T: T(INT) ** 2.5),
    "booleans ** 2": (lambda L: L(BOOL) ** 2, lambda T: T(BOOL) ** 2),
    "clamp float32 by a numpy float64": (lambda L: F.clamp(L(F32), np.float64(0.7), None),
                                         lambda T: torch.clamp(T(F32), np.float64(0.7), None)),
    "clamp integers by 2.5": (lambda L: F.clamp(L(INT), 2.5, None), lambda T: torch.clamp(T(INT), 2.5, None)),
    "clip integers by 2": (lambda L: F.clip(L(INT), 2, None), lambda T: torch.clamp(T(INT), 2, None)),
    "softsign of integers": (lambda L: F.softsign(L(INT)), lambda T: torch.nn.functional.softsign(T(INT))),
    "logaddexp int with float32": (lambda L: F.logaddexp(L(INT), L(F32)), lambda T: torch.logaddexp(T(INT), T(F32))),
    "copysign of integers": (lambda L: F.copysign(L(INT), L(INT)), lambda T: torch.copysign(T(INT), T(INT))),
    "xlogy float32 with a float64 0-d": (lambda L: F.xlogy(L(F32), L(np.array(2.0))),
                                         lambda T: torch.xlogy(T(F32), T(np.array(2.0)))),
    "fmod uint8 by an int8 0-d": (lambda L: F.fmod(L(np.array([5, 7], np.uint8)), L(np.array(3, np.int8))),
                                  lambda T: torch.fmod(T(np.array([5, 7], np.uint8)), T(np.array(3, np.int8)))),
}
MORE.update({f"{fn} of integers": (lambda L, fn=fn: getattr(F, fn)(L(INT)), lambda T, fn=fn: getattr(torch, fn)(T(INT)))
             for fn in ("log2", "log10", "exp2", "atan", "sinh", "cosh", "tan", "asinh", "sinc")})


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_ops_give_torch_result_dtype(case):
    ours, theirs = MORE[case]
    got = ours(lambda a: lamina.tensor(a, dtype=a.dtype))
    expected = theirs(lambda a: torch.from_numpy(np.array(a)))
    assert str(got.dtype) == _name(expected.dtype)
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected.double().numpy(), rtol=1e-6)


def test_gelu_of_float16_stays_float16_as_torch():
    x = np.array([-1.5, 0.5, 2.0], np.float16)
    got = F.gelu(lamina.tensor(x, dtype=np.float16))
    expected = torch.nn.functional.gelu(torch.from_numpy(x))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2e-3)


@pytest.mark.parametrize("fn", ["sign", "square"])
def test_unary_ops_of_booleans_as_torch(fn):
    b = np.array([True, False, True])
    got = getattr(F, fn)(lamina.tensor(b, dtype=bool))
    expected = getattr(torch, fn)(torch.from_numpy(b))
    assert str(got.dtype) == _name(expected.dtype)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_nansum_of_integers_keeps_their_dtype():
    i = np.array([[1, 2], [3, 4]], np.int32)
    got, expected = F.nansum(lamina.tensor(i, dtype=np.int32), axis=0), torch.nansum(torch.from_numpy(i), dim=0)
    assert str(got.dtype) == _name(expected.dtype)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
