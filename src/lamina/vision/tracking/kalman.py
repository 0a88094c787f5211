"""Constant-velocity Kalman filters over a bounding box, as multi-object trackers use them.

The filter keeps a Gaussian belief N(x, P) over a state x and alternates

    predict:  x <- F x,                 P <- F P F^T + Q
    update:   y = z - H x,  S = H P H^T + R,  K = P H^T S^-1,
              x <- x + K y,             P <- (I - K H) P (I - K H)^T + K R K^T   (Joseph form)

for a measured box z. Two parametrisations are offered:

- ``"sort"`` (Bewley et al. 2016, SORT): x = [u, v, s, r, du, dv, ds], the box centre (u, v), its
  area s and aspect ratio r = w / h (r has no velocity). Fixed noise: R = diag(1, 1, 10, 10),
  Q = diag(1, 1, 1, 1, 0.01, 0.01, 0.0001) and a first P = diag(10, 10, 10, 10, 1e4, 1e4, 1e4).
  Before predicting, a negative next area (s + ds <= 0) sets ds to 0.
- ``"bytetrack"`` (Zhang et al. 2022, ByteTrack, after DeepSORT): x = [x, y, a, h, vx, vy, va, vh],
  the centre, aspect ratio a = w / h and height h with their velocities. Noise standard deviations
  are proportional to the height: position sigma_p = h / 20, velocity sigma_v = h / 160, so that

      P0 = diag(2 sp, 2 sp, 1e-2, 2 sp, 10 sv, 10 sv, 1e-5, 10 sv)^2,
      Q  = diag(sp, sp, 1e-2, sp, sv, sv, 1e-5, sv)^2,     R = diag(sp, sp, 1e-1, sp)^2,

  with h read from the current mean (the measured h for P0).

Boxes go in and come out as corners (x1, y1, x2, y2).
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["CHI2_INV_95", "KalmanBoxFilter"]

CHI2_INV_95 = {1: 3.8415, 2: 5.9915, 3: 7.8147, 4: 9.4877, 5: 11.070, 6: 12.592, 7: 14.067, 8: 15.507, 9: 16.919}
"""The 0.95 quantile of the chi-square distribution with n degrees of freedom: a gate on the squared
Mahalanobis distance of an n-dimensional measurement."""

VARIANTS = ("sort", "bytetrack")
POSITION_WEIGHT = 1.0 / 20
VELOCITY_WEIGHT = 1.0 / 160


def _corner_box(box, fn: str) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64)
    if array.shape != (4,):
        raise ShapeError(f"{fn}: expected one corner box (x1, y1, x2, y2) of shape (4,), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{fn}: the box must be finite, got {array.tolist()}")
    if array[2] <= array[0] or array[3] <= array[1]:
        raise ValueError(f"{fn}: the box needs x1 < x2 and y1 < y2, got {array.tolist()}")
    return array


def box_to_measurement(box: np.ndarray, variant: str) -> np.ndarray:
    """Corners -> [u, v, s, r] (sort) or [x, y, a, h] (bytetrack)."""
    width, height = box[2] - box[0], box[3] - box[1]
    centre_x, centre_y = box[0] + width / 2, box[1] + height / 2
    if variant == "sort":
        return np.array([centre_x, centre_y, width * height, width / height])
    return np.array([centre_x, centre_y, width / height, height])


def measurement_to_box(measurement: np.ndarray, variant: str) -> np.ndarray:
    """[u, v, s, r] (sort) or [x, y, a, h] (bytetrack) -> corners; a non-positive area gives NaNs."""
    if variant == "sort":
        area, ratio = measurement[2], measurement[3]
        width = np.sqrt(area * ratio) if area * ratio > 0 else np.nan
        height = area / width
    else:
        width, height = measurement[2] * measurement[3], measurement[3]
    u, v = measurement[0], measurement[1]
    return np.array([u - width / 2, v - height / 2, u + width / 2, v + height / 2])


class KalmanBoxFilter:
    """A constant-velocity Kalman filter over one box (see the module docstring for the two variants).

    ``mean`` and ``covariance`` hold the state; :meth:`predict` advances one frame, :meth:`update`
    folds in a measured box and :attr:`box` reads the current estimate as corners.
    """

    def __init__(self, box, variant: str = "sort"):
        if variant not in VARIANTS:
            raise ValueError(f"KalmanBoxFilter: variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        measurement = box_to_measurement(_corner_box(box, "KalmanBoxFilter"), variant)
        if variant == "sort":
            self.transition = np.eye(7)
            self.transition[[0, 1, 2], [4, 5, 6]] = 1.0
            self.observation = np.eye(4, 7)
            self.mean = np.concatenate([measurement, np.zeros(3)])
            self.covariance = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
        else:
            self.transition = np.eye(8)
            self.transition[range(4), range(4, 8)] = 1.0
            self.observation = np.eye(4, 8)
            self.mean = np.concatenate([measurement, np.zeros(4)])
            height = measurement[3]
            position, velocity = 2 * POSITION_WEIGHT * height, 10 * VELOCITY_WEIGHT * height
            self.covariance = np.diag(np.square([position, position, 1e-2, position,
                                                 velocity, velocity, 1e-5, velocity]))

    def process_noise(self) -> np.ndarray:
        """Q: fixed for sort, proportional to the current height for bytetrack."""
        if self.variant == "sort":
            return np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
        position, velocity = POSITION_WEIGHT * self.mean[3], VELOCITY_WEIGHT * self.mean[3]
        return np.diag(np.square([position, position, 1e-2, position, velocity, velocity, 1e-5, velocity]))

    def measurement_noise(self) -> np.ndarray:
        """R: fixed for sort, proportional to the current height for bytetrack."""
        if self.variant == "sort":
            return np.diag([1.0, 1.0, 10.0, 10.0])
        position = POSITION_WEIGHT * self.mean[3]
        return np.diag(np.square([position, position, 1e-1, position]))

    @property
    def box(self) -> np.ndarray:
        """The current estimate as corners (x1, y1, x2, y2)."""
        return measurement_to_box(self.mean[:4], self.variant)

    def predict(self) -> np.ndarray:
        """x <- F x, P <- F P F^T + Q; returns the predicted box."""
        if self.variant == "sort" and self.mean[6] + self.mean[2] <= 0:
            self.mean[6] = 0.0
        noise = self.process_noise()
        self.mean = self.transition @ self.mean
        self.covariance = self.transition @ self.covariance @ self.transition.T + noise
        return self.box

    def project(self) -> tuple[np.ndarray, np.ndarray]:
        """The predicted measurement H x and its covariance S = H P H^T + R."""
        h = self.observation
        return h @ self.mean, h @ self.covariance @ h.T + self.measurement_noise()

    def update(self, box) -> np.ndarray:
        """Fold in a measured corner box (Joseph-form update); returns the corrected box."""
        measurement = box_to_measurement(_corner_box(box, "KalmanBoxFilter.update"), self.variant)
        h, noise = self.observation, self.measurement_noise()
        projected, innovation_cov = self.project()
        gain = np.linalg.solve(innovation_cov, h @ self.covariance).T            # K = P H^T S^-1 (S symmetric)
        self.mean = self.mean + gain @ (measurement - projected)
        keep = np.eye(len(self.mean)) - gain @ h
        self.covariance = keep @ self.covariance @ keep.T + gain @ noise @ gain.T
        return self.box

    def gating_distance(self, boxes, only_position: bool = False) -> np.ndarray:
        """Squared Mahalanobis distances (z - H x)^T S^-1 (z - H x) of corner boxes ``(N, 4)`` to the
        prediction; with ``only_position`` just the centre (2 degrees of freedom). Compare with
        :data:`CHI2_INV_95` [4] (or [2]) to gate unlikely pairs."""
        array = np.asarray(boxes, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 4:
            raise ShapeError(f"KalmanBoxFilter.gating_distance: expected boxes of shape (N, 4), got {array.shape}")
        measurements = np.array([box_to_measurement(b, self.variant) for b in array]).reshape(-1, 4)
        projected, innovation_cov = self.project()
        if only_position:
            projected, innovation_cov, measurements = projected[:2], innovation_cov[:2, :2], measurements[:, :2]
        lower = np.linalg.cholesky(innovation_cov)
        whitened = np.linalg.solve(lower, (measurements - projected).T)
        return np.sum(whitened * whitened, axis=0)
