"""Rprop against torch.optim.Rprop; Lion and Lookahead against their papers' formulas written
here in NumPy; both Lion and Lookahead train a small MLP on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _step_both, _to_json, initial_arrays, lamina_params, numpy_grads

import lamina
from helpers import assert_close
from lamina import nn
from lamina.data import load_digits, train_val_test_split
from lamina.nn import Parameter
from lamina.optim import SGD, Adam, CosineDecay, StepDecay
from lamina.optim.lion import Lion
from lamina.optim.lookahead import Lookahead
from lamina.optim.rprop import Rprop
from lamina.train import Trainer

# -- Rprop -------------------------------------------------------------------------------

RPROP_CASES = {
    "defaults": {},
    "fast": {"lr": 0.05, "etas": (0.3, 1.5)},
    "clamped": {"lr": 0.01, "etas": (0.5, 2.0), "step_sizes": (5e-3, 0.04)},   # both bounds are hit
}


@pytest.mark.parametrize("case", list(RPROP_CASES))
def test_rprop_matches_torch_step_for_step(case):
    kwargs = RPROP_CASES[case]
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt, lopt = torch.optim.Rprop(tparams, **kwargs), Rprop(lparams, **kwargs)
    for step in range(20):
        _step_both(topt, lopt, tparams, lparams)
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.detach().numpy(), TOL, f"Rprop {case} step {step} parameter {k}")
    for k, tp in enumerate(tparams):
        assert_close(lopt.state[k]["step_size"], topt.state[tp]["step_size"].numpy(), TOL, f"step sizes {k}")
        assert_close(lopt.state[k]["prev"], topt.state[tp]["prev"].numpy(), TOL, f"previous gradient {k}")
    if case == "clamped":
        sizes = np.concatenate([s["step_size"].ravel() for s in lopt.state.values()])
        assert sizes.min() == 5e-3 and sizes.max() == 0.04


def test_rprop_sign_rule_on_one_weight():
    """Same sign: the step grows by eta_plus; a flip: the step shrinks, the weight stays, and the
    next step is taken at the shrunk size whatever the signs."""
    w = Parameter(np.array([0.0]), dtype=np.float64)
    opt = Rprop([w], lr=0.1, etas=(0.5, 2.0))
    positions = []
    for g in [3.0, 0.01, -5.0, -1.0, -1.0]:
        w.grad = np.array([g])
        opt.step()
        positions.append(float(w.data[0]))
    # steps: -0.1 (first), -0.2 (grown), 0 (flip: size 0.1, no move), +0.1 (after a flip), +0.2
    np.testing.assert_allclose(positions, [-0.1, -0.3, -0.3, -0.2, 0.0], atol=1e-15)


def test_rprop_state_dict_round_trip_and_defaults():
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(Rprop(straight, lr=0.02), straight, 12)
    again = lamina_params(arrays)
    first = Rprop(again, lr=0.02)
    _run(first, again, 6)
    fresh = Rprop(again, lr=0.5)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == 0.02 and fresh.state[0]["step"] == 6
    _run(fresh, again, 6)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13)
    tdefaults = torch.optim.Rprop([torch.zeros(1, requires_grad=True)]).defaults
    for key, value in Rprop(again).defaults.items():
        if key != "weight_decay":
            assert tdefaults[key] == value, key


def test_rprop_float32_stays_float32():
    p = Parameter(np.ones(4, dtype=np.float32))
    opt = Rprop([p])
    for g in (0.5, 0.5, -0.5):
        p.grad = np.full(4, g, dtype=np.float32)
        opt.step()
    assert p.data.dtype == opt.state[0]["step_size"].dtype == np.float32
    np.testing.assert_allclose(p.data, 1.0 - 0.01 - 0.012, rtol=1e-6)


# -- Lion --------------------------------------------------------------------------------

def numpy_lion(arrays, steps: int, lr: float, betas, weight_decay: float) -> list[np.ndarray]:
    """Chen et al. 2023, Algorithm 2, on the tiny MLP's gradients."""
    beta1, beta2 = betas
    w = [a.copy() for a in arrays]
    m = [np.zeros_like(a) for a in arrays]
    for _ in range(steps):
        grads = numpy_grads(w)
        for k, g in enumerate(grads):
            update = np.sign(beta1 * m[k] + (1 - beta1) * g)
            w[k] = w[k] - lr * (update + weight_decay * w[k])
            m[k] = beta2 * m[k] + (1 - beta2) * g
    return w


@pytest.mark.parametrize("kwargs", [{"lr": 0.01}, {"lr": 0.02, "betas": (0.8, 0.95), "weight_decay": 0.5},
                                    {"lr": 0.01, "betas": (0.0, 0.5)}], ids=["plain", "decay", "no-momentum"])
def test_lion_follows_the_formula(kwargs):
    arrays = initial_arrays()
    params = lamina_params(arrays)
    opt = Lion(params, **kwargs)
    _run(opt, params, 20)
    expected = numpy_lion(arrays, 20, kwargs["lr"], kwargs.get("betas", (0.9, 0.99)), kwargs.get("weight_decay", 0.0))
    for k, (p, w) in enumerate(zip(params, expected)):
        assert_close(p.data, w, TOL, f"Lion parameter {k}")
        assert not np.allclose(p.data, arrays[k])


def test_lion_moves_every_weight_by_lr():
    """Without decay each coordinate moves by exactly lr (or 0 where c = 0), whatever |g|."""
    p = Parameter(np.zeros(4), dtype=np.float64)
    opt = Lion([p], lr=0.003)
    p.grad = np.array([1e-6, -50.0, 0.0, 3.0])
    opt.step()
    np.testing.assert_array_equal(p.data, [-0.003, 0.003, 0.0, -0.003])
    np.testing.assert_allclose(opt.state[0]["exp_avg"], 0.01 * p.grad, rtol=1e-15)


def test_lion_state_dict_round_trip():
    arrays = initial_arrays(3)
    straight = lamina_params(arrays)
    _run(Lion(straight, lr=0.01, weight_decay=0.1), straight, 10)
    again = lamina_params(arrays)
    first = Lion(again, lr=0.01, weight_decay=0.1)
    _run(first, again, 5)
    fresh = Lion(again)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.param_groups[0]["weight_decay"] == 0.1 and fresh.lr == 0.01
    _run(fresh, again, 5)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13)


def digits_split():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(10), nn.Softmax())


def accuracy(trainer: Trainer, x, y) -> float:
    return float((trainer.predict(x).argmax(axis=1) == y).mean())


def test_lion_trains_an_mlp_on_digits():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    trainer = Trainer(model, "categorical_cross_entropy", Lion(model, lr=3e-3), verbose=0)
    history = trainer.fit((xtr, ytr), epochs=10, batch_size=32, seed=0)
    assert history["loss"][-1] < 0.15            # from about 2 (ln 10 = 2.3 at chance)
    assert accuracy(trainer, xte, yte) >= 0.9


# -- Lookahead ---------------------------------------------------------------------------

def numpy_lookahead_sgd(arrays, steps: int, lrs, k: int, alpha: float, momentum: float) -> list[np.ndarray]:
    """Zhang et al. 2019, Algorithm 1, with SGD (torch's momentum form) as the inner optimizer."""
    fast = [a.copy() for a in arrays]
    slow = [a.copy() for a in arrays]
    velocity = [None] * len(arrays)
    for t in range(1, steps + 1):
        for j, g in enumerate(numpy_grads(fast)):
            velocity[j] = g if velocity[j] is None else momentum * velocity[j] + g
            fast[j] = fast[j] - lrs[t - 1] * (velocity[j] if momentum else g)
        if t % k == 0:
            slow = [s + alpha * (f - s) for s, f in zip(slow, fast)]
            fast = [s.copy() for s in slow]
    return fast


@pytest.mark.parametrize("k,alpha,momentum", [(5, 0.5, 0.0), (3, 0.8, 0.9), (4, 1.0, 0.0)])
def test_lookahead_follows_the_formula(k, alpha, momentum):
    arrays = initial_arrays()
    params = lamina_params(arrays)
    opt = Lookahead(SGD(params, lr=0.1, momentum=momentum), k=k, alpha=alpha)
    _run(opt, params, 12)
    expected = numpy_lookahead_sgd(arrays, 12, [0.1] * 12, k, alpha, momentum)
    for j, (p, w) in enumerate(zip(params, expected)):
        assert_close(p.data, w, TOL, f"Lookahead k={k} alpha={alpha} parameter {j}")
    assert opt.step_count == 12 and opt.optimizer.step_count == 12


def test_alpha_one_is_the_inner_optimizer():
    arrays = initial_arrays(4)
    wrapped, plain = lamina_params(arrays), lamina_params(arrays)
    _run(Lookahead(Adam(wrapped, lr=0.01), k=3, alpha=1.0), wrapped, 10)
    _run(Adam(plain, lr=0.01), plain, 10)
    for a, b in zip(wrapped, plain):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-14)


def test_a_schedule_drives_the_inner_learning_rate():
    """StepDecay halves lr every 4 steps through Lookahead.lr; the trajectory is the NumPy one
    with those learning rates."""
    arrays = initial_arrays(5)
    params = lamina_params(arrays)
    inner = SGD(params, lr=1.0)
    opt = Lookahead(inner, k=5, alpha=0.5)
    schedule = StepDecay(0.2, step_size=4, gamma=0.5, optimizer=opt)
    used = []
    for _ in range(12):
        used.append(inner.param_groups[0]["lr"])
        _run(opt, params, 1)
        schedule.step()
    assert used == [0.2] * 4 + [0.1] * 4 + [0.05] * 4
    assert opt.lr == inner.lr == pytest.approx(0.025) and opt.param_groups is inner.param_groups
    expected = numpy_lookahead_sgd(arrays, 12, used, 5, 0.5, 0.0)
    for j, (p, w) in enumerate(zip(params, expected)):
        assert_close(p.data, w, TOL, f"scheduled Lookahead parameter {j}")


def test_lookahead_state_dict_round_trip():
    """Saved between two slow steps (7 of k=5): the resumed run syncs at step 10 from the saved
    slow weights and inner momentum."""
    arrays = initial_arrays(6)
    straight = lamina_params(arrays)
    _run(Lookahead(SGD(straight, lr=0.05, momentum=0.9), k=5), straight, 12)
    again = lamina_params(arrays)
    first = Lookahead(SGD(again, lr=0.05, momentum=0.9), k=5)
    _run(first, again, 7)
    snapshot = _to_json(first.state_dict())
    assert snapshot["step_count"] == 7 and set(snapshot["slow_weights"]) == {"0", "1", "2", "3"}
    fresh = Lookahead(SGD(again, lr=0.5), k=2, alpha=0.9)
    fresh.load_state_dict(snapshot)
    assert (fresh.k, fresh.alpha, fresh.lr) == (5, 0.5, 0.05)
    _run(fresh, again, 5)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13)


def test_lookahead_load_checks_before_changing_anything():
    params = lamina_params(initial_arrays())
    opt = Lookahead(SGD(params, lr=0.1))
    _run(opt, params, 2)
    saved = opt.state_dict()
    other = Lookahead(SGD(lamina_params([np.zeros((3, 3)), np.zeros(4), np.zeros((2, 4)), np.zeros(2)]), lr=0.3))
    with pytest.raises(ValueError, match=r"Lookahead.load_state_dict: the slow weights of parameter 0 have shape "
                                         r"\(4, 3\), the parameter \(3, 3\)"):
        other.load_state_dict(saved)
    assert other.lr == 0.3 and other.step_count == 0
    with pytest.raises(ValueError, match="from a SGD optimizer, not Lookahead"):
        other.load_state_dict(SGD(params, lr=0.1).state_dict())


def test_lookahead_in_the_trainer():
    """Trainer(model, loss, Lookahead(Adam(...))) fits an epoch: one inner step per mini-batch,
    and after the last slow step the weights equal the slow weights."""
    lamina.manual_seed(0)
    xtr, ytr, _, _ = digits_split()
    x, y = xtr[:256], ytr[:256]
    model = mlp()
    opt = Lookahead(Adam(model, lr=3e-3), k=4)
    trainer = Trainer(model, "categorical_cross_entropy", opt, verbose=0)
    before = trainer.evaluate((x, y))["loss"]
    trainer.fit((x, y), epochs=1, batch_size=32, seed=0)
    assert opt.step_count == trainer.steps == 8
    for i, p in enumerate(model.parameters()):
        np.testing.assert_array_equal(p.data, opt.slow_weights[i])
    assert trainer.evaluate((x, y))["loss"] < before


def test_lookahead_trains_an_mlp_on_digits_with_a_cosine_schedule():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    opt = Lookahead(Adam(model, lr=1e-2), k=5, alpha=0.5)
    steps_per_epoch = -(-len(xtr) // 32)
    schedule = CosineDecay(1e-2, total_steps=10 * steps_per_epoch, optimizer=opt)
    trainer = Trainer(model, "categorical_cross_entropy", opt, schedule=schedule, verbose=0)
    history = trainer.fit((xtr, ytr), epochs=10, batch_size=32, seed=0)
    assert opt.optimizer.lr < 1e-4               # the schedule reached the inner optimizer
    assert history["loss"][-1] < 0.3
    assert accuracy(trainer, xte, yte) >= 0.9


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda ps: Rprop(ps, lr=-0.1), r"Rprop: invalid lr -0.1"),
    (lambda ps: Rprop(ps, etas=(1.5, 1.2)), r"Rprop: invalid etas \(1.5, 1.2\) \(must be 0 < eta_minus < 1 < eta_plus"),
    (lambda ps: Rprop(ps, etas=(0.5, 0.9)), r"Rprop: invalid etas \(0.5, 0.9\)"),
    (lambda ps: Rprop(ps, etas=0.5), r"Rprop: invalid etas 0.5 \(must be a pair"),
    (lambda ps: Rprop(ps, step_sizes=(1.0, 0.1)), r"Rprop: invalid step_sizes \(1.0, 0.1\) \(must be step_min <="),
    (lambda ps: Rprop(ps, step_sizes=(-1.0, 1.0)), r"Rprop: invalid step_min -1.0"),
    (lambda ps: Rprop([{"params": ps, "weight_decay": 0.1}]), r"Rprop: weight_decay is not supported"),
    (lambda ps: Lion(ps, lr=float("inf")), r"Lion: invalid lr inf"),
    (lambda ps: Lion(ps, betas=(0.9, 1.0)), r"Lion: invalid beta2 1.0 \(must be in \[0, 1\)\)"),
    (lambda ps: Lion(ps, betas=(-0.1, 0.99)), r"Lion: invalid beta1 -0.1"),
    (lambda ps: Lion(ps, betas=(0.9,)), r"Lion: invalid betas \(0.9,\) \(must be a pair"),
    (lambda ps: Lion(ps, weight_decay=-1.0), r"Lion: invalid weight_decay -1.0"),
    (lambda ps: Lookahead(SGD(ps, lr=0.1), k=0), r"Lookahead: invalid k 0 \(must be a positive integer"),
    (lambda ps: Lookahead(SGD(ps, lr=0.1), k=2.5), r"Lookahead: invalid k 2.5"),
    (lambda ps: Lookahead(SGD(ps, lr=0.1), alpha=0.0), r"Lookahead: invalid alpha 0.0 \(must be in \(0, 1\]\)"),
    (lambda ps: Lookahead(SGD(ps, lr=0.1), alpha=1.5), r"Lookahead: invalid alpha 1.5"),
])
def test_bad_hyperparameters_name_the_optimizer_and_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make(lamina_params(initial_arrays()))


def test_lookahead_wraps_only_lamina_optimizers():
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match="Lookahead: optimizer must be a lamina optimizer .* got SGD"):
        Lookahead(torch.optim.SGD(params, lr=0.1))
