"""CEM and MPPI planners on a linear-quadratic problem, the MPPI weights, PETS on Pendulum (true
dynamics and a learned ensemble) against random actions, and MBPO-style model rollouts feeding SAC."""

import numpy as np
import pytest
import torch

from lamina.rl import SAC, Pendulum
from lamina.rl.model_based import (
    CEMPlanner,
    MPPIPlanner,
    PETSAgent,
    ProbabilisticEnsemble,
    model_rollouts,
    mppi_weights,
    rollout_returns,
    run_episode,
)

A = np.array([[1.0, 0.1], [0.0, 1.0]])
B = np.array([[0.0], [0.1]])
Q = np.diag([1.0, 0.1])
R = np.array([[0.01]])
HORIZON = 5
X0 = np.array([1.0, -0.5])


def linear_dynamics(states, actions):
    """x' = A x + B u with reward -(x'^T Q x' + u^T R u)."""
    next_states = states @ A.T + actions @ B.T
    cost = np.einsum("ni,ij,nj->n", next_states, Q, next_states) + np.einsum("ni,ij,nj->n", actions, R, actions)
    return next_states, -cost


def lqr_first_action(x0):
    """The finite-horizon LQR action at time 0 by the backward Riccati recursion on the cost
    sum_t x_{t+1}^T Q x_{t+1} + u_t^T R u_t (no cost on x_0)."""
    p = Q.copy()                    # cost-to-go matrix of x_H is Q (it is the last stage's x_{t+1})
    gain = None
    for step in range(HORIZON):
        # stage: u^T R u + (A x + B u)^T P (A x + B u); minimise over u
        gain = np.linalg.solve(R + B.T @ p @ B, B.T @ p @ A)
        p_x = A.T @ p @ A - A.T @ p @ B @ gain
        p = Q + p_x if step < HORIZON - 1 else p_x
    return -gain @ x0


def open_loop_optimum(x0):
    """Minimise ||F x0 + G U||^2_Qbar + ||U||^2_Rbar over the stacked actions U in closed form."""
    n, m = A.shape[0], B.shape[1]
    f = np.vstack([np.linalg.matrix_power(A, t + 1) for t in range(HORIZON)])
    g = np.zeros((HORIZON * n, HORIZON * m))
    for t in range(HORIZON):
        for k in range(t + 1):
            g[t * n:(t + 1) * n, k * m:(k + 1) * m] = np.linalg.matrix_power(A, t - k) @ B
    q_bar, r_bar = np.kron(np.eye(HORIZON), Q), np.kron(np.eye(HORIZON), R)
    return np.linalg.solve(g.T @ q_bar @ g + r_bar, -g.T @ q_bar @ f @ x0).reshape(HORIZON, m)


def test_analytic_references_agree():
    np.testing.assert_allclose(open_loop_optimum(X0)[0], lqr_first_action(X0), rtol=1e-10)
    returns = rollout_returns(linear_dynamics, X0, open_loop_optimum(X0)[None])
    perturbed = rollout_returns(linear_dynamics, X0, open_loop_optimum(X0)[None] + 0.1)
    assert returns[0] > perturbed[0]


def test_cem_finds_the_linear_quadratic_optimum():
    planner = CEMPlanner(-5.0, 5.0, horizon=HORIZON, population=300, elites=30, iterations=20, alpha=0.1, seed=0)
    plan = planner.plan(linear_dynamics, X0)
    optimum = open_loop_optimum(X0)
    np.testing.assert_allclose(plan[0], lqr_first_action(X0), atol=0.03)
    np.testing.assert_allclose(plan, optimum, atol=0.1)


def test_mppi_finds_the_linear_quadratic_optimum():
    planner = MPPIPlanner(-5.0, 5.0, horizon=HORIZON, population=500, temperature=0.01, noise_sigma=0.3,
                          iterations=40, seed=0)
    plan = planner.plan(linear_dynamics, X0)
    np.testing.assert_allclose(plan[0], lqr_first_action(X0), atol=0.04)   # |u*_0| = 3
    np.testing.assert_allclose(plan, open_loop_optimum(X0), atol=0.06)


def test_mppi_weights_equal_the_softmax_formula():
    costs = np.random.default_rng(0).normal(5.0, 3.0, 17)
    for lam in (0.1, 1.0, 10.0):
        expected = torch.softmax(-torch.tensor(costs) / lam, dim=0).numpy()
        np.testing.assert_allclose(mppi_weights(costs, lam), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        mppi_weights(costs, 0.0)


def test_mppi_single_update_is_the_weighted_noise():
    class Recording:
        def __init__(self):
            self.calls = []

        def __call__(self, states, actions):
            self.calls.append(actions.copy())
            return linear_dynamics(states, actions)

    planner = MPPIPlanner(-5.0, 5.0, horizon=3, population=8, temperature=0.7, noise_sigma=0.2, seed=3)
    dynamics = Recording()
    plan = planner.plan(dynamics, X0)
    candidates = np.stack(dynamics.calls, axis=1)          # (population, horizon, act_dim)
    costs = -rollout_returns(linear_dynamics, X0, candidates)
    weights = np.exp(-costs / 0.7) / np.exp(-costs / 0.7).sum()
    np.testing.assert_allclose(plan, np.einsum("k,kta->ta", weights, candidates), rtol=1e-10)


def test_warm_start_shifts_the_previous_plan():
    planner = CEMPlanner(-5.0, 5.0, horizon=4, population=20, elites=4, iterations=2, seed=0)
    plan = planner.plan(linear_dynamics, X0)
    planner = CEMPlanner(-5.0, 5.0, horizon=4, population=20, elites=4, iterations=2, seed=0)
    action = planner.act(linear_dynamics, X0)
    np.testing.assert_allclose(action, plan[0])
    np.testing.assert_allclose(planner.previous, np.concatenate([plan[1:], plan[-1:]]))
    planner.reset()
    np.testing.assert_allclose(planner.previous, 0.0)


def test_planners_reject_bad_arguments():
    with pytest.raises(ValueError, match="CEMPlanner: elites"):
        CEMPlanner(-1, 1, population=10, elites=11)
    with pytest.raises(ValueError, match="low < high"):
        MPPIPlanner(1, -1)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        CEMPlanner(-1, 1, horizon=0)
    with pytest.raises(ValueError, match="initial plan must have shape"):
        CEMPlanner(-1, 1, horizon=3).plan(linear_dynamics, X0, np.zeros((2, 1)))


def pendulum_dynamics(obs, actions):
    """Pendulum-v1's step on observation rows (cos, sin, theta'), vectorised, with its reward."""
    theta, theta_dot = np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]
    u = np.clip(actions[:, 0], -2.0, 2.0)
    reward = -(theta**2 + 0.1 * theta_dot**2 + 0.001 * u**2)
    theta_dot = np.clip(theta_dot + (15.0 * np.sin(theta) + 3.0 * u) * 0.05, -8.0, 8.0)
    theta = theta + theta_dot * 0.05
    return np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=1), reward


class HangingPendulum(Pendulum):
    """Pendulum starting straight down at rest: every episode needs a swing-up."""

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array([np.pi, 0.0])
        return self._observation(), {}


def random_return(steps):
    rng = np.random.default_rng(0)
    return np.mean([run_episode(HangingPendulum(), lambda obs: rng.uniform(-2, 2, 1), steps)[0] for _ in range(3)])


def test_pendulum_dynamics_matches_the_environment():
    env = Pendulum()
    obs, _ = env.reset(seed=0)
    for u in (-2.0, 0.5, 2.0):
        expected, reward, *_ = env.step(np.array([u], dtype=np.float32))
        predicted, predicted_reward = pendulum_dynamics(obs[None].astype(np.float64), np.array([[u]]))
        np.testing.assert_allclose(predicted[0], expected, atol=1e-5)
        np.testing.assert_allclose(predicted_reward[0], reward, rtol=1e-5)
        obs = expected


@pytest.mark.parametrize("planner", ["cem", "mppi"])
def test_mpc_with_true_dynamics_swings_the_pendulum_up(planner):
    steps = 100
    kwargs = {"iterations": 3, "elites": 5} if planner == "cem" else {"temperature": 1.0, "noise_sigma": 1.0,
                                                                      "iterations": 2}
    agent = PETSAgent(3, Pendulum().action_space, planner=planner, horizon=15, population=50, particles=1,
                      seed=0, **kwargs)

    def policy(obs):
        return agent.planner.act(pendulum_dynamics, obs)

    planned, data = run_episode(HangingPendulum(), policy, steps)
    assert planned > random_return(steps) + 400
    assert abs(np.arctan2(data["next_obs"][-1, 1], data["next_obs"][-1, 0])) < 0.3   # upright at the end


def test_pets_with_a_learned_ensemble_beats_random():
    steps = 100
    agent = PETSAgent(3, Pendulum().action_space, hidden=(32, 32), ensemble_size=3, horizon=12, population=40,
                      particles=3, iterations=2, elites=5, seed=1)
    for seed in range(4):
        agent.collect(Pendulum(), 100, seed=seed)          # 400 random transitions
    history = agent.fit(epochs=60, batch_size=32, lr=2e-3)
    assert history["loss"][-1] < history["loss"][0]
    assert agent.collect(HangingPendulum(), steps) > random_return(steps) + 200


def test_pets_agent_errors():
    with pytest.raises(ValueError, match="PETSAgent: planner must be"):
        PETSAgent(3, Pendulum().action_space, planner="random-shooting")
    with pytest.raises(RuntimeError, match="no transitions stored"):
        PETSAgent(3, Pendulum().action_space).fit()


def test_model_rollouts_fill_a_buffer_sac_trains_on():
    # MBPO recipe: fit the ensemble on real transitions, branch short model rollouts from real
    # states with the current policy, and update SAC on batches of the model buffer.
    env = Pendulum()
    rng = np.random.default_rng(0)
    _, data = run_episode(env, lambda obs: rng.uniform(-2, 2, 1), 120, seed=0)
    ensemble = ProbabilisticEnsemble(3, 1, hidden=(16, 16), ensemble_size=3, seed=0)
    ensemble.fit(data["obs"], data["actions"], data["next_obs"], data["rewards"], epochs=5)
    agent = SAC(3, env.action_space, hidden=(16, 16), batch_size=32, seed=0)
    low, high = env.action_space.low, env.action_space.high

    def policy(states):
        return np.stack([agent.act(state, deterministic=False) for state in states])

    starts = data["obs"][:20]
    buffer = model_rollouts(ensemble, starts, policy, horizon=3, action_scale=(low, high),
                            termination_fn=lambda s: np.zeros(len(s), dtype=bool), seed=0)
    assert len(buffer) == 60
    np.testing.assert_allclose(buffer.obs[:20], starts)
    np.testing.assert_allclose(buffer.obs[20:40], buffer.next_obs[:20])   # rows continue their own rollout
    assert np.all(np.abs(buffer.actions[:len(buffer)]) <= 1.0)
    stats = agent.update(buffer.sample(32))
    assert np.isfinite(stats["critic_loss"]) and np.isfinite(stats["actor_loss"])
    ended = model_rollouts(ensemble, starts, policy, horizon=3, termination_fn=lambda s: np.ones(len(s), bool))
    assert len(ended) == 20 and ended.terminated[:20].all()
    with pytest.raises(ValueError, match="start_states must have shape"):
        model_rollouts(ensemble, starts[:, :2], policy, horizon=3)
