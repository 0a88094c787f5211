"""F.ge2e_loss and nn.GE2ELoss against a loop-by-loop torch rewrite of Wan et al.'s formulas."""

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina import nn


def torch_ge2e(e, w, b, method, reduction="mean"):
    """The paper's definitions, one utterance and one centroid at a time."""
    n, m, _ = e.shape
    losses = []
    for j in range(n):
        for i in range(m):
            row = []
            for k in range(n):
                if k == j:
                    keep = [u for u in range(m) if u != i]          # the utterance leaves its own centroid
                    centroid = e[k, keep].mean(dim=0)
                else:
                    centroid = e[k].mean(dim=0)
                row.append(w * torch.nn.functional.cosine_similarity(e[j, i], centroid, dim=0) + b)
            s = torch.stack(row)
            if method == "softmax":
                losses.append(-s[j] + torch.logsumexp(s, dim=0))
            else:
                others = torch.stack([torch.sigmoid(s[k]) for k in range(n) if k != j])
                losses.append(1 - torch.sigmoid(s[j]) + others.max())
    total = torch.stack(losses)
    return total.mean() if reduction == "mean" else total.sum()


@pytest.mark.parametrize("method", ["softmax", "contrast"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_torch_rewrite_float64(method, reduction):
    e, w, b = randn(3, 4, 5, seed=1), np.array(7.5), np.array(-2.0)
    compare_with_torch(lambda x, ww, bb: F.ge2e_loss(x, ww, bb, method, reduction),
                       lambda x, ww, bb: torch_ge2e(x, ww, bb, method, reduction),
                       e, w, b, dtype=np.float64, grad=[True, True, method == "contrast"])
    # the softmax loss does not depend on b (it shifts every logit): its gradient is 0


def test_own_centroid_leaves_the_utterance_out():
    e = randn(2, 3, 4, seed=2)
    s = F.ge2e_similarity(lamina.tensor(e, dtype=np.float64), 1.0, 0.0).numpy()
    own = (e[0].sum(axis=0) - e[0, 1]) / 2
    expected = e[0, 1] @ own / np.linalg.norm(e[0, 1]) / np.linalg.norm(own)
    assert s[0, 1, 0] == pytest.approx(expected, rel=1e-12)
    other = e[1].mean(axis=0)
    assert s[0, 1, 1] == pytest.approx(e[0, 1] @ other / np.linalg.norm(e[0, 1]) / np.linalg.norm(other), rel=1e-12)


@pytest.mark.parametrize("method", ["softmax", "contrast"])
def test_gradcheck_and_second_derivatives(method):
    e = randn(3, 3, 4, seed=3)
    assert check_gradients(lambda x: F.ge2e_loss(x, 5.0, -1.0, method), e)
    if method == "softmax":
        assert check_second_derivatives(lambda x: F.ge2e_loss(x, 5.0, -1.0, method), e)


def test_module_parameters_and_training_signal():
    loss = nn.GE2ELoss()
    assert loss.w.numpy() == pytest.approx(10.0) and loss.b.numpy() == pytest.approx(-5.0)
    e = lamina.tensor(randn(3, 4, 5, seed=4).astype(np.float32), requires_grad=True)
    out = loss(e)
    out.backward()
    expected = torch_ge2e(torch.tensor(e.numpy(), dtype=torch.float64), 10.0, -5.0, "softmax")
    assert out.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.w.grad is not None and e.grad.shape == (3, 4, 5)
    loss.w.data[...] = -3.0                                # clamped to min_w: stays a positive scale
    assert np.isfinite(loss(e).item())


def test_errors():
    with pytest.raises(ValueError, match="at least 2 utterances"):
        F.ge2e_loss(lamina.tensor(randn(3, 1, 4)))
    with pytest.raises(ValueError, match="at least 2 speakers"):
        F.ge2e_loss(lamina.tensor(randn(1, 3, 4)))
    with pytest.raises(lamina.errors.ShapeError, match=r"\(N speakers, M utterances, D\)"):
        F.ge2e_loss(lamina.tensor(randn(6, 4)))
    with pytest.raises(ValueError, match="w must be positive"):
        F.ge2e_loss(lamina.tensor(randn(2, 2, 4)), w=0.0)
    with pytest.raises(ValueError, match="method"):
        F.ge2e_loss(lamina.tensor(randn(2, 2, 4)), method="triplet")
