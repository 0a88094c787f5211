"""MBPOAgent: model fits and branched rollouts on schedule, batches mixing real and model
transitions in the asked ratio, and SAC updates running on them."""

import numpy as np
import pytest

import lamina
from lamina.rl import MBPOAgent, Pendulum, TimeLimit


def small_agent(**kwargs):
    lamina.manual_seed(0)
    options = dict(hidden=(16, 16), ensemble_size=3, model_train_freq=50, model_epochs=3, rollout_batch=40,
                   rollout_horizon=2, learning_starts=60, real_ratio=0.25, batch_size=32, seed=0)
    options.update(kwargs)
    return MBPOAgent(3, Pendulum().action_space, **options)


def test_schedule_fills_the_model_buffer_and_updates_sac():
    agent = small_agent()
    fits = []
    original = agent.fit_model
    agent.fit_model = lambda: fits.append(agent.sac.env_steps) or original()
    returns = agent.train(TimeLimit(Pendulum(), 50), total_steps=120, seed=0)
    assert len(returns) == 2 and all(np.isfinite(returns))
    assert fits == [60, 110]                                  # learning_starts, then every model_train_freq
    assert len(agent.model_buffer) == 2 * 40 * 2              # two rounds of 40 rollouts of 2 steps
    assert agent.sac.updates == 120 - 60 + 1
    assert np.all(np.abs(agent.model_buffer.actions[:len(agent.model_buffer)]) <= 1.0)


def test_mixed_batch_ratio():
    agent = small_agent()
    env = Pendulum()
    obs, _ = env.reset(seed=0)
    for _ in range(40):
        action = agent.act(obs)
        next_obs, reward, *_ = env.step(action)
        agent.sac.buffer.add(obs, agent.sac.to_unit(action), reward, next_obs, False)
        obs = next_obs
    assert len(agent.mixed_batch().rewards) == 32            # all real while the model buffer is empty
    agent.model_buffer.add(np.full(3, 7.0), np.zeros(1), 0.0, np.full(3, 7.0), False)
    for _ in range(40):
        agent.model_buffer.add(np.full(3, 7.0), np.zeros(1), 0.0, np.full(3, 7.0), False)
    batch = agent.mixed_batch()
    assert len(batch.obs) == 32 and np.sum(batch.obs[:, 0] == 7.0) == 32 - 8


def test_mbpo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="MBPOAgent: real_ratio"):
        small_agent(real_ratio=1.5)
    with pytest.raises(ValueError, match="MBPOAgent: rollout_horizon"):
        small_agent(rollout_horizon=0)
