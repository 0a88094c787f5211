"""Class activation maps: where in an image a convolutional network finds a class.

A convolutional layer's activation A (N, h, w, K) keeps a coarse image grid; each of its K
maps A_k lights up where its feature is. Weighting the maps by how much the class score
S_c (the model's pre-softmax output z_c) relies on each, summing and keeping the positive
part gives a heat map on that grid, upsampled bilinearly to the input size and scaled to
[0, 1] per image ((m - min m) / (max m - min m); all zeros for a constant map).

* Grad-CAM (Selvaraju et al., 2017): w_k = 1/(h w) sum_ij dS_c/dA_ijk, the gradient
  global-average-pooled, and L = ReLU(sum_k w_k A_k).
* Grad-CAM++ (Chattopadhay et al., 2018): the score taken as exp(S_c), whose second and
  third derivatives are exp(S_c) g^2 and exp(S_c) g^3 for g = dS_c/dA when the network is
  piecewise linear (ReLU), which gives the closed form

      alpha_ijk = g_ijk^2 / (2 g_ijk^2 + sum_ab A_abk g_ijk^3)     (0 where g_ijk = 0)
      w_k = sum_ij alpha_ijk ReLU(g_ijk),     L = ReLU(sum_k w_k A_k)

  (the factor exp(S_c) of exp(S_c)'s gradient is the same for every pixel of an image and
  cancels in the scaling to [0, 1]). Positive gradients counted pixel by pixel let several
  instances of a class all show, where Grad-CAM's average favours the largest.
* Score-CAM (Wang et al., 2020): no gradient; each map A_k, upsampled and scaled to [0, 1],
  masks the input, and w_k = softmax(z(x * mask_k))_c - softmax(z(baseline))_c.
* Occlusion sensitivity (Zeiler & Fergus, 2014): a window slid over the image replaced by a
  baseline; at each pixel, the mean drop of S_c over the windows covering it.

``layer`` is a sub-module of the model or its dotted name from ``named_modules``; its output
must be an NHWC batch. The model runs in evaluation mode with its parameters out of the
graph; the hooks these functions register are removed, and each module's mode restored,
before they return (also when they raise).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.analysis.saliency import (
    SCORES,
    as_input_batch,
    chosen_scores,
    class_indices,
    input_analysis,
    model_logits,
)
from lamina.autograd import Tensor, is_grad_enabled, no_grad, tensor
from lamina.errors import ShapeError
from lamina.io.atomic import save_figure
from lamina.nn.module import Module

__all__ = ["grad_cam", "grad_cam_plus_plus", "occlusion_sensitivity", "plot_cam", "score_cam"]


# -- the layer and its activation -------------------------------------------------------------

def _named_layer(model: Module, layer, fn: str) -> tuple[str, Module]:
    """``layer`` (a module or a dotted name) as (name, module); the last sub-module with a
    4-D output on ``x`` is found by the caller when ``layer`` is None."""
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError as exc:
            raise ValueError(f"{fn}: {exc}") from None
    if isinstance(layer, Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"{fn}: the layer {layer._label()} is not a sub-module of {model._label()}")
    raise TypeError(f"{fn}: layer must be a sub-module of the model or its dotted name, got {type(layer).__name__}")


def _last_spatial_layer(model: Module, x, fn: str) -> tuple[str, Module]:
    """The innermost module called last in a forward on ``x`` whose output is 4-D."""
    calls: list[tuple[str, Module]] = []

    def recorder(name: str, module: Module):
        def record(_module, _inputs, output):
            if isinstance(output, Tensor) and output.ndim == 4 and not any(True for _ in module.children()):
                calls.append((name, module))
        return record

    handles = [module.register_forward_hook(recorder(name, module)) for name, module in model.named_modules() if name]
    try:
        with no_grad():
            model(tensor(x, dtype=x.dtype))
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise ValueError(f"{fn}: no layer of {model._label()} has a 4-D (batch, height, width, channels) output "
                         f"on inputs of shape {x.shape}; pass layer=")
    return calls[-1]


def _layer(model: Module, x, layer, fn: str) -> tuple[str, Module]:
    return _last_spatial_layer(model, x, fn) if layer is None else _named_layer(model, layer, fn)


def run_to_layer_leaf(model: Module, x, name: str, module: Module, fn: str, gradient: bool,
                      spatial: bool = False) -> tuple[Tensor, Tensor]:
    """(a, logits): the model run on ``x`` with a forward hook that hands the rest of the model a
    leaf tensor ``a`` holding ``module``'s output (named ``name``), so that a backward pass from
    the logits stops there, leaving the parameters and the input out of the graph; ``a`` needs
    a gradient when ``gradient``. ``spatial``: the output must be a 4-D NHWC tensor. ``fn``
    names the caller in errors."""
    seen: list[Tensor] = []

    def as_leaf(_module, _inputs, output):
        if not isinstance(output, Tensor) or (spatial and output.ndim != 4):
            got = output.shape if isinstance(output, Tensor) else f"a {type(output).__name__}"
            expected = "a 4-D NHWC tensor (batch, height, width, channels)" if spatial else "one tensor"
            raise ShapeError(f"{fn}: the output of layer {name!r} is {got}; expected {expected}")
        seen.append(tensor(output.data, requires_grad=gradient, dtype=output.dtype))
        return seen[-1]

    handle = module.register_forward_hook(as_leaf)
    try:
        if gradient:
            logits = model_logits(model, tensor(x, dtype=x.dtype))
        else:
            with no_grad():
                logits = model_logits(model, tensor(x, dtype=x.dtype))
    finally:
        handle.remove()
    if len(seen) != 1:
        raise ValueError(f"{fn}: layer {name!r} ran {len(seen)} times in one forward pass of {model._label()}; "
                         "expected exactly once")
    return seen[0], logits


def _activation(model: Module, x, target, layer, fn: str, gradient: bool):
    """(A, dS_c/dA or None, classes c) as arrays for the NHWC batch ``x``, A the layer's
    output (N, h, w, K); the caller holds :func:`input_analysis`.

    A forward hook hands the rest of the model a leaf tensor holding A's values, so that
    backward stops there: the parameters and the input are out of the graph."""
    if gradient and not is_grad_enabled():
        raise RuntimeError(f"{fn}: needs gradients, but it was called inside lamina.no_grad()")
    name, module = _layer(model, x, layer, fn)
    activation, logits = run_to_layer_leaf(model, x, name, module, fn, gradient, spatial=True)
    if logits.ndim != 2:
        raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
    classes = class_indices(target, logits.data, fn)
    if not gradient:
        return activation.data, None, classes
    chosen_scores(logits, classes, "logit", fn).backward()
    grad = activation.grad if activation.grad is not None else backend.xp.zeros_like(activation.data)
    return activation.data, grad, classes


def _upsampled(maps, size: tuple[int, int]):
    """(N, h, w) maps resized bilinearly (align_corners=False, as torch) to (N, H, W)."""
    with no_grad():
        return F.interpolate(tensor(maps[..., None], dtype=maps.dtype), size=size, mode="bilinear").data[..., 0]


def _unit_range(maps):
    """Each map (over every axis after the first) scaled to [0, 1]: (m - min) / (max - min), 0 if constant."""
    xp = backend.xp
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return xp.where(span > 0, (maps - low) / xp.where(span > 0, span, 1), 0).astype(maps.dtype, copy=False)


def _heat_map(weights, activation, size: tuple[int, int]):
    """ReLU(sum_k w_k A_k), upsampled to ``size`` and scaled to [0, 1] per image."""
    xp = backend.xp
    cam = xp.maximum((weights * activation).sum(axis=-1), 0)
    return _unit_range(_upsampled(cam, size))


def grad_cam(model: Module, x, target=None, layer: Module | str | None = None):
    """Grad-CAM heat maps (N, H, W) in [0, 1] for NHWC images ``x`` (module docstring):
    ReLU(sum_k w_k A_k) with w_k the spatial mean of dS_c/dA_k, upsampled bilinearly.

    ``target``: None (each image's predicted class), an int or one class per image.
    ``layer``: a sub-module or its dotted name; by default the last innermost module whose
    output is 4-D (typically the last convolution block's activation)."""
    x = as_input_batch(x, "grad_cam", ndim=(4,))
    with input_analysis(model):
        activation, grad, _ = _activation(model, x, target, layer, "grad_cam", gradient=True)
    weights = grad.mean(axis=(1, 2), keepdims=True)
    return _heat_map(weights, activation, x.shape[1:3])


def grad_cam_plus_plus(model: Module, x, target=None, layer: Module | str | None = None):
    """Grad-CAM++ heat maps (N, H, W) in [0, 1] (module docstring): w_k = sum_ij alpha_ijk
    ReLU(g_ijk) with alpha = g^2 / (2 g^2 + sum_ab A_abk g^3), g = dS_c/dA. Arguments as
    :func:`grad_cam`."""
    xp = backend.xp
    x = as_input_batch(x, "grad_cam_plus_plus", ndim=(4,))
    with input_analysis(model):
        activation, grad, _ = _activation(model, x, target, layer, "grad_cam_plus_plus", gradient=True)
    squared = grad * grad
    denominator = 2 * squared + activation.sum(axis=(1, 2), keepdims=True) * squared * grad
    nonzero = denominator != 0
    alpha = xp.where(nonzero, squared / xp.where(nonzero, denominator, 1), 0)
    weights = (alpha * xp.maximum(grad, 0)).sum(axis=(1, 2), keepdims=True)
    return _heat_map(weights, activation, x.shape[1:3])


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _check_batch_size(batch_size, fn: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}")


def _scores(model: Module, images, classes, of: str, batch_size: int):
    """S_c of each image (softmax(z)_c for 'probability', log of it for 'log_probability',
    z_c for 'logit'), computed without the graph in chunks of ``batch_size``."""
    xp = backend.xp
    out = []
    with no_grad():
        for part in _chunks(len(images), batch_size):
            logits = model_logits(model, tensor(images[part], dtype=images.dtype))
            if of == "probability":
                logits = F.softmax(logits, axis=-1)
            elif of == "log_probability":
                logits = F.log_softmax(logits, axis=-1)
            out.append(logits.data[xp.arange(part.stop - part.start), classes[part]])
    return xp.concatenate(out)


def score_cam(model: Module, x, target=None, layer: Module | str | None = None, batch_size: int = 64):
    """Score-CAM heat maps (N, H, W) in [0, 1] (Wang et al., 2020): each map A_k upsampled
    and scaled to [0, 1] masks the image, w_k = softmax(z(x * mask_k))_c, and the map is
    ReLU(sum_k w_k A_k) upsampled. K forward passes per image, no gradient. Arguments as
    :func:`grad_cam`; ``batch_size`` masked images run at a time."""
    _check_batch_size(batch_size, "score_cam")
    xp = backend.xp
    x = as_input_batch(x, "score_cam", ndim=(4,))
    size = x.shape[1:3]
    with input_analysis(model):
        activation, _, classes = _activation(model, x, target, layer, "score_cam", gradient=False)
        n, _, _, k = activation.shape
        weights = xp.zeros((n, 1, 1, k), dtype=activation.dtype)
        for i in range(n):
            planes = xp.moveaxis(activation[i], -1, 0)                    # (K, h, w)
            masks = _unit_range(_upsampled(planes, size)).astype(x.dtype)  # (K, H, W)
            masked = x[i][None] * masks[..., None]
            weights[i, 0, 0] = _scores(model, masked, xp.full(k, classes[i]), "probability", batch_size)
    return _heat_map(weights, activation, size)


# -- occlusion ---------------------------------------------------------------------------------

def _pair(value, name: str, fn: str) -> tuple[int, int]:
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise ValueError(f"{fn}: {name} must be a positive int or a pair of them (height, width), got {value!r}")
    return int(values[0]), int(values[1])


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets 0, stride, ... and, if the last one stops short of the edge, one ending there."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def occlusion_sensitivity(model: Module, x, target=None, window=8, stride=4, baseline=0.0, of: str = "logit",
                          batch_size: int = 64):
    """Occlusion maps (N, H, W) for NHWC images ``x`` (Zeiler & Fergus, 2014): a ``window``
    (an int or (height, width)) slid by ``stride`` over each image, the pixels under it
    replaced by ``baseline`` (a number, or an array that broadcasts to ``x``); at each pixel,
    the mean over the windows that cover it of S_c(x) - S_c(occluded x). Windows start at
    0, stride, ... plus one flush with the far edge, so every pixel is covered.

    Large values mark the pixels the class score needs. ``target``: None (each image's
    predicted class), an int or one class per image; ``of``: 'logit', 'probability' or
    'log_probability'; ``batch_size`` occluded copies run at a time."""
    fn = "occlusion_sensitivity"
    if of not in SCORES:
        raise ValueError(f"{fn}: of must be one of {SCORES}, got {of!r}")
    _check_batch_size(batch_size, fn)
    xp = backend.xp
    x = as_input_batch(x, fn, ndim=(4,))
    n, height, width, _ = x.shape
    (wh, ww), (sh, sw) = _pair(window, "window", fn), _pair(stride, "stride", fn)
    if wh > height or ww > width:
        raise ValueError(f"{fn}: window {(wh, ww)} is larger than the images ({height}, {width})")
    try:
        fill = xp.broadcast_to(xp.asarray(baseline, dtype=x.dtype), x.shape)
    except ValueError:
        raise ShapeError(f"{fn}: baseline of shape {np.shape(baseline)} does not broadcast to the input's shape "
                         f"{x.shape}") from None
    boxes = [(top, left) for top in _starts(height, wh, sh) for left in _starts(width, ww, sw)]
    total = xp.zeros((n, height, width), dtype=x.dtype)
    covered = xp.zeros((height, width), dtype=x.dtype)
    for top, left in boxes:
        covered[top:top + wh, left:left + ww] += 1
    with input_analysis(model):
        with no_grad():
            logits = model_logits(model, tensor(x, dtype=x.dtype))
        if logits.ndim != 2:
            raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
        classes = class_indices(target, logits.data, fn)
        clean = _scores(model, x, classes, of, batch_size)
        for i in range(n):
            copies = xp.repeat(x[i][None], len(boxes), axis=0)
            for j, (top, left) in enumerate(boxes):
                copies[j, top:top + wh, left:left + ww] = fill[i, top:top + wh, left:left + ww]
            drops = clean[i] - _scores(model, copies, xp.full(len(boxes), classes[i]), of, batch_size)
            for drop, (top, left) in zip(drops, boxes):
                total[i, top:top + wh, left:left + ww] += drop
    return total / covered


# -- drawing -----------------------------------------------------------------------------------

def _display(image):
    """An (H, W, C) image as something imshow draws: (H, W) grey or (H, W, 3) RGB in [0, 1]."""
    image = np.asarray(backend.to_numpy(image), dtype=np.float64)
    if image.shape[-1] not in (1, 3):
        raise ShapeError(f"plot_cam: images must have 1 or 3 channels, got shape {image.shape}")
    image = _unit_range(image[None])[0]
    return image[..., 0] if image.shape[-1] == 1 else image


def plot_cam(images, maps, path: str | os.PathLike, alpha: float = 0.5, cmap: str = "jet",
             titles: list[str] | None = None, dpi: int = 100) -> Path:
    """Draw each map over its image (grey or RGB, scaled to [0, 1] for display), side by side
    with the image alone, one row per image, and write the figure to ``path`` as a PNG
    (atomically). ``images`` (N, H, W, C) or (H, W, C); ``maps`` (N, H, W) or (H, W), as
    :func:`grad_cam` returns; ``alpha`` is the opacity of the heat map. Returns the path."""
    images = np.asarray(backend.to_numpy(images.data if isinstance(images, Tensor) else images))
    maps = np.asarray(backend.to_numpy(maps))
    if images.ndim == 3:
        images = images[None]
    if maps.ndim == 2:
        maps = maps[None]
    if images.ndim != 4 or maps.shape != images.shape[:3]:
        raise ShapeError(f"plot_cam: maps of shape {maps.shape} do not match images of shape {images.shape}; "
                         "expected maps (N, H, W) for images (N, H, W, C)")
    if not 0 <= alpha <= 1:
        raise ValueError(f"plot_cam: alpha must lie in [0, 1], got {alpha!r}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"plot_cam: {len(titles)} titles for {len(images)} images")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 2.5 * len(images)))
    FigureCanvasAgg(fig)
    for row, (image, heat) in enumerate(zip(images, maps)):
        shown = _display(image)
        grey = "gray" if shown.ndim == 2 else None
        left, right = fig.add_subplot(len(images), 2, 2 * row + 1), fig.add_subplot(len(images), 2, 2 * row + 2)
        left.imshow(shown, cmap=grey)
        right.imshow(shown, cmap=grey)
        right.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=max(float(heat.max()), 1e-12))
        if titles is not None:
            left.set_title(titles[row], fontsize="small")
        for ax in (left, right):
            ax.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
