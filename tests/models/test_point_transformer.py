"""Point Transformer: the layer and the residual block against a float64 torch rewrite of the
paper's equations on the same weights and neighbour indices (outputs, input, position and
parameter gradients), a float64 gradient check, invariance to permuting the points and to
translating them, transition down and up against NumPy references, the networks' shapes and
errors, learning the synthetic shapes, and the README example."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_point_clouds import TorchPointModels, fit_clouds, perturb

import lamina
from helpers import check_gradients, run_readme_section
from lamina import functional as F
from lamina.data import SyntheticShapes
from lamina.errors import ShapeError
from lamina.models import (
    PointTransformerBlock,
    PointTransformerClassifier,
    PointTransformerLayer,
    PointTransformerSegmentation,
    TransitionDown,
    TransitionUp,
    interpolation_weights,
    nearest_neighbours,
    point_transformer_classifier,
    point_transformer_segmentation,
)
from tabular_checks import compare_module


def torch_gather(x, idx):
    b, c = x.shape[0], x.shape[-1]
    flat = torch.from_numpy(idx.reshape(b, -1, 1)).expand(-1, -1, c)
    return torch.gather(x, 1, flat).reshape(idx.shape + (c,))


def torch_layer(p, prefix, xyz, x, idx):
    """y_i = sum_j softmax_j(gamma(phi(x_i) - psi(x_j) + delta_ij)) * (alpha(x_j) + delta_ij)."""
    def dense(name, h):
        return h @ p[f"{prefix}{name}.weight"] + p[f"{prefix}{name}.bias"]

    delta = dense("position.1", torch.relu(dense("position.0", xyz[:, :, None, :] - torch_gather(xyz, idx))))
    query = dense("query", x)[:, :, None, :]
    keys, values = torch_gather(dense("key", x), idx), torch_gather(dense("value", x), idx)
    weights = torch.softmax(dense("attention.1", torch.relu(dense("attention.0", query - keys + delta))), dim=2)
    return (weights * (values + delta)).sum(dim=2)


def clouds(b=2, n=10, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((b, n, 3)), rng.standard_normal((b, n, c))


def test_layer_matches_torch_rewrite(f64):
    layer = PointTransformerLayer(4, 5, k=4, position_hidden=3)
    perturb(layer, 0)
    xyz, x = clouds()
    idx = F.knn(xyz, 4)
    compare_module(layer, lambda p, f: layer(p, f, idx), lambda params, p, f: torch_layer(params, "", p, f, idx),
                   [xyz, x])


@pytest.mark.parametrize("training", [True, False])
def test_block_matches_torch_rewrite(f64, training):
    block = PointTransformerBlock(4, k=3)
    perturb(block, 1)
    xyz, x = clouds(seed=1)
    idx = F.knn(xyz, 3)
    if not training:
        block(xyz, x, idx)
        block.eval()

    def reference(p, points, features):
        ref = TorchPointModels(block, p, training)
        h = torch.relu(ref.norm("norm_in", features @ p["linear_in.weight"]))
        h = torch.relu(ref.norm("norm_mid", torch_layer(p, "transformer.", points, h, idx)))
        return torch.relu(ref.norm("norm_out", h @ p["linear_out.weight"]) + features)

    compare_module(block, lambda p, f: block(p, f, idx), reference, [xyz, x])


def test_layer_gradients_in_positions_and_features(f64):
    layer = PointTransformerLayer(3, 2, k=3)
    perturb(layer, 2)
    xyz, x = clouds(1, 6, 3, seed=2)
    idx = F.knn(xyz, 3)
    assert check_gradients(lambda p, f: layer(p, f, idx), xyz, x)


def test_layer_is_permutation_equivariant_and_translation_invariant(f64):
    layer = PointTransformerLayer(4, 6, k=5)
    perturb(layer, 3)
    xyz, x = clouds(2, 12, 4, seed=3)
    y = layer(xyz, x).numpy()
    order = np.random.default_rng(4).permutation(12)
    np.testing.assert_allclose(layer(xyz[:, order], x[:, order]).numpy(), y[:, order], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer(xyz + np.array([3.0, -2.0, 0.5]), x).numpy(), y, rtol=1e-10, atol=1e-12)


def test_nearest_neighbours_match_numpy():
    rng = np.random.default_rng(5)
    queries, points = rng.random((2, 4, 3)), rng.random((2, 9, 3))
    d = ((queries[:, :, None] - points[:, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(nearest_neighbours(queries, points, 3), np.argsort(d, axis=-1)[..., :3])


def test_transition_down_samples_groups_and_pools(f64):
    down = TransitionDown(4, 6, stride=4, k=3)
    perturb(down, 6)
    xyz, x = clouds(2, 16, 4, seed=6)
    centres, features = down(xyz, x)
    assert centres.shape == (2, 4, 3) and features.shape == (2, 4, 6)
    expected_centres = xyz[np.arange(2)[:, None], F.farthest_point_sample(xyz, 4)]
    np.testing.assert_array_equal(centres.numpy(), expected_centres)
    idx = nearest_neighbours(expected_centres, xyz, 3)
    rows = np.arange(2)[:, None, None]
    grouped = np.concatenate([xyz[rows, idx] - expected_centres[:, :, None], x[rows, idx]], axis=-1)
    np.testing.assert_allclose(features.numpy(), down.mlp(grouped).numpy().max(axis=2), rtol=1e-12)
    same, mapped = TransitionDown(4, 6, stride=1)(xyz, x)
    assert same.shape == (2, 16, 3) and mapped.shape == (2, 16, 6)


def numpy_interpolation(fine, coarse):
    d = np.sqrt(((fine[:, :, None] - coarse[:, None]) ** 2).sum(-1))
    idx = np.argsort(d, axis=-1)[..., :3]
    inverse = 1.0 / (np.take_along_axis(d, idx, axis=-1) + 1e-8)
    return idx, inverse / inverse.sum(-1, keepdims=True)


def test_transition_up_interpolates_with_inverse_distance_weights(f64):
    rng = np.random.default_rng(7)
    coarse_xyz, fine_xyz = rng.random((2, 5, 3)), rng.random((2, 11, 3))
    coarse, fine = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 11, 4))
    idx, weights = interpolation_weights(fine_xyz, coarse_xyz)
    expected_idx, expected_weights = numpy_interpolation(fine_xyz, coarse_xyz)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-12)
    up = TransitionUp(6, 4, 3)
    perturb(up, 7)
    up.eval()
    out = up(coarse_xyz, coarse, fine_xyz, fine).numpy()
    mapped = up.coarse_mlp(coarse).numpy()
    carried = (mapped[np.arange(2)[:, None, None], expected_idx] * expected_weights[..., None]).sum(axis=2)
    assert out.shape == (2, 11, 3)
    np.testing.assert_allclose(out, up.fine_mlp(fine).numpy() + carried, rtol=1e-10, atol=1e-12)


def test_networks_shapes_presets_and_gradients():
    x = np.random.default_rng(8).random((2, 40, 3)).astype(np.float32)
    classifier = point_transformer_classifier(4, size="tiny")
    segmenter = point_transformer_segmentation(3, channels=3, size="tiny")
    assert classifier(x).shape == (2, 4) and segmenter(x).shape == (2, 40, 3)
    assert [d.out_channels for d in classifier.down] == [16, 32, 64]
    paper = point_transformer_classifier(40, size="paper")
    assert [len(stage) for stage in paper.stages] == [1, 2, 3, 5, 2] and paper.k == 16
    loss = F.cross_entropy(segmenter(x).reshape(-1, 3), np.zeros(80, dtype=np.int64))
    loss.backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in segmenter.parameters())


def test_errors_name_the_layer():
    with pytest.raises(ShapeError, match=r"PointTransformerClassifier.*\(2, 8, 4\).*points \(batch, points, 3\)"):
        PointTransformerClassifier(3, widths=(4,), blocks=(1,), strides=(1,))(np.zeros((2, 8, 4)))
    with pytest.raises(ShapeError, match=r"PointTransformerLayer.*features \(batch, points, 4\)"):
        PointTransformerLayer(4)(np.zeros((1, 5, 3)), np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="PointTransformerSegmentation: the first stride must be 1"):
        PointTransformerSegmentation(3, widths=(4, 8), blocks=(1, 1), strides=(2, 2))
    with pytest.raises(ValueError, match="point_transformer_classifier: size must be one of"):
        point_transformer_classifier(3, size="huge")


def test_learns_synthetic_shapes():
    x, y = SyntheticShapes(30, 64, seed=0).arrays()
    xt, yt = SyntheticShapes(20, 64, seed=1).arrays()
    model = PointTransformerClassifier(5, widths=(16, 32), blocks=(1, 1), strides=(1, 4), k=8, head_widths=(32,),
                                       dropout=0.0)
    start = time.perf_counter()
    fit_clouds(model, x, y, epochs=15)
    seconds = time.perf_counter() - start
    with lamina.no_grad():
        accuracy = (model(xt).numpy().argmax(axis=1) == yt).mean()
    print(f"Point Transformer: test accuracy {accuracy:.3f} after {seconds:.1f} s")
    assert accuracy > 0.6                                                  # chance is 0.2


def test_readme_example():
    printed, names = run_readme_section("Point Transformer")
    assert names["logits"].shape == (4, 5) and names["per_point"].shape == (4, 128, 3)
    assert "logits (4, 5)" in printed
