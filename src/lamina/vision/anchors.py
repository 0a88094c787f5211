"""Anchors and the box coding of anchor-based detectors (Faster R-CNN, RetinaNet), as
torchvision's ``AnchorGenerator`` and ``BoxCoder``.

A detector does not predict boxes directly: it predicts, for a reference box (an anchor or a
proposal) with centre (x_a, y_a), width w_a and height h_a, the offsets

    t_x = w_x (x - x_a) / w_a,   t_y = w_y (y - y_a) / h_a,   t_w = w_w log(w / w_a),   t_h = w_h log(h / h_a)

to the target box (x, y, w, h), with fixed weights (w_x, w_y, w_w, w_h).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import clip, exp, log
from lamina.functional.shape import concat, stack

__all__ = ["AnchorGenerator", "BoxCoder"]

DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)
"""Largest log-scale change decoded: a box grows at most 1000/16 times its reference."""


def _as_tensor(values, dtype=None) -> Tensor:
    if isinstance(values, Tensor):
        return values
    array = np.asarray(values)
    array = array if array.dtype.kind == "f" else array.astype(dtype or np.float64)
    return Tensor(array, dtype=array.dtype)


def _centres(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centre x, centre y, width, height of corner boxes (N, 4), each (N,)."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * width, boxes[:, 1] + 0.5 * height, width, height


class BoxCoder:
    """Encode boxes as offsets from reference boxes and decode them back (see the module
    docstring). ``bbox_xform_clip`` caps t_w / w_w and t_h / w_h when decoding, so exp stays
    finite. Arrays in give arrays out; tensors in give tensors, differentiable in the codes."""

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip: float = DEFAULT_XFORM_CLIP):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder: weights must be 4 numbers (w_x, w_y, w_w, w_h), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference_boxes, proposals):
        """Offsets (N, 4) of the target boxes ``reference_boxes`` (N, 4) from ``proposals`` (N, 4);
        lists of per-image arrays give a list."""
        if isinstance(reference_boxes, (list, tuple)):
            return [self.encode(r, p) for r, p in zip(reference_boxes, proposals)]
        given_tensor = isinstance(reference_boxes, Tensor) or isinstance(proposals, Tensor)
        targets, references = _as_tensor(reference_boxes), _as_tensor(proposals)
        if targets.shape != references.shape or targets.ndim != 2 or targets.shape[1] != 4:
            raise ShapeError(f"BoxCoder.encode: expected two (N, 4) box arrays, got {targets.shape} and "
                             f"{references.shape}")
        wx, wy, ww, wh = self.weights
        x_a, y_a, w_a, h_a = _centres(references)
        x, y, w, h = _centres(targets)
        codes = stack([wx * (x - x_a) / w_a, wy * (y - y_a) / h_a, ww * log(w / w_a), wh * log(h / h_a)], axis=1)
        return codes if given_tensor else codes.numpy()

    def decode_single(self, rel_codes, boxes):
        """Boxes (N, 4k) from codes (N, 4k) relative to ``boxes`` (N, 4), k boxes per row."""
        given_tensor = isinstance(rel_codes, Tensor)
        codes = _as_tensor(rel_codes)
        references = Tensor(backend.to_numpy(boxes.data if isinstance(boxes, Tensor) else boxes), dtype=codes.dtype)
        if codes.ndim != 2 or codes.shape[1] % 4 or references.shape != (codes.shape[0], 4):
            raise ShapeError(f"BoxCoder.decode: expected codes (N, 4k) and boxes (N, 4), got {codes.shape} and "
                             f"{references.shape}")
        wx, wy, ww, wh = self.weights
        x_a, y_a, w_a, h_a = (c.reshape(-1, 1) for c in _centres(references))
        dx, dy = codes[:, 0::4] / wx, codes[:, 1::4] / wy
        dw = clip(codes[:, 2::4] / ww, None, self.bbox_xform_clip)
        dh = clip(codes[:, 3::4] / wh, None, self.bbox_xform_clip)
        x, y = dx * w_a + x_a, dy * h_a + y_a
        half_w, half_h = 0.5 * (exp(dw) * w_a), 0.5 * (exp(dh) * h_a)
        decoded = stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=2).reshape(codes.shape)
        return decoded if given_tensor else decoded.numpy()

    def decode(self, rel_codes, boxes):
        """Boxes (N, k, 4) from codes (N, 4k) and reference boxes: one (N, 4) array or a list of
        per-image arrays, stacked in order."""
        if isinstance(boxes, (list, tuple)):
            parts = [b if isinstance(b, Tensor) else Tensor(np.asarray(b).reshape(-1, 4), dtype=np.float64)
                     for b in boxes]
            boxes = concat(parts, axis=0) if parts else np.zeros((0, 4))
        decoded = self.decode_single(rel_codes, boxes)
        return decoded.reshape(decoded.shape[0], decoded.shape[1] // 4, 4)


class AnchorGenerator:
    """Anchors of every feature-map level (torchvision's AnchorGenerator): level l has
    ``len(sizes[l]) * len(aspect_ratios[l])`` anchors per location, centred on the location's
    top-left pixel in the image, location (i, j) at (j s_w, i s_h), s = image size // map size.

    For a size s and a ratio r = h / w, the anchor is w = s / sqrt(r), h = s sqrt(r), written
    as (-w/2, -h/2, w/2, h/2) and rounded to whole pixels (half to even), in float32."""

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        sizes = tuple((s,) if isinstance(s, (int, float)) else tuple(s) for s in sizes)
        if aspect_ratios and isinstance(aspect_ratios[0], (int, float)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator: {len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect "
                             "ratios")
        self.sizes, self.aspect_ratios = sizes, tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [self.base_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def base_anchors(scales, aspect_ratios) -> np.ndarray:
        """(len(ratios) * len(scales), 4) anchors centred on 0, ratio-major."""
        scales = np.asarray(scales, dtype=np.float32)
        ratios = np.asarray(aspect_ratios, dtype=np.float32)
        h_ratios = np.sqrt(ratios)
        w_ratios = np.float32(1) / h_ratios
        widths = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        heights = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return np.round(np.stack([-widths, -heights, widths, heights], axis=1) / np.float32(2))

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, image_size: tuple[int, int], feature_sizes) -> list[np.ndarray]:
        """Per level, the anchors (h_l w_l A_l, 4): location-major (row by row), then the base anchors."""
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"AnchorGenerator: {len(feature_sizes)} feature maps for {len(self.cell_anchors)} "
                             "levels of sizes and aspect ratios")
        levels = []
        for (grid_h, grid_w), base in zip(feature_sizes, self.cell_anchors):
            stride_h, stride_w = image_size[0] // grid_h, image_size[1] // grid_w
            shift_y, shift_x = np.meshgrid(np.arange(grid_h) * stride_h, np.arange(grid_w) * stride_w, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1).astype(np.float32)
            levels.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
        return levels

    def __call__(self, images, feature_maps) -> list[np.ndarray]:
        """One (total anchors, 4) array per image, for NHWC ``images`` and a list of NHWC
        ``feature_maps`` (only their shapes are read)."""
        image_shape = tuple(images.shape)
        feature_sizes = [tuple(f.shape[1:3]) for f in feature_maps]
        anchors = np.concatenate(self.grid_anchors(image_shape[1:3], feature_sizes))
        return [anchors.copy() for _ in range(image_shape[0])]
