"""Quantile distributional RL, the parts: the quantile Huber loss against a float64 torch rewrite
and a hand computation, its gradient check, IQN's cosine embedding against torch, the
distortion risk measures, the networks' shapes, errors and save/load."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_layer_with_torch, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.rl import (
    IQNAgent,
    IQNNetwork,
    QRDQNAgent,
    QRDQNNetwork,
    QuantileEmbedding,
    cosine_features,
    distort_taus,
    quantile_huber_loss,
    quantile_midpoints,
)
from lamina.rl.replay import Batch


def _torch_quantile_huber(quantiles, targets, taus, kappa):
    """Dabney et al. (2018a), eq. 10, written out in torch: sum over i, mean over j, mean over the batch."""
    u = targets[:, None, :] - quantiles[:, :, None]
    if kappa == 0:
        huber = u.abs()
    else:
        huber = torch.where(u.abs() <= kappa, 0.5 * u**2, kappa * (u.abs() - 0.5 * kappa)) / kappa
    weight = (taus.reshape(-1, quantiles.shape[1], 1) - (u.detach() < 0).double()).abs()
    return (weight * huber).mean(dim=2).sum(dim=1).mean()


@pytest.mark.parametrize("kappa", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("per_row_taus", [False, True])
def test_quantile_huber_loss_matches_a_torch_rewrite(kappa, per_row_taus):
    quantiles, targets = randn(4, 5, seed=1, scale=1.5), randn(4, 3, seed=2, scale=1.5)
    taus = np.random.default_rng(3).random((4, 5)) if per_row_taus else quantile_midpoints(5)
    compare_with_torch(lambda q, t: quantile_huber_loss(q, t.numpy(), taus, kappa),
                       lambda q, t: _torch_quantile_huber(q, t, torch.tensor(taus), kappa),
                       quantiles, targets, dtype=np.float64, rtol=1e-12, grad=[True, False])


def test_quantile_huber_loss_by_hand_on_two_by_two():
    """theta = (0, 1) at tau = (1/4, 3/4), targets (0.5, 3), kappa = 1:
    i = 1: (1/4 L(0.5) + 1/4 L(3)) / 2 = (1/4 0.125 + 1/4 2.5) / 2 = 0.328125;
    i = 2: (|3/4 - 1| L(-0.5) + 3/4 L(2)) / 2 = (1/4 0.125 + 3/4 1.5) / 2 = 0.578125;
    the loss is their sum, 0.90625, and d/dtheta = ((-0.5 - 1) / 4 / 2, (0.5 / 4 - 3/4) / 2)."""
    theta = lamina.tensor(np.array([[0.0, 1.0]]), requires_grad=True, dtype=np.float64)
    loss = quantile_huber_loss(theta, np.array([[0.5, 3.0]]), np.array([0.25, 0.75]))
    assert loss.item() == pytest.approx(0.90625, abs=1e-12)
    loss.backward()
    np.testing.assert_allclose(theta.grad, [[-0.1875, -0.3125]], atol=1e-12)


def test_quantile_huber_loss_gradient_check_and_weights(float64):
    targets = randn(3, 6, seed=4, scale=2.0)
    taus = np.random.default_rng(5).random((3, 4))
    assert check_gradients(lambda q: quantile_huber_loss(q, targets, taus, kappa=0.7), randn(3, 4, seed=6))
    per_row = quantile_huber_loss(lamina.tensor(randn(3, 4, seed=6)), targets, taus, reduction="none")
    weighted = quantile_huber_loss(lamina.tensor(randn(3, 4, seed=6)), targets, taus, weights=[1.0, 0.0, 2.0])
    assert weighted.item() == pytest.approx((per_row.numpy() * [1.0, 0.0, 2.0]).mean(), rel=1e-12)


def test_the_loss_is_least_at_the_quantiles_of_the_targets(float64):
    """With kappa = 0 the loss of one quantile against many samples is minimized at the sample quantile."""
    samples = np.random.default_rng(0).exponential(size=(1, 401))
    grid = np.linspace(0.0, 3.0, 601)
    losses = [quantile_huber_loss(np.array([[v]]), samples, [0.3], kappa=0.0).item() for v in grid]
    assert grid[int(np.argmin(losses))] == pytest.approx(np.quantile(samples, 0.3), abs=0.01)


def test_quantile_huber_loss_refuses_bad_shapes():
    with pytest.raises(ShapeError, match=r"quantile_huber_loss: taus must be \(N,\) = \(4,\).*got \(3,\)"):
        quantile_huber_loss(randn(2, 4), randn(2, 5), [0.1, 0.5, 0.9])
    with pytest.raises(ShapeError, match=r"expected quantiles \(batch, N\) and targets \(batch, N'\)"):
        quantile_huber_loss(randn(2, 4), randn(3, 5), quantile_midpoints(4))
    with pytest.raises(ValueError, match="kappa must be >= 0"):
        quantile_huber_loss(randn(2, 4), randn(2, 5), quantile_midpoints(4), kappa=-1.0)


def test_midpoints():
    np.testing.assert_allclose(quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])


def test_cosine_embedding_matches_a_torch_rewrite(float64):
    embedding = QuantileEmbedding(5, n_cos=64)
    weight, bias = embedding.dense.weight, embedding.dense.bias
    assert weight.shape == (64, 5)

    def reference(taus, w, b):
        features = torch.cos(torch.pi * torch.arange(64, dtype=torch.float64) * taus[..., None])
        return torch.relu(features @ w + b)

    taus = np.random.default_rng(7).random((3, 4))
    compare_layer_with_torch(embedding, [weight, bias], reference, taus)
    np.testing.assert_allclose(cosine_features(np.array([0.0, 0.5]), 3).numpy(), [[1, 1, 1], [1, 0, -1]], atol=1e-15)


def test_distortions_against_their_formulas():
    taus = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(distort_taus(taus), taus)
    np.testing.assert_allclose(distort_taus(taus, "cvar", 0.2), 0.2 * taus)
    cpw = taus**0.71 / (taus**0.71 + (1 - taus) ** 0.71) ** (1 / 0.71)
    np.testing.assert_allclose(distort_taus(taus, "cpw"), cpw)
    from scipy.stats import norm
    np.testing.assert_allclose(distort_taus(taus, "wang", -0.75), norm.cdf(norm.ppf(taus) - 0.75))
    with pytest.raises(ValueError, match="distortion must be one of"):
        distort_taus(taus, "pow")
    with pytest.raises(ValueError, match="CVaR needs 0 < eta <= 1, got 1.5"):
        IQNAgent(3, 2, distortion="cvar", eta=1.5)


def test_network_shapes_errors_and_save_load(tmp_path):
    qr = QRDQNNetwork(3, 2, hidden=(8,), n_quantiles=5)
    obs = randn(4, 3, seed=8).astype(np.float32)
    assert qr(obs).shape == (4, 2, 5) and qr.q_values(obs).shape == (4, 2)
    iqn = IQNNetwork(3, 2, hidden=(8,), head_hidden=6, n_cos=16)
    taus = np.random.default_rng(9).random((4, 7))
    assert iqn(obs, taus).shape == (4, 7, 2)
    with pytest.raises(ShapeError, match=r"QRDQNNetwork: expected observations \(batch, 3\), got \(4, 2\)"):
        qr(obs[:, :2])
    with pytest.raises(ShapeError, match=r"IQNNetwork: expected observations \(batch, 3\) and taus \(batch, T\)"):
        iqn(obs, taus[:2])
    for net, args in ((qr, (obs,)), (iqn, (obs, taus))):
        lamina.save(net, tmp_path / "net.safetensors")
        twin = lamina.load(tmp_path / "net.safetensors")
        np.testing.assert_array_equal(twin(*args).numpy(), net(*args).numpy())


def test_agent_state_round_trip():
    rng = np.random.default_rng(0)
    for make_agent in (lambda: QRDQNAgent(3, 2, hidden=(8,), batch_size=4, learning_starts=4, seed=0),
                       lambda: IQNAgent(3, 2, hidden=(8,), head_hidden=8, batch_size=4, learning_starts=4, seed=0)):
        agent, twin = make_agent(), make_agent()
        for _ in range(10):
            agent.observe(rng.standard_normal(3), int(rng.integers(2)), 1.0, rng.standard_normal(3), False)
        twin.load_state_dict(agent.state_dict())
        obs = rng.standard_normal((2, 3))
        np.testing.assert_array_equal(twin.action_values(obs), agent.action_values(obs))
        assert twin.learn() == agent.learn()
    with pytest.raises(ValueError, match="the state is from 'iqn', not 'qrdqn'"):
        QRDQNAgent(3, 2, hidden=(8,)).load_state_dict(IQNAgent(3, 2, hidden=(8,)).state_dict())


@pytest.mark.parametrize("double", [False, True])
def test_qrdqn_targets_by_hand(double):
    """r + gamma (1 - terminated) theta'(s', a*), a* the argmax of the mean quantile of the target
    network, or of the online network with ``double``."""
    agent = QRDQNAgent(3, 2, hidden=(8,), n_quantiles=4, gamma=0.9, double=double, seed=0)
    for param in agent.online_net.parameters():          # the two networks disagree
        param.data = param.data + randn(*param.shape, seed=1).astype(np.float32)
    next_obs = randn(6, 3, seed=2).astype(np.float32)
    batch = Batch(randn(6, 3, seed=3), np.zeros(6, np.int64), np.arange(6, dtype=np.float32), next_obs,
                  np.array([False, True, False, False, True, False]))
    next_target = agent.target_net(next_obs).numpy()
    chooser = agent.online_net(next_obs).numpy() if double else next_target
    best = chooser.mean(axis=2).argmax(axis=1)
    online_best = agent.online_net(next_obs).numpy().mean(axis=2).argmax(axis=1)
    assert (online_best != next_target.mean(axis=2).argmax(axis=1)).any()       # the choice matters
    expected = np.arange(6)[:, None] + 0.9 * (1 - batch.terminated[:, None]) * next_target[np.arange(6), best]
    np.testing.assert_allclose(agent.targets(batch), expected, rtol=1e-6)
    assert agent.loss(batch).item() > 0
