"""lamina.analysis.influence: influence functions on an L2-regularised softmax regression against
a torch rewrite (Hessian by torch.autograd.functional.hessian, then a solve), conjugate
gradients and LiSSA against the exact inverse, influence against actual leave-one-out
retraining; TracIn against a loop of torch gradients over checkpoints; mislabelled digits
found by self-influence; the error messages."""

import copy

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import influence_scores, self_influence, tracin_scores, tracin_self_influence
from lamina.analysis.influence import _looped_gradients, _sample_gradients
from lamina.data import load_digits
from lamina.errors import ShapeError

L2 = 0.01
CLASSES, FEATURES = 3, 4


def cross_entropy(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


def torch_objective(theta, x, y, l2=L2):
    """Mean cross-entropy of z = x W + b plus l2 ||theta||^2, theta = (W, b) flattened in
    lamina's parameter order."""
    weight = theta[:FEATURES * CLASSES].reshape(FEATURES, CLASSES)
    logits = torch.as_tensor(x) @ weight + theta[FEATURES * CLASSES:]
    return torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)) + l2 * (theta ** 2).sum()


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def newton_fit(x, y, start, steps=30):
    """The minimiser of torch_objective by Newton's method (a strictly convex objective), with
    its gradient and Hessian written out in NumPy over theta = (W, b) = the rows of a (5, 3) array."""
    inputs = np.hstack([x, np.ones((len(x), 1))])
    targets = np.eye(CLASSES)[y]
    theta = np.array(start, dtype=np.float64)
    for _ in range(steps):
        p = softmax(inputs @ theta.reshape(FEATURES + 1, CLASSES))
        gradient = (inputs.T @ (p - targets) / len(x)).ravel() + 2 * L2 * theta
        if np.abs(gradient).max() < 1e-13:
            break
        curvature = p[:, :, None] * np.eye(CLASSES) - p[:, :, None] * p[:, None, :]
        hessian = np.einsum("ia,ib,icd->acbd", inputs, inputs, curvature).reshape(theta.size, theta.size) / len(x)
        theta = theta - np.linalg.solve(hessian + 2 * L2 * np.eye(theta.size), gradient)
    return theta


@pytest.fixture
def regression():
    """A softmax regression on 4 features, 3 classes (15 parameters) in float64, fitted to
    stationarity on 40 training examples, and 6 test examples."""
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(46, FEATURES))
    y = np.argmax(x @ rng.normal(size=(FEATURES, CLASSES)) + rng.normal(size=(46, CLASSES)), axis=1)
    train, test = (x[:40], y[:40]), (x[40:], y[40:])
    theta = newton_fit(*train, np.zeros(FEATURES * CLASSES + CLASSES))
    model = nn.Sequential(nn.Dense(CLASSES))
    model.build((None, FEATURES))
    model.load_state_dict({"dense.weight": theta[:12].reshape(FEATURES, CLASSES), "dense.bias": theta[12:]})
    return model, train, test, theta


def torch_gradient(function, at):
    at = at.detach().requires_grad_(True)
    return torch.autograd.grad(function(at), at)[0]


def torch_influence(theta, train, test):
    """-g_test^T H^-1 g_train with H the Hessian of the whole objective, per-example data-loss
    gradients by torch autograd."""
    theta = torch.tensor(theta)
    hessian = torch.autograd.functional.hessian(lambda t: torch_objective(t, *train), theta)

    def gradients(x, y):
        return torch.stack([torch_gradient(lambda t, i=i: torch_objective(t, x[i:i + 1], y[i:i + 1], 0.0), theta)
                            for i in range(len(x))])

    g_train, g_test = gradients(*train), gradients(*test)
    return (-g_test @ torch.linalg.solve(hessian, g_train.T)).numpy()


def test_exact_influence_matches_torch(regression):
    model, train, test, theta = regression
    scores = influence_scores(model, cross_entropy, train, test, method="exact", damping=0.0, l2=L2)
    assert scores.shape == (6, 40)
    assert_close(scores, torch_influence(theta, train, test), rtol=1e-8)
    batched = influence_scores(model, cross_entropy, train, test, damping=0.0, l2=L2, batch_size=7)
    assert_close(batched, scores, rtol=1e-10)


def test_conjugate_gradients_and_lissa_match_exact(regression):
    model, train, test, _ = regression
    exact = influence_scores(model, cross_entropy, train, test, method="exact", damping=0.001, l2=L2)
    cg = influence_scores(model, cross_entropy, train, test, method="cg", damping=0.001, l2=L2)
    assert_close(cg, exact, rtol=1e-6)
    # H + damping has eigenvalues in [0.12, 0.39]: with scale 0.5 the recursion contracts by 0.76 a step
    test = (test[0][:2], test[1][:2])
    exact = influence_scores(model, cross_entropy, train, test, damping=0.1, l2=L2)
    options = {"method": "lissa", "damping": 0.1, "l2": L2, "lissa_scale": 0.5, "lissa_depth": 60}
    full_batch = influence_scores(model, cross_entropy, train, test, lissa_batch_size=40, **options)
    assert_close(full_batch, exact, rtol=1e-6)  # a Neumann series on the whole Hessian
    lissa = influence_scores(model, cross_entropy, train, test, lissa_batch_size=32, lissa_repeats=16, seed=0,
                             **options)
    assert np.linalg.norm(lissa - exact) / np.linalg.norm(exact) < 0.05


def test_influence_predicts_leave_one_out_retraining(regression):
    model, train, test, theta = regression
    first = (test[0][:1], test[1][:1])
    scores = influence_scores(model, cross_entropy, train, first, damping=0.0, l2=L2)[0]
    n = len(train[0])

    def test_loss(parameters):
        return float(torch_objective(torch.tensor(parameters), *first, 0.0))

    base = test_loss(theta)
    actual = np.array([test_loss(newton_fit(np.delete(train[0], i, 0), np.delete(train[1], i), theta)) - base
                       for i in range(n)])
    predicted = -scores / n
    assert np.corrcoef(predicted, actual)[0, 1] > 0.95


def test_self_influence_is_the_diagonal(regression):
    model, train, _, _ = regression
    scores = influence_scores(model, cross_entropy, train, train, damping=0.0, l2=L2)
    for method in ("exact", "cg"):
        assert_close(self_influence(model, cross_entropy, train, method=method, damping=0.0, l2=L2),
                     -np.diag(scores), rtol=1e-7)


def test_parameter_subset_is_a_block_of_the_hessian():
    """params restricts the gradients and the Hessian to the chosen parameters (here the last layer)."""
    lamina.set_default_dtype(np.float64)
    model, x, y = tracin_problem()
    scores = influence_scores(model, cross_entropy, (x, y), (x[:3], y[:3]), params=["dense_1"], damping=0.1)
    by_module = influence_scores(model, cross_entropy, (x, y), (x[:3], y[:3]), params=model.layers[1], damping=0.1)
    assert_close(by_module, scores, rtol=1e-12)
    w1, b1, w2, b2 = (torch.tensor(p.numpy()) for p in model.parameters())
    features = torch.tanh(torch.tensor(x) @ w1 + b1)

    def loss(last, rows):
        logits = features[rows] @ last[:15].reshape(5, 3) + last[15:]
        return torch.nn.functional.cross_entropy(logits, torch.tensor(y[rows]))

    last = torch.cat([w2.ravel(), b2])
    hessian = torch.autograd.functional.hessian(lambda t: loss(t, slice(None)), last) + 0.1 * torch.eye(18)
    g = torch.stack([torch_gradient(lambda t, i=i: loss(t, [i]), last) for i in range(len(x))])
    assert_close(scores, (-g[:3] @ torch.linalg.solve(hessian, g.T)).numpy(), rtol=1e-8)


def test_per_sample_gradients_equal_a_loop(regression):
    model, train, _, _ = regression
    params = model.parameters()
    assert_close(_sample_gradients(model, cross_entropy, *train, params, 16, "test"),
                 _looped_gradients(model, cross_entropy, *train, params, "test"), rtol=1e-12)


# -- TracIn ---------------------------------------------------------------------------------------------


def tracin_problem():
    model = nn.Sequential(nn.Dense(5, activation="tanh", bias_init="uniform"), nn.Dense(3, bias_init="uniform"))
    model.build((None, 4))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 4))
    return model, x, rng.integers(0, 3, 12)


def torch_mlp_gradient(weights, chosen, row, label):
    w1, b1, w2, b2 = weights
    logits = torch.tanh(torch.tensor(row[None]) @ w1 + b1) @ w2 + b2
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([label]))
    return torch.cat([g.ravel() for g in torch.autograd.grad(loss, chosen)])


def torch_tracin(states, x, y, x_test, y_test, rates, last_only=False):
    """sum_k eta_k g_k(z_test) . g_k(z) by a plain loop, per-example gradients by torch autograd."""
    total = np.zeros((len(x_test), len(x)))
    for state, rate in zip(states, rates):
        weights = [torch.tensor(state[key], requires_grad=True)
                   for key in ("dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias")]
        chosen = weights[2:] if last_only else weights
        for t in range(len(x_test)):
            g_test = torch_mlp_gradient(weights, chosen, x_test[t], y_test[t])
            for i in range(len(x)):
                total[t, i] += rate * float(g_test @ torch_mlp_gradient(weights, chosen, x[i], y[i]))
    return total


def trained_checkpoints(model, x, y, rates):
    states, models = [], []
    for rate in rates:
        optimizer = optim.SGD(model.parameters(), lr=rate)
        for _ in range(3):
            optimizer.zero_grad()
            cross_entropy(model(x), y).backward()
            optimizer.step()
        states.append({name: value.copy() for name, value in model.state_dict().items()})
        models.append(copy.deepcopy(model))
    return states, models


def test_tracin_matches_a_torch_loop_over_checkpoints():
    lamina.set_default_dtype(np.float64)
    model, x, y = tracin_problem()
    rates = [0.5, 0.3, 0.1]
    states, models = trained_checkpoints(model, x, y, rates)
    expected = torch_tracin(states, x, y, x[:4], y[:4], rates)
    assert_close(tracin_scores(models, cross_entropy, (x, y), (x[:4], y[:4]), rates), expected, rtol=1e-10)
    final = model.state_dict()["dense.weight"].copy()
    from_states = tracin_scores(states[:2], cross_entropy, (x, y), (x[:4], y[:4]), rates[:2], model=model)
    assert_close(from_states, torch_tracin(states[:2], x, y, x[:4], y[:4], rates[:2]), rtol=1e-10)
    assert np.array_equal(model.state_dict()["dense.weight"], final)  # the model's own weights came back
    last = tracin_scores(models, cross_entropy, (x, y), (x[:4], y[:4]), 0.2, params=["dense_1"])
    assert_close(last, torch_tracin(states, x, y, x[:4], y[:4], [0.2] * 3, last_only=True), rtol=1e-10)
    assert_close(tracin_self_influence(models, cross_entropy, (x, y), rates),
                 np.diag(torch_tracin(states, x, y, x, y, rates)), rtol=1e-10)


# -- mislabelled digits -----------------------------------------------------------------------------------


def test_self_influence_finds_flipped_digit_labels():
    """300 digits, 30 of them relabelled at random: the 30 training examples of highest
    self-influence (influence functions and TracIn) hold far more of the flipped ones than the
    3 a random pick would."""
    lamina.set_default_dtype(np.float64)
    images, labels = load_digits(size=8)
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(images))[:300]
    x = images[chosen].reshape(300, 64) / 255.0
    y = labels[chosen].copy()
    flipped = rng.permutation(300)[:30]
    y[flipped] = (y[flipped] + rng.integers(1, 10, 30)) % 10
    model = nn.Sequential(nn.Dense(10, kernel_init="zeros"))
    model.build((None, 64))
    optimizer = optim.SGD(model.parameters(), lr=0.5, weight_decay=2e-3)  # the penalty 1e-3 ||w||^2
    checkpoints = []
    for epoch in range(100):
        optimizer.zero_grad()
        cross_entropy(model(x), y).backward()
        optimizer.step()
        if epoch % 20 == 19:
            checkpoints.append(copy.deepcopy(model))
    chance = 30 * 30 / 300
    influence = self_influence(model, cross_entropy, (x, y), damping=0.0, l2=1e-3)
    tracin = tracin_self_influence(checkpoints, cross_entropy, (x, y), 0.5)
    for scores in (influence, tracin):
        found = len(np.intersect1d(np.argsort(-scores)[:30], flipped))
        assert found > 3 * chance


# -- errors ---------------------------------------------------------------------------------------------


def test_errors(regression):
    model, train, test, _ = regression
    with pytest.raises(ValueError, match="method must be one of"):
        influence_scores(model, cross_entropy, train, test, method="newton")
    with pytest.raises(ValueError, match="damping must be a number >= 0"):
        influence_scores(model, cross_entropy, train, test, damping=-1.0)
    with pytest.raises(ShapeError, match="same leading"):
        influence_scores(model, cross_entropy, train, (test[0], test[1][:2]))
    with pytest.raises(TypeError, match=r"must be an \(x, y\) pair"):
        influence_scores(model, cross_entropy, train[0], test)
    with pytest.raises(ValueError, match="no trainable parameter is named 'head'"):
        influence_scores(model, cross_entropy, train, test, params=["head"])
    def linear(logits, labels):  # a loss linear in the weights: its Hessian is zero
        return logits.mean()

    with pytest.raises(ValueError, match="singular.*pass damping > 0"):
        influence_scores(model, linear, train, test, damping=0.0)
    with pytest.raises(ValueError, match="not positive definite"):
        influence_scores(model, linear, train, test, method="cg", damping=0.0)
    with pytest.warns(RuntimeWarning, match="conjugate gradients stopped after 2 iterations"):
        influence_scores(model, cross_entropy, train, test, method="cg", l2=L2, cg_max_iter=2)
    with pytest.raises(ValueError, match="LiSSA recursion diverges"):
        influence_scores(model, cross_entropy, train, test, method="lissa", l2=L2, lissa_scale=0.01,
                         lissa_depth=200)
    with pytest.raises(ValueError, match="2 learning rates for 3 checkpoints"):
        tracin_scores([model] * 3, cross_entropy, train, test, [0.1, 0.2])
    with pytest.raises(TypeError, match="checkpoints must be a list of models or state dicts"):
        tracin_scores(model, cross_entropy, train, test, 0.1)
    with pytest.raises(TypeError, match="state dict together with model="):
        tracin_scores([model.state_dict()], cross_entropy, train, test, 0.1)
