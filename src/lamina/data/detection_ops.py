"""The functional side of box-aware augmentation (:mod:`lamina.data.detection_transforms`): checking
a sample, and flipping, cropping, padding, resizing and warping an image with its target (boxes,
masks, keypoints), each deterministic. The conventions are those of
:mod:`lamina.data.detection_transforms`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.detection_boxes import as_boxes, clamp_boxes
from lamina.data.image_ops import affine_warp
from lamina.data.transforms import INTERPOLATIONS, resize_image
from lamina.errors import ShapeError

__all__ = ["PER_OBJECT_KEYS", "Target", "affine", "affine_matrix", "check_sample", "crop", "horizontal_flip", "pad",
           "resize", "resized_size", "vertical_flip"]

Target = dict[str, Any]
PER_OBJECT_KEYS = ("labels", "masks", "keypoints", "iscrowd", "area")


# ----------------------------------------------------------------------------- checking

def check_sample(image: Any, target: Target, where: str) -> tuple[np.ndarray, Target]:
    """``(image, target)`` with the image as (H, W, C) and a copy of the target whose boxes are
    a float (n, 4) array and whose labels, masks and keypoints agree with them in number (and
    the masks with the image in size); else a ShapeError naming ``where``."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ShapeError(f"{where}: expected one image of shape (height, width, channels); got shape {image.shape}")
    if not isinstance(target, dict) or "boxes" not in target:
        raise TypeError(f"{where}: the target must be a dict with 'boxes'; got {type(target).__name__}")
    target = dict(target)
    boxes = target["boxes"] = as_boxes(target["boxes"], where)
    n, (height, width) = len(boxes), image.shape[:2]
    if "labels" in target and len(np.asarray(target["labels"]).reshape(-1)) != n:
        raise ShapeError(f"{where}: {n} boxes but labels of shape {np.shape(target['labels'])}")
    if "masks" in target:
        masks = target["masks"] = np.asarray(target["masks"])
        if masks.shape != (n, height, width):
            raise ShapeError(f"{where}: masks must have shape (n boxes, height, width) = {(n, height, width)}; "
                             f"got {masks.shape}")
    if "keypoints" in target:
        keypoints = target["keypoints"] = np.asarray(target["keypoints"])
        if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 3:
            raise ShapeError(f"{where}: keypoints must have shape ({n} boxes, k, 3); got {keypoints.shape}")
    return image, target


def generator_or_default(rng: np.random.Generator | None) -> np.random.Generator:
    return backend.rng() if rng is None else rng


def checked_probability(p: float, where: str) -> float:
    if not 0 <= p <= 1:
        raise ValueError(f"{where}: p must lie in [0, 1]; got {p!r}")
    return float(p)


def bounds(values: Sequence[float], where: str, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not low <= high:
        raise ValueError(f"{where}: {name} must be (low, high) with low <= high; got {values!r}")
    return low, high


# ----------------------------------------------------------------------------- fields

def _hide_outside(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Visibility 0 for the keypoints outside the image [0, width] x [0, height]."""
    x, y = keypoints[..., 0], keypoints[..., 1]
    outside = (x < 0) | (x > width) | (y < 0) | (y > height)
    keypoints[..., 2] = np.where(outside, 0, keypoints[..., 2])
    return keypoints


def _mask_planes(masks: np.ndarray, function: Callable[[np.ndarray], np.ndarray], height: int,
                 width: int) -> np.ndarray:
    """``function`` applied to the masks as one (H, W, n) uint8 image, back as (n, height, width)
    in the masks' dtype; (height, width) is the size ``function`` gives (for no masks)."""
    if len(masks) == 0:
        return np.zeros((0, height, width), dtype=masks.dtype)
    planes = function(np.moveaxis(masks, 0, -1).astype(np.uint8))
    return np.moveaxis(planes, -1, 0).astype(masks.dtype)


# ----------------------------------------------------------------------------- functional ops

def horizontal_flip(image: np.ndarray, target: Target, flip_index: Sequence[int] | None = None
                    ) -> tuple[np.ndarray, Target]:
    """Mirror left-right: x -> W - x, so a box (x1, y1, x2, y2) becomes (W - x2, y1, W - x1,
    y2). Keypoint j takes keypoint ``flip_index[j]``'s place when given (swapping the left and
    right parts of an object)."""
    image, target = check_sample(image, target, "horizontal_flip")
    width = image.shape[1]
    boxes = target["boxes"]
    target["boxes"] = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    if "masks" in target:
        target["masks"] = target["masks"][:, :, ::-1].copy()
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], flip_index, "horizontal_flip")
        keypoints[..., 0] = width - keypoints[..., 0]
        target["keypoints"] = _hide_outside(keypoints, *image.shape[:2])
    return image[:, ::-1].copy(), target


def vertical_flip(image: np.ndarray, target: Target, flip_index: Sequence[int] | None = None
                  ) -> tuple[np.ndarray, Target]:
    """Mirror upside down: y -> H - y (see :func:`horizontal_flip`; a mirror image swaps left
    and right parts too, hence ``flip_index``)."""
    image, target = check_sample(image, target, "vertical_flip")
    height = image.shape[0]
    boxes = target["boxes"]
    target["boxes"] = np.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], axis=1)
    if "masks" in target:
        target["masks"] = target["masks"][:, ::-1].copy()
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], flip_index, "vertical_flip")
        keypoints[..., 1] = height - keypoints[..., 1]
        target["keypoints"] = _hide_outside(keypoints, *image.shape[:2])
    return image[::-1].copy(), target


def _reordered(keypoints: np.ndarray, flip_index: Sequence[int] | None, where: str) -> np.ndarray:
    keypoints = keypoints.astype(np.result_type(keypoints.dtype, np.float32))
    if flip_index is None:
        return keypoints
    order = np.asarray(flip_index, dtype=np.intp)
    if sorted(order.tolist()) != list(range(keypoints.shape[1])):
        raise ValueError(f"{where}: flip_index must be a permutation of the {keypoints.shape[1]} keypoints; "
                         f"got {list(flip_index)}")
    return keypoints[:, order]


def crop(image: np.ndarray, target: Target, top: int, left: int, height: int, width: int
         ) -> tuple[np.ndarray, Target]:
    """The window rows [top, top + height), columns [left, left + width) (inside the image):
    boxes and keypoints shifted by (-left, -top), boxes clamped to the window."""
    image, target = check_sample(image, target, "crop")
    h, w = image.shape[:2]
    if not (0 <= top and 0 <= left and height >= 1 and width >= 1 and top + height <= h and left + width <= w):
        raise ValueError(f"crop: the window (top={top}, left={left}, height={height}, width={width}) does not lie "
                         f"in the image of size {(h, w)}")
    shift = np.asarray([left, top, left, top], dtype=target["boxes"].dtype)
    target["boxes"] = clamp_boxes(target["boxes"] - shift, height, width)
    if "masks" in target:
        target["masks"] = target["masks"][:, top:top + height, left:left + width].copy()
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], None, "crop")
        keypoints[..., :2] -= (left, top)
        target["keypoints"] = _hide_outside(keypoints, height, width)
    return image[top:top + height, left:left + width].copy(), target


def pad(image: np.ndarray, target: Target, left: int, top: int, right: int, bottom: int,
        fill: float | Sequence[float] = 0) -> tuple[np.ndarray, Target]:
    """The image framed by ``fill`` (one value or one per channel) on each side; boxes and
    keypoints shifted by (left, top), masks padded with 0."""
    image, target = check_sample(image, target, "pad")
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"pad: the padding must be >= 0; got left={left}, top={top}, right={right}, bottom={bottom}")
    h, w, channels = image.shape
    values = np.broadcast_to(np.asarray(fill, dtype=np.float64).reshape(-1), (channels,))
    out = np.empty((h + top + bottom, w + left + right, channels), dtype=image.dtype)
    out[...] = values.astype(image.dtype)
    out[top:top + h, left:left + w] = image
    target["boxes"] = target["boxes"] + np.asarray([left, top, left, top], dtype=target["boxes"].dtype)
    if "masks" in target:
        target["masks"] = np.pad(target["masks"], ((0, 0), (top, bottom), (left, right)))
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], None, "pad")
        keypoints[..., :2] += (left, top)
        target["keypoints"] = keypoints
    return out, target


def resized_size(height: int, width: int, size: int | Sequence[int] | None, max_size: int | None = None
                 ) -> tuple[int, int]:
    """torchvision's resize rule: ``size`` a (height, width) pair is the output size; an int
    s makes the shorter side s and the longer one int(s long / short), and then, if that
    exceeds ``max_size`` m, the longer side m and the shorter int(m s / long'); ``size`` None
    makes the longer side m and the shorter int(m short / long)."""
    if size is not None and not isinstance(size, (int, np.integer)):
        pair = tuple(int(v) for v in size)
        if len(pair) == 1:
            size = pair[0]
        elif len(pair) == 2 and min(pair) >= 1:
            if max_size is not None:
                raise ValueError(f"resized_size: max_size needs an int size; got size={size!r}")
            return pair
        else:
            raise ValueError(f"resized_size: size must be an int, a (height, width) pair or None; got {size!r}")
    short, long = (height, width) if height <= width else (width, height)
    if size is None:
        if max_size is None:
            raise ValueError("resized_size: size None needs a max_size")
        new_short, new_long = int(max_size * short / long), int(max_size)
    else:
        if size < 1:
            raise ValueError(f"resized_size: size must be positive; got {size!r}")
        new_short, new_long = int(size), int(size * long / short)
        if max_size is not None:
            if max_size <= size:
                raise ValueError(f"resized_size: max_size ({max_size}) must exceed size ({size})")
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), int(max_size)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def resize(image: np.ndarray, target: Target, height: int, width: int, interpolation: str = "bilinear"
           ) -> tuple[np.ndarray, Target]:
    """The image resized to (height, width) with Pillow (:func:`lamina.data.transforms.resize_image`),
    x scaled by width / W and y by height / H; masks resized with nearest neighbours."""
    image, target = check_sample(image, target, "resize")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"resize: interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    if height < 1 or width < 1:
        raise ValueError(f"resize: the size must be positive; got {(height, width)}")
    h, w = image.shape[:2]
    sx, sy = width / w, height / h
    target["boxes"] = (target["boxes"] * np.asarray([sx, sy, sx, sy])).astype(target["boxes"].dtype)
    if "masks" in target:
        target["masks"] = _mask_planes(target["masks"], lambda m: resize_image(m, height, width, "nearest"),
                                       height, width)
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], None, "resize")
        keypoints[..., :2] *= (sx, sy)
        target["keypoints"] = _hide_outside(keypoints, height, width)
    return resize_image(image, height, width, interpolation), target


def affine_matrix(height: int, width: int, angle: float = 0.0, translate: Sequence[float] = (0, 0),
                  scale: float = 1.0, shear: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """torchvision's affine map as a 3 x 3 matrix on (x, y, 1): P' = C + T + S R Sh (P - C)
    about the centre C = (W/2, H/2), turning by ``angle`` degrees clockwise on screen, with
    shear angles (sx, sy) in degrees: [[a, b], [c, d]] = [[cos(r - sy)/cos sy, -cos(r - sy)
    tan sx / cos sy - sin r], [sin(r - sy)/cos sy, -sin(r - sy) tan sx / cos sy + cos r]]."""
    rot, sx, sy = (math.radians(v) for v in (angle, shear[0], shear[1]))
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    linear = scale * np.asarray([[a, b], [c, d]])
    centre = np.asarray([width / 2, height / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.asarray(translate, dtype=np.float64) - linear @ centre
    return matrix


def affine(image: np.ndarray, target: Target, matrix: np.ndarray, interpolation: str = "nearest",
           fill: float | Sequence[float] = 0) -> tuple[np.ndarray, Target]:
    """The image moved by the forward map ``matrix`` (3 x 3 on (x, y, 1), e.g. from
    :func:`affine_matrix`), keeping its size: output pixel centres read the input through the
    inverse map (:func:`lamina.data.image_ops.affine_warp`), ``fill`` outside. Each box becomes
    the box enclosing its four moved corners, clamped to the image; keypoints move as points."""
    image, target = check_sample(image, target, "affine")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ShapeError(f"affine: matrix must be 3 x 3; got shape {matrix.shape}")
    height, width = image.shape[:2]
    inverse = np.linalg.inv(matrix)[:2].reshape(-1)
    boxes = target["boxes"]
    corners = boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]].astype(np.float64)          # (n, 4 corners, xy)
    moved = corners @ matrix[:2, :2].T + matrix[:2, 2]
    enclosing = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).reshape(-1, 4)
    target["boxes"] = clamp_boxes(enclosing.astype(boxes.dtype), height, width)
    if "masks" in target:
        target["masks"] = _mask_planes(target["masks"], lambda m: affine_warp(m, inverse, "nearest", 0),
                                       height, width)
    if "keypoints" in target:
        keypoints = _reordered(target["keypoints"], None, "affine")
        keypoints[..., :2] = keypoints[..., :2] @ matrix[:2, :2].T + matrix[:2, 2]
        target["keypoints"] = _hide_outside(keypoints, height, width)
    return affine_warp(image, inverse, interpolation, fill), target
