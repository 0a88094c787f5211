"""Schedule-free SGD, AdamW and RAdam against the paper's three sequences (y, z, x) written here
in torch; the training and evaluation modes; state dicts; the Trainer's calls; learning digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _to_json, initial_arrays, lamina_params, numpy_grads, torch_loss
from test_rprop_lion_lookahead import accuracy, digits_split, mlp

import lamina
from helpers import assert_close
from lamina.optim import AdamW, AdamWScheduleFree, CosineDecay, RAdamScheduleFree, SGDScheduleFree
from lamina.train import Trainer


def torch_schedule_free(kind: str, arrays, groups: list[dict], steps: int):
    """Defazio et al. 2024 with x, y and z kept apart: the gradient at y, the base step on z,
    x the weighted average of the z's, y between them. ``groups``: each a dict of the
    parameter indices (``params``) and its hyperparameters (every one given). Returns the
    (x, y) of every parameter after each step."""
    z = [torch.tensor(a) for a in arrays]
    x = [t.clone() for t in z]
    y = [t.clone() for t in z]
    v = [torch.zeros_like(t) for t in z]
    sums = [{"weights": 0.0, "lr_max": -1.0} for _ in groups]
    trajectory = []
    for k in range(steps):
        t = k + 1
        ys = [yi.clone().requires_grad_(True) for yi in y]
        torch_loss(ys).backward()
        grads = [yi.grad for yi in ys]
        for hp, total in zip(groups, sums):
            beta = hp["momentum"] if kind == "sgd" else hp["betas"][0]
            lr, rectified = hp["lr"], True
            if kind == "radam":
                beta2 = hp["betas"][1]
                rho_inf = 2 / (1 - beta2) - 1
                rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
                rectified = rho > 4
                if rectified:
                    lr *= math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                elif hp["silent_sgd_phase"]:
                    lr = 0.0
            elif t <= hp["warmup_steps"]:
                lr *= t / hp["warmup_steps"]
            total["lr_max"] = max(total["lr_max"], lr)
            weight = t ** hp["r"] * total["lr_max"] ** hp["weight_lr_power"]
            total["weights"] += weight
            c = weight / total["weights"] if total["weights"] > 0 else 0.0
            for j in hp["params"]:
                g = grads[j]
                if kind == "sgd":
                    d = g
                else:
                    v[j] = hp["betas"][1] * v[j] + (1 - hp["betas"][1]) * g * g
                    d = g / ((v[j] / (1 - hp["betas"][1] ** t)).sqrt() + hp["eps"]) if rectified else g
                d = d + hp["weight_decay"] * y[j]
                z[j] = z[j] - lr * d
                x[j] = (1 - c) * x[j] + c * z[j]
                y[j] = (1 - beta) * z[j] + beta * x[j]
        trajectory.append(([a.numpy().copy() for a in x], [a.numpy().copy() for a in y]))
    return trajectory


SGD_DEFAULTS = {"momentum": 0.9, "weight_decay": 0.0, "warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0}
ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "warmup_steps": 0, "r": 0.0,
                 "weight_lr_power": 2.0}
RADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "r": 0.0, "weight_lr_power": 2.0,
                  "silent_sgd_phase": True}

# (kind, class, optimizer keywords, keywords of the second group (parameters 2 and 3))
CASES = {
    "sgd": ("sgd", SGDScheduleFree, {"lr": 0.1}, {}),
    "sgd-groups-decay-warmup": ("sgd", SGDScheduleFree, {"lr": 0.2, "weight_decay": 0.05, "warmup_steps": 4},
                                {"lr": 0.05, "momentum": 0.5, "warmup_steps": 7}),
    "sgd-polynomial-weights": ("sgd", SGDScheduleFree, {"lr": 0.1, "r": 1.5, "weight_lr_power": 1.0,
                                                        "warmup_steps": 3}, {"weight_decay": 0.1}),
    "adamw": ("adamw", AdamWScheduleFree, {}, {}),
    "adamw-groups-decay-warmup": ("adamw", AdamWScheduleFree, {"lr": 0.05, "weight_decay": 0.1, "warmup_steps": 5},
                                  {"lr": 0.01, "betas": (0.7, 0.95), "eps": 0.01, "warmup_steps": 0}),
    "adamw-polynomial-weights": ("adamw", AdamWScheduleFree, {"lr": 0.02, "r": 0.5, "weight_lr_power": 0.0,
                                                              "warmup_steps": 2}, {"weight_decay": 0.2}),
    "radam": ("radam", RAdamScheduleFree, {"lr": 0.02, "betas": (0.9, 0.9)}, {}),
    "radam-sgd-phase-groups": ("radam", RAdamScheduleFree, {"lr": 0.02, "betas": (0.9, 0.9), "weight_decay": 0.1,
                                                            "silent_sgd_phase": False},
                               {"lr": 0.005, "betas": (0.8, 0.95), "r": 1.0}),
}
STEPS = 12


def _groups(kind: str, kwargs: dict, second: dict) -> list[dict]:
    defaults = {"sgd": SGD_DEFAULTS, "adamw": ADAM_DEFAULTS, "radam": RADAM_DEFAULTS}[kind]
    first = {**defaults, "lr": 0.0025, **kwargs}
    return [{**first, "params": [0, 1]}, {**first, **second, "params": [2, 3]}]


def _make(cls, params, kwargs: dict, second: dict):
    return cls([{"params": params[:2]}, {"params": params[2:], **second}], **kwargs)


def _step(opt, params) -> None:
    for p, g in zip(params, numpy_grads([p.data for p in params])):
        p.grad = g
    opt.step()


@pytest.mark.parametrize("case", list(CASES))
def test_follows_the_papers_sequences(case):
    kind, cls, kwargs, second = CASES[case]
    arrays = initial_arrays()
    expected = torch_schedule_free(kind, arrays, _groups(kind, kwargs, second), STEPS)
    params = lamina_params(arrays)
    opt = _make(cls, params, kwargs, second)
    opt.train()
    for step, (xs, ys) in enumerate(expected):
        grads = numpy_grads([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for j, (p, y) in enumerate(zip(params, ys)):
            assert_close(p.data, y, TOL, f"{case} y of parameter {j} at step {step}")
            np.testing.assert_array_equal(p.grad, grads[j])        # the gradient is left as it was
        if step in (4, STEPS - 1):                                  # x to evaluate, then y again
            opt.eval()
            for j, (p, x) in enumerate(zip(params, xs)):
                assert_close(p.data, x, TOL, f"{case} x of parameter {j} at step {step}")
            opt.train()
            for p, y in zip(params, ys):
                np.testing.assert_allclose(p.data, y, rtol=1e-12, atol=1e-14)
    assert not np.allclose(expected[-1][0][0], arrays[0])       # the run did train
    assert [a["k"] for a in opt.averaging] == [STEPS, STEPS]


def test_modes_switch_only_once_and_leave_unstepped_parameters_alone():
    params = lamina_params(initial_arrays())
    opt = SGDScheduleFree(params, lr=0.1)
    assert not opt.train_mode                       # as the package: evaluation mode until train()
    opt.eval()
    opt.train()
    np.testing.assert_array_equal(params[0].data, initial_arrays()[0])
    _step(opt, params)
    _step(opt, params)
    y = [p.data.copy() for p in params]
    opt.train()                                     # already training: no move
    np.testing.assert_array_equal(params[0].data, y[0])
    opt.eval()
    x = [p.data.copy() for p in params]
    opt.eval()
    np.testing.assert_array_equal(params[0].data, x[0])
    z = opt.state[0]["z"]
    np.testing.assert_allclose(0.1 * z + 0.9 * x[0], y[0], rtol=1e-13)   # y = (1 - beta) z + beta x


def test_modes_switch_before_a_lazy_model_has_weights():
    model = mlp()
    opt = AdamWScheduleFree(model)
    opt.train()                                     # the usual loop's first call: nothing to move yet
    model(lamina.tensor(np.ones((2, 64), dtype=np.float32))).sum().backward()
    opt.step()
    opt.eval()
    assert opt.state and not opt.train_mode


def test_step_in_evaluation_mode_is_refused():
    params = lamina_params(initial_arrays())
    opt = AdamWScheduleFree(params)
    for p, g in zip(params, numpy_grads([p.data for p in params])):
        p.grad = g
    with pytest.raises(RuntimeError, match=r"AdamWScheduleFree.step: the optimizer is in evaluation mode.*"
                                           r"optimizer.train\(\)"):
        opt.step()
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match="evaluation mode"):
        opt.step()
    assert opt.averaging[0]["k"] == 1


@pytest.mark.parametrize("case", ["sgd-groups-decay-warmup", "adamw-groups-decay-warmup", "radam-sgd-phase-groups"])
@pytest.mark.parametrize("saved_in", ["train", "eval"])
def test_state_dict_round_trip_continues_identically(case, saved_in):
    _, cls, kwargs, second = CASES[case]
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    opt = _make(cls, straight, kwargs, second)
    opt.train()
    for _ in range(10):
        _step(opt, straight)

    resumed = lamina_params(arrays)
    first = _make(cls, resumed, kwargs, second)
    first.train()
    for _ in range(5):
        _step(first, resumed)
    if saved_in == "eval":
        first.eval()                                # as a checkpoint is best written: the weights hold x
    saved = _to_json(first.state_dict())           # as a JSON checkpoint would come back
    weights = [p.data.copy() for p in resumed]
    assert saved["train_mode"] is (saved_in == "train")
    again = lamina_params(weights)
    fresh = _make(cls, again, {**kwargs, "lr": 0.5}, second)
    fresh.load_state_dict(saved)
    assert fresh.train_mode is (saved_in == "train") and fresh.averaging == first.averaging
    assert fresh.lr == first.lr
    fresh.train()
    for _ in range(5):
        _step(fresh, again)
    tight = 1e-13 if saved_in == "train" else 1e-11    # the trip to x and back rounds
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=tight, atol=tight)


def test_load_state_dict_checks_the_averaging_entries():
    params = lamina_params(initial_arrays())
    opt = SGDScheduleFree(params, lr=0.1)
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="SGDScheduleFree.load_state_dict: 'averaging' must hold one entry per"):
        SGDScheduleFree([{"params": params[:2]}, {"params": params[2:]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="'train_mode' must be True or False"):
        opt.load_state_dict({**saved, "train_mode": None})


@pytest.mark.parametrize("make,words", [
    (lambda ps: SGDScheduleFree(ps, lr=-0.1), ["SGDScheduleFree", "lr", "-0.1"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, momentum=0.0), ["SGDScheduleFree", "momentum", "0"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, momentum=1.0), ["SGDScheduleFree", "momentum", "1.0"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, warmup_steps=2.5), ["SGDScheduleFree", "warmup_steps", "2.5"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, warmup_steps=-1), ["SGDScheduleFree", "warmup_steps", "-1"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, r=-1.0), ["SGDScheduleFree", "r", "-1.0"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, weight_lr_power=float("nan")), ["SGDScheduleFree", "weight_lr_power"]),
    (lambda ps: SGDScheduleFree(ps, lr=0.1, weight_decay=-0.1), ["SGDScheduleFree", "weight_decay", "-0.1"]),
    (lambda ps: AdamWScheduleFree(ps, betas=(0.0, 0.999)), ["AdamWScheduleFree", "beta1", "0"]),
    (lambda ps: AdamWScheduleFree(ps, betas=(0.9, 1.0)), ["AdamWScheduleFree", "beta2", "1.0"]),
    (lambda ps: AdamWScheduleFree(ps, eps=-1.0), ["AdamWScheduleFree", "eps", "-1.0"]),
    (lambda ps: AdamWScheduleFree([{"params": ps, "warmup_steps": True}]), ["AdamWScheduleFree", "warmup_steps"]),
    (lambda ps: RAdamScheduleFree(ps, silent_sgd_phase=1), ["RAdamScheduleFree", "silent_sgd_phase", "1"]),
    (lambda ps: RAdamScheduleFree([{"params": ps, "warmup_steps": 3}]), ["RAdamScheduleFree", "warmup_steps"]),
])
def test_bad_hyperparameters_raise(make, words):
    with pytest.raises(ValueError) as info:
        make(lamina_params(initial_arrays()))
    for word in words:
        assert word in str(info.value)


# -- the Trainer -----------------------------------------------------------------------------

def test_trainer_validates_and_returns_the_average():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    opt = AdamWScheduleFree(model, lr=0.01)
    trainer = Trainer(model, "categorical_cross_entropy", opt, verbose=0)
    history = trainer.fit((xtr[:300], ytr[:300]), val=(xte, yte), epochs=2, batch_size=32, seed=0)
    assert opt.train_mode is False                               # fit returns the model holding x
    at_x = trainer.evaluate((xte, yte))
    assert opt.train_mode is False
    assert at_x["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-6)   # validation saw x too
    x = [p.data.copy() for p in model.parameters()]
    opt.train()
    assert trainer.evaluate((xte, yte))["loss"] == pytest.approx(at_x["loss"], rel=1e-6)  # evaluate uses x...
    assert opt.train_mode is True                                # ...and puts the training mode back
    y = [p.data.copy() for p in model.parameters()]
    assert not np.allclose(x[0], y[0])
    trainer.train_step(xtr[:32], ytr[:32])                       # steps from y
    assert opt.train_mode is True


def test_a_trainer_checkpoint_resumes_the_run(tmp_path):
    """The checkpoint of an epoch's end holds x and the evaluation mode; resuming goes back to
    y and continues as the run that did not stop."""
    xtr, ytr, xte, yte = digits_split()

    def run(epochs: int, resume=None, save=None):
        lamina.manual_seed(0)
        model = mlp()
        trainer = Trainer(model, "categorical_cross_entropy", SGDScheduleFree(model, lr=0.2, warmup_steps=5),
                          verbose=0)
        trainer.fit((xtr[:256], ytr[:256]), val=(xte[:64], yte[:64]), epochs=epochs, batch_size=32, seed=0,
                    resume_from=resume)
        if save is not None:
            trainer.save_checkpoint(save)
        return [p.data for p in model.parameters()]

    straight = run(4)
    run(2, save=tmp_path / "two.safetensors")
    resumed = run(4, resume=tmp_path / "two.safetensors")
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)       # float32, through x and back


# -- learning --------------------------------------------------------------------------------

def _digits_run(opt_factory, schedule_factory=None, epochs: int = 6):
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    opt = opt_factory(model)
    steps = epochs * math.ceil(len(xtr) / 32)
    schedule = schedule_factory(opt, steps) if schedule_factory else None
    trainer = Trainer(model, "categorical_cross_entropy", opt, schedule=schedule, verbose=0)
    trainer.fit((xtr, ytr), epochs=epochs, batch_size=32, seed=0)
    return trainer, model, opt, (xte, yte)


def test_schedule_free_adamw_matches_adamw_with_cosine_on_digits():
    """No schedule, no length of run to choose: the accuracy of AdamW decayed by a cosine to
    zero over the known run, at the same learning rate."""
    trainer, *_ = _digits_run(lambda m: AdamWScheduleFree(m, lr=0.05))
    baseline, *_ = _digits_run(lambda m: AdamW(m, lr=0.05), lambda o, steps: CosineDecay(0.05, steps, optimizer=o))
    xte, yte = digits_split()[2:]
    free, cosine = accuracy(trainer, xte, yte), accuracy(baseline, xte, yte)
    assert free >= 0.95 and free >= cosine - 0.01, (free, cosine)      # 96.9% and 95.8%


def _cost(model, x, y) -> float:
    with lamina.no_grad():
        probabilities = model(lamina.tensor(x)).data
    return float(-np.log(probabilities[np.arange(len(y)), y]).mean())


def test_the_average_x_evaluates_better_than_the_training_point_y():
    """At a large learning rate z jumps about; x averages it out, y keeps a tenth of it."""
    trainer, model, opt, (xte, yte) = _digits_run(lambda m: AdamWScheduleFree(m, lr=0.1))
    xtr, ytr = digits_split()[:2]
    at_x = _cost(model, xte, yte), _cost(model, xtr, ytr)
    opt.train()
    at_y = _cost(model, xte, yte), _cost(model, xtr, ytr)
    assert at_x[0] < 0.8 * at_y[0] and at_x[1] < 0.8 * at_y[1], (at_x, at_y)   # test 0.15 < 0.24, train 0.014 < 0.066
