"""SuperGlue: log-space Sinkhorn with dustbins against NumPy, the whole forward and its
parameter gradients against a float64 torch rewrite, the loss and the match extraction
against hand and loop computations, and learning on synthetic pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina import models
from lamina.errors import ShapeError


def _numpy_log_optimal_transport(scores, alpha, iterations):
    batch, n, m = scores.shape
    z = np.full((batch, n + 1, m + 1), alpha)
    z[:, :n, :m] = scores
    norm = -np.log(n + m)
    log_a = np.r_[np.full(n, norm), np.log(m) + norm]
    log_b = np.r_[np.full(m, norm), np.log(n) + norm]
    u, v = np.zeros((batch, n + 1)), np.zeros((batch, m + 1))

    def lse(x, axis):
        top = x.max(axis=axis, keepdims=True)
        return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))

    for _ in range(iterations):
        u = log_a - lse(z + v[:, None, :], 2)
        v = log_b - lse(z + u[:, :, None], 1)
    return z + u[:, :, None] + v[:, None, :] - norm


def test_log_optimal_transport_equals_numpy_and_meets_its_marginals():
    scores = randn(2, 4, 3, seed=1, scale=2.0)
    got = models.log_optimal_transport(lamina.tensor(scores, dtype=np.float64), lamina.tensor(0.7, dtype=np.float64),
                                       7).numpy()
    np.testing.assert_allclose(got, _numpy_log_optimal_transport(scores, 0.7, 7), rtol=1e-12, atol=1e-12)
    plan = np.exp(models.log_optimal_transport(lamina.tensor(scores, dtype=np.float64),
                                               lamina.tensor(-0.3, dtype=np.float64), 500).numpy())
    np.testing.assert_allclose(plan.sum(axis=2), np.broadcast_to([1, 1, 1, 1, 3], (2, 5)), atol=1e-6)
    np.testing.assert_allclose(plan.sum(axis=1), np.broadcast_to([1, 1, 1, 4], (2, 4)), atol=1e-6)
    with pytest.raises(ShapeError, match="log_optimal_transport: scores need shape"):
        models.log_optimal_transport(np.zeros((3, 3)), 1.0, 3)


# -- a float64 torch rewrite of the whole forward ------------------------------------------------
def _torch_mlp(mlp, x, weights):
    count = len(mlp.dense)
    for k in range(count):
        x = x @ weights[id(mlp.dense[k].weight)] + weights[id(mlp.dense[k].bias)]
        if k < count - 1:
            norm = mlp.norms[k]
            x = torch.relu(torch.nn.functional.layer_norm(x, x.shape[-1:], weights[id(norm.weight)],
                                                          weights[id(norm.bias)], eps=1e-5))
    return x


def _torch_dense(layer, x, weights):
    return x @ weights[id(layer.weight)] + weights[id(layer.bias)]


def _torch_attention(layer, x, source, weights, heads):
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    q, k, v = (split(_torch_dense(dense, inp, weights))
               for dense, inp in ((layer.query, x), (layer.key, source), (layer.value, source)))
    prob = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(q.shape[-1]), dim=-1)
    message = _torch_dense(layer.merge, (prob @ v).transpose(1, 2).reshape(x.shape), weights)
    return x + _torch_mlp(layer.mlp, torch.cat([x, message], dim=2), weights)


def _torch_superglue(model, inputs, image_size, weights, heads):
    kp0, s0, d0, kp1, s1, d1 = inputs
    height, width = image_size
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)

    def encode(kp, s, d):
        kp = (kp - centre) / (0.7 * max(height, width))
        return d + _torch_mlp(model.encoder, torch.cat([kp, s[..., None]], dim=2), weights)

    x0, x1 = encode(kp0, s0, d0), encode(kp1, s1, d1)
    for k, layer in enumerate(model.gnn):
        src0, src1 = (x1, x0) if k % 2 else (x0, x1)
        x0, x1 = _torch_attention(layer, x0, src0, weights, heads), _torch_attention(layer, x1, src1, weights, heads)
    f0, f1 = _torch_dense(model.final_proj, x0, weights), _torch_dense(model.final_proj, x1, weights)
    scores = f0 @ f1.transpose(1, 2) / math.sqrt(f0.shape[-1])
    batch, n, m = scores.shape
    alpha = weights[id(model.bin_score)]
    z = torch.cat([torch.cat([scores, alpha.expand(batch, n, 1)], 2), alpha.expand(batch, 1, m + 1)], 1)
    norm = -math.log(n + m)
    log_a = torch.tensor([norm] * n + [math.log(m) + norm], dtype=torch.float64)
    log_b = torch.tensor([norm] * m + [math.log(n) + norm], dtype=torch.float64)
    u, v = torch.zeros(batch, n + 1, dtype=torch.float64), torch.zeros(batch, m + 1, dtype=torch.float64)
    for _ in range(model.sinkhorn_iterations):
        u = log_a - torch.logsumexp(z + v[:, None, :], dim=2)
        v = log_b - torch.logsumexp(z + u[:, :, None], dim=1)
    return z + u[:, :, None] + v[:, None, :] - norm


def _tiny_pairs(seed=0, n=5, d=8):
    return models.synthetic_matching_pairs(2, n, d, inlier_fraction=0.6, nuisance_dims=2, seed=seed)


def test_forward_and_parameter_gradients_equal_a_torch_rewrite(float64):
    pairs = _tiny_pairs()
    model = models.SuperGlue(8, (6,), num_layers=1, num_heads=2, sinkhorn_iterations=5, bin_score=0.4)
    model(*pairs.inputs(), image_size=pairs.image_size)
    rng = np.random.default_rng(3)
    for param in model.parameters():                       # move LayerNorm and biases off their init
        param.data = param.data + 0.2 * rng.normal(size=param.shape)
    params = list(model.parameters())
    assert len(params) == 1 + 2 * 2 + 2 + 2 * (4 * 2 + 2 * 2 + 2) + 2
    weights = {id(p): torch.tensor(p.numpy(), requires_grad=True) for p in params}
    upstream = rng.normal(size=(2, 6, 6))
    got = model(*pairs.inputs(), image_size=pairs.image_size)
    (got * lamina.tensor(upstream)).sum().backward()
    expected = _torch_superglue(model, [torch.tensor(a) for a in pairs.inputs()], pairs.image_size, weights, 2)
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(got.numpy(), expected.detach().numpy(), 1e-10, "log assignment")
    scale = max(np.abs(weights[id(p)].grad.numpy()).max() for p in params)
    for param in params:              # the key biases' gradients are 0 (softmax ignores a shift): an absolute bound
        np.testing.assert_allclose(lamina.backend.to_numpy(param.grad.data), weights[id(param)].grad.numpy(),
                                   rtol=1e-9, atol=1e-11 * scale)


def test_gradients_with_respect_to_the_inputs(float64):
    pairs = _tiny_pairs(seed=1, n=3, d=4)
    model = models.SuperGlue(4, (4,), num_layers=1, num_heads=2, sinkhorn_iterations=3)
    model(*pairs.inputs(), image_size=pairs.image_size)

    def run(kp0, d0, kp1, d1):
        return model(kp0, pairs.scores0, d0, kp1, pairs.scores1, d1, image_size=pairs.image_size)

    assert check_gradients(run, pairs.keypoints0, pairs.descriptors0, pairs.keypoints1, pairs.descriptors1)


def test_shapes_are_checked():
    model = models.SuperGlue(4, (4,), num_layers=1, num_heads=2, sinkhorn_iterations=2)
    pairs = _tiny_pairs(n=3, d=4)
    with pytest.raises(ShapeError, match=r"SuperGlue: image 1 needs .* descriptors \(batch, n, 4\)"):
        model(*pairs.inputs()[:5], pairs.descriptors1[:, :, :3])
    with pytest.raises(ValueError, match="divisible by num_heads"):
        models.SuperGlue(6, (4,), num_heads=4)


def test_save_and_load_round_trip(tmp_path):
    pairs = _tiny_pairs(seed=2, n=4, d=4)
    model = models.SuperGlue(4, (4,), num_layers=1, num_heads=2, sinkhorn_iterations=4, bin_score=0.3)
    expected = model(*pairs.inputs(), image_size=pairs.image_size).numpy()
    lamina.save(model, tmp_path / "superglue.safetensors")
    twin = lamina.load(tmp_path / "superglue.safetensors")
    assert type(twin) is models.SuperGlue and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(*pairs.inputs(), image_size=pairs.image_size).numpy(), expected)


# -- loss, extraction, metrics -------------------------------------------------------------
def test_loss_equals_a_hand_computation():
    log_p = randn(2, 3, 4, seed=4)
    matches = np.array([[0, 0, 2], [1, 1, 0]])
    unmatched0, unmatched1 = np.array([[0, 1], [1, 0]]), np.array([[1, 2]])
    loss = models.superglue_loss(lamina.tensor(log_p, requires_grad=True), matches, unmatched0, unmatched1)
    hand = -(log_p[0, 0, 2] + log_p[1, 1, 0] + log_p[0, 1, 3] + log_p[1, 0, 3] + log_p[1, 2, 2]) / 5
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="no matches"):
        models.superglue_loss(log_p, np.zeros((0, 3)), [], [])


def _loop_match(log_p, threshold):
    batch, rows, cols = log_p.shape
    matches0, matches1 = np.full((batch, rows - 1), -1), np.full((batch, cols - 1), -1)
    for b in range(batch):
        inner = log_p[b, :-1, :-1]
        for i in range(rows - 1):
            j = int(np.argmax(inner[i]))
            if int(np.argmax(inner[:, j])) == i and math.exp(inner[i, j]) > threshold:
                matches0[b, i], matches1[b, j] = j, i
    return matches0, matches1


def test_match_extraction_equals_a_loop():
    log_p = np.log(np.random.default_rng(5).dirichlet(np.ones(7), size=(3, 6)))
    for threshold in (0.0, 0.15, 0.3):
        matches0, matches1, confidence = models.superglue_match(log_p, threshold)
        expected0, expected1 = _loop_match(log_p, threshold)
        np.testing.assert_array_equal(matches0, expected0)
        np.testing.assert_array_equal(matches1, expected1)
        b, i = np.nonzero(matches0 >= 0)
        np.testing.assert_allclose(confidence[b, i], np.exp(log_p[b, i, matches0[b, i]]))
        assert (confidence[matches0 < 0] == 0).all()
    assert (models.superglue_match(log_p, 0.0)[0] >= 0).sum() > (models.superglue_match(log_p, 0.3)[0] >= 0).sum()


def test_precision_and_recall():
    predicted = np.array([[1, -1, 0, 2], [-1, 3, -1, -1]])
    true = np.array([[1, 2, 3, -1], [-1, 3, 0, -1]])
    assert models.matching_precision_recall(predicted, true) == (2 / 4, 2 / 5)


def test_synthetic_pairs_hold_consistent_matches():
    pairs = models.synthetic_matching_pairs(3, 10, 8, inlier_fraction=0.7, descriptor_noise=0.1, seed=2)
    assert (pairs.matches0 >= 0).sum(axis=1).tolist() == [7, 7, 7]
    b, i = np.nonzero(pairs.matches0 >= 0)
    assert (pairs.matches1[b, pairs.matches0[b, i]] == i).all()
    assert ((pairs.matches1 >= 0).sum() == 21) and pairs.descriptors0.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pairs.descriptors1, axis=2), 1, rtol=1e-5)
    similarity = (pairs.descriptors0[b, i] * pairs.descriptors1[b, pairs.matches0[b, i]]).sum(axis=1)
    assert similarity.min() > 0.8
    matches, unmatched0, unmatched1 = pairs.loss_targets()
    assert matches.shape == (21, 3) and unmatched0.shape == unmatched1.shape == (9, 2)


# -- learning ---------------------------------------------------------------------------------
DATA = dict(num_keypoints=16, descriptor_dim=16, inlier_fraction=0.6, descriptor_noise=0.3, nuisance_dims=8,
            nuisance_scale=1.5)


def _mutual_nearest(pairs):
    similarity = pairs.descriptors0 @ pairs.descriptors1.transpose(0, 2, 1)
    best0, best1 = similarity.argmax(axis=2), similarity.argmax(axis=1)
    mutual = np.take_along_axis(best1, best0, axis=1) == np.arange(similarity.shape[1])
    return np.where(mutual, best0, -1)


def test_superglue_learns_to_beat_mutual_nearest_neighbours():
    test = models.synthetic_matching_pairs(64, seed=1000, **DATA)
    baseline = models.matching_precision_recall(_mutual_nearest(test), test.matches0)
    lamina.manual_seed(0)
    model = models.SuperGlue(16, (16,), num_layers=1, num_heads=2, sinkhorn_iterations=20)
    model(*test.inputs(), image_size=test.image_size)
    optimizer = lamina.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        pairs = models.synthetic_matching_pairs(8, seed=step, **DATA)
        loss = models.superglue_loss(model(*pairs.inputs(), image_size=pairs.image_size), *pairs.loss_targets())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with lamina.no_grad():
        matches0 = models.superglue_match(model(*test.inputs(), image_size=test.image_size), 0.2)[0]
    precision, recall = models.matching_precision_recall(matches0, test.matches0)
    assert baseline[0] < 0.4 and baseline[1] < 0.4
    assert precision > baseline[0] + 0.25 and recall > baseline[1] + 0.25


def test_readme_example_runs():
    printed, names = run_readme_section("Learned feature matching")
    assert printed.split()[0] == "(2," and names["log_p"].shape == (2, 13, 13)
