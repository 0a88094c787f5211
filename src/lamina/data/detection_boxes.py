"""Box arithmetic for the detection transforms (:mod:`lamina.data.detection_transforms`):
format conversion, clamping to the image and the validity rule of sanitising.

Boxes are (n, 4) arrays in pixels, x to the right and y downwards, in one of three formats:

- ``xyxy``: corners (x1, y1, x2, y2), the convention of lamina's detectors;
- ``xywh``: top-left corner and size (x1, y1, w, h), as COCO's annotations;
- ``cxcywh``: centre and size (cx, cy, w, h).

A box covers the continuous region [x1, x2) x [y1, y2): the filled pixels
``image[y1:y2, x1:x2]`` have the box (x1, y1, x2, y2). (:mod:`lamina.vision.boxes` converts
corner and centre boxes for the detectors; this data-level copy keeps the data package free
of imports from higher ranks.)
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["BOX_FORMATS", "as_boxes", "clamp_boxes", "convert_box_format", "valid_boxes"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def as_boxes(boxes, where: str) -> np.ndarray:
    """``boxes`` as a float array (n, 4) (an empty list gives (0, 4)); integer boxes become
    float32, float ones keep their dtype."""
    array = np.asarray(boxes)
    if array.size == 0 and array.ndim <= 2:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ShapeError(f"{where}: boxes must have shape (n, 4); got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: boxes must hold numbers; got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float32)


def convert_box_format(boxes, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Boxes (n, 4) rewritten from ``in_fmt`` to ``out_fmt`` (each one of :data:`BOX_FORMATS`):
    xywh = (x1, y1, x2 - x1, y2 - y1), cxcywh = ((x1 + x2)/2, (y1 + y2)/2, x2 - x1, y2 - y1)."""
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"convert_box_format: {name} must be one of {BOX_FORMATS}; got {fmt!r}")
    boxes = as_boxes(boxes, "convert_box_format")
    a, b, c, d = boxes.T
    if in_fmt == "xywh":
        corners = (a, b, a + c, b + d)
    elif in_fmt == "cxcywh":
        corners = (a - c / 2, b - d / 2, a + c / 2, b + d / 2)
    else:
        corners = (a, b, c, d)
    x1, y1, x2, y2 = corners
    if out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    elif out_fmt == "cxcywh":
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    else:
        out = corners
    return np.stack(out, axis=1).astype(boxes.dtype, copy=False)


def clamp_boxes(boxes, height: int, width: int) -> np.ndarray:
    """Corner boxes with x clipped to [0, width] and y to [0, height]."""
    boxes = as_boxes(boxes, "clamp_boxes")
    upper = np.asarray([width, height, width, height], dtype=boxes.dtype)
    return np.clip(boxes, 0, upper).astype(boxes.dtype, copy=False)


def valid_boxes(boxes, height: int, width: int, min_size: float = 1.0, min_area: float = 1.0) -> np.ndarray:
    """torchvision's ``SanitizeBoundingBoxes`` rule: a corner box is kept when its width and
    height are at least ``min_size``, its area at least ``min_area``, and all four coordinates
    lie in the image (0 <= x <= width, 0 <= y <= height). Returns (n,) bool."""
    boxes = as_boxes(boxes, "valid_boxes")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (widths >= min_size) & (heights >= min_size) & (widths * heights >= min_area)
    keep &= (boxes >= 0).all(axis=1)
    keep &= (boxes[:, 0] <= width) & (boxes[:, 2] <= width) & (boxes[:, 1] <= height) & (boxes[:, 3] <= height)
    return keep
