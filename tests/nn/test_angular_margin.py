"""Angular-margin losses and the center loss against float64 torch rewrites of InsightFace's
and the papers' reference code: values and gradients to the embeddings and the class centres."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.helpers import assert_close, check_gradients, compare_with_torch, randn

import lamina
import lamina.nn as nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, D, C = 7, 5, 4
LABELS = np.array([0, 1, 2, 3, 1, 0, 2])
X = randn(N, D, seed=0)
W = randn(C, D, seed=1)


def one_hot(y, c):
    return TF.one_hot(y, c).double()


def margin_output(cosine, target_logit, y, scale):
    hot = one_hot(y, cosine.shape[1])
    return (hot * target_logit + (1 - hot) * cosine) * scale


def torch_arcface(x, y, w, m=0.5, s=64.0, easy_margin=False):
    """InsightFace's ArcMarginProduct."""
    cosine = TF.linear(TF.normalize(x), TF.normalize(w))
    sine = torch.sqrt((1.0 - cosine ** 2).clamp(0, 1))
    phi = cosine * math.cos(m) - sine * math.sin(m)
    if easy_margin:
        phi = torch.where(cosine > 0, phi, cosine)
    else:
        phi = torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
    return TF.cross_entropy(margin_output(cosine, phi, y, s), y)


def torch_subcenter(x, y, w, k=3, m=0.5, s=64.0):
    cosine = TF.linear(TF.normalize(x), TF.normalize(w)).reshape(len(x), -1, k).amax(dim=2)
    sine = torch.sqrt((1.0 - cosine ** 2).clamp(0, 1))
    phi = cosine * math.cos(m) - sine * math.sin(m)
    phi = torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
    return TF.cross_entropy(margin_output(cosine, phi, y, s), y)


def torch_cosface(x, y, w, m=0.35, s=64.0):
    cosine = TF.linear(TF.normalize(x), TF.normalize(w))
    return TF.cross_entropy(margin_output(cosine, cosine - m, y, s), y)


def torch_combined(x, y, w, m1=1.0, m2=0.3, m3=0.2, s=64.0):
    cosine = TF.linear(TF.normalize(x), TF.normalize(w))
    theta = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
    return TF.cross_entropy(margin_output(cosine, torch.cos(m1 * theta + m2) - m3, y, s), y)


CHEBYSHEV = {1: lambda c: c, 2: lambda c: 2 * c ** 2 - 1, 3: lambda c: 4 * c ** 3 - 3 * c,
             4: lambda c: 8 * c ** 4 - 8 * c ** 2 + 1}


def torch_sphereface(x, y, w, m=4):
    """The A-Softmax reference (AngleLinear with phiflag, lambda = 0)."""
    x_norm = x.pow(2).sum(1).pow(0.5)
    cos_theta = (TF.linear(TF.normalize(x), TF.normalize(w))).clamp(-1, 1)
    cos_m_theta = CHEBYSHEV[m](cos_theta)
    theta = cos_theta.detach().acos()
    k = (m * theta / math.pi).floor()
    phi_theta = ((-1.0) ** k) * cos_m_theta - 2 * k
    logits = margin_output(cos_theta, phi_theta, y, 1.0) * x_norm[:, None]
    return TF.cross_entropy(logits, y)


def torch_normalized_softmax(x, y, w, temperature=0.05):
    return TF.cross_entropy(TF.linear(TF.normalize(x), TF.normalize(w)) / temperature, y)


def run(module):
    return lambda x, y, w: functional_call(module, {"weight": w}, x, y)


CASES = {
    "arcface": (nn.ArcFaceLoss(C, D), torch_arcface, W),
    "arcface_small": (nn.ArcFaceLoss(C, D, margin=0.3, scale=8.0),
                      lambda x, y, w: torch_arcface(x, y, w, 0.3, 8.0), W),
    "arcface_easy": (nn.ArcFaceLoss(C, D, margin=0.4, scale=10.0, easy_margin=True),
                     lambda x, y, w: torch_arcface(x, y, w, 0.4, 10.0, True), W),
    "subcenter": (nn.SubCenterArcFace(C, D, sub_centers=3, scale=10.0),
                  lambda x, y, w: torch_subcenter(x, y, w, 3, 0.5, 10.0), randn(3 * C, D, seed=2)),
    "cosface": (nn.CosFaceLoss(C, D, scale=16.0), lambda x, y, w: torch_cosface(x, y, w, 0.35, 16.0), W),
    "combined": (nn.CombinedMarginLoss(C, D, m1=1.2, m2=0.2, m3=0.1, scale=8.0),
                 lambda x, y, w: torch_combined(x, y, w, 1.2, 0.2, 0.1, 8.0), W),
    "sphereface": (nn.SphereFaceLoss(C, D), torch_sphereface, W),
    "sphereface_m3": (nn.SphereFaceLoss(C, D, margin=3), lambda x, y, w: torch_sphereface(x, y, w, 3), W),
    "normalized_softmax": (nn.NormalizedSoftmaxLoss(C, D, temperature=0.2),
                           lambda x, y, w: torch_normalized_softmax(x, y, w, 0.2), W),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference_in_value_and_gradients(name):
    module, reference, weight = CASES[name]
    compare_with_torch(run(module), reference, X, LABELS, weight, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    module, _, weight = CASES[name]
    assert check_gradients(run(module), X, LABELS, weight)


def test_sphereface_covers_several_angle_pieces():
    """The reference's psi switches piece at k pi / m: the test inputs must reach k >= 1."""
    cos = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ (W / np.linalg.norm(W, axis=1, keepdims=True)).T
    k = np.floor(np.arccos(cos[np.arange(N), LABELS]) * 4 / math.pi)
    assert len(set(k.tolist())) >= 2


def target_logit(module, cos_y):
    """ArcFace's target logit for an embedding at cos_y to its class centre (class 0)."""
    module.weight.data[...] = np.eye(C, D)
    x = np.array([[cos_y, 0, 0, 0, math.sqrt(1 - cos_y ** 2)]])     # the last axis is off every centre
    return float(module.logits(lamina.tensor(x), np.array([0])).numpy()[0, 0]) / module.scale


def test_arcface_beyond_pi_minus_m_falls_back_as_insightface():
    m = 0.5
    loss = nn.ArcFaceLoss(C, D, margin=m, scale=1.0)
    threshold = math.cos(math.pi - m)
    for theta in (0.3, 1.5, math.pi - m - 0.05):          # theta + m < pi: cos(theta + m)
        assert math.isclose(target_logit(loss, math.cos(theta)), math.cos(theta + m), abs_tol=1e-5)
    for theta in (math.pi - m + 0.05, math.pi - 0.1):     # theta + m > pi: cos(theta) - m sin(m)
        expected = math.cos(theta) - m * math.sin(m)
        assert math.isclose(target_logit(loss, math.cos(theta)), expected, abs_tol=1e-5)
    # at the switch the logit steps down from -1 to -cos(m) - m sin(m), so it keeps decreasing in theta
    assert math.isclose(target_logit(loss, threshold + 1e-6), -1.0, abs_tol=1e-4)
    assert math.isclose(target_logit(loss, threshold - 1e-6), -math.cos(m) - m * math.sin(m), abs_tol=1e-4)
    assert target_logit(loss, math.cos(math.pi - 0.1)) < target_logit(loss, math.cos(math.pi - m + 0.05))


def test_arcface_easy_margin_leaves_obtuse_angles_alone():
    loss = nn.ArcFaceLoss(C, D, margin=0.5, scale=1.0, easy_margin=True)
    assert math.isclose(target_logit(loss, -0.5), -0.5, abs_tol=1e-6)
    assert math.isclose(target_logit(loss, 0.5), math.cos(math.acos(0.5) + 0.5), abs_tol=1e-5)


# -- center loss ------------------------------------------------------------------------------------


def torch_center(x, y, centers):
    return 0.5 * ((x - centers[y]) ** 2).sum() / len(x)


def test_center_loss_value_and_gradients():
    learnable = nn.CenterLoss(C, D, learnable=True)
    compare_with_torch(run(learnable), torch_center, X, LABELS, W, dtype=np.float64, rtol=1e-10)
    assert check_gradients(run(learnable), X, LABELS, W)


def test_center_loss_update_follows_wen_et_al():
    loss = nn.CenterLoss(C, D, alpha=0.3)
    assert loss.parameters() == []
    before = np.array(loss.weight, dtype=np.float64)
    x = lamina.tensor(X.astype(np.float32), requires_grad=True)
    value = loss(x, LABELS)
    value.backward()
    assert_close(value.item(), 0.5 * ((X - before[LABELS]) ** 2).sum() / N, 1e-5, "loss")
    assert_close(x.grad, (X - before[LABELS]) / N, 1e-5, "gradient")
    expected = before.copy()
    for j in range(C):                                   # delta c_j = sum (c_j - x_i) / (1 + n_j)
        members = X[LABELS == j]
        expected[j] -= 0.3 * (before[j] - members).sum(axis=0) / (1 + len(members))
    assert_close(loss.weight, expected, 1e-5, "centres")
    loss.eval()
    loss(x, LABELS)
    assert_close(loss.weight, expected, 1e-5, "centres after an evaluation-mode call")


def test_center_loss_sum_reduction():
    loss = nn.CenterLoss(C, D, learnable=True, reduction="sum")
    loss.eval()
    centers = np.array(loss.weight.data, dtype=np.float64)
    assert math.isclose(loss(lamina.tensor(X), LABELS).item(), 0.5 * ((X - centers[LABELS]) ** 2).sum(),
                        rel_tol=1e-5)


# -- errors --------------------------------------------------------------------------------------------


def test_errors():
    loss = nn.ArcFaceLoss(C, D)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss(X, np.array([0, 1, 2, 4, 1, 0, 2]))
    with pytest.raises(ShapeError, match=r"embeddings must have shape \(N, 5\).*got shape \(7, 6\)"):
        loss(randn(N, D + 1), LABELS)
    with pytest.raises(ShapeError, match=r"labels must have shape \(7,\)"):
        loss(X, LABELS[:3])
    with pytest.raises(ValueError, match="labels must be integers"):
        nn.CenterLoss(C, D)(X, LABELS.astype(float))
    with pytest.raises(ValueError, match="margin .* must be a finite number in"):
        nn.ArcFaceLoss(C, D, margin=2.0)
    with pytest.raises(ValueError, match="CosFaceLoss: margin"):
        nn.CosFaceLoss(C, D, margin=-0.1)
    with pytest.raises(ValueError, match="SphereFaceLoss: margin must be an int"):
        nn.SphereFaceLoss(C, D, margin=1.5)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        nn.NormalizedSoftmaxLoss(0, D)
