"""Top-down pose estimation's coordinate codecs, in mmpose's conventions (NumPy, float64).

Crops. A person box becomes a center c and a scale s = (w, h) (the box enlarged by ``padding``,
then widened or heightened to the crop's aspect ratio); the crop of size (W, H) is the
similarity

    p' = (W / s_w) R(-theta) (p - c) + (W / 2, H / 2),

R(theta) the rotation by theta degrees: mmpose's ``get_warp_matrix`` (three point pairs given
to an affine solver), written in closed form, with ``inverse`` mapping crop points back.

Heatmaps (MSRA, Xiao et al. 2018). A keypoint at p (input pixels) sits at p / stride on the
(H, W) heatmap grid, stride = input size / heatmap size. Its target is the Gaussian

    G(x, y) = exp(-((x - mu_x)^2 + (y - mu_y)^2) / (2 sigma^2)),

mu the keypoint rounded to the nearest cell and the Gaussian cut to its window, the cells within
3 sigma of mu on each axis ((6 sigma + 1)^2 cells for integer 3 sigma), or, with ``unbiased=True``
(Zhang et al. 2020, DARK), mu the exact sub-pixel point and the Gaussian not cut. A keypoint
weighs its visibility (COCO's 2 counted as 1); one below 0.5 or whose window holds no cell of
the grid has no Gaussian, and the latter weighs 0.

Decoding. ``argmax`` takes the highest cell (x, y) and moves it a quarter cell towards the
higher neighbour along each axis, sign(h(x+1, y) - h(x-1, y)) / 4 and likewise in y. ``dark``
blurs each map by a Gaussian (kernel 11, sigma 0.3 ((k - 1) / 2 - 1) + 0.8, rescaled to keep
the map's maximum), takes logs (values clipped to [1e-3, 50]) and refines the maximum m by one
Newton step on the second-order Taylor expansion,

    mu = m - H(m)^-1 D(m),   D, H the central first and second differences of log h,

exact for a Gaussian. ``soft_argmax`` (Sun et al. 2018, integral regression) is the
expectation of the coordinates under softmax(beta h) over the grid
(:func:`lamina.functional.soft_argmax_2d` for the differentiable version). With argmax and
DARK a keypoint whose maximum is not positive decodes to (-1, -1) with its score, as mmpose's.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.errors import ShapeError

__all__ = ["bbox_to_center_scale", "decode_heatmaps", "encode_heatmaps", "fix_aspect_ratio", "flip_heatmaps",
           "gaussian_blur_heatmaps", "get_warp_matrix", "heatmap_maximum", "transform_points", "warp_affine"]

DECODERS = ("argmax", "dark", "soft_argmax")


def _pair(value, what: str, fn: str) -> tuple[float, float]:
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.shape != (2,):
        raise ValueError(f"{fn}: {what} must be a pair (width, height), got {value!r}")
    return float(values[0]), float(values[1])


def bbox_to_center_scale(bboxes, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Corner boxes (..., 4) (x1, y1, x2, y2) -> centers (..., 2) and scales (..., 2) = box
    size times ``padding`` (mmpose's ``bbox_xyxy2cs``)."""
    boxes = np.asarray(bboxes, dtype=np.float64)
    if boxes.shape[-1:] != (4,):
        raise ShapeError(f"bbox_to_center_scale: boxes need a last axis of 4 (x1, y1, x2, y2), got shape "
                         f"{boxes.shape}")
    centers = (boxes[..., :2] + boxes[..., 2:]) / 2
    return centers, (boxes[..., 2:] - boxes[..., :2]) * padding


def fix_aspect_ratio(scales, aspect_ratio: float) -> np.ndarray:
    """Grow the shorter side of each scale (..., 2) (w, h) so that w / h = ``aspect_ratio``."""
    scales = np.asarray(scales, dtype=np.float64)
    w, h = scales[..., 0], scales[..., 1]
    wider = w > h * aspect_ratio
    return np.stack([np.where(wider, w, h * aspect_ratio), np.where(wider, w / aspect_ratio, h)], axis=-1)


def get_warp_matrix(center, scale, output_size, rotation: float = 0.0, inverse: bool = False) -> np.ndarray:
    """The 2x3 affine matrix of the crop (module docstring) of the region ``center`` / ``scale``
    (w, h) to ``output_size`` (W, H), rotated by ``rotation`` degrees; ``inverse`` maps crop
    points back to the image. Raises ValueError for a zero-sized scale."""
    fn = "get_warp_matrix"
    cx, cy = _pair(center, "center", fn)
    width, _ = _pair(scale, "scale", fn)
    out_w, out_h = _pair(output_size, "output_size", fn)
    if not width > 0 or not out_w > 0 or not out_h > 0:
        raise ValueError(f"{fn}: the box and the output need a positive width, got scale {scale!r} and "
                         f"output_size {output_size!r} (a zero-sized box cannot be cropped)")
    zoom, angle = out_w / width, math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = zoom * np.array([[cos, sin], [-sin, cos]])
    if inverse:
        linear = linear.T / zoom ** 2
        offset = np.array([cx, cy]) - linear @ np.array([out_w / 2, out_h / 2])
    else:
        offset = np.array([out_w / 2, out_h / 2]) - linear @ np.array([cx, cy])
    return np.concatenate([linear, offset[:, None]], axis=1)


def transform_points(points, matrix) -> np.ndarray:
    """Points (..., 2) through a 2x3 affine ``matrix``: A p + b."""
    points, matrix = np.asarray(points, dtype=np.float64), np.asarray(matrix, dtype=np.float64)
    if points.shape[-1:] != (2,) or matrix.shape != (2, 3):
        raise ShapeError(f"transform_points: need points (..., 2) and a (2, 3) matrix, got shapes {points.shape} "
                         f"and {matrix.shape}")
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(image, matrix, output_size) -> np.ndarray:
    """The image (h, w, c) warped by the 2x3 ``matrix`` (image -> output pixels) to
    ``output_size`` (W, H): each output pixel samples the image bilinearly at A^-1 (p - b),
    pixel centres at integer coordinates and zeros outside (OpenCV's ``warpAffine`` with
    linear interpolation and a constant border)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ShapeError(f"warp_affine: need one HWC image (h, w, c), got shape {image.shape}")
    out_w, out_h = (int(round(v)) for v in _pair(output_size, "output_size", "warp_affine"))
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inverse = np.linalg.inv(matrix[:, :2])
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    source = (np.stack([xs, ys], axis=-1) - matrix[:, 2]) @ linear_inverse.T
    height, width = image.shape[:2]
    x0, y0 = np.floor(source[..., 0]), np.floor(source[..., 1])
    fx, fy = source[..., 0] - x0, source[..., 1] - y0
    padded = np.zeros((height + 2, width + 2, image.shape[2]), dtype=np.float64)
    padded[1:-1, 1:-1] = image
    out = np.zeros((out_h, out_w, image.shape[2]))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            rows = np.clip(y0 + dy + 1, 0, height + 1).astype(np.int64)
            cols = np.clip(x0 + dx + 1, 0, width + 1).astype(np.int64)
            out += (wy * wx)[..., None] * padded[rows, cols]
    return out.astype(image.dtype if image.dtype.kind == "f" else np.float32)


def _checked_keypoints(keypoints, visible, fn: str) -> tuple[np.ndarray, np.ndarray]:
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ShapeError(f"{fn}: keypoints need shape (N, K, 2), got {keypoints.shape}")
    visible = np.ones(keypoints.shape[:2]) if visible is None else np.asarray(visible, dtype=np.float64)
    if visible.shape != keypoints.shape[:2]:
        raise ShapeError(f"{fn}: visibility needs shape {keypoints.shape[:2]} (one per keypoint), got "
                         f"{visible.shape}")
    return keypoints, visible


def encode_heatmaps(keypoints, visible, input_size, heatmap_size, sigma: float = 2.0,
                    unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MSRA heatmap targets (module docstring): keypoints (N, K, 2) in input pixels (x, y) and
    their visibility (N, K) (None: all visible) -> heatmaps (N, H, W, K) and weights (N, K).
    ``input_size`` and ``heatmap_size`` are (width, height)."""
    fn = "encode_heatmaps"
    keypoints, visible = _checked_keypoints(keypoints, visible, fn)
    in_w, in_h = _pair(input_size, "input_size", fn)
    width, height = (int(v) for v in _pair(heatmap_size, "heatmap_size", fn))
    if sigma <= 0:
        raise ValueError(f"{fn}: sigma must be positive, got {sigma!r}")
    points = keypoints / np.array([in_w / width, in_h / height])
    count, joints = visible.shape
    heatmaps, weights = np.zeros((count, height, width, joints)), np.minimum(visible, 1.0)
    radius = 3 * sigma
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)[:, None]
    for n in range(count):
        for k in range(joints):
            if visible[n, k] < 0.5:
                continue
            mu = points[n, k] if unbiased else np.floor(points[n, k] + 0.5)
            (left, top), (right, bottom) = np.ceil(mu - radius), np.floor(mu + radius)   # cells |c - mu| <= 3 sigma
            if left > width - 1 or top > height - 1 or right < 0 or bottom < 0:
                weights[n, k] = 0.0
                continue
            gaussian = np.exp(-((xs - mu[0]) ** 2 + (ys - mu[1]) ** 2) / (2 * sigma ** 2))
            if not unbiased:
                gaussian *= (np.abs(xs - mu[0]) <= radius) & (np.abs(ys - mu[1]) <= radius)
            heatmaps[n, :, :, k] = gaussian
    return heatmaps, weights


def _checked_heatmaps(heatmaps, fn: str) -> np.ndarray:
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.ndim != 4:
        raise ShapeError(f"{fn}: heatmaps need shape (N, H, W, K), got {heatmaps.shape}")
    return heatmaps


def heatmap_maximum(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """The highest cell of each map of (N, H, W, K) heatmaps as (x, y) (N, K, 2) and its value
    (N, K); (-1, -1) where the maximum is not positive."""
    heatmaps = _checked_heatmaps(heatmaps, "heatmap_maximum")
    count, height, width, joints = heatmaps.shape
    flat = heatmaps.transpose(0, 3, 1, 2).reshape(count, joints, height * width)
    best = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    rows, cols = np.divmod(best, width)
    points = np.stack([cols, rows], axis=-1).astype(np.float64)
    points[scores <= 0] = -1.0
    return points, scores


def _refine_quarter(points: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    _, height, width, _ = heatmaps.shape
    out = points.copy()
    for (n, k), (x, y) in _cells(points):
        if 0 < x < width - 1:
            out[n, k, 0] += 0.25 * np.sign(heatmaps[n, y, x + 1, k] - heatmaps[n, y, x - 1, k])
        if 0 < y < height - 1:
            out[n, k, 1] += 0.25 * np.sign(heatmaps[n, y + 1, x, k] - heatmaps[n, y - 1, x, k])
    return out


def _cells(points: np.ndarray):
    """((n, k), (x, y)) for every decoded keypoint, (x, y) as ints, skipping the undecoded."""
    for n in range(points.shape[0]):
        for k in range(points.shape[1]):
            x, y = points[n, k]
            if x >= 0 and y >= 0:
                yield (n, k), (int(x), int(y))


def gaussian_blur_heatmaps(heatmaps, kernel_size: int = 11) -> np.ndarray:
    """DARK's modulation: each map of (N, H, W, K) blurred by a normalized Gaussian kernel of
    ``kernel_size`` (sigma 0.3 ((k - 1) / 2 - 1) + 0.8, zeros beyond the border), then scaled
    back to its original maximum."""
    heatmaps = _checked_heatmaps(heatmaps, "gaussian_blur_heatmaps")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur_heatmaps: kernel_size must be a positive odd int, got {kernel_size!r}")
    sigma = 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8
    taps = np.arange(kernel_size) - (kernel_size - 1) / 2
    kernel = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    _, height, width, _ = heatmaps.shape
    border = kernel_size // 2
    padded = np.pad(heatmaps, ((0, 0), (border, border), (border, border), (0, 0)))
    blurred = sum(w * padded[:, i:i + height] for i, w in enumerate(kernel))
    blurred = sum(w * blurred[:, :, i:i + width] for i, w in enumerate(kernel))
    peak, new_peak = heatmaps.max(axis=(1, 2), keepdims=True), blurred.max(axis=(1, 2), keepdims=True)
    return blurred * np.divide(peak, new_peak, out=np.zeros_like(peak), where=new_peak != 0)


def _refine_dark(points: np.ndarray, heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    logs = np.log(np.clip(gaussian_blur_heatmaps(heatmaps, kernel_size), 1e-3, 50.0))
    _, height, width, _ = heatmaps.shape
    out = points.copy()
    for (n, k), (x, y) in _cells(points):
        if not (1 < x < width - 2 and 1 < y < height - 2):
            continue
        h = logs[n, :, :, k]
        gradient = 0.5 * np.array([h[y, x + 1] - h[y, x - 1], h[y + 1, x] - h[y - 1, x]])
        dxx = 0.25 * (h[y, x + 2] - 2 * h[y, x] + h[y, x - 2])
        dyy = 0.25 * (h[y + 2, x] - 2 * h[y, x] + h[y - 2, x])
        dxy = 0.25 * (h[y + 1, x + 1] - h[y - 1, x + 1] - h[y + 1, x - 1] + h[y - 1, x - 1])
        hessian = np.array([[dxx, dxy], [dxy, dyy]])
        if dxx * dyy - dxy ** 2 != 0:
            out[n, k] -= np.linalg.solve(hessian, gradient)
    return out


def _soft_argmax(heatmaps: np.ndarray, beta: float) -> np.ndarray:
    count, height, width, joints = heatmaps.shape
    logits = beta * heatmaps.reshape(count, height * width, joints)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    ys, xs = np.divmod(np.arange(height * width, dtype=np.float64), width)
    return np.stack([np.einsum("npk,p->nk", weights, xs), np.einsum("npk,p->nk", weights, ys)], axis=-1)


def decode_heatmaps(heatmaps, input_size=None, method: str = "argmax", blur_kernel_size: int = 11,
                    beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, H, W, K) -> keypoints (N, K, 2) and scores (N, K) by ``method`` 'argmax'
    (quarter-offset refinement), 'dark' or 'soft_argmax' (module docstring). The keypoints are
    in heatmap cells, or in input pixels when ``input_size`` (width, height) is given; scores
    are the maps' maxima."""
    fn = "decode_heatmaps"
    heatmaps = _checked_heatmaps(heatmaps, fn)
    if method not in DECODERS:
        raise ValueError(f"{fn}: method must be one of {DECODERS}, got {method!r}")
    points, scores = heatmap_maximum(heatmaps)
    if method == "argmax":
        points = _refine_quarter(points, heatmaps)
    elif method == "dark":
        points = _refine_dark(points, heatmaps, blur_kernel_size)
    else:
        points = _soft_argmax(heatmaps, beta)
    if input_size is not None:
        in_w, in_h = _pair(input_size, "input_size", fn)
        stride = np.array([in_w / heatmaps.shape[2], in_h / heatmaps.shape[1]])
        decoded = (scores[..., None] > 0) | (method == "soft_argmax")
        points = np.where(decoded, points * stride, points)
    return points, scores


def flip_heatmaps(heatmaps, flip_pairs=(), shift: bool = False) -> np.ndarray:
    """The heatmaps (N, H, W, K) of a horizontally flipped input brought back: mirrored along
    the width, the maps of each (left, right) pair in ``flip_pairs`` exchanged and, with
    ``shift``, moved one cell right (mmpose's ``shift_heatmap``). Mirroring the input puts a
    keypoint 1 - 1 / stride cells left of where mirroring its heatmap does; the shift
    compensates for that, up to 1 / stride of a cell (stride 4: a quarter)."""
    heatmaps = _checked_heatmaps(heatmaps, "flip_heatmaps")
    joints = heatmaps.shape[-1]
    order = np.arange(joints)
    for pair in flip_pairs:
        left, right = (int(i) for i in pair)
        if not (0 <= left < joints and 0 <= right < joints):
            raise ValueError(f"flip_heatmaps: flip pair {tuple(pair)} is out of range for {joints} keypoints")
        order[left], order[right] = right, left
    flipped = heatmaps[:, :, ::-1, :][..., order]
    if shift:
        flipped = np.concatenate([flipped[:, :, :1], flipped[:, :, :-1]], axis=2)
    return np.ascontiguousarray(flipped)
