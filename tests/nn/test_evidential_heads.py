"""The evidential output heads: their parameterisation, a Dirichlet classifier on digits against
softmax (accuracy, vacuity on noise images) and evidential regression on the cubic toy of Amini
et al. (2020) (more epistemic uncertainty outside the training range)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.data import load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.optim import Adam

EVIDENCE = {"softplus": torch.nn.functional.softplus, "relu": torch.relu,
            "exp": lambda z: torch.exp(torch.clamp(z, -10, 10))}


@pytest.mark.parametrize("evidence", sorted(EVIDENCE))
def test_dirichlet_head_is_evidence_plus_one(evidence):
    head = nn.DirichletHead(3, evidence=evidence)
    head.build((None, 4))
    head.double()
    weight, bias = head.weight.numpy().copy(), randn(3, seed=2, scale=4.0)
    head.bias.data[...] = bias

    def ours(x, w):
        head.weight.data[...] = w.data
        return head(x)

    def theirs(x, w):
        return EVIDENCE[evidence](x @ w + torch.tensor(bias)) + 1

    x = randn(5, 4, seed=1, scale=4.0)
    alpha = compare_with_torch(ours, theirs, x, weight, dtype=np.float64, grad=[True, False])[0]
    assert (alpha.numpy() >= 1).all()
    assert check_gradients(lambda x: head(x), x)


def test_normal_inverse_gamma_head_splits_four_parameters():
    head = nn.NormalInverseGammaHead(2)
    head.build((None, 3))
    head.double()
    x = randn(6, 3, seed=4, scale=3.0)
    gamma, nu, alpha, beta = (t.numpy() for t in head(lamina.tensor(x, dtype=np.float64)))
    out = torch.tensor(x @ head.weight.numpy() + head.bias.numpy())
    softplus = torch.nn.functional.softplus
    np.testing.assert_allclose(gamma, out[:, :2].numpy(), rtol=1e-12)
    np.testing.assert_allclose(nu, softplus(out[:, 2:4]).numpy(), rtol=1e-12)
    np.testing.assert_allclose(alpha, softplus(out[:, 4:6]).numpy() + 1, rtol=1e-12)
    np.testing.assert_allclose(beta, softplus(out[:, 6:]).numpy(), rtol=1e-12)
    assert head.compute_output_shape((6, 3)) == ((6, 2),) * 4
    assert check_gradients(lambda x: F.evidential_regression_loss(*head(x), np.zeros((6, 2))), x)


def test_heads_reject_bad_arguments():
    with pytest.raises(ValueError, match="DirichletHead: evidence must be one of"):
        nn.DirichletHead(3, evidence="sigmoid")
    with pytest.raises(ValueError, match="NormalInverseGammaHead: out_dim"):
        nn.NormalInverseGammaHead(0)
    head = nn.DirichletHead(3)
    head.build((None, 4))
    with pytest.raises(ShapeError, match=r"\(batch, 4\) features"):
        head(np.zeros((2, 5), np.float32))
    assert nn.DirichletHead(**head.get_config()).get_config() == head.get_config()


# -- learning ----------------------------------------------------------------------------------

def digits_split():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def train_classifier(head, loss, xtr, ytr, epochs: int = 15, seed: int = 0) -> nn.Sequential:
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(64, activation="relu"), head)
    model.build((None, 64))
    opt = Adam(model, lr=3e-3)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            opt.zero_grad()
            loss(model(lamina.tensor(xtr[batch])), ytr[batch], epoch).backward()
            opt.step()
    return model


@pytest.fixture(scope="module")
def softmax_accuracy():
    xtr, ytr, xte, yte = digits_split()
    model = train_classifier(nn.Dense(10), lambda z, y, _: F.categorical_cross_entropy(z, y, from_logits=True),
                             xtr, ytr)
    return float((model(lamina.tensor(xte)).numpy().argmax(axis=1) == yte).mean())


@pytest.mark.parametrize("loss", ["edl_mse_loss", "edl_log_loss", "edl_digamma_loss"])
def test_an_evidential_classifier_matches_softmax_and_knows_noise(loss, softmax_accuracy):
    xtr, ytr, xte, yte = digits_split()
    model = train_classifier(nn.DirichletHead(10), lambda a, y, epoch: getattr(F, loss)(a, y, epoch=epoch),
                             xtr, ytr)
    alpha = model(lamina.tensor(xte))
    accuracy = float((alpha.numpy().argmax(axis=1) == yte).mean())
    assert accuracy > softmax_accuracy - 0.04        # 0.93-0.94 against 0.94-0.97 over seeds 0-2
    noise = np.random.default_rng(1).random((200, 64)).astype(np.float32)
    vacuity_digits = F.dirichlet_uncertainty(alpha).vacuity.numpy().mean()
    vacuity_noise = F.dirichlet_uncertainty(model(lamina.tensor(noise))).vacuity.numpy().mean()
    assert vacuity_noise > vacuity_digits + 0.1      # about 0.73-0.83 against 0.56-0.59


def test_evidential_regression_is_unsure_outside_the_training_range():
    """Amini et al.'s toy: y = x^3 + N(0, 3^2), trained on [-4, 4]."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, (400, 1)).astype(np.float32)
    y = (x ** 3 + rng.normal(0, 3, x.shape)).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(64, activation="relu"),
                          nn.NormalInverseGammaHead(1))
    model.build((None, 1))
    opt = Adam(model, lr=5e-3)
    for _ in range(800):
        batch = rng.integers(0, len(x), 64)
        opt.zero_grad()
        F.evidential_regression_loss(*model(lamina.tensor(x[batch] / 4)), y[batch], coeff=0.01).backward()
        opt.step()
    inside = np.linspace(-3.5, 3.5, 50, dtype=np.float32)[:, None]
    outside = np.concatenate([np.linspace(-7, -5, 25), np.linspace(5, 7, 25)]).astype(np.float32)[:, None]
    gamma, nu, alpha, beta = model(lamina.tensor(inside / 4))
    aleatoric, epistemic_inside = F.nig_uncertainty(nu, alpha, beta)
    assert np.abs(gamma.numpy() - inside ** 3).mean() < 1.5   # 0.5-0.9 over seeds 0-4, targets span +-43
    _, epistemic_outside = F.nig_uncertainty(*model(lamina.tensor(outside / 4))[1:])
    assert epistemic_outside.numpy().mean() > 2 * epistemic_inside.numpy().mean()  # 4.6-244 times, seeds 0-4


def test_readme_example_runs():
    printed, names = run_readme_section("Evidential deep learning")
    assert names["vacuity"].shape == (4,)
    assert "vacuity" in printed
