"""SAM and ASAM: a step against the formula computed with torch, the hand-loop API against
step(closure), training on digits through the Trainer, batch norm's running statistics under
the second pass, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.data import ArrayDataset, DataLoader, load_digits, train_val_test_split
from lamina.nn import Parameter
from lamina.optim import LBFGS, SGD, Adam, Lookahead
from lamina.optim.sam import SAM
from lamina.train import Trainer

RNG = np.random.default_rng(7)
X = RNG.standard_normal((8, 4))
Y = RNG.standard_normal((8, 3))


# -- a small float64 regression model, in lamina and in torch -------------------------------

def small_model(seed: int) -> nn.Sequential:
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(5, activation="tanh"), nn.Dense(3))
    model.build((None, 4))
    return model.to(np.float64)


def lamina_cost(model):
    out = model(lamina.tensor(X, dtype=np.float64))
    return ((out - lamina.tensor(Y, dtype=np.float64)) ** 2).mean()


def torch_cost(weights):
    w1, b1, w2, b2 = weights
    out = torch.tanh(torch.from_numpy(X) @ w1 + b1) @ w2 + b2
    return ((out - torch.from_numpy(Y)) ** 2).mean()


def torch_sam(arrays, steps: int, rho: float, adaptive: bool, lr: float) -> list[np.ndarray]:
    """SAM / ASAM written out in torch: e_w = rho T^2 g / (||T g|| + 1e-12) with T = |w| (ASAM)
    or 1 (SAM), the gradient at w + e_w, then torch's SGD with momentum 0.9 on it from w."""
    weights = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = torch.optim.SGD(weights, lr=lr, momentum=0.9)
    for _ in range(steps):
        grads = torch.autograd.grad(torch_cost(weights), weights)
        with torch.no_grad():
            scales = [w.abs() if adaptive else torch.ones_like(w) for w in weights]
            norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(scales, grads)))
            perturbed = [(w + rho * t * t * g / (norm + 1e-12)).requires_grad_() for w, t, g in
                         zip(weights, scales, grads)]
        for w, g in zip(weights, torch.autograd.grad(torch_cost(perturbed), perturbed)):
            w.grad = g
        opt.step()
    return [w.detach().numpy() for w in weights]


def closure_for(opt, model, calls: list | None = None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        cost = lamina_cost(model)
        cost.backward()
        return cost.item()

    return closure


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_the_formula_computed_with_torch(adaptive):
    """Two steps (the second uses the momentum buffer): the weights equal the torch reference; a
    parameter the cost does not use (grad None) is not moved."""
    model = small_model(0)
    arrays = [p.data.copy() for p in model.parameters()]
    unused = Parameter(np.ones(3), dtype=np.float64)
    rho = 0.5 if adaptive else 0.05           # ASAM's radius is relative to |w|
    opt = SAM(SGD(model.parameters() + [unused], lr=0.1, momentum=0.9), rho=rho, adaptive=adaptive)
    for _ in range(2):
        opt.zero_grad()
        lamina_cost(model).backward()
        opt.step(closure_for(opt, model))
    expected = torch_sam(arrays, 2, rho, adaptive, lr=0.1)
    for k, (p, w) in enumerate(zip(model.parameters(), expected)):
        assert_close(p.data, w, 1e-10, f"SAM adaptive={adaptive} parameter {k}")
    plain = torch_sam(arrays, 2, 1e-300, adaptive, lr=0.1)   # no perturbation: plain SGD, far off
    assert max(np.abs(p.data - w).max() for p, w in zip(model.parameters(), plain)) > 1e-4
    np.testing.assert_array_equal(unused.data, np.ones(3))
    assert opt.step_count == 2


@pytest.mark.parametrize("adaptive", [False, True])
def test_first_and_second_step_equal_step_with_a_closure(adaptive):
    by_closure, by_hand = small_model(1), small_model(1)
    opt_closure = SAM(Adam(by_closure, lr=0.01), rho=0.1, adaptive=adaptive)
    opt_hand = SAM(Adam(by_hand, lr=0.01), rho=0.1, adaptive=adaptive)
    calls = []
    for _ in range(3):
        opt_closure.zero_grad()
        at_w = lamina_cost(by_closure).item()
        lamina_cost(by_closure).backward()
        perturbed_cost = opt_closure.step(closure_for(opt_closure, by_closure, calls))
        assert perturbed_cost > at_w               # the climb found a higher cost nearby

        lamina_cost(by_hand).backward()
        opt_hand.first_step(zero_grad=True)
        assert lamina_cost(by_hand).item() == perturbed_cost
        lamina_cost(by_hand).backward()
        opt_hand.second_step(zero_grad=True)
        assert all(p.grad is None for p in by_hand.parameters())
    assert len(calls) == 3                         # one gradient evaluation per step besides the caller's
    for a, b in zip(by_closure.parameters(), by_hand.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_round_trip_and_learning_rate():
    model = small_model(2)
    opt = SAM(SGD(model, lr=0.1, momentum=0.9), rho=0.2, adaptive=True)
    opt.zero_grad()
    lamina_cost(model).backward()
    opt.step(closure_for(opt, model))
    saved = json.loads(json.dumps(opt.state_dict(), default=lambda a: a.tolist()))
    fresh = SAM(SGD(small_model(2), lr=0.5), rho=0.01)
    fresh.load_state_dict(saved)
    assert (fresh.rho, fresh.adaptive, fresh.lr) == (0.2, True, 0.1)
    np.testing.assert_array_equal(fresh.optimizer.state[0]["momentum_buffer"],
                                  opt.optimizer.state[0]["momentum_buffer"])
    fresh.lr = 0.03
    assert fresh.optimizer.param_groups[0]["lr"] == 0.03 and fresh.param_groups is fresh.optimizer.param_groups


# -- with the Trainer --------------------------------------------------------------------------

def digits_split():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def mlp(seed: int) -> nn.Sequential:
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10), nn.Softmax())
    model.build((None, 64))
    return model


def test_trainer_epoch_equals_a_hand_loop_with_the_same_batches():
    xtr, ytr, _, _ = digits_split()
    x, y = xtr[:320], ytr[:320]
    fitted, by_hand = mlp(3), mlp(3)
    Trainer(fitted, "categorical_cross_entropy", SAM(SGD(fitted, lr=0.1, momentum=0.9)), verbose=0).fit(
        (x, y), epochs=1, batch_size=32, seed=5)

    opt = SAM(SGD(by_hand, lr=0.1, momentum=0.9))

    def cost(xb, yb):
        return F.categorical_cross_entropy(by_hand[:-1](lamina.tensor(xb)), yb, from_logits=True)

    for xb, yb in DataLoader(ArrayDataset(x, y), batch_size=32, shuffle=True, seed=5):
        opt.zero_grad()
        cost(xb, yb).backward()
        opt.first_step(zero_grad=True)
        cost(xb, yb).backward()
        opt.second_step()
    assert opt.step_count == 10
    for a, b in zip(fitted.parameters(), by_hand.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-7)


def test_sam_trains_an_mlp_on_digits():
    xtr, ytr, xte, yte = digits_split()
    model = mlp(0)
    opt = SAM(SGD(model, lr=0.05, momentum=0.9), rho=0.05)
    trainer = Trainer(model, "categorical_cross_entropy", opt, verbose=0)
    history = trainer.fit((xtr, ytr), epochs=10, batch_size=32, seed=0)
    assert history["loss"][-1] < 0.15                # from ln 10 = 2.3 at chance
    accuracy = float((trainer.predict(xte).argmax(axis=1) == yte).mean())
    assert accuracy > 0.93                           # 0.95 to 0.97 over seeds 0-3


# -- batch norm under the second pass ----------------------------------------------------------

def bn_model(seed: int) -> nn.Sequential:
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(16), nn.BatchNorm(), nn.ReLU(), nn.Dense(10), nn.Softmax())
    model.build((None, 64))
    return model


def running_stats(model) -> tuple[np.ndarray, np.ndarray]:
    return model[1].running_mean.copy(), model[1].running_var.copy()


@pytest.mark.parametrize("how", ["train_step", "fit_accumulate"])
def test_batch_norm_statistics_move_once_per_step(how):
    """After one step the running statistics are the plain optimizer's (the first pass's
    batch, at w); a hand loop whose second pass updates them too ends elsewhere with the same
    weights, so the comparison would catch a second update."""
    xtr, ytr, _, _ = digits_split()
    x, y = xtr[:64], ytr[:64]
    models = {name: bn_model(4) for name in ("plain", "sam", "hand")}
    start = running_stats(models["sam"])
    optimizers = {"plain": SGD(models["plain"], lr=0.1), "sam": SAM(SGD(models["sam"], lr=0.1), rho=0.5)}
    for name, opt in optimizers.items():
        trainer = Trainer(models[name], "categorical_cross_entropy", opt, verbose=0, accumulate=2)
        if how == "train_step":
            models[name].train()
            trainer.train_step(x, y)
        else:   # two mini-batches of 32 in one accumulation group: one optimizer step
            trainer.fit((x, y), epochs=1, batch_size=32, shuffle=False)
        assert opt.step_count == 1

    hand, opt = models["hand"], SAM(SGD(models["hand"], lr=0.1), rho=0.5)
    hand.train()
    batches = [(x, y)] if how == "train_step" else [(x[:32], y[:32]), (x[32:], y[32:])]
    for pass_ in ("at w", "at w + e_w"):
        opt.zero_grad()
        for xb, yb in batches:
            cost = F.categorical_cross_entropy(hand[:-1](lamina.tensor(xb)), yb, from_logits=True)
            cost.backward(np.full_like(cost.data, len(xb) / len(x)))
        if pass_ == "at w":
            opt.first_step()
    opt.second_step()

    for a, b in zip(models["sam"].parameters(), hand.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-7)
    sam_mean, sam_var = running_stats(models["sam"])
    plain_mean, plain_var = running_stats(models["plain"])
    np.testing.assert_array_equal(sam_mean, plain_mean)
    np.testing.assert_array_equal(sam_var, plain_var)
    assert not np.allclose(sam_mean, start[0])                             # they did move, once
    assert np.abs(running_stats(hand)[0] - sam_mean).max() > 1e-3          # twice is visibly elsewhere


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"rho": 0.0}, r"SAM: invalid rho 0.0 \(must be a positive finite number"),
    ({"rho": -0.1}, r"SAM: invalid rho -0.1"),
    ({"rho": float("nan")}, r"SAM: invalid rho nan"),
    ({"rho": True}, r"SAM: invalid rho True"),
    ({"adaptive": "yes"}, r"SAM: invalid adaptive 'yes' \(must be True or False\)"),
])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAM(SGD(small_model(0), lr=0.1), **kwargs)


def test_only_first_order_lamina_optimizers_are_wrapped():
    model = small_model(0)
    with pytest.raises(TypeError, match="SAM: optimizer must be a lamina optimizer .* got SGD"):
        SAM(torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1))
    with pytest.raises(TypeError, match="got SAM"):
        SAM(SAM(SGD(model, lr=0.1)))
    with pytest.raises(TypeError, match="got Lookahead"):
        SAM(Lookahead(SGD(model, lr=0.1)))
    with pytest.raises(TypeError, match="SAM: cannot wrap LBFGS"):
        SAM(LBFGS(model.parameters()))


def test_misuse_of_the_steps_is_refused_and_leaves_the_weights():
    model = small_model(0)
    before = [p.data.copy() for p in model.parameters()]
    opt = SAM(SGD(model, lr=0.1))
    with pytest.raises(RuntimeError, match="SAM.first_step: no trainable parameter has a gradient"):
        opt.first_step()
    lamina_cost(model).backward()
    with pytest.raises(TypeError, match=r"SAM.step: a closure is required: a function that zeroes the gradients, "
                                        r"recomputes the cost .* calls backward\(\) and returns the cost"):
        opt.step()
    with pytest.raises(RuntimeError, match="SAM.second_step: the weights are not perturbed"):
        opt.second_step()

    def failing():
        raise FloatingPointError("cost diverged")

    with pytest.raises(FloatingPointError):
        opt.step(failing)
    for p, w in zip(model.parameters(), before):     # back at w, no step taken
        np.testing.assert_array_equal(p.data, w)
    assert opt.step_count == 0
    opt.first_step()
    with pytest.raises(RuntimeError, match="SAM.first_step: the weights are already perturbed"):
        opt.first_step()
    with pytest.raises(ValueError, match="SAM.load_state_dict: the state dict is from a SGD optimizer, not SAM"):
        opt.load_state_dict(SGD(model, lr=0.1).state_dict())
