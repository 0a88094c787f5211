"""SlowFast: the lateral connection against a float64 torch rewrite (outputs, input and
parameter gradients), float64 gradient checks of the blocks, the pathways' shapes and temporal
kernels, pack_pathways, the R50's parameter count, saving, input errors and a learning test
on moving squares against a frame-averaging baseline."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from moving_squares import moving_squares
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import accuracy, check_gradients, perturb_parameters, randn, run_readme_section, train_classifier
from lamina import models, nn, optim
from lamina.errors import ShapeError
from lamina.nn import init


# -- torch rewrite ------------------------------------------------------------------------------
def _ncdhw(x):
    return x.permute(0, 4, 1, 2, 3)


def _ndhwc(x):
    return x.permute(0, 2, 3, 4, 1)


def torch_lateral(slow, fast, weight, gamma, beta, alpha, eps=1e-5):
    """[slow, ReLU(BN(conv_{k x 1 x 1, stride alpha}(fast)))] on the channel axis, BN with the
    batch's statistics; lamina's (K, k, 1, 1, C) weight as torch's (K, C, k, 1, 1)."""
    k = weight.shape[1]
    z = torch.nn.functional.conv3d(_ncdhw(fast), weight.permute(0, 4, 1, 2, 3), stride=(alpha, 1, 1),
                                   padding=(k // 2, 0, 0))
    z = torch.nn.functional.batch_norm(z, None, None, gamma, beta, training=True, eps=eps)
    return torch.cat([slow, _ndhwc(torch.relu(z))], dim=-1)


def test_lateral_connection_matches_the_torch_rewrite(float64):
    lateral = models.SlowFastLateral(3, alpha=4, kernel=5, ratio=2)
    slow, fast = randn(2, 3, 4, 5, 6, seed=1), randn(2, 12, 4, 5, 3, seed=2)
    out, passed = lateral(lamina.tensor(slow), lamina.tensor(fast))
    assert out.shape == (2, 3, 4, 5, 12) and passed.shape == fast.shape
    perturb_parameters(lateral)
    conv, bn = lateral.fuse["0"], lateral.fuse["1"]
    params = [conv.weight, bn.weight, bn.bias]
    ours = [lamina.tensor(a, requires_grad=True) for a in (slow, fast)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (slow, fast)]
    torch_params = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    yl = lateral(*ours)[0]
    yt = torch_lateral(*theirs, *torch_params, alpha=4)
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = randn(*yl.shape, seed=5)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up)).sum().backward()
    for a, b in zip([*ours, *params], [*theirs, *torch_params]):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_blocks_gradients(float64):
    block = models.SlowFastBottleneck(3, 2, 4, temporal_kernel=3, stride=2)
    x = randn(2, 3, 4, 4, 3, seed=3)
    block(lamina.tensor(x))
    perturb_parameters(block, scale=0.1)
    assert check_gradients(lambda t: block(t), x)
    lateral = models.SlowFastLateral(2, alpha=2, kernel=3)
    slow, fast = randn(2, 2, 3, 3, 2, seed=4), randn(2, 4, 3, 3, 2, seed=5)
    lateral(lamina.tensor(slow), lamina.tensor(fast))
    perturb_parameters(lateral, scale=0.1)
    assert check_gradients(lambda s, f: lateral(s, f)[0], slow, fast)


# -- shapes ------------------------------------------------------------------------------------
def test_pathway_shapes_and_temporal_kernels():
    model = models.slowfast_tiny(5, (8, 16, 16, 1), alpha=4, width=8, beta_inv=4)
    clips = random_inputs((2, 8, 16, 16, 1), 0)
    slow, fast = models.pack_pathways(clips, 4)
    np.testing.assert_array_equal(slow, clips[:, [0, 4]])
    assert model(clips).shape == (2, 5)
    seen = {}
    for stage in ("slow_res2", "fast_res2", "slow_res5", "fast_res5", "lateral_res4"):
        model._modules[stage].register_forward_hook(lambda m, i, o, s=stage: seen.setdefault(s, o))
    features = model.forward_features(slow, fast)
    # slow: 2 frames, 4x4 after the stem, 32 then 256 channels; fast: 8 frames, 8 then 64
    assert seen["slow_res2"].shape == (2, 2, 4, 4, 32) and seen["fast_res2"].shape == (2, 8, 4, 4, 8)
    assert seen["slow_res5"].shape == (2, 2, 1, 1, 256) and seen["fast_res5"].shape == (2, 8, 1, 1, 64)
    assert seen["lateral_res4"][0].shape == (2, 2, 1, 1, 128 + 2 * 32)
    assert features.shape == (2, 256 + 64)
    kernels = [model._modules[f"{p}_res{s}"]["0"].a["0"].kernel_size[0] for p in ("slow", "fast") for s in range(2, 6)]
    assert kernels == [1, 1, 3, 3, 3, 3, 3, 3]
    assert model.slow_stem["0"].kernel_size == (1, 7, 7) and model.fast_stem["0"].kernel_size == (5, 7, 7)
    model.eval()
    with lamina.no_grad():
        np.testing.assert_allclose(model(clips).numpy(), model(slow, fast).numpy(), rtol=1e-6)


def test_parameter_count_of_the_r50():
    model = models.slowfast_r50()
    assert not model.built
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 34_480_216            # MMAction2's 4x16 R50: 34.5M
    assert round(model.num_parameters() / 1e6, 1) == 34.5
    wide = models.SlowFast(400, fusion_kernel=7)           # PySlowFast's 8x8 R50 laterals: 34.6M
    with init.meta():
        wide.build((None, 32, 224, 224, 3))
    assert round(wide.num_parameters() / 1e6, 1) == 34.6


def test_config_and_save_load(tmp_path):
    model = models.slowfast_tiny(3, (8, 16, 16, 2), alpha=4, width=8, beta_inv=4)
    model.build((None, 8, 16, 16, 2))
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 8, 16, 16, 2), 8), tmp_path / "slowfast.lamina")


def test_bad_inputs():
    with pytest.raises(ShapeError, match="multiple of alpha=4"):
        models.pack_pathways(np.zeros((1, 6, 8, 8, 1)), 4)
    lateral = models.SlowFastLateral(2, alpha=4)
    with pytest.raises(ShapeError, match="do not line up"):
        lateral(np.zeros((1, 3, 4, 4, 5), np.float32), np.zeros((1, 8, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="multiple of beta_inv"):
        models.SlowFast(width=10, beta_inv=4)
    model = models.slowfast_tiny()
    with pytest.raises(ShapeError, match="multiple of alpha=4"):
        model(np.zeros((1, 6, 16, 16, 1), np.float32))


# -- learning ----------------------------------------------------------------------------------
def frame_average_baseline(x, y, rng):
    """An MLP on the mean of the frames, which cannot tell opposite directions apart."""
    mean = x.mean(axis=1)
    model = nn.Sequential(nn.Flatten(), nn.Dense(32, activation="relu"), nn.Dense(4))
    train_classifier(model, mean[:400], y[:400], [rng.integers(0, 400, 32) for _ in range(200)],
                     optim.Adam(model, lr=1e-2))
    return accuracy(model, mean[400:], y[400:])


def test_slowfast_learns_the_direction_of_motion():
    lamina.manual_seed(0)
    x, y = moving_squares(600, seed=0)
    rng = np.random.default_rng(0)
    baseline = frame_average_baseline(x, y, rng)
    model = models.slowfast_tiny(4, (8, 12, 12, 1), alpha=4, width=16, beta_inv=4)
    start = time.perf_counter()
    train_classifier(model, x[:400], y[:400], [rng.integers(0, 400, 32) for _ in range(40)],
                     optim.Adam(model, lr=1e-2))
    seconds = time.perf_counter() - start
    held_out = accuracy(model, x[400:], y[400:])
    # measured: 0.975 on the 200 held-out clips (0.99, 1.0 with seeds 1, 2; chance 0.25; the
    # frame-averaging baseline 0.51, 0.53, 0.495), in about 4 s on one thread
    assert held_out > 0.8 and held_out > baseline + 0.25 and baseline < 0.65
    assert seconds < 40


def test_readme_example_runs():
    printed, names = run_readme_section("Video classifiers: SlowFast and ViViT")
    assert type(names["slowfast"]) is models.SlowFast and type(names["vivit"]) is models.ViViT
    assert printed.split("\n")[:2] == ["(2, 4)", "(2, 4)"]
