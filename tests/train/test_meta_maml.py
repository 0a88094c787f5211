"""MAML, first-order MAML, MetaSGD and ANIL: adapted weights, outer loss and meta-gradients
against a torch reference written out with torch.autograd.grad(create_graph=True), float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.train.meta import MAML, FastLearner, MetaSGD

LR = 0.3
NAMES = ["dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias"]


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _mlp():
    model = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(3))
    model.build((None, 4))
    return model


def _task(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((9, 4)), rng.integers(0, 3, 9), rng.standard_normal((7, 4)), rng.integers(0, 3, 7)


def _loss(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


def _torch_mlp(w, x):
    """The same MLP in torch, on lamina's weight layout (in, out): tanh(x W1 + b1) W2 + b2."""
    return torch.tanh(torch.tensor(x) @ w[0] + w[1]) @ w[2] + w[3]


def _torch_maml(model, steps, first_order=False, adapted=(0, 1, 2, 3), rates=None):
    """Adapted weights, outer loss and gradients w.r.t. the starting weights (and the rates)."""
    xs, ys, xq, yq = _task()
    start = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in model.parameters()]
    alphas = None if rates is None else [torch.tensor(r, requires_grad=True) for r in rates]
    fast = list(start)
    for _ in range(steps):
        inner = torch.nn.functional.cross_entropy(_torch_mlp(fast, xs), torch.tensor(ys))
        chosen = [fast[i] for i in adapted]
        grads = torch.autograd.grad(inner, chosen, create_graph=not first_order)
        for k, (i, g) in enumerate(zip(adapted, grads)):
            g = g.detach() if first_order else g
            fast[i] = fast[i] - (LR if alphas is None else alphas[k]) * g
    outer = torch.nn.functional.cross_entropy(_torch_mlp(fast, xq), torch.tensor(yq))
    wrt = start + (alphas or [])
    grads = torch.autograd.grad(outer, wrt)
    return [f.detach().numpy() for f in fast], outer.item(), [g.numpy() for g in grads]


def _lamina_adapt(meta, steps):
    xs, ys, xq, yq = _task()
    learner = meta.clone()
    learner.adapt(lambda: _loss(learner(xs), ys), steps=steps)
    outer = _loss(learner(xq), yq)
    outer.backward()
    return learner, outer.item()


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_matches_the_torch_reference(steps, first_order):
    model = _mlp()
    fast_t, outer_t, grads_t = _torch_maml(model, steps, first_order)
    learner, outer = _lamina_adapt(MAML(model, lr=LR, first_order=first_order), steps)
    assert outer == pytest.approx(outer_t, rel=1e-12)
    for name, expected in zip(NAMES, fast_t):
        assert_close(learner.weights[name].numpy(), expected, 1e-12, f"adapted {name}")
    for name, p, expected in zip(NAMES, model.parameters(), grads_t):
        assert_close(p.grad, expected, 1e-10, f"meta-gradient of {name}")


def test_first_and_second_order_gradients_differ():
    """The Hessian term is really there: FOMAML's gradient is not MAML's."""
    first, second = _torch_maml(_mlp(), 1, True)[2], _torch_maml(_mlp(), 1, False)[2]
    assert max(np.abs(a - b).max() for a, b in zip(first, second)) > 1e-4


def test_a_loss_tensor_takes_one_step_and_the_module_keeps_its_weights():
    model = _mlp()
    before = [p.numpy().copy() for p in model.parameters()]
    xs, ys, _, _ = _task()
    maml = MAML(model, lr=LR)
    learner = maml.clone()
    assert isinstance(learner, FastLearner) and learner.parameters()[0] is model[0].weight
    learner.adapt(_loss(learner(xs), ys))
    fast_t = _torch_maml(model, 1)[0]
    for name, expected in zip(NAMES, fast_t):
        assert_close(learner.weights[name].numpy(), expected, 1e-12, f"adapted {name}")
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before))
    assert [n for n, _ in maml.named_parameters()] == ["module." + n for n in NAMES]
    np.testing.assert_array_equal(maml(xs).numpy(), model(xs).numpy())


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_sgd_learning_rates_get_their_gradient(steps, first_order):
    model = _mlp()
    rng = np.random.default_rng(5)
    meta = MetaSGD(model, lr=0.2, first_order=first_order)
    rates = [rng.uniform(0.1, 0.5, p.shape) for p in model.parameters()]
    for alpha, r in zip(meta.lrs, rates):
        alpha.data[...] = r
    fast_t, outer_t, grads_t = _torch_maml(model, steps, first_order, rates=rates)
    learner, outer = _lamina_adapt(meta, steps)
    assert outer == pytest.approx(outer_t, rel=1e-12)
    for name, expected in zip(NAMES, fast_t):
        assert_close(learner.weights[name].numpy(), expected, 1e-12, f"adapted {name}")
    for name, p, expected in zip(NAMES + [f"lr of {n}" for n in NAMES], model.parameters() + list(meta.lrs),
                                 grads_t):
        assert_close(p.grad, expected, 1e-10, f"meta-gradient of {name}")
    assert list(meta.learning_rates) == NAMES
    assert len(meta.parameters()) == 8


def test_meta_sgd_starts_at_the_given_rate():
    meta = MetaSGD(_mlp(), lr=0.05)
    for name, alpha in meta.learning_rates.items():
        np.testing.assert_array_equal(alpha.numpy(), np.full(dict(meta.module.named_parameters())[name].shape, 0.05))


@pytest.mark.parametrize("adapt_only", ["dense_1", ["dense_1.weight", "dense_1.bias"], "module"])
def test_anil_adapts_the_head_only(adapt_only):
    model = _mlp()
    adapt_only = model[1] if adapt_only == "module" else adapt_only
    maml = MAML(model, lr=LR, adapt_only=adapt_only)
    assert maml.adapted_names == ["dense_1.weight", "dense_1.bias"]
    fast_t, outer_t, grads_t = _torch_maml(model, 2, adapted=(2, 3))
    learner, outer = _lamina_adapt(maml, 2)
    assert outer == pytest.approx(outer_t, rel=1e-12)
    assert learner.weights["dense_1.weight"] is not model[1].weight
    assert_close(learner.weights["dense_1.weight"].numpy(), fast_t[2], 1e-12, "adapted head")
    for name, p, expected in zip(NAMES, model.parameters(), grads_t):
        assert_close(p.grad, expected, 1e-10, f"meta-gradient of {name}")


def test_learners_branch_and_frozen_parameters_are_not_adapted():
    model = _mlp()
    model[0].bias.freeze()
    maml = MAML(model, lr=LR)
    assert "dense.bias" not in maml.adapted_names
    xs, ys, _, _ = _task()
    learner = maml.clone()
    learner.adapt(_loss(learner(xs), ys))
    branch = learner.clone()
    branch.adapt(_loss(branch(xs), ys))
    assert learner.weights["dense.weight"] is not branch.weights["dense.weight"]
    assert np.abs(learner.weights["dense.weight"].numpy() - branch.weights["dense.weight"].numpy()).max() > 0


def test_batch_norm_buffers_are_shared_with_the_module():
    model = nn.Sequential(nn.Dense(5), nn.BatchNorm(), nn.Dense(2))
    model.build((None, 3))
    maml = MAML(model, lr=0.1)
    before = model[1].running_mean.copy()
    learner = maml.clone()
    x = np.random.default_rng(0).standard_normal((8, 3)) + 2.0
    learner.adapt((learner(x) ** 2).mean())
    assert not np.allclose(model[1].running_mean, before)


def test_errors_are_clear():
    model = _mlp()
    maml = MAML(model, lr=LR)
    xs, ys, _, _ = _task()
    with pytest.raises(RuntimeError, match=r"MAML.adapt: adapt a clone \(learner = meta.clone\(\)"):
        maml.adapt(_loss(model(xs), ys))
    learner = maml.clone()
    with pytest.raises(ValueError, match="a loss tensor gives one step, got steps=3"):
        learner.adapt(_loss(learner(xs), ys), steps=3)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        learner.adapt(lambda: _loss(learner(xs), ys), steps=0)
    with pytest.raises(ValueError, match=r"the loss must be a scalar Tensor, got Tensor of shape \(9, 3\)"):
        learner.adapt(learner(xs))
    with pytest.raises(RuntimeError, match="does not depend on the fast weights"):
        learner.adapt(lamina.tensor(1.0))
    head_only = maml.clone()
    head_only.weights["dense_1.weight"] = head_only.weights["dense_1.weight"] * 1.0
    with pytest.raises(RuntimeError, match=r"does not depend on the fast weights \['dense.weight', 'dense.bias'\]"):
        head_only.adapt((head_only.weights["dense_1.weight"] ** 2).sum() + (head_only.weights["dense_1.bias"]).sum())
    tolerant = MAML(model, lr=LR, allow_unused=True).clone()
    tolerant.adapt((tolerant.weights["dense_1.bias"] ** 2).sum())
    assert tolerant.weights["dense.weight"] is model[0].weight
    with pytest.raises(ValueError, match="MAML: Sequential has no weights yet"):
        MAML(nn.Sequential(nn.Dense(2)), lr=0.1)
    with pytest.raises(ValueError, match="MAML: lr must be a positive number, got -1"):
        MAML(model, lr=-1)
    with pytest.raises(ValueError, match=r"adapt_only 'head' selects no trainable parameter of Sequential; "
                                         r"its parameters are \['dense.weight'"):
        MAML(model, lr=0.1, adapt_only="head")
    with pytest.raises(TypeError, match="MetaSGD: expected a Module to wrap, got function"):
        MetaSGD(lambda x: x)
