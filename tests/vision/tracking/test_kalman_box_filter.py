import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.vision.tracking import CHI2_INV_95, KalmanBoxFilter


def _sort_reference(box):
    """SORT's filter written out: F, H, R, Q and the first P as in the reference tracker."""
    F = np.eye(7)
    F[0, 4] = F[1, 5] = F[2, 6] = 1
    H = np.zeros((4, 7))
    H[:4, :4] = np.eye(4)
    R = np.eye(4)
    R[2:, 2:] *= 10.0
    P = np.eye(7)
    P[4:, 4:] *= 1000.0
    P *= 10.0
    Q = np.eye(7)
    Q[-1, -1] *= 0.01
    Q[4:, 4:] *= 0.01
    w, h = box[2] - box[0], box[3] - box[1]
    x = np.zeros(7)
    x[:4] = [box[0] + w / 2, box[1] + h / 2, w * h, w / h]
    return x, P, F, H, Q, R


def _predict(x, P, F, Q):
    return F @ x, F @ P @ F.T + Q


def _update(x, P, z, H, R):
    S = H @ P @ H.T + R
    K = P @ H.T @ np.linalg.inv(S)
    x = x + K @ (z - H @ x)
    I_KH = np.eye(len(x)) - K @ H
    return x, I_KH @ P @ I_KH.T + K @ R @ K.T


def _measurements(seed, steps, variant):
    rng = np.random.default_rng(seed)
    boxes = []
    low, size = np.array([10.0, 20.0]), np.array([30.0, 60.0])
    for _ in range(steps):
        low = low + [3.0, -1.5] + rng.normal(0, 1, 2)
        size = size + rng.normal(0, 0.5, 2)
        boxes.append(np.concatenate([low, low + size]))
    return boxes


def test_sort_variant_matches_the_reference_formulas():
    boxes = _measurements(0, 8, "sort")
    kf = KalmanBoxFilter(boxes[0], variant="sort")
    x, P, F, H, Q, R = _sort_reference(boxes[0])
    np.testing.assert_allclose(kf.mean, x)
    np.testing.assert_allclose(kf.covariance, P)
    for i, box in enumerate(boxes[1:]):
        kf.predict()
        x, P = _predict(x, P, F, Q)
        np.testing.assert_allclose(kf.mean, x, rtol=1e-10)
        np.testing.assert_allclose(kf.covariance, P, rtol=1e-10)
        if i % 3 != 2:                                  # every third frame unobserved
            kf.update(box)
            w, h = box[2] - box[0], box[3] - box[1]
            x, P = _update(x, P, np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / h]), H, R)
            np.testing.assert_allclose(kf.mean, x, rtol=1e-9)
            np.testing.assert_allclose(kf.covariance, P, rtol=1e-8, atol=1e-10)
    w, h = np.sqrt(x[2] * x[3]), x[2] / np.sqrt(x[2] * x[3])
    np.testing.assert_allclose(kf.box, [x[0] - w / 2, x[1] - h / 2, x[0] + w / 2, x[1] + h / 2])


def test_bytetrack_variant_matches_the_height_proportional_noise():
    boxes = _measurements(1, 8, "bytetrack")
    kf = KalmanBoxFilter(boxes[0], variant="bytetrack")
    wp, wv = 1 / 20, 1 / 160

    def xyah(b):
        return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / (b[3] - b[1]), b[3] - b[1]])

    z0 = xyah(boxes[0])
    x = np.r_[z0, np.zeros(4)]
    h = z0[3]
    P = np.diag(np.square([2 * wp * h, 2 * wp * h, 1e-2, 2 * wp * h, 10 * wv * h, 10 * wv * h, 1e-5, 10 * wv * h]))
    F = np.eye(8) + np.eye(8, k=4)
    H = np.eye(4, 8)
    np.testing.assert_allclose(kf.mean, x)
    np.testing.assert_allclose(kf.covariance, P)
    for box in boxes[1:]:
        h = x[3]
        Q = np.diag(np.square([wp * h, wp * h, 1e-2, wp * h, wv * h, wv * h, 1e-5, wv * h]))
        x, P = _predict(x, P, F, Q)
        kf.predict()
        np.testing.assert_allclose(kf.mean, x, rtol=1e-10)
        np.testing.assert_allclose(kf.covariance, P, rtol=1e-10)
        h = x[3]
        R = np.diag(np.square([wp * h, wp * h, 1e-1, wp * h]))
        x, P = _update(x, P, xyah(box), H, R)
        kf.update(box)
        np.testing.assert_allclose(kf.mean, x, rtol=1e-9)
        np.testing.assert_allclose(kf.covariance, P, rtol=1e-8, atol=1e-12)
    a, hh = x[2], x[3]
    np.testing.assert_allclose(kf.box, [x[0] - a * hh / 2, x[1] - hh / 2, x[0] + a * hh / 2, x[1] + hh / 2])


@pytest.mark.parametrize("variant", ["sort", "bytetrack"])
def test_a_steady_motion_is_learned(variant):
    kf = KalmanBoxFilter([0, 0, 20, 40], variant=variant)
    for step in range(1, 15):
        kf.predict()
        kf.update([5 * step, 2 * step, 5 * step + 20, 2 * step + 40])
    np.testing.assert_allclose(kf.predict(), [75, 30, 95, 70], atol=0.5)


@pytest.mark.parametrize("variant", ["sort", "bytetrack"])
def test_gating_distance_is_the_mahalanobis_distance(variant):
    kf = KalmanBoxFilter([10, 10, 30, 50], variant=variant)
    for _ in range(5):                                  # a still object, seen a few times
        kf.predict()
        kf.update([10, 10, 30, 50])
    kf.predict()
    candidates = np.array([[10, 10, 30, 50], [11, 9, 31, 52], [200, 200, 220, 240]], dtype=float)
    distances = kf.gating_distance(candidates)
    mean, S = kf.project()
    for box, d in zip(candidates, distances):
        w, h = box[2] - box[0], box[3] - box[1]
        third, fourth = (w * h, w / h) if variant == "sort" else (w / h, h)
        diff = np.array([box[0] + w / 2, box[1] + h / 2, third, fourth]) - mean
        np.testing.assert_allclose(d, diff @ np.linalg.solve(S, diff), rtol=1e-9)
    assert distances[0] < CHI2_INV_95[4] < distances[2]
    position_only = kf.gating_distance(candidates, only_position=True)
    diff = np.array([21.0, 30.5]) - mean[:2]
    np.testing.assert_allclose(position_only[1], diff @ np.linalg.solve(S[:2, :2], diff), rtol=1e-9)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="variant"):
        KalmanBoxFilter([0, 0, 1, 1], variant="deepsort")
    with pytest.raises(ShapeError, match=r"shape \(4,\)"):
        KalmanBoxFilter([0, 0, 1])
    with pytest.raises(ValueError, match="x1 < x2"):
        KalmanBoxFilter([5, 0, 1, 1])
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        KalmanBoxFilter([0, 0, 1, 1]).gating_distance([1, 2, 3, 4])
