"""AdaBelief, Adan, AdEMAMix and Sophia-G against their references' updates written here in
torch (float64), step for step; state-dict resumption, parameter groups, hyperparameter
checks, and a short training run of each on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, torch_loss
from test_rprop_lion_lookahead import accuracy, digits_split, mlp

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn
from lamina.optim import AdaBelief, Adan, AdEMAMix, SophiaG
from lamina.train import Trainer

# -- references: one step of each update rule on torch tensors ------------------------------


def adabelief_reference(p, g, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
                        weight_decouple=True, fixed_decay=False, rectify=False, degenerated_to_sgd=True):
    beta1, beta2 = betas
    if not state:
        state.update(step=0, m=torch.zeros_like(p), s=torch.zeros_like(p), s_max=torch.zeros_like(p))
    state["step"] += 1
    t = state["step"]
    if weight_decouple:
        p.mul_(1 - (weight_decay if fixed_decay else lr * weight_decay))
    else:
        g = g + weight_decay * p
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    state["s"] = beta2 * state["s"] + (1 - beta2) * (g - state["m"]) ** 2 + eps
    s = state["s"]
    if amsgrad:
        state["s_max"] = torch.maximum(state["s_max"], s)
        s = state["s_max"]
    if rectify:
        adabelief_rectified_reference(p, state, t, lr, beta1, beta2, eps, degenerated_to_sgd)
        return
    denom = s.sqrt() / math.sqrt(1 - beta2**t) + eps
    p.sub_(lr / (1 - beta1**t) * state["m"] / denom)


def adabelief_rectified_reference(p, state, t, lr, beta1, beta2, eps, degenerated_to_sgd):
    """RAdam's rectified step as adabelief-pytorch 0.2 takes it: rectified Adam from
    rho_t >= 5 on (with the variance s, never its running maximum), SGD with momentum or
    no step before."""
    rho_max = 2 / (1 - beta2) - 1
    rho = rho_max - 2 * t * beta2**t / (1 - beta2**t)
    state.setdefault("rhos", []).append(rho)
    if rho >= 5:
        r = math.sqrt((rho - 4) / (rho_max - 4) * (rho - 2) / rho * rho_max / (rho_max - 2))
        p.sub_(lr * r * math.sqrt(1 - beta2**t) / (1 - beta1**t) * state["m"] / (state["s"].sqrt() + eps))
    elif degenerated_to_sgd:
        p.sub_(lr / (1 - beta1**t) * state["m"])


def adan_reference(p, g, state, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False):
    beta1, beta2, beta3 = betas
    if not state:
        state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p), n=torch.zeros_like(p), prev=g.clone())
    state["step"] += 1
    t = state["step"]
    diff = g - state["prev"]
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    state["v"] = beta2 * state["v"] + (1 - beta2) * diff
    state["n"] = beta3 * state["n"] + (1 - beta3) * (g + beta2 * diff) ** 2
    denom = state["n"].sqrt() / math.sqrt(1 - beta3**t) + eps
    u = (state["m"] / (1 - beta1**t) + beta2 * state["v"] / (1 - beta2**t)) / denom
    if no_prox:
        p.mul_(1 - lr * weight_decay).sub_(lr * u)
    else:
        p.sub_(lr * u).div_(1 + lr * weight_decay)
    state["prev"] = g.clone()


def ademamix_reference(p, g, state, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, alpha_warmup=None,
                       beta3_warmup=None, eps=1e-8, weight_decay=0.0):
    beta1, beta2, beta3_end = betas
    if not state:
        state.update(step=0, m1=torch.zeros_like(p), m2=torch.zeros_like(p), nu=torch.zeros_like(p))
    state["step"] += 1
    t = state["step"]
    if alpha_warmup is not None and t < alpha_warmup:
        alpha = t / alpha_warmup * alpha
    beta3 = beta3_end
    if beta3_warmup is not None and t < beta3_warmup:
        def half_life(b):
            return math.log(0.5) / math.log(b + 1e-8) - 1
        a = t / beta3_warmup
        beta3 = 0.5 ** (1 / ((1 - a) * half_life(beta1) + a * half_life(beta3_end) + 1))
    state["m1"] = beta1 * state["m1"] + (1 - beta1) * g
    state["m2"] = beta3 * state["m2"] + (1 - beta3) * g
    state["nu"] = beta2 * state["nu"] + (1 - beta2) * g * g
    denom = state["nu"].sqrt() / math.sqrt(1 - beta2**t) + eps
    p.sub_(lr * ((state["m1"] / (1 - beta1**t) + alpha * state["m2"]) / denom + weight_decay * p))


def sophia_reference(p, g, state, lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=0.1, bs=5120):
    beta1 = betas[0]
    if "m" not in state:
        state.update(m=torch.zeros_like(p), h=torch.zeros_like(p))
    p.mul_(1 - lr * weight_decay)
    state["m"] = beta1 * state["m"] + (1 - beta1) * g
    ratio = (state["m"].abs() / (rho * bs * state["h"] + 1e-15)).clamp(max=1)
    state["ratios"] = ratio
    p.sub_(lr * state["m"].sign() * ratio)


def sophia_reference_hessian(p, g, state, betas=(0.965, 0.99), **_):
    if "m" not in state:
        state.update(m=torch.zeros_like(p), h=torch.zeros_like(p))
    state["h"] = betas[1] * state["h"] + (1 - betas[1]) * g * g


HESSIAN_EVERY = 3

CASES = [
    ("adabelief", AdaBelief, adabelief_reference, {"lr": 0.01}),
    ("adabelief-l2-amsgrad", AdaBelief, adabelief_reference,
     {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-4, "weight_decay": 0.05, "amsgrad": True,
      "weight_decouple": False}),
    ("adabelief-fixed-decay", AdaBelief, adabelief_reference,
     {"lr": 0.02, "weight_decay": 0.01, "fixed_decay": True, "eps": 1e-8}),
    ("adabelief-rectify", AdaBelief, adabelief_reference, {"lr": 0.01, "betas": (0.9, 0.99), "rectify": True}),
    ("adabelief-rectify-no-sgd-amsgrad", AdaBelief, adabelief_reference,
     {"lr": 0.02, "betas": (0.8, 0.95), "eps": 1e-8, "weight_decay": 0.05, "amsgrad": True, "rectify": True,
      "degenerated_to_sgd": False}),
    ("adan", Adan, adan_reference, {"lr": 0.01}),
    ("adan-prox", Adan, adan_reference, {"lr": 0.02, "weight_decay": 0.3, "betas": (0.9, 0.8, 0.95), "eps": 1e-3}),
    ("adan-no-prox", Adan, adan_reference, {"lr": 0.02, "weight_decay": 0.3, "no_prox": True}),
    ("ademamix", AdEMAMix, ademamix_reference, {"lr": 0.01}),
    ("ademamix-warmups", AdEMAMix, ademamix_reference,
     {"lr": 0.01, "betas": (0.8, 0.99, 0.999), "alpha": 5.0, "alpha_warmup": 8, "beta3_warmup": 12,
      "weight_decay": 0.1, "eps": 1e-4}),
    ("sophia", SophiaG, sophia_reference, {"lr": 0.01}),
    ("sophia-rho-wd", SophiaG, sophia_reference, {"lr": 0.02, "rho": 0.5, "bs": 200, "weight_decay": 0.2,
                                                   "betas": (0.9, 0.5)}),
]


def _torch_grads(arrays_or_tensors) -> list[torch.Tensor]:
    tp = [torch.tensor(np.asarray(a), requires_grad=True) for a in arrays_or_tensors]
    torch_loss(tp).backward()
    return [p.grad.detach().clone() for p in tp]


def _maybe_update_hessian(opt, step: int, lparams) -> None:
    """Sophia-G's estimate every HESSIAN_EVERY steps, here from the cost's own gradient."""
    if isinstance(opt, SophiaG) and step % HESSIAN_EVERY == 0:
        for p, g in zip(lparams, _torch_grads([p.data for p in lparams])):
            p.grad = g.numpy()
        opt.update_hessian()


@pytest.mark.parametrize("name,ours,reference,kwargs", CASES, ids=[c[0] for c in CASES])
def test_follows_the_reference_step_for_step(name, ours, reference, kwargs):
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy()) for a in arrays]
    tstate = [{} for _ in arrays]
    lparams = lamina_params(arrays)
    opt = ours(lparams, **kwargs)
    clipped = []
    for step in range(16):
        if ours is SophiaG and step % HESSIAN_EVERY == 0:
            for p, g, s in zip(tparams, _torch_grads(tparams), tstate):
                sophia_reference_hessian(p, g, s, **kwargs)
            _maybe_update_hessian(opt, step, lparams)
        grads = _torch_grads(tparams)
        for p, g, s in zip(tparams, grads, tstate):
            reference(p, g, s, **kwargs)
            if "ratios" in s:
                clipped.append(s["ratios"].numpy().ravel())
        for lp, g in zip(lparams, grads):
            lp.grad = g.numpy().copy()
            before = lp.grad.copy()
        opt.step()
        np.testing.assert_array_equal(lparams[-1].grad, before)   # the gradient is never written
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.numpy(), TOL, f"{name} step {step} parameter {k}")
    if clipped:   # both regimes of Sophia's clip were exercised
        ratios = np.concatenate(clipped)
        assert (ratios == 1).any() and (ratios < 0.999).any()
    if kwargs.get("rectify"):   # both regimes of the rectification, and a rho_t in (4, 5)
        rhos = np.array(tstate[0]["rhos"])
        assert (rhos <= 4).any() and ((rhos > 4) & (rhos < 5)).any() and (rhos >= 5).any()


def _run_with_hessian(opt, params, steps: int, start: int = 0) -> None:
    for step in range(start, start + steps):
        _maybe_update_hessian(opt, step, params)
        _run(opt, params, 1)


@pytest.mark.parametrize("name,ours,reference,kwargs", CASES[1::2], ids=[c[0] for c in CASES[1::2]])
def test_state_dict_resumes_exactly(name, ours, reference, kwargs):
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run_with_hessian(ours(straight, **kwargs), straight, 12)
    again = lamina_params(arrays)
    first = ours(again, **kwargs)
    _run_with_hessian(first, again, 7)
    fresh = ours(again, lr=0.5)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == kwargs["lr"]
    _run_with_hessian(fresh, again, 5, start=7)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)


def _step_together(optimizers, params, steps: int) -> None:
    """Steps of several optimizers that share one cost over ``params``."""
    for step in range(steps):
        for opt in optimizers:
            _maybe_update_hessian(opt, step, params)
        for p, g in zip(params, _torch_grads([p.data for p in params])):
            p.grad = g.numpy()
        for opt in optimizers:
            opt.step()


@pytest.mark.parametrize("ours", [AdaBelief, Adan, AdEMAMix, SophiaG])
def test_parameter_groups_take_their_own_learning_rate(ours):
    arrays = initial_arrays(3)
    alone = lamina_params(arrays)
    _step_together([ours(alone[:2], lr=0.01), ours(alone[2:], lr=0.003)], alone, 6)
    grouped = lamina_params(arrays)
    opt = ours([{"params": grouped[:2]}, {"params": grouped[2:], "lr": 0.003}], lr=0.01)
    _step_together([opt], grouped, 6)
    for a, b in zip(alone, grouped):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-12, atol=1e-15)
    assert not np.allclose(grouped[0].data, arrays[0])


def test_sophia_step_batch_size_overrides_the_default():
    arrays = initial_arrays(4)
    by_default, by_call = lamina_params(arrays), lamina_params(arrays)
    a, b = SophiaG(by_default, lr=0.01, bs=3), SophiaG(by_call, lr=0.01)
    for opt, params, bs in ((a, by_default, None), (b, by_call, 3)):
        for step in range(4):
            _maybe_update_hessian(opt, step, params)
            for p, g in zip(params, _torch_grads([p.data for p in params])):
                p.grad = g.numpy()
            opt.step(bs=bs)
    for x, y in zip(by_default, by_call):
        np.testing.assert_array_equal(x.data, y.data)
    assert b.param_groups[0]["bs"] == 5120


BAD = [
    (AdaBelief, {"lr": -1.0}, "lr"),
    (AdaBelief, {"betas": (0.9, 1.0)}, "beta2"),
    (AdaBelief, {"eps": -1e-8}, "eps"),
    (AdaBelief, {"amsgrad": 1}, "amsgrad"),
    (AdaBelief, {"rectify": "yes"}, "rectify"),
    (AdaBelief, {"degenerated_to_sgd": None}, "degenerated_to_sgd"),
    (Adan, {"betas": (0.9, 0.9)}, "triple"),
    (Adan, {"betas": (0.98, -0.1, 0.99)}, "beta2"),
    (Adan, {"betas": (0.98, 0.92, 1.5)}, "beta3"),
    (Adan, {"weight_decay": -0.1}, "weight_decay"),
    (AdEMAMix, {"betas": (1.0, 0.999, 0.9999)}, "beta1"),
    (AdEMAMix, {"alpha": -2.0}, "alpha"),
    (AdEMAMix, {"alpha_warmup": 0}, "alpha_warmup"),
    (AdEMAMix, {"beta3_warmup": 2.5}, "beta3_warmup"),
    (SophiaG, {"rho": -0.1}, "rho"),
    (SophiaG, {"betas": (0.965, 1.0)}, "beta2"),
    (SophiaG, {"bs": 0}, "bs"),
    (SophiaG, {"lr": float("nan")}, "lr"),
]


@pytest.mark.parametrize("ours,kwargs,word", BAD, ids=[f"{c[0].__name__}-{c[2]}" for c in BAD])
def test_invalid_hyperparameters_are_refused_by_name(ours, kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        ours(lamina_params(initial_arrays()), **kwargs)
    assert ours.__name__ in str(info.value)


TRAINING = [
    (AdaBelief, {"lr": 3e-3}),
    (Adan, {"lr": 1e-2}),
    (AdEMAMix, {"lr": 3e-3, "alpha_warmup": 200, "beta3_warmup": 200}),
]


@pytest.mark.parametrize("ours,kwargs", TRAINING, ids=[c[0].__name__ for c in TRAINING])
def test_trains_an_mlp_on_digits(ours, kwargs):
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    trainer = Trainer(model, "categorical_cross_entropy", ours(model, **kwargs), verbose=0)
    history = trainer.fit((xtr, ytr), epochs=6, batch_size=32, seed=0)
    assert history["loss"][-1] < 0.3           # from about 2.3 at chance
    assert accuracy(trainer, xte, yte) >= 0.9


def test_sophia_trains_an_mlp_on_digits_with_sampled_label_hessians():
    """The reference's loop: a step per mini-batch and, every k steps, a Gauss-Newton-Bartlett
    estimate from labels drawn from the model's own predicted distribution."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = digits_split()
    model = nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(10))
    model.build((None, xtr.shape[1]))
    batch = 32
    opt = SophiaG(model, lr=3e-3, rho=0.05, weight_decay=0.0, bs=batch)
    step = 0
    for _ in range(6):
        order = rng.permutation(len(xtr))
        for start in range(0, len(order) - batch + 1, batch):
            x, y = xtr[order[start:start + batch]], ytr[order[start:start + batch]]
            opt.zero_grad()
            F.categorical_cross_entropy(model(x), y, from_logits=True).backward()
            opt.step(bs=batch)
            step += 1
            if step % 10 == 0:
                logits = model(x).data
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                sampled = np.array([rng.choice(10, p=row) for row in probs])
                opt.zero_grad()
                F.categorical_cross_entropy(model(x), sampled, from_logits=True).backward()
                opt.update_hessian()
    test_accuracy = float((model(xte).data.argmax(axis=1) == yte).mean())
    assert all(state["hessian"].max() > 0 for state in opt.state.values())
    assert test_accuracy >= 0.9
