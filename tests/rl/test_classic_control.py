"""CartPole-v1, Pendulum-v1 and MountainCar-v0 against references written from Gymnasium's
documented equations and constants, step by step from seeded states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.rl import CartPole, MountainCar, Pendulum, make


def cartpole_reference(state, action):
    """One Euler step of the cart-pole equations (Barto, Sutton and Anderson; Gymnasium's constants)."""
    g, m_cart, m_pole, half_length, force_mag, dt = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    x, v, th, w = state
    f = force_mag if action == 1 else -force_mag
    total = m_cart + m_pole
    tmp = (f + m_pole * half_length * w * w * math.sin(th)) / total
    th_acc = (g * math.sin(th) - math.cos(th) * tmp) / (half_length * (4 / 3 - m_pole * math.cos(th) ** 2 / total))
    x_acc = tmp - m_pole * half_length * th_acc * math.cos(th) / total
    new = np.array([x + dt * v, v + dt * x_acc, th + dt * w, w + dt * th_acc])
    failed = abs(new[0]) > 2.4 or abs(new[2]) > 12 * math.pi / 180
    return new, failed


def pendulum_reference(state, u):
    th, w = state
    u = min(max(u, -2.0), 2.0)
    normalized = (th + math.pi) % (2 * math.pi) - math.pi
    reward = -(normalized**2 + 0.1 * w**2 + 0.001 * u**2)
    w = min(max(w + (3 * 10.0 / 2 * math.sin(th) + 3.0 * u) * 0.05, -8.0), 8.0)
    return np.array([th + w * 0.05, w]), reward


def mountain_car_reference(state, action):
    p, v = state
    v = min(max(v + (action - 1) * 0.001 + math.cos(3 * p) * -0.0025, -0.07), 0.07)
    p = min(max(p + v, -1.2), 0.6)
    if p == -1.2 and v < 0:
        v = 0.0
    return np.array([p, v]), p >= 0.5 and v >= 0


def test_cartpole_follows_the_equations_until_it_falls():
    env = CartPole()
    obs, info = env.reset(seed=3)
    assert info == {} and obs.dtype == np.float32 and obs.shape == (4,)
    assert np.all(np.abs(obs) <= 0.05)
    state = env.state.copy()
    np.testing.assert_array_equal(obs, state.astype(np.float32))
    rng = np.random.default_rng(0)
    steps = 0
    for steps in range(1, 201):  # noqa: B007  (the count is checked after the loop)
        action = int(rng.random() < 0.3)          # mostly left: it falls within 200 steps
        expected, failed = cartpole_reference(state, action)
        obs, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(env.state, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(obs, expected.astype(np.float32))
        assert reward == 1.0 and terminated == failed and truncated is False
        state = expected
        if terminated:
            break
    assert terminated and steps > 5


def test_cartpole_truncates_at_500_steps():
    env = make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    for step in range(1, 501):
        obs, reward, terminated, truncated, _ = env.step(int(obs[2] + 0.5 * obs[3] > 0))   # a balancing rule
        assert not terminated
        assert truncated == (step == 500)
    assert env.elapsed_steps == 500


def test_pendulum_follows_the_equations():
    env = make("Pendulum-v1")
    obs, _ = env.reset(seed=5)
    state = env.unwrapped.state.copy()
    assert abs(state[0]) <= math.pi and abs(state[1]) <= 1
    np.testing.assert_allclose(obs, [math.cos(state[0]), math.sin(state[0]), state[1]], rtol=1e-6)
    rng = np.random.default_rng(1)
    for step in range(1, 201):
        u = float(rng.uniform(-3, 3))             # beyond the bounds too: the torque is clipped
        state, expected_reward = pendulum_reference(state, u)
        obs, reward, terminated, truncated, _ = env.step(np.array([u], dtype=np.float32))
        np.testing.assert_allclose(env.unwrapped.state, state, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(obs, [math.cos(state[0]), math.sin(state[0]), state[1]], rtol=1e-5, atol=1e-5)
        assert reward == pytest.approx(expected_reward, rel=1e-6, abs=1e-9)
        assert not terminated and truncated == (step == 200)
        state = env.unwrapped.state.copy()        # float32 actions: continue from the env's own state


def test_mountain_car_follows_the_equations_and_reaches_the_goal():
    env = MountainCar()
    env.reset(seed=2)
    state = env.state.copy()
    assert -0.6 <= state[0] <= -0.4 and state[1] == 0
    for _ in range(300):
        action = 2 if state[1] >= 0 else 0       # push along the velocity: swings up to the goal
        expected, done = mountain_car_reference(state, action)
        obs, reward, terminated, _, _ = env.step(action)
        np.testing.assert_allclose(env.state, expected, rtol=1e-13, atol=1e-15)
        assert reward == -1.0 and terminated == done
        state = expected
        if terminated:
            break
    assert terminated and state[0] >= 0.5


def test_mountain_car_stops_at_the_left_wall():
    env = MountainCar()
    env.reset(seed=0)
    env.state = np.array([-1.19, -0.05])
    obs, *_ = env.step(0)
    assert obs[0] == np.float32(-1.2) and obs[1] == 0.0


def test_actions_outside_the_space_are_refused():
    env = CartPole()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="CartPole.step: action 2"):
        env.step(2)
    with pytest.raises(ValueError, match="Pendulum.step"):
        p = Pendulum()
        p.reset(seed=0)
        p.step(np.zeros(2))
