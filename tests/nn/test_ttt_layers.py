"""TTT-Linear and TTT-MLP (Sun et al. 2024): the dual form equals the primal token loop
(float64); mini-batch 1 without the inner norm is online gradient descent on
||k W + b - v||^2; causality; values and gradients equal a torch rewrite of the primal
algorithm whose inner gradients come from autograd; gradient checks; associative recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import ShapeError
from lamina.autograd import grad
from lamina.nn.ttt import TTTMLP, TTTLinear


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def make(cls, mini_batch_size, inner_norm=True, d_model=8, heads=2, base_lr=4.0, seed=0):
    """A layer whose inner weights, norms and lr bias are randomised so that every part matters."""
    layer = cls(d_model, heads, mini_batch_size=mini_batch_size, base_lr=base_lr, inner_norm=inner_norm)
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        if name.startswith(("inner_", "post_", "lr_bias")):
            p.data[...] = p.data + rng.normal(0.0, 0.3, p.data.shape)
    return layer


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
@pytest.mark.parametrize("mini_batch_size", [1, 4, 7])
def test_dual_form_equals_primal_loop(cls, mini_batch_size):
    layer, x = make(cls, mini_batch_size), randn(2, 7, 8, seed=1)
    dual, primal = layer.inner_outputs(x, "dual").data, layer.inner_outputs(x, "primal").data
    np.testing.assert_allclose(dual, primal, rtol=0, atol=1e-10)
    np.testing.assert_allclose(layer(x).data, layer(x, form="primal").data, rtol=0, atol=1e-10)
    assert np.abs(dual - make(cls, 7 if mini_batch_size == 1 else 1).inner_outputs(x).data).max() > 1e-3


def test_mini_batch_one_without_norm_is_online_gradient_descent():
    """W_t = W_{t-1} - eta_t 2 k_t^T (k_t W_{t-1} + b_{t-1} - v_t), z_t = q_t W_t + b_t, in NumPy."""
    layer, x = make(TTTLinear, 1, inner_norm=False), randn(2, 6, 8, seed=2)
    p = {name: q.data for name, q in layer.named_parameters()}
    h, d = 2, 4
    heads = [(x @ p[key]).reshape(2, 6, h, d) for key in ("theta_q", "theta_k", "theta_v")]
    eta = 4.0 / (1.0 + np.exp(-(x @ p["theta_lr"] + p["lr_bias"]))) / d
    expected = np.zeros((2, h, 6, d))
    for n in range(2):
        for head in range(h):
            w, b = p["inner_w1"][head].copy(), p["inner_b1"][head].copy()
            for t in range(6):
                q, k, v = (part[n, t, head] for part in heads)
                error = k @ w + b - v
                w = w - eta[n, t, head] * 2 * np.outer(k, error)
                b = b - eta[n, t, head] * 2 * error
                expected[n, head, t] = q @ w + b
    np.testing.assert_allclose(layer.inner_outputs(x).data, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_causal(cls):
    layer, x = make(cls, 4), randn(1, 9, 8, seed=3)
    changed = x.copy()
    changed[:, 5:] += 1.0
    before, after = layer(x).data, layer(changed).data
    np.testing.assert_allclose(before[:, :5], after[:, :5], rtol=0, atol=1e-12)
    assert np.abs(before[:, 5:] - after[:, 5:]).min() > 0


def torch_ttt(x, p, heads, mini_batch_size, base_lr, norm, eps=1e-6):
    """The paper's primal algorithm in torch; inner gradients from autograd with create_graph."""
    n, t_len, dim = x.shape
    d = dim // heads
    gelu = torch.nn.functional.gelu

    def split(y):
        return y.reshape(n, t_len, heads, d).transpose(1, 2)

    def layer_norm(z, gamma, beta):
        centred = z - z.mean(-1, keepdim=True)
        return centred / torch.sqrt((centred ** 2).mean(-1, keepdim=True) + eps) * gamma + beta

    def f(a, weights):
        for i, (w, b) in enumerate(weights):
            a = (a.unsqueeze(-2) @ w).squeeze(-2) + b
            if i < len(weights) - 1:
                a = gelu(a, approximate="tanh")
        return layer_norm(a, p["inner_gamma"], p["inner_beta"]) if norm else a

    q, k, v = (split(x @ p[key]) for key in ("theta_q", "theta_k", "theta_v"))
    eta = (base_lr * torch.sigmoid(x @ p["theta_lr"] + p["lr_bias"]) / d).transpose(1, 2)
    layers = 1 + ("inner_w2" in p)
    weights = [tuple(p[f"inner_{kind}{i}"].expand(n, *p[f"inner_{kind}{i}"].shape) for kind in "wb")
               for i in range(1, layers + 1)]
    outputs = []
    for start in range(0, t_len, mini_batch_size):
        first = weights
        flat = [tensor for pair in first for tensor in pair]
        for t in range(start, min(start + mini_batch_size, t_len)):
            loss = ((f(k[:, :, t], first) - v[:, :, t]) ** 2).sum()
            grads = torch.autograd.grad(loss, flat, create_graph=True)
            rate = eta[:, :, t]
            weights = [(w - rate[..., None, None] * grads[2 * i], b - rate[..., None] * grads[2 * i + 1])
                       for i, (w, b) in enumerate(weights)]
            outputs.append(f(q[:, :, t], weights))
    z = torch.stack(outputs, dim=2).transpose(1, 2).reshape(n, t_len, dim)
    z = layer_norm(z, p["post_gamma"], p["post_beta"])
    return (gelu(x @ p["theta_gate"], approximate="tanh") * z) @ p["theta_out"]


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_values_and_gradients_equal_torch(cls):
    layer, x = make(cls, 3), randn(2, 7, 8, seed=4)
    weight = randn(2, 7, 8, seed=5)
    names = [name for name, _ in layer.named_parameters()]
    x_lamina = lamina.Tensor(x, requires_grad=True)
    out = layer(x_lamina)
    grads = grad(lamina.functional.sum(out * weight), [x_lamina] + layer.parameters())
    torch_params = {name: torch.tensor(q.data, requires_grad=True) for name, q in layer.named_parameters()}
    x_torch = torch.tensor(x, requires_grad=True)
    expected = torch_ttt(x_torch, torch_params, 2, 3, 4.0, True)
    expected_grads = torch.autograd.grad((expected * torch.tensor(weight)).sum(),
                                         [x_torch] + [torch_params[name] for name in names])
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, got, want in zip(["x"] + names, grads, expected_grads):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_gradient_check(cls):
    layer = make(cls, 2, d_model=4, heads=1)
    assert check_gradients(lambda x: lamina.functional.sum(layer(x) ** 2), randn(1, 5, 4, seed=6))


def test_second_derivatives_through_inner_updates():
    """A Hessian-vector product of the outer loss with respect to the input, against torch."""
    layer, x = make(TTTLinear, 2, d_model=4, heads=1), randn(1, 4, 4, seed=7)
    direction = randn(1, 4, 4, seed=8)
    x_lamina = lamina.Tensor(x, requires_grad=True)
    (g,) = grad(lamina.functional.sum(layer(x_lamina) ** 2), [x_lamina], create_graph=True)
    (hvp,) = grad(lamina.functional.sum(g * direction), [x_lamina])
    params = {name: torch.tensor(q.data, requires_grad=True) for name, q in layer.named_parameters()}
    x_torch = torch.tensor(x, requires_grad=True)
    (g_torch,) = torch.autograd.grad((torch_ttt(x_torch, params, 1, 2, 4.0, True) ** 2).sum(), [x_torch],
                                     create_graph=True)
    (hvp_torch,) = torch.autograd.grad((g_torch * torch.tensor(direction)).sum(), [x_torch])
    np.testing.assert_allclose(hvp, hvp_torch.numpy(), rtol=1e-8, atol=1e-10)


def test_learns_associative_recall():
    """Tokens carry a (key, value) pair as two one-hots, the last token a key alone; the value
    stored with it can only reach the readout through the inner model. Chance: 1/8."""
    lamina.set_default_dtype(np.float32)
    from lamina import nn, optim
    rng = np.random.default_rng(0)
    keys, pairs = 8, 4

    def batch(n):
        x, y = np.zeros((n, pairs + 1, 2 * keys), np.float32), np.zeros(n, np.int64)
        for i in range(n):
            chosen, values = rng.choice(keys, pairs, replace=False), rng.integers(0, keys, pairs)
            x[i, np.arange(pairs), chosen] = 1
            x[i, np.arange(pairs), keys + values] = 1
            j = rng.integers(pairs)
            x[i, pairs, chosen[j]], y[i] = 1, values[j]
        return x, y

    layer, head = TTTLinear(2 * keys, 1, mini_batch_size=2, base_lr=8.0), nn.Dense(keys)
    head.build((None, 2 * keys))
    opt = optim.Adam(layer.parameters() + head.parameters(), lr=0.02)
    for _ in range(120):
        x, y = batch(64)
        loss = lamina.functional.cross_entropy(head(layer(x)[:, -1]), lamina.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(400)
    accuracy = (head(layer(x)[:, -1]).data.argmax(-1) == y).mean()
    assert accuracy > 0.8, accuracy


def test_errors_and_config():
    with pytest.raises(ValueError, match="TTTLinear: d_model 6 is not divisible by num_heads 4"):
        TTTLinear(6, 4)
    layer = TTTMLP(8, 2, mini_batch_size=4)
    with pytest.raises(ShapeError, match=r"TTTMLP: expected an input \(batch, time, 8\)"):
        layer(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="form must be 'dual' or 'primal'"):
        layer(np.zeros((2, 3, 8)), form="scan")
    assert layer.get_config()["mini_batch_size"] == 4
    assert layer.inner_w1.shape == (2, 4, 16) and layer.inner_w2.shape == (2, 16, 4)


def test_readme_section():
    printed, _ = run_readme_section("Test-time-training layers")
    assert printed.splitlines() == ["(2, 12, 16) True", "(2, 12, 16) True"]


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_save_and_load_round_trip(cls, tmp_path):
    layer, x = make(cls, 3), randn(1, 5, 8, seed=9)
    lamina.save(layer, tmp_path / "ttt.safetensors")
    twin = lamina.load(tmp_path / "ttt.safetensors")
    assert type(twin) is cls and twin.get_config() == layer.get_config()
    np.testing.assert_array_equal(twin(x).data, layer(x).data)
