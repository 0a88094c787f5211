"""Optical flow utilities on NHWC batches: RAFT's loss, the end-point error, backward warping,
the Middlebury colour coding and a synthetic dataset with exact ground truth.

A flow field f of shape (N, H, W, 2) holds, for every pixel p = (x, y) of the first image, the
displacement (dx, dy) in pixels to where that point lies in the second image:
image1(p) ~ image2(p + f(p)).

    sequence_loss(predictions, flow, valid)   sum_i gamma^(n - 1 - i) mean(valid |f_i - f|)
    endpoint_error(pred, flow, valid)         mean |pred - flow|_2 and the 1/3/5 px rates
    warp(image2, flow)                        image2 read at p + f(p) (bilinear, differentiable)
    flow_to_color(flow)                       Baker et al.'s colour wheel, as uint8 RGB
    synthetic_flow_pairs(n, size)             textured pairs under known motions
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["MOTIONS", "endpoint_error", "flow_to_color", "make_colorwheel", "sequence_loss",
           "synthetic_flow_pairs", "warp"]

MOTIONS = ("translation", "affine", "smooth", "mixed")


def _numpy(x) -> np.ndarray:
    return np.asarray(x.numpy()) if isinstance(x, Tensor) else np.asarray(x)


def _check_flow(shape, what: str, op: str) -> None:
    if len(shape) != 4 or shape[3] != 2:
        raise ShapeError(f"{op}: expected {what} of shape (N, H, W, 2), got {tuple(shape)}")


def _valid_mask(valid, shape, op: str) -> np.ndarray:
    """A boolean (N, H, W) mask, all True when ``valid`` is None."""
    if valid is None:
        return np.ones(shape[:3], dtype=bool)
    valid = _numpy(valid).astype(bool)
    if valid.shape != tuple(shape[:3]):
        raise ShapeError(f"{op}: expected a validity mask of shape {tuple(shape[:3])}, got {valid.shape}")
    return valid


def sequence_loss(predictions, flow, valid=None, gamma: float = 0.8, max_flow: float = 400.0) -> Tensor:
    """RAFT's loss of the n flow predictions of its iterations against the true flow:

        L = sum_i gamma^(n - 1 - i) mean(v |f_i - f|),

    the mean taken over every pixel and both components, v = 1 where ``valid`` (all pixels if
    None) and |f| < ``max_flow``, else 0, so later predictions weigh more."""
    if isinstance(predictions, Tensor) or not len(predictions):
        raise ValueError("sequence_loss: expected a non-empty list of flow predictions")
    first = predictions[0]
    target = _numpy(flow)
    _check_flow(target.shape, "the true flow", "sequence_loss")
    for i, prediction in enumerate(predictions):
        if tuple(prediction.shape) != target.shape:
            raise ShapeError(f"sequence_loss: prediction {i} has shape {tuple(prediction.shape)}; expected the true "
                             f"flow's {target.shape}")
    keep = _valid_mask(valid, target.shape, "sequence_loss") & (np.sqrt((target ** 2).sum(-1)) < max_flow)
    dtype = first.dtype
    target_t = Tensor(backend.xp.asarray(target.astype(dtype)), dtype=dtype)
    mask_t = Tensor(backend.xp.asarray(keep[..., None].astype(dtype)), dtype=dtype)
    n = len(predictions)
    loss = None
    for i, prediction in enumerate(predictions):
        term = F.mean(F.abs(prediction - target_t) * mask_t) * float(gamma ** (n - 1 - i))
        loss = term if loss is None else loss + term
    return loss


def endpoint_error(prediction, flow, valid=None) -> dict[str, float]:
    """The end-point error |prediction - flow|_2 over the valid pixels: {'epe': its mean,
    '1px', '3px', '5px': the fractions of pixels with an error below 1, 3 and 5 pixels}."""
    pred, target = _numpy(prediction).astype(np.float64), _numpy(flow).astype(np.float64)
    _check_flow(target.shape, "the true flow", "endpoint_error")
    if pred.shape != target.shape:
        raise ShapeError(f"endpoint_error: the prediction has shape {pred.shape}, the true flow {target.shape}")
    keep = _valid_mask(valid, target.shape, "endpoint_error")
    errors = np.sqrt(((pred - target) ** 2).sum(-1))[keep]
    if not errors.size:
        raise ValueError("endpoint_error: no valid pixel")
    return {"epe": float(errors.mean()), **{f"{t}px": float((errors < t).mean()) for t in (1, 3, 5)}}


def warp(image, flow, padding_mode: str = "zeros") -> Tensor:
    """Backward warping: out(p) = image(p + flow(p)), read bilinearly (points outside by
    ``padding_mode``: 'zeros', 'border' or 'reflection'); differentiable in both. Warping the
    second image of a pair by its flow gives back the first where the flow is right."""
    image, flow = (x if isinstance(x, Tensor) else Tensor(x) for x in (image, flow))
    _check_flow(tuple(flow.shape), "a flow", "warp")
    if image.ndim != 4 or tuple(image.shape[:3]) != tuple(flow.shape[:3]):
        raise ShapeError(f"warp: expected an (N, H, W, C) image matching the flow {tuple(flow.shape)}, got "
                         f"{tuple(image.shape)}")
    n, h, w, _ = flow.shape
    if h < 2 or w < 2:
        raise ShapeError(f"warp: the images must be at least 2 x 2 pixels, got {h} x {w}")
    xs, ys = np.meshgrid(np.arange(w), np.arange(h), indexing="xy")
    dtype = flow.dtype
    pixels = Tensor(backend.xp.asarray(np.stack([xs, ys], -1)[None].astype(dtype)), dtype=dtype)
    # pixel (x, y) -> grid_sample's [-1, 1] with aligned corners: 2 x / (size - 1) - 1
    scale = Tensor(backend.xp.asarray(np.array([2.0 / (w - 1), 2.0 / (h - 1)], dtype=dtype)), dtype=dtype)
    grid = (pixels + flow) * scale - 1.0
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


# -- colour coding --------------------------------------------------------------------------------
def make_colorwheel() -> np.ndarray:
    """Baker et al.'s (Middlebury) colour wheel: (55, 3) RGB values in [0, 255] going round
    red, yellow, green, cyan, blue, magenta in 15, 6, 4, 11, 13, 6 steps."""
    segments = ((15, 0, 1), (6, 1, 0), (4, 1, 2), (11, 2, 1), (13, 2, 0), (6, 0, 2))
    wheel = []
    for steps, full, moving in segments:
        ramp = np.floor(255.0 * np.arange(steps) / steps)
        part = np.zeros((steps, 3))
        part[:, full] = 255.0
        # the segment raises the next channel, or lowers the previous one, of the wheel
        part[:, moving] = ramp if (moving - full) % 3 == 1 else 255.0 - ramp
        wheel.append(part)
    return np.concatenate(wheel)


def flow_to_color(flow) -> np.ndarray:
    """A flow (N, H, W, 2) or (H, W, 2) as uint8 RGB images (N, H, W, 3) or (H, W, 3), as
    ``torchvision.utils.flow_to_image``: the flow divided by its largest norm (plus the
    dtype's epsilon) over the whole input, the direction atan2(-dy, -dx) picking a colour
    (linearly between two wheel entries) and the norm r its saturation: 255 (1 - r (1 - c))."""
    flow = _numpy(flow)
    single = flow.ndim == 3
    batch = flow[None] if single else flow
    _check_flow(batch.shape, "a flow", "flow_to_color")
    eps = np.finfo(batch.dtype).eps if batch.dtype.kind == "f" else np.finfo(np.float32).eps
    batch = batch.astype(np.float64)
    norms = np.sqrt((batch ** 2).sum(-1))
    unit = batch / (norms.max() + eps)
    wheel = make_colorwheel() / 255.0
    radius = np.sqrt((unit ** 2).sum(-1))
    angle = np.arctan2(-unit[..., 1], -unit[..., 0]) / np.pi
    position = (angle + 1.0) / 2.0 * (len(wheel) - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % len(wheel)
    frac = (position - k0)[..., None]
    colour = (1.0 - frac) * wheel[k0] + frac * wheel[k1]
    image = np.floor(255.0 * (1.0 - radius[..., None] * (1.0 - colour))).astype(np.uint8)
    return image[0] if single else image


# -- synthetic pairs ------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, channels: int, scale: tuple[float, float], size: tuple[int, int]):
    """A random smooth texture T(x, y) -> (..., channels), defined everywhere: sinusoids of
    wavelengths in ``scale`` (px) in random directions plus Gaussian blobs of widths
    (standard deviations) from a fifth to a third of those, about two per scale[0] x scale[1]
    area of an image of ``size``; values about in [0, 1]."""
    h, w = size
    waves, blobs = 4, 4 + int(2 * h * w / (scale[0] * scale[1]))
    angle = rng.uniform(0, np.pi, waves)
    frequency = 2 * np.pi / rng.uniform(scale[0], scale[1], waves)
    kx, ky = frequency * np.cos(angle), frequency * np.sin(angle)
    phase = rng.uniform(0, 2 * np.pi, waves)
    wave_colour = rng.uniform(-1, 1, (waves, channels)) / np.sqrt(waves)
    centre = rng.uniform(-0.1, 1.1, (blobs, 2)) * np.array([w, h])
    sigma = rng.uniform(scale[0] / 5, scale[1] / 3, blobs)
    blob_colour = rng.uniform(-1, 1, (blobs, channels))

    def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        value = np.sin(x[..., None] * kx + y[..., None] * ky + phase) @ wave_colour
        d2 = (x[..., None] - centre[:, 0]) ** 2 + (y[..., None] - centre[:, 1]) ** 2
        value = value + np.exp(-d2 / (2 * sigma ** 2)) @ blob_colour
        return 0.5 + 0.25 * value
    return texture


def _motion_field(rng: np.random.Generator, kind: str, x: np.ndarray, y: np.ndarray, max_flow: float) -> np.ndarray:
    """A (H, W, 2) flow of the given kind with norms at most ``max_flow``."""
    h, w = x.shape
    if kind == "translation":
        return np.broadcast_to(rng.uniform(-max_flow, max_flow, 2) / np.sqrt(2), (h, w, 2)).copy()
    centred = np.stack([x - (w - 1) / 2, y - (h - 1) / 2], -1)
    if kind == "affine":
        theta, scale = rng.uniform(-0.1, 0.1), rng.uniform(0.93, 1.07)
        shear = rng.uniform(-0.05, 0.05)
        matrix = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        matrix = matrix @ np.array([[1.0, shear], [0.0, 1.0]])
        field = centred @ (matrix - np.eye(2)).T + rng.uniform(-1, 1, 2) * max_flow / 2
    else:  # smooth: a translation plus low-frequency waves (wavelengths of about the image size)
        field = np.broadcast_to(rng.uniform(-1, 1, 2) * max_flow / 2, (h, w, 2)).copy()
        for _ in range(3):
            k = 2 * np.pi * rng.uniform(-1, 1, 2) / np.array([w, h])
            field = field + np.sin(centred @ k + rng.uniform(0, 2 * np.pi))[..., None] * rng.uniform(-1, 1, 2)
    largest = np.sqrt((field ** 2).sum(-1)).max()
    return field * (max_flow / largest) if largest > max_flow else field


def synthetic_flow_pairs(n: int, size, motion: str = "mixed", max_flow: float = 4.0, channels: int = 3,
                         texture_scale: tuple[float, float] = (5.0, 20.0), seed: int | None = 0,
                         dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """``n`` image pairs with their exact flow: (image1, image2, flow, valid), images
    (n, H, W, channels) about in [0, 1], flow (n, H, W, 2), valid (n, H, W) bool.

    Each pair has its own random texture T (:func:`_texture`, defined on the whole plane, its
    wavelengths in ``texture_scale`` px) and
    motion f ('translation', 'affine', 'smooth' or, per pair at random, 'mixed'; norms at
    most ``max_flow`` px): image2(p) = T(p) and image1(p) = T(p + f(p)), so the flow from
    image1 to image2 is f exactly, without interpolation. ``valid`` marks the pixels whose
    p + f(p) falls inside image2."""
    if motion not in MOTIONS:
        raise ValueError(f"synthetic_flow_pairs: motion must be one of {MOTIONS}, got {motion!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if n < 1 or h < 2 or w < 2 or channels < 1 or max_flow < 0 or not 0 < texture_scale[0] <= texture_scale[1]:
        raise ValueError(f"synthetic_flow_pairs: expected n >= 1, a size of at least 2 x 2, channels >= 1 and "
                         f"max_flow >= 0 and 0 < texture_scale[0] <= texture_scale[1], got n={n}, size={size!r}, "
                         f"channels={channels}, max_flow={max_flow}, texture_scale={texture_scale!r}")
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), indexing="xy")
    image1, image2 = np.empty((2, n, h, w, channels))
    flow = np.empty((n, h, w, 2))
    for i in range(n):
        kind = motion if motion != "mixed" else MOTIONS[rng.integers(3)]
        texture = _texture(rng, channels, texture_scale, (h, w))
        flow[i] = _motion_field(rng, kind, x, y, max_flow)
        image2[i] = texture(x, y)
        image1[i] = texture(x + flow[i, ..., 0], y + flow[i, ..., 1])
    tx, ty = x + flow[..., 0], y + flow[..., 1]
    valid = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return image1.astype(dtype), image2.astype(dtype), flow.astype(dtype), valid
