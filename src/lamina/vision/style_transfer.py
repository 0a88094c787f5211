"""Neural style transfer by optimising the image (Gatys, Ecker & Bethge 2016, "Image Style
Transfer Using Convolutional Neural Networks").

Starting from the content image (or noise), the pixels x are optimised to minimise

    L(x) = alpha L_content(x, content) + beta L_style(x, style) + tv_weight TV(x)

through a fixed feature network: L_content is the feature reconstruction loss at the content
layers and L_style the Gram-matrix loss at the style layers, both as
:class:`lamina.nn.PerceptualLoss` defines them (Johnson et al.'s normalisations: mean squared
feature difference, Gram matrices divided by H W C), and TV the squared total variation
(averaged over pixels) that smooths the result.
"""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.image_quality import total_variation
from lamina.nn.module import Module
from lamina.nn.parameter import Parameter
from lamina.nn.perceptual_loss import PerceptualLoss

__all__ = ["style_transfer"]

_OPTIMIZERS = ("lbfgs", "adam")
_INITS = ("content", "noise")


def _image(x, what: str) -> numpy.ndarray:
    array = numpy.asarray(x.data if isinstance(x, Tensor) else x)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1:
        raise ShapeError(f"style_transfer: the {what} image must be (H, W, C) or (1, H, W, C), got shape {array.shape}")
    return array


def style_transfer(content, style, feature_extractor: Module, content_layers=("relu4_2",),
                   style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), alpha: float = 1.0,
                   beta: float = 1e3, steps: int = 50, optimizer: str = "lbfgs", init: str = "content",
                   tv_weight: float = 0.0, lr: float | None = None, clip: tuple[float, float] | None = (0.0, 1.0),
                   seed: int = 0) -> tuple[numpy.ndarray, dict[str, list[float]]]:
    """Optimise an image to have ``content``'s features and ``style``'s Gram matrices (images
    (H, W, C) or (1, H, W, C); the style image may have another size).

    ``content_layers`` / ``style_layers``: layer names of ``feature_extractor`` (or name ->
    weight mappings), as :class:`lamina.nn.PerceptualLoss` takes them. ``optimizer``: ``'lbfgs'``
    (strong Wolfe line search, ``steps`` iterations; ``lr`` default 1) or ``'adam'`` (``steps``
    updates; ``lr`` default 0.02). ``init``: start from the content image or from uniform noise
    in ``clip`` (seeded by ``seed``). ``clip``: the pixel range the image is clipped to after
    each step (None: no clipping).

    Returns the image (1, H, W, C) as an array and the history: lists ``'total'``,
    ``'content'``, ``'style'`` and ``'tv'`` with the losses at the start of every step and after
    the last one (``steps + 1`` entries)."""
    from lamina.optim import LBFGS, Adam  # the optimisers sit above lamina.vision

    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"style_transfer: optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if init not in _INITS:
        raise ValueError(f"style_transfer: init must be one of {_INITS}, got {init!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"style_transfer: steps must be a positive integer, got {steps!r}")
    content, style = _image(content, "content"), _image(style, "style")
    dtype = content.dtype if content.dtype.kind == "f" else numpy.float32
    loss = PerceptualLoss(feature_extractor, content_layers, style_layers=style_layers)
    content_t = Tensor(content, dtype=dtype)
    target_features = {k: v.detach() for k, v in loss.features(content_t, loss.content_weights).items()}
    grams = loss.style_grams(Tensor(style, dtype=dtype))
    if init == "content":
        start = content.astype(dtype)
    else:
        low, high = clip if clip is not None else (0.0, 1.0)
        start = numpy.random.default_rng(seed).uniform(low, high, content.shape).astype(dtype)
    image = Parameter(start.copy(), dtype=dtype)
    history: dict[str, list[float]] = {"total": [], "content": [], "style": [], "tv": []}
    first: dict[str, float] = {}  # the losses at the first evaluation of a step: before it moves

    def cost() -> Tensor:
        parts = {
            "content": loss.content_loss(image, None, target_features),
            "style": loss.style_loss(image, grams),
            "tv": total_variation(image, reduction="sum", squared=True) / float(image.data.size),
        }
        total = alpha * parts["content"] + beta * parts["style"] + tv_weight * parts["tv"]
        if not first:
            first.update({k: float(v.item()) for k, v in parts.items()}, total=float(total.item()))
        return total

    if optimizer == "lbfgs":
        opt = LBFGS([image], lr=1.0 if lr is None else lr, max_iter=1, line_search_fn="strong_wolfe")
    else:
        opt = Adam([image], lr=0.02 if lr is None else lr)

    def closure() -> Tensor:
        opt.zero_grad()
        total = cost()
        total.backward()
        return total

    for _ in range(steps + 1):
        first.clear()
        if len(history["total"]) == steps:
            cost()
        else:
            opt.step(closure)
            if clip is not None:
                image.data[...] = numpy.clip(image.data, clip[0], clip[1])
        for key in history:
            history[key].append(first[key])
    return image.data.copy(), history
