"""Noise-robust losses against torch rewrites of their formulas (float64 values and
gradients), their limits (GCE -> CE and MAE, forward correction with T = I is CE), the
anchor-point estimate of T, and the errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F

LABELS = np.array([0, 2, 1, 3, 2, 0])
T = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.0, 0.1, 0.8, 0.1], [0.05, 0.05, 0.3, 0.6]])


def _torch_p_y(z, y):
    return torch.softmax(z, -1).gather(1, torch.as_tensor(y)[:, None])[:, 0]


def _torch_gce(z, q):
    return ((1 - _torch_p_y(z, LABELS) ** q) / q).mean()


def _torch_sce(z, alpha, beta):
    onehot = tF.one_hot(torch.as_tensor(LABELS), 4).double()
    rce = -(torch.softmax(z, -1) * torch.clamp(torch.log(onehot), min=-4.0)).sum(1)
    return alpha * tF.cross_entropy(z, torch.as_tensor(LABELS)) + beta * rce.mean()


def _torch_bootstrap(z, beta, kind):
    onehot = tF.one_hot(torch.as_tensor(LABELS), 4).double()
    guess = torch.softmax(z, -1) if kind == "soft" else tF.one_hot(z.argmax(-1), 4).double()
    return -((beta * onehot + (1 - beta) * guess) * torch.log_softmax(z, -1)).sum(1).mean()


def _torch_forward(z):
    noisy = torch.softmax(z, -1) @ torch.as_tensor(T)
    return -torch.log(noisy.gather(1, torch.as_tensor(LABELS)[:, None])).mean()


def _torch_backward(z):
    corrected = -torch.log_softmax(z, -1) @ torch.linalg.inv(torch.as_tensor(T)).T
    return corrected.gather(1, torch.as_tensor(LABELS)[:, None]).mean()


def _torch_taylor(z, order):
    away = 1 - _torch_p_y(z, LABELS)
    return sum(away ** k / k for k in range(1, order + 1)).mean()


CASES = {
    "gce": (lambda z: F.generalized_cross_entropy(z, LABELS), lambda z: _torch_gce(z, 0.7)),
    "gce_q_0.3": (lambda z: F.generalized_cross_entropy(z, LABELS, q=0.3), lambda z: _torch_gce(z, 0.3)),
    "sce": (lambda z: F.symmetric_cross_entropy(z, LABELS), lambda z: _torch_sce(z, 0.1, 1.0)),
    "sce_weights": (lambda z: F.symmetric_cross_entropy(z, LABELS, alpha=0.5, beta=2.0),
                    lambda z: _torch_sce(z, 0.5, 2.0)),
    "bootstrap_soft": (lambda z: F.bootstrap_loss(z, LABELS), lambda z: _torch_bootstrap(z, 0.95, "soft")),
    "bootstrap_hard": (lambda z: F.bootstrap_loss(z, LABELS, kind="hard"),
                       lambda z: _torch_bootstrap(z, 0.8, "hard")),
    "taylor": (lambda z: F.taylor_cross_entropy(z, LABELS), lambda z: _torch_taylor(z, 2)),
    "taylor_6": (lambda z: F.taylor_cross_entropy(z, LABELS, order=6), lambda z: _torch_taylor(z, 6)),
    "forward": (lambda z: F.forward_corrected_loss(z, LABELS, T), _torch_forward),
    "backward": (lambda z: F.backward_corrected_loss(z, LABELS, T), _torch_backward),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_a_torch_rewrite_of_its_formula(name):
    ours, theirs = CASES[name]
    logits = randn(6, 4, seed=1, scale=2.0)
    compare_with_torch(ours, theirs, logits, dtype=np.float64)
    assert check_gradients(ours, logits)


@pytest.mark.parametrize("name", ["gce", "sce", "forward"])
def test_second_derivatives(name):
    assert check_second_derivatives(CASES[name][0], randn(6, 4, seed=2))


def test_gce_limits_are_cross_entropy_and_mae():
    z = lamina.tensor(randn(6, 4, seed=3), dtype=np.float64)
    ce = F.cross_entropy(z, LABELS, reduction="none").numpy()
    p_y = np.exp(-ce)
    near_zero = F.generalized_cross_entropy(z, LABELS, q=1e-7, reduction="none").numpy()
    np.testing.assert_allclose(near_zero, ce, rtol=1e-5)
    np.testing.assert_allclose(F.generalized_cross_entropy(z, LABELS, q=1.0, reduction="none").numpy(), 1 - p_y,
                               rtol=1e-12)


def test_taylor_cross_entropy_tends_to_cross_entropy():
    z = lamina.tensor(randn(6, 4, seed=5, scale=0.3), dtype=np.float64)
    ce = F.cross_entropy(z, LABELS).item()
    assert F.taylor_cross_entropy(z, LABELS, order=200).item() == pytest.approx(ce, rel=1e-6)
    assert F.taylor_cross_entropy(z, LABELS, order=1).item() < ce


def test_forward_and_backward_correction_with_identity_equal_cross_entropy():
    z = lamina.tensor(randn(6, 4, seed=4), dtype=np.float64)
    ce = F.cross_entropy(z, LABELS).item()
    assert F.forward_corrected_loss(z, LABELS, np.eye(4)).item() == pytest.approx(ce, rel=1e-12)
    assert F.backward_corrected_loss(z, LABELS, np.eye(4)).item() == pytest.approx(ce, rel=1e-12)
    sums = F.symmetric_cross_entropy(z, LABELS, reduction="sum").item()
    assert sums == pytest.approx(6 * F.symmetric_cross_entropy(z, LABELS).item())


def test_anchor_points_recover_the_transition_matrix():
    rng = np.random.default_rng(0)
    clean = rng.dirichlet(np.ones(4) * 0.3, size=200)
    clean[:4] = np.eye(4)  # one perfect anchor per class
    noisy = clean @ T
    np.testing.assert_allclose(F.estimate_transition_matrix(noisy, quantile=None), T, atol=1e-12)
    rough = F.estimate_transition_matrix(noisy)
    np.testing.assert_allclose(rough.sum(axis=1), 1.0)
    assert np.abs(rough - T).max() < 0.25


def test_errors_are_clear():
    z = lamina.tensor(randn(6, 4))
    with pytest.raises(ValueError, match="row-stochastic"):
        F.forward_corrected_loss(z, LABELS, np.eye(4) * 0.9)
    with pytest.raises(ValueError, match="singular"):
        F.backward_corrected_loss(z, LABELS, np.full((4, 4), 0.25))
    with pytest.raises(ValueError, match=r"labels must lie in 0..3"):
        F.generalized_cross_entropy(z, np.array([0, 1, 2, 3, 4, 0]))
    with pytest.raises(ValueError, match="q must be"):
        F.generalized_cross_entropy(z, LABELS, q=0.0)
    with pytest.raises(ValueError, match="kind must be"):
        F.bootstrap_loss(z, LABELS, kind="medium")
    with pytest.raises(ValueError, match="row 1 sums to 0.9"):
        F.estimate_transition_matrix(np.array([[0.5, 0.5], [0.5, 0.4]]))
