"""PatchTST (Nie et al., 2023): patches of each channel as the tokens of a Transformer encoder."""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.blocks import Block
from lamina.models.forecasting._common import check_rate, check_window, from_per_channel, per_channel, window_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor


@register_layer
class PatchTST(Block):
    """PatchTST (supervised, channel-independent): (batch, input_length, channels) ->
    (batch, horizon, channels).

        z = RevIN(x)                              per window and channel (``revin``)
        every channel: s (input_length,) -> s extended by ``stride`` copies of its last value
                       (``padding_patch="end"``) -> patches P_j = s[j S : j S + P], j < n
        tokens = Dense(P_j) + pos_j               (n, d_model), learned positions ``position``
        tokens = encoder layers (post-norm :class:`TransformerEncoderLayer`, GELU)
        y = Dense(flatten(tokens))                (n d_model) -> horizon (``head``)
        y = RevIN^-1(y)

    n = floor((input_length - P) / S) + 1, plus one with the end padding. The paper's encoder
    normalises with BatchNorm; this one uses LayerNorm (its option). Sub-layers ``revin``,
    ``patch_embedding``, ``dropout``, ``layer0`` .., ``head_dropout``, ``head``; parameter
    ``position`` (n, d_model)."""

    default_name = "patchtst"

    def __init__(self, input_length: int, horizon: int, channels: int = 1, patch_length: int = 16,
                 stride: int = 8, d_model: int = 128, num_heads: int = 16, dim_feedforward: int = 256,
                 layers: int = 3, dropout: float = 0.2, head_dropout: float = 0.0, revin: bool = True,
                 padding_patch: str | None = "end", name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "PatchTST: input_length")
        self.horizon = positive_int(horizon, "PatchTST: horizon")
        self.channels = positive_int(channels, "PatchTST: channels")
        self.patch_length = positive_int(patch_length, "PatchTST: patch_length")
        self.stride = positive_int(stride, "PatchTST: stride")
        if self.patch_length > self.input_length:
            raise ValueError(f"PatchTST: patch_length {patch_length} is longer than input_length {input_length}")
        if padding_patch not in ("end", None):
            raise ValueError(f"PatchTST: padding_patch must be 'end' or None, got {padding_patch!r}")
        self.padding_patch = padding_patch
        self.d_model = positive_int(d_model, "PatchTST: d_model")
        self.num_heads = positive_int(num_heads, "PatchTST: num_heads")
        self.dim_feedforward = positive_int(dim_feedforward, "PatchTST: dim_feedforward")
        self.layers = positive_int(layers, "PatchTST: layers")
        self.dropout_rate = check_rate(dropout, "PatchTST: dropout")
        self.head_dropout_rate = check_rate(head_dropout, "PatchTST: head_dropout")
        self.use_revin = bool(revin)
        self.revin = nn.RevIN(self.channels, name="revin") if self.use_revin else None
        self.patch_embedding = nn.Dense(self.d_model, name="patch_embedding")
        self.dropout = nn.Dropout(self.dropout_rate, name="dropout")
        for i in range(self.layers):
            layer = nn.TransformerEncoderLayer(self.d_model, self.num_heads, self.dim_feedforward, self.dropout_rate,
                                               activation="gelu", name=f"layer{i}")
            setattr(self, f"layer{i}", layer)
        self.head_dropout = nn.Dropout(self.head_dropout_rate, name="head_dropout")
        self.head = nn.Dense(self.horizon, name="head")

    @property
    def num_patches(self) -> int:
        extra = 1 if self.padding_patch == "end" else 0
        return (self.input_length - self.patch_length) // self.stride + 1 + extra

    def patch_indices(self) -> np.ndarray:
        """(n, P): the steps of the (padded) series each patch takes."""
        starts = np.arange(self.num_patches) * self.stride
        return starts[:, None] + np.arange(self.patch_length)

    def trace(self, shape, step):
        shape = window_shape(self, shape, self.input_length, self.channels)
        if self.revin is not None:
            step(self.revin, shape)
        rows = None if shape[0] is None else shape[0] * self.channels
        tokens = step(self.patch_embedding, (rows, self.num_patches, self.patch_length))
        for i in range(self.layers):
            tokens = step(self._modules[f"layer{i}"], tokens)
        step(self.head, (rows, self.num_patches * self.d_model))
        return (shape[0], self.horizon, self.channels)

    def build(self, input_shape) -> None:
        if "position" not in self._parameters:
            bound = 0.02
            values = backend.rng().uniform(-bound, bound, (self.num_patches, self.d_model))
            self.add_parameter("position", backend.xp.asarray(values.astype(backend.get_default_dtype())))
        super().build(input_shape)

    def patches(self, x) -> Tensor:
        """Windows (batch, input_length, channels) -> patches (batch channels, n, patch_length)."""
        series = per_channel(as_tensor(x))
        # the end padding repeats the last step: a step past the end reads the last one
        return series[:, np.minimum(self.patch_indices(), self.input_length - 1)]

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        if self.revin is not None:
            x = self.revin(x, "norm")
        tokens = self.dropout(F.add(self.patch_embedding(self.patches(x)), self.position))
        for i in range(self.layers):
            tokens = self._modules[f"layer{i}"](tokens)
        flat = F.reshape(tokens, (tokens.shape[0], self.num_patches * self.d_model))
        y = from_per_channel(self.head(self.head_dropout(flat)), self.channels)
        return self.revin(y, "denorm") if self.revin is not None else y

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "channels": self.channels,
                "patch_length": self.patch_length, "stride": self.stride, "d_model": self.d_model,
                "num_heads": self.num_heads, "dim_feedforward": self.dim_feedforward, "layers": self.layers,
                "dropout": self.dropout_rate, "head_dropout": self.head_dropout_rate, "revin": self.use_revin,
                "padding_patch": self.padding_patch, "name": self.name}


def patchtst(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> PatchTST:
    """A :class:`PatchTST` forecaster (defaults of Nie et al.'s supervised model, patches of 16, stride 8)."""
    return PatchTST(input_length, horizon, channels, **options)
