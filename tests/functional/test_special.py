"""lgamma, digamma, polygamma, erf, erfc, erfinv, ndtr, ndtri, log_ndtr, xlogy, gammainc, logit, expit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    positive,
    randn,
)
from lamina.functional import special as S


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def with_zeros(*shape, seed=0):
    x = positive(*shape, seed=seed)
    x.reshape(-1)[::3] = 0.0
    return x


# torch's trigamma (polygamma(1, x), digamma's derivative) is off by up to 5e-10 relatively
# (mpmath agrees with SciPy), so the cases that involve it are compared to 1e-8 in float64
TRIGAMMA_RTOL = 1e-8
INVOLVE_TRIGAMMA = {"digamma", "polygamma_1", "lgamma_of_digamma"}

# name: (lamina function, torch function, inputs)
CASES = {
    "lgamma": (S.lgamma, torch.lgamma, [positive(3, 4, low=0.2, high=6.0)]),
    "lgamma_negative": (S.lgamma, torch.lgamma, [uniform(-2.9, -2.1, 2, 3)]),
    "digamma": (S.digamma, torch.digamma, [positive(3, 4, low=0.3, high=5.0)]),
    "polygamma_1": (lambda x: S.polygamma(1, x), lambda x: torch.polygamma(1, x), [positive(3, 4, low=0.3)]),
    "polygamma_3": (lambda x: S.polygamma(3, x), lambda x: torch.polygamma(3, x), [positive(3, 4, low=0.5)]),
    "erf": (S.erf, torch.erf, [randn(3, 4, scale=1.5)]),
    "erfc": (S.erfc, torch.erfc, [randn(3, 4, scale=1.5)]),
    "erfinv": (S.erfinv, torch.erfinv, [uniform(-0.95, 0.95, 3, 4)]),
    "ndtr": (S.ndtr, torch.special.ndtr, [randn(3, 4, scale=2.0)]),
    "ndtri": (S.ndtri, torch.special.ndtri, [uniform(0.02, 0.98, 3, 4)]),
    "log_ndtr": (S.log_ndtr, torch.special.log_ndtr, [randn(3, 4, scale=3.0)]),
    "xlogy": (S.xlogy, torch.special.xlogy, [randn(3, 4), positive(3, 4, seed=1)]),
    "xlogy_zeros_broadcast": (S.xlogy, torch.special.xlogy, [with_zeros(2, 3, 4), positive(3, 1, seed=1)]),
    "logit": (S.logit, torch.logit, [uniform(0.05, 0.95, 3, 4)]),
    "expit": (S.expit, torch.special.expit, [randn(3, 4, scale=3.0)]),
    "lgamma_of_digamma": (lambda x: S.lgamma(S.digamma(x) + 3.0), lambda x: torch.lgamma(torch.digamma(x) + 3.0),
                          [positive(2, 3, low=1.0, high=4.0)]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = CASES[name]
    rtol = TRIGAMMA_RTOL if dtype == np.float64 and name in INVOLVE_TRIGAMMA else None
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, rtol=rtol)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_gradients(ours, *inputs)


SECOND_ORDER = ["lgamma", "digamma", "polygamma_1", "erf", "erfc", "erfinv", "ndtri", "log_ndtr", "xlogy",
                "xlogy_zeros_broadcast", "logit"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_derivatives_match_torch(name):
    ours, theirs, inputs = CASES[name]
    compare_double_backward_with_torch(ours, theirs, *inputs, rtol=1e-7)


@pytest.mark.parametrize("name", ["lgamma", "polygamma_3", "erfinv", "xlogy"])
def test_second_derivatives_by_differences(name):
    ours, _, inputs = CASES[name]
    assert check_second_derivatives(ours, *inputs)


def test_gammainc_matches_torch_and_differentiates_in_x():
    a, x = positive(3, 4, low=0.5, high=4.0), positive(3, 4, seed=1, low=0.1, high=5.0)
    compare_with_torch(S.gammainc, torch.special.gammainc, a, x, dtype=np.float64, grad=[False, True])
    assert check_gradients(S.gammainc, a, x, grad=[False, True])
    compare_double_backward_with_torch(S.gammainc, torch.special.gammainc, a, x, grad=[False, True])


def test_gammainc_refuses_a_gradient_in_a():
    a = lamina.tensor([1.5, 2.0], requires_grad=True, dtype=np.float64)
    with pytest.raises(NotImplementedError, match="gammainc.*respect to a"):
        S.gammainc(a, lamina.tensor([0.5, 1.0], dtype=np.float64)).sum().backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_dtype(dtype):
    x = lamina.tensor(positive(5), dtype=dtype)
    for fn in (S.lgamma, S.digamma, lambda v: S.polygamma(2, v), S.erf, S.erfinv, S.log_ndtr, S.ndtri):
        assert fn(x * 0.4).dtype == dtype


def test_xlogy_is_zero_where_x_is_zero_even_at_y_zero():
    x = lamina.tensor([0.0, 0.0, 2.0], requires_grad=True, dtype=np.float64)
    y = lamina.tensor([0.0, 3.0, 3.0], dtype=np.float64)
    out = S.xlogy(x, y)
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 2 * np.log(3.0)])
    out.sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, np.log(3.0), np.log(3.0)])    # 0 at x = y = 0, as torch


def test_logit_eps_clamps_like_torch():
    p = np.array([0.0, 1e-4, 0.3, 1.0])
    compare_with_torch(lambda v: S.logit(v, eps=1e-3), lambda v: torch.logit(v, eps=1e-3), p, dtype=np.float64)


def test_polygamma_refuses_a_negative_order():
    with pytest.raises(ValueError, match="polygamma: n must be"):
        S.polygamma(-1, lamina.tensor([1.0]))


def test_reexported():
    assert lamina.functional.lgamma is S.lgamma and lamina.functional.xlogy is S.xlogy


def test_polygamma_takes_a_numpy_integer_order_as_torch():
    x = positive(4, low=0.5)
    ours = S.polygamma(np.int64(1), lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(ours, torch.polygamma(np.int64(1), torch.tensor(x)).numpy(), rtol=1e-9)
