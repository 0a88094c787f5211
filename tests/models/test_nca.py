"""Neural cellular automata: perception filters, stochastic updates, alive masking, one step
against a float64 PyTorch rewrite, and short training runs (growing, self-classifying digits)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina.models import (
    NeuralCA,
    SelfClassifyingCA,
    circle_damage_masks,
    nca_perception_kernels,
    normalize_gradients,
    soft_life_step,
    train_nca,
    train_self_classifying_ca,
)


def torch_perceive(x_nhwc, kernels, channels):
    weight = torch.as_tensor(kernels, dtype=x_nhwc.dtype).permute(0, 3, 1, 2)   # (C m, 1, 3, 3)
    return tF.conv2d(x_nhwc.permute(0, 3, 1, 2), weight, padding=1, groups=channels)


def torch_step(x_nhwc, w1, b1, w2, fire_mask, kernels, channels, threshold):
    """The article's update written in PyTorch's NCHW layout; returns NHWC."""
    x = x_nhwc.permute(0, 3, 1, 2)
    hidden = torch.relu(tF.conv2d(torch_perceive(x_nhwc, kernels, channels), w1.permute(0, 3, 1, 2), b1))
    delta = tF.conv2d(hidden, w2.permute(0, 3, 1, 2))
    before = tF.max_pool2d(x[:, 3:4], 3, 1, 1) > threshold
    updated = x + delta * torch.as_tensor(fire_mask, dtype=x.dtype).permute(0, 3, 1, 2)
    after = tF.max_pool2d(updated[:, 3:4], 3, 1, 1) > threshold
    return (updated * (before & after).to(x.dtype)).permute(0, 2, 3, 1)


def float64_model(channels=5, hidden=7, seed=0):
    ca = NeuralCA(channels, hidden, seed=seed)
    rng = np.random.default_rng(seed)
    ca.add_parameter("w1", rng.standard_normal((hidden, 1, 1, 3 * channels)) * 0.4)
    ca.add_parameter("b1", rng.standard_normal(hidden) * 0.1)
    ca.add_parameter("w2", rng.standard_normal((channels, 1, 1, hidden)) * 0.05)
    return ca


def test_perception_matches_torch_depthwise_conv():
    ca = NeuralCA(channels=6, hidden=8, laplacian=True)
    x = randn(2, 7, 9, 6, seed=1)
    ours = ca.perceive(lamina.tensor(x, dtype=np.float64)).numpy()
    theirs = torch_perceive(torch.tensor(x), nca_perception_kernels(6, True), 6).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (2, 7, 9, 24)
    assert_close(ours, theirs, 1e-12)


def test_perception_of_a_ramp_gives_its_gradient():
    # v(y, x) = 2 x + 3 y: Sobel-x/8 gives dv/dx = 2, Sobel-y/8 gives dv/dy = 3 away from the border
    ys, xs = np.mgrid[0:6, 0:7]
    ramp = np.zeros((1, 6, 7, 4))
    ramp[0, ..., 1] = 2.0 * xs + 3.0 * ys
    p = NeuralCA(channels=4, hidden=4).perceive(lamina.tensor(ramp, dtype=np.float64)).numpy()[0, 1:-1, 1:-1]
    np.testing.assert_allclose(p[..., 3], ramp[0, 1:-1, 1:-1, 1], atol=1e-12)     # identity of channel 1
    np.testing.assert_allclose(p[..., 4], 2.0, atol=1e-12)
    np.testing.assert_allclose(p[..., 5], 3.0, atol=1e-12)


def test_zero_initialised_update_leaves_state_unchanged():
    ca = NeuralCA(channels=8, hidden=16, seed=0)
    state = np.abs(randn(2, 6, 6, 8, seed=2)).astype(np.float32) + 0.2      # every cell alive
    np.testing.assert_array_equal(ca.step(state, 3, rng=np.random.default_rng(0)).numpy(), state)
    grown = ca.step(ca.seed_state(6, 6), 5, rng=np.random.default_rng(0)).numpy()
    np.testing.assert_array_equal(grown, ca.seed_state(6, 6))


def test_stochastic_updates_are_reproducible_and_fire_rate_sets_the_fraction():
    ca = float64_model()
    ca.fire_rate = 0.3
    state = np.abs(randn(1, 6, 6, 5, seed=3)) + 0.5
    a = ca.step(state, 2, rng=np.random.default_rng(7)).numpy()
    b = ca.step(state, 2, rng=np.random.default_rng(7)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, ca.step(state, 2, rng=np.random.default_rng(8)).numpy())
    big = np.abs(randn(4, 40, 40, 5, seed=4)) + 0.5
    changed = np.any(ca.update(big, rng=np.random.default_rng(1)).numpy() != big, axis=-1)
    n = changed.size                                                          # 6400 cells: sd of the rate ~ 0.006
    assert abs(changed.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)


def test_alive_masking_zeroes_cells_without_a_live_neighbour():
    ca = NeuralCA(channels=4, hidden=4, alive_threshold=0.1)
    state = np.full((1, 7, 7, 4), 0.5)
    state[..., 3] = 0.05
    state[0, 1, 1, 3] = 0.8                                                   # one live cell
    state[0, 5, 5, 3] = 0.1                                                   # at the threshold: dead
    out = ca.update(lamina.tensor(state, dtype=np.float64), fire_mask=np.ones((1, 7, 7, 1), bool)).numpy()[0]
    keep = np.zeros((7, 7), bool)
    keep[0:3, 0:3] = True
    np.testing.assert_array_equal(out[keep], state[0][keep])
    assert np.all(out[~keep] == 0.0)


def test_one_step_values_and_parameter_gradients_match_torch_float64():
    ca = float64_model(channels=5, hidden=7, seed=1)
    rng = np.random.default_rng(2)
    state = rng.uniform(0.0, 1.0, (2, 6, 5, 5))
    state[0, :2, :, 3] = 0.0                                                  # some dead cells
    mask = rng.random((2, 6, 5, 1)) < 0.5
    upstream = rng.standard_normal(state.shape)
    x = lamina.tensor(state, requires_grad=True, dtype=np.float64)
    out = ca.update(x, fire_mask=mask)
    lamina.functional.sum(out * lamina.tensor(upstream, dtype=np.float64)).backward()
    tx = torch.tensor(state, requires_grad=True)
    tw = [torch.tensor(p.numpy(), requires_grad=True) for p in (ca.w1, ca.b1, ca.w2)]
    t_out = torch_step(tx, *tw, mask, nca_perception_kernels(5), 5, 0.1)
    (t_out * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), t_out.detach().numpy(), 1e-12)
    assert_close(np.asarray(x.grad), tx.grad.numpy(), 1e-10, "state gradient")
    for p, t in zip((ca.w1, ca.b1, ca.w2), tw):
        assert_close(np.asarray(p.grad), t.grad.numpy(), 1e-10,
                     "parameter gradient")


def test_step_gradient_check_float64():
    ca = float64_model(channels=4, hidden=5, seed=3)
    state = np.random.default_rng(4).uniform(0.5, 1.0, (1, 4, 4, 4))           # alive, away from the threshold
    mask = np.random.default_rng(5).random((1, 4, 4, 1)) < 0.5
    assert check_gradients(lambda x: ca.update(x, fire_mask=mask), state)


def test_normalize_gradients_gives_unit_norms_and_damage_masks_erase_circles():
    ca = float64_model(seed=4)
    state = np.random.default_rng(6).uniform(0.3, 1.0, (1, 5, 5, 5))
    lamina.functional.sum(ca.update(state, fire_mask=np.ones((1, 5, 5, 1), bool)) ** 2).backward()
    normalize_gradients(ca.parameters())
    for p in ca.parameters():
        assert np.linalg.norm(np.asarray(p.grad)) == pytest.approx(1.0, abs=1e-6)
    masks = circle_damage_masks(20, 16, 16, np.random.default_rng(0))
    assert masks.shape == (20, 16, 16, 1) and set(np.unique(masks)) <= {0.0, 1.0}
    erased = 1.0 - masks.mean(axis=(1, 2, 3))
    assert np.all(erased > 0.0) and np.all(erased < 0.5)


def test_growing_a_small_pattern_lowers_the_loss():
    target = np.zeros((12, 12, 4), np.float32)
    target[3:9, 3:9] = [0.9, 0.2, 0.1, 1.0]
    target[5:7, 5:7, :3] = [0.1, 0.3, 0.9]
    result = train_nca(target, 200, pool_size=32, batch=4, rollout=(8, 12), lr=3e-3, damage=1, channels=8,
                       hidden=32, seed=0)
    start, end = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert end < 0.5 * start, (start, end)
    assert result.pool.shape == (32, 12, 12, 8)


def test_self_classifying_digits_beat_chance():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images[:10] / 16.0, digits.target[:10]             # one of each class
    model, losses = train_self_classifying_ca(images, labels, 60, ca_steps=(8, 12), lr=3e-2, hidden=32, seed=0)
    state = model.step(model.seed_state(images), 10, rng=np.random.default_rng(1))
    assert losses[-1] < losses[0]
    # measured: 0.40 of the cells right (OpenBLAS's own and Haswell kernels alike); chance: 0.1
    assert model.cell_accuracy(state, labels) > 0.3
    np.testing.assert_array_equal(state.numpy()[..., 0], images.astype(np.float32))   # the image never changes
    dead = images <= model.alive_threshold
    assert np.all(state.numpy()[..., 1:][dead] == 0.0)


def test_self_classifying_loss_is_cross_entropy_on_alive_cells():
    model = SelfClassifyingCA(n_classes=3, hidden_channels=2, hidden=4)
    rng = np.random.default_rng(0)
    state = rng.standard_normal((2, 4, 4, model.channels))
    state[..., 0] = rng.uniform(0.0, 0.3, (2, 4, 4))
    labels = np.array([2, 0])
    logits = torch.tensor(state[..., 1:4])
    alive = torch.tensor(state[..., 0] > 0.1)
    target = torch.tensor(labels)[:, None, None].expand(2, 4, 4)
    expected = tF.cross_entropy(logits[alive], target[alive])
    ours = model.loss(lamina.tensor(state, dtype=np.float64), labels)
    assert float(ours.numpy()) == pytest.approx(float(expected), rel=1e-12)


def test_shape_errors_name_the_model():
    with pytest.raises(lamina.errors.ShapeError, match="NeuralCA"):
        NeuralCA(channels=8, hidden=4).step(np.zeros((1, 5, 5, 7), np.float32))
    with pytest.raises(ValueError, match="fire_rate"):
        NeuralCA(fire_rate=0.0)


def numpy_life(grid):
    """Conway's rule on a torus, (H, W) of 0/1."""
    n = sum(np.roll(np.roll(grid, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - grid
    return ((n == 3) | ((grid == 1) & (n == 2))).astype(grid.dtype)


def test_soft_life_rounds_to_conways_rule():
    grid = (np.random.default_rng(0).random((10, 10)) < 0.4).astype(np.float64)
    grid[1:4, 1:4] = [[0, 1, 0], [0, 0, 1], [1, 1, 1]]                        # a glider
    for _ in range(6):
        soft = soft_life_step(grid[None, ..., None], steepness=10.0).numpy()[0, ..., 0]
        expected = numpy_life(grid)
        assert np.all(np.abs(soft - expected) < 0.05)
        grid = np.round(soft)


def test_soft_life_matches_torch_and_gradients():
    def torch_life(a, k=3.0):
        ring = torch.ones(1, 1, 3, 3, dtype=a.dtype)
        ring[0, 0, 1, 1] = 0.0
        x = a.permute(0, 3, 1, 2)
        n = tF.conv2d(tF.pad(x, (1, 1, 1, 1), mode="circular"), ring)
        crowded = torch.sigmoid(k * (3.5 - n))
        out = x * torch.sigmoid(k * (n - 1.5)) * crowded + (1 - x) * torch.sigmoid(k * (n - 2.5)) * crowded
        return out.permute(0, 2, 3, 1)

    grid = np.random.default_rng(1).random((2, 5, 6, 1))
    compare_with_torch(lambda a: soft_life_step(a, 3.0), torch_life, grid, dtype=np.float64)
    assert check_gradients(lambda a: soft_life_step(a, 3.0, padding="zeros"), grid)


def test_readme_example_runs():
    printed, _ = run_readme_section("Neural cellular automata")
    assert printed.split() == ["True", "(1,", "12,", "12,", "8)"]
