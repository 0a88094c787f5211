"""Self-supervised losses against their published definitions written in torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn

import lamina
from lamina.errors import ShapeError
from lamina.functional import barlow_twins_loss, info_nce_loss, nt_xent_loss, vicreg_loss


def torch_nt_xent(z1, z2, temperature=0.5):
    z = TF.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    logits = (z @ z.T / temperature).masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n2 // 2, n2), torch.arange(0, n2 // 2)])
    return TF.cross_entropy(logits, target)


def torch_info_nce(q, k, negatives=None, temperature=0.1, reduction="mean", negative_mode="unpaired"):
    q, k = TF.normalize(q, dim=-1), TF.normalize(k, dim=-1)
    if negatives is None:
        logits, labels = q @ k.T, torch.arange(len(q))
    else:
        negatives = TF.normalize(negatives, dim=-1)
        positive = (q * k).sum(dim=1, keepdim=True)
        if negative_mode == "unpaired":
            negative = q @ negatives.T
        else:
            negative = (q.unsqueeze(1) @ negatives.transpose(-2, -1)).squeeze(1)
        logits, labels = torch.cat([positive, negative], dim=1), torch.zeros(len(q), dtype=torch.long)
    return TF.cross_entropy(logits / temperature, labels, reduction=reduction)


def off_diagonal(m):
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def torch_barlow_twins(z1, z2, lambda_=5e-3):
    n = z1.shape[0]
    c = TF.batch_norm(z1, None, None, training=True, eps=1e-5).T @ TF.batch_norm(z2, None, None, training=True,
                                                                                     eps=1e-5) / n
    return (torch.diagonal(c) - 1).pow(2).sum() + lambda_ * off_diagonal(c).pow(2).sum()


def torch_vicreg(x, y, sim=25.0, var=25.0, cov=1.0):
    n, d = x.shape
    invariance = TF.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
    variance = torch.mean(TF.relu(1 - std_x)) / 2 + torch.mean(TF.relu(1 - std_y)) / 2
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    covariance = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    return sim * invariance + var * variance + cov * covariance


Z1, Z2 = randn(6, 4, seed=1), randn(6, 4, seed=2)
NEGATIVES, PAIRED = randn(5, 4, seed=3), randn(6, 3, 4, seed=4)
# small features give the variance hinge of VICReg something to do
SMALL1, SMALL2 = randn(6, 4, seed=5, scale=0.6), randn(6, 4, seed=6, scale=0.6)

CASES = {
    "nt_xent": (nt_xent_loss, torch_nt_xent, (Z1, Z2)),
    "nt_xent_cold": (lambda a, b: nt_xent_loss(a, b, temperature=0.1),
                     lambda a, b: torch_nt_xent(a, b, 0.1), (Z1, Z2)),
    "info_nce_in_batch": (info_nce_loss, torch_info_nce, (Z1, Z2)),
    "info_nce_unpaired": (info_nce_loss, torch_info_nce, (Z1, Z2, NEGATIVES)),
    "info_nce_paired_sum": (
        lambda q, k, n: info_nce_loss(q, k, n, temperature=0.5, reduction="sum", negative_mode="paired"),
        lambda q, k, n: torch_info_nce(q, k, n, 0.5, "sum", "paired"), (Z1, Z2, PAIRED)),
    "info_nce_none": (lambda q, k: info_nce_loss(q, k, reduction="none"),
                      lambda q, k: torch_info_nce(q, k, reduction="none"), (Z1, Z2)),
    "barlow_twins": (barlow_twins_loss, torch_barlow_twins, (Z1, Z2)),
    "barlow_twins_lambda": (lambda a, b: barlow_twins_loss(a, b, lambda_=0.5),
                            lambda a, b: torch_barlow_twins(a, b, 0.5), (Z1, Z2)),
    "vicreg": (vicreg_loss, torch_vicreg, (SMALL1, SMALL2)),
    "vicreg_weights": (lambda a, b: vicreg_loss(a, b, sim=2.0, var=3.0, cov=0.5),
                       lambda a, b: torch_vicreg(a, b, 2.0, 3.0, 0.5), (SMALL1, SMALL2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_formula(name, dtype):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, rtol=2e-5 if dtype == np.float32 else None)


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_gradients(ours, *inputs)


@pytest.mark.parametrize("name", ["nt_xent", "info_nce_unpaired", "barlow_twins", "vicreg"])
def test_second_derivatives_match_torch(name):
    ours, theirs, inputs = CASES[name]
    compare_double_backward_with_torch(ours, theirs, *inputs, rtol=1e-8)


def test_nt_xent_rewards_agreeing_views():
    aligned = nt_xent_loss(Z1, Z1 + 0.01 * Z2).item()
    unrelated = nt_xent_loss(Z1, Z2).item()
    assert aligned < unrelated


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    # orthogonal, centred columns scaled to unit variance: C = I exactly
    q, _ = np.linalg.qr(randn(8, 3, seed=7) - randn(8, 3, seed=7).mean(axis=0))
    q = q - q.mean(axis=0)
    q, _ = np.linalg.qr(q)
    z = q * np.sqrt(8)
    assert abs(np.linalg.norm(z.mean(axis=0))) < 1e-9
    assert barlow_twins_loss(z, z, eps=0.0).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("call, error", [
    (lambda: nt_xent_loss(Z1, Z2[:5]), ShapeError),
    (lambda: nt_xent_loss(Z1[0], Z2[0]), ShapeError),
    (lambda: nt_xent_loss(Z1, Z2, temperature=0.0), ValueError),
    (lambda: info_nce_loss(Z1, Z2, NEGATIVES[:, :3]), ShapeError),
    (lambda: info_nce_loss(Z1, Z2, NEGATIVES, negative_mode="paired"), ShapeError),
    (lambda: info_nce_loss(Z1, Z2, negative_mode="both"), ValueError),
    (lambda: info_nce_loss(Z1, Z2, reduction="avg"), ValueError),
    (lambda: barlow_twins_loss(Z1[:1], Z2[:1]), ShapeError),
    (lambda: vicreg_loss(Z1, Z2, sim=-1.0), ValueError),
])
def test_rejects_bad_arguments(call, error):
    with pytest.raises(error):
        call()


def test_error_names_function_and_shapes():
    with pytest.raises(ShapeError, match=r"vicreg_loss.*\(6, 4\).*\(5, 4\)"):
        vicreg_loss(lamina.tensor(Z1), lamina.tensor(Z2[:5]))
