"""Perceptual losses (Johnson, Alahi & Fei-Fei 2016): images compared through the feature maps of
a fixed network (the loss network, typically a VGG16 trained on ImageNet) instead of pixel by pixel.

For feature maps phi_j(x) of shape (H_j, W_j, C_j) at layer j:

- feature reconstruction (content): l_feat^j = ||phi_j(y_hat) - phi_j(y)||^2 / (C_j H_j W_j);
- style: l_style^j = ||G_j(y_hat) - G_j(y_s)||_F^2 with G_j the Gram matrix of phi_j,
  normalised by C_j H_j W_j (:func:`lamina.functional.image_quality.gram_matrix`).

Both are averaged over the batch. Layers are named by their dotted path in the network
(``'features.8'``) or, for a plain stack of convolutions and pools such as VGG's features, by
the usual stage names: ``conv{s}_{k}`` and ``relu{s}_{k}`` for the k-th convolution of stage s
and its ReLU, ``pool{s}`` for the pool ending stage s (VGG16's relu1_2, relu2_2, relu3_3 and
relu4_3 are Johnson's choice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamina.autograd import Tensor
from lamina.functional.image_quality import gram_matrix
from lamina.nn.activation import ReLU
from lamina.nn.conv import Conv2D
from lamina.nn.module import Module
from lamina.nn.pooling import AvgPool2D, MaxPool2D
from lamina.nn.sequential import Sequential

__all__ = ["PerceptualLoss", "feature_loss", "layer_sequence", "stage_layer_names", "style_loss"]


def layer_sequence(model: Module, prefix: str = "") -> list[tuple[str, Module]]:
    """The layers a :class:`Sequential` runs, in order, nested Sequentials opened up, each
    with its dotted path (``'features.3'``)."""
    if not isinstance(model, Sequential):
        return [(prefix or (model.name or type(model).__name__), model)]
    layers = []
    for name, layer in model.named_children():
        path = f"{prefix}.{name}" if prefix else name
        layers.extend(layer_sequence(layer, path) if isinstance(layer, Sequential) else [(path, layer)])
    return layers


def stage_layer_names(layers: Sequence[tuple[str, Module]]) -> dict[str, str]:
    """Stage names -> dotted paths for a stack of convolutions, ReLUs and pools: a pool ends a
    stage; ``conv{s}_{k}`` is the k-th convolution of stage s and ``relu{s}_{k}`` the ReLU after
    it, ``pool{s}`` the pool."""
    names, stage, conv = {}, 1, 0
    for path, layer in layers:
        if isinstance(layer, Conv2D):
            conv += 1
            names[f"conv{stage}_{conv}"] = path
        elif isinstance(layer, ReLU) and conv:
            names.setdefault(f"relu{stage}_{conv}", path)
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            names[f"pool{stage}"] = path
            stage, conv = stage + 1, 0
    return names


def feature_loss(features: Tensor, target: Tensor) -> Tensor:
    """Johnson's feature reconstruction loss: the mean of (phi(y_hat) - phi(y))^2 over the
    (H, W, C) entries, averaged over the batch; ``target`` may have batch size 1 (broadcast)."""
    diff = features - target
    return (diff * diff).mean()


def style_loss(features: Tensor, target_gram: Tensor, normalize: str = "hwc") -> Tensor:
    """Johnson's style loss: the squared Frobenius distance between the Gram matrix of
    ``features`` (N, H, W, C) and ``target_gram`` ((N or 1), C, C), averaged over the batch."""
    diff = gram_matrix(features, normalize) - target_gram
    return (diff * diff).sum(axis=(1, 2)).mean()


def _weighted(layers, weights, what: str) -> dict[str, float]:
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        if weights is not None:
            raise ValueError(f"PerceptualLoss: give {what} weights either in the mapping or as weights, not both")
        return {str(k): float(v) for k, v in layers.items()}
    layers = list(layers)
    if weights is None:
        weights = [1.0] * len(layers)
    elif isinstance(weights, (int, float)):
        weights = [float(weights)] * len(layers)
    weights = list(weights)
    if len(weights) != len(layers):
        raise ValueError(f"PerceptualLoss: {len(layers)} {what} layers {layers} but {len(weights)} weights")
    return {str(k): float(v) for k, v in zip(layers, weights)}


class PerceptualLoss(Module):
    """Feature reconstruction and style losses through a fixed ``feature_extractor`` (a
    :class:`Sequential`, nested ones allowed, e.g. ``lamina.models.vgg16()``; its parameters are
    frozen).

    ``layers`` (names, or a name -> weight mapping; ``weights`` one per name) are the content
    layers, ``style_layers`` / ``style_weights`` the style ones. Calling it as
    ``loss(x, target, style_target=None)`` gives

        sum_j w_j l_feat^j(x, target) + sum_j v_j l_style^j(x, style_target)

    (the style term only when there are style layers; ``style_target`` defaults to
    ``target``). :meth:`content_loss`, :meth:`style_loss` and :meth:`features` give the parts;
    :meth:`style_grams` precomputes a style image's Gram matrices, which :meth:`style_loss` takes
    in place of the image. The network runs only up to the deepest layer needed."""

    def __init__(self, feature_extractor: Module, layers=("relu2_2",), weights=None, style_layers=(),
                 style_weights=None, gram_normalization: str = "hwc", name: str | None = None):
        super().__init__(name=name)
        if not isinstance(feature_extractor, Sequential):
            raise TypeError(f"PerceptualLoss: feature_extractor must be a Sequential (nested ones allowed), got "
                            f"{type(feature_extractor).__name__}")
        self.feature_extractor = feature_extractor.freeze()
        self._sequence = layer_sequence(feature_extractor)
        self.layer_aliases = stage_layer_names(self._sequence)
        self.content_weights = _weighted(layers, weights, "content")
        self.style_weights = _weighted(style_layers, style_weights, "style")
        self.gram_normalization = gram_normalization
        for layer in [*self.content_weights, *self.style_weights]:
            self._resolve(layer)

    def available_layers(self) -> list[str]:
        """Every name a layer may be given by: the stage names, then the dotted paths."""
        return [*self.layer_aliases, *(path for path, _ in self._sequence)]

    def _resolve(self, name: str) -> int:
        path = self.layer_aliases.get(name, name)
        for i, (p, _) in enumerate(self._sequence):
            if p == path:
                return i
        raise ValueError(f"PerceptualLoss: no layer named {name!r} in {self.feature_extractor._label()}; "
                       f"available: {', '.join(self.available_layers())}")

    def features(self, x, names) -> dict[str, Tensor]:
        """The feature maps of ``x`` at the layers ``names``, running the network only as far as needed."""
        wanted = {self._resolve(n): n for n in names}
        found: dict[str, Tensor] = {}
        if not wanted:
            return found
        last = max(wanted)
        for i, (_, layer) in enumerate(self._sequence[:last + 1]):
            x = layer(x)
            if i in wanted:
                found[wanted[i]] = x
        return found

    def style_grams(self, style) -> dict[str, Tensor]:
        """The Gram matrices of a style image at the style layers (constants)."""
        feats = self.features(_constant(style), self.style_weights)
        return {k: gram_matrix(v, self.gram_normalization).detach() for k, v in feats.items()}

    def content_loss(self, x, target, target_features: dict | None = None) -> Tensor:
        """sum_j w_j l_feat^j(x, target) over the content layers (``target_features``, if given,
        replaces running the network on ``target``)."""
        feats = self.features(x, self.content_weights)
        if target_features is None:
            target_features = self.features(_constant(target), self.content_weights)
        return _total(feature_loss(feats[k], target_features[k]) * w for k, w in self.content_weights.items())

    def style_loss(self, x, style) -> Tensor:
        """sum_j v_j l_style^j(x, style) over the style layers; ``style`` is an image batch or
        the mapping :meth:`style_grams` returns."""
        grams = style if isinstance(style, Mapping) else self.style_grams(style)
        feats = self.features(x, self.style_weights)
        return _total(style_loss(feats[k], grams[k], self.gram_normalization) * w
                      for k, w in self.style_weights.items())

    def forward(self, x, target, style_target=None) -> Tensor:
        names = {**self.content_weights, **self.style_weights}
        feats = self.features(x, names)
        targets = self.features(_constant(target), self.content_weights)
        total = _total(feature_loss(feats[k], targets[k]) * w for k, w in self.content_weights.items())
        if self.style_weights:
            style = target if style_target is None else style_target
            grams = style if isinstance(style, Mapping) else self.style_grams(style)
            total = total + _total(style_loss(feats[k], grams[k], self.gram_normalization) * w
                                   for k, w in self.style_weights.items())
        return total

    def extra_repr(self) -> str:
        return f"content={self.content_weights}, style={self.style_weights}"


def _constant(x) -> Tensor:
    return x.detach() if isinstance(x, Tensor) else Tensor(x)


def _total(terms) -> Tensor:
    total = None
    for term in terms:
        total = term if total is None else total + term
    return Tensor(0.0) if total is None else total
