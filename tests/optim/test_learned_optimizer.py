"""The coordinate-wise LSTM optimizer (Andrychowicz et al. 2016): its preprocessing, an exact SGD
construction, the meta-gradient against a float64 torch rewrite and finite differences, and learning."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch

from lamina.autograd import Tensor, grad
from lamina.nn import Parameter
from lamina.optim import SGD, Adam, LearnedOptimizer, LSTMOptimizer, preprocess_gradients


def quadratic(rng: np.random.Generator, n: int = 10):
    """The paper's optimizee f(theta) = ||W theta - y||^2 with Gaussian W, y, theta_0."""
    W, y = rng.standard_normal((n, n)), rng.standard_normal(n)

    def loss(theta):
        r = Tensor(W, dtype=np.float64) @ theta[0] - Tensor(y, dtype=np.float64)
        return (r * r).sum()

    return loss, [rng.standard_normal(n)], (W, y)


def test_preprocessing_is_the_papers_formula():
    g = np.array([[3.0], [-1e-2], [2e-5], [-4e-6], [0.0], [math.exp(-10)]])
    got = preprocess_gradients(Tensor(g, dtype=np.float64)).data
    p = 10.0
    big = np.abs(g) >= math.exp(-p)
    expected = np.where(big, np.concatenate([np.log(np.where(big, np.abs(g), 1)) / p, np.sign(g)], axis=1),
                        np.concatenate([-np.ones_like(g), math.exp(p) * g], axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[3, 0] == -1 and got[0, 1] == 1 and got[1, 1] == -1


def sgd_lstm(lr: float) -> LSTMOptimizer:
    """Every weight zero, the raw-gradient skip term -lr: c stays 0, so h = 0 and update = -lr g."""
    m = LSTMOptimizer(hidden=4, layers=2, preprocess=False, out_scale=1.0, dtype=np.float64)
    for p in m.parameters():
        p.data[...] = 0.0
    m.w_skip.data[...] = -lr
    return m


def test_hand_set_lstm_is_exactly_sgd():
    loss, theta0, (W, y) = quadratic(np.random.default_rng(1), n=5)
    theta, losses = sgd_lstm(0.01).optimize(loss, theta0, steps=15)
    x = theta0[0].copy()
    for _ in range(15):
        x = x - 0.01 * 2 * W.T @ (W @ x - y)
    np.testing.assert_allclose(theta[0], x, rtol=1e-13, atol=1e-13)
    assert losses[-1] < losses[0]


def test_optimizer_adapter_drives_step_like_sgd():
    rng = np.random.default_rng(2)
    a = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    learned = [Parameter(x.copy(), dtype=np.float64) for x in a]
    plain = [Parameter(x.copy(), dtype=np.float64) for x in a]
    opts = [LearnedOptimizer(learned, sgd_lstm(0.1)), SGD(plain, lr=0.1)]
    for step in range(4):
        for ps, opt in zip((learned, plain), opts, strict=True):
            for p in ps:
                p.grad = np.sin(p.data * (step + 1))
            opt.step()
    for p, q in zip(learned, plain, strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-14)


def test_optimizer_adapter_state_dict_round_trip():
    rng = np.random.default_rng(8)
    lstm = LSTMOptimizer(hidden=3, layers=2, seed=9, dtype=np.float64)
    a, b = Parameter(rng.standard_normal(4), dtype=np.float64), Parameter(np.zeros(4), dtype=np.float64)
    opt = LearnedOptimizer([a], lstm)
    for _ in range(2):
        a.grad = np.cos(a.data)
        opt.step()
    b.data[...] = a.data
    clone = LearnedOptimizer([b], lstm)
    clone.load_state_dict(opt.state_dict())
    for p, o in ((a, opt), (b, clone)):
        p.grad = np.cos(p.data)
        o.step()
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.allclose(opt.state[0]["lstm_h"], 0)


def torch_meta_loss(m: LSTMOptimizer, W, y, theta0, steps: int, phi: list[torch.Tensor]):
    """The same unroll in torch float64, gradients of f detached (first order)."""
    L = m.layers
    ws, bs, w_out, w_skip, b_out = phi[:L], phi[L:2 * L], phi[2 * L], phi[2 * L + 1], phi[2 * L + 2]
    W, y = torch.tensor(W), torch.tensor(y)
    H, n = m.hidden, theta0.size
    theta = torch.tensor(theta0, requires_grad=True)
    state = [(torch.zeros(n, H), torch.zeros(n, H)) for _ in range(L)]
    total = 0.0
    for _ in range(steps):
        f = ((W @ theta - y) ** 2).sum()
        g = torch.autograd.grad(f, theta, retain_graph=True)[0].detach().reshape(-1, 1)
        big = g.abs() >= math.exp(-m.p)
        x = torch.cat([torch.where(big, torch.log(g.abs().clamp_min(1e-300)) / m.p, -torch.ones_like(g)),
                       torch.where(big, torch.sign(g), g * math.exp(m.p))], dim=1)
        inputs, new = x, []
        for (h, c), w, b in zip(state, ws, bs, strict=True):
            z = torch.cat([inputs, h], dim=1) @ w + b
            i, fg, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.sigmoid(z[:, 2 * H:3 * H])
            c = fg * c + i * torch.tanh(z[:, 3 * H:])
            h = o * torch.tanh(c)
            new.append((h, c))
            inputs = h
        state = new
        theta = theta + ((h @ w_out + x @ w_skip + b_out) * m.out_scale).reshape(-1)
        total = total + ((W @ theta - y) ** 2).sum()
    return total


def test_first_order_meta_gradient_matches_torch():
    rng = np.random.default_rng(3)
    loss, theta0, (W, y) = quadratic(rng, n=4)
    m = LSTMOptimizer(hidden=3, layers=2, seed=4, dtype=np.float64)
    m.w_skip.data[...] = rng.standard_normal(m.w_skip.shape)
    from lamina.autograd import grad
    meta, _, _ = m.unroll(loss, theta0, steps=4)
    got = grad(meta, m.parameters())
    phi = [torch.tensor(p.data, requires_grad=True) for p in m.parameters()]
    expected_loss = torch_meta_loss(m, W, y, theta0[0], 4, phi)
    expected = torch.autograd.grad(expected_loss, phi)
    np.testing.assert_allclose(float(meta.data), expected_loss.item(), rtol=1e-12)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(g), e.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("second_order", [False, True])
def test_meta_gradient_against_finite_differences(second_order):
    """Second order: the full derivative, finite differences of the meta-loss. First order on a
    linear optimizee (f = c . theta, constant gradient) where dropping d2f changes nothing."""
    rng = np.random.default_rng(5)
    if second_order:
        loss, theta0, _ = quadratic(rng, n=3)
    else:
        c = rng.standard_normal(3)
        theta0 = [rng.standard_normal(3)]

        def loss(theta):
            return (Tensor(c, dtype=np.float64) * theta[0]).sum()
    m = LSTMOptimizer(hidden=2, layers=2, seed=6, dtype=np.float64)
    from lamina.autograd import grad
    meta, _, _ = m.unroll(loss, theta0, steps=3, second_order=second_order)
    got = grad(meta, m.parameters())

    def value():
        return float(m.unroll(loss, theta0, steps=3)[0].data)

    eps = 1e-6
    for p, g in zip(m.parameters(), got, strict=True):
        for idx in list(np.ndindex(p.shape))[:3]:
            old = p.data[idx]
            p.data[idx] = old + eps
            up = value()
            p.data[idx] = old - eps
            down = value()
            p.data[idx] = old
            np.testing.assert_allclose(np.asarray(g)[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-6)


def final_losses(run, problems) -> float:
    return float(np.mean([run(loss, theta0) for loss, theta0, _ in problems]))


def baseline(cls, lr: float):
    def run(loss, theta0):
        p = Parameter(theta0[0].copy(), dtype=np.float64)
        opt = cls([p], lr=lr)
        for _ in range(20):
            p.grad = grad(loss([p]), [p])[0]
            opt.step()
        return float(loss([p]).data)
    return run


def test_meta_trained_lstm_beats_tuned_sgd_and_adam_on_new_quadratics():
    m = LSTMOptimizer(hidden=20, layers=2, seed=0, dtype=np.float64)
    history = m.meta_train(lambda rng: quadratic(rng)[:2], iterations=150, steps=20, unroll=5, meta_lr=0.01)
    assert np.mean(history[-20:]) < np.mean(history[:20])
    test_rng = np.random.default_rng(1234)
    problems = [quadratic(test_rng) for _ in range(20)]
    learned = final_losses(lambda loss, theta0: m.optimize(loss, theta0, 20)[1][-1], problems)
    sgd = min(final_losses(baseline(SGD, lr), problems) for lr in (0.001, 0.003, 0.01, 0.03))
    adam = min(final_losses(baseline(Adam, lr), problems) for lr in (0.01, 0.03, 0.1, 0.3, 1.0))
    print(f"mean loss after 20 steps: learned {learned:.3f}, best SGD {sgd:.3f}, best Adam {adam:.3f}")
    assert learned < 0.8 * sgd


def test_readme_example_runs(capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Learned optimizers and hypergradient descent", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["True", "True"]
