"""Result and gradient dtypes of the reductions and scans, against PyTorch, for every dtype.

PyTorch adds up and multiplies bool and integers in int64 (and returns int64), works float16
sums, means, deviations, norms and logsumexp in float32 (returning float16), and takes bool and
integer input of logsumexp to the default float dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import assert_close

INTEGERS = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64]
FLOATS = [np.float16, np.float32, np.float64]
RTOL = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-12}

# name -> (lamina op, torch op), each reducing or scanning along axis 0
OPS = {
    "sum": (lambda x: F.sum(x, axis=0), lambda t: t.sum(0)),
    "prod": (lambda x: F.prod(x, axis=0), lambda t: t.prod(0)),
    "nansum": (lambda x: F.nansum(x, axis=0), lambda t: torch.nansum(t, 0)),
    "cumsum": (lambda x: F.cumsum(x, axis=0), lambda t: t.cumsum(0)),
    "cumprod": (lambda x: F.cumprod(x, axis=0), lambda t: t.cumprod(0)),
    "logsumexp": (lambda x: F.logsumexp(x, axis=0), lambda t: torch.logsumexp(t, 0)),
    "mean": (lambda x: F.mean(x, axis=0), lambda t: t.mean(0)),
    "nanmean": (lambda x: F.nanmean(x, axis=0), lambda t: torch.nanmean(t, 0)),
    "std": (lambda x: F.std(x, axis=0, ddof=1), lambda t: t.std(0)),
    "var": (lambda x: F.var(x, axis=0, ddof=1), lambda t: t.var(0)),
    "norm": (lambda x: F.norm(x, axis=0), lambda t: torch.linalg.vector_norm(t, dim=0)),
    "norm1": (lambda x: F.norm(x, ord=1, axis=0), lambda t: torch.linalg.vector_norm(t, ord=1, dim=0)),
}
FLOAT_ONLY = ("mean", "nanmean", "std", "var", "norm", "norm1")    # PyTorch refuses integers


def ours(a: np.ndarray):
    return lamina.tensor(a, dtype=a.dtype)


def integer_values(dtype) -> np.ndarray:
    """Values whose sums and products leave the range of the small integer types."""
    values = np.array([[200, 100, 7], [150, -3, 1], [90, 2, 0], [-120, 60, 5]])
    return values.astype(bool) if dtype is np.bool_ else values.astype(dtype)


def float_values(dtype) -> np.ndarray:
    return np.random.default_rng(0).uniform(-2, 2, (5, 3)).astype(dtype)


@pytest.mark.parametrize("dtype", INTEGERS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", [n for n in OPS if n not in FLOAT_ONLY])
def test_integer_and_bool_input_dtype_and_values_match_torch(name, dtype):
    a = integer_values(dtype)
    ours_op, torch_op = OPS[name]
    got, expected = ours_op(ours(a)), torch_op(torch.from_numpy(a))
    assert got.dtype == np.dtype(str(expected.dtype).removeprefix("torch.")), f"{name}: {got.dtype} vs {expected.dtype}"
    if got.dtype.kind == "f":
        assert_close(got.data, expected.numpy(), rtol=1e-6)
    else:
        np.testing.assert_array_equal(got.data, expected.numpy())


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(OPS))
def test_float_input_result_and_gradient_dtypes_match_torch(name, dtype):
    a = float_values(dtype)
    weight = np.random.default_rng(1).uniform(0.5, 1.5, (3,) if name not in ("cumsum", "cumprod") else a.shape)
    ours_op, torch_op = OPS[name]
    x = ours(a)
    x.requires_grad = True
    y = ours_op(x)
    F.sum(y * ours(weight.astype(dtype))).backward()
    t = torch.tensor(a, requires_grad=True)
    u = torch_op(t)
    (u * torch.tensor(weight.astype(dtype))).sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype, f"{name}: result {y.dtype}, gradient {x.grad.dtype}"
    assert_close(y.data, u.detach().numpy(), rtol=RTOL[dtype])
    assert_close(x.grad, t.grad.numpy(), rtol=4 * RTOL[dtype], what="gradient")


def test_small_unsigned_sum_leaves_no_wrapped_value():
    a = np.array([200, 100], np.uint8)
    assert (F.sum(ours(a)) - 400).item() == -100
    np.testing.assert_array_equal((F.cumsum(ours(a), axis=0) - 301).data, [-101, -1])


def half_column(value: float, n: int = 4096) -> np.ndarray:
    """(n, 2) float16: summed along axis 0, an accumulation in float16 stalls (at 256 for 0.1)."""
    return np.full((n, 2), value, np.float16)


HALF_CASES = {
    "sum": (half_column(0.1), lambda x: F.sum(x, axis=0), lambda t: t.sum(0)),
    "nansum": (half_column(0.1), lambda x: F.nansum(x, axis=0), lambda t: torch.nansum(t, 0)),
    "cumsum": (half_column(0.1), lambda x: F.cumsum(x, axis=0), lambda t: t.cumsum(0)),
    "nanmean": (np.concatenate([half_column(0.1), np.full((1, 2), np.nan, np.float16)]),
                lambda x: F.nanmean(x, axis=0), lambda t: torch.nanmean(t, 0)),
    "logsumexp": (half_column(0.0), lambda x: F.logsumexp(x, axis=0), lambda t: torch.logsumexp(t, 0)),
    "norm1": (half_column(0.1), lambda x: F.norm(x, ord=1, axis=0), lambda t: torch.linalg.vector_norm(t, 1, 0)),
    "std": (np.array([300, -300], np.float16), F.std, lambda t: t.std(correction=0)),
    "var": (np.array([300, -300] + [0] * 8, np.float16), F.var, lambda t: t.var(correction=0)),
    "norm": (np.array([300, -300], np.float16), F.norm, torch.linalg.vector_norm),
    "cumprod": (np.array([1e-4, 1e-4, 1e4], np.float16), lambda x: F.cumprod(x, axis=0), lambda t: t.cumprod(0)),
}


@pytest.mark.parametrize("name", list(HALF_CASES))
def test_float16_is_accumulated_in_float32(name):
    a, ours_op, torch_op = HALF_CASES[name]
    x = ours(a)
    x.requires_grad = True
    y = ours_op(x)
    y.backward(np.ones(y.shape, np.float16))
    t = torch.tensor(a, requires_grad=True)
    u = torch_op(t)
    u.backward(torch.ones_like(u))
    assert y.dtype == np.float16 and x.grad.dtype == np.float16
    assert_close(y.data, u.detach().numpy(), rtol=1e-3)
    assert_close(x.grad, t.grad.numpy(), rtol=1e-2, what="gradient")


@pytest.mark.parametrize("dtype", INTEGERS, ids=lambda d: np.dtype(d).name)
def test_logsumexp_of_integers_takes_the_default_float_dtype(dtype):
    a = integer_values(dtype)
    lamina.backend.set_default_dtype(np.float64)
    try:
        got = F.logsumexp(ours(a))
    finally:
        lamina.backend.set_default_dtype(np.float32)
    assert got.dtype == np.float64
    assert_close(got.data, torch.logsumexp(torch.from_numpy(a).double().reshape(-1), 0).numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", INTEGERS, ids=lambda d: np.dtype(d).name)
def test_nanmean_of_integers_is_their_mean(dtype):
    a = integer_values(dtype)
    got, mean = F.nanmean(ours(a), axis=0), F.mean(ours(a), axis=0)
    assert got.dtype == mean.dtype and got.dtype.kind == "f"
    np.testing.assert_array_equal(got.data, mean.data)
    np.testing.assert_allclose(got.data, a.astype(np.float64).mean(axis=0), rtol=1e-12)
