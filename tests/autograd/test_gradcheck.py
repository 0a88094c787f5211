"""lamina.gradcheck: passes right gradients, reports wrong ones precisely."""

from __future__ import annotations

import re

import numpy as np
import pytest

import lamina
from lamina import Function

BUMP_AT = (1, 2)


class MulWithWrongSecondGradient(Function):
    """a * b whose gradient for b is off by 1 at one element."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dy):
        db = dy * self.a
        db[BUMP_AT] += 1.0
        return dy * self.b, db


class SquareMissingFactorTwo(Function):
    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, dy):
        return (dy * self.a,)


class Square(Function):
    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, dy):
        return (2 * dy * self.a,)


def leaf(shape, seed=0):
    data = np.random.default_rng(seed).uniform(0.5, 2.0, shape)
    return lamina.tensor(data, requires_grad=True, dtype=np.float64)


def test_right_gradient_passes():
    assert lamina.gradcheck(lambda a: Square.apply(a), leaf((2, 3))) is True
    assert lamina.gradcheck(lambda a, b: (a * b).exp().sum(axis=0), leaf((2, 3)), leaf((3,), seed=1)) is True


def test_wrong_gradient_names_input_index_and_values():
    a, b = leaf((2, 3)), leaf((2, 3), seed=1)
    with pytest.raises(lamina.GradcheckError) as info:
        lamina.gradcheck(lambda x, y: MulWithWrongSecondGradient.apply(x, y), a, b)
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    assert "input 1" in message and "(2, 3)" in message
    assert f"index {BUMP_AT}" in message
    found = re.search(r"analytic (\S+) vs numeric (\S+)", message)
    assert found, message
    analytic, numeric = float(found.group(1)), float(found.group(2))
    upstream = np.random.default_rng(0).standard_normal((2, 3))  # gradcheck's upstream for seed=0
    np.testing.assert_allclose(numeric, upstream[BUMP_AT] * a.data[BUMP_AT], rtol=1e-6)
    np.testing.assert_allclose(analytic - numeric, 1.0, rtol=1e-6)


def test_wrong_gradient_on_the_first_input():
    x = leaf((4,))
    with pytest.raises(lamina.GradcheckError, match=r"input 0 \(shape \(4,\)\) at index \(\d,\): analytic"):
        lamina.gradcheck(lambda t: SquareMissingFactorTwo.apply(t), x)


def test_constant_inputs_are_skipped_but_counted():
    c = lamina.tensor(np.ones((2, 3)), dtype=np.float64)
    b = leaf((2, 3), seed=1)
    with pytest.raises(lamina.GradcheckError, match="input 1"):
        lamina.gradcheck(lambda x, y: MulWithWrongSecondGradient.apply(x, y), c, b)


def test_inputs_are_restored_after_the_check():
    x = leaf((3, 2))
    before = x.data.copy()
    lamina.gradcheck(lambda t: (t * t).sum(axis=1), x)
    np.testing.assert_array_equal(x.data, before)
    with pytest.raises(lamina.GradcheckError):
        lamina.gradcheck(lambda t: SquareMissingFactorTwo.apply(t), x)
    np.testing.assert_array_equal(x.data, before)


def test_float32_inputs_are_refused():
    x = lamina.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        lamina.gradcheck(lambda t: t * t, x)


def test_no_input_requiring_grad_is_refused():
    with pytest.raises(ValueError, match="no input requires a gradient"):
        lamina.gradcheck(lambda t: t * t, lamina.tensor(np.ones(3), dtype=np.float64))
