"""squash, routing by agreement and the margin loss (Sabour et al. 2017) against torch
re-implementations written from the paper, float64 gradient checks and the errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def _torch_squash(s, eps=1e-8):
    squared = (s * s).sum(-1, keepdim=True)
    return squared / (1 + squared) * s / torch.sqrt(squared + eps)


def _torch_routing(u_hat, iterations, detach=False):
    b = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype)
    for r in range(iterations):
        c = torch.softmax(b, dim=2)
        v = _torch_squash((c[..., None] * u_hat).sum(1))
        if r < iterations - 1:
            votes, chosen = (u_hat.detach(), v.detach()) if detach else (u_hat, v)
            b = b + (votes * chosen[:, None]).sum(-1)
    return v


def _torch_margin(lengths, targets, m_plus=0.9, m_minus=0.1, lam=0.5):
    present = torch.clamp(m_plus - lengths, min=0) ** 2
    absent = torch.clamp(lengths - m_minus, min=0) ** 2
    return (targets * present + lam * (1 - targets) * absent).sum(1).mean()


def test_squash_matches_torch_and_keeps_directions():
    s = randn(4, 3, 5, seed=1)
    s[0, 0] = 0.0                       # the zero vector stays finite, gradient included
    compare_with_torch(F.squash, _torch_squash, s, dtype=np.float64, rtol=1e-10)
    assert check_gradients(F.squash, randn(3, 4, seed=2))
    v = F.squash(lamina.tensor(s, dtype=np.float64)).numpy()
    lengths = np.linalg.norm(v, axis=-1)
    assert np.all(lengths < 1)
    norms = np.linalg.norm(s, axis=-1)
    assert_close(lengths[norms > 0], norms[norms > 0] ** 2 / (1 + norms[norms > 0] ** 2), 1e-6, "lengths")
    assert_close(F.squash(lamina.tensor(s.swapaxes(1, 2), dtype=np.float64), axis=1).numpy(), v.swapaxes(1, 2),
                 1e-12, "squash over axis 1")


@pytest.mark.parametrize("iterations,detach", [(1, False), (3, False), (3, True)])
def test_routing_matches_torch_with_gradients(iterations, detach):
    u_hat = randn(2, 6, 4, 3, seed=iterations)
    compare_with_torch(lambda u: F.dynamic_routing(u, iterations, detach),
                       lambda u: _torch_routing(u, iterations, detach), u_hat, dtype=np.float64, rtol=1e-10)
    if not detach:                      # detached agreements leave the true derivative on purpose
        assert check_gradients(lambda u: F.dynamic_routing(u, iterations), randn(2, 3, 2, 3, seed=5))


def test_squash_and_routing_have_second_derivatives():
    assert check_second_derivatives(F.squash, randn(2, 3, seed=9))
    assert check_second_derivatives(lambda u: F.dynamic_routing(u, 2), randn(1, 2, 2, 2, seed=10))


def test_one_routing_iteration_is_uniform_coupling_and_more_iterations_agree_more():
    u_hat = randn(2, 8, 5, 4, seed=7)
    v1 = F.dynamic_routing(lamina.tensor(u_hat, dtype=np.float64), 1).numpy()
    s = u_hat.sum(axis=1) / 5           # every coupling 1 / n_out
    uniform = s * (np.sum(s * s, -1, keepdims=True) / (1 + np.sum(s * s, -1, keepdims=True))
                   / np.sqrt(np.sum(s * s, -1, keepdims=True) + 1e-8))
    assert_close(v1, uniform, 1e-12, "one iteration")
    v3 = F.dynamic_routing(lamina.tensor(u_hat, dtype=np.float64), 3).numpy()
    assert not np.allclose(v1, v3)


def test_detached_agreement_stops_the_gradient_through_the_couplings():
    u = lamina.tensor(randn(1, 4, 3, 2, seed=8), dtype=np.float64, requires_grad=True)
    F.dynamic_routing(u, 2, detach_agreement=True).sum().backward()
    attached = lamina.tensor(u.numpy(), dtype=np.float64, requires_grad=True)
    F.dynamic_routing(attached, 2).sum().backward()
    assert not np.allclose(u.grad, attached.grad)


@pytest.mark.parametrize("one_hot", [False, True])
def test_margin_loss_matches_torch(one_hot):
    rng = np.random.default_rng(3)
    lengths = rng.uniform(0.0, 1.0, (5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    targets = np.eye(4)[labels]

    def ours(x):
        return F.capsule_margin_loss(x, targets if one_hot else labels)

    compare_with_torch(ours, lambda x: _torch_margin(x, torch.from_numpy(targets)), lengths, dtype=np.float64,
                       rtol=1e-12)
    assert check_gradients(ours, lengths)
    t = lamina.tensor(lengths, dtype=np.float64)
    per_sample = F.capsule_margin_loss(t, labels, reduction="none").numpy()
    assert per_sample.shape == (5,)
    assert F.capsule_margin_loss(t, labels, reduction="sum").item() == pytest.approx(per_sample.sum())
    perfect = np.where(targets == 1, 0.95, 0.05)
    assert F.capsule_margin_loss(perfect, labels).item() == 0.0


def test_errors_name_the_function():
    with pytest.raises(ShapeError, match=r"dynamic_routing: predictions of shape \(2, 3, 4\)"):
        F.dynamic_routing(randn(2, 3, 4), 2)
    with pytest.raises(ValueError, match="dynamic_routing: iterations"):
        F.dynamic_routing(randn(2, 3, 4, 5), 0)
    with pytest.raises(ShapeError, match=r"capsule_margin_loss: labels of shape \(3,\)"):
        F.capsule_margin_loss(np.ones((2, 4)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        F.capsule_margin_loss(np.ones((2, 4)), np.array([0, 4]))
