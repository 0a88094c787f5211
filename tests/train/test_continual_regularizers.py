"""EWC (offline and online), synaptic intelligence, MAS and LwF in float64: the importances
(diagonal Fishers, path integrals, output sensitivities) against PyTorch per-sample
gradients and a NumPy reference on recorded steps, and the penalties with their gradients
against torch re-implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.optim import SGD
from lamina.train.continual import (
    EWC,
    MAS,
    LwF,
    SynapticIntelligence,
    fisher_diagonal,
    output_sensitivity,
    penalized_loss,
)

TF = torch.nn.functional
NAMES = ("dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias")


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def mlp(seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(5, activation="tanh"), nn.Dense(3))
    model.build((None, 4))
    return model


def data(n=9, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def torch_params(model):
    return {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}


def torch_forward(p, x):
    return torch.tanh(x @ p["dense.weight"] + p["dense.bias"]) @ p["dense_1.weight"] + p["dense_1.bias"]


def torch_sample_grads(model, x, per_sample_loss):
    """g_i for every sample, one backward pass each: name -> (N, *shape)."""
    found = {name: [] for name in NAMES}
    for i in range(len(x)):
        p = torch_params(model)
        grads = torch.autograd.grad(per_sample_loss(torch_forward(p, torch.tensor(x[i:i + 1])), i), list(p.values()))
        for name, g in zip(p, grads):
            found[name].append(g.numpy())
    return {name: np.stack(v) for name, v in found.items()}


def test_empirical_fisher_matches_torch_per_sample_gradients():
    model, (x, y) = mlp(), data()
    grads = torch_sample_grads(model, x, lambda out, i: TF.cross_entropy(out, torch.tensor(y[i:i + 1])))
    ours = fisher_diagonal(model, x, y, batch_size=4)
    for name in NAMES:
        assert_close(ours[name], (grads[name] ** 2).mean(axis=0), 1e-10, name)


def test_true_fisher_is_the_expectation_over_the_models_predictions():
    model, (x, _) = mlp(), data()
    with torch.no_grad():
        probabilities = TF.softmax(torch_forward(torch_params(model), torch.tensor(x)), dim=-1).numpy()
    expected = {name: 0.0 for name in NAMES}
    for c in range(3):
        grads = torch_sample_grads(model, x, lambda out, i, c=c: TF.cross_entropy(out, torch.tensor([c])))
        for name in NAMES:
            weights = probabilities[:, c].reshape((-1,) + (1,) * (grads[name].ndim - 1))
            expected[name] = expected[name] + (weights * grads[name] ** 2).sum(axis=0) / len(x)
    ours = fisher_diagonal(model, x, kind="true", batch_size=5)
    for name in NAMES:
        assert_close(ours[name], expected[name], 1e-10, name)


def test_mas_importance_matches_torch():
    model, (x, _) = mlp(), data()
    grads = torch_sample_grads(model, x, lambda out, i: (out ** 2).sum())
    ours = output_sensitivity(model, x, batch_size=4)
    for name in NAMES:
        assert_close(ours[name], np.abs(grads[name]).mean(axis=0), 1e-10, name)


def shift_weights(model, seed=3):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = p.data + 0.3 * rng.standard_normal(p.shape)


def torch_quadratic(model, terms, scale):
    """scale * sum over terms of sum Omega (theta - anchor)^2, and its gradients."""
    p = torch_params(model)
    total = sum(scale * (torch.tensor(omega[n]) * (p[n] - torch.tensor(anchor[n])) ** 2).sum()
                for omega, anchor in terms for n in NAMES)
    grads = torch.autograd.grad(total, list(p.values()))
    return total.item(), dict(zip(p, (g.numpy() for g in grads)))


def check_penalty(model, strategy, terms, scale):
    value, grads = torch_quadratic(model, terms, scale)
    penalty = strategy.penalty()
    assert abs(penalty.item() - value) <= 1e-10 * abs(value)
    found = lamina.autograd.grad(penalty, model.parameters())
    for (name, _), g in zip(model.named_parameters(), found):
        assert_close(g, grads[name], 1e-10, name)


def snapshot(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def test_ewc_keeps_one_penalty_per_task():
    model = mlp()
    ewc = EWC(model, lambda_=3.0)
    assert ewc.penalty() is None
    (x1, y1), (x2, y2) = data(seed=1), data(seed=2)
    ewc.after_task(0, x1, y1)
    first = (dict(fisher_diagonal(model, x1, y1)), snapshot(model))
    shift_weights(model, seed=4)
    ewc.after_task(1, x2, y2)
    second = (dict(fisher_diagonal(model, x2, y2)), snapshot(model))
    shift_weights(model, seed=5)
    check_penalty(model, ewc, [first, second], 1.5)


def test_online_ewc_decays_the_old_fisher():
    model = mlp()
    ewc = EWC(model, lambda_=2.0, fisher="true", gamma=0.5)
    (x1, y1), (x2, y2) = data(seed=1), data(seed=2)
    ewc.after_task(0, x1, y1)
    old = fisher_diagonal(model, x1, kind="true")
    shift_weights(model, seed=4)
    ewc.after_task(1, x2, y2)
    new, anchor = fisher_diagonal(model, x2, kind="true"), snapshot(model)
    merged = {n: 0.5 * old[n] + new[n] for n in NAMES}
    shift_weights(model, seed=5)
    assert len(ewc.terms) == 1
    check_penalty(model, ewc, [(merged, anchor)], 1.0)


def test_online_ewc_anchor_is_the_latest_weights():
    model = mlp()
    ewc = EWC(model, gamma=0.9)
    ewc.after_task(0, *data(seed=1))
    shift_weights(model)
    expected = snapshot(model)
    ewc.after_task(1, *data(seed=2))
    for name in NAMES:
        np.testing.assert_array_equal(ewc.terms[0][1][name], expected[name])


def run_si_task(model, si, x, y, steps, lr=0.2):
    """Steps of SGD with momentum, each followed by si.after_step; returns the weights and
    the gradients of every step as the reference needs them."""
    optimizer = SGD(model, lr=lr, momentum=0.5)
    weights, grads = [snapshot(model)], []
    for step in range(steps):
        rows = slice(3 * (step % 3), 3 * (step % 3) + 3)
        optimizer.zero_grad()
        cost = F.categorical_cross_entropy(model(lamina.tensor(x[rows])), y[rows], from_logits=True)
        penalty = si.penalty()
        (cost if penalty is None else cost + penalty).backward()
        grads.append({name: p.grad.copy() for name, p in model.named_parameters()})
        optimizer.step()
        si.after_step()
        weights.append(snapshot(model))
    return weights, grads


def numpy_si_importance(weights, grads, xi):
    omega = {n: -sum(g[n] * (after[n] - before[n]) for g, before, after in zip(grads, weights, weights[1:]))
             for n in NAMES}
    return {n: omega[n] / ((weights[-1][n] - weights[0][n]) ** 2 + xi) for n in NAMES}


def test_si_path_integral_matches_a_numpy_reference_and_accumulates():
    model = mlp()
    si = SynapticIntelligence(model, c=0.7, xi=0.05)
    x, y = data(seed=6)
    si.before_task(0, x, y)
    weights, grads = run_si_task(model, si, x, y, steps=7)
    si.after_task(0, x, y)
    first = numpy_si_importance(weights, grads, 0.05)
    for name in NAMES:
        assert_close(si.importance[name], first[name], 1e-10, name)
    assert any((first[n] > 0).any() for n in NAMES)
    si.before_task(1, x, y)
    weights, grads = run_si_task(model, si, x, y, steps=5)      # the penalty is now in the gradients
    si.after_task(1, x, y)
    second = numpy_si_importance(weights, grads, 0.05)
    total = {n: first[n] + second[n] for n in NAMES}
    for name in NAMES:
        assert_close(si.importance[name], total[name], 1e-10, name)
    anchor = snapshot(model)
    shift_weights(model)
    check_penalty(model, si, [(total, anchor)], 0.7)


def test_mas_penalty_sums_importances_over_tasks():
    model = mlp()
    mas = MAS(model, lambda_=0.4)
    (x1, _), (x2, _) = data(seed=1), data(seed=2)
    mas.after_task(0, x1, None)
    first = output_sensitivity(model, x1)
    shift_weights(model, seed=7)
    mas.after_task(1, x2, None)
    total = {n: first[n] + output_sensitivity(model, x2)[n] for n in NAMES}
    anchor = snapshot(model)
    shift_weights(model, seed=8)
    check_penalty(model, mas, [(total, anchor)], 0.4)


def test_lwf_penalty_matches_torch_distillation_from_the_frozen_copy():
    model = mlp()
    lwf = LwF(model, lambda_=0.6, temperature=3.0)
    x, y = data()
    assert lwf.penalty(x, model(lamina.tensor(x))) is None
    lwf.after_task(0, x, y)
    old = torch_forward({n: t.detach() for n, t in torch_params(model).items()}, torch.tensor(x))
    shift_weights(model)
    p = torch_params(model)
    new = torch_forward(p, torch.tensor(x))
    expected = 0.6 * 9.0 * TF.kl_div(TF.log_softmax(new / 3.0, dim=-1), TF.softmax(old / 3.0, dim=-1),
                                     reduction="batchmean")
    torch_grads = dict(zip(p, torch.autograd.grad(expected, list(p.values()))))
    penalty = lwf.penalty(x, model(lamina.tensor(x)))
    assert abs(penalty.item() - expected.item()) <= 1e-10 * abs(expected.item())
    found = lamina.autograd.grad(penalty, model.parameters())
    for (name, _), g in zip(model.named_parameters(), found):
        assert_close(g, torch_grads[name].numpy(), 1e-10, name)
    with pytest.raises(ValueError, match="LwF"):
        lwf.penalty()


def test_penalized_loss_adds_the_penalties():
    model = mlp()
    ewc = EWC(model, lambda_=5.0)
    x, y = data()
    ewc.after_task(0, x, y)
    shift_weights(model)
    loss = penalized_loss(lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True), ewc)
    out = model(lamina.tensor(x))
    plain = F.categorical_cross_entropy(out, y, from_logits=True).item()
    assert abs(loss(out, y).item() - plain - ewc.penalty().item()) < 1e-12


def test_bad_settings_are_named():
    model = mlp()
    with pytest.raises(ValueError, match="fisher"):
        EWC(model, fisher="exact")
    with pytest.raises(ValueError, match="gamma"):
        EWC(model, gamma=1.5)
    with pytest.raises(ValueError, match="xi"):
        SynapticIntelligence(model, xi=0.0)
    with pytest.raises(ValueError, match="labels"):
        fisher_diagonal(model, data()[0])
    with pytest.raises(RuntimeError, match="no optimizer step"):
        SynapticIntelligence(model).after_task(0, *data())
