"""Rainbow on frames: the Nature-DQN torso and the noisy dueling C51 head against a float64
torch rewrite (values and every gradient, noise included), save / load, bad shapes, and a
learning smoke on a chain drawn as frames (lamina has no image environment of its own)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, randn
from lamina.rl import Chain, RainbowAgent, RainbowNetwork, TimeLimit, Wrapper, nature_torso, train_rainbow
from lamina.rl.spaces import Box


@pytest.fixture
def f64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _torch_network(frames, params, n_actions: int, atoms: int):
    """conv 8x8/4 32, conv 4x4/2 64, conv 3x3/1 64 (ReLU), flattened NHWC; streams of noisy
    linear layers W = mu + sigma eps; logits = V + A - mean_a A."""
    x = frames.permute(0, 3, 1, 2)
    for name, stride in (("conv2d", 4), ("conv2d_1", 2), ("conv2d_2", 1)):
        weight = params[f"torso.{name}.weight"].permute(0, 3, 1, 2)
        x = torch.relu(torch.nn.functional.conv2d(x, weight, params[f"torso.{name}.bias"], stride=stride))
    features = x.permute(0, 2, 3, 1).reshape(len(x), -1)

    def noisy(h, prefix):
        weight = params[f"{prefix}.weight_mu"] + params[f"{prefix}.weight_sigma"] * params[f"{prefix}.weight_epsilon"]
        bias = params[f"{prefix}.bias_mu"] + params[f"{prefix}.bias_sigma"] * params[f"{prefix}.bias_epsilon"]
        return h @ weight + bias

    def stream(prefix):
        return noisy(torch.relu(noisy(features, f"{prefix}.noisy_dense")), f"{prefix}.noisy_dense_1")

    value = stream("value_stream")
    advantage = stream("advantage_stream").reshape(len(x), n_actions, atoms)
    return value[:, None, :] + advantage - advantage.mean(dim=1, keepdim=True)


def test_frames_run_through_the_nature_torso_as_a_float64_torch_rewrite(f64):
    lamina.manual_seed(0)
    net = RainbowNetwork((84, 84, 4), 3, stream_hidden=16, atoms=5, v_min=-1.0, v_max=1.0)
    assert [layer.kernel_size for layer in net.torso.layers[:3]] == [(8, 8), (4, 4), (3, 3)]
    lamina.nn.reset_noise(net)
    frames = np.random.default_rng(1).random((2, 84, 84, 4))
    ours = lamina.tensor(frames, requires_grad=True)
    out = net(ours)
    assert out.shape == (2, 3, 5)
    upstream = randn(*out.shape, seed=2)
    (out * lamina.tensor(upstream)).sum().backward()
    state = net.state_dict()
    parameters = dict(net.named_parameters())
    theirs = {k: torch.tensor(lamina.backend.to_numpy(v), requires_grad=k in parameters) for k, v in state.items()}
    frames_t = torch.tensor(frames, requires_grad=True)
    out_t = _torch_network(frames_t, theirs, 3, 5)
    (out_t * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-10, "atom logits")
    assert_close(ours.grad, frames_t.grad.numpy(), 1e-9, "gradient of the frames")
    for name, param in parameters.items():
        assert_close(param.grad, theirs[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_the_torso_gives_3136_features_on_84x84_frames():
    torso = nature_torso()
    assert torso(lamina.tensor(np.zeros((1, 84, 84, 4), np.float32))).shape == (1, 7 * 7 * 64)


def test_a_frame_network_saves_and_loads(tmp_path):
    lamina.manual_seed(0)
    net = RainbowNetwork((36, 40, 2), 2, stream_hidden=4, atoms=3)
    net.eval()
    frames = np.random.default_rng(3).random((2, 36, 40, 2)).astype(np.float32)
    lamina.save(net, tmp_path / "rainbow.safetensors")
    twin = lamina.load(tmp_path / "rainbow.safetensors")
    assert twin.obs_shape == (36, 40, 2) and twin.get_config() == net.get_config()
    np.testing.assert_array_equal(twin(frames).numpy(), net(frames).numpy())


def test_bad_frames_and_sizes_are_refused():
    net = RainbowNetwork((36, 36, 1), 2, stream_hidden=4, atoms=3)
    with pytest.raises(lamina.errors.ShapeError, match=r"RainbowNetwork.*\(2, 36, 36, 3\).*\(batch, 36, 36, 1\)"):
        net(np.zeros((2, 36, 36, 3), np.float32))
    with pytest.raises(ValueError, match=r"RainbowNetwork: frames of 20x84 are too small"):
        RainbowNetwork((20, 84, 4), 2)
    with pytest.raises(ValueError, match=r"RainbowNetwork: obs_dim must be"):
        RainbowNetwork((84, 84), 2)


# -- learning smoke ------------------------------------------------------------------------------
class ChainFrames(Wrapper):
    """A :class:`Chain` seen as a 36x36 grey frame: a bright 4-pixel-wide column at the
    position (one column band per state)."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = Box(0.0, 1.0, shape=(36, 36, 1), dtype=np.float32)

    def _frame(self) -> np.ndarray:
        frame = np.zeros((36, 36, 1), np.float32)
        column = 4 * self.env.unwrapped.position
        frame[:, column:column + 4] = 1.0
        return frame

    def reset(self, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        return self._frame(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._frame(), reward, terminated, truncated, info


def _greedy_return(env, agent) -> float:
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(agent.predict(obs))
        total, done = total + reward, terminated or truncated
    return total


def test_rainbow_learns_a_chain_seen_as_frames(seed=0):
    env = ChainFrames(TimeLimit(Chain(8), 24))
    lamina.manual_seed(seed)
    agent = RainbowAgent.for_env(env, seed=seed, stream_hidden=32, atoms=21, v_min=-1.0, v_max=1.5, gamma=0.95,
                                 learning_starts=64, target_update_interval=50)
    assert agent.buffer.obs.shape[1:] == (36, 36, 1)
    returns = train_rainbow(env, 400, agent=agent, seed=seed)
    # measured: greedy return 0.94 (the optimum) and 0.94 over the last 10 episodes with seeds 0, 1, 2;
    # a random walk: mean return 0.06 (reaching the goal in 28% of 200 episodes)
    assert _greedy_return(env, agent) == pytest.approx(Chain(8).optimal_return), returns[-10:]
    assert np.mean(returns[-10:]) > 0.8
