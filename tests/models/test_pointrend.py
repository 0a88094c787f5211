"""PointRend: point sampling against torch's ``grid_sample`` (outputs and gradients), the
training points and the subdivision grid against NumPy hand computations with the same seeded
generator, the point head against a float64 torch rewrite, subdivision against the point head's
dense prediction, the loss written out, saving, errors and a learning test on synthetic shapes
(boundary accuracy of the refined prediction above the coarse network's)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import functional as F
from lamina import models, nn, optim
from lamina.errors import ShapeError


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _points(n, p, seed, low=0.02, high=0.98):
    return np.random.default_rng(seed).uniform(low, high, (n, p, 2))


# -- point_sample ------------------------------------------------------------------------------
def test_point_sample_matches_torch_grid_sample(float64):
    features, points = randn(2, 5, 7, 3, seed=1), _points(2, 6, seed=2, low=-0.1, high=1.1)
    fl, pl = lamina.tensor(features, requires_grad=True), lamina.tensor(points, requires_grad=True)
    out = models.point_sample(fl, pl)
    assert out.shape == (2, 6, 3)
    ft = torch.tensor(features.transpose(0, 3, 1, 2), requires_grad=True)      # NCHW at the boundary
    pt = torch.tensor(points, requires_grad=True)
    theirs = torch.nn.functional.grid_sample(ft, 2 * pt[:, :, None] - 1, mode="bilinear", padding_mode="zeros",
                                             align_corners=False)[..., 0].transpose(1, 2)     # (N, P, C)
    np.testing.assert_allclose(out.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    up = randn(2, 6, 3, seed=3)
    (out * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(fl.grad, ft.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pl.grad, pt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_point_sample_reads_pixel_centres_and_has_gradients(float64):
    features = randn(1, 3, 4, 2, seed=4)
    centres = np.array([[[(j + 0.5) / 4, (i + 0.5) / 3] for i in range(3) for j in range(4)]])
    np.testing.assert_allclose(models.point_sample(features, centres).numpy(), features.reshape(1, 12, 2),
                               rtol=1e-12)
    assert check_gradients(lambda f, p: models.point_sample(f, p), features, _points(1, 5, seed=5))


# -- uncertainty and point selection -------------------------------------------------------------
def test_uncertainty_is_minus_the_top_two_margin():
    logits = np.array([[0.5, 2.0, -1.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(models.point_uncertainty(logits), [-1.5, 0.0])
    np.testing.assert_allclose(models.point_uncertainty(np.array([[-2.0], [0.5]])), [-2.0, -0.5])


def _bilinear_by_hand(image, x, y):
    """image (H, W, C) at (x, y) in [0, 1]: the four neighbours of pixel (x W - 1/2, y H - 1/2),
    zero outside."""
    h, w, _ = image.shape
    u, v = x * w - 0.5, y * h - 0.5
    u0, v0 = int(np.floor(u)), int(np.floor(v))
    total = np.zeros(image.shape[2])
    for row, wv in ((v0, 1 - (v - v0)), (v0 + 1, v - v0)):
        for col, wu in ((u0, 1 - (u - u0)), (u0 + 1, u - u0)):
            if 0 <= row < h and 0 <= col < w:
                total += wu * wv * image[row, col]
    return total


def test_uncertain_points_with_randomness_match_a_hand_computation():
    logits = randn(2, 4, 5, 3, seed=6)
    num_points, k, beta = 8, 3, 0.75
    points = models.uncertain_points_with_randomness(logits, num_points, k, beta, rng=np.random.default_rng(7))
    assert points.shape == (2, 8, 2)
    rng = np.random.default_rng(7)
    candidates = rng.random((2, 24, 2))
    extra = rng.random((2, 2, 2))
    for n in range(2):
        margins = []
        for x, y in candidates[n]:
            top = sorted(_bilinear_by_hand(logits[n], x, y))
            margins.append(top[-1] - top[-2])
        order = sorted(range(24), key=lambda i: margins[i])[:6]      # the 6 smallest margins first
        np.testing.assert_allclose(points[n, :6], candidates[n, order], rtol=1e-12)
        np.testing.assert_allclose(points[n, 6:], extra[n], rtol=1e-12)


def test_uncertain_points_on_grid_are_the_top_cells_centres():
    u = randn(2, 3, 4, seed=8)
    index, points = models.uncertain_points_on_grid(u, 5)
    for n in range(2):
        flat = list(u[n].reshape(-1))
        expected = sorted(range(12), key=lambda i: -flat[i])[:5]
        assert list(index[n]) == expected
        np.testing.assert_allclose(points[n], [((i % 4 + 0.5) / 4, (i // 4 + 0.5) / 3) for i in expected])
    assert models.uncertain_points_on_grid(u, 100)[0].shape == (2, 12)


# -- the point head ------------------------------------------------------------------------------
def torch_point_head(fine, coarse, weights, biases):
    """h_0 = [f; c], h_l = [relu(h_(l-1) W_l + b_l); c], logits = h_L W_o + b_o."""
    h = torch.cat([fine, coarse], dim=-1)
    for w, b in zip(weights[:-1], biases[:-1]):
        h = torch.cat([torch.relu(h @ w + b), coarse], dim=-1)
    return h @ weights[-1] + biases[-1]


def test_point_head_matches_the_torch_rewrite(float64):
    head = models.PointHead(3, fc_dim=5, num_fc=2)
    fine, coarse = randn(2, 4, 6, seed=9), randn(2, 4, 3, seed=10)
    fl, cl = lamina.tensor(fine, requires_grad=True), lamina.tensor(coarse, requires_grad=True)
    out = head(fl, cl)
    assert out.shape == (2, 4, 3)
    layers = [*head.fcs, head.predictor]
    assert [layer.weight.shape for layer in layers] == [(9, 5), (8, 5), (8, 3)]
    ws = [torch.tensor(layer.weight.numpy(), requires_grad=True) for layer in layers]
    bs = [torch.tensor(layer.bias.numpy() + 0.1, requires_grad=True) for layer in layers]
    for layer in layers:
        layer.bias.data = layer.bias.data + 0.1
    out = head(fl, cl)
    ft, ct = torch.tensor(fine, requires_grad=True), torch.tensor(coarse, requires_grad=True)
    theirs = torch_point_head(ft, ct, ws, bs)
    np.testing.assert_allclose(out.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    up = randn(2, 4, 3, seed=11)
    (out * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(fl.grad, ft.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cl.grad, ct.grad.numpy(), rtol=1e-10, atol=1e-12)
    for layer, w, b in zip(layers, ws, bs):
        np.testing.assert_allclose(layer.weight.grad, w.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias.grad, b.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert check_gradients(lambda f, c: head(f, c), fine, coarse)


def test_point_head_without_coarse_each_layer_reads_the_coarse_logits_once():
    head = models.PointHead(2, fc_dim=4, num_fc=2, coarse_pred_each_layer=False)
    head(randn(1, 3, 5).astype(np.float32), randn(1, 3, 2).astype(np.float32))
    assert [layer.weight.shape for layer in (*head.fcs, head.predictor)] == [(7, 4), (4, 4), (4, 2)]


# -- the model -----------------------------------------------------------------------------------
def tiny_pointrend(classes=3, **options):
    features = nn.Sequential(nn.Conv2D(4, 3, padding=1, activation="relu"))
    coarse_head = nn.Sequential(nn.Conv2D(6, 3, stride=2, padding=1, activation="relu"),
                                nn.Conv2D(classes, 3, stride=2, padding=1))
    return models.PointRendSemSeg(features, coarse_head, models.PointHead(classes, fc_dim=6, num_fc=2), **options)


def _dense_point_head(model, fine, coarse, h, w):
    """The point head at the centres of every cell of an h x w grid: (N, h, w, K)."""
    _, centres = models.uncertain_points_on_grid(np.zeros((fine.shape[0], h, w)), h * w)
    order = np.argsort(models.uncertain_points_on_grid(np.zeros((fine.shape[0], h, w)), h * w)[0], axis=1)
    dense = model.point_logits(fine, coarse, lamina.tensor(centres)).numpy()
    return np.take_along_axis(dense, order[..., None], axis=1).reshape(fine.shape[0], h, w, -1)


def test_subdivision_equals_the_dense_prediction_at_the_refined_points(float64):
    lamina.manual_seed(0)
    model = tiny_pointrend(subdivision_steps=2, subdivision_num_points=10)
    x = randn(2, 16, 16, 2, seed=12)
    model.eval()
    with lamina.no_grad():
        fine, coarse = model.coarse(x)
        assert fine.shape == (2, 16, 16, 4) and coarse.shape == (2, 4, 4, 3)
        # every cell refined: one step is the point head's prediction at all 8x8 centres
        everywhere = model.subdivide(fine, coarse, steps=1, num_points=64).numpy()
        np.testing.assert_allclose(everywhere, _dense_point_head(model, fine, coarse, 8, 8), rtol=1e-12)
        # 10 cells refined per step: those cells take the dense prediction, the others the upsampling
        logits = coarse
        for h in (8, 16):
            upsampled = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False).numpy()
            index, _ = models.uncertain_points_on_grid(models.point_uncertainty(upsampled), 10)
            refined = np.zeros((2, h * h), bool)
            refined[np.arange(2)[:, None], index] = True
            refined = refined.reshape(2, h, h)
            dense = _dense_point_head(model, fine, coarse, h, h)
            expected = np.where(refined[..., None], dense, upsampled)
            logits = lamina.tensor(expected)
        out = model.subdivide(fine, coarse).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-12)        # 16x16: the input's size
    model.train()
    coarse_scores = model(x)
    assert coarse_scores.shape == (2, 16, 16, 3) and coarse_scores.requires_grad


def test_loss_is_the_coarse_and_the_point_cross_entropies(float64):
    lamina.manual_seed(1)
    model = tiny_pointrend(num_points=12)
    x, labels = randn(2, 8, 8, 2, seed=13), np.random.default_rng(14).integers(0, 3, (2, 8, 8))
    loss = model.loss(x, labels, rng=np.random.default_rng(15))
    fine, coarse = model.coarse(x)
    points = models.uncertain_points_with_randomness(coarse.numpy(), 12, rng=np.random.default_rng(15))
    rows, cols = (points[..., 1] * 8).astype(int), (points[..., 0] * 8).astype(int)
    point_labels = labels[np.arange(2)[:, None], rows, cols]
    resized = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False).numpy()
    logits = model.point_logits(fine, coarse, lamina.tensor(points)).numpy()
    ct = torch.nn.functional.cross_entropy
    expected = (ct(torch.tensor(resized.reshape(-1, 3)), torch.tensor(labels.reshape(-1)))
                + ct(torch.tensor(logits.reshape(-1, 3)), torch.tensor(point_labels.reshape(-1))))
    np.testing.assert_allclose(loss.numpy(), expected.item(), rtol=1e-12)
    loss.backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.parameters())


def test_config_and_save_load(tmp_path):
    lamina.manual_seed(2)
    model = tiny_pointrend(num_points=16, subdivision_steps=1, subdivision_num_points=20)
    model.build((None, 8, 8, 2))
    check_config_and_save_load(model, random_inputs((2, 8, 8, 2), 16), tmp_path / "pointrend.lamina")
    config = model.get_config()
    assert config["point_head"]["class_name"] == "PointHead" and config["subdivision_num_points"] == 20


def test_pointrend_on_a_segmentation_model():
    lamina.manual_seed(3)
    base = models.SegmentationModel(nn.Sequential(nn.Conv2D(4, 3, stride=2, padding="same"), name="backbone"),
                                    nn.Sequential(nn.Conv2D(2, 1)))
    model = models.pointrend_from_segmentation(base, subdivision_steps=1, subdivision_num_points=8)
    assert model.point_head.num_classes == 2 and model.features is base.backbone
    model.eval()
    assert model(random_inputs((1, 6, 6, 3), 17)).shape == (1, 6, 6, 2)


def test_bad_inputs_are_reported():
    with pytest.raises(ShapeError, match=r"point_sample: expected points of shape \(N, P, 2\).*got shape \(2, 5\)"):
        models.point_sample(np.zeros((2, 3, 3, 1)), np.zeros((2, 5)))
    with pytest.raises(ShapeError, match=r"point_sample: expected features"):
        models.point_sample(np.zeros((3, 3, 1)), np.zeros((3, 5, 2)))
    with pytest.raises(ShapeError, match=r"same points, got shapes \(1, 4, 3\) and \(1, 5, 2\)"):
        models.PointHead(2)(np.zeros((1, 4, 3), np.float32), np.zeros((1, 5, 2), np.float32))
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        models.uncertain_points_with_randomness(np.zeros((1, 2, 2, 3)), 4, importance_sample_ratio=1.5)
    with pytest.raises(ShapeError, match=r"loss: expected labels of shape \(N, H, W\)"):
        tiny_pointrend().loss(np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 8), int))


# -- learning -------------------------------------------------------------------------------------
def synthetic_shapes(n, size, rng):
    """Images of one noisy disc (class 1, bright) or rectangle (class 2, dark) on a background (0)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    x, y = np.zeros((n, size, size, 1), np.float32), np.zeros((n, size, size), np.int64)
    for i in range(n):
        cx, cy = rng.uniform(8, size - 8, 2)
        r = rng.uniform(4, 9)
        if rng.random() < 0.5:
            mask, k = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 1
        else:
            mask, k = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < 0.7 * r), 2
        y[i][mask] = k
        x[i, ..., 0] = np.where(mask, 1.0 if k == 1 else -1.0, 0.0)
    return x + 0.3 * rng.standard_normal(x.shape).astype(np.float32), y


def boundary_pixels(y):
    """Pixels with a differently labelled pixel among their 8 neighbours."""
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = y.shape[1:]
    return np.any([padded[:, i:i + h, j:j + w] != y for i in range(3) for j in range(3)], axis=0)


def test_pointrend_sharpens_the_coarse_boundaries_of_synthetic_shapes():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    features = nn.Sequential(nn.Conv2D(8, 3, padding=1, activation="relu"),
                             nn.Conv2D(8, 3, padding=1, activation="relu"))
    coarse_head = nn.Sequential(nn.Conv2D(16, 3, stride=2, padding=1, activation="relu"),
                                nn.Conv2D(16, 3, stride=2, padding=1, activation="relu"), nn.Conv2D(3, 1))
    model = models.PointRendSemSeg(features, coarse_head, models.PointHead(3, fc_dim=16, num_fc=2), num_points=96,
                                   subdivision_steps=2, subdivision_num_points=128)
    x, y = synthetic_shapes(256, 32, rng)
    test_x, test_y = synthetic_shapes(64, 32, rng)
    model.loss(x[:2], y[:2], rng)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for _ in range(250):
        batch = rng.integers(0, len(x), 16)
        loss = model.loss(x[batch], y[batch], rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with lamina.no_grad():
        fine, coarse = model.coarse(test_x)
        coarse_pred = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False).numpy().argmax(-1)
        refined = model(test_x).numpy().argmax(-1)
    seconds = time.perf_counter() - start
    edge = boundary_pixels(test_y)
    coarse_accuracy, refined_accuracy = (coarse_pred == test_y)[edge].mean(), (refined == test_y)[edge].mean()
    # measured (seeds 0, 1, 2): boundary accuracy 0.981 / 0.980 / 0.978 refined against 0.857 / 0.865 / 0.866 for
    # the coarse network's upsampled logits (pixel accuracy 0.998); 5-10 s on one thread
    assert refined_accuracy > coarse_accuracy + 0.05 and refined_accuracy > 0.95
    assert (refined == test_y).mean() > 0.99
    assert seconds < 60


def test_readme_example_runs():
    printed, names = run_readme_section("PointRend")
    assert type(names["model"]) is models.PointRendSemSeg
    assert printed.split() == ["(2,96,2)", "(2,16,16,3)"]
