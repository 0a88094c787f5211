"""The front end of wav2vec 2.0 (see :mod:`lamina.models.wav2vec2`): input normalisation, the
convolutional feature encoder, the feature projection and the positional convolution.

    input             x = (a - mean(a)) / sqrt(var(a) + 1e-7)   over each utterance's samples
    feature encoder   z = gelu(norm(conv_i(z)))   (batch, frames, conv_dim[-1]); one frame per
                      prod(strides) samples, L <- floor((L - k) / s) + 1 per conv
    projection        h = Linear(LN(z))
    positions         p = gelu(drop_last(conv_pos(h)))   a weight-normed grouped conv over time
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import GroupNorm, LayerNorm
from lamina.nn.weight_norms import WeightNorm

__all__ = ["INIT_STD", "Wav2Vec2ConvLayer", "Wav2Vec2FeatureEncoder", "Wav2Vec2FeatureProjection",
           "Wav2Vec2PositionalConvEmbedding", "batch_shape", "linear_init", "wav2vec2_input_values"]

INIT_STD = 0.02
"""The standard deviation of Hugging Face's normal initialization of the Linear weights."""


# -- input ----------------------------------------------------------------------------------
def wav2vec2_input_values(audio, padding_value: float = 0.0, do_normalize: bool = True,
                          eps: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """``(input_values, attention_mask)`` for a batch of utterances (a list of 1-D arrays, or
    one 2-D array of equal-length rows), as HF's ``Wav2Vec2FeatureExtractor``: each
    utterance normalised over its own samples, x = (a - mean(a)) / sqrt(var(a) + eps), then
    padded at the end with ``padding_value`` to the longest; the mask (batch, samples) is 1
    on real samples. float32 unless the audio is float64."""
    rows = [np.asarray(a) for a in (audio if isinstance(audio, (list, tuple)) else list(np.asarray(audio)))]
    if not rows or any(row.ndim != 1 or row.size == 0 for row in rows):
        raise ShapeError(f"wav2vec2_input_values: expected a non-empty batch of non-empty 1-D utterances, got "
                         f"shapes {[row.shape for row in rows]}")
    dtype = np.float64 if all(row.dtype == np.float64 for row in rows) else np.float32
    length = max(row.size for row in rows)
    values = np.full((len(rows), length), padding_value, dtype=dtype)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        row = row.astype(np.float64)
        if do_normalize:
            row = (row - row.mean()) / np.sqrt(row.var() + eps)
        values[i, :row.size] = row
        mask[i, :row.size] = 1
    return values, mask


# -- layers ---------------------------------------------------------------------------------
def linear_init():
    """HF's normal initialization of the Linear weights, N(0, INIT_STD^2)."""
    return initializers.normal(std=INIT_STD)


def batch_shape(input_shape) -> tuple:
    """(batch,) from the shape of the first input ((None,) when unknown)."""
    return main_input_shape(input_shape)[:1] or (None,)


@register_layer
class Wav2Vec2ConvLayer(Module):
    """One conv of the feature encoder, gelu(norm(conv(x))) on (batch, steps, channels):
    sub-modules ``conv`` and, for ``norm`` 'group' (one group per channel, each channel
    normalised over time) or 'layer' (over the channels of each step), ``layer_norm``."""

    def __init__(self, filters: int, kernel_size: int, stride: int, use_bias: bool = False,
                 norm: str | None = None, name: str | None = None):
        super().__init__(name=name)
        if norm not in (None, "group", "layer"):
            raise ValueError(f"Wav2Vec2ConvLayer: norm must be None, 'group' or 'layer', got {norm!r}")
        self.config = {"filters": positive_int(filters, "Wav2Vec2ConvLayer: filters"), "kernel_size": kernel_size,
                       "stride": stride, "use_bias": bool(use_bias), "norm": norm}
        self.conv = Conv1D(filters, kernel_size, stride=stride, use_bias=use_bias, kernel_init="he_normal")
        if norm == "group":
            self.layer_norm = GroupNorm(filters, eps=1e-5)
        elif norm == "layer":
            self.layer_norm = LayerNorm(-1, eps=1e-5)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        out = (shape[0], None, self.config["filters"])
        pairs = [(self.conv, shape)]
        if self.config["norm"] == "group":
            pairs.append((self.layer_norm, (shape[0], 1, None, self.config["filters"])))
        elif self.config["norm"] == "layer":
            pairs.append((self.layer_norm, out))
        build_children(pairs)
        self.built = True

    def forward(self, x) -> Tensor:
        x = self.conv(x)
        if self.config["norm"] == "group":
            n, steps, c = x.shape
            x = F.reshape(self.layer_norm(F.reshape(x, n, 1, steps, c)), n, steps, c)
        elif self.config["norm"] == "layer":
            x = self.layer_norm(x)
        return F.gelu(x)

    def compute_output_shape(self, input_shape):
        steps = input_shape[1]
        k, s = self.config["kernel_size"], self.config["stride"]
        return (input_shape[0], None if steps is None else (steps - k) // s + 1, self.config["filters"])

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Wav2Vec2FeatureEncoder(Module):
    """Audio (batch, samples) -> features (batch, frames, conv_dim[-1]) by the conv stack
    ``conv_layers`` (see the module docstring)."""

    def __init__(self, conv_dim: Sequence[int] = (512,) * 7, conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
                 conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2), conv_bias: bool = False,
                 feat_extract_norm: str = "group", name: str | None = None):
        super().__init__(name=name)
        if not len(conv_dim) == len(conv_kernel) == len(conv_stride) or not conv_dim:
            raise ValueError(f"Wav2Vec2FeatureEncoder: conv_dim {tuple(conv_dim)}, conv_kernel {tuple(conv_kernel)} "
                             f"and conv_stride {tuple(conv_stride)} must have the same non-zero length")
        if feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"Wav2Vec2FeatureEncoder: feat_extract_norm must be 'group' or 'layer', got "
                             f"{feat_extract_norm!r}")
        self.conv_kernel, self.conv_stride = tuple(conv_kernel), tuple(conv_stride)
        self.config = {"conv_dim": tuple(conv_dim), "conv_kernel": self.conv_kernel, "conv_stride": self.conv_stride,
                       "conv_bias": bool(conv_bias), "feat_extract_norm": feat_extract_norm}
        norms = ["layer"] * len(conv_dim) if feat_extract_norm == "layer" else ["group"] + [None] * (len(conv_dim) - 1)
        self.conv_layers = ModuleList([Wav2Vec2ConvLayer(c, k, s, conv_bias, norm)
                                       for c, k, s, norm in zip(conv_dim, conv_kernel, conv_stride, norms)])

    def output_lengths(self, lengths) -> np.ndarray:
        """Frames for ``lengths`` samples: L <- floor((L - k) / s) + 1 per conv."""
        lengths = np.asarray(lengths, dtype=np.int64)
        for k, s in zip(self.conv_kernel, self.conv_stride):
            lengths = (lengths - k) // s + 1
        return lengths

    def build(self, input_shape) -> None:
        shape = batch_shape(input_shape) + (None, 1)
        for layer in self.conv_layers:
            build_children([(layer, shape)])
            shape = (shape[0], None, layer.config["filters"])
        self.built = True

    def forward(self, input_values) -> Tensor:
        x = as_tensor(input_values)
        if x.ndim != 2:
            raise ShapeError(f"{self._label()}: expected audio (batch, samples), got shape {tuple(x.shape)}")
        if self.output_lengths(x.shape[1]) < 1:
            raise ShapeError(f"{self._label()}: {x.shape[1]} samples are too few for one frame of the conv stack "
                             f"(kernels {self.conv_kernel}, strides {self.conv_stride})")
        x = F.reshape(x, x.shape[0], x.shape[1], 1)
        for layer in self.conv_layers:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Wav2Vec2FeatureProjection(Module):
    """h = dropout(projection(layer_norm(z))): conv features to the model width."""

    def __init__(self, hidden_size: int, layer_norm_eps: float = 1e-5, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "Wav2Vec2FeatureProjection: hidden_size")
        self.config = {"hidden_size": hidden_size, "layer_norm_eps": layer_norm_eps, "dropout": dropout}
        self.layer_norm = LayerNorm(-1, eps=layer_norm_eps)
        self.projection = Dense(hidden_size, kernel_init=linear_init())
        self.dropout = Dropout(checked_rate(dropout, "Wav2Vec2FeatureProjection"))

    def build(self, input_shape) -> None:
        build_children([(self.layer_norm, input_shape), (self.projection, input_shape)])
        self.built = True

    def forward(self, x) -> Tensor:
        return self.project(x)[0]

    def project(self, x) -> tuple[Tensor, Tensor]:
        """(h, LN(z)): the projected states and the normalised features before the projection
        (the quantizer's input in pretraining)."""
        normed = self.layer_norm(x)
        return self.dropout(self.projection(normed)), normed

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Wav2Vec2PositionalConvEmbedding(Module):
    """Relative positions from a grouped convolution over time, gelu(conv(h)) with the extra
    frame of an even kernel removed. ``conv`` is a :class:`lamina.nn.WeightNorm` over a
    :class:`Conv1D` (weight (K, f, c / groups)) normalising over the kernel axis: one gain
    per kernel tap, HF's ``weight_norm(conv, dim=2)``."""

    def __init__(self, hidden_size: int, kernel_size: int = 128, groups: int = 16, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "Wav2Vec2PositionalConvEmbedding: hidden_size")
        self.kernel_size = positive_int(kernel_size, "Wav2Vec2PositionalConvEmbedding: kernel_size")
        self.groups = positive_int(groups, "Wav2Vec2PositionalConvEmbedding: groups")
        std = 2.0 * (kernel_size * hidden_size / groups) ** -0.5
        self.conv = WeightNorm(Conv1D(hidden_size, kernel_size, padding=kernel_size // 2, groups=groups,
                                      kernel_init=initializers.normal(std=std)), axis=1)

    def build(self, input_shape) -> None:
        build_children([(self.conv, (None, None, self.hidden_size))])
        self.built = True

    def forward(self, x) -> Tensor:
        x = self.conv(x)
        if self.kernel_size % 2 == 0:
            x = x[:, :-1]
        return F.gelu(x)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "kernel_size": self.kernel_size, "groups": self.groups,
                "name": self.name}
