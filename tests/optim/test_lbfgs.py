"""L-BFGS follows torch.optim.LBFGS iteration for iteration, reaches scipy's optimum, and
saves and restores its memory."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.datasets import load_breast_cancer

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina.data import load_digits
from lamina.nn import Parameter
from lamina.optim.lbfgs import LBFGS, _Trial, cubic_minimizer, strong_wolfe

RTOL = 1e-6
L2 = 1e-2   # keeps the logistic regressions' minimum finite (the classes are nearly separable)


def _standardized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)


@cache
def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return _standardized(x), y.astype(np.int64)


@cache
def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(size=8)
    x = _standardized(x.reshape(len(x), -1))
    return (x, y) if n is None else (x[:n], y[:n])


# -- the two models, written once with lamina ops and once with torch ops, weights (out, in) --
def logistic_shapes(x, y):
    return [(1, x.shape[1]), (1,)]


def mlp_shapes(x, y):
    return [(12, x.shape[1]), (12,), (10, 12), (10,)]


def lamina_logistic(params, x, y):
    w, b = params
    z = (x @ w.T + b).reshape(-1)
    return F.binary_cross_entropy(z, y, from_logits=True) + 0.5 * L2 * (w * w).sum()


def torch_logistic(params, x, y):
    w, b = params
    z = (x @ w.T + b).reshape(-1)
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y.double()) + 0.5 * L2 * (w * w).sum()


def lamina_mlp(params, x, y):
    w1, b1, w2, b2 = params
    return F.categorical_cross_entropy((x @ w1.T + b1).tanh() @ w2.T + b2, y, from_logits=True)


def torch_mlp(params, x, y):
    w1, b1, w2, b2 = params
    return torch.nn.functional.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)


def rosenbrock_data():
    return np.zeros((1, 1)), np.zeros(1, dtype=np.int64)


def rosenbrock_shapes(x, y):
    return [(6,)]


def rosenbrock(params, x, y):
    """sum_i 100 (w_{i+1} - w_i^2)^2 + (1 - w_i)^2: a curved valley that makes the line search work."""
    (w,) = params
    return (100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2).sum()


MODELS = {
    "logistic-breast-cancer": (breast_cancer, logistic_shapes, lamina_logistic, torch_logistic),
    "mlp-digits": (lambda: digits(300), mlp_shapes, lamina_mlp, torch_mlp),
    "rosenbrock": (rosenbrock_data, rosenbrock_shapes, rosenbrock, rosenbrock),
}


def initial_arrays(shapes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.3 for s in shapes]


def lamina_problem(model: str, arrays, dtype=np.float64, **kwargs):
    """(lamina parameters, optimizer, closure) of a model."""
    data, _, cost, _ = MODELS[model]
    x, y = data()
    params = [Parameter(a.astype(dtype), dtype=dtype) for a in arrays]
    opt = LBFGS(params, **kwargs)
    lx, ly = lamina.tensor(x, dtype=dtype), lamina.tensor(y)

    def closure():
        opt.zero_grad()
        loss = cost(params, lx, ly)
        loss.backward()
        return loss

    return params, opt, closure


def torch_problem(model: str, arrays, **kwargs):
    data, _, _, cost = MODELS[model]
    x, y = data()
    params = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = torch.optim.LBFGS(params, **kwargs)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        loss = cost(params, tx, ty)
        loss.backward()
        return loss

    return params, opt, closure


SETTINGS = {
    "fixed-step": {},
    "strong-wolfe": {"line_search_fn": "strong_wolfe"},
    "short-memory": {"lr": 0.5, "max_iter": 6, "history_size": 3},
    "strong-wolfe-short": {"line_search_fn": "strong_wolfe", "max_iter": 8, "max_eval": 9, "history_size": 4},
    # first trials far too long and far too short: the line search brackets and zooms
    "strong-wolfe-long-trial": {"line_search_fn": "strong_wolfe", "lr": 20.0, "max_iter": 10},
    "strong-wolfe-short-trial": {"line_search_fn": "strong_wolfe", "lr": 0.02, "max_iter": 10},
}
CASES = [(model, setting) for model in ("logistic-breast-cancer", "mlp-digits") for setting in SETTINGS] + [
    ("rosenbrock", "strong-wolfe"), ("rosenbrock", "strong-wolfe-long-trial"), ("rosenbrock", "strong-wolfe-short"),
    ("rosenbrock", "short-memory")]


@pytest.mark.parametrize("model,setting", CASES)
def test_matches_torch_step_for_step(model, setting):
    kwargs = SETTINGS[setting]
    arrays = initial_arrays(MODELS[model][1](*MODELS[model][0]()))
    ours, opt, closure = lamina_problem(model, arrays, **kwargs)
    theirs, topt, tclosure = torch_problem(model, arrays, **kwargs)
    for step in range(4):
        expected = float(topt.step(tclosure).detach())
        got = opt.step(closure)
        assert got.item() == pytest.approx(expected, rel=1e-9), f"step {step}: the first cost"
        for k, (p, t) in enumerate(zip(ours, theirs)):
            assert np.isfinite(p.data).all()
            assert_close(p.data, t.detach().numpy(), RTOL, f"{model} {setting} step {step} parameter {k}")
        state = topt.state[theirs[0]]
        assert (opt.memory["func_evals"], opt.memory["n_iter"]) == (state["func_evals"], state["n_iter"])
        assert len(opt.memory["s"]) == len(state["old_stps"])
    assert not np.allclose(ours[0].data, arrays[0])
    assert opt.step_count == 4


def test_first_iteration_is_a_gradient_step_scaled_by_the_l1_norm():
    """One iteration from scratch: w = w - lr min(1, 1/|g|_1) g."""
    arrays = initial_arrays(logistic_shapes(*breast_cancer()))
    params, opt, closure = lamina_problem("logistic-breast-cancer", arrays, lr=0.7, max_iter=1)
    closure()
    g = np.concatenate([p.grad.ravel() for p in params])
    opt.step(closure)
    t = 0.7 * min(1.0, 1.0 / np.abs(g).sum())
    moved = np.concatenate([(p.data - a).ravel() for p, a in zip(params, arrays)])
    np.testing.assert_allclose(moved, -t * g, rtol=1e-12)
    assert opt.memory["func_evals"] == 1 and opt.memory["n_iter"] == 1


def _numpy_logistic_cost(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy plus L2/2 |w|^2 and its gradient, theta = (w, b)."""
    w, b = theta[:-1], theta[-1]
    z = x @ w + b
    cost = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * L2 * w @ w
    residual = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)
    return cost, np.concatenate([x.T @ residual + L2 * w, [residual.sum()]])


def _numpy_softmax_cost(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean categorical cross-entropy of softmax regression plus L2/2 |W|^2, theta = (W, b)."""
    n_in = x.shape[1]
    w, b = theta[: n_in * 10].reshape(n_in, 10), theta[n_in * 10:]
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cost = -log_p[np.arange(len(y)), y].mean() + 0.5 * L2 * np.sum(w * w)
    residual = np.exp(log_p)
    residual[np.arange(len(y)), y] -= 1.0
    residual /= len(y)
    return cost, np.concatenate([(x.T @ residual + L2 * w).ravel(), residual.sum(axis=0)])


@pytest.mark.parametrize("problem", ["breast-cancer", "digits"])
def test_reaches_the_cost_scipy_reaches(problem):
    """Logistic (softmax) regression with an L2 penalty: a strictly convex cost whose minimum
    scipy's L-BFGS-B finds; lamina's L-BFGS with the strong Wolfe line search gets there too."""
    if problem == "breast-cancer":
        x, y = breast_cancer()
        reference = _numpy_logistic_cost
        shapes = [(x.shape[1], 1), (1,)]
    else:
        x, y = digits(600)
        reference = _numpy_softmax_cost
        shapes = [(x.shape[1], 10), (10,)]
    best = minimize(reference, np.zeros(sum(int(np.prod(s)) for s in shapes)), args=(x, y), jac=True,
                    method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    assert best.success

    params = [Parameter(np.zeros(s), dtype=np.float64) for s in shapes]
    opt = LBFGS(params, max_iter=50, line_search_fn="strong_wolfe", tolerance_change=1e-12)
    lx, ly = lamina.tensor(x, dtype=np.float64), lamina.tensor(y)

    def closure():
        opt.zero_grad()
        w, b = params
        z = lx @ w + b
        if problem == "breast-cancer":
            cost = F.binary_cross_entropy(z.reshape(-1), ly, from_logits=True)
        else:
            cost = F.categorical_cross_entropy(z, ly, from_logits=True)
        cost = cost + 0.5 * L2 * (w * w).sum()
        cost.backward()
        return cost

    for _ in range(4):
        opt.step(closure)
    final = closure().item()
    assert final == pytest.approx(best.fun, rel=1e-4)
    theta = np.concatenate([p.data.ravel() for p in params])
    assert reference(theta, x, y)[0] == pytest.approx(final, rel=1e-10)   # the numpy cost agrees with lamina's


def _to_json(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist()))


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_state_dict_round_trip(line_search_fn):
    """Two steps, a save (through JSON), two more steps: a fresh optimizer loaded from the save
    takes the same two steps, memory and counters included."""
    kwargs = {"max_iter": 5, "history_size": 4, "line_search_fn": line_search_fn}
    arrays = initial_arrays(mlp_shapes(*digits(300)))
    straight, opt, closure = lamina_problem("mlp-digits", arrays, **kwargs)
    for _ in range(2):
        opt.step(closure)
    iterations = opt.memory["n_iter"]
    saved = opt.state_dict()
    snapshot = _to_json(saved)
    weights = [p.data.copy() for p in straight]
    for _ in range(2):
        opt.step(closure)
    assert _to_json(saved) == snapshot                        # the saved vectors are copies
    memory = snapshot["memory"]
    assert memory["n_iter"] == iterations > 5 and len(memory["s"]) == len(memory["y"]) == len(memory["rho"]) == 4

    resumed, fresh, fresh_closure = lamina_problem("mlp-digits", weights, **kwargs)
    fresh.load_state_dict(snapshot)
    assert fresh.step_count == 2 and fresh.memory["n_iter"] == iterations
    for _ in range(2):
        fresh.step(fresh_closure)
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)
    assert fresh.memory["func_evals"] == opt.memory["func_evals"]


def test_load_state_dict_checks_before_changing_anything():
    arrays = initial_arrays(mlp_shapes(*digits(300)))
    _, opt, closure = lamina_problem("mlp-digits", arrays, max_iter=3)
    opt.step(closure)
    saved = opt.state_dict()
    small = LBFGS([Parameter(np.zeros(5), dtype=np.float64)], lr=0.3)
    with pytest.raises(ValueError, match=r"LBFGS.load_state_dict: direction has shape \(910,\).*expected \(5,\)"):
        small.load_state_dict(saved)
    assert small.lr == 0.3 and small.memory["n_iter"] == 0
    with pytest.raises(ValueError, match="from a SGD optimizer"):
        small.load_state_dict({**lamina.optim.SGD(small.params, lr=0.1).state_dict(), "memory": None})


def test_stops_at_once_at_an_optimum_and_leaves_frozen_parameters_alone():
    w = Parameter(np.array([1.0, -2.0]), dtype=np.float64)
    frozen = Parameter(np.array([3.0]), dtype=np.float64)
    frozen.freeze()
    opt = LBFGS([w, frozen])
    target = lamina.tensor(np.array([0.5, 0.5]), dtype=np.float64)

    def closure():
        opt.zero_grad()
        cost = ((w - target) ** 2).sum() + (frozen * frozen).sum()
        cost.backward()
        return cost

    opt.step(closure)   # a quadratic: the line of the first step and one secant pair reach the minimum
    np.testing.assert_allclose(w.data, [0.5, 0.5], rtol=1e-9)
    np.testing.assert_array_equal(frozen.data, [3.0])
    evaluations = opt.memory["func_evals"]
    opt.step(closure)
    assert opt.memory["func_evals"] == evaluations + 1   # |g| <= tolerance_grad: only the first evaluation


def test_float32_parameters_stay_float32():
    arrays = initial_arrays(logistic_shapes(*breast_cancer()))
    params, opt, closure = lamina_problem("logistic-breast-cancer", arrays, dtype=np.float32,
                                          line_search_fn="strong_wolfe")
    first = opt.step(closure).item()
    opt.step(closure)
    assert all(p.data.dtype == np.float32 for p in params)
    assert closure().item() < 0.5 * first


def test_step_needs_a_closure():
    opt = LBFGS([Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match=r"LBFGS.step: a closure is required"):
        opt.step()
    with pytest.raises(ValueError, match=r"LBFGS.step: the closure must return the cost .* got NoneType"):
        opt.step(lambda: None)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -1.0}, r"LBFGS: invalid lr -1.0"),
    ({"max_iter": 0}, r"LBFGS: invalid max_iter 0 \(must be a positive integer\)"),
    ({"max_eval": 2.5}, r"LBFGS: invalid max_eval 2.5"),
    ({"history_size": 0}, r"LBFGS: invalid history_size 0"),
    ({"tolerance_grad": -1e-3}, r"LBFGS: invalid tolerance_grad -0.001"),
    ({"tolerance_change": float("nan")}, r"LBFGS: invalid tolerance_change nan"),
    ({"line_search_fn": "armijo"}, r"LBFGS: invalid line_search_fn 'armijo' \(must be None or 'strong_wolfe'\)"),
])
def test_rejects_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LBFGS([Parameter(np.zeros(3))], **kwargs)


def test_one_group_and_no_weight_decay():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="LBFGS: supports a single parameter group"):
        LBFGS([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match=r"LBFGS: weight_decay is not supported \(got 0.1\)"):
        LBFGS([{"params": [a], "weight_decay": 0.1}])


def test_default_max_eval_and_defaults_are_torchs():
    ours = LBFGS([Parameter(np.zeros(2))], max_iter=8).defaults
    theirs = torch.optim.LBFGS([torch.zeros(2, requires_grad=True)], max_iter=8).defaults
    assert {k: v for k, v in ours.items() if k != "weight_decay"} == theirs


def test_cubic_minimizer_is_exact_on_a_cubic():
    """Two points of f(t) = (t - 1)^3 / 3 - (t - 1), values and slopes, determine the cubic:
    the interpolated minimiser is f's local minimum t = 2."""
    def trial(t):
        return _Trial(t, (t - 1) ** 3 / 3 - (t - 1), None, (t - 1) ** 2 - 1)

    assert cubic_minimizer(trial(0.5), trial(3.0)) == pytest.approx(2.0, rel=1e-12)
    assert cubic_minimizer(trial(3.0), trial(0.5)) == pytest.approx(2.0, rel=1e-12)
    assert cubic_minimizer(trial(0.5), trial(3.0), bounds=(0.5, 1.5)) == 1.5


def test_strong_wolfe_step_satisfies_both_conditions():
    """On a 1-D quartic from a first trial far too long: the returned step has sufficient
    decrease and a small slope."""
    def f(t):
        return (t - 0.3) ** 4 + 0.5 * t * t

    def grad(t):
        return 4 * (t - 0.3) ** 3 + t

    d = np.array([1.0])
    slope0 = grad(0.0)
    assert slope0 < 0

    def evaluate(t):
        return f(t), np.array([grad(t)])

    value, g, t, evaluations = strong_wolfe(evaluate, 5.0, d, f(0.0), np.array([slope0]), slope0)
    assert value == f(t) and g[0] == grad(t) and evaluations >= 2
    assert value <= f(0.0) + 1e-4 * t * slope0
    assert abs(grad(t)) <= 0.9 * abs(slope0)
