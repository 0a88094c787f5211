"""Feature and relational distillation losses against torch rewrites of the published code
(FitNets, attention transfer, RKD, PKT, similarity-preserving, in-batch CRD, DKD), in
float64, values and gradients: the student's features and the adapter get the reference's
gradients, the teacher none. Plus the attention map by hand, RKD's invariances, DKD's
decomposition of classic KD, float64 gradient checks and the error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina.errors import ShapeError
from lamina.functional.losses_distill import distillation_loss
from lamina.functional.losses_feature_distill import (
    attention_map,
    attention_transfer_loss,
    crd_loss,
    dkd_loss,
    dkd_terms,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    similarity_preserving_loss,
)

F64 = dict(dtype=np.float64, rtol=1e-9)


def teacher_gets_no_gradient(lamina_loss, torch_loss, student, teacher, *extra):
    """compare_with_torch with the teacher an input that requires grad in both: torch's
    reference detaches it, so lamina must give it no gradient either."""
    return compare_with_torch(lamina_loss, torch_loss, student, teacher, *extra, **F64)


# -- references, written from the authors' published code --------------------------------------
def torch_attention(x, p=2.0):                       # x NCHW
    return tF.normalize(x.abs().pow(p).mean(1).view(x.size(0), -1))


def torch_pdist(e, eps=1e-12):
    square = e.pow(2).sum(dim=1)
    res = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def torch_rkd_distance(s, t):
    s, t = s.reshape(len(s), -1), t.detach().reshape(len(t), -1)
    t_d = torch_pdist(t)
    t_d = t_d / t_d[t_d > 0].mean()
    d = torch_pdist(s)
    d = d / d[d > 0].mean()
    return tF.smooth_l1_loss(d, t_d)


def torch_rkd_angle(s, t):
    s, t = s.reshape(len(s), -1), t.detach().reshape(len(t), -1)

    def angles(e):
        unit = tF.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).view(-1)
    return tF.smooth_l1_loss(angles(s), angles(t))


def torch_pkt(s, t, eps=1e-7):
    def probabilities(e):
        e = e / (torch.sqrt(torch.sum(e ** 2, dim=1, keepdim=True)) + eps)
        similarity = (e @ e.t() + 1.0) / 2.0
        return similarity / similarity.sum(dim=1, keepdim=True)
    q, p = probabilities(s.reshape(len(s), -1)), probabilities(t.detach().reshape(len(t), -1))
    return torch.mean(p * torch.log((p + eps) / (q + eps)))


def torch_sp(s, t):
    def gram(e):
        e = e.reshape(len(e), -1)
        return tF.normalize(e @ e.t())
    difference = gram(t.detach()) - gram(s)
    return (difference * difference).sum() / len(s) ** 2


def torch_dkd(s, t, labels, alpha, beta, temperature):
    t = t.detach()
    gt = torch.zeros_like(s).scatter_(1, labels.unsqueeze(1), 1)
    other = 1 - gt
    ps, pt = tF.softmax(s / temperature, dim=1), tF.softmax(t / temperature, dim=1)

    def binary(p):
        return torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], dim=1)
    tckd = tF.kl_div(torch.log(binary(ps)), binary(pt), reduction="sum") * temperature ** 2 / len(s)
    pt2 = tF.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_ps2 = tF.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = tF.kl_div(log_ps2, pt2, reduction="sum") * temperature ** 2 / len(s)
    return alpha * tckd + beta * nckd


# -- FitNets ----------------------------------------------------------------------------------
def test_hint_loss_with_a_1x1_regressor_matches_torch_and_trains_the_regressor():
    s, t, w = randn(3, 4, 4, 2, seed=1), randn(3, 4, 4, 5, seed=2), randn(2, 5, seed=3)

    def ours(s, t, w):
        return hint_loss(s, t, regressor=lambda f: f @ w)

    def theirs(s, t, w):                             # a 1x1 convolution, NCHW, no bias
        out = tF.conv2d(s.permute(0, 3, 1, 2), w.t().reshape(5, 2, 1, 1))
        return tF.mse_loss(out, t.detach().permute(0, 3, 1, 2))
    teacher_gets_no_gradient(ours, theirs, s, t, w)
    check_gradients(lambda s, w: hint_loss(s, t, regressor=lambda f: f @ w), s, w)


def test_hint_loss_needs_matching_shapes():
    with pytest.raises(ShapeError, match=r"hint_loss: .*\(3, 4, 4, 2\).*\(3, 4, 4, 5\).*give a regressor"):
        hint_loss(randn(3, 4, 4, 2), randn(3, 4, 4, 5))
    with pytest.raises(ShapeError, match="regressor must map"):
        hint_loss(randn(3, 4, 4, 2), randn(3, 4, 4, 5), regressor=lambda f: f)
    with pytest.raises(ShapeError, match="the student's 3 samples"):
        hint_loss(randn(3, 4), randn(2, 4))


# -- attention transfer -----------------------------------------------------------------------
def test_attention_map_by_hand():
    x = np.zeros((1, 2, 2, 2))
    x[0, :, :, 0] = [[1, 0], [0, 2]]
    x[0, :, :, 1] = [[1, -2], [0, 0]]
    # mean over channels of the squares: [[1, 2], [0, 2]], of L2 norm 3
    np.testing.assert_allclose(attention_map(x).numpy(), [[1 / 3, 2 / 3, 0, 2 / 3]], rtol=1e-6)
    # p = 1: mean of |A| = [[1, 1], [0, 1]], norm sqrt(3)
    np.testing.assert_allclose(attention_map(x, p=1).numpy(), [[1, 1, 0, 1]] / np.sqrt(3), rtol=1e-6)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_transfer_matches_the_authors_code(p):
    s, t = randn(3, 4, 5, 2, seed=4), randn(3, 4, 5, 6, seed=5)

    def theirs(s, t):
        difference = torch_attention(s.permute(0, 3, 1, 2), p) - torch_attention(t.detach().permute(0, 3, 1, 2), p)
        return 1000.0 / 2 * difference.pow(2).mean()
    teacher_gets_no_gradient(lambda s, t: attention_transfer_loss(s, t, p=p), theirs, s, t)
    check_gradients(lambda s: attention_transfer_loss(s, t, p=p, beta=2.0), s)


def test_attention_transfer_needs_one_spatial_size():
    with pytest.raises(ShapeError, match="one spatial size"):
        attention_transfer_loss(randn(2, 4, 4, 3), randn(2, 2, 2, 3))


# -- relational KD ----------------------------------------------------------------------------
def test_rkd_distance_and_angle_match_the_authors_code():
    s, t = randn(5, 2, 3, seed=6), randn(5, 4, seed=7)
    teacher_gets_no_gradient(rkd_distance_loss, torch_rkd_distance, s, t)
    teacher_gets_no_gradient(rkd_angle_loss, torch_rkd_angle, s, t)
    teacher_gets_no_gradient(rkd_loss, lambda s, t: 25 * torch_rkd_distance(s, t) + 50 * torch_rkd_angle(s, t), s, t)
    check_gradients(lambda s: rkd_loss(s, t), s)


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(randn(d, d, seed=seed))
    return q * np.sign(np.diag(r))


def test_rkd_losses_are_invariant_to_rotating_scaling_and_shifting_either_embedding():
    s, t = randn(6, 4, seed=8), randn(6, 3, seed=9)
    moved_s = 3.5 * s @ rotation(4, 10) + randn(4, seed=11)
    moved_t = 0.2 * t @ rotation(3, 12) - randn(3, seed=13)
    for loss in (rkd_angle_loss, rkd_distance_loss):
        before = loss(s, t).item()
        assert before > 1e-3
        assert loss(moved_s, moved_t).item() == pytest.approx(before, rel=1e-4)
    # and it is zero when the student's embedding is the teacher's so moved
    assert rkd_angle_loss(2.0 * t @ rotation(3, 14), t).item() < 1e-10
    assert rkd_distance_loss(2.0 * t @ rotation(3, 14), t).item() < 1e-10


def test_nst_matches_the_authors_code():
    s, t = randn(3, 2, 3, 4, seed=23), randn(3, 2, 3, 5, seed=24)

    def theirs(s, t):                                # NCHW, RepDistiller's NSTLoss
        def channels(f):
            return tF.normalize(f.permute(0, 3, 1, 2).reshape(len(f), f.shape[3], -1), dim=2)

        def kernel(a, b):
            return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)
        f_s, f_t = channels(s), channels(t.detach())
        return kernel(f_t, f_t).mean() + kernel(f_s, f_s).mean() - 2 * kernel(f_s, f_t).mean()
    teacher_gets_no_gradient(nst_loss, theirs, s, t)
    check_gradients(lambda s: nst_loss(s, t), s)
    assert nst_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


# -- PKT, SP, CRD -----------------------------------------------------------------------------
def test_pkt_and_similarity_preserving_match_the_authors_code():
    s, t = randn(5, 6, seed=15), randn(5, 2, 2, 3, seed=16)
    teacher_gets_no_gradient(pkt_loss, torch_pkt, s, t)
    teacher_gets_no_gradient(similarity_preserving_loss, torch_sp, s, t)
    check_gradients(lambda s: pkt_loss(s, t) + similarity_preserving_loss(s, t), s)


def test_in_batch_crd_is_the_two_way_info_nce_and_trains_both_heads():
    s, t = randn(6, 4, seed=17), randn(6, 4, seed=18)

    def theirs(s, t):
        scores = tF.normalize(s) @ tF.normalize(t).t() / 0.1
        own = torch.arange(len(s))
        return tF.cross_entropy(scores, own) + tF.cross_entropy(scores.t(), own)
    compare_with_torch(lambda s, t: crd_loss(s, t, temperature=0.1), theirs, s, t, **F64)
    check_gradients(lambda s, t: crd_loss(s, t, temperature=0.5), s, t)
    with pytest.raises(ShapeError, match="one shape"):
        crd_loss(randn(6, 4), randn(6, 5))


# -- decoupled KD -----------------------------------------------------------------------------
def test_dkd_matches_the_authors_code():
    s, t = randn(5, 6, seed=19, scale=2.0), randn(5, 6, seed=20, scale=3.0)
    labels = np.array([0, 3, 5, 2, 3])
    compare_with_torch(lambda s, t: dkd_loss(s, t, labels, alpha=1.0, beta=8.0, temperature=4.0),
                       lambda s, t: torch_dkd(s, t, torch.tensor(labels), 1.0, 8.0, 4.0), s, t, **F64)
    compare_with_torch(lambda s, t: dkd_loss(s, t, labels, alpha=0.5, beta=2.0, temperature=1.5),
                       lambda s, t: torch_dkd(s, t, torch.tensor(labels), 0.5, 2.0, 1.5), s, t, **F64)
    check_gradients(lambda s: dkd_loss(s, t, labels), s)


def test_dkd_decomposes_classic_kd_exactly():
    s = lamina.tensor(randn(7, 5, seed=21, scale=2.0), dtype=np.float64)
    t = randn(7, 5, seed=22, scale=2.0)
    labels = np.array([0, 1, 2, 3, 4, 0, 1])
    kd = distillation_loss(s, t, temperature=3.0, reduction="none").numpy()
    tckd, nckd, p_t = (v.numpy() for v in dkd_terms(s, t, labels, temperature=3.0))
    np.testing.assert_allclose(tckd + (1 - p_t) * nckd, kd, rtol=1e-12)
    # alpha = beta = 1 weighs NCKD by 1 where KD weighs it by 1 - p_t: the excess is p_t NCKD
    dkd = dkd_loss(s, t, labels, alpha=1.0, beta=1.0, temperature=3.0, reduction="none").numpy()
    np.testing.assert_allclose(dkd - kd, p_t * nckd, rtol=1e-10, atol=1e-14)
    one_hot = np.eye(5)[labels]
    np.testing.assert_allclose(dkd_loss(s, t, one_hot, reduction="sum").item(), dkd_loss(s, t, labels).item() * 7,
                               rtol=1e-12)


def test_dkd_settings_are_checked():
    s, t, labels = randn(3, 4), randn(3, 4), np.array([0, 1, 2])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="dkd_terms: temperature must be a finite number > 0"):
            dkd_loss(s, t, labels, temperature=bad)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        dkd_loss(s, t, labels, beta=-1.0)
    with pytest.raises(ShapeError, match="must match"):
        dkd_loss(s, randn(3, 5), labels)
    with pytest.raises(ValueError, match="one target class"):
        dkd_loss(s, t, np.full((3, 4), 0.25))
