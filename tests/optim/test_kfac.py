"""K-FAC and EKFAC: the Kronecker factors against torch and direct computations, the damped
solve against numpy.linalg, five steps against a torch rewrite of the algorithm, the true and
MC Fisher, training, state dicts and errors."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import nn
from lamina.data.datasets.digits import load_digits
from lamina.functional import cross_entropy, mse_loss
from lamina.optim import EKFAC, KFAC, SGD, Adam, exact_fisher_block, kfac_factors, kronecker_factors


@pytest.fixture(autouse=True)
def _float64():
    before = lamina.get_default_dtype()
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(before)


def tiny_mlp(seed: int = 0, n_in: int = 4, hidden: int = 5, classes: int = 3) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Dense(hidden, activation="tanh"), nn.Dense(classes))
    model(lamina.Tensor(np.zeros((1, n_in))))
    for layer in (model[0], model[1]):
        layer.weight.data[...] = rng.normal(0, 0.7, layer.weight.shape)
        layer.bias.data[...] = rng.normal(0, 0.3, layer.bias.shape)
    return model


def batch(seed: int, n: int = 6, n_in: int = 4, classes: int = 3):
    rng = np.random.default_rng(100 + seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, classes, n)


def torch_mlp_pass(weights, x, y):
    """Per-layer abar, per-sample g = N dL/dz and the (d_A, d_G) gradient matrices of the mean loss."""
    w1, b1, w2, b2 = (torch.tensor(a, requires_grad=True) for a in weights)
    xt = torch.tensor(x)
    z1 = xt @ w1 + b1
    h = torch.tanh(z1)
    z2 = h @ w2 + b2
    z1.retain_grad()
    z2.retain_grad()
    torch.nn.functional.cross_entropy(z2, torch.tensor(y)).backward()
    n = len(x)
    ones = np.ones((n, 1))
    abar = [np.hstack([x, ones]), np.hstack([h.detach().numpy(), ones])]
    g = [n * z1.grad.numpy(), n * z2.grad.numpy()]
    grads = [np.vstack([w1.grad.numpy(), b1.grad.numpy()[None]]), np.vstack([w2.grad.numpy(), b2.grad.numpy()[None]])]
    return abar, g, grads


def weights_of(model):
    return [model[0].weight.data.copy(), model[0].bias.data.copy(), model[1].weight.data.copy(),
            model[1].bias.data.copy()]


# -- the factors ------------------------------------------------------------------------------------

def test_dense_factors_equal_per_sample_outer_products():
    model = tiny_mlp()
    x, y = batch(0)
    factors = kronecker_factors(model, lamina.Tensor(x), y)
    abar, g, _ = torch_mlp_pass(weights_of(model), x, y)
    for name, a_rows, g_rows in zip(["dense", "dense_1"], abar, g):
        a_factor, g_factor = factors[name]
        np.testing.assert_allclose(a_factor, a_rows.T @ a_rows / len(x), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g_factor, g_rows.T @ g_rows / len(x), rtol=1e-12, atol=1e-14)


def test_one_example_kronecker_product_is_the_exact_fisher_block():
    model = tiny_mlp(1)
    x, y = batch(1, n=1)
    factors = kronecker_factors(model, lamina.Tensor(x), y)
    _, _, grads = torch_mlp_pass(weights_of(model), x, y)
    for name, layer, grad in zip(["dense", "dense_1"], [model[0], model[1]], grads):
        block = exact_fisher_block(model, layer, lamina.Tensor(x), y)
        vec = grad.reshape(-1)
        np.testing.assert_allclose(block, np.outer(vec, vec), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.kron(*factors[name]), block, rtol=1e-10, atol=1e-14)
    x4, y4 = batch(2, n=4)                       # several examples: a mean of outer products, not A kron G
    block = exact_fisher_block(model, model[1], lamina.Tensor(x4), y4)
    a_factor, g_factor = kronecker_factors(model, lamina.Tensor(x4), y4)["dense_1"]
    assert block.shape == np.kron(a_factor, g_factor).shape
    assert not np.allclose(block, np.kron(a_factor, g_factor))


def test_conv_factors_equal_a_direct_computation_over_patches_and_locations():
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Conv2D(3, 3, stride=2, padding=1, activation="relu"), nn.Flatten(), nn.Dense(2))
    x = rng.normal(size=(2, 5, 5, 2))
    y = np.array([0, 1])
    model(lamina.Tensor(x))
    conv = model[0]
    factors = kronecker_factors(model, lamina.Tensor(x), y)
    a_factor, g_factor = factors["conv2d"]

    weight = torch.tensor(conv.weight.data.transpose(0, 3, 1, 2), requires_grad=True)   # (K, c, f, f)
    z = torch.nn.functional.conv2d(torch.tensor(x.transpose(0, 3, 1, 2)), weight, torch.tensor(conv.bias.data),
                                   stride=2, padding=1)
    z.retain_grad()
    flat = torch.relu(z).permute(0, 2, 3, 1).reshape(2, -1)             # NHWC flatten, as lamina's
    logits = flat @ torch.tensor(model[2].weight.data) + torch.tensor(model[2].bias.data)
    torch.nn.functional.cross_entropy(logits, torch.tensor(y)).backward()
    g = 2 * z.grad.numpy().transpose(0, 2, 3, 1)                         # per-sample dl_i/dz: (N, 3, 3, K)

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    a_sum, g_sum, locations = 0, 0, 0
    for n in range(2):
        for i in range(3):
            for j in range(3):
                patch = np.append(padded[n, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :].reshape(-1), 1.0)
                a_sum = a_sum + np.outer(patch, patch)
                g_sum = g_sum + np.outer(g[n, i, j], g[n, i, j])
                locations += 1
    np.testing.assert_allclose(a_factor, a_sum / 2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g_factor, g_sum / locations, rtol=1e-10, atol=1e-14)


# -- the preconditioner ------------------------------------------------------------------------------

def test_update_is_the_damped_kronecker_solve():
    model = tiny_mlp(4)
    x, y = batch(4)
    a_factor, g_factor = kronecker_factors(model, lamina.Tensor(x), y)["dense_1"]
    damping = 0.05
    opt = KFAC(model, lr=1.0, damping=damping, momentum=0.0, kl_clip=None)
    before = np.vstack([model[1].weight.data, model[1].bias.data[None]])
    opt.zero_grad()
    cross_entropy(model(lamina.Tensor(x)), y).backward()
    grad = np.vstack([model[1].weight.grad, model[1].bias.grad[None]])     # (d_A, d_G)
    opt.step()
    update = before - np.vstack([model[1].weight.data, model[1].bias.data[None]])

    pi = np.sqrt((np.trace(a_factor) / len(a_factor)) / (np.trace(g_factor) / len(g_factor)))
    damped_a = a_factor + np.sqrt(damping) / pi * np.eye(len(a_factor))
    damped_g = g_factor + pi * np.sqrt(damping) * np.eye(len(g_factor))
    expected = np.linalg.inv(damped_a) @ grad @ np.linalg.inv(damped_g)   # G^-1 grad A^-1 in (d_A, d_G) layout
    np.testing.assert_allclose(update, expected, rtol=1e-9, atol=1e-12)
    solved = np.linalg.solve(np.kron(damped_a, damped_g), grad.reshape(-1)).reshape(grad.shape)
    np.testing.assert_allclose(update, solved, rtol=1e-9, atol=1e-12)


def reference_steps(start, steps, *, lr, damping, momentum, weight_decay, stat_decay, t_inv, t_stats, kl_clip,
                    eigen_corrected=False):
    """K-FAC (or EKFAC) on the tiny MLP, written from the formulas of the module docstring."""
    w = [a.copy() for a in start]
    a_run, g_run, bases, scales = [None, None], [None, None], [None, None], [None, None]
    buffers = [np.zeros_like(a) for a in w]
    trajectory, clip_factors = [], []
    for t in range(steps):
        x, y = batch(t)
        abar, g, grads = torch_mlp_pass(w, x, y)
        n = len(x)
        for layer in range(2):
            if t % t_stats == 0:
                a_batch, g_batch = abar[layer].T @ abar[layer] / n, g[layer].T @ g[layer] / n
                first = a_run[layer] is None
                a_run[layer] = a_batch if first else stat_decay * a_run[layer] + (1 - stat_decay) * a_batch
                g_run[layer] = g_batch if first else stat_decay * g_run[layer] + (1 - stat_decay) * g_batch
            if t % t_inv == 0:
                bases[layer] = np.linalg.eigh(a_run[layer]) + np.linalg.eigh(g_run[layer])
                scales[layer] = np.outer(bases[layer][0], bases[layer][2])
            if eigen_corrected and t % t_stats == 0:
                qa, qg = bases[layer][1], bases[layer][3]
                per_sample = np.einsum("ia,ib->iab", abar[layer] @ qa, g[layer] @ qg)
                scales[layer] = stat_decay * scales[layer] + (1 - stat_decay) * (per_sample ** 2).mean(axis=0)
        directions = []
        for layer in range(2):
            la, qa, lg, qg = bases[layer]
            rotated = qa.T @ grads[layer] @ qg
            if eigen_corrected:
                rotated = rotated / (scales[layer] + damping)
            else:
                pi = np.sqrt(la.mean() / lg.mean())
                rotated = rotated / np.outer(la + np.sqrt(damping) / pi, lg + np.sqrt(damping) * pi)
            directions.append(qa @ rotated @ qg.T)
        vg = sum(float((v * m).sum()) for v, m in zip(directions, grads))
        nu = min(1.0, np.sqrt(kl_clip / (lr ** 2 * vg)))
        clip_factors.append(nu)
        parts = [directions[0][:-1], directions[0][-1], directions[1][:-1], directions[1][-1]]
        for k, part in enumerate(parts):
            d = nu * part + weight_decay * w[k]
            buffers[k] = momentum * buffers[k] + d
            w[k] = w[k] - lr * buffers[k]
        trajectory.append([a.copy() for a in w])
    return trajectory, clip_factors


@pytest.mark.parametrize("cls", [KFAC, EKFAC])
@pytest.mark.parametrize(("t_inv", "t_stats", "kl_clip"), [(2, 1, 1e-3), (3, 2, 10.0)])
def test_five_steps_equal_the_reference(cls, t_inv, t_stats, kl_clip):
    hp = {"lr": 0.3, "damping": 0.02, "momentum": 0.9, "weight_decay": 0.01, "stat_decay": 0.8}
    model = tiny_mlp(5)
    expected, clip_factors = reference_steps(weights_of(model), 5, t_inv=t_inv, t_stats=t_stats, kl_clip=kl_clip,
                                             eigen_corrected=cls is EKFAC, **hp)
    assert (min(clip_factors) < 0.5) == (kl_clip < 1)             # the clipping acts in one case only
    opt = cls(model, T_inv=t_inv, T_stats=t_stats, kl_clip=kl_clip, **hp)
    for t in range(5):
        x, y = batch(t)
        opt.zero_grad()
        cross_entropy(model(lamina.Tensor(x)), y).backward()
        opt.step()
        for got, want in zip(weights_of(model), expected[t]):
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    start = weights_of(tiny_mlp(5))
    assert max(np.abs(a - b).max() for a, b in zip(expected[-1], start)) > 1e-2     # the weights did move


# -- the true and MC Fisher ------------------------------------------------------------------------

def test_true_fisher_is_the_expectation_over_the_predicted_classes():
    model = tiny_mlp(6)
    x, y = batch(6, n=4)
    opt = KFAC(model, lr=0.1, fisher="true")
    opt.zero_grad()
    out = model(lamina.Tensor(x))
    opt.backward_fisher(out)
    cross_entropy(out, y).backward()
    opt.step()
    expected = [0, 0]
    weights = weights_of(tiny_mlp(6))
    w1, b1, w2, b2 = map(torch.tensor, weights)
    probs = torch.softmax(torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2, 1).numpy()
    for i in range(len(x)):
        for c in range(3):
            _, g, _ = torch_mlp_pass(weights, x[i:i + 1], np.array([c]))
            for layer in range(2):
                expected[layer] = expected[layer] + probs[i, c] * np.outer(g[layer][0], g[layer][0]) / len(x)
    for layer in range(2):
        np.testing.assert_allclose(opt.factors[layer]["G"], expected[layer], rtol=1e-10, atol=1e-14)
    hidden = np.hstack([np.tanh(x @ weights[0] + weights[1]), np.ones((len(x), 1))])
    np.testing.assert_allclose(expected[1], (np.diag(probs.sum(axis=0)) - probs.T @ probs) / len(x), atol=1e-12)
    np.testing.assert_allclose(opt.factors[1]["A"], hidden.T @ hidden / len(x), rtol=1e-12)


def test_mc_fisher_approaches_the_true_fisher():
    x = np.repeat(batch(7, n=1)[0], 4000, axis=0)
    factors = []
    for fisher in ("true", "mc"):
        model = tiny_mlp(7)
        opt = KFAC(model, lr=0.1, fisher=fisher)
        out = model(lamina.Tensor(x))
        opt.backward_fisher(out, seed=0)
        cross_entropy(out, np.zeros(len(x), dtype=np.int64)).backward()
        opt.step()
        factors.append(opt.factors[1]["G"])
    exact, sampled = factors
    assert np.abs(sampled - exact).max() < 0.05 * np.abs(exact).max()
    assert np.abs(sampled - exact).max() > 0                     # a sample, not the expectation


def test_gaussian_fisher_of_the_output_layer_is_the_identity():
    x = np.repeat(batch(8, n=1)[0], 4000, axis=0)
    for fisher, tolerance in (("true", 1e-12), ("mc", 0.1)):
        model = tiny_mlp(8)
        opt = KFAC(model, lr=0.1, fisher=fisher)
        out = model(lamina.Tensor(x))
        opt.backward_fisher(out, likelihood="gaussian", seed=1)
        (0.5 * ((out - lamina.Tensor(np.zeros((len(x), 3)))) ** 2).sum()).backward()
        opt.step()
        np.testing.assert_allclose(opt.factors[1]["G"], np.eye(3), atol=tolerance)


def test_sampled_fisher_needs_backward_fisher():
    model = tiny_mlp()
    x, y = batch(0)
    opt = KFAC(model, lr=0.1, fisher="mc")
    cross_entropy(model(lamina.Tensor(x)), y).backward()
    with pytest.raises(RuntimeError, match="backward_fisher"):
        opt.step()
    with pytest.raises(ValueError, match="empirical"):
        KFAC(tiny_mlp(), lr=0.1).backward_fisher(model(lamina.Tensor(x)))


# -- other layers, state, errors -----------------------------------------------------------------

def test_recorders_share_layers_and_stop_with_the_optimizer():
    model = tiny_mlp(10)
    x, y = batch(10)
    opt = KFAC(model, lr=0.1)
    expected = kronecker_factors(model, lamina.Tensor(x), y)["dense_1"]      # recorded by both
    cross_entropy(model(lamina.Tensor(x)), y).backward()
    opt.step()
    np.testing.assert_allclose(opt.factors[1]["A"], expected[0], rtol=1e-12)
    np.testing.assert_allclose(opt.factors[1]["G"], expected[1], rtol=1e-12)
    recorder = opt.recorder
    assert any(r is recorder for r in kfac_factors._ATTACHED)
    del opt
    gc.collect()
    assert not any(r is recorder for r in kfac_factors._ATTACHED)


def test_float32_models_keep_float32_state():
    lamina.set_default_dtype(np.float32)
    model = nn.Sequential(nn.Conv2D(2, 3, padding="same", activation="relu"), nn.Flatten(), nn.Dense(3))
    x, y = np.random.default_rng(0).normal(size=(4, 5, 5, 1)).astype(np.float32), np.array([0, 1, 2, 0])
    model(lamina.Tensor(x))
    opt = EKFAC(model, lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        cross_entropy(model(lamina.Tensor(x)), y).backward()
        opt.step()
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    assert {a.dtype for state in opt.factors for a in state.values()} == {np.dtype(np.float32)}


def test_other_layers_take_a_plain_momentum_step():
    model = nn.Sequential(nn.Dense(5), nn.LayerNorm(), nn.Dense(3))
    x, y = batch(8)
    model(lamina.Tensor(x))
    norm = model[1]
    start = norm.weight.data.copy()
    opt = KFAC(model, lr=0.1, momentum=0.5, weight_decay=0.1)
    assert opt.layers == [model[0], model[2]]
    cross_entropy(model(lamina.Tensor(x)), y).backward()
    grad = norm.weight.grad.copy()
    opt.step()
    np.testing.assert_allclose(norm.weight.data, start - 0.1 * (grad + 0.1 * start), rtol=1e-12)


@pytest.mark.parametrize("cls", [KFAC, EKFAC])
def test_state_dict_round_trip_resumes_identically(cls):
    model, twin = tiny_mlp(9), tiny_mlp(9)
    opt = cls(model, lr=0.2, T_inv=3)

    def train(m, o, steps):
        for t in steps:
            x, y = batch(t)
            o.zero_grad()
            cross_entropy(m(lamina.Tensor(x)), y).backward()
            o.step()

    train(model, opt, range(4))
    saved = json.loads(json.dumps(opt.state_dict(), default=lambda a: a.tolist()))
    for p, q in zip(twin.parameters(), model.parameters()):
        p.data[...] = q.data
    resumed = cls(twin, lr=0.2, T_inv=3)
    resumed.load_state_dict(saved)
    train(model, opt, range(4, 7))
    train(twin, resumed, range(4, 7))
    for a, b in zip(weights_of(model), weights_of(twin)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    saved["factors"]["0"]["A"] = np.zeros((2, 2)).tolist()
    with pytest.raises(ValueError, match="'A' of layer 0"):
        resumed.load_state_dict(saved)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no Dense or Conv2D"):
        KFAC(nn.Sequential(nn.LayerNorm(), nn.ReLU()), lr=0.1)
    with pytest.raises(ValueError, match="no weights yet"):
        KFAC(nn.Sequential(nn.Dense(3)), lr=0.1)
    with pytest.raises(ValueError, match="damping must be a finite number > 0, got 0"):
        KFAC(tiny_mlp(), lr=0.1, damping=0)
    with pytest.raises(ValueError, match="damping"):
        KFAC(tiny_mlp(), lr=0.1, damping=-1e-3)
    with pytest.raises(ValueError, match="fisher must be one of"):
        KFAC(tiny_mlp(), lr=0.1, fisher="exact")
    with pytest.raises(ValueError, match="T_inv must be a positive integer"):
        KFAC(tiny_mlp(), lr=0.1, T_inv=0)

    class Growing(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Dense(4)

        def forward(self, x):
            h = self.first(x)
            return self.later(h) if hasattr(self, "later") else h

    model = Growing()
    x, y = batch(0)
    model(lamina.Tensor(x))
    opt = KFAC(model, lr=0.1)
    model.later = nn.Dense(3)
    cross_entropy(model(lamina.Tensor(x)), y).backward()
    with pytest.raises(RuntimeError, match=r"\['later.weight', 'later.bias'\] were built after the optimizer"):
        opt.step()


# -- training ---------------------------------------------------------------------------------------

def digits(n: int = 512, image: bool = False):
    x, y = load_digits(size=8)
    x = x[:n].astype(np.float64) / 255
    return (x if image else x.reshape(n, -1)), y[:n]


def train(model, opt, x, y, steps: int, batch_size: int = 128) -> list[float]:
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        rows = rng.choice(len(x), batch_size, replace=False)
        opt.zero_grad()
        loss = cross_entropy(model(lamina.Tensor(x[rows])), y[rows])
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    with lamina.no_grad():
        return losses + [float(cross_entropy(model(lamina.Tensor(x)), y).data)]


def test_kfac_trains_a_digits_mlp_faster_than_sgd_and_adam():
    x, y = digits()
    finals = {}
    for name, make in {"sgd": lambda m: SGD(m, lr=0.1, momentum=0.9), "adam": lambda m: Adam(m, lr=1e-2),
                       "kfac": lambda m: KFAC(m, lr=0.1, damping=1e-2, T_inv=5),
                       "ekfac": lambda m: EKFAC(m, lr=0.1, damping=1e-2, T_inv=5)}.items():
        lamina.manual_seed(0)
        model = nn.Sequential(nn.Dense(32, activation="tanh"), nn.Dense(10))
        model(lamina.Tensor(x[:1]))
        finals[name] = train(model, make(model), x, y, steps=40)[-1]
    print("training loss after 40 steps:", {k: round(v, 4) for k, v in finals.items()})
    assert finals["kfac"] < 0.5 * finals["sgd"]
    assert finals["kfac"] < 1.5 * finals["adam"]
    assert finals["ekfac"] < 0.5 * finals["sgd"]


def test_kfac_trains_a_digits_autoencoder_faster_than_sgd():
    x, _ = digits()
    finals = {}
    for name, make in {"sgd": lambda m: SGD(m, lr=0.1, momentum=0.9), "adam": lambda m: Adam(m, lr=1e-2),
                       "kfac": lambda m: KFAC(m, lr=0.3, damping=1e-2, T_inv=5)}.items():
        lamina.manual_seed(0)
        model = nn.Sequential(nn.Dense(32, activation="tanh"), nn.Dense(8, activation="tanh"),
                              nn.Dense(32, activation="tanh"), nn.Dense(64))
        model(lamina.Tensor(x[:1]))
        opt = make(model)
        rng = np.random.default_rng(0)
        for _ in range(40):
            rows = lamina.Tensor(x[rng.choice(len(x), 128, replace=False)])
            opt.zero_grad()
            mse_loss(model(rows), rows).backward()
            opt.step()
        with lamina.no_grad():
            finals[name] = float(mse_loss(model(lamina.Tensor(x)), lamina.Tensor(x)).data)
    print("autoencoder reconstruction loss after 40 steps:", {k: round(v, 4) for k, v in finals.items()})
    assert finals["kfac"] < 0.7 * finals["sgd"]
    assert finals["kfac"] < finals["adam"]


def test_kfac_trains_a_small_cnn():
    x, y = digits(256, image=True)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(6, 3, activation="relu"), nn.Conv2D(8, 3, stride=2, activation="relu"),
                          nn.Flatten(), nn.Dense(10))
    model(lamina.Tensor(x[:1]))
    losses = train(model, KFAC(model, lr=0.05, damping=1e-2, T_inv=5), x, y, steps=25, batch_size=64)
    print("CNN loss:", round(losses[0], 3), "->", round(losses[-1], 3))
    assert losses[-1] < 0.3 * losses[0]


def test_readme_example_runs():
    printed, names = run_readme_section("Natural-gradient training: K-FAC")
    assert names["losses"][-1] < 0.5 * names["losses"][0]
    assert "loss" in printed
