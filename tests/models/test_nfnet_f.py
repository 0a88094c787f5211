"""NFNet-F: the NF bottleneck block against a float64 torch rewrite and a gradient check, the
published parameter counts of F0 and F1, signal propagation at initialization, save / load,
and learning digits with adaptive gradient clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina import models
from lamina.data import load_digits
from lamina.optim import AGC, SGD


@pytest.fixture
def f64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _block(stride: int = 2, in_channels: int = 4, **options) -> models.NFBottleneck:
    return models.NFBottleneck(in_channels, 8, stride=stride, beta=1.3, group_size=2, **options)


def _perturb(module, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for param in module.parameters():
        param.data = param.data + rng.normal(scale=0.3, size=param.shape).astype(param.dtype)


# -- the block against a torch rewrite ----------------------------------------------------------
def _torch_ws_conv(x, conv, params, stride: int = 1, padding: int = 0, groups: int = 1):
    """Scaled weight standardization: W_hat = g (W - mean W) / (sqrt(N) sqrt(var W + eps))."""
    w, gain, bias = params[f"{conv}.weight"], params[f"{conv}.gain"], params[f"{conv}.bias"]
    w = w.permute(0, 3, 1, 2)
    fan_in = w[0].numel()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    w_hat = gain.view(-1, 1, 1, 1) * (w - mean) / (math.sqrt(fan_in) * torch.sqrt(var + 1e-6))
    return torch.nn.functional.conv2d(x, w_hat, bias, stride=stride, padding=padding, groups=groups)


def _torch_block(x, params, block: models.NFBottleneck):
    """out = alpha g 2 sigma(SE(f)) f + shortcut, f the grouped bottleneck of act(x) / beta."""
    gamma = models.ACTIVATION_GAMMAS["gelu"]

    def act(z):
        return gamma * torch.nn.functional.gelu(z)

    groups = block.width // block.group_size
    x = x.permute(0, 3, 1, 2)
    a = act(x) / block.beta
    out = _torch_ws_conv(a, "conv0", params)
    out = _torch_ws_conv(act(out), "conv1", params, block.stride, 1, groups)
    out = _torch_ws_conv(act(out), "conv1b", params, 1, 1, groups)
    out = _torch_ws_conv(act(out), "conv2", params)
    squeezed = out.mean(dim=(2, 3), keepdim=True)
    fc1 = params["se.fc1.weight"].permute(0, 3, 1, 2)
    fc2 = params["se.fc2.weight"].permute(0, 3, 1, 2)
    hidden = torch.relu(torch.nn.functional.conv2d(squeezed, fc1, params["se.fc1.bias"]))
    gate = torch.sigmoid(torch.nn.functional.conv2d(hidden, fc2, params["se.fc2.bias"]))
    out = 2.0 * gate * out * block.alpha * params["skip_gain"]
    if block.is_transition:
        pooled = torch.nn.functional.avg_pool2d(a, 2) if block.stride == 2 else a
        shortcut = _torch_ws_conv(pooled, "shortcut", params)
    else:
        shortcut = x
    return (out + shortcut).permute(0, 2, 3, 1)


@pytest.mark.parametrize("stride, in_channels", [(2, 4), (1, 4), (1, 8)])
def test_block_matches_a_float64_torch_rewrite_in_values_and_all_gradients(f64, stride, in_channels):
    block = _block(stride, in_channels)
    x = randn(2, 6, 6, in_channels, seed=1)
    block(lamina.tensor(x))
    _perturb(block)
    ours = lamina.tensor(x, requires_grad=True)
    out = block(ours)
    upstream = randn(*out.shape, seed=2)
    (out * lamina.tensor(upstream)).sum().backward()
    state = block.state_dict()
    theirs = {k: torch.tensor(lamina.backend.to_numpy(v), requires_grad=True) for k, v in state.items()}
    x_t = torch.tensor(x, requires_grad=True)
    out_t = _torch_block(x_t, theirs, block)
    (out_t * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-10, "block output")
    assert_close(ours.grad, x_t.grad.numpy(), 1e-9, "gradient of x")
    params = dict(block.named_parameters())
    assert sorted(params) == sorted(theirs)
    for name, param in params.items():
        assert_close(param.grad, theirs[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_block_passes_a_float64_gradient_check(f64):
    block = _block()
    block(lamina.tensor(randn(1, 4, 4, 4)))
    _perturb(block)
    assert check_gradients(lambda x: block(x), randn(1, 4, 4, 4, seed=5))


def test_block_shapes_and_errors():
    block = models.NFBottleneck(16, 32, stride=2, group_size=8)
    assert block(lamina.tensor(randn(2, 7, 7, 16).astype(np.float32))).shape == (2, 4, 4, 32)
    assert block.width == 16 and block.conv1.groups == 2 and block.se.squeeze_channels == 16
    with pytest.raises(ValueError, match=r"NFBottleneck: the branch width 8 x 0.5 = 4 holds no group of 8"):
        models.NFBottleneck(4, 8, group_size=8)
    with pytest.raises(lamina.errors.ShapeError, match=r"NFBottleneck.*\(2, 7, 7, 3\).*16"):
        models.NFBottleneck(16, 32, group_size=8)(lamina.tensor(randn(2, 7, 7, 3).astype(np.float32)))


# -- presets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, published", [(models.nfnet_f0, 71_489_284), (models.nfnet_f1, 132_634_256)])
def test_presets_have_the_published_parameter_counts(preset, published):
    # 71.5M and 132.6M in the paper's Table 1; the exact counts of the reference (timm dm_nfnet_f0/f1)
    model = preset()
    model.build((1, 32, 32, 3))
    assert sum(p.size for p in model.parameters()) == published


# -- signal propagation ------------------------------------------------------------------------
def test_each_stage_keeps_the_mean_squared_activation_at_its_tracked_value():
    """At initialization (skipinit gains set to 1 so that the branches count), a stage fed
    unit-variance noise scaled to its expected standard deviation beta keeps every block's
    output near the analytic Var(h_{i+1}) = Var(h_i) + alpha^2 (reset to 1 + alpha^2 by the
    transition), and every residual branch near unit variance."""
    alpha = 0.5
    lamina.manual_seed(0)
    model = models.NFNet((3, 3), (64, 96), num_classes=3, stem_widths=(8, 16, 16, 32), group_size=8, alpha=alpha,
                         drop_path=0.0, dropout=0.0)
    model(lamina.tensor(np.zeros((1, 32, 32, 3), np.float32)))
    rng = np.random.default_rng(1)
    expected_var = 1.0
    with lamina.no_grad():
        for stage in model.stages.layers:
            first = stage.layers[0]
            z = rng.standard_normal((4, 16, 16, first.in_channels))
            if first.stride == 2:               # image features are smooth over the 2x2 pooling window,
                z = np.repeat(np.repeat(z, 2, 1), 2, 2)   # white noise would lose 3/4 of its variance there
            h = lamina.tensor((z * first.beta).astype(np.float32))
            for block in stage.layers:
                block._parameters["skip_gain"].data[:] = 1.0
                assert math.isclose(block.beta, math.sqrt(expected_var))
                branch = block.branch(lamina.functional.mul(block.act(h), 1.0 / block.beta)).numpy()
                h = block(h)
                expected_var = (1.0 if block.is_transition else expected_var) + alpha**2
                measured = float((h.numpy() ** 2).mean())
                # measured: 1.26, 1.51, 1.75 against 1.25, 1.50, 1.75 in both stages
                assert abs(measured / expected_var - 1.0) < 0.06, (block.name, measured, expected_var)
                assert 0.6 < float((branch**2).mean()) < 1.3                  # measured: 0.75 - 1.0
    assert math.isclose(model.expected_var, expected_var)


def test_skipinit_blocks_start_as_the_shortcut():
    block = models.NFBottleneck(8, 8, group_size=4)
    x = lamina.tensor(randn(2, 5, 5, 8).astype(np.float32))
    np.testing.assert_array_equal(block(x).numpy(), x.numpy())


# -- saving ------------------------------------------------------------------------------------
def test_the_model_round_trips_through_save_and_load(tmp_path):
    model = models.NFNet((1, 1), (16, 32), num_classes=3, stem_widths=(4, 8, 8, 8), group_size=4)
    x = lamina.tensor(randn(2, 16, 16, 3).astype(np.float32))
    assert model(x).shape == (2, 3)
    _perturb(model)
    model.eval()
    lamina.save(model, tmp_path / "nfnet.safetensors")
    twin = lamina.load(tmp_path / "nfnet.safetensors")
    assert twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(x).numpy(), model(x).numpy())


# -- learning ----------------------------------------------------------------------------------
def _digits_accuracy(seed: int, steps: int = 100) -> float:
    x, y = load_digits(size=8)
    x = np.repeat(np.repeat(x.astype(np.float32) / 255.0, 2, axis=1), 2, axis=2)        # 16x16
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(0).permutation(len(y))
    train, held_out = order[:1400], order[1400:]
    lamina.manual_seed(seed)
    model = models.NFNet((1, 1), (32, 64), num_classes=10, stem_widths=(8, 16, 16, 16), group_size=8,
                         drop_path=0.1, dropout=0.1)
    model(lamina.tensor(x[:1]))
    opt = AGC(SGD(model, lr=0.4, momentum=0.9), clipping=0.05, exclude=model.fc)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.choice(train, 64, replace=False)
        loss = lamina.functional.cross_entropy(model(lamina.tensor(x[rows])), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with lamina.no_grad():
        scores = model(lamina.tensor(x[held_out])).numpy()
    return float((scores.argmax(axis=1) == y[held_out]).mean())


def test_a_tiny_nfnet_with_agc_learns_digits():
    # measured: 0.88, 0.97, 0.94 held-out accuracy (seeds 0, 1, 2) after 100 steps; chance 0.10
    assert _digits_accuracy(0) > 0.8


def test_readme_example():
    title = "NFNet-F, Rainbow on frames, LLaVA files and Mask2Former's deformable pixel decoder"
    printed, _ = run_readme_section(title)
    assert printed.split("\n")[:3] == ["(2, 10)", "(1, 6, 11)", "(1, 4, 8, 8)"]
