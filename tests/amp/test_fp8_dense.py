"""FP8Dense: outputs and gradients against a float64 torch rewrite of the hybrid recipe (torch's
float8 casts for the rounding), its scaling state against a NumPy simulation of delayed and
current scaling, evaluation mode, and the config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.amp import FP8Dense, convert_to_fp8
from lamina.autograd import grad

E4M3, E5M2 = 448.0, 57344.0


class RoundTo(torch.autograd.Function):
    """FP8(v s) as float64 (not divided back); the gradient passes straight through, times s."""

    @staticmethod
    def forward(ctx, v, s, dtype):
        ctx.s = s
        return (v * s).to(dtype).to(torch.float64)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.s, None, None


class GradientTo(torch.autograd.Function):
    """Identity forward; the backward rounds the gradient to E5M2 with scale s, saturating (a
    delayed scale can be too large for a step's gradient)."""

    @staticmethod
    def forward(ctx, v, s):
        ctx.s = s
        return v.clone()

    @staticmethod
    def backward(ctx, g):
        rounded = (g * ctx.s).clamp(-E5M2, E5M2).to(torch.float8_e5m2).to(torch.float64) / ctx.s
        return g + (rounded - g).detach(), None           # straight through, for second derivatives


def torch_fp8_dense(x, w, b, c, scales):
    s_x, s_w, s_g = (float(s) for s in scales)
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    product = RoundTo.apply(xt, s_x, torch.float8_e4m3fn) @ RoundTo.apply(wt, s_w, torch.float8_e4m3fn)
    y = GradientTo.apply(product / (s_x * s_w), s_g) + bt
    (y * torch.tensor(c, dtype=torch.float64)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def scale_of(amax, fmax, margin):
    return np.float32(np.float32(fmax) / np.float32(amax)) / np.float32(2.0 ** margin)


@pytest.mark.parametrize("scaling", ["delayed", "current"])
def test_forward_gradients_and_scaling_state_equal_float64_torch_and_numpy(scaling):
    rng = np.random.default_rng(0)
    length, margin = 2, 1
    layer = FP8Dense(4, scaling=scaling, amax_history_len=length, margin=margin)
    layer.build((None, 5))
    layer.bias.data[...] = rng.standard_normal(4).astype(np.float32)
    history, scales = np.zeros((3, length), np.float32), np.ones(3, np.float32)
    for step, size in enumerate([1.0, 30.0, 0.02, 5.0]):
        x = (size * rng.standard_normal((6, 5))).astype(np.float32)
        c = (1e-3 * size * rng.standard_normal((6, 4))).astype(np.float32)
        layer.weight.data *= np.float32(1.5)
        w, b = layer.weight.numpy().copy(), layer.bias.numpy().copy()
        amaxes = np.array([np.abs(a).max() for a in (x, w, c)], np.float32)
        fmax = np.array([E4M3, E4M3, E5M2], np.float32)
        if scaling == "current":
            scales = np.array([scale_of(a, f, margin) for a, f in zip(amaxes, fmax)], np.float32)
        used = scales.copy()
        if scaling == "delayed":
            np.testing.assert_array_equal(layer.scale, used)

        xt = lamina.tensor(x, requires_grad=True)
        y = layer(xt)
        (y * lamina.tensor(c)).sum().backward()
        expected = torch_fp8_dense(x, w, b, c, used)
        for got, want, what in zip((y.numpy(), xt.grad, layer.weight.grad, layer.bias.grad), expected,
                                   ("y", "dx", "dw", "db")):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7 * np.abs(want).max(), err_msg=f"{step} {what}")
        layer.weight.grad = layer.bias.grad = None

        history = np.roll(history, 1, axis=1)
        history[:, 0] = amaxes
        if scaling == "delayed":
            scales = np.array([scale_of(h.max(), f, margin) for h, f in zip(history, fmax)], np.float32)
        np.testing.assert_array_equal(layer.amax_history, history)
        np.testing.assert_array_equal(layer.scale, scales)


def test_rounding_changes_the_result_and_evaluation_keeps_the_state():
    rng = np.random.default_rng(1)
    layer = FP8Dense(3, activation="relu")
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = layer(x).numpy()
    float_y = np.maximum(x @ layer.weight.numpy() + layer.bias.numpy(), 0)
    assert 0 < np.abs(y - float_y).max() < 0.1 * np.abs(float_y).max()
    layer.eval()
    state = {k: np.array(v) for k, v in layer.state_dict().items()}
    layer(10 * x)
    assert all(np.array_equal(state[k], v) for k, v in layer.state_dict().items())


def test_float_gradients_option_and_scale_one_underflow():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    c = (1e-6 * rng.standard_normal((8, 3))).astype(np.float32)     # gradients below E5M2's 2^-16
    grads = {}
    for name, kwargs in {"float": {"fp8_gradients": False}, "none": {"scaling": "none"},
                         "current": {"scaling": "current"}}.items():
        layer = FP8Dense(3, use_bias=False, **kwargs)
        layer.build((None, 5))
        layer.weight.data[...] = rng.standard_normal((5, 3)).astype(np.float32) if name == "float" else grads["w"]
        grads.setdefault("w", layer.weight.numpy().copy())
        xt = lamina.tensor(x, requires_grad=True)
        (layer(xt) * lamina.tensor(c)).sum().backward()
        grads[name] = xt.grad
    assert np.mean(grads["none"] == 0) > 0.9 and np.mean(grads["current"] == 0) == 0
    np.testing.assert_allclose(grads["current"], grads["float"], rtol=0.3, atol=0.1 * np.abs(grads["float"]).max())


def test_config_round_trip_and_errors():
    layer = FP8Dense(3, margin=2, amax_history_len=5, amax_compute_algo="most_recent", scaling="current")
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    assert type(twin) is FP8Dense and twin.get_config() == layer.get_config()
    for kwargs, match in (({"margin": -1}, "margin"), ({"scaling": "dynamic"}, "scaling"),
                          ({"amax_history_len": 0}, "amax_history_len"), ({"amax_compute_algo": "mean"}, "algo")):
        with pytest.raises(ValueError, match=match):
            FP8Dense(3, **kwargs)
    with pytest.raises(lamina.errors.ShapeError, match="FP8Dense"):
        layer.build((None, 4))
        layer(np.zeros((2, 5), np.float32))


def test_second_derivatives_equal_float64_torch():
    """Gradients of a gradient: the roundings stay straight-through and every gradient that
    reaches the layer's output is rounded to E5M2 (scale 1 here: each backward is a step of
    the scaling state, so delayed scales would change between the two)."""
    rng = np.random.default_rng(3)
    layer = FP8Dense(3, scaling="none")
    layer.build((None, 4))
    x, c, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((5, 4), (5, 3), (5, 4)))
    w, b = layer.weight.numpy().copy(), layer.bias.numpy().copy()
    xl = lamina.tensor(x, requires_grad=True)
    (gx,) = grad((layer(xl) ** 2 * lamina.tensor(c)).sum(), [xl], create_graph=True)
    (gx * lamina.tensor(v)).sum().backward()

    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    product = RoundTo.apply(xt, 1.0, torch.float8_e4m3fn) @ RoundTo.apply(wt, 1.0, torch.float8_e4m3fn)
    y = GradientTo.apply(product, 1.0) + bt
    (gt,) = torch.autograd.grad((y ** 2 * torch.tensor(c, dtype=torch.float64)).sum(), xt, create_graph=True)
    (gt * torch.tensor(v, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(gx.numpy(), gt.detach().numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=2e-5, atol=1e-6)


def test_convert_to_fp8_swaps_dense_layers_and_saves(tmp_path):
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Dense(5, activation="relu"), nn.LayerNorm(), nn.Dense(2))
    x = rng.standard_normal((6, 3)).astype(np.float32)
    model(x)
    fp8 = convert_to_fp8(model, scaling="current", margin=1)
    assert [type(m).__name__ for m in fp8] == ["FP8Dense", "LayerNorm", "FP8Dense"]
    assert [type(m).__name__ for m in model] == ["Dense", "LayerNorm", "Dense"]
    built = nn.Sequential(FP8Dense(5, activation="relu", scaling="current", margin=1), nn.LayerNorm(),
                          FP8Dense(2, scaling="current", margin=1))
    built(x)
    for a, b in zip(model.parameters(), built.parameters()):
        b.data = a.data.copy()
    for m in (fp8, built):
        m(x).sum().backward()
    np.testing.assert_array_equal(fp8(x).numpy(), built(x).numpy())
    np.testing.assert_array_equal(fp8[2].scale, built[2].scale)
    assert not np.array_equal(fp8(x).numpy(), model(x).numpy())
    lamina.save(fp8.eval(), tmp_path / "fp8.safetensors")
    twin = lamina.load(tmp_path / "fp8.safetensors")
    np.testing.assert_array_equal(twin(x).numpy(), fp8(x).numpy())
    np.testing.assert_array_equal(twin[0].amax_history, fp8[0].amax_history)
    with pytest.raises(ValueError, match="scaling"):
        convert_to_fp8(model, scaling="per-block")
