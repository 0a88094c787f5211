"""Region-of-interest pooling (Fast / Mask R-CNN): a fixed-size feature grid cut from each box.

Both ops take NHWC features ``x`` (N, H, W, C) and K boxes ``rois`` (K, 5), each row
``(batch_index, x1, y1, x2, y2)`` in input-image pixels, scaled to the feature map by
``spatial_scale``; they return (K, out_h, out_w, C). The rules follow torchvision's CPU kernels.

RoIAlign splits the box (scaled, minus 0.5 when ``aligned``; with ``aligned=False`` each side
at least 1) into out_h x out_w bins and averages, in each bin, a g_h x g_w grid of bilinear
samples at the sub-bin centres,

    y = y1 + p b_h + (i + 1/2) b_h / g_h,   b_h = roi_h / out_h,   g_h = sampling_ratio or ceil(roi_h / out_h),

(x likewise). A sample with y < -1 or y > H (or x out of [-1, W]) counts as 0; otherwise y is
clamped to >= 0 and, past the last row, to H - 1. The bilinear weights of a sample factor into
a row weight times a column weight, so the op is y_k = A_k x_{b_k} B_k^T per channel, with
A_k (out_h, H) and B_k (out_w, W) the summed row and column weights (the 1 / (g_h g_w) of the
average folded into A_k): it is linear in x, and its backward is the transposed contraction.

RoIPool rounds the scaled box to whole pixels (half away from zero), splits it into bins
floor(p b_h) .. ceil((p + 1) b_h) (b_h = roi_h / out_h, roi_h = max(y2 - y1 + 1, 1)), clipped
to the image, and takes each bin's maximum (0 for an empty bin); the gradient goes to the
first maximal pixel in row-major order.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Function, Tensor

__all__ = ["RoIAlign", "RoIPool", "roi_align_weights", "roi_pool_windows"]


def _axis_weights(start, bin_size, grid, out: int, length: int, dtype) -> np.ndarray:
    """Summed bilinear weights (K, out, length) along one axis for K boxes: entry (k, p, j) is
    the total weight pixel j gets from the samples of bin p, with samples that fall outside
    [-1, length] weighted 0 (torchvision's rules, one axis at a time)."""
    k_count = start.shape[0]
    if length == 0:                      # an empty feature map: no pixel to sample, every bin is 0
        return np.zeros((k_count, out, 0), dtype=dtype)
    most = max(int(grid.max()) if k_count else 1, 1)
    bins, steps = np.arange(out), np.arange(most)
    coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
             + (steps[None, None, :] + 0.5) * (bin_size / np.maximum(grid, 1))[:, None, None])
    used = (steps[None, None, :] < grid[:, None, None]) & (coord >= -1.0) & (coord <= length)
    coord = np.maximum(coord, 0.0)
    low = np.floor(coord).astype(np.int64)
    last = low >= length - 1
    low = np.where(last, length - 1, low)
    high = np.where(last, length - 1, low + 1)
    frac = np.where(last, 0.0, coord - low)
    weights = np.zeros((k_count, out, length), dtype=np.float64)
    rows = np.broadcast_to(np.arange(k_count)[:, None, None], coord.shape)
    cols = np.broadcast_to(bins[None, :, None], coord.shape)
    np.add.at(weights, (rows[used], cols[used], low[used]), (1.0 - frac)[used])
    np.add.at(weights, (rows[used], cols[used], high[used]), frac[used])
    return weights.astype(dtype)


def roi_align_weights(rois, feature_size: tuple[int, int], output_size: tuple[int, int], spatial_scale: float,
                      sampling_ratio: int, aligned: bool, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The row weights A (K, out_h, H), holding the 1 / sample-count of the average, and the
    column weights B (K, out_w, W) of RoIAlign for the boxes ``rois`` (K, 5)."""
    rois = np.asarray(rois, dtype=np.float64)
    height, width = feature_size
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = np.maximum(roi_w, 1.0), np.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        grid_h = np.full(len(rois), sampling_ratio, dtype=np.int64)
        grid_w = grid_h
    else:
        grid_h = np.ceil(roi_h / out_h).astype(np.int64)
        grid_w = np.ceil(roi_w / out_w).astype(np.int64)
    count = np.maximum(grid_h * grid_w, 1)
    rows = _axis_weights(y1, roi_h / out_h, grid_h, out_h, height, np.float64) / count[:, None, None]
    cols = _axis_weights(x1, roi_w / out_w, grid_w, out_w, width, np.float64)
    return rows.astype(dtype), cols.astype(dtype)


class RoIAlign(Function):
    """y_k = A_k x_{b_k} B_k^T per channel (see the module docstring); A, B and the batch
    indices are hyperparameters ``rows``, ``cols``, ``batch``, computed from the boxes.

    dJ/dx_b = sum over the boxes k of image b of A_k^T dy_k B_k. Linear in x, so the
    backward is differentiable again as the same adjoint map."""

    def forward(self, x):
        xp = backend.xp
        self.in_shape = x.shape
        k_count, out_h, _ = self.rows.shape
        out = xp.zeros((k_count, out_h, self.cols.shape[1], x.shape[3]), dtype=x.dtype)
        height, width, channels = x.shape[1:]
        for image, boxes in self._groups():
            # two matrix products (much faster than einsum); sizes spelt out, as H, W or C may be 0
            rows = self.rows[boxes].reshape(len(boxes) * out_h, height)
            over_rows = (rows @ x[image].reshape(height, width * channels)).reshape(len(boxes), out_h, width, channels)
            out[boxes] = xp.matmul(self.cols[boxes][:, None], over_rows)
        return out

    def backward(self, dy):
        xp = backend.xp
        dx = xp.zeros(self.in_shape, dtype=dy.dtype)
        _, height, width, channels = self.in_shape
        for image, boxes in self._groups():
            over_cols = xp.matmul(self.cols[boxes].transpose(0, 2, 1)[:, None], dy[boxes])
            rows = self.rows[boxes].reshape(len(boxes) * self.rows.shape[1], height)
            dx[image] += (rows.T @ over_cols.reshape(rows.shape[0], width * channels)).reshape(dx.shape[1:])
        return (dx,)

    backward_graph = Function.linear_backward_graph

    def _groups(self):
        """(image index, indices of its boxes) for every image that has boxes."""
        for image in np.unique(self.batch):
            yield int(image), np.flatnonzero(self.batch == image)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's round(): halves go away from zero (NumPy's round goes to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def roi_pool_windows(rois, feature_size: tuple[int, int], output_size: tuple[int, int], spatial_scale: float,
                     dtype) -> tuple[np.ndarray, np.ndarray]:
    """RoIPool's bin bounds, clipped to the feature map: rows (K, out_h, 2) and columns
    (K, out_w, 2) of [start, end), computed in ``dtype`` as torchvision's kernel does."""
    t = np.dtype(dtype).type
    rois = np.asarray(rois, dtype=dtype)
    scaled = _round_half_away(rois[:, 1:] * t(spatial_scale))
    bounds = []
    for start, end, out, length in ((scaled[:, 1], scaled[:, 3], output_size[0], feature_size[0]),
                                    (scaled[:, 0], scaled[:, 2], output_size[1], feature_size[1])):
        size = np.maximum(end - start + t(1), t(1))
        bin_size = (size / t(out)).astype(dtype)
        bins = np.arange(out, dtype=dtype)
        low = np.floor(bins[None, :] * bin_size[:, None]) + start[:, None]
        high = np.ceil((bins[None, :] + t(1)) * bin_size[:, None]) + start[:, None]
        window = np.stack([low, high], axis=-1)
        bounds.append(np.clip(window, 0, length).astype(np.int64))
    return bounds[0], bounds[1]


class RoIPool(Function):
    """The maximum over each bin (the windows are hyperparameters ``row_bins`` (K, out_h, 2),
    ``col_bins`` (K, out_w, 2) and ``batch``); dJ/dx adds dy at each bin's first maximal pixel."""

    def forward(self, x):
        xp = backend.xp
        n, height, width, channels = self.in_shape = x.shape
        k_count, out_h = self.row_bins.shape[:2]
        out_w = self.col_bins.shape[1]
        out = np.zeros((k_count, out_h, out_w, channels), dtype=x.dtype)
        self.argmax = np.full(out.shape, -1, dtype=np.int64)
        values = backend.to_numpy(x)
        for k in range(k_count):
            image = values[int(self.batch[k])]
            for p, (top, bottom) in enumerate(self.row_bins[k]):
                for q, (left, right) in enumerate(self.col_bins[k]):
                    if bottom <= top or right <= left:
                        continue
                    window = image[top:bottom, left:right].reshape(-1, channels)
                    best = window.argmax(axis=0)
                    out[k, p, q] = window[best, np.arange(channels)]
                    row, col = np.divmod(best, right - left)
                    self.argmax[k, p, q] = (row + top) * width + col + left
        return xp.asarray(out)

    def backward(self, dy):
        n, height, width, channels = self.in_shape
        grad = np.zeros((n, height * width, channels), dtype=dy.dtype)
        picked = self.argmax >= 0
        k, _, _, c = np.nonzero(picked)
        np.add.at(grad, (self.batch[k], self.argmax[picked], c), backend.to_numpy(dy)[picked])
        return (backend.xp.asarray(grad.reshape(self.in_shape)),)


def check_sampling_ratio(sampling_ratio) -> int:
    """An integer; <= 0 means the adaptive grid ceil(roi / out)."""
    if isinstance(sampling_ratio, bool) or not float(sampling_ratio).is_integer():
        raise ValueError(f"roi_align: sampling_ratio must be an integer, got {sampling_ratio!r}")
    return int(sampling_ratio)


def as_tensor(x) -> Tensor:
    """A tensor as is; an array of floats as a tensor of its own dtype."""
    if isinstance(x, Tensor):
        return x
    array = backend.xp.asarray(x)
    return Tensor(array, dtype=array.dtype if array.dtype.kind == "f" else None)
