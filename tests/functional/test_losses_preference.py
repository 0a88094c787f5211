"""Preference losses against torch re-implementations of TRL's formulas, values and gradients in
float64, and sequence_log_probs against TRL's get_batch_logps."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


# -- TRL's formulas, in torch ------------------------------------------------------------------
def torch_dpo(pc, pr, rc, rr, beta, loss_type, eps=0.0, tau=0.05):
    logits = (pc - pr) - (rc - rr)
    chosen, rejected = pc - rc, pr - rr
    z = beta * logits
    if loss_type == "sigmoid":
        losses = -TF.logsigmoid(z) * (1 - eps) - TF.logsigmoid(-z) * eps
    elif loss_type == "robust":
        losses = (-TF.logsigmoid(z) * (1 - eps) + TF.logsigmoid(-z) * eps) / (1 - 2 * eps)
    elif loss_type == "exo_pair":
        eps = eps or 1e-3
        losses = z.sigmoid() * (TF.logsigmoid(z) - math.log(1 - eps)) + (-z).sigmoid() * (
            TF.logsigmoid(-z) - math.log(eps))
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "bco_pair":
        delta = torch.cat((beta * chosen, beta * rejected)).mean().detach()
        losses = -TF.logsigmoid(beta * chosen - delta) - TF.logsigmoid(-(beta * rejected - delta))
    elif loss_type == "sppo_hard":
        losses = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    elif loss_type == "nca_pair":
        losses = (-TF.logsigmoid(beta * chosen) - 0.5 * TF.logsigmoid(-beta * chosen)
                  - 0.5 * TF.logsigmoid(-beta * rejected))
    elif loss_type in ("aot", "aot_pair"):
        a, b = (pc - pr, rc - rr) if loss_type == "aot" else (chosen, rejected)
        delta = torch.sort(a, dim=0)[0] - torch.sort(b, dim=0)[0]
        losses = -TF.logsigmoid(beta * delta) * (1 - eps) - TF.logsigmoid(-beta * delta) * eps
    elif loss_type == "apo_zero":
        losses = 1 - torch.sigmoid(beta * chosen) + torch.sigmoid(beta * rejected)
    elif loss_type == "apo_down":
        losses = torch.sigmoid(beta * chosen) + 1 - torch.sigmoid(beta * (chosen - rejected))
    else:  # discopop
        modulation = torch.sigmoid(z / tau)
        losses = -TF.logsigmoid(z) * (1 - modulation) + torch.exp(-z) * modulation
    return losses, (beta * chosen).detach(), (beta * rejected).detach()


def logps(n, seed):
    return -np.abs(randn(n, seed=seed, scale=3.0)) - 0.5


PAIRS = [logps(6, seed) for seed in range(4)]


@pytest.mark.parametrize("loss_type", lamina.functional.DPO_LOSS_TYPES)
def test_dpo_loss_matches_trl_formula(loss_type):
    eps = 0.0 if loss_type == "exo_pair" else 0.2
    compare_with_torch(
        lambda *x: F.dpo_loss(*x, beta=0.3, loss_type=loss_type, label_smoothing=eps, reduction="none"),
        lambda *x: torch_dpo(*x, beta=0.3, loss_type=loss_type, eps=eps), *PAIRS, dtype=np.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dpo_loss_reductions_and_exo_smoothing(reduction):
    def theirs(*x):
        losses, c, r = torch_dpo(*x, beta=0.5, loss_type="exo_pair", eps=0.1)
        return (losses.mean() if reduction == "mean" else losses.sum()), c, r

    compare_with_torch(lambda *x: F.dpo_loss(*x, beta=0.5, loss_type="exo_pair", label_smoothing=0.1,
                                             reduction=reduction), theirs, *PAIRS, dtype=np.float64)


def test_dpo_loss_reference_free_and_given_bco_delta():
    pc, pr, rc, rr = (lamina.tensor(a, dtype=np.float64) for a in PAIRS)
    free, *_ = F.dpo_loss(pc, pr, beta=0.2)
    assert np.isclose(free.item(), float(-TF.logsigmoid(0.2 * torch.tensor(PAIRS[0] - PAIRS[1])).mean()))
    loss, *_ = F.dpo_loss(pc, pr, rc, rr, beta=0.2, loss_type="bco_pair", bco_delta=0.7)
    c, r = 0.2 * torch.tensor(PAIRS[0] - PAIRS[2]), 0.2 * torch.tensor(PAIRS[1] - PAIRS[3])
    assert np.isclose(loss.item(), float((-TF.logsigmoid(c - 0.7) - TF.logsigmoid(-(r - 0.7))).mean()))


def test_dpo_loss_second_derivatives():
    check_second_derivatives(lambda *x: F.dpo_loss(*x, beta=0.4, label_smoothing=0.1)[0], *PAIRS)


def test_dpo_rewards_are_constants_of_the_log_ratios():
    pc, pr, rc, rr = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in PAIRS)
    loss, chosen, rejected = F.dpo_loss(pc, pr, rc, rr, beta=0.25)
    assert not chosen.requires_grad and not rejected.requires_grad
    np.testing.assert_allclose(chosen.numpy(), 0.25 * (PAIRS[0] - PAIRS[2]))
    np.testing.assert_allclose(rejected.numpy(), 0.25 * (PAIRS[1] - PAIRS[3]))


def test_simpo_loss_matches_trl_formula():
    def theirs(chosen, rejected):
        z = 2.0 * ((chosen - rejected) - 0.8 / 2.0)
        losses = -TF.logsigmoid(z) * 0.9 - TF.logsigmoid(-z) * 0.1
        return losses, (2.0 * chosen).detach(), (2.0 * rejected).detach()

    compare_with_torch(lambda c, r: F.simpo_loss(c, r, beta=2.0, gamma=0.8, label_smoothing=0.1, reduction="none"),
                       theirs, PAIRS[0] / 5, PAIRS[1] / 5, dtype=np.float64)


@pytest.mark.parametrize("scalar_nll", [False, True])
def test_orpo_loss_matches_trl_formula(scalar_nll):
    chosen, rejected = PAIRS[0] / 4, PAIRS[1] / 4
    nll = np.asarray(1.3) if scalar_nll else None

    def theirs(c, r):
        log_odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
        ratio = 0.2 * TF.logsigmoid(log_odds)
        supervised = 1.3 if scalar_nll else -c
        return (supervised - ratio).mean(), (0.2 * c).detach(), (0.2 * r).detach()

    compare_with_torch(lambda c, r: F.orpo_loss(c, r, chosen_nll=nll, beta=0.2), theirs, chosen, rejected,
                       dtype=np.float64)


@pytest.mark.parametrize("with_kl", [True, False])
def test_kto_loss_matches_trl_formula(with_kl):
    arrays = [logps(4, 10), logps(3, 11), logps(5, 12), logps(4, 13), logps(3, 14), logps(5, 15) - 1.0]
    if not with_kl:
        arrays = arrays[:2] + arrays[3:5]

    def theirs(pc, pr, *rest):
        if with_kl:
            pkl, rc, rr, rkl = rest
            kl = (pkl - rkl).mean().detach().clamp(min=0)
        else:
            (rc, rr), kl = rest, torch.zeros((), dtype=pc.dtype)
        chosen = 1.5 * (1 - torch.sigmoid(0.3 * ((pc - rc) - kl)))
        rejected = 0.7 * (1 - torch.sigmoid(0.3 * (kl - (pr - rr))))
        return torch.cat((chosen, rejected)).mean(), (0.3 * (pc - rc)).detach(), (0.3 * (pr - rr)).detach(), kl

    def ours(pc, pr, *rest):
        pkl, rc, rr, rkl = rest if with_kl else (None, rest[0], rest[1], None)
        return F.kto_loss(pc, pr, pkl, rc, rr, rkl, beta=0.3, desirable_weight=1.5, undesirable_weight=0.7)

    out = compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert out[3].item() >= 0.0


def test_kto_loss_takes_an_empty_group():
    loss, chosen, rejected, _ = F.kto_loss(logps(3, 1), [], logps(3, 2), logps(3, 3), [], logps(3, 4))
    assert chosen.shape == (3,) and rejected.shape == (0,) and np.isfinite(loss.item())


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_reward_model_loss_matches_trl_formula(shape):
    margin = np.abs(randn(5, seed=7))

    def theirs(c, r):
        m = torch.tensor(margin).reshape(shape)
        return -TF.logsigmoid(c - r - m).mean() + 0.01 * torch.mean((c + r) ** 2)

    compare_with_torch(lambda c, r: F.reward_model_loss(c, r, margin=margin, center_rewards_coefficient=0.01),
                       theirs, randn(*shape, seed=1), randn(*shape, seed=2), dtype=np.float64)


def test_reward_model_loss_without_margin_is_bradley_terry():
    c, r = randn(4, seed=3), randn(4, seed=4)
    loss = F.reward_model_loss(c, r, reduction="sum").item()
    assert np.isclose(loss, float(-TF.logsigmoid(torch.tensor(c - r)).sum()))


# -- sequence log-probabilities ---------------------------------------------------------------
LABELS = np.array([[5, 1, 2, 3, 0, 0], [4, 4, 1, 6, 2, 5]])
MASK = np.array([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=bool)


def torch_batch_logps(logits, labels, average):
    """TRL's get_batch_logps: labels -100 outside the completion, shifted by one."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    keep = labels != -100
    labels[~keep] = 0
    per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    total = (per_token * keep).sum(-1)
    return total / keep.sum(-1) if average else total


@pytest.mark.parametrize("average", [False, True])
def test_sequence_log_probs_matches_trl(average):
    trl_labels = torch.tensor(np.where(MASK, LABELS, -100))
    compare_with_torch(lambda z: F.sequence_log_probs(z, LABELS, MASK, average=average),
                       lambda z: torch_batch_logps(z, trl_labels, average), randn(2, 6, 7, seed=5), dtype=np.float64)
    compare_with_torch(lambda z: F.sequence_log_probs(z, np.where(MASK, LABELS, -100), average=average),
                       lambda z: torch_batch_logps(z, trl_labels, average), randn(2, 6, 7, seed=6), dtype=np.float64)


def test_sequence_log_probs_gradcheck():
    assert check_gradients(lambda z: F.sequence_log_probs(z, LABELS, MASK, average=True), randn(2, 6, 7, seed=8))


def test_masked_tokens_change_nothing():
    logits = randn(2, 6, 7, seed=9)
    z = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    base = F.sequence_log_probs(z, LABELS, MASK)
    F.sum(base).backward()
    # the scores of step t only matter when token t + 1 is scored; the last step never is
    unused = np.ones(MASK.shape, dtype=bool)
    unused[:, :-1] = ~MASK[:, 1:]
    np.testing.assert_array_equal(z.grad[unused], 0.0)
    changed_logits = np.where(unused[..., None], 1e4 * randn(2, 6, 7, seed=10), logits)
    changed_labels = np.where(MASK, LABELS, 99)
    other = F.sequence_log_probs(lamina.tensor(changed_logits, dtype=np.float64), changed_labels, MASK)
    np.testing.assert_array_equal(other.numpy(), base.numpy())


# -- errors -------------------------------------------------------------------------------------
def test_errors_are_clear():
    a, b = logps(4, 0), logps(3, 1)
    with pytest.raises(ShapeError, match=r"dpo_loss: .*policy_rejected_logps \(3,\)"):
        F.dpo_loss(a, b, a, a)
    with pytest.raises(ValueError, match="dpo_loss: beta must be a finite number > 0, got 0"):
        F.dpo_loss(a, a, a, a, beta=0)
    with pytest.raises(ValueError, match="unknown loss_type 'kto'; expected one of sigmoid, robust, exo_pair"):
        F.dpo_loss(a, a, a, a, loss_type="kto")
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 0.5\)"):
        F.dpo_loss(a, a, a, a, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="give both reference log-probabilities"):
        F.dpo_loss(a, a, a)
    with pytest.raises(ShapeError, match="simpo_loss"):
        F.simpo_loss(a, b)
    with pytest.raises(ValueError, match="simpo_loss: beta"):
        F.simpo_loss(a, a, beta=-1.0)
    with pytest.raises(ShapeError, match="kto_loss"):
        F.kto_loss(a, a, a, b, a, a)
    with pytest.raises(ShapeError, match="reward_model_loss"):
        F.reward_model_loss(a, b)
    with pytest.raises(ShapeError, match="sequence_log_probs: expected logits"):
        F.sequence_log_probs(randn(2, 5, 7), LABELS, MASK)
    with pytest.raises(ValueError, match=r"scored labels must lie in \[0, 7\)"):
        F.sequence_log_probs(randn(2, 6, 7), np.where(MASK, 9, 0), MASK)
    with pytest.raises(ValueError, match="at least one scored token"):
        F.sequence_log_probs(randn(2, 6, 7), LABELS, np.zeros_like(MASK), average=True)
