"""Decision Transformer: the interleaved (R, s, a) token layout with step embeddings, causality
(the action predicted at step t reads nothing after s_t), output shapes for discrete and
continuous actions, the masked loss, input errors, and CartPole: conditioning on a high target
return beats conditioning on a low one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina.rl import Box, Discrete, make
from lamina.rl.offline import (
    DecisionTransformer,
    cartpole_expert,
    concatenate_datasets,
    d4rl_style_dataset,
    decision_transformer_loss,
    evaluate_decision_transformer,
    train_decision_transformer,
)


def small_model(space=None, **options):
    lamina.manual_seed(0)
    settings = dict(context_length=6, max_episode_steps=50, d_model=16, n_layer=2, n_head=2, dropout=0.0)
    return DecisionTransformer(3, space or Discrete(4), **{**settings, **options})


def inputs(batch=2, steps=5, discrete=True, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 4, (batch, steps)) if discrete else rng.uniform(-1, 1, (batch, steps, 2))
    timesteps = np.tile(np.arange(10, 10 + steps), (batch, 1))
    return rng.normal(size=(batch, steps)), rng.normal(size=(batch, steps, 3)), actions, timesteps


def test_tokens_interleave_return_state_action_each_with_its_step_embedding():
    model = small_model()
    rtg, obs, actions, timesteps = inputs()
    tokens = model.token_embeddings(rtg, obs, actions, timesteps).numpy()
    assert tokens.shape == (2, 15, 16)
    time = np.asarray(model.embed_timestep.weight.data)[timesteps]
    w_r, b_r = np.asarray(model.embed_return.weight.data), np.asarray(model.embed_return.bias.data)
    w_s, b_s = np.asarray(model.embed_state.weight.data), np.asarray(model.embed_state.bias.data)
    table = np.asarray(model.embed_action.weight.data)
    np.testing.assert_allclose(tokens[:, 0::3], rtg[..., None] * w_r[0] + b_r + time, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tokens[:, 1::3], obs @ w_s + b_s + time, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tokens[:, 2::3], table[actions] + time, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("discrete", [True, False])
def test_the_action_at_step_t_sees_nothing_after_its_state(discrete):
    model = small_model(None if discrete else Box(-2.0, 2.0, (2,)))
    rtg, obs, actions, timesteps = inputs(discrete=discrete)
    base = model(rtg, obs, actions, timesteps).numpy()
    assert base.shape == ((2, 5, 4) if discrete else (2, 5, 2))
    t = 2
    rtg2, obs2, actions2 = rtg.copy(), obs.copy(), actions.copy()
    actions2[:, t:] = (actions2[:, t:] + 1) % 4 if discrete else -actions2[:, t:]
    rtg2[:, t + 1:] += 5.0
    obs2[:, t + 1:] += 1.0
    changed = model(rtg2, obs2, actions2, timesteps).numpy()
    np.testing.assert_allclose(changed[:, :t + 1], base[:, :t + 1], rtol=1e-5, atol=1e-6)
    assert np.abs(changed[:, t + 1:] - base[:, t + 1:]).max() > 1e-4
    obs3 = obs.copy()
    obs3[:, t] += 1.0
    moved = model(rtg, obs3, actions, timesteps).numpy()
    np.testing.assert_allclose(moved[:, :t], base[:, :t], rtol=1e-5, atol=1e-6)
    assert np.abs(moved[:, t] - base[:, t]).max() > 1e-4
    if not discrete:
        assert np.abs(base).max() < 1.0


def test_loss_counts_only_unmasked_steps_and_matches_torch_cross_entropy():
    model = small_model()
    rtg, obs, actions, timesteps = inputs()
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    segment = {"returns_to_go": rtg, "observations": obs, "actions": actions, "timesteps": timesteps, "mask": mask}
    loss = decision_transformer_loss(model, segment).item()
    logits = torch.tensor(model(rtg, obs, actions, timesteps).numpy(), dtype=torch.float64)
    expected = torch.nn.functional.cross_entropy(logits[torch.tensor(mask)], torch.tensor(actions[mask])).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    padded = {**segment, "actions": np.where(mask, actions, 3), "observations": obs * mask[..., None]}
    assert decision_transformer_loss(model, padded).item() == pytest.approx(loss, rel=1e-5)


def test_bad_inputs_are_refused_with_the_shapes():
    model = small_model()
    rtg, obs, actions, timesteps = inputs(steps=7)
    with pytest.raises(ValueError, match="7 steps exceed the context length 6"):
        model(rtg, obs, actions, timesteps)
    rtg, obs, actions, timesteps = inputs()
    with pytest.raises(ValueError, match="expected shapes"):
        model(rtg, obs[:, :, :2], actions, timesteps)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 50\)"):
        model(rtg, obs, actions, timesteps + 40)
    with pytest.raises(ValueError, match="not divisible by n_head"):
        small_model(d_model=15)


def test_decision_transformer_on_cartpole_follows_the_target_return():
    env = make("CartPole-v1", max_episode_steps=200)
    data = concatenate_datasets([d4rl_style_dataset(env, "expert", cartpole_expert, n_episodes=3, seed=0),
                                 d4rl_style_dataset(env, "medium-replay", cartpole_expert, n_episodes=40, seed=1)])
    lamina.manual_seed(0)
    model = DecisionTransformer(4, env.action_space, context_length=10, max_episode_steps=200, d_model=32,
                                n_layer=1, n_head=1, dropout=0.0, return_scale=100.0)
    losses = train_decision_transformer(model, data, 300, batch_size=32, seed=0)
    high = evaluate_decision_transformer(model, env, 200.0, n_episodes=3, seed=50)
    low = evaluate_decision_transformer(model, env, 20.0, n_episodes=3, seed=50)
    print(f"DT on CartPole(200): loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; returns with target 200: "
          f"{high}, with target 20: {low}")
    assert np.mean(losses[-20:]) < losses[0]
    assert high.mean() > low.mean() + 30
    with pytest.raises(ValueError, match="built for Discrete"):
        evaluate_decision_transformer(model, make("Pendulum-v1"), 0.0)
