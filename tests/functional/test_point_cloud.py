"""Point-cloud ops: farthest point sampling, ball query and knn against plain-Python versions of
the reference rules (with hand cases for the ball query's padding), the gathers and the
interpolation against torch (values and gradients) and by float64 gradient checks, and the
errors naming the function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def python_fps(points: np.ndarray, npoint: int) -> list[int]:
    """The reference loop on one cloud: start at 0, then the point farthest from all picked."""
    picked, nearest = [0], [float("inf")] * len(points)
    for _ in range(1, npoint):
        last = points[picked[-1]]
        best, best_d = 0, -1.0
        for i, p in enumerate(points):
            nearest[i] = min(nearest[i], sum((a - b) ** 2 for a, b in zip(p, last)))
            if nearest[i] > best_d:
                best, best_d = i, nearest[i]
        picked.append(best)
    return picked


def python_ball_query(radius, nsample, points, centre) -> list[int]:
    found = [i for i, p in enumerate(points) if sum((a - b) ** 2 for a, b in zip(p, centre)) < radius ** 2]
    found = found[:nsample]
    if not found:
        return [0] * nsample
    return found + [found[0]] * (nsample - len(found))


def test_farthest_point_sample_matches_the_reference_loop():
    xyz = np.random.default_rng(0).random((3, 40, 3))
    idx = F.farthest_point_sample(xyz, 12)
    assert idx.shape == (3, 12) and idx.dtype == np.int64
    for b in range(3):
        assert idx[b].tolist() == python_fps(xyz[b].tolist(), 12)
    assert len(set(idx[0].tolist())) == 12                            # distinct points


def test_ball_query_hand_cases_and_padding():
    xyz = np.array([[[0, 0, 0], [0.5, 0, 0], [3, 0, 0], [0.2, 0, 0], [0, 0.9, 0], [0.1, 0.1, 0]]], dtype=float)
    centres = np.array([[[0, 0, 0], [3, 0, 0], [10, 10, 10], [0.45, 0, 0]]], dtype=float)
    idx = F.ball_query(0.6, 4, xyz, centres)
    assert idx[0].tolist() == [[0, 1, 3, 5],          # the first four inside, in index order (4 is 0.9 away)
                               [2, 2, 2, 2],          # only itself: padded with the first found
                               [0, 0, 0, 0],          # none inside: zeros
                               [0, 1, 3, 5]]
    strict = F.ball_query(0.5, 3, xyz, centres[:, :1])             # the point at exactly 0.5 is outside
    assert strict[0, 0].tolist() == [0, 3, 5]


def test_ball_query_matches_the_reference_rule_on_random_clouds():
    rng = np.random.default_rng(1)
    xyz, centres = rng.random((2, 50, 3)), rng.random((2, 7, 3))
    idx = F.ball_query(0.3, 6, xyz, centres)
    for b in range(2):
        for s in range(7):
            assert idx[b, s].tolist() == python_ball_query(0.3, 6, xyz[b].tolist(), centres[b, s].tolist())


@pytest.mark.parametrize("channels, k", [(3, 1), (5, 4), (2, 9)])
def test_knn_equals_brute_force(channels, k):
    x = np.random.default_rng(2).standard_normal((2, 9, channels))
    idx = F.knn(x, k)
    for b in range(2):
        for i in range(9):
            distances = [((x[b, i] - x[b, j]) ** 2).sum() for j in range(9)]
            assert idx[b, i].tolist() == sorted(range(9), key=lambda j: distances[j])[:k]
    assert (idx[..., 0] == np.arange(9)).all()                      # each point is its own nearest


def test_three_nn_equals_brute_force():
    rng = np.random.default_rng(3)
    unknown, known = rng.random((2, 6, 3)), rng.random((2, 10, 3))
    dist, idx = F.three_nn(unknown, known)
    for b in range(2):
        for i in range(6):
            d = np.sqrt(((known[b] - unknown[b, i]) ** 2).sum(1))
            assert idx[b, i].tolist() == np.argsort(d)[:3].tolist()
            np.testing.assert_allclose(dist[b, i], np.sort(d)[:3], rtol=1e-10)
    weights = F.inverse_distance_weights(dist)
    np.testing.assert_allclose(weights.sum(-1), 1.0)
    np.testing.assert_allclose(weights[..., 0] / weights[..., 1], dist[..., 1] / dist[..., 0], rtol=1e-6)


IDX = np.array([[[0, 2, 2], [4, 1, 0]], [[3, 3, 3], [1, 0, 4]]])                # repeats add their gradients


def torch_group(x, idx):
    b, s, k = idx.shape
    flat = torch.from_numpy(idx).reshape(b, s * k, 1).expand(b, s * k, x.shape[2])
    return torch.gather(x, 1, flat).reshape(b, s, k, x.shape[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_points_matches_torch_gather(dtype):
    compare_with_torch(lambda x: F.group_points(x, IDX), lambda x: torch_group(x, IDX), randn(2, 5, 4), dtype=dtype)


def test_group_points_gradients():
    assert check_gradients(lambda x: F.group_points(x, IDX), randn(2, 5, 3))
    assert check_second_derivatives(lambda x: F.group_points(x, IDX) ** 2, randn(2, 5, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_interpolate_matches_torch(dtype):
    weight = np.random.default_rng(4).random((2, 2, 3))

    def theirs(x, w):
        return (torch_group(x, IDX) * w[..., None]).sum(2)

    compare_with_torch(lambda x, w: F.three_interpolate(x, IDX, w), theirs, randn(2, 5, 4), weight, dtype=dtype)
    assert check_gradients(lambda x, w: F.three_interpolate(x, IDX, w), randn(2, 5, 4), weight)


def test_interpolate_features_keeps_known_points_and_constants():
    rng = np.random.default_rng(5)
    known, features = rng.random((1, 8, 3)), rng.standard_normal((1, 8, 2))
    at_known = F.interpolate_features(known, known, features).numpy()
    np.testing.assert_allclose(at_known, features, atol=1e-5)       # weight ~1 on the point itself
    constant = F.interpolate_features(rng.random((1, 5, 3)), known, np.ones((1, 8, 2))).numpy()
    np.testing.assert_allclose(constant, 1.0, rtol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: F.farthest_point_sample(np.zeros((1, 4, 3)), 5), "farthest_point_sample: npoint=5 is more than the 4"),
    (lambda: F.farthest_point_sample(np.zeros((1, 4, 2)), 2), "farthest_point_sample: xyz of shape (1, 4, 2)"),
    (lambda: F.knn(np.zeros((2, 3, 4)), 4), "knn: k=4 is more than the 3"),
    (lambda: F.knn(np.zeros((3, 4)), 2), "knn: x of shape (3, 4)"),
    (lambda: F.ball_query(0.1, 2, np.zeros((1, 4, 3)), np.zeros((2, 1, 3))), "ball_query: xyz of shape"),
    (lambda: F.ball_query(0.1, 5, np.zeros((1, 4, 3)), np.zeros((1, 1, 3))), "ball_query: nsample=5"),
    (lambda: F.ball_query(-1.0, 2, np.zeros((1, 4, 3)), np.zeros((1, 1, 3))), "ball_query: radius"),
    (lambda: F.group_points(np.zeros((1, 4, 2)), np.array([[4]])), "group_points: idx holds values in [4, 4]"),
    (lambda: F.three_nn(np.zeros((1, 4, 3)), np.zeros((1, 2, 3))), "three_nn: known of shape (1, 2, 3)"),
])
def test_errors_name_the_function(call, message):
    with pytest.raises((ValueError, ShapeError)) as caught:
        call()
    assert message in str(caught.value)
