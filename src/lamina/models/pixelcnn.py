"""Autoregressive image models: PixelCNN and the gated PixelCNN (van den Oord et al. 2016).

An image x of H x W pixels with C channels, each a value in {0, ..., K - 1} (K = 256 for
8-bit images, K = 2 for binarised ones, K = the codebook size for VQ-VAE index maps), gets
the exact likelihood

    p(x) = prod over pixels (i, j) in raster order of p(x_ij | x_<ij)

with one K-way softmax per pixel and channel, all computed in one pass by a network whose
output at (i, j) never reads pixel (i, j) or any later one. Trained by the cross-entropy
of those softmaxes; reported in bits per dimension, -log2 p(x) / (H W C). Sampling draws
the pixels one at a time, running the network once per pixel (per channel with ordered
channels).

:class:`PixelCNN` stacks masked convolutions (:class:`lamina.nn.MaskedConv2D`, a 'A' layer
then residual blocks of 'B' layers); with C > 1 its channels are ordered inside a pixel
(channel groups, as the paper's R, G, B). Its receptive field has a blind spot: pixels up
and to the right of (i, j), outside a cone, are never seen, however deep the stack.

:class:`GatedPixelCNN` removes the blind spot with two stacks: a vertical one whose output
at row i covers the rows up to i (a (f // 2 + 1) x f kernel over the rows above), shifted
down one row before the horizontal stack reads it, and a horizontal one over the pixels to
the left in the row. Each layer is gated,

    y = tanh(W_f * x + V_f h) (.) sigmoid(W_g * x + V_g h)

with h a learned vector per class (class-conditional models, ``num_classes``). Here its
channels are predicted independently given the earlier pixels.

Inputs are integer maps (N, H, W) or (N, H, W, C); each value is embedded (one learned
table per channel) before the first layer.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import Conv2D, Embedding, MaskedConv2D, ModuleList
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, evaluation_mode

__all__ = ["GatedPixelCNN", "GatedPixelCNNLayer", "PixelCNN"]


def _gate(x: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) for the two halves a, b of the last axis."""
    half = x.shape[-1] // 2
    return x[..., :half].tanh() * x[..., half:].sigmoid()


class _PixelModel(Module):
    """What both models share: the pixel checks and embedding, the likelihood, sampling.
    A subclass gives ``logits_from_features`` (embedded pixels -> (N, H, W, C * K))."""

    channel_ordered = False

    def __init__(self, levels: int, channels: int, embedding_dim: int, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.levels = positive_int(levels, f"{who}: levels")
        if self.levels < 2:
            raise ValueError(f"{who}: levels must be at least 2, got {levels!r}")
        self.channels = positive_int(channels, f"{who}: channels")
        self.embedding_dim = positive_int(embedding_dim, f"{who}: embedding_dim")
        self.embed = Embedding(self.levels * self.channels, self.embedding_dim,
                               embeddings_init={"name": "normal", "std": 1.0})

    def pixels(self, x) -> np.ndarray:
        """``x`` as an integer array (N, H, W, C), checked against the model's levels and channels."""
        xp = backend.xp
        data = xp.asarray(x.data if isinstance(x, Tensor) else x)
        if data.ndim == 3 and self.channels == 1:
            data = data[..., None]
        if data.ndim != 4 or data.shape[-1] != self.channels:
            raise ShapeError(f"{self._label()}: got pixels of shape {tuple(data.shape)}; expected integer maps "
                             f"(N, H, W, {self.channels})" + (" or (N, H, W)" if self.channels == 1 else ""))
        if data.dtype.kind == "f":
            if data.size and not bool((data == xp.round(data)).all()):
                raise TypeError(f"{self._label()}: pixels must be integer values in [0, {self.levels}), got "
                                f"non-integer floats")
            data = data.astype(xp.int64)
        if data.dtype.kind not in "iu":
            raise TypeError(f"{self._label()}: pixels must be integers, got dtype {data.dtype}")
        if data.size and (int(data.min()) < 0 or int(data.max()) >= self.levels):
            raise ValueError(f"{self._label()}: pixel values must be in [0, {self.levels}), got the range "
                             f"[{int(data.min())}, {int(data.max())}]")
        return data

    def embed_pixels(self, x) -> Tensor:
        """Integer pixels -> (N, H, W, C * embedding_dim), channel c's vectors c-th on the last axis."""
        data = self.pixels(x)
        offsets = backend.xp.arange(self.channels) * self.levels
        n, h, w, c = data.shape
        return self.embed(data + offsets).reshape(n, h, w, c * self.embedding_dim)

    def logits_from_features(self, features: Tensor, labels=None) -> Tensor:
        raise NotImplementedError

    def forward(self, x, labels=None) -> Tensor:
        """Integer pixels (N, H, W[, C]) -> logits (N, H, W, C, K): the conditional of each
        value given the earlier ones."""
        features = self.embed_pixels(x)
        n, h, w = features.shape[:3]
        return self.logits_from_features(features, labels).reshape(n, h, w, self.channels, self.levels)

    def log_prob(self, x, labels=None) -> Tensor:
        """log p(x) in nats, one per image: (N,)."""
        data = self.pixels(x)
        picked = F.take_along_dim(F.log_softmax(self.forward(data, labels), axis=-1), data[..., None], axis=-1)
        return picked.reshape(data.shape[0], -1).sum(axis=1)

    def bits_per_dim(self, x, labels=None) -> Tensor:
        """-log2 p(x) / (H W C) averaged over the batch: the training loss, in bits."""
        data = self.pixels(x)
        dims = data.shape[1] * data.shape[2] * data.shape[3]
        return -self.log_prob(data, labels).mean() / (dims * math.log(2))

    def sample(self, shape, labels=None, temperature: float = 1.0, seed: int | None = None) -> np.ndarray:
        """Draw images of ``shape`` (n, H, W) or (n, H, W, C), one pixel (and with ordered
        channels one channel) at a time, from softmax(logits / temperature): integers in
        [0, levels), of ``shape``."""
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (3, 4) or (len(shape) == 3 and self.channels != 1) or \
                (len(shape) == 4 and shape[-1] != self.channels) or min(shape) < 1:
            raise ShapeError(f"{self._label()}.sample: shape {shape} must be (n, H, W, {self.channels})"
                             + (" or (n, H, W)" if self.channels == 1 else ""))
        if temperature <= 0:
            raise ValueError(f"{self._label()}.sample: temperature must be > 0, got {temperature!r}")
        rng = np.random.default_rng(seed)
        n, h, w = shape[:3]
        x = np.zeros((n, h, w, self.channels), dtype=np.int64)
        groups = [[c] for c in range(self.channels)] if self.channel_ordered else [list(range(self.channels))]
        with no_grad(), evaluation_mode(self):
            for i in range(h):
                for j in range(w):
                    for group in groups:
                        logits = backend.to_numpy(self.forward(x, labels).data[:, i, j, group]).astype(np.float64)
                        logits = logits / temperature
                        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
                        probs /= probs.sum(axis=-1, keepdims=True)
                        draws = (probs.cumsum(axis=-1) < rng.uniform(size=probs.shape[:-1] + (1,))).sum(axis=-1)
                        x[:, i, j, group] = np.minimum(draws, self.levels - 1)
        return x if len(shape) == 4 else x[..., 0]


@register_layer
class PixelCNN(_PixelModel):
    """The masked-convolution PixelCNN: a ``kernel_size`` mask-'A' convolution to 2 ``hidden``
    features, ``num_blocks`` residual blocks (ReLU, 1x1 to ``hidden``, ReLU, a
    ``block_kernel`` mask-'B' convolution, ReLU, 1x1 to 2 ``hidden``, plus the input), then
    ReLU, a 1x1 to ``output_hidden`` features, ReLU and a 1x1 to C K logits. Channels are
    ordered inside a pixel (C channel groups in every layer)."""

    channel_ordered = True

    def __init__(self, levels: int = 256, channels: int = 1, hidden: int = 32, num_blocks: int = 4,
                 kernel_size: int = 7, block_kernel: int = 3, output_hidden: int | None = None,
                 embedding_dim: int = 8, name: str | None = None):
        super().__init__(levels, channels, embedding_dim, name)
        self.hidden = positive_int(hidden, "PixelCNN: hidden")
        self.num_blocks = int(num_blocks)
        if self.num_blocks < 0:
            raise ValueError(f"PixelCNN: num_blocks must be >= 0, got {num_blocks!r}")
        self.output_hidden = positive_int(output_hidden or hidden, "PixelCNN: output_hidden")
        if min(self.hidden, self.output_hidden) < self.channels:
            raise ValueError(f"PixelCNN: hidden={hidden} and output_hidden={output_hidden} must be at least "
                             f"channels={channels}, one feature group per channel")
        g = self.channels
        self.kernel_size, self.block_kernel = kernel_size, block_kernel
        self.first = MaskedConv2D(2 * self.hidden, kernel_size, "A", channel_groups=g)
        self.blocks = ModuleList([
            ModuleList([MaskedConv2D(self.hidden, 1, "B", g, activation="relu"),
                        MaskedConv2D(self.hidden, block_kernel, "B", g, activation="relu"),
                        MaskedConv2D(2 * self.hidden, 1, "B", g)])
            for _ in range(self.num_blocks)])
        self.head = MaskedConv2D(self.output_hidden, 1, "B", g, activation="relu")
        self.out = MaskedConv2D(self.channels * self.levels, 1, "B", g)

    def logits_from_features(self, features: Tensor, labels=None) -> Tensor:
        """Embedded pixels (N, H, W, C * embedding_dim) -> logits (N, H, W, C * K)."""
        if labels is not None:
            raise ValueError(f"{self._label()}: takes no labels (GatedPixelCNN(num_classes=...) is class-conditional)")
        x = self.first(features)
        for reduce, spatial, expand in self.blocks:
            x = x + expand(spatial(reduce(x.relu())))
        return self.out(self.head(x.relu()))

    def get_config(self) -> dict:
        return {"levels": self.levels, "channels": self.channels, "hidden": self.hidden,
                "num_blocks": self.num_blocks, "kernel_size": self.kernel_size, "block_kernel": self.block_kernel,
                "output_hidden": self.output_hidden, "embedding_dim": self.embedding_dim, "name": self.name}


@register_layer
class GatedPixelCNNLayer(Module):
    """One gated layer: (vertical, horizontal) features -> the same, ``hidden`` each (see the
    module docstring). ``first``: the horizontal convolution excludes the current pixel and
    there is no residual connection; ``num_classes``: a learned bias per class on both stacks."""

    def __init__(self, hidden: int, kernel_size: int = 3, first: bool = False, num_classes: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "GatedPixelCNNLayer: hidden")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"GatedPixelCNNLayer: kernel_size must be an odd int >= 3, got {kernel_size!r}")
        self.kernel_size, self.first = kernel_size, bool(first)
        half = kernel_size // 2
        self.vertical = Conv2D(2 * hidden, (half + 1, kernel_size))
        self.horizontal = Conv2D(2 * hidden, (1, half if first else half + 1))
        self.vertical_to_horizontal = Conv2D(2 * hidden, 1)
        self.horizontal_out = Conv2D(hidden, 1)
        self.num_classes = None if num_classes is None else positive_int(num_classes, "GatedPixelCNNLayer: num_classes")
        if self.num_classes is not None:
            self.class_vertical = Embedding(self.num_classes, 2 * hidden, embeddings_init="zeros")
            self.class_horizontal = Embedding(self.num_classes, 2 * hidden, embeddings_init="zeros")

    def forward(self, v: Tensor, h: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        height, width, half = v.shape[1], v.shape[2], self.kernel_size // 2
        v_features = self.vertical(F.pad2d(v, (half, 0, half, half)))           # rows i - half .. i
        shifted = F.pad2d(v_features, (1, 0, 0, 0))[:, :height]                 # rows i - half - 1 .. i - 1
        h_features = self.horizontal(F.pad2d(h, (0, 0, half, 0)))[:, :, :width]
        h_features = h_features + self.vertical_to_horizontal(shifted)
        if self.num_classes is not None:
            if labels is None:
                raise ValueError(f"{self._label()}: a class-conditional layer needs labels")
            n = v.shape[0]
            v_features = v_features + self.class_vertical(labels).reshape(n, 1, 1, 2 * self.hidden)
            h_features = h_features + self.class_horizontal(labels).reshape(n, 1, 1, 2 * self.hidden)
        h_out = self.horizontal_out(_gate(h_features))
        return _gate(v_features), h_out if self.first else h + h_out

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "kernel_size": self.kernel_size, "first": self.first,
                "num_classes": self.num_classes, "name": self.name}


@register_layer
class GatedPixelCNN(_PixelModel):
    """The gated PixelCNN without a blind spot: ``num_layers`` :class:`GatedPixelCNNLayer`
    of ``hidden`` features and ``kernel_size`` kernels, then ReLU, a 1x1 to ``output_hidden``,
    ReLU and a 1x1 to C K logits. ``num_classes``: class-conditional (labels (N,) ints)."""

    def __init__(self, levels: int = 256, channels: int = 1, hidden: int = 32, num_layers: int = 5,
                 kernel_size: int = 3, num_classes: int | None = None, output_hidden: int | None = None,
                 embedding_dim: int = 8, name: str | None = None):
        super().__init__(levels, channels, embedding_dim, name)
        self.hidden = positive_int(hidden, "GatedPixelCNN: hidden")
        self.num_layers = positive_int(num_layers, "GatedPixelCNN: num_layers")
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.output_hidden = positive_int(output_hidden or hidden, "GatedPixelCNN: output_hidden")
        self.layers = ModuleList([GatedPixelCNNLayer(self.hidden, kernel_size, first=k == 0, num_classes=num_classes)
                                  for k in range(self.num_layers)])
        self.head = Conv2D(self.output_hidden, 1, activation="relu")
        self.out = Conv2D(self.channels * self.levels, 1)

    def _labels(self, labels, n: int):
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(f"{self._label()}: got labels but the model is unconditional; give num_classes")
            return None
        if labels is None:
            raise ValueError(f"{self._label()}: a class-conditional model (num_classes={self.num_classes}) "
                             "needs labels, one int per image")
        data = np.asarray(backend.to_numpy(labels.data if isinstance(labels, Tensor) else labels))
        if data.shape != (n,) or data.dtype.kind not in "iu" or (data.size and (
                data.min() < 0 or data.max() >= self.num_classes)):
            raise ValueError(f"{self._label()}: labels must be {n} ints in [0, {self.num_classes}), got shape "
                             f"{data.shape} and dtype {data.dtype}")
        return backend.xp.asarray(data)

    def logits_from_features(self, features: Tensor, labels=None) -> Tensor:
        """Embedded pixels (N, H, W, C * embedding_dim) -> logits (N, H, W, C * K)."""
        labels = self._labels(labels, features.shape[0])
        v = h = features
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return self.out(self.head(h.relu()))

    def get_config(self) -> dict:
        return {"levels": self.levels, "channels": self.channels, "hidden": self.hidden,
                "num_layers": self.num_layers, "kernel_size": self.kernel_size, "num_classes": self.num_classes,
                "output_hidden": self.output_hidden, "embedding_dim": self.embedding_dim, "name": self.name}
