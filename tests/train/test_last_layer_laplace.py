"""Last-layer Laplace: the GGN (full and diagonal) and the empirical Fisher against torch
computations in float64 (per-sample Jacobians and output Hessians, and the cross-entropy's
Hessian itself, the logits being linear in the last layer's weights); the log marginal
likelihood's formula and its optimum in the prior precision; the probit and MC predictives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.train.laplace import LastLayerLaplace


@pytest.fixture(scope="module")
def problem():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(4, activation="tanh"), nn.Dense(3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 2))
    y = rng.integers(0, 3, 30)
    model(x[:1].astype(np.float32))
    model.double()
    return model, x, y


def torch_parts(model, x):
    """The last layer's weights [W; b] (requiring grad) and the features [phi, 1], as torch float64."""
    hidden = np.tanh(x @ model.layers[0].weight.data + model.layers[0].bias.data)
    features = torch.tensor(np.concatenate([hidden, np.ones((len(x), 1))], axis=1))
    theta = np.concatenate([model.layers[1].weight.data, model.layers[1].bias.data[None]], axis=0)
    return torch.tensor(theta, requires_grad=True), features


def test_ggn_equals_a_torch_computation(problem):
    model, x, y = problem
    theta, features = torch_parts(model, x)
    labels = torch.tensor(y)
    ggn = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for n in range(len(y)):
        logits_of = lambda flat, row=features[n]: row @ flat.reshape(theta.shape)      # noqa: E731
        jacobian = torch.autograd.functional.jacobian(logits_of, theta.detach().reshape(-1))
        logits = logits_of(theta.detach().reshape(-1))
        output_hessian = torch.autograd.functional.hessian(
            lambda z, label=labels[n:n + 1]: torch.nn.functional.cross_entropy(z[None], label), logits)
        ggn += jacobian.T @ output_hessian @ jacobian
    hessian = torch.autograd.functional.hessian(lambda flat: torch.nn.functional.cross_entropy(
        features @ flat.reshape(theta.shape), labels, reduction="sum"), theta.detach().reshape(-1))
    full = LastLayerLaplace(model).fit(x, y)
    np.testing.assert_allclose(full.hessian, ggn.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(full.hessian, hessian.numpy(), rtol=1e-10, atol=1e-12)
    diag = LastLayerLaplace(model, hessian_structure="diag").fit(x, y)
    np.testing.assert_allclose(diag.hessian.ravel(), np.diag(ggn.numpy()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_empirical_fisher_equals_summed_outer_gradients(problem, structure):
    model, x, y = problem
    theta, features = torch_parts(model, x)
    gradients = []
    for n in range(len(y)):
        loss = torch.nn.functional.cross_entropy(features[n:n + 1] @ theta, torch.tensor(y[n:n + 1]))
        gradients.append(torch.autograd.grad(loss, theta)[0].reshape(-1).numpy())
    fisher = sum(np.outer(g, g) for g in gradients)
    laplace = LastLayerLaplace(model, hessian_structure=structure, backend="ef").fit(x, y)
    expected = fisher if structure == "full" else np.diag(fisher).reshape(laplace.hessian.shape)
    np.testing.assert_allclose(laplace.hessian, expected, rtol=1e-10, atol=1e-12)


def test_marginal_likelihood_formula_and_its_optimum(problem):
    model, x, y = problem
    theta, features = torch_parts(model, x)
    loss = torch.nn.functional.cross_entropy(features @ theta.detach(), torch.tensor(y), reduction="sum").item()
    laplace = LastLayerLaplace(model, prior_precision="marglik").fit(x, y)
    hessian, weights, size = laplace.hessian, theta.detach().numpy().ravel(), theta.numel()
    for prior in (0.1, 2.0):
        expected = -loss - 0.5 * (np.linalg.slogdet(hessian + prior * np.eye(size))[1] - size * math.log(prior)
                                  + prior * weights @ weights)
        assert laplace.log_marginal_likelihood(prior) == pytest.approx(expected, rel=1e-10)
    best = laplace.prior_precision
    # d/d lambda = 0: lambda (||theta||^2 + tr((H + lambda I)^-1)) = P (MacKay's fixed point)
    trace = np.trace(np.linalg.inv(hessian + best * np.eye(size)))
    assert best * (weights @ weights + trace) == pytest.approx(size, rel=1e-5)
    for other in (best * 1.05, best / 1.05):
        assert laplace.log_marginal_likelihood(other) < laplace.log_marginal_likelihood(best)


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_probit_and_mc_predictives(problem, structure):
    model, x, y = problem
    laplace = LastLayerLaplace(model, hessian_structure=structure, prior_precision=0.5).fit(x, y)
    theta, features = torch_parts(model, x[:6])
    covariance = np.linalg.inv(laplace.hessian + 0.5 * np.eye(len(laplace.hessian))) if structure == "full" \
        else np.diag(1 / (laplace.hessian.ravel() + 0.5))
    logits = (features @ theta).detach().numpy()
    with lamina.no_grad():
        np.testing.assert_allclose(logits, model(lamina.tensor(x[:6], dtype=np.float64)).numpy(), rtol=1e-10)
    variances = []
    for n in range(6):
        jacobian = torch.autograd.functional.jacobian(
            lambda flat, row=features[n]: row @ flat.reshape(theta.shape), theta.detach().reshape(-1)).numpy()
        variances.append(jacobian @ covariance @ jacobian.T)
    variances = np.stack(variances)
    mean, logit_covariance = laplace.logit_distribution(x[:6])
    np.testing.assert_allclose(logit_covariance, variances, rtol=1e-9, atol=1e-12)
    scaled = logits / np.sqrt(1 + math.pi / 8 * np.diagonal(variances, axis1=1, axis2=2))
    expected = np.exp(scaled) / np.exp(scaled).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(laplace.predict(x[:6]), expected, rtol=1e-9)
    draws = np.random.default_rng(1).multivariate_normal(np.zeros(3), np.eye(3), size=(4000, 6))
    sampled = logits + np.einsum("nab,snb->sna", np.linalg.cholesky(variances + 1e-10 * np.eye(3)), draws)
    reference = (np.exp(sampled) / np.exp(sampled).sum(axis=2, keepdims=True)).mean(axis=0)
    mc = laplace.predict(x[:6], link_approx="mc", n_samples=4000, rng=np.random.default_rng(2))
    np.testing.assert_allclose(mc, reference, atol=0.02)


def test_clear_errors(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="hessian_structure must be one of"):
        LastLayerLaplace(model, hessian_structure="kron")
    with pytest.raises(ValueError, match="prior_precision must be a positive number"):
        LastLayerLaplace(model, prior_precision=0.0)
    with pytest.raises(ValueError, match="no activation"):
        LastLayerLaplace(nn.Sequential(nn.Dense(3, activation="softmax")))
    with pytest.raises(ValueError, match="labels must lie in \\[0, 2\\]"):
        LastLayerLaplace(model).fit(x, y + 3)
    with pytest.raises(RuntimeError, match="call fit"):
        LastLayerLaplace(model).predict(x)
