"""Multi-task learning: the shared-trunk model, loss weightings against torch rewrites of their
formulas, the surgery trainer's gradients, and two-task digits trained by every method."""


import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, positive, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.optim import SGD, Adam, mgda
from lamina.train import (
    DynamicWeightAverage,
    EqualWeighting,
    GradNorm,
    MultiTaskModel,
    MultiTaskTrainer,
    RandomLossWeighting,
    UncertaintyWeighting,
    load_digit_tasks,
)

TASKS = ("digit", "ink")
LOSSES = {"digit": F.cross_entropy, "ink": F.mean_squared_error}


def two_task_model(hidden=32):
    trunk = nn.Sequential([nn.Dense(hidden, activation="relu")])
    return MultiTaskModel(trunk, {"digit": nn.Dense(10), "ink": nn.Dense(1)})


def test_model_returns_one_output_per_head_and_splits_its_parameters():
    lamina.manual_seed(0)
    model = two_task_model(hidden=8)
    outputs = model(np.ones((3, 64), dtype=np.float32))
    assert list(outputs) == ["digit", "ink"]
    assert outputs["digit"].shape == (3, 10) and outputs["ink"].shape == (3, 1)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in TASKS]
    assert len(shared) == 2 and all(len(s) == 2 for s in per_task)
    assert shared | per_task[0] | per_task[1] == {id(p) for p in model.parameters()}
    assert not (shared & per_task[0]) and not (per_task[0] & per_task[1])
    with pytest.raises(ValueError, match="unknown task 'colour'; tasks: \\['digit', 'ink'\\]"):
        model.task_parameters("colour")


def test_uncertainty_weighting_matches_torch_in_float64():
    values = np.array([0.8, 2.5, 0.3])
    log_variance = np.array([0.2, -0.4, 1.1])
    kinds = {"a": "regression", "b": "classification", "c": "regression"}
    weighting = UncertaintyWeighting(kinds, dtype=np.float64)
    weighting.log_variance.data[:] = log_variance
    losses = {t: lamina.tensor(v, requires_grad=True, dtype=np.float64) for t, v in zip(kinds, values)}
    total = weighting(losses)
    total.backward()

    s = torch.tensor(log_variance, requires_grad=True)
    theirs = torch.tensor(values, requires_grad=True)
    factors = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    expected = (factors * torch.exp(-s) * theirs + 0.5 * s).sum()
    expected.backward()
    assert total.item() == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(weighting.log_variance.grad, s.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose([losses[t].grad for t in kinds], theirs.grad.numpy(), rtol=1e-12)
    assert list(weighting.weights().values()) == pytest.approx((factors * torch.exp(-s)).tolist())


def test_uncertainty_weighting_gradients_by_central_differences():
    kinds = {"a": "regression", "b": "classification"}
    weighting = UncertaintyWeighting(kinds, dtype=np.float64)
    weighting.log_variance.data[:] = [0.3, -0.2]
    assert check_gradients(lambda v: weighting({"a": v[0], "b": v[1]}), positive(2))
    values = {t: lamina.tensor(v, dtype=np.float64) for t, v in zip(kinds, [1.5, 0.4])}
    weighting.log_variance.grad = None
    weighting(values).backward()
    numeric = []
    for i in range(2):
        cost = []
        for shift in (1e-6, -1e-6):
            weighting.log_variance.data[i] += shift
            cost.append(weighting(values).item())
            weighting.log_variance.data[i] -= shift
        numeric.append((cost[0] - cost[1]) / 2e-6)
    np.testing.assert_allclose(weighting.log_variance.grad, numeric, rtol=1e-7)


def test_uncertainty_weighting_settles_at_sigma_squared_equal_to_the_loss():
    values = {"reg": 0.6, "cls": 1.7}
    weighting = UncertaintyWeighting({"reg": "regression", "cls": "classification"}, dtype=np.float64)
    optimizer = SGD(weighting.parameters(), lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        weighting({t: lamina.tensor(v, dtype=np.float64) for t, v in values.items()}).backward()
        optimizer.step()
    variances = weighting.variances()
    assert variances["reg"] == pytest.approx(0.6, rel=1e-6)        # sigma^2 = L
    assert variances["cls"] == pytest.approx(2 * 1.7, rel=1e-6)    # sigma^2 = 2L for the softmax form


def gradnorm_problem(backend_module):
    """A tanh trunk W (3x4) and two linear heads, as lamina tensors or torch tensors (float64)."""
    rng = np.random.default_rng(4)
    arrays = {"x": rng.normal(size=(6, 3)), "W": rng.normal(size=(3, 4)), "a": rng.normal(size=(4, 1)),
              "b": rng.normal(size=(4, 1)), "y1": rng.normal(size=(6, 1)), "y2": 3 * rng.normal(size=(6, 1))}
    if backend_module is torch:
        t = {k: torch.tensor(v, requires_grad=k == "W") for k, v in arrays.items()}
    else:
        t = {k: lamina.tensor(v, requires_grad=k == "W", dtype=np.float64) for k, v in arrays.items()}
    h = (t["x"] @ t["W"]).tanh()
    losses = {"one": ((h @ t["a"] - t["y1"]) ** 2).mean(), "two": ((h @ t["b"] - t["y2"]) ** 2).mean()}
    return losses, t["W"]


def test_gradnorm_weight_gradient_matches_a_torch_rewrite_of_its_loss():
    alpha, weights, initial = 1.2, np.array([0.7, 1.3]), np.array([2.0, 9.0])
    gradnorm = GradNorm(["one", "two"], alpha=alpha, dtype=np.float64)
    gradnorm.loss_weights.data[:] = weights
    gradnorm.initial_losses = initial
    losses, shared = gradnorm_problem(lamina)
    total = gradnorm.weighted_loss(losses, [shared])

    their_losses, their_shared = gradnorm_problem(torch)
    w = torch.tensor(weights, requires_grad=True)
    stacked = torch.stack([their_losses["one"], their_losses["two"]])
    norms = torch.stack([torch.autograd.grad(w[i] * stacked[i], their_shared, create_graph=True)[0].norm()
                         for i in range(2)])
    rates = stacked.detach() / torch.tensor(initial)
    targets = norms.mean().detach() * (rates / rates.mean()) ** alpha
    grad_loss = (norms - targets).abs().sum()
    grad_loss.backward()
    np.testing.assert_allclose(gradnorm.loss_weights.grad, w.grad.numpy(), rtol=1e-10)
    assert gradnorm.last_grad_loss == pytest.approx(grad_loss.item(), rel=1e-10)
    assert total.item() == pytest.approx((w.detach() * stacked.detach()).sum().item(), rel=1e-12)
    gradnorm.loss_weights.data[:] = [0.5, 2.5]
    gradnorm.after_step()
    np.testing.assert_allclose(gradnorm.loss_weights.data, [2 / 6, 10 / 6])


def test_dynamic_weight_average_follows_its_formula():
    dwa = DynamicWeightAverage(["a", "b", "c"], temperature=2.0)
    history = [[1.0, 2.0, 3.0], [0.5, 1.9, 3.3], [0.45, 1.0, 3.0]]
    dwa.end_epoch(dict(zip("abc", history[0])))
    assert dwa.weights() == {"a": 1.0, "b": 1.0, "c": 1.0}
    for t in (1, 2):
        dwa.end_epoch(dict(zip("abc", history[t])))
        ratios = np.array(history[t]) / np.array(history[t - 1])
        expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
        np.testing.assert_allclose(list(dwa.weights().values()), expected, rtol=1e-12)
    losses = {k: lamina.tensor(v, dtype=np.float64) for k, v in zip("abc", [1.0, 2.0, 4.0])}
    assert dwa(losses).item() == pytest.approx(float(expected @ [1.0, 2.0, 4.0]))


def test_random_and_equal_weighting():
    losses = {"a": lamina.tensor(2.0, dtype=np.float64), "b": lamina.tensor(5.0, dtype=np.float64)}
    assert EqualWeighting(["a", "b"])(losses).item() == 7.0
    rlw = RandomLossWeighting(["a", "b"], rng=np.random.default_rng(9))
    total = rlw(losses).item()
    z = np.random.default_rng(9).standard_normal(2)
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(list(rlw.weights().values()), expected)
    assert total == pytest.approx(float(expected @ [2.0, 5.0]))


def build_trainer(x, lr=0.01, **options):
    model = two_task_model()
    model(x[:2])
    weighting = options.get("weighting")
    params = model.parameters() + (weighting.parameters() if weighting is not None else [])
    return model, MultiTaskTrainer(model, LOSSES, Adam(params, lr=lr), **options)


@pytest.mark.parametrize("method", ["sum", "mgda"])
def test_surgery_step_gives_heads_their_task_gradient_and_the_trunk_the_combination(method):
    lamina.manual_seed(1)
    x, targets = load_digit_tasks()
    x, targets = x[:40], {t: y[:40] for t, y in targets.items()}
    model, trainer = build_trainer(x, lr=0.0, surgery=method)
    trainer.train_step(x, targets)
    shared = model.shared_parameters()
    given = {id(p): p.grad.copy() for p in model.parameters()}
    rows = []
    for task in TASKS:
        model.zero_grad()
        trainer.task_losses(x, targets)[task].backward()
        rows.append(np.concatenate([p.grad.ravel() for p in shared]).astype(np.float64))
        for p in model.task_parameters(task):
            np.testing.assert_allclose(given[id(p)], p.grad, rtol=1e-5, atol=1e-7)
    expected = np.sum(rows, axis=0) if method == "sum" else mgda(np.stack(rows))
    found = np.concatenate([given[id(p)].ravel() for p in shared])
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)


METHODS = {
    "equal": {},
    "uncertainty": {"weighting": lambda: UncertaintyWeighting({"digit": "classification", "ink": "regression"})},
    "gradnorm": {"weighting": lambda: GradNorm(TASKS)},
    "dwa": {"weighting": lambda: DynamicWeightAverage(TASKS)},
    "random": {"weighting": lambda: RandomLossWeighting(TASKS)},
    "pcgrad": {"surgery": "pcgrad"},
    "mgda": {"surgery": "mgda"},
    "cagrad": {"surgery": "cagrad", "surgery_options": {"c": 0.5}},
    "graddrop": {"surgery": "graddrop"},
    "imtl_g": {"surgery": "imtl_g"},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_learns_both_digit_tasks(method):
    lamina.manual_seed(0)
    x, targets = load_digit_tasks()
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    options = {k: (v() if callable(v) else v) for k, v in METHODS[method].items()}
    model, trainer = build_trainer(x, **options)
    history = trainer.fit(x[train], {t: y[train] for t, y in targets.items()}, epochs=15,
                          rng=np.random.default_rng(1))
    assert history[-1]["digit"] < history[0]["digit"] and history[-1]["ink"] < history[0]["ink"]
    outputs = model(x[test])
    accuracy = (outputs["digit"].numpy().argmax(axis=1) == targets["digit"][test]).mean()
    ink_mse = float(((outputs["ink"].numpy() - targets["ink"][test]) ** 2).mean())
    print(f"{method}: digit accuracy {accuracy:.3f}, ink mse {ink_mse:.3f} (variance 1)")
    assert accuracy > 0.9            # chance: 0.1
    assert ink_mse < 0.6             # predicting the mean: about 1


def test_errors_name_the_problem():
    x, targets = load_digit_tasks()
    x, targets = x[:8], {t: y[:8] for t, y in targets.items()}
    model, trainer = build_trainer(x)
    with pytest.raises(ValueError, match="missing \\['ink'\\], unknown \\['colour'\\]"):
        trainer.train_step(x, {"digit": targets["digit"], "colour": targets["ink"]})
    with pytest.raises(ValueError, match="losses.*missing \\['ink'\\]"):
        MultiTaskTrainer(model, {"digit": F.cross_entropy}, trainer.optimizer)
    with pytest.raises(ValueError, match="unknown surgery method 'pcgard'"):
        MultiTaskTrainer(model, LOSSES, trainer.optimizer, surgery="pcgard")
    with pytest.raises(ValueError, match="not both"):
        MultiTaskTrainer(model, LOSSES, trainer.optimizer, weighting=EqualWeighting(TASKS), surgery="mgda")
    outside = MultiTaskTrainer(model, LOSSES, trainer.optimizer, weighting=UncertaintyWeighting(TASKS))
    with pytest.raises(ValueError, match="\\['log_variance'\\] are not in the optimizer"):
        outside.train_step(x, targets)
    with pytest.raises(ValueError, match="UncertaintyWeighting: the loss dict .* missing \\['ink'\\]"):
        UncertaintyWeighting(TASKS)({"digit": lamina.tensor(1.0)})


def test_readme_example_runs_and_learns():
    _, names = run_readme_section("Multi-task learning")
    assert (names["out"]["digit"].numpy().argmax(1) == names["targets"]["digit"][1200:]).mean() > 0.8
    assert names["history"][-1]["ink"] < names["history"][0]["ink"]
    assert set(names["uw"].variances()) == {"digit", "ink"}
