"""ODE-RNN: with the ODE function at zero it is a plain GRU over [x * m, m] (same weights),
skipping the times a sequence did not observe; the reverse direction; a float64 gradient
check; the ODE leg between observations; clear errors for bad times and masks."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import check_gradients, randn
from lamina import models, nn
from lamina.autograd import no_grad
from lamina.errors import ShapeError


def _times(n, seed=0):
    return np.cumsum(np.random.default_rng(seed).uniform(0.2, 0.8, n))


def _silence(rnn):
    """f = 0: the last layer of the ODE MLP gives zeros."""
    last = rnn.dynamics.layers[len(rnn.dynamics.layers) - 1]
    last.weight.data[...] = 0
    last.bias.data[...] = 0


def _gru_states(rnn, x):
    """A plain GRU layer with the ODE-RNN's cell weights over the inputs x (N, T, features)."""
    gru = nn.GRU(rnn.hidden, return_sequences=True)
    gru.build((None, x.shape[1], x.shape[2]))
    gru.load_state_dict(rnn.cell.state_dict())
    with no_grad():
        return gru(lamina.tensor(x)).numpy()


def test_with_the_ode_function_at_zero_it_is_a_gru_over_the_observations(float64):
    rnn = models.ODERNN(3, hidden=5, ode_hidden=4, method="rk4")
    _silence(rnn)
    values, times = randn(2, 6, 3, seed=1), _times(6)
    with no_grad():
        states = rnn(values, times).numpy()
    ones = np.ones_like(values)
    np.testing.assert_allclose(states, _gru_states(rnn, np.concatenate([values, ones], axis=-1)), rtol=1e-12,
                               atol=1e-13)


def test_unobserved_times_leave_the_state_to_the_ode_and_features_are_masked(float64):
    rnn = models.ODERNN(3, hidden=5, ode_hidden=4, method="rk4")
    _silence(rnn)
    values, times = randn(2, 6, 3, seed=2), _times(6, seed=1)
    mask = np.ones_like(values)
    mask[1, 2] = 0                                       # sequence 1 saw nothing at t_2
    mask[1, 4, [0, 2]] = 0                               # and only feature 1 at t_4
    with no_grad():
        states = rnn(values, times, mask).numpy()
    seen = [0, 1, 3, 4, 5]
    gru_in = np.concatenate([values[1:, seen] * mask[1:, seen], mask[1:, seen]], axis=-1)
    np.testing.assert_allclose(states[1, seen], _gru_states(rnn, gru_in)[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(states[1, 2], states[1, 1])
    changed = values.copy()
    changed[1, 2] += 5.0
    changed[1, 4, [0, 2]] -= 3.0                        # unobserved entries change nothing
    with no_grad():
        np.testing.assert_array_equal(rnn(changed, times, mask).numpy(), states)


def test_reverse_runs_from_the_last_time_and_final_is_the_state_at_the_first(float64):
    rnn = models.ODERNN(2, hidden=4, ode_hidden=3, reverse=True, method="euler")
    _silence(rnn)
    values, times = randn(3, 5, 2, seed=3), _times(5, seed=2)
    with no_grad():
        states = rnn(values, times).numpy()
        final = rnn.final(values, times).numpy()
    flipped = np.concatenate([values, np.ones_like(values)], axis=-1)[:, ::-1]
    np.testing.assert_allclose(states[:, ::-1], _gru_states(rnn, np.ascontiguousarray(flipped)), rtol=1e-12,
                               atol=1e-13)
    np.testing.assert_array_equal(final, states[:, 0])


def test_between_observations_the_state_follows_the_ode(float64):
    rnn = models.ODERNN(2, hidden=4, ode_hidden=3, method="rk4", options={"step_size": 0.05})
    values, times = randn(2, 3, 2, seed=4), np.array([0.0, 0.7, 1.5])
    with no_grad():
        states = rnn(values, times)
        h1 = lamina.tensor(states.numpy()[:, 0])
        carried = lamina.odeint(rnn.dynamics, h1, [0.0, 0.7], method="rk4", options={"step_size": 0.05})[-1]
        expected = rnn.cell(lamina.tensor(np.concatenate([values[:, 1], np.ones((2, 2))], axis=1)), carried)
        np.testing.assert_allclose(states.numpy()[:, 1], expected.numpy(), rtol=1e-12)
        later = rnn.final(values, times, until=2.5).numpy()
        np.testing.assert_allclose(later, rnn.evolve(states[:, 2], 1.5, 2.5).numpy(), rtol=1e-12)
    assert np.abs(later - states.numpy()[:, 2]).max() > 1e-3


def test_gradients(float64):
    rnn = models.ODERNN(2, hidden=3, ode_hidden=3, method="rk4")
    rng = np.random.default_rng(5)
    for p in rnn.parameters():
        p.data = p.data + 0.3 * rng.standard_normal(p.shape)
    mask = (rng.random((2, 4, 2)) < 0.7).astype(np.float64)
    times = _times(4, seed=3)
    assert check_gradients(lambda v: rnn(v, times, mask), randn(2, 4, 2, seed=6))


def test_errors_name_the_model_and_the_problem():
    rnn = models.ODERNN(2, hidden=3, ode_hidden=3, method="euler")
    values = randn(2, 4, 2).astype(np.float32)
    with pytest.raises(ValueError, match=r"ODERNN.*strictly increasing.*times\[1\]=1\.0.*times\[2\]=1\.0"):
        rnn(values, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        rnn(values, [3.0, 2.0, 1.0, 0.0])
    with pytest.raises(ShapeError, match=r"mask has shape \(2, 4, 3\) but values have shape \(2, 4, 2\)"):
        rnn(values, _times(4), np.ones((2, 4, 3)))
    with pytest.raises(ShapeError, match=r"times have shape \(3,\); expected \(4,\)"):
        rnn(values, _times(3))
    with pytest.raises(ShapeError, match=r"expected \(batch, time, 2\)"):
        rnn(randn(2, 4, 3), _times(4))
    with pytest.raises(ValueError, match="only 0 and 1"):
        rnn(values, _times(4), np.full((2, 4, 2), 0.5))
    with pytest.raises(ValueError, match="unknown method"):
        models.ODERNN(2, method="leapfrog")
