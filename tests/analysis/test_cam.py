"""lamina.analysis.cam: Grad-CAM and Grad-CAM++ against torch, heat maps that find the
object on a trained network, occlusion sensitivity, Score-CAM, drawing, and the model left as
it was (hooks removed, modes restored)."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis.cam import grad_cam, grad_cam_plus_plus, occlusion_sensitivity, plot_cam, score_cam
from lamina.errors import ShapeError
from lamina.nn import module as module_internals


def cnn_and_torch_twin(dtype):
    """Conv2D(4, 3) + ReLU + Conv2D(5, 3) + ReLU + Flatten + Dense(3) on 8x8x2 inputs, and a torch
    function giving (class scores, the second ReLU's output in NCHW) with the same weights."""
    lamina.set_default_dtype(dtype)
    model = nn.Sequential(nn.Conv2D(4, 3), nn.ReLU(), nn.Conv2D(5, 3), nn.ReLU(), nn.Flatten(), nn.Dense(3))
    model.build((None, 8, 8, 2))
    convs = [torch.tensor(model[i].weight.numpy().transpose(0, 3, 1, 2)) for i in (0, 2)]
    biases = [torch.tensor(model[i].bias.numpy()) for i in (0, 2)]
    dense_w, dense_b = torch.tensor(model[5].weight.numpy().T), torch.tensor(model[5].bias.numpy())

    def torch_forward(x_nhwc: torch.Tensor):
        h = torch.relu(torch.nn.functional.conv2d(x_nhwc.permute(0, 3, 1, 2), convs[0], biases[0]))
        activation = torch.relu(torch.nn.functional.conv2d(h, convs[1], biases[1]))
        flat = activation.permute(0, 2, 3, 1).flatten(1)  # lamina flattens NHWC
        return torch.nn.functional.linear(flat, dense_w, dense_b), activation

    return model, torch_forward


def torch_cam(torch_forward, x: np.ndarray, target, plus_plus: bool) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) written directly in torch on NCHW activations."""
    logits, activation = torch_forward(torch.tensor(x, requires_grad=True))
    chosen = logits.argmax(dim=1) if target is None else torch.as_tensor(target).expand(len(x))
    (g,) = torch.autograd.grad(logits[torch.arange(len(x)), chosen].sum(), activation)
    activation = activation.detach()
    if plus_plus:
        denominator = 2 * g**2 + activation.sum(dim=(2, 3), keepdim=True) * g**3
        alpha = torch.where(denominator != 0, g**2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    else:
        weights = g.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (cam - low) / torch.where(span > 0, span, 1.0), 0.0).numpy()


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("plus_plus", [False, True], ids=["grad_cam", "grad_cam_plus_plus"])
@pytest.mark.parametrize("target", [None, 1, np.array([2, 0, 1, 2])], ids=["predicted", "int", "per-image"])
def test_grad_cam_matches_torch(dtype, rtol, plus_plus, target):
    model, torch_forward = cnn_and_torch_twin(dtype)
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 2)).astype(dtype)
    cam = (grad_cam_plus_plus if plus_plus else grad_cam)(model, x, target, layer=model[3])
    assert cam.shape == (4, 8, 8) and cam.dtype == dtype
    expected = torch_cam(torch_forward, x, target, plus_plus)
    assert expected.max() == 1  # a non-trivial map, scaled to [0, 1]
    assert_close(cam, expected, rtol, "heat maps")


def test_the_layer_may_be_named_or_found_as_the_last_four_dimensional_output():
    model, _ = cnn_and_torch_twin(np.float64)
    x = np.random.default_rng(2).uniform(0, 1, (2, 8, 8, 2))
    by_module = grad_cam(model, x, layer=model[3])
    assert_close(grad_cam(model, x, layer="relu_1"), by_module, 0, "by name")
    assert_close(grad_cam(model, x), by_module, 0, "default layer")
    assert np.abs(grad_cam(model, x, layer=model[2]) - by_module).max() > 1e-3  # the conv before its ReLU differs


# -- a network trained to tell a bright square from a dark one -----------------------------------
SIZE, HALF = 16, 8


def squares(count: int, seed: int):
    """Noise images around 0 with a 4x4 square inside one of the four quadrants (drawn at random),
    bright (+1, class 0) or dark (-1, class 1); returns images, labels, each square's top-left
    corner and its quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-0.2, 0.2, (count, SIZE, SIZE, 1)).astype(np.float32)
    labels = np.arange(count) % 2
    quadrants = rng.integers(0, 4, count)
    corners = rng.integers(1, HALF - 4, (count, 2)) + np.stack([quadrants // 2, quadrants % 2], axis=1) * HALF
    for image, label, (top, left) in zip(images, labels, corners):
        image[top:top + 4, left:left + 4] = 1.0 if label == 0 else -1.0
    return images, labels, corners, quadrants


@pytest.fixture(scope="module")
def square_finder():
    """A small CNN with global average pooling trained (under a second) to 100% test accuracy."""
    lamina.set_default_dtype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Conv2D(8, 3, padding="same"), nn.ReLU(), nn.GlobalAvgPool2D(), nn.Dense(2))
    images, labels, _, _ = squares(256, seed=0)
    model.build((None, SIZE, SIZE, 1))
    opt = optim.Adam(model.parameters(), lr=0.01)
    order = np.random.default_rng(1)
    for _ in range(40):
        for batch in np.array_split(order.permutation(len(images)), 8):
            opt.zero_grad()
            F.categorical_cross_entropy(model(lamina.tensor(images[batch])), labels[batch], from_logits=True).backward()
            opt.step()
    test_images, test_labels, corners, quadrants = squares(16, seed=5)
    with lamina.no_grad():
        accuracy = (model(lamina.tensor(test_images)).numpy().argmax(axis=1) == test_labels).mean()
    assert accuracy == 1.0
    return model, test_images, test_labels, corners, quadrants


def quadrant_share(maps: np.ndarray, quadrants: np.ndarray) -> np.ndarray:
    """The share of each map's mass that lies in the given quadrant."""
    rows, cols = quadrants // 2 * HALF, quadrants % 2 * HALF
    inside = [m[r:r + HALF, c:c + HALF].sum() for m, r, c in zip(maps, rows, cols)]
    return np.array(inside) / maps.sum(axis=(1, 2))


@pytest.mark.parametrize("method", [grad_cam, grad_cam_plus_plus, score_cam])
def test_heat_maps_concentrate_in_the_quadrant_of_the_evidence(square_finder, method):
    model, images, labels, _, quadrants = square_finder
    maps = method(model, images, labels, layer=model[4])
    assert maps.shape == (16, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    share = quadrant_share(maps, quadrants)
    assert share.min() > 0.45 and share.mean() > 0.6, share  # a uniform map puts 0.25 there
    hot = quadrant_share(np.where(maps >= 0.5, maps, 0), quadrants)
    assert hot.min() > 0.85, hot
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
    assert [row // HALF * 2 + col // HALF for row, col in peaks] == list(quadrants)


def test_occlusion_drops_the_score_most_where_the_square_is(square_finder):
    model, images, labels, corners, quadrants = square_finder
    maps = occlusion_sensitivity(model, images, labels, window=4, stride=2, baseline=0.0)
    assert maps.shape == (16, SIZE, SIZE)
    for heat, (top, left) in zip(maps, corners):
        row, col = np.unravel_index(heat.argmax(), heat.shape)
        assert top - 2 <= row < top + 6 and left - 2 <= col < left + 6
    assert quadrant_share(np.maximum(maps, 0), quadrants).min() > 0.7


def test_occlusion_is_the_mean_score_drop_over_the_covering_windows():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Flatten(), nn.Dense(3))
    model.build((None, 5, 4, 2))
    x = np.random.default_rng(3).uniform(0, 1, (2, 5, 4, 2))
    weight = model[1].weight.numpy().reshape(5, 4, 2, 3)
    baseline = 0.25
    maps = occlusion_sensitivity(model, x, target=np.array([0, 2]), window=(3, 2), stride=2, baseline=baseline)
    # windows start at rows 0, 2 and cols 0, 2: each window's drop is sum_window (x - b) w_c
    for i, c in enumerate([0, 2]):
        contribution = ((x[i] - baseline) * weight[..., c]).sum(axis=-1)
        total, count = np.zeros((5, 4)), np.zeros((5, 4))
        for top in (0, 2):
            for left in (0, 2):
                total[top:top + 3, left:left + 2] += contribution[top:top + 3, left:left + 2].sum()
                count[top:top + 3, left:left + 2] += 1
        assert_close(maps[i], total / count, 1e-10, f"occlusion map {i}")
    probability = occlusion_sensitivity(model, x, target=0, window=2, stride=1, of="probability", batch_size=3)
    assert probability.shape == (2, 5, 4) and np.abs(probability).max() <= 1


# -- the model is left as it was ---------------------------------------------------------------
def no_hooks_left(model) -> bool:
    return all(not m.__dict__.get("_module_hooks") for m in model.modules()) and \
        module_internals._run_module_hooks not in module_internals._CALL_INTERCEPTORS


def test_hooks_are_removed_and_modes_restored_also_after_an_error():
    model = nn.Sequential(nn.Conv2D(4, 3), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Dense(3))
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32)
    model(lamina.tensor(x))
    model[3].eval()
    modes = [m.training for m in model.modules()]
    running = model[1].running_mean.copy()
    for method in (grad_cam, grad_cam_plus_plus, score_cam):
        first = method(model, x, layer="relu")
        assert_close(method(model, x, layer="relu"), first, 0, "repeatable in evaluation mode")
        assert no_hooks_left(model) and [m.training for m in model.modules()] == modes
    occlusion_sensitivity(model, x, window=4, stride=4)
    with pytest.raises(ShapeError, match="layer 'flatten'.*4-D"):
        grad_cam(model, x, layer="flatten")
    assert no_hooks_left(model) and [m.training for m in model.modules()] == modes
    assert_close(model[1].running_mean, running, 0, "running mean")
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_bad_arguments_are_refused_with_clear_errors():
    model, _ = cnn_and_torch_twin(np.float64)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 2))
    with pytest.raises(ValueError, match="no sub-module 'nope'"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(ValueError, match="not a sub-module"):
        grad_cam(model, x, layer=nn.ReLU())
    with pytest.raises(TypeError, match="layer must be"):
        grad_cam(model, x, layer=3)
    with pytest.raises(ShapeError, match="grad_cam: input of shape"):
        grad_cam(model, x[0])
    with pytest.raises(ValueError, match="target classes must lie in"):
        grad_cam(model, x, target=7)
    with pytest.raises(RuntimeError, match="no_grad"), lamina.no_grad():
        grad_cam(model, x)
    with pytest.raises(ValueError, match="window .* larger"):
        occlusion_sensitivity(model, x, window=9)
    with pytest.raises(ValueError, match="stride must be"):
        occlusion_sensitivity(model, x, stride=0)
    with pytest.raises(ShapeError, match="baseline of shape"):
        occlusion_sensitivity(model, x, baseline=np.zeros(3))
    with pytest.raises(ValueError, match="of must be"):
        occlusion_sensitivity(model, x, of="score")
    assert no_hooks_left(model)


def test_plot_cam_writes_a_png(tmp_path):
    model, _ = cnn_and_torch_twin(np.float64)
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 2))
    with pytest.raises(ShapeError, match="1 or 3 channels"):
        plot_cam(x, grad_cam(model, x), tmp_path / "two_channels.png")
    rgb = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3))
    path = plot_cam(rgb, grad_cam(model, x), tmp_path / "cam.png", titles=["a", "b"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShapeError, match="do not match"):
        plot_cam(rgb, np.zeros((2, 4, 4)), tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.png"]  # failed calls leave nothing
