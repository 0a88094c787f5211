"""Sparse autoencoders: the forward pass, cost and gradients against a PyTorch rewrite (float64,
ReLU and top-k, decoder rows off unit norm so the norm factor of the penalty counts), the
decoder-norm constraint, dead-feature counts and resampling, and learning: on data made of
sparse combinations of known directions the decoder rows find those directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina.analysis.interpretability import explained_variance, feature_l0
from lamina.errors import ShapeError
from lamina.models import SparseAutoencoder
from lamina.models.sparse_autoencoder import FeatureActivity
from lamina.train import resample_dead_features, train_sparse_autoencoder


def _torch_loss(x, w_enc, b_enc, w_dec, b_dec, l1, k=None):
    pre = (x - b_dec) @ w_enc + b_enc
    if k is not None:
        kept = torch.topk(pre, k, dim=-1).indices
        pre = pre * torch.zeros_like(pre).scatter(-1, kept, 1.0)
    f = torch.relu(pre)
    x_hat = f @ w_dec + b_dec
    mse = ((x_hat - x) ** 2).sum(-1).mean()
    sparsity = (f.abs() * w_dec.norm(dim=1)).sum(-1).mean()
    return mse + l1 * sparsity, f, x_hat


class _TorchJumpReLU(torch.autograd.Function):
    """z H(z - theta), with Rajamanoharan et al.'s pseudo-derivative for theta (rectangle kernel)."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        window = ((z - theta).abs() < ctx.bandwidth / 2).to(z.dtype)
        return g * (z > theta), (-(theta / ctx.bandwidth) * window * g).sum(0), None


class _TorchStep(torch.autograd.Function):
    """H(z - theta), with the pseudo-derivative -K((z - theta) / e) / e for theta and none for z."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        window = ((z - theta).abs() < ctx.bandwidth / 2).to(z.dtype)
        return None, (-(1 / ctx.bandwidth) * window * g).sum(0), None


def test_jumprelu_cost_and_pseudo_derivatives_match_a_torch_rewrite(f64):
    sae = SparseAutoencoder(5, 7, activation="jumprelu", l1_coefficient=0.4, threshold=0.3, bandwidth=0.5)
    rng = np.random.default_rng(1)
    arrays = {"W_enc": rng.standard_normal((5, 7)), "b_enc": 0.1 * rng.standard_normal(7),
              "W_dec": rng.standard_normal((7, 5)), "b_dec": rng.standard_normal(5),
              "log_threshold": np.log(rng.uniform(0.1, 0.6, 7))}
    for name, value in arrays.items():
        getattr(sae, name).data = value.copy()
    x = rng.standard_normal((40, 5))
    out = sae.loss(x)
    out.loss.backward()
    theirs = {name: torch.tensor(value, requires_grad=True) for name, value in arrays.items()}
    tx = torch.tensor(x)
    pre = (tx - theirs["b_dec"]) @ theirs["W_enc"] + theirs["b_enc"]
    theta = theirs["log_threshold"].exp()
    f = _TorchJumpReLU.apply(pre, theta, 0.5)
    mse = ((f @ theirs["W_dec"] + theirs["b_dec"] - tx) ** 2).sum(-1).mean()
    l0 = _TorchStep.apply(pre, theta, 0.5).sum(-1).mean()
    (mse + 0.4 * l0).backward()
    np.testing.assert_allclose(out.features.numpy(), f.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(out.sparsity.numpy(), l0.item(), rtol=1e-12)
    for name, value in theirs.items():
        np.testing.assert_allclose(getattr(sae, name).grad, value.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    assert np.abs(sae.log_threshold.grad).max() > 0.01          # some pre-activations fell inside the kernel


@pytest.mark.parametrize("activation, k", [("relu", None), ("topk", 3)])
def test_cost_and_gradients_match_a_torch_rewrite(f64, activation, k):
    sae = SparseAutoencoder(5, 7, activation=activation, k=k, l1_coefficient=0.3)
    rng = np.random.default_rng(0)
    arrays = {"W_enc": rng.standard_normal((5, 7)), "b_enc": 0.1 * rng.standard_normal(7),
              "W_dec": rng.standard_normal((7, 5)) * rng.uniform(0.5, 2, (7, 1)), "b_dec": rng.standard_normal(5)}
    for name, value in arrays.items():
        getattr(sae, name).data = value.copy()
    x = rng.standard_normal((6, 5))
    inputs = lamina.tensor(x, requires_grad=True)
    out = sae.loss(inputs)
    out.loss.backward()
    theirs = {name: torch.tensor(value, requires_grad=True) for name, value in arrays.items()}
    tx = torch.tensor(x, requires_grad=True)
    loss, f, x_hat = _torch_loss(tx, *theirs.values(), 0.3, k)
    loss.backward()
    np.testing.assert_allclose(out.loss.numpy(), loss.item(), rtol=1e-12)
    np.testing.assert_allclose(out.features.numpy(), f.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(out.reconstruction.numpy(), x_hat.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(inputs.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, value in theirs.items():
        np.testing.assert_allclose(getattr(sae, name).grad, value.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    if k is not None:
        assert ((out.features.numpy() != 0).sum(axis=1) <= k).all()


def test_gradients_by_finite_differences(f64):
    sae = SparseAutoencoder(4, 6, l1_coefficient=0.5)
    sae.b_enc.data = np.full(6, 0.3)
    assert check_gradients(lambda x: sae.loss(x).loss, randn(5, 4))


def test_topk_keeps_exactly_k_features_per_row():
    sae = SparseAutoencoder(6, 10, activation="topk", k=4)
    sae.b_enc.data = np.full(10, 5.0, dtype=np.float32)        # every pre-activation positive
    features = sae.encode(randn(8, 6)).numpy()
    assert ((features > 0).sum(axis=1) == 4).all()
    assert feature_l0(features) == 4.0


def test_the_decoder_norm_constraint_after_every_step():
    rng = np.random.default_rng(0)
    sae = SparseAutoencoder(6, 9)
    sae.W_dec.data = (rng.standard_normal((9, 6)) * 3).astype(np.float32)
    sae.normalize_decoder()
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec.numpy(), axis=1), 1, rtol=1e-6)
    g = rng.standard_normal((9, 6)).astype(np.float32)
    sae.W_dec.grad = g.copy()
    sae.remove_parallel_gradient()
    w = torch.tensor(sae.W_dec.numpy())
    expected = torch.tensor(g) - (torch.tensor(g) * w).sum(1, keepdim=True) * w
    np.testing.assert_allclose(sae.W_dec.grad, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((sae.W_dec.grad * sae.W_dec.numpy()).sum(1), 0, atol=1e-6)
    train_sparse_autoencoder(sae, rng.standard_normal((64, 6)), steps=5, batch_size=16, lr=0.05)
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec.numpy(), axis=1), 1, rtol=1e-6)


def test_clear_errors():
    with pytest.raises(ValueError, match="top-k with k=12 is larger than d_sae=8"):
        SparseAutoencoder(4, 8, activation="topk", k=12)
    with pytest.raises(ValueError, match="needs k"):
        SparseAutoencoder(4, 8, activation="topk")
    with pytest.raises(ValueError, match="activation must be one of"):
        SparseAutoencoder(4, 8, activation="gelu")
    with pytest.raises(ShapeError, match=r"width 4 on the last axis, got shape \(2, 5\)"):
        SparseAutoencoder(4, 8)(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"expected activations \(samples, 4\)"):
        train_sparse_autoencoder(SparseAutoencoder(4, 8), np.zeros((3, 2, 4)), steps=1)


def test_feature_activity_counts_samples_since_each_feature_fired():
    activity = FeatureActivity(3)
    activity.update(np.array([[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0]]))
    np.testing.assert_array_equal(activity.samples_since_fired, [2, 0, 3])
    activity.update(np.zeros((2, 3)))
    np.testing.assert_array_equal(activity.samples_since_fired, [4, 2, 5])
    np.testing.assert_array_equal(activity.dead(3), [True, False, True])
    np.testing.assert_allclose(activity.frequency(), [0.2, 0.2, 0.0])


def test_resampling_revives_dead_features_toward_badly_reconstructed_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    sae = SparseAutoencoder(6, 8)
    sae.b_enc.data[:3] = -100.0                                  # three features that can never fire
    history = train_sparse_autoencoder(sae, x, steps=40, batch_size=32, lr=0.01, resample_every=20, dead_after=200)
    assert history.resampled[0] == 3
    w = sae.W_dec.numpy()
    centred = x - sae.b_dec.numpy()
    alignment = (centred / np.linalg.norm(centred, axis=1, keepdims=True)) @ w[:3].T
    assert alignment.max(axis=0).min() > 0.9                     # each new row came from an input
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1, rtol=1e-5)
    assert (sae.encode(x).numpy()[:, :3] > 0).any(axis=0).all()   # they fire again
    assert resample_dead_features(sae, np.zeros(8, dtype=bool), x) == 0


@pytest.mark.parametrize("options, l0_range", [({"activation": "topk", "k": 3, "l1_coefficient": 0.0}, (3, 3)),
                                               ({"activation": "relu", "l1_coefficient": 0.6}, (3, 6.5)),
                                               ({"activation": "jumprelu", "l1_coefficient": 0.1, "threshold": 0.1,
                                                 "bandwidth": 0.05}, (2.5, 3.6))])
def test_learns_the_directions_of_sparse_synthetic_data(options, l0_range):
    rng = np.random.default_rng(0)
    d, n_true, n = 16, 24, 4096
    true = rng.standard_normal((n_true, d))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    active = rng.random((n, n_true)) < 3 / n_true                 # about 3 directions per sample
    x = ((active * rng.uniform(0.5, 1.5, (n, n_true))) @ true).astype(np.float32)
    sae = SparseAutoencoder(d, 48, **options)
    train_sparse_autoencoder(sae, x, steps=1000, batch_size=128, lr=3e-3)
    best = (true @ sae.W_dec.numpy().T).max(axis=1)               # cosine of each true direction's closest row
    assert (best > 0.9).mean() >= 0.9 and np.median(best) > 0.95, np.sort(best)
    out = sae.loss(x)
    assert l0_range[0] <= feature_l0(out.features) <= l0_range[1]
    assert explained_variance(x, out.reconstruction) > 0.6


def test_config_and_weights_round_trip():
    sae = SparseAutoencoder(5, 9, activation="topk", k=2, l1_coefficient=0.0, subtract_decoder_bias=False)
    copy = SparseAutoencoder.from_config(sae.get_config())
    copy.load_state_dict(sae.state_dict())
    x = randn(3, 5)
    np.testing.assert_array_equal(copy(x).numpy(), sae(x).numpy())
    assert sorted(sae.state_dict()) == ["W_dec", "W_enc", "b_dec", "b_enc"]
