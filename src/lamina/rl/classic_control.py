"""The classic-control tasks of Gymnasium with its constants: CartPole-v1, Pendulum-v1 and
MountainCar-v0 (the bare dynamics; :func:`lamina.rl.make` adds their time limits)."""

from __future__ import annotations

import math

import numpy

from lamina.rl.env import Env
from lamina.rl.spaces import Box, Discrete


def _check_action(env: Env, action) -> None:
    if not env.action_space.contains(action):
        raise ValueError(f"{type(env).__name__}.step: action {action!r} is not in {env.action_space}")


class CartPole(Env):
    """A pole hinged on a cart moving on a track (Barto, Sutton and Anderson, 1983).

    State (x, x', theta, theta'); action 0 pushes left and 1 right with force F = 10. With
    total mass M = m_c + m_p and half pole length l::

        temp = (F + m_p l theta'^2 sin theta) / M
        theta'' = (g sin theta - cos theta temp) / (l (4/3 - m_p cos^2 theta / M))
        x'' = temp - m_p l theta'' cos theta / M

    integrated by explicit Euler with tau = 0.02 (positions first, from the old velocities).
    Reward 1 per step, the failing step included; the episode terminates when |x| > 2.4 or
    |theta| > 12 degrees. Starting state uniform in [-0.05, 0.05]^4.
    """

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self):
        self.total_mass = self.masscart + self.masspole
        self.polemass_length = self.masspole * self.length
        high = numpy.array([self.x_threshold * 2, numpy.inf, self.theta_threshold_radians * 2, numpy.inf],
                           dtype=numpy.float32)
        self.observation_space = Box(-high, high, dtype=numpy.float32)
        self.action_space = Discrete(2)
        self.state: numpy.ndarray | None = None

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-0.05, 0.05, size=(4,))
        return self.state.astype(numpy.float32), {}

    def step(self, action):
        _check_action(self, action)
        if self.state is None:
            raise RuntimeError("CartPole.step: call reset() before step()")
        x, x_dot, theta, theta_dot = self.state
        force = self.force_mag if int(action) == 1 else -self.force_mag
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force + self.polemass_length * theta_dot**2 * sin) / self.total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / self.total_mass))
        x_acc = temp - self.polemass_length * theta_acc * cos / self.total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * x_acc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc
        self.state = numpy.array([x, x_dot, theta, theta_dot])
        terminated = bool(abs(x) > self.x_threshold or abs(theta) > self.theta_threshold_radians)
        return self.state.astype(numpy.float32), 1.0, terminated, False, {}


def angle_normalize(angle):
    """The angle moved into [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


class Pendulum(Env):
    """Swing a pendulum up and hold it upright with a bounded torque u in [-2, 2].

    State (theta, theta') with theta = 0 upright; observation (cos theta, sin theta, theta').
    Reward -(theta_n^2 + 0.1 theta'^2 + 0.001 u^2), theta_n the angle normalized to [-pi, pi);
    then, with g = 10, m = l = 1 and dt = 0.05 (semi-implicit Euler)::

        theta' <- clip(theta' + (3 g / (2 l) sin theta + 3 u / (m l^2)) dt, -8, 8)
        theta  <- theta + theta' dt

    It never terminates. Starting state uniform in [-pi, pi] x [-1, 1]."""

    max_speed, max_torque, dt, m, length = 8.0, 2.0, 0.05, 1.0, 1.0

    def __init__(self, g: float = 10.0):
        self.g = float(g)
        high = numpy.array([1.0, 1.0, self.max_speed], dtype=numpy.float32)
        self.observation_space = Box(-high, high, dtype=numpy.float32)
        self.action_space = Box(-self.max_torque, self.max_torque, shape=(1,), dtype=numpy.float32)
        self.state: numpy.ndarray | None = None

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        high = numpy.array([math.pi, 1.0])
        self.state = self.np_random.uniform(-high, high)
        return self._observation(), {}

    def _observation(self) -> numpy.ndarray:
        theta, theta_dot = self.state
        return numpy.array([math.cos(theta), math.sin(theta), theta_dot], dtype=numpy.float32)

    def step(self, action):
        if self.state is None:
            raise RuntimeError("Pendulum.step: call reset() before step()")
        u = numpy.asarray(action, dtype=numpy.float64).reshape(-1)
        if u.shape != (1,):
            raise ValueError(f"Pendulum.step: the action must hold one torque, got shape {numpy.shape(action)}")
        u = float(numpy.clip(u[0], -self.max_torque, self.max_torque))
        theta, theta_dot = self.state
        cost = angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2
        theta_dot = theta_dot + (3 * self.g / (2 * self.length) * math.sin(theta)
                                 + 3.0 / (self.m * self.length**2) * u) * self.dt
        theta_dot = float(numpy.clip(theta_dot, -self.max_speed, self.max_speed))
        self.state = numpy.array([theta + theta_dot * self.dt, theta_dot])
        return self._observation(), -float(cost), False, False, {}


class MountainCar(Env):
    """Drive an under-powered car up the right hill of a valley (Moore, 1990).

    State (position, velocity); actions 0, 1, 2 push left, not at all, right::

        v <- clip(v + (a - 1) 0.001 - 0.0025 cos(3 p), -0.07, 0.07)
        p <- clip(p + v, -1.2, 0.6), and v <- 0 if p hit -1.2 moving left

    Reward -1 per step; the episode terminates when p >= 0.5. Start p ~ U[-0.6, -0.4], v = 0."""

    min_position, max_position, max_speed, goal_position = -1.2, 0.6, 0.07, 0.5
    goal_velocity, force, gravity = 0.0, 0.001, 0.0025

    def __init__(self):
        low = numpy.array([self.min_position, -self.max_speed], dtype=numpy.float32)
        high = numpy.array([self.max_position, self.max_speed], dtype=numpy.float32)
        self.observation_space = Box(low, high, dtype=numpy.float32)
        self.action_space = Discrete(3)
        self.state: numpy.ndarray | None = None

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = numpy.array([self.np_random.uniform(-0.6, -0.4), 0.0])
        return self.state.astype(numpy.float32), {}

    def step(self, action):
        _check_action(self, action)
        if self.state is None:
            raise RuntimeError("MountainCar.step: call reset() before step()")
        position, velocity = self.state
        velocity += (int(action) - 1) * self.force - math.cos(3 * position) * self.gravity
        velocity = min(max(velocity, -self.max_speed), self.max_speed)
        position = min(max(position + velocity, self.min_position), self.max_position)
        if position == self.min_position and velocity < 0:
            velocity = 0.0
        terminated = bool(position >= self.goal_position and velocity >= self.goal_velocity)
        self.state = numpy.array([position, velocity])
        return self.state.astype(numpy.float32), -1.0, terminated, False, {}
