"""Relation networks: class sums and query-class pairing against a hand computation, the two
objectives by hand, scores in [0, 1], permutation of the support set, errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.models import RelationNetwork, class_feature_sums, relation_pairs


def test_class_sums_and_pairs_by_hand():
    features = randn(6, 2, 2, 3)                        # NHWC feature maps, 3 channels
    labels = np.array([1, 0, 1, 2, 0, 1])
    sums = class_feature_sums(features, labels).numpy()
    np.testing.assert_allclose(sums[1], features[0] + features[2] + features[5], rtol=1e-6)
    queries = randn(4, 2, 2, 3, seed=1)
    pairs = relation_pairs(sums, queries).numpy()
    assert pairs.shape == (12, 2, 2, 6)
    for q in range(4):
        for k in range(3):
            np.testing.assert_array_equal(pairs[q * 3 + k, ..., :3], sums[k].astype(np.float32))
            np.testing.assert_array_equal(pairs[q * 3 + k, ..., 3:], queries[q].astype(np.float32))
    assert check_gradients(lambda c, q: relation_pairs(c, q), randn(3, 2), randn(2, 2, seed=1))


class _Difference(nn.Module):
    """A relation module of no weights: minus the squared distance of the pair's halves."""

    def forward(self, pairs):
        half = pairs.shape[-1] // 2
        return -((pairs[:, :half] - pairs[:, half:]) ** 2).sum(axis=-1)


def _episode(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((6, 3)), np.array([0, 0, 1, 1, 2, 2]), rng.standard_normal((4, 3)),
            np.array([0, 1, 2, 1]))


@pytest.mark.parametrize("objective", ["mse", "cross_entropy"])
def test_scores_and_objectives_by_hand(objective):
    xs, ys, xq, yq = _episode()
    model = RelationNetwork(nn.Identity(), _Difference(), objective=objective)
    sums = np.stack([xs[ys == k].sum(axis=0) for k in range(3)])
    logits = -((xq[:, None, :] - sums[None]) ** 2).sum(axis=-1)
    scores = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(model(xs, ys, xq).numpy(), scores, rtol=1e-5)
    targets = np.eye(3)[yq]
    if objective == "mse":
        expected = ((scores - targets) ** 2).mean()
    else:
        shifted = logits - logits.max(axis=1, keepdims=True)
        expected = -(shifted[np.arange(4), yq] - np.log(np.exp(shifted).sum(axis=1))).mean()
    np.testing.assert_allclose(model.loss(xs, ys, xq, yq).item(), expected, rtol=1e-5)
    assert model.loss(xs, ys, xq, yq, reduction="none").shape == (4,)


def _model(objective="mse"):
    lamina.manual_seed(0)
    relation = nn.Sequential(nn.Dense(5, activation="relu"), nn.Dense(1))
    return RelationNetwork(nn.Sequential(nn.Dense(4, activation="tanh")), relation, objective=objective)


def test_scores_lie_in_0_1_and_do_not_depend_on_the_support_order():
    xs, ys, xq, _ = _episode()
    model = _model()
    scores = model(xs, ys, xq).numpy()
    assert scores.shape == (4, 3) and (scores > 0).all() and (scores < 1).all()
    order = np.random.default_rng(1).permutation(6)
    np.testing.assert_allclose(model(xs[order], ys[order], xq).numpy(), scores, rtol=1e-5, atol=1e-7)


def test_errors_are_clear():
    xs, ys, xq, yq = _episode()
    with pytest.raises(ValueError, match=r"RelationNetwork: objective must be one of \('mse', 'cross_entropy'\)"):
        RelationNetwork(nn.Identity(), _Difference(), objective="hinge")
    model = RelationNetwork(nn.Identity(), nn.Dense(2))
    with pytest.raises(ShapeError, match=r"relation module must give one value per pair, shape \(12, 1\) or "
                                         r"\(12,\) for 4 queries x 3 classes; got shape \(12, 2\)"):
        model(xs, ys, xq)
    with pytest.raises(ShapeError, match=r"class features \(3, 2\) and query features \(4, 3\)"):
        relation_pairs(randn(3, 2), randn(4, 3))
    with pytest.raises(ShapeError, match=r"RelationNetwork.loss: query labels must be one integer class"):
        _model().loss(xs, ys, xq, yq.astype(np.float32))


@pytest.mark.parametrize("objective", ["mse", "cross_entropy"])
def test_save_and_load(tmp_path, objective):
    """lamina.save / lamina.load: the copy is built on a one-sample episode of the saved shapes
    (integer labels), then gives the same scores on the same episode."""
    xs, ys, xq, _ = _episode()
    model = _model(objective)
    model.eval()
    expected = model(xs, ys, xq).numpy()
    lamina.save(model, tmp_path / "relation.safetensors")
    twin = lamina.load(tmp_path / "relation.safetensors")
    assert type(twin) is RelationNetwork and twin.objective == objective
    assert sorted(twin.state_dict()) == sorted(model.state_dict())
    np.testing.assert_array_equal(twin(xs, ys, xq).numpy(), expected)
