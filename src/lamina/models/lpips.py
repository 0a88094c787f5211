"""Learned Perceptual Image Patch Similarity (LPIPS; Zhang, Isola, Efros, Shechtman & Wang 2018,
"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

Two images x0, x1 in [-1, 1] are shifted and scaled per channel as the reference does,
((x - shift) / scale with shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450)),
and run through a fixed backbone. At each chosen layer l the feature maps are unit-normalised
over channels, f_hat = f / (sqrt(sum_c f_c^2) + 1e-10), and

    d(x0, x1) = sum_l 1 / (H_l W_l) sum_{h,w} sum_c w_{l,c} (f_hat0 - f_hat1)_{l,h,w,c}^2

with w_l the weights of a 1x1 convolution without bias (the "lin" layers), kept non-negative.
``lpips=False`` is the uncalibrated baseline: every w_{l,c} = 1.

The backbones are the reference's: torchvision's AlexNet features (ReLU outputs 1, 4, 7, 9, 11),
VGG16 features (relu1_2 .. relu5_3: 3, 8, 15, 22, 29) and SqueezeNet 1.1 features (1, 4, 7, 9,
10, 11, 12); any :class:`~lamina.nn.Sequential` with named layers may stand in for them.

The lin layers are calibrated on two-alternative forced choice (2AFC) judgements by
:func:`train_lpips`: a small ranking network G maps the distances (d0, d1) of two distortions
p0, p1 from a reference to the probability that a human prefers p1 (judges it closer), trained
with binary cross-entropy together with the lin weights, which are clamped to >= 0 after
every step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional import stack
from lamina.functional.activation import leaky_relu
from lamina.functional.loss import binary_cross_entropy
from lamina.io.safetensors import load_file
from lamina.models.squeezenet import squeezenet1_1
from lamina.models.torchvision import load_torchvision_state_dict, to_numpy
from lamina.models.vgg import vgg16
from lamina.nn.layer import build_for_shape, input_shape_config, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module
from lamina.nn.perceptual_loss import layer_sequence

__all__ = ["LPIPS", "TwoAFCResult", "alexnet_features", "load_lpips_backbone", "load_lpips_weights", "lpips_loss",
           "train_lpips", "two_afc_agreement"]

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
TINY = 1e-30

BACKBONE_LAYERS = {
    "alex": ("1", "4", "7", "9", "11"),
    "vgg": ("3", "8", "15", "22", "29"),
    "squeeze": ("1", "4", "7", "9", "10", "11", "12"),
}
BACKBONE_CHANNELS = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
    "squeeze": (64, 128, 256, 384, 384, 512, 512),
}


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` (64-192-384-256-256 channels), layers named '0' .. '12'."""
    layers = [nn.Conv2D(64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2D(3, stride=2),
              nn.Conv2D(192, 5, padding=2), nn.ReLU(), nn.MaxPool2D(3, stride=2),
              nn.Conv2D(384, 3, padding=1), nn.ReLU(), nn.Conv2D(256, 3, padding=1), nn.ReLU(),
              nn.Conv2D(256, 3, padding=1), nn.ReLU(), nn.MaxPool2D(3, stride=2)]
    for i, layer in enumerate(layers):
        layer.name = str(i)
    return nn.Sequential(*layers, name="features")


def _named_backbone(name: str) -> nn.Sequential:
    if name == "alex":
        return alexnet_features()
    model = vgg16() if name == "vgg" else squeezenet1_1()
    return dict(model.named_children())["features"]


@register_layer
class LPIPS(Module):
    """The LPIPS distance (module docstring). ``backbone``: 'alex', 'vgg', 'squeeze' or a
    :class:`~lamina.nn.Sequential` (frozen here); ``layers``: the dotted paths of the layers
    compared (the reference's for a named backbone); ``channels``: their widths, found on the
    first call when not given. ``lpips=False`` gives the uncalibrated baseline (no lin weights).

    ``lpips(x0, x1, normalize=False)`` takes NHWC images in [-1, 1] (in [0, 1] with
    ``normalize=True``) and gives the (N,) distances. The lin weights start at 1 (the
    baseline); :func:`load_lpips_weights` reads the reference's, :func:`train_lpips` fits them.
    """

    def __init__(self, backbone: str | Module = "alex", layers: Sequence[str] | None = None, lpips: bool = True,
                 channels: Sequence[int] | None = None, name: str | None = None):
        super().__init__(name=name)
        self.backbone_name = backbone if isinstance(backbone, str) else None
        if isinstance(backbone, str):
            if backbone not in BACKBONE_LAYERS:
                raise ValueError(f"LPIPS: backbone must be one of {sorted(BACKBONE_LAYERS)} or a Sequential, "
                                 f"got {backbone!r}")
            if layers is None and channels is None:
                channels = BACKBONE_CHANNELS[backbone]
            layers = BACKBONE_LAYERS[backbone] if layers is None else layers
            backbone = _named_backbone(backbone)
        if not isinstance(backbone, nn.Sequential):
            raise TypeError(f"LPIPS: backbone must be a name or a Sequential, got {type(backbone).__name__}")
        if not layers:
            raise ValueError("LPIPS: give the layers to compare (dotted paths in the backbone)")
        self.backbone = backbone.freeze()
        self.layers = tuple(str(layer) for layer in layers)
        self.lpips = bool(lpips)
        self._sequence = layer_sequence(backbone)
        paths = [path for path, _ in self._sequence]
        unknown = [layer for layer in self.layers if layer not in paths]
        if unknown:
            raise ValueError(f"LPIPS: no layer(s) {unknown} in the backbone; available: {', '.join(paths)}")
        self.layers = tuple(sorted(self.layers, key=paths.index))      # network order, as the lin weights
        self._positions = [paths.index(layer) for layer in self.layers]
        if channels is not None:
            if len(channels) != len(self.layers):
                raise ValueError(f"LPIPS: {len(self.layers)} layers {list(self.layers)} but {len(channels)} "
                                 f"channel counts")
            self._make_lin(channels)

    def get_config(self) -> dict:
        """The backbone by name, or as its own config (with the input shape it was built for)."""
        backbone = self.backbone_name
        if backbone is None:
            backbone = {**layer_to_config(self.backbone), "input_shape": input_shape_config(self.backbone)}
        channels = [int(w.shape[-1]) for w in self.lin_weights()] or None
        return {"backbone": backbone, "layers": list(self.layers), "lpips": self.lpips, "channels": channels,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> LPIPS:
        config = dict(config)
        if isinstance(config["backbone"], dict):
            backbone = config["backbone"]
            config["backbone"] = build_for_shape(layer_from_config(backbone), backbone.get("input_shape"))
        return cls(**config)

    def _make_lin(self, channels) -> None:
        if self.lpips:
            for k, c in enumerate(channels):
                self.add_parameter(f"lin{k}", np.ones((1, 1, 1, int(c)), dtype=backend.get_default_dtype()))

    def lin_weights(self) -> list[Tensor]:
        """The lin layers' weights, (1, 1, 1, C_l) each (none for the baseline, or before the first
        call when the channels were not given)."""
        if not (self.lpips and hasattr(self, "lin0")):
            return []
        return [getattr(self, f"lin{k}") for k in range(len(self.layers))]

    def clamp_weights(self) -> None:
        """Set negative lin weights to 0 (after each training step, as the reference does)."""
        for w in self.lin_weights():
            w.data = backend.xp.maximum(w.data, 0)

    def scale_inputs(self, x) -> Tensor:
        """(x - shift) / scale per channel, the reference's scaling layer."""
        dtype = x.dtype if isinstance(x, Tensor) else np.asarray(x).dtype
        shift = np.asarray(SHIFT, dtype=dtype)
        scale = np.asarray(SCALE, dtype=dtype)
        return (x - shift) / scale

    def features(self, x) -> list[Tensor]:
        """The unit-normalised feature maps of (scaled) ``x`` at the chosen layers, in network order."""
        found = []
        wanted = set(self._positions)
        for i, (_, layer) in enumerate(self._sequence[:self._positions[-1] + 1]):
            x = layer(x)
            if i in wanted:
                # TINY keeps the gradient finite (0) where every channel is 0, as after a ReLU
                norm = ((x * x).sum(axis=-1, keepdims=True) + TINY).sqrt()
                found.append(x / (norm + EPS))
        self.backbone.freeze()        # weights built lazily on this call are frozen too
        return found

    def layer_distances(self, x0, x1, normalize: bool = False) -> list[Tensor]:
        """The (N,) distance of each layer; their sum is the LPIPS distance."""
        x0, x1 = _as_tensor(x0), _as_tensor(x1)
        if x0.shape != x1.shape or x0.ndim != 4:
            raise ShapeError(f"LPIPS: expected two NHWC images of one shape, got {x0.shape} and {x1.shape}")
        if normalize:
            x0, x1 = 2 * x0 - 1, 2 * x1 - 1
        f0, f1 = self.features(self.scale_inputs(x0)), self.features(self.scale_inputs(x1))
        if self.lpips and not hasattr(self, "lin0"):
            self._make_lin([f.shape[-1] for f in f0])
        out = []
        for k, (a, b) in enumerate(zip(f0, f1)):
            diff = (a - b) * (a - b)
            if self.lpips:
                weight = getattr(self, f"lin{k}")
                if weight.shape[-1] != diff.shape[-1]:
                    raise ShapeError(f"LPIPS: layer {self.layers[k]!r} has {diff.shape[-1]} channels but lin{k} "
                                     f"has {weight.shape[-1]} weights")
                diff = diff * weight.reshape(-1)
            out.append(diff.sum(axis=-1).mean(axis=(1, 2)))
        return out

    def forward(self, x0, x1, normalize: bool = False) -> Tensor:
        distances = self.layer_distances(x0, x1, normalize)
        total = distances[0]
        for d in distances[1:]:
            total = total + d
        return total

    def channel_distances(self, x0, x1, normalize: bool = False) -> list[np.ndarray]:
        """Per layer, the (N, C_l) spatial means of (f_hat0 - f_hat1)^2: the distance is linear in
        the lin weights over these (no graph; used by :func:`train_lpips`)."""
        with no_grad():
            x0, x1 = _as_tensor(x0), _as_tensor(x1)
            if normalize:
                x0, x1 = 2 * x0 - 1, 2 * x1 - 1
            f0, f1 = self.features(self.scale_inputs(x0)), self.features(self.scale_inputs(x1))
            if self.lpips and not hasattr(self, "lin0"):
                self._make_lin([f.shape[-1] for f in f0])
            return [backend.to_numpy(((a - b) * (a - b)).mean(axis=(1, 2)).data) for a, b in zip(f0, f1)]


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


def lpips_loss(lpips: LPIPS, x, target, normalize: bool = False) -> Tensor:
    """The batch mean of LPIPS(x, target): a differentiable training loss (the backbone is frozen;
    gradients reach ``x``, and the lin weights when they are trainable)."""
    return lpips(x, target, normalize=normalize).mean()


# -- weights -------------------------------------------------------------------------------------
def load_lpips_weights(lpips: LPIPS, source: str | os.PathLike | Mapping) -> None:
    """Copy the reference's lin weights into ``lpips``: ``source`` a safetensors file or a mapping
    (e.g. ``torch.load`` of the reference's ``.pth``) with keys ``lin{k}.model.1.weight`` of shape
    (1, C_k, 1, 1); the reference's ``scaling_layer.*`` buffers are ignored. Missing, unexpected or
    mis-shaped keys raise before anything is copied."""
    if not lpips.lpips:
        raise ValueError("load_lpips_weights: the baseline (lpips=False) has no lin weights")
    arrays = dict(source) if isinstance(source, Mapping) else load_file(source)[0]
    arrays = {k: v for k, v in arrays.items() if not str(k).startswith("scaling_layer.")}
    weights = lpips.lin_weights()
    if not weights:
        raise RuntimeError("load_lpips_weights: the lin weights do not exist yet; give LPIPS its channels or "
                           "call it once")
    expected = {f"lin{k}.model.1.weight": (1, w.shape[-1], 1, 1) for k, w in enumerate(weights)}
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    if missing or unexpected:
        raise KeyError(f"load_lpips_weights: missing keys {missing}, unexpected keys {unexpected}")
    values = {k: to_numpy(arrays[k]) for k in expected}
    bad = [f"{k!r}: got {v.shape}, expected {expected[k]}" for k, v in values.items() if v.shape != expected[k]]
    if bad:
        raise ShapeError("load_lpips_weights: mis-shaped keys: " + "; ".join(bad))
    for w, key in zip(weights, expected):
        w.data = backend.xp.asarray(values[key].reshape(w.shape).astype(w.dtype))


def load_lpips_backbone(lpips: LPIPS, state_dict: Mapping, input_shape=(64, 64, 3)) -> None:
    """Copy a torchvision ``state_dict`` of the backbone's model (keys ``features.*``; the rest,
    e.g. the classifier, ignored) into ``lpips.backbone``, built first for ``input_shape``."""
    features = {k.removeprefix("features."): v for k, v in state_dict.items() if str(k).startswith("features.")}
    if not lpips.backbone.built:
        with no_grad():
            lpips.backbone(np.zeros((1, *input_shape), dtype=backend.get_default_dtype()))
    missing = [k for k in lpips.backbone.state_dict() if k not in features]
    if missing:
        raise KeyError(f"load_lpips_backbone: the state dict lacks features.{missing[0]} (and "
                       f"{len(missing) - 1} more)")
    load_torchvision_state_dict(lpips.backbone, features, strict=False)


# -- calibration on 2AFC judgements ----------------------------------------------------------------
def _ranking_network(hidden: int) -> nn.Sequential:
    """The reference's G: (d0, d1, d0 - d1, d0 / (d1 + eps), d1 / (d0 + eps)) -> hidden -> hidden -> 1
    with leaky ReLUs (slope 0.2); its output is the logit of "p1 is judged closer"."""
    return nn.Sequential(nn.Dense(hidden, name="0"), nn.Dense(hidden, name="1"), nn.Dense(1, name="2"))


def _ranking_logits(net: nn.Sequential, d0: Tensor, d1: Tensor, eps: float = 0.1) -> Tensor:
    x = stack([d0, d1, d0 - d1, d0 / (d1 + eps), d1 / (d0 + eps)], axis=-1)
    layers = [layer for _, layer in net.named_children()]
    for layer in layers[:-1]:
        x = leaky_relu(layer(x), 0.2)
    return layers[-1](x).reshape(-1)


def two_afc_agreement(d0, d1, judgements) -> float:
    """The 2AFC score: mean of j where d1 < d0, 1 - j elsewhere (j the fraction preferring p1)."""
    d0, d1, j = (np.asarray(backend.to_numpy(getattr(a, "data", a)), dtype=np.float64) for a in (d0, d1, judgements))
    closer1 = d1 < d0
    return float(np.mean(np.where(closer1, j, 1 - j)))


@dataclass
class TwoAFCResult:
    """What :func:`train_lpips` gives: the ranking network and the loss and 2AFC score per step."""

    ranking_network: nn.Sequential
    losses: list[float] = field(default_factory=list)
    agreements: list[float] = field(default_factory=list)


def train_lpips(lpips: LPIPS, triplets, judgements, steps: int = 200, lr: float = 1e-4,
                betas: tuple[float, float] = (0.5, 0.999), batch_size: int = 50, hidden: int = 32,
                normalize: bool = False, seed: int = 0) -> TwoAFCResult:
    """Fit the lin weights of ``lpips`` (the backbone stays fixed) to 2AFC ``judgements`` (N,), the
    fraction of people preferring p1, for ``triplets`` = (ref, p0, p1), NHWC arrays of N images.

    d0 = LPIPS(ref, p0) and d1 = LPIPS(ref, p1) go through the ranking network; its sigmoid is fitted
    to the judgements by binary cross-entropy, Adam (the reference's lr 1e-4, betas (0.5, 0.999))
    updating the lin weights and the ranking network, the lin weights clamped to >= 0 after each
    step. As the backbone is fixed, the per-channel distances are computed once and the lin
    weights act on them (the reference's dropout before the lin layers is left out)."""
    from lamina.optim import Adam

    if not lpips.lpips:
        raise ValueError("train_lpips: the baseline (lpips=False) has no lin weights to train")
    ref, p0, p1 = triplets
    judge = np.asarray(judgements, dtype=np.float64).reshape(-1)
    if not len(judge) == len(ref) == len(p0) == len(p1):
        raise ShapeError(f"train_lpips: {len(ref)}, {len(p0)}, {len(p1)} images and {len(judge)} judgements")
    c0 = lpips.channel_distances(ref, p0, normalize)
    c1 = lpips.channel_distances(ref, p1, normalize)
    weights = lpips.lin_weights()
    dtype = weights[0].dtype
    c0 = [c.astype(dtype) for c in c0]
    c1 = [c.astype(dtype) for c in c1]
    net = _ranking_network(hidden)
    net(np.zeros((1, 5), dtype=dtype))
    if dtype == np.float64:
        net.double()
    optimizer = Adam([*weights, *net.parameters()], lr=lr, betas=betas)
    rng = np.random.default_rng(seed)
    result = TwoAFCResult(net)
    n = len(judge)

    def distance(channels, rows):
        total = None
        for c, w in zip(channels, weights):
            d = (Tensor(c[rows]) * w.reshape(-1)).sum(axis=-1)
            total = d if total is None else total + d
        return total

    for _ in range(steps):
        rows = rng.choice(n, size=min(batch_size, n), replace=False)
        d0, d1 = distance(c0, rows), distance(c1, rows)
        logits = _ranking_logits(net, d0, d1)
        loss = binary_cross_entropy(logits, Tensor(judge[rows].astype(dtype)), from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lpips.clamp_weights()
        result.losses.append(float(loss.item()))
        result.agreements.append(two_afc_agreement(d0, d1, judge[rows]))
    return result
