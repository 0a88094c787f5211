"""Shampoo against the paper's update written here in NumPy (float64), step for step, on
vectors, matrices and a 3-D parameter; state-dict resumption, groups, checks, digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, numpy_grads
from test_rprop_lion_lookahead import accuracy, digits_split, mlp

import lamina
from helpers import assert_close
from lamina.nn import Parameter
from lamina.optim import Shampoo
from lamina.train import Trainer


def numpy_root(matrix, order, epsilon):
    values, vectors = np.linalg.eigh(matrix)
    values = np.maximum(values, epsilon * values.max())
    return vectors @ np.diag(values ** (-1.0 / order)) @ vectors.T


def numpy_shampoo(arrays, grads_of, steps, lr=0.1, momentum=0.0, weight_decay=0.0, epsilon=1e-4, update_freq=1,
                  graft="none"):
    """Gupta et al. 2018, Algorithm 1 (order 2; a vector as order 1), as the class documents."""
    w = [a.copy() for a in arrays]
    states = [None] * len(w)
    trajectory = []
    for t in range(1, steps + 1):
        for k, g in enumerate(grads_of(w)):
            g = g + weight_decay * w[k]
            shape = w[k].shape
            mat = g.reshape(shape[0], -1) if len(shape) > 1 else g.reshape(-1, 1)
            if states[k] is None:
                states[k] = {"L": epsilon * np.eye(mat.shape[0]), "R": epsilon * np.eye(mat.shape[1]),
                             "b": np.zeros(shape), "a": np.zeros(shape)}
            s = states[k]
            if len(shape) > 1:
                s["L"] += mat @ mat.T
                s["R"] += mat.T @ mat
                if (t - 1) % update_freq == 0:
                    s["PL"], s["PR"] = numpy_root(s["L"], 4, epsilon), numpy_root(s["R"], 4, epsilon)
                d = (s["PL"] @ mat @ s["PR"]).reshape(shape)
            else:
                s["L"] += mat @ mat.T
                if (t - 1) % update_freq == 0:
                    s["PL"] = numpy_root(s["L"], 2, epsilon)
                d = (s["PL"] @ mat).reshape(shape)
            if graft == "sgd":
                d = d * np.linalg.norm(g) / np.linalg.norm(d)
            elif graft == "adagrad":
                s["a"] += g * g
                d = d * np.linalg.norm(g / (np.sqrt(s["a"]) + epsilon)) / np.linalg.norm(d)
            s["b"] = momentum * s["b"] + d
            w[k] = w[k] - lr * s["b"]
        trajectory.append([x.copy() for x in w])
    return trajectory


CASES = {
    "plain": {"lr": 0.05},
    "momentum-wd-freq": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "update_freq": 3, "epsilon": 1e-3},
    "graft-sgd": {"lr": 0.1, "graft": "sgd", "update_freq": 2},
    "graft-adagrad": {"lr": 0.05, "graft": "adagrad", "momentum": 0.5},
}


@pytest.mark.parametrize("case", list(CASES))
def test_follows_the_numpy_reference_step_for_step(case):
    kwargs = CASES[case]
    arrays = initial_arrays()
    expected = numpy_shampoo(arrays, numpy_grads, 15, **kwargs)
    params = lamina_params(arrays)
    opt = Shampoo(params, **kwargs)
    for step in range(15):
        for p, g in zip(params, numpy_grads([p.data for p in params])):
            p.grad = g
        opt.step()
        for k, p in enumerate(params):
            assert_close(p.data, expected[step][k], TOL, f"Shampoo {case} step {step} parameter {k}")
    assert opt.state[0]["stat_left"].shape == (4, 4) and opt.state[0]["stat_right"].shape == (3, 3)
    assert opt.state[1]["stat_left"].shape == (4, 4) and "stat_right" not in opt.state[1]


def test_a_three_axis_parameter_is_preconditioned_as_a_matrix():
    rng = np.random.default_rng(5)
    target = rng.standard_normal((2, 3, 2))
    scales = rng.uniform(0.5, 3.0, (2, 3, 2))

    def grads_of(ws):
        return [scales * (ws[0] - target)]

    start = rng.standard_normal((2, 3, 2))
    expected = numpy_shampoo([start], grads_of, 10, lr=0.1, momentum=0.5)
    w = Parameter(start.copy(), dtype=np.float64)
    opt = Shampoo([w], lr=0.1, momentum=0.5)
    for step in range(10):
        w.grad = grads_of([w.data])[0]
        opt.step()
        assert_close(w.data, expected[step][0], TOL, f"3-D step {step}")
    assert opt.state[0]["stat_left"].shape == (2, 2) and opt.state[0]["stat_right"].shape == (6, 6)


def test_full_matrix_preconditioning_whitens_an_ill_conditioned_quadratic():
    """On J = 1/2 w^T A w with A of condition number 1e4, Shampoo's vector preconditioner
    (sum of g g^T)^(-1/2) brings w to the minimum far faster than plain gradient steps."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a = q @ np.diag(np.logspace(0, 4, 5)) @ q.T
    w = Parameter(np.ones(5), dtype=np.float64)
    opt = Shampoo([w], lr=0.5, epsilon=1e-12)
    for _ in range(60):
        w.grad = a @ w.data
        opt.step()
    start_cost = 0.5 * np.ones(5) @ a @ np.ones(5)
    assert 0.5 * w.data @ a @ w.data < 1e-6 * start_cost


def test_state_dict_resumes_exactly():
    kwargs = CASES["momentum-wd-freq"] | {"graft": "adagrad"}
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(Shampoo(straight, **kwargs), straight, 11)
    again = lamina_params(arrays)
    first = Shampoo(again, **kwargs)
    _run(first, again, 5)              # resumes between two refreshes of the roots
    fresh = Shampoo(again, lr=0.5, update_freq=3, graft="adagrad")
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.lr == kwargs["lr"] and fresh.param_groups[0]["momentum"] == 0.9
    _run(fresh, again, 6)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-12, atol=1e-14)
    broken = _to_json(first.state_dict())
    broken["state"]["0"]["stat_right"] = np.eye(4).tolist()
    with pytest.raises(ValueError, match="stat_right"):
        Shampoo(again).load_state_dict(broken)


def test_parameter_groups_take_their_own_learning_rate():
    arrays = initial_arrays(3)
    slow, fast = Parameter(arrays[0].copy(), dtype=np.float64), Parameter(arrays[0].copy(), dtype=np.float64)
    opt = Shampoo([{"params": [slow], "lr": 0.01}, {"params": [fast]}], lr=0.03)
    slow.grad = fast.grad = np.full(arrays[0].shape, 0.5) + arrays[1][:, None]
    opt.step()
    np.testing.assert_allclose(fast.data - arrays[0], 3 * (slow.data - arrays[0]), rtol=1e-12)
    assert not np.allclose(slow.data, arrays[0])


@pytest.mark.parametrize("kwargs,word", [
    ({"lr": -0.1}, "lr"), ({"momentum": 1.0}, "momentum"), ({"epsilon": -1.0}, "epsilon"),
    ({"update_freq": 0}, "update_freq"), ({"graft": "adam"}, "graft"), ({"weight_decay": math.inf}, "weight_decay"),
])
def test_invalid_hyperparameters_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=f"Shampoo: invalid {word}"):
        Shampoo(lamina_params(initial_arrays()), **kwargs)


def test_trains_an_mlp_on_digits():
    lamina.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = mlp()
    trainer = Trainer(model, "categorical_cross_entropy", Shampoo(model, lr=3e-3, graft="adagrad", update_freq=5,
                                                                  momentum=0.9), verbose=0)
    history = trainer.fit((xtr, ytr), epochs=6, batch_size=32, seed=0)
    assert history["loss"][-1] < 0.3
    assert accuracy(trainer, xte, yte) >= 0.9
