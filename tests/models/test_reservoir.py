"""EchoStateNetwork: the reservoir's spectral radius, the state update and the ridge read-out
against NumPy rewrites of their formulas, the echo-state property, one-step and free-running
prediction of the Mackey-Glass series, and errors."""

import numpy as np
import pytest

from helpers import assert_close
from lamina import parallel
from lamina.errors import ShapeError
from lamina.models import EchoStateNetwork


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


def mackey_glass(length, tau=17.0, beta=0.2, gamma=0.1, power=10, dt=0.1, every=10, x0=1.2, discard=300):
    """dx/dt = beta x(t - tau) / (1 + x(t - tau)^power) - gamma x(t), by Euler steps of dt from a
    constant history x0, sampled every ``every`` steps (1 time unit), the transient dropped."""
    delay = int(round(tau / dt))
    total = (length + discard) * every
    x = np.full(total + delay + 1, x0)
    for t in range(delay, total + delay):
        lagged = x[t - delay]
        x[t + 1] = x[t] + dt * (beta * lagged / (1 + lagged ** power) - gamma * x[t])
    return x[delay + 1::every][discard:discard + length]


@pytest.fixture(scope="module")
def series():
    return np.tanh(mackey_glass(1800) - 1.0)


def nrmse(prediction, target):
    return float(np.sqrt(np.mean((prediction - target) ** 2)) / np.std(target))


@pytest.mark.parametrize("density", [1.0, 0.2])
def test_spectral_radius_is_as_set(density):
    esn = EchoStateNetwork(80, spectral_radius=0.77, density=density, n_inputs=2, seed=0)
    assert abs(np.abs(np.linalg.eigvals(esn.reservoir_weights)).max() - 0.77) < 1e-10
    assert esn.input_weights.shape == (80, 3) and np.abs(esn.input_weights).max() <= 1.0
    if density < 1:
        assert 0.1 < np.mean(esn.reservoir_weights != 0) < 0.3


def test_states_follow_the_leaky_update():
    esn = EchoStateNetwork(10, spectral_radius=0.9, leak_rate=0.3, input_scaling=0.5, n_inputs=2, seed=1)
    u = np.random.default_rng(2).standard_normal((5, 2))
    x, expected = np.zeros(10), []
    for u_t in u:
        x = 0.7 * x + 0.3 * np.tanh(esn.input_weights @ np.concatenate([[1.0], u_t]) + esn.reservoir_weights @ x)
        expected.append(x)
    assert_close(esn.states(u, reset=True), np.array(expected), 1e-14)


def test_readout_is_the_closed_form_ridge_solution():
    rng = np.random.default_rng(3)
    u, y = rng.standard_normal((60, 2)), rng.standard_normal((60, 3))
    esn = EchoStateNetwork(20, ridge=0.5, washout=10, seed=4).fit(u, y)
    states = esn.states(u, reset=True)
    features = np.hstack([np.ones((60, 1)), u, states]).T[:, 10:]          # columns [1; u; x]
    targets = y[10:].T
    expected = targets @ features.T @ np.linalg.inv(features @ features.T + 0.5 * np.eye(23))
    assert_close(esn.output_weights, expected, 1e-9)
    assert_close(esn.predict(u, reset=True), (expected @ np.hstack([np.ones((60, 1)), u, states]).T).T, 1e-9)


def test_echo_state_property_forgets_the_initial_state():
    esn = EchoStateNetwork(100, spectral_radius=0.9, leak_rate=0.5, n_inputs=1, seed=5)
    u = np.random.default_rng(6).uniform(-1, 1, (200, 1))
    first = esn.states(u, initial_state=np.random.default_rng(7).uniform(-1, 1, 100))
    second = esn.states(u, initial_state=np.random.default_rng(8).uniform(-1, 1, 100))
    gap = np.linalg.norm(first - second, axis=1)
    assert gap[0] > 0.5 and gap[-1] < 1e-6 * gap[0]
    assert (np.diff(np.log(gap[:150])).mean()) < 0


def test_mackey_glass_one_step_and_free_running_prediction(series):
    esn = EchoStateNetwork(200, spectral_radius=1.25, leak_rate=0.3, ridge=1e-8, washout=100, seed=42)
    esn.fit(series[:1199], series[1:1200])
    one_step = esn.predict(series[1199:1799])[:, 0]        # teacher forced, continuing the state
    esn.fit(series[:1199], series[1:1200])
    generated = esn.generate(100)[:, 0]                    # from the end of the training series
    one_step_error, free_error = nrmse(one_step, series[1200:1800]), nrmse(generated, series[1200:1300])
    print(f"Mackey-Glass (tau=17), ESN of 200 units: one-step NRMSE {one_step_error:.2e}, "
          f"100 free-running steps NRMSE {free_error:.2e}")
    assert one_step_error < 0.01
    assert free_error < 0.1


def test_mackey_glass_series_is_chaotic_but_bounded(series):
    raw = np.arctanh(series) + 1
    assert 0.3 < raw.min() < 0.6 and 1.2 < raw.max() < 1.5
    assert np.std(np.diff(series)) > 0.01


def test_errors():
    with pytest.raises(ValueError, match="n_reservoir must be a positive int"):
        EchoStateNetwork(0)
    with pytest.raises(ValueError, match="leak_rate must be in"):
        EchoStateNetwork(10, leak_rate=1.5)
    esn = EchoStateNetwork(10, n_inputs=2, washout=5, seed=0)
    with pytest.raises(ShapeError, match="n_inputs=2"):
        esn.fit(np.zeros((20, 3)), np.zeros((20, 1)))
    with pytest.raises(ValueError, match="nothing after washout=5"):
        esn.fit(np.zeros((5, 2)), np.zeros((5, 1)))
    with pytest.raises(RuntimeError, match="call fit"):
        esn.predict(np.zeros((3, 2)))
    esn.fit(np.random.default_rng(0).standard_normal((20, 2)), np.zeros((20, 1)))
    with pytest.raises(ShapeError, match="as many outputs"):
        esn.generate(3)
