"""Exponentially weighted averages with bias correction (course notes' formula)."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.optim import ExponentialMovingAverage


def _reference(values, beta, correct):
    v, out = 0.0, []
    for t, x in enumerate(values, start=1):
        v = beta * v + (1 - beta) * x
        out.append(v / (1 - beta**t) if correct else v)
    return out


@pytest.mark.parametrize("correct", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.98])
def test_scalars(beta, correct):
    values = list(np.random.default_rng(0).standard_normal(30) + 3.0)
    ema = ExponentialMovingAverage(beta, bias_correction=correct)
    got = [ema.update(x) for x in values]
    np.testing.assert_allclose(got, _reference(values, beta, correct), rtol=1e-12)
    assert ema.t == 30 and ema.value == got[-1]


def test_first_corrected_value_is_the_value_and_constant_stream():
    ema = ExponentialMovingAverage(0.9)
    assert ema.value is None
    assert ema.update(5.0) == pytest.approx(5.0)
    for _ in range(10):
        assert ema.update(5.0) == pytest.approx(5.0)
    raw = ExponentialMovingAverage(0.9, bias_correction=False)
    assert raw.update(5.0) == pytest.approx(0.5)  # biased towards v_0 = 0


def test_arrays_not_modified():
    rng = np.random.default_rng(1)
    values = [rng.standard_normal((2, 3)) for _ in range(5)]
    copies = [v.copy() for v in values]
    ema = ExponentialMovingAverage(0.8)
    for v in values:
        out = ema.update(v)
    expected = np.array(_reference([v[0, 0] for v in copies], 0.8, True))[-1]
    assert out.shape == (2, 3) and out[0, 0] == pytest.approx(expected)
    for v, c in zip(values, copies):
        np.testing.assert_array_equal(v, c)


def test_state_dict_and_reset():
    ema = ExponentialMovingAverage(0.9)
    for x in [1.0, 2.0, 3.0]:
        ema.update(x)
    other = ExponentialMovingAverage(0.5)
    other.load_state_dict(ema.state_dict())
    assert other.update(4.0) == ema.update(4.0)
    arr = ExponentialMovingAverage(0.9)
    arr.update(np.ones(3))
    again = ExponentialMovingAverage()
    again.load_state_dict(arr.state_dict())
    np.testing.assert_allclose(again.update(np.ones(3)), 1.0)
    ema.reset()
    assert ema.t == 0 and ema.value is None


@pytest.mark.parametrize("beta", [1.0, -0.1, 2])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        ExponentialMovingAverage(beta)
