"""SOAP against the authors' algorithm written here in NumPy (float64), step for step;
state-dict resumption across a basis refresh, groups, checks and a digits run."""

from __future__ import annotations

import numpy as np
import pytest
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, numpy_grads
from test_rprop_lion_lookahead import accuracy, digits_split, mlp

import lamina
from helpers import assert_close
from lamina.optim import SOAP
from lamina.train import Trainer


def numpy_soap(arrays, steps, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=None, eps=1e-8, weight_decay=0.01,
               precondition_frequency=10, max_precond_dim=10000, precondition_1d=False):
    """Per parameter: a list of statistics GG and bases Q over the two axes of its matrix view."""
    beta1, beta2 = betas
    b = beta2 if shampoo_beta is None else shampoo_beta
    w = [a.copy() for a in arrays]
    states = [None] * len(w)
    trajectory = []
    for _ in range(steps):
        for k, g in enumerate(numpy_grads(w)):
            shape = w[k].shape
            G = g.reshape(shape[0], -1) if len(shape) > 1 else g.reshape(-1, 1)
            if states[k] is None:
                dims = [G.shape[0], G.shape[1] if len(shape) > 1 else 0]
                if len(shape) == 1 and not precondition_1d:
                    dims = [0, 0]
                gg = [np.zeros((n, n)) if 0 < n <= max_precond_dim else None for n in dims]
                s = states[k] = {"GG": gg, "t": 0, "m": np.zeros_like(G), "v": np.zeros_like(G)}
                update_statistics(s, G, b)
                s["Q"] = [None if m is None else np.linalg.eigh(m + 1e-30 * np.eye(len(m)))[1][:, ::-1]
                          for m in s["GG"]]
                continue
            s = states[k]
            s["t"] += 1
            t = s["t"]
            s["m"] = beta1 * s["m"] + (1 - beta1) * G
            s["v"] = beta2 * s["v"] + (1 - beta2) * rotate(G, s["Q"]) ** 2
            direction = rotate(s["m"], s["Q"]) / (np.sqrt(s["v"]) + eps)
            step_size = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
            w[k] = w[k] - step_size * rotate_back(direction, s["Q"]).reshape(shape)
            w[k] = w[k] - lr * weight_decay * w[k]
            update_statistics(s, G, b)
            if t % precondition_frequency == 0:
                for axis in range(2):
                    m, q = s["GG"][axis], s["Q"][axis]
                    if m is None:
                        continue
                    order = np.argsort(-np.diag(q.T @ m @ q), kind="stable")
                    s["v"] = np.take(s["v"], order, axis=axis)
                    s["Q"][axis] = np.linalg.qr(m @ q[:, order])[0]
        trajectory.append([x.copy() for x in w])
    return trajectory


def update_statistics(s, G, b):
    products = [G @ G.T, G.T @ G]
    for axis in range(2):
        if s["GG"][axis] is not None:
            s["GG"][axis] = b * s["GG"][axis] + (1 - b) * products[axis]


def rotate(M, Q):
    left, right = Q
    M = M if left is None else left.T @ M
    return M if right is None else M @ right


def rotate_back(M, Q):
    left, right = Q
    M = M if left is None else left @ M
    return M if right is None else M @ right.T


CASES = {
    "defaults": {"lr": 0.01, "precondition_frequency": 4},
    "all": {"lr": 0.02, "betas": (0.9, 0.99), "shampoo_beta": 0.8, "eps": 1e-4, "weight_decay": 0.1,
            "precondition_frequency": 3, "precondition_1d": True},
    "one-side-only": {"lr": 0.01, "max_precond_dim": 3, "precondition_frequency": 2},   # 4-long axes unrotated
}


@pytest.mark.parametrize("case", list(CASES))
def test_follows_the_numpy_reference_step_for_step(case):
    kwargs = CASES[case]
    arrays = initial_arrays()
    expected = numpy_soap(arrays, 14, **kwargs)
    params = lamina_params(arrays)
    opt = SOAP(params, **kwargs)
    for step in range(14):
        for p, g in zip(params, numpy_grads([p.data for p in params])):
            p.grad = g
        opt.step()
        for k, p in enumerate(params):
            assert_close(p.data, expected[step][k], TOL, f"SOAP {case} step {step} parameter {k}")
    assert not np.allclose(params[0].data, arrays[0])


def test_the_first_step_only_builds_the_bases():
    params = lamina_params(initial_arrays())
    opt = SOAP(params, lr=0.1)
    _run(opt, params, 1)
    for p, a in zip(params, initial_arrays()):
        np.testing.assert_array_equal(p.data, a)
    q = opt.state[0]["q_left"]
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    assert "q_left" not in opt.state[1]       # a vector stays in its own basis by default


def test_state_dict_resumes_exactly_across_a_basis_refresh():
    kwargs = CASES["all"]
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(SOAP(straight, **kwargs), straight, 12)
    again = lamina_params(arrays)
    first = SOAP(again, **kwargs)
    _run(first, again, 5)
    fresh = SOAP(again, lr=0.5, precondition_1d=True)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == kwargs["lr"] and fresh.param_groups[0]["precondition_frequency"] == 3
    _run(fresh, again, 7)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-12, atol=1e-14)


def test_parameter_groups_take_their_own_learning_rate():
    arrays = initial_arrays(3)
    slow, fast = lamina_params([arrays[0], arrays[0]])
    opt = SOAP([{"params": [slow], "lr": 0.01}, {"params": [fast]}], lr=0.03, weight_decay=0.0)
    for _ in range(3):
        slow.grad = fast.grad = np.full(arrays[0].shape, 0.5) + arrays[1][:, None]
        opt.step()
    np.testing.assert_allclose(fast.data - arrays[0], 3 * (slow.data - arrays[0]), rtol=1e-12)
    assert not np.allclose(slow.data, arrays[0])


@pytest.mark.parametrize("kwargs,word", [
    ({"lr": -0.1}, "lr"), ({"betas": (0.95, 1.0)}, "beta2"), ({"shampoo_beta": 1.2}, "shampoo_beta"),
    ({"eps": -1.0}, "eps"), ({"precondition_frequency": 0}, "precondition_frequency"),
    ({"max_precond_dim": 2.5}, "max_precond_dim"), ({"precondition_1d": "yes"}, "precondition_1d"),
])
def test_invalid_hyperparameters_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=f"SOAP: invalid {word}"):
        SOAP(lamina_params(initial_arrays()), **kwargs)


def test_trains_an_mlp_on_digits():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    trainer = Trainer(model, "categorical_cross_entropy", SOAP(model, lr=3e-3), verbose=0)
    history = trainer.fit((xtr, ytr), epochs=6, batch_size=32, seed=0)
    assert history["loss"][-1] < 0.3
    assert accuracy(trainer, xte, yte) >= 0.9
