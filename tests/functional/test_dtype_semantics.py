"""Result dtypes and values of ops on integer and boolean tensors, against PyTorch."""

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F


def T(a, dtype=None):
    return lamina.tensor(np.asarray(a), dtype=dtype)


def same(ours, theirs):
    """Equal dtype (by name) and equal values, NaN matching NaN."""
    expected = theirs.numpy()
    assert ours.dtype == expected.dtype, f"dtype {ours.dtype} != {expected.dtype}"
    np.testing.assert_array_equal(ours.numpy(), expected)


# -- clamp ---------------------------------------------------------------------------------
@pytest.mark.parametrize("x, low, high", [
    (np.array([1, 5, 2]), np.array([2.5, 2.5, 1.0]), np.array([2.5, 2.5, 3.0])),   # x < min == max, float bounds
    (np.array([True, False]), np.array([3, 3]), np.array([3, 3])),                 # bool x, integer bounds
    (np.array([1, 2, 3], np.int32), np.zeros(3, np.int32), np.full(3, 2, np.int32)),
    (np.array([7, 0, 9], np.uint8), np.array([1, 1, 1], np.int16), np.array([8, 0, 8], np.int16)),  # min > max
])
def test_clamp_with_tensor_bounds_promotes_like_torch(x, low, high):
    same(F.clamp(T(x), T(low, dtype=low.dtype), T(high, dtype=high.dtype)),
         torch.clamp(torch.tensor(x), torch.tensor(low), torch.tensor(high)))


def test_clamp_integer_number_bound_wraps_like_torch():
    u = np.array([5, 0], np.uint8)
    for kwargs in ({"max": -1}, {"min": -1}, {"min": 3, "max": 255}):
        same(F.clamp(T(u), **kwargs), torch.clamp(torch.tensor(u), **kwargs))
        same(F.clip(T(u), kwargs.get("min"), kwargs.get("max")), torch.clamp(torch.tensor(u), **kwargs))
    for name, clamp in (("clamp", lambda: F.clamp(T(u), min=300)), ("clip", lambda: F.clip(T(u), None, 300))):
        with pytest.raises(ValueError, match=f"{name}: value 300 does not fit dtype uint8"):
            clamp()


# -- fills with a number -------------------------------------------------------------------
def test_fill_numbers_convert_like_torch():
    u = np.array([5, 0], np.uint8)
    m = np.array([True, False])
    same(F.masked_fill(T(u), T(m), -1), torch.tensor(u).masked_fill(torch.tensor(m), -1))
    same(F.masked_fill(T([1, 2]), T(m), 2.7), torch.tensor([1, 2]).masked_fill(torch.tensor(m), 2.7))
    same(F.scatter(T(u), 0, T([0]), value=-1), torch.tensor(u).scatter(0, torch.tensor([0]), -1))
    same(F.index_fill(T(u), 0, T([1]), -255), torch.tensor(u).index_fill(0, torch.tensor([1]), -255))


def test_fill_numbers_that_do_not_fit_name_the_function():
    u, m = T(np.array([5, 0], np.uint8)), T(np.array([True, False]))
    with pytest.raises(ValueError, match=r"index_fill: value 300 does not fit dtype uint8.*\[-255, 255\]"):
        F.index_fill(u, 0, T([0]), 300)
    with pytest.raises(ValueError, match="masked_fill: cannot put nan into a tensor of dtype int64"):
        F.masked_fill(T([1, 2]), m, float("nan"))
    with pytest.raises(ValueError, match="scatter: value -129 does not fit dtype int8"):
        F.scatter(T(np.array([1, 2], np.int8)), 0, T([0]), value=-129)


# -- scatter_reduce ------------------------------------------------------------------------
@pytest.mark.parametrize("reduce, dtype", [
    (reduce, dtype) for reduce in ("amax", "amin", "mean") for dtype in (np.int64, np.int16, np.uint8, bool)
    if not (dtype is bool and reduce == "mean")      # torch defines no mean of booleans
])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_keeps_integer_and_bool_dtypes(reduce, include_self, dtype):
    a = np.array([1, 2, 3, 0, 4]).astype(dtype)
    src = np.array([2, 5, 7, 0, 1, 6] if dtype in (np.uint8, bool) else [2, 5, -4, -3, 0, 6]).astype(dtype)
    index = np.array([0, 0, 1, 3, 3, 3])
    ours = F.scatter_reduce(T(a), 0, T(index), T(src), reduce, include_self=include_self)
    same(ours, torch.scatter_reduce(torch.tensor(a), 0, torch.tensor(index), torch.tensor(src), reduce,
                                    include_self=include_self))


def test_scatter_reduce_integer_mean_rounds_down():
    same(F.scatter_reduce(T([0]), 0, T([0]), T([-3]), "mean"),
         torch.scatter_reduce(torch.tensor([0]), 0, torch.tensor([0]), torch.tensor([-3]), "mean"))


# -- concat, stack, diff -------------------------------------------------------------------
@pytest.mark.parametrize("first, second", [
    (np.int32, np.float32), (np.int64, np.float32), (np.int16, np.float16), (np.uint8, np.int8), (bool, np.int16),
])
def test_concat_and_stack_promote_like_torch(first, second):
    x, y = np.arange(2).astype(first), np.arange(2, 4).astype(second)
    tx, ty = torch.tensor(x), torch.tensor(y)
    same(F.concat([T(x, dtype=first), T(y, dtype=second)]), torch.cat([tx, ty]))
    same(F.stack([T(x, dtype=first), T(y, dtype=second)], axis=1), torch.stack([tx, ty], dim=1))
    same(F.diff(T(y, dtype=second), prepend=T(x, dtype=first)), torch.diff(ty, prepend=tx))


def test_concat_promotion_keeps_gradient_in_the_input_dtype():
    x = lamina.tensor(np.array([1.0, 2.0]), requires_grad=True, dtype=np.float32)
    y = F.concat([x, T(np.array([3, 4], np.int64))])
    (y * y).sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


@pytest.mark.parametrize("n, axis", [(1, -1), (2, -1), (3, 0), (1, 0)])
def test_diff_of_booleans_is_exclusive_or(n, axis):
    b = np.array([[True, False, False, True, True], [False, True, True, True, False], [True, True, False, False, True]])
    same(F.diff(T(b), n=n, axis=axis), torch.diff(torch.tensor(b), n=n, dim=axis))


# -- logit, sign, 0-d inputs -----------------------------------------------------------------
@pytest.mark.parametrize("p", [np.array([0, 1, 2, 5], np.uint8), np.array([True, False]), np.array([0, 1, -3])])
def test_logit_of_integers_and_booleans_is_float(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        same(F.logit(T(p)), torch.logit(torch.tensor(p)))
        same(F.logit(T(p), eps=0.25), torch.logit(torch.tensor(p), eps=0.25))


def test_sign_of_booleans_stays_boolean():
    same(F.sign(True), torch.sign(torch.tensor(True)))
    same(F.sign(T([True, False])), torch.sign(torch.tensor([True, False])))
    same(F.sign(T(np.array([-2, 0, 3], np.int16))), torch.sign(torch.tensor(np.array([-2, 0, 3], np.int16))))


@pytest.mark.parametrize("keep", [True, False])
def test_masked_select_of_0d_input_is_1d(keep):
    x = lamina.tensor(np.array(2.0), requires_grad=True, dtype=np.float64)
    y = F.masked_select(x, T(keep))
    same(y.detach(), torch.masked_select(torch.tensor(2.0, dtype=torch.float64), torch.tensor(keep)))
    y.sum().backward()
    assert float(x.grad) == (1.0 if keep else 0.0)


def test_logcumsumexp_of_0d_input_is_the_input():
    x = lamina.tensor(np.array(-1.5), requires_grad=True, dtype=np.float64)
    y = F.logcumsumexp(x, 0)
    same(y.detach(), torch.logcumsumexp(torch.tensor(-1.5, dtype=torch.float64), 0))
    y.backward()
    assert float(x.grad) == 1.0


# -- mixed number bounds, NaN bounds, numbers joined by diff ---------------------------------------
@pytest.mark.parametrize("low, high", [(0.5, -1), (-0.5, 300), (np.float32(0.5), 2), (1, 2.5)])
def test_clamp_of_integers_by_a_float_and_an_int_number_is_a_float_clamp(low, high):
    u = np.array([3, 7, 0], np.uint8)
    same(F.clamp(T(u), low, high), torch.clamp(torch.tensor(u), float(low), high))
    same(F.clip(T(u), low, high), torch.clamp(torch.tensor(u), float(low), high))


def test_a_nan_tensor_bound_gives_nan_without_gradient_as_torch():
    x, low, high = [1.0, 2.0, 5.0], 0.0, [np.nan, 3.0, 3.0]
    ours = [lamina.tensor(np.array(v), requires_grad=True, dtype=np.float64) for v in (x, low, high)]
    theirs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x, low, high)]
    y, expected = F.clamp(*ours), torch.clamp(*theirs)
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())
    y.sum().backward(), expected.sum().backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.grad, b.grad.numpy())


def test_diff_joins_numbers_in_the_promoted_dtype_and_n_zero_is_x():
    x = np.array([1, 5, 2], np.int8)
    np.testing.assert_array_equal(F.diff(T(x), prepend=2.5).numpy(), np.diff(x, prepend=2.5))
    assert F.diff(T(x), prepend=2.5).dtype == np.float32
    same(F.diff(T([True, False]), prepend=-3), torch.tensor([4, -1]))
    with pytest.raises(ValueError, match=r"diff: value 300 does not fit dtype int8"):
        F.diff(T(x), prepend=300)
    same(F.diff(T(x), n=0, prepend=3, append=4), torch.tensor(x))


@pytest.mark.parametrize("op", ["cumsum", "cumprod"])
@pytest.mark.parametrize("axis", [0, -1])
def test_running_sums_and_products_of_a_0d_input_are_the_input(op, axis):
    ours = lamina.tensor(np.float64(3.0), requires_grad=True, dtype=np.float64)
    theirs = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    y, expected = getattr(F, op)(ours, axis), getattr(torch, op)(theirs, axis)
    same(y, expected.detach())
    y.backward(), expected.backward()
    assert ours.grad == theirs.grad.item()
