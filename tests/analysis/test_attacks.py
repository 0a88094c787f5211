"""lamina.analysis.attacks: PGD (L-inf, L2), BIM, MI-FGSM against torch rewrites of the
published update rules (float64, same start), C&W's objective against its formula and its
result against the exact minimal distance, DeepFool on a linear classifier against the
closed form, APGD against PGD, robust_accuracy and the errors."""

import functools

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.analysis.attacks import (
    apgd,
    bim,
    cw_l2,
    cw_objective,
    deepfool,
    mifgsm,
    pgd,
    robust_accuracy,
)


def mlp_pair(seed=0, features=12, hidden=16, classes=5):
    """A float64 lamina MLP and the same network in torch."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(hidden, activation="relu"), nn.Dense(classes))
    model.build((None, features))
    first, second = list(model)
    w1, b1 = torch.tensor(first.weight.data), torch.tensor(first.bias.data)
    w2, b2 = torch.tensor(second.weight.data), torch.tensor(second.bias.data)

    def torch_model(x):
        return torch.relu(x @ w1 + b1) @ w2 + b2
    return model, torch_model


def linear_pair(seed=0, features=6, classes=4):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(classes))
    model.build((None, features))
    rng = np.random.default_rng(seed)
    model[0].bias.data[:] = rng.normal(size=classes)
    return model, model[0].weight.data.copy(), model[0].bias.data.copy()


def data(seed=1, n=8, features=12, classes=5):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, (n, features)), rng.integers(0, classes, n)


def torch_input_grad(torch_model, x, y):
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(torch_model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def torch_pgd(torch_model, x, y, eps, alpha, steps, norm, start, targeted=False):
    x, y = torch.tensor(x), torch.tensor(y)
    adv = x + torch.tensor(start)
    if norm == "linf":
        adv = torch.clamp(torch.min(torch.max(adv, x - eps), x + eps), 0, 1)
    else:
        d = adv - x
        d = d * torch.clamp(eps / d.norm(dim=1, keepdim=True), max=1.0)
        adv = torch.clamp(x + d, 0, 1)
    for _ in range(steps):
        g = torch_input_grad(torch_model, adv, y)
        if targeted:
            g = -g
        if norm == "linf":
            adv = adv + alpha * g.sign()
            adv = torch.clamp(torch.min(torch.max(adv, x - eps), x + eps), 0, 1)
        else:
            adv = adv + alpha * g / g.norm(dim=1, keepdim=True)
            d = adv - x
            d = d * torch.clamp(eps / d.norm(dim=1, keepdim=True), max=1.0)
            adv = torch.clamp(x + d, 0, 1)
    return adv.numpy()


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.03), ("l2", 0.5, 0.15)])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_equals_a_torch_rewrite_and_stays_in_the_ball(norm, eps, alpha, targeted):
    model, torch_model = mlp_pair()
    x, y = data()
    start = np.random.default_rng(2).uniform(-eps, eps, x.shape) * (1 if norm == "linf" else 0.3)
    ours = pgd(model, x, y, eps, alpha, steps=6, norm=norm, random_start=start, targeted=targeted)
    theirs = torch_pgd(torch_model, x, y, eps, alpha, 6, norm, start, targeted)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert ours.min() >= 0 and ours.max() <= 1
    size = np.abs(ours - x).max(axis=1) if norm == "linf" else np.linalg.norm(ours - x, axis=1)
    assert (size <= eps + 1e-9).all()
    # with a seeded random start too
    random = pgd(model, x, y, eps, alpha, steps=3, norm=norm, seed=5)
    size = np.abs(random - x).max(axis=1) if norm == "linf" else np.linalg.norm(random - x, axis=1)
    assert (size <= eps + 1e-9).all() and np.array_equal(random, pgd(model, x, y, eps, alpha, 3, norm, seed=5))


def test_bim_and_mifgsm_equal_torch_rewrites():
    model, torch_model = mlp_pair(seed=3)
    x, y = data(seed=4)
    eps, alpha, steps = 0.08, 0.02, 5
    np.testing.assert_allclose(bim(model, x, y, eps, alpha, steps),
                               torch_pgd(torch_model, x, y, eps, alpha, steps, "linf", np.zeros_like(x)),
                               atol=1e-10)
    eps, alpha, steps, decay = 0.3, 0.05, 10, 0.5  # wide enough for the normalisation to matter
    xt, yt = torch.tensor(x), torch.tensor(y)
    adv, momentum = xt.clone(), torch.zeros_like(xt)
    for _ in range(steps):
        g = torch_input_grad(torch_model, adv, yt)
        momentum = decay * momentum + g / g.abs().mean(dim=1, keepdim=True)
        adv = adv + alpha * momentum.sign()
        adv = torch.clamp(torch.min(torch.max(adv, xt - eps), xt + eps), 0, 1)
    np.testing.assert_allclose(mifgsm(model, x, y, eps, alpha, steps, decay), adv.numpy(), atol=1e-10)


def test_cw_objective_equals_its_formula():
    model, torch_model = mlp_pair(seed=5)
    x, y = data(seed=6)
    adversarial = np.clip(x + np.random.default_rng(7).normal(0, 0.1, x.shape), 0, 1)
    c = np.linspace(0.5, 2.0, len(x))
    for targeted, kappa in ((False, 0.0), (True, 0.3)):
        z = torch_model(torch.tensor(adversarial)).detach().numpy()
        rows = np.arange(len(x))
        own = z[rows, y]
        other = np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z).max(axis=1)
        gap = other - own if targeted else own - other
        expected = ((adversarial - x) ** 2).sum(axis=1) + c * np.maximum(gap, -kappa)
        np.testing.assert_allclose(cw_objective(model, adversarial, x, y, c, kappa, targeted), expected, rtol=1e-12)


def torch_cw(torch_model, x, y, c, kappa, steps, search_steps, lr):
    """Carlini and Wagner's attack as their published code runs it (box [0, 1]), with torch's Adam."""
    x = torch.tensor(x)
    n = len(x)
    lower, upper, const = np.zeros(n), np.full(n, 1e10), np.full(n, c)
    best, best_distance = x.clone(), np.full(n, np.inf)
    own = torch.nn.functional.one_hot(torch.tensor(y), 5).bool()
    for _ in range(search_steps):
        w = torch.atanh((2 * x - 1) * (1 - 1e-6)).requires_grad_(True)
        adam = torch.optim.Adam([w], lr=lr)
        succeeded = np.zeros(n, dtype=bool)
        for _ in range(steps):
            adversarial = (torch.tanh(w) + 1) / 2
            logits = torch_model(adversarial)
            gap = logits[own] - logits.masked_fill(own, -torch.inf).max(dim=1).values
            distance = ((adversarial - x) ** 2).sum(dim=1)
            cost = distance.sum() + (torch.tensor(const) * torch.clamp(gap, min=-kappa)).sum()
            success = (gap < 0).numpy()
            closer = success & (distance.detach().numpy() < best_distance)
            best[closer] = adversarial.detach()[closer]
            best_distance[closer] = distance.detach().numpy()[closer]
            succeeded |= success
            adam.zero_grad()
            cost.backward()
            adam.step()
        upper = np.where(succeeded, np.minimum(upper, const), upper)
        lower = np.where(succeeded, lower, np.maximum(lower, const))
        const = np.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best.numpy()


def test_cw_l2_equals_a_torch_rewrite():
    model, torch_model = mlp_pair(seed=6)
    x, _ = data(seed=7)
    y = torch_model(torch.tensor(x)).argmax(dim=1).numpy()
    ours = cw_l2(model, x, y, c=1.0, steps=20, search_steps=3, lr=0.05)
    theirs = torch_cw(torch_model, x, y, 1.0, 0.0, 20, 3, 0.05)
    assert 0 < (np.abs(theirs - x).sum(axis=1) > 0).sum() < len(x)  # some attacks succeed, others not
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def nearest_boundary(weight, bias, x):
    """The exact minimal L2 distance from x to where a linear classifier changes class, and
    the class reached: min_k |f_k - f_y| / |w_k - w_y|."""
    logits = x @ weight + bias
    y = logits.argmax(axis=1)
    rows = np.arange(len(x))
    difference = weight.T[None] - weight.T[y][:, None]                 # (n, C, d)
    norms = np.linalg.norm(difference, axis=2)
    distance = np.abs(logits - logits[rows, y][:, None]) / np.where(norms > 0, norms, 1)
    distance[rows, y] = np.inf
    return distance.min(axis=1), distance.argmin(axis=1)


def test_deepfool_finds_the_exact_minimal_perturbation_of_a_linear_classifier():
    model, weight, bias = linear_pair()
    x = np.random.default_rng(8).normal(size=(10, 6))
    distance, reached = nearest_boundary(weight, bias, x)
    overshoot = 0.02
    adversarial = deepfool(model, x, overshoot=overshoot, clip=None)
    moved = np.linalg.norm(adversarial - x, axis=1)
    np.testing.assert_allclose(moved, (1 + overshoot) * (distance + 1e-4), rtol=1e-9)
    assert np.array_equal((adversarial @ weight + bias).argmax(axis=1), reached)


def test_cw_l2_is_close_to_the_minimal_distance_and_never_below_it():
    model, weight, bias = linear_pair(seed=2)
    rng = np.random.default_rng(9)
    x = rng.uniform(0.35, 0.65, (6, 6))
    distance, _ = nearest_boundary(weight, bias, x)
    adversarial = cw_l2(model, x, (x @ weight + bias).argmax(axis=1), c=0.1, steps=200, search_steps=6, lr=0.01)
    found = (adversarial @ weight + bias).argmax(axis=1) != (x @ weight + bias).argmax(axis=1)
    moved = np.linalg.norm(adversarial - x, axis=1)
    inside = distance < 0.3  # the closest boundary point lies within the [0, 1] box
    assert found[inside].all()
    assert (moved[found] >= distance[found] - 1e-9).all()
    assert (moved[inside] <= 1.1 * distance[inside] + 1e-3).all(), (moved, distance)


@pytest.fixture(scope="module")
def trained():
    """An MLP fitted to two Gaussian blobs in 10-D (pixels in [0, 1])."""
    lamina.set_default_dtype(np.float32)
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    centres = rng.uniform(0.3, 0.7, (3, 10))
    x = np.clip(centres[y] + rng.normal(0, 0.05, (300, 10)), 0, 1).astype(np.float32)
    model = nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(3))
    opt = lamina.optim.Adam(model, lr=0.02)
    for _ in range(60):
        cost = lamina.functional.categorical_cross_entropy(model(lamina.tensor(x)), y, from_logits=True)
        opt.zero_grad()
        cost.backward()
        opt.step()
    return model, x, y


def test_stronger_attacks_lower_robust_accuracy(trained):
    model, x, y = trained
    clean = robust_accuracy(model, x, y, lambda m, a, b: a)
    assert clean >= 0.95
    eps = 0.08
    one_step = robust_accuracy(model, x, y, functools.partial(bim, epsilon=eps, step_size=eps, steps=1))
    many = robust_accuracy(model, x, y, functools.partial(pgd, epsilon=eps, steps=20, seed=0))
    auto = robust_accuracy(model, x, y, functools.partial(apgd, epsilon=eps, steps=20, seed=0))
    print(f"clean {clean:.2f}, BIM one step {one_step:.2f}, PGD-20 {many:.2f}, APGD-20 {auto:.2f}")
    assert many < clean - 0.2
    assert many <= one_step + 0.02 and auto <= many + 0.03, (clean, one_step, many, auto)
    adversarial = apgd(model, x[:20], y[:20], eps, steps=10, seed=0)
    assert np.abs(adversarial - x[:20]).max() <= eps + 1e-6 and adversarial.min() >= 0


def test_apgd_checkpoints_follow_croce_and_hein():
    from lamina.analysis.attacks import _apgd_checkpoints

    assert _apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_attacks_reject_bad_settings(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="pgd: epsilon"):
        pgd(model, x, y, epsilon=-0.1)
    with pytest.raises(ValueError, match="pgd: norm must be 'linf' or 'l2', got 'l1'"):
        pgd(model, x, y, norm="l1")
    with pytest.raises(ValueError, match="pgd: clip must have low < high"):
        pgd(model, x, y, clip=(1, 0))
    with pytest.raises(ValueError, match="labels are required"):
        mifgsm(model, x, None)
    with pytest.raises(ValueError, match="cw_l2: clip must be a finite range"):
        cw_l2(model, x, y, clip=None)
    with pytest.raises(ValueError, match="deepfool: steps"):
        deepfool(model, x, steps=0)
