"""Sliding windows, and the classifier turned convolutional (course notes, Object
localization and detection, YOLO).

Running a classifier trained on (b_h, b_w) crops at every position of an (H, W) image
costs one forward pass per window, and there are

    (H - b_h + 1) (W - b_w + 1)                      windows of one shape,
    sum_{b_h=1..H} sum_{b_w=1..W} (H - b_h + 1)(W - b_w + 1) = H(H+1)/2 * W(W+1)/2   of all shapes.

:func:`convolutionalize` evaluates every window of the classifier's input shape, at the
stride of its feature extractor, in one pass: the first Dense layer after the Flatten
becomes a convolution whose K = units filters each have the shape of the flattened volume
(f_h, f_w, c), and every later Dense layer a 1x1 convolution. On an input of the training
size the new model gives the old one's output (as a 1x1 map); on a larger image it gives a
map of outputs, one per window, the window at (i, j) starting at pixel (i s_h, j s_w).
"""

from __future__ import annotations

import copy

import numpy as np

from lamina import backend
from lamina.autograd import no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Dense, Flatten, Sequential
from lamina.nn.module import Module, evaluation_mode

__all__ = ["all_window_count", "convolutionalize", "sliding_window_count", "window_origins", "window_stride"]


def sliding_window_count(image_size: tuple[int, int], window: tuple[int, int], stride=(1, 1)) -> int:
    """How many (b_h, b_w) windows fit in an (H, W) image at ``stride``:
    (floor((H - b_h) / s_h) + 1) (floor((W - b_w) / s_w) + 1); with stride 1 the notes'
    (H - b_h + 1)(W - b_w + 1)."""
    (h, w), (bh, bw), (sh, sw) = image_size, window, stride
    if min(h, w, bh, bw, sh, sw) < 1:
        raise ValueError(f"sliding_window_count: sizes and strides must be positive, got image {image_size}, "
                         f"window {window}, stride {stride}")
    if bh > h or bw > w:
        return 0
    return ((h - bh) // sh + 1) * ((w - bw) // sw + 1)


def all_window_count(image_size: tuple[int, int]) -> int:
    """Windows of every shape at every position of an (H, W) image (stride 1):
    sum over b_h, b_w of (H - b_h + 1)(W - b_w + 1) = H(H+1)/2 * W(W+1)/2."""
    h, w = image_size
    if min(h, w) < 1:
        raise ValueError(f"all_window_count: the image size must be positive, got {image_size}")
    return h * (h + 1) // 2 * (w * (w + 1) // 2)


def window_stride(model: Sequential) -> tuple[int, int]:
    """The stride (s_h, s_w) between neighbouring windows of :func:`convolutionalize`'s
    output: the product of the strides of the layers before the Flatten."""
    s_h = s_w = 1
    for layer in _feature_layers(model):
        stride = getattr(layer, "stride", (1, 1))
        s_h, s_w = s_h * stride[0], s_w * stride[1]
    return s_h, s_w


def _feature_layers(model: Sequential) -> list[Module]:
    layers = list(model)
    flat = [i for i, layer in enumerate(layers) if isinstance(layer, Flatten)]
    if not isinstance(model, Sequential) or len(flat) != 1:
        raise ValueError(f"convolutionalize: expected a Sequential with exactly one Flatten between its "
                         f"convolutional part and its Dense head, got {type(model).__name__} with "
                         f"{len(flat)} Flatten layers")
    return layers[:flat[0]]


def _as_conv(dense: Dense, kernel: tuple[int, int], channels: int, sample) -> Conv2D:
    """Dense(units) on a flattened (f_h, f_w, c) volume as Conv2D(units, (f_h, f_w)): row
    (i, j, k) of W (Flatten's NHWC order) is weight [:, i, j, k] of the filters."""
    conv = Conv2D(dense.units, kernel, use_bias=dense.use_bias, activation=dense.activation,
                  name=f"{dense.name}_conv")
    conv.eval()
    conv(sample)
    weight = dense.weight.data
    if weight.shape[0] != kernel[0] * kernel[1] * channels:
        raise ShapeError(f"convolutionalize: {dense.name} has {weight.shape[0]} inputs, but the volume it "
                         f"reads is {kernel[0]}x{kernel[1]}x{channels}")
    conv.weight.data[...] = weight.T.reshape(dense.units, *kernel, channels)
    if dense.use_bias:
        conv.bias.data[...] = dense.bias.data
    return conv


def convolutionalize(model: Sequential, input_shape: tuple[int, int, int]) -> Sequential:
    """The convolutional equivalent of a classifier ``model`` trained on (h, w, c) inputs.

    ``model`` is a Sequential: layers that act at each position (convolutions, pooling,
    batch norm, activations, dropout), one Flatten, then Dense layers and layers acting on
    the last axis (activations, softmax, dropout). The returned model has copies of the
    weights (changing one model leaves the other alone); on an (N, H, W, c) image it
    returns (N, H_out, W_out, units): one output per window of ``input_shape``,
    ``window_stride(model)`` pixels apart.
    """
    features = _feature_layers(model)
    head = list(model)[len(features) + 1:]
    layers: list[Module] = []
    sample = tensor(backend.xp.zeros((1, *input_shape), dtype=backend.get_default_dtype()))
    with no_grad():
        with evaluation_mode(model):
            model(sample)        # builds an unbuilt model, and checks input_shape against it
        for layer in features:
            layers.append(copy.deepcopy(layer).eval())   # the shape pass moves no statistics
            sample = layers[-1](sample)
        volume = sample.shape[1:]
        first = True
        for layer in head:
            if isinstance(layer, Dense):
                kernel = volume[:2] if first else (1, 1)
                layers.append(_as_conv(layer, kernel, sample.shape[-1], sample))
                first = False
            elif isinstance(layer, Flatten):
                raise ValueError(f"convolutionalize: a second Flatten ({layer.name}) in the head")
            elif first:
                raise ValueError(f"convolutionalize: {layer.name} ({type(layer).__name__}) sits between the "
                                 "Flatten and the first Dense layer; it would see a map, not a vector")
            else:
                layers.append(copy.deepcopy(layer).eval())   # the shape pass moves no statistics
            sample = layers[-1](sample)
    if first:
        raise ValueError("convolutionalize: the model has no Dense layer after its Flatten")
    result = Sequential(*layers)
    result.train(model.training)
    return result


def window_origins(output_shape: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The (top, left) pixel of each output position's window: an (H', W', 2) int array."""
    rows = np.arange(output_shape[0]) * stride[0]
    cols = np.arange(output_shape[1]) * stride[1]
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
