"""Conformer (Gulati et al., "Conformer: Convolution-augmented Transformer for Speech Recognition",
2020) in the layout of torchaudio's ``Conformer``: a stack of layers over (batch, frames, dim)
features with per-utterance lengths.

One layer, with a macaron pair of half-step feed-forward modules around self-attention and a
convolution module:

    x = x + FF1(x) / 2
    x = x + Dropout(MHSA(LN(x)))          padded frames hidden from attention as keys
    x = x + Conv(x)                       (before the attention with ``convolution_first``)
    x = x + FF2(x) / 2
    y = LN(x)

    FF(x)   = Dropout(Linear(Dropout(SiLU(Linear(LN(x))))))            dim -> ffn_dim -> dim
    Conv(x) = Dropout(Pointwise(SiLU(Norm(Depthwise(GLU(Pointwise(LN(x))))))))

The convolution module's first pointwise convolution doubles the channels for the GLU
(a * sigmoid(b) of the two halves), the depthwise convolution has an odd kernel and 'same'
padding, Norm is a batch norm over the channels (a group norm with one group, over each
utterance's frames and channels, with ``use_group_norm``). Self-attention is plain multi-head
attention with biased projections and no relative positions, as torchaudio's. As there,
padded frames are masked as attention keys only: the convolution and batch norm see them.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.normalization import BatchNorm
from lamina.nn.sample_norm import GroupNorm, LayerNorm

__all__ = ["Conformer", "ConformerConvolution", "ConformerFeedForward", "ConformerLayer", "lengths_mask"]


def lengths_mask(lengths, frames: int, who: str) -> np.ndarray:
    """(batch, frames) boolean mask, True on each utterance's first ``lengths[b]`` frames;
    lengths must lie in [1, frames]."""
    lengths = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ShapeError(f"{who}: lengths must be a 1-D integer array (one per utterance), got shape "
                         f"{lengths.shape} and dtype {lengths.dtype}")
    outside = (lengths < 1) | (lengths > frames)
    if outside.any():
        b = int(np.argmax(outside))
        raise ValueError(f"{who}: lengths must lie in [1, {frames}] (the frames of the input), got "
                         f"{int(lengths[b])} for utterance {b}")
    return np.arange(frames)[None, :] < lengths[:, None]


@register_layer
class ConformerFeedForward(Module):
    """FF(x) = Dropout(Linear(Dropout(SiLU(Linear(LN(x)))))), dim -> hidden -> dim."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.config = {"input_dim": positive_int(input_dim, "ConformerFeedForward: input_dim"),
                       "hidden_dim": positive_int(hidden_dim, "ConformerFeedForward: hidden_dim"),
                       "dropout": checked_rate(dropout, "ConformerFeedForward")}
        self.layer_norm = LayerNorm(-1)
        self.linear1 = Dense(hidden_dim, kernel_init="lecun_uniform")
        self.hidden_dropout = Dropout(dropout)
        self.linear2 = Dense(input_dim, kernel_init="lecun_uniform")
        self.output_dropout = Dropout(dropout)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.layer_norm, shape), (self.linear1, shape),
                        (self.linear2, shape[:-1] + (self.config["hidden_dim"],))])
        self.built = True

    def forward(self, x) -> Tensor:
        x = self.hidden_dropout(F.silu(self.linear1(self.layer_norm(x))))
        return self.output_dropout(self.linear2(x))

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class ConformerConvolution(Module):
    """Conv(x) = Dropout(pointwise2(SiLU(norm(depthwise(GLU(pointwise1(LN(x)))))))) on
    (batch, frames, dim); the depthwise kernel is odd, with (k - 1) / 2 zeros at both ends."""

    def __init__(self, input_dim: int, kernel_size: int, dropout: float = 0.0, use_group_norm: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        dim = positive_int(input_dim, "ConformerConvolution: input_dim")
        kernel_size = positive_int(kernel_size, "ConformerConvolution: kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"ConformerConvolution: the depthwise kernel size must be odd for 'same' padding, got "
                             f"{kernel_size}")
        self.config = {"input_dim": dim, "kernel_size": kernel_size,
                       "dropout": checked_rate(dropout, "ConformerConvolution"), "use_group_norm": bool(use_group_norm)}
        self.layer_norm = LayerNorm(-1)
        self.pointwise1 = Conv1D(2 * dim, 1)
        self.depthwise = Conv1D(dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = GroupNorm(1) if use_group_norm else BatchNorm()
        self.pointwise2 = Conv1D(dim, 1)
        self.dropout = Dropout(dropout)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        dim = self.config["input_dim"]
        norm_shape = (shape[0], 1, shape[1], dim) if self.config["use_group_norm"] else shape
        build_children([(self.layer_norm, shape), (self.pointwise1, shape), (self.depthwise, shape),
                        (self.norm, norm_shape), (self.pointwise2, shape)])
        self.built = True

    def _normalised(self, x: Tensor) -> Tensor:
        if not self.config["use_group_norm"]:
            return self.norm(x)
        n, frames, dim = x.shape                     # GroupNorm reads NHWC: frames as one image row
        return F.reshape(self.norm(F.reshape(x, (n, 1, frames, dim))), (n, frames, dim))

    def forward(self, x) -> Tensor:
        x = F.glu(self.pointwise1(self.layer_norm(x)), axis=-1)
        x = F.silu(self._normalised(self.depthwise(x)))
        return self.dropout(self.pointwise2(x))

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class ConformerLayer(Module):
    """One Conformer layer (module docstring); called as ``layer(x, key_mask)`` with ``x``
    (batch, frames, dim) and ``key_mask`` (batch, frames), True on real frames, or None."""

    def __init__(self, input_dim: int, ffn_dim: int, num_heads: int, depthwise_conv_kernel_size: int,
                 dropout: float = 0.0, use_group_norm: bool = False, convolution_first: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        dim = positive_int(input_dim, "ConformerLayer: input_dim")
        heads = positive_int(num_heads, "ConformerLayer: num_heads")
        if dim % heads:
            raise ValueError(f"ConformerLayer: num_heads={heads} must divide input_dim={dim}")
        self.config = {"input_dim": dim, "ffn_dim": ffn_dim, "num_heads": heads,
                       "depthwise_conv_kernel_size": depthwise_conv_kernel_size, "dropout": dropout,
                       "use_group_norm": bool(use_group_norm), "convolution_first": bool(convolution_first)}
        self.ffn1 = ConformerFeedForward(dim, ffn_dim, dropout)
        self.self_attn_layer_norm = LayerNorm(-1)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=checked_rate(dropout, "ConformerLayer"))
        self.self_attn_dropout = Dropout(dropout)
        self.conv_module = ConformerConvolution(dim, depthwise_conv_kernel_size, dropout, use_group_norm)
        self.ffn2 = ConformerFeedForward(dim, ffn_dim, dropout)
        self.final_layer_norm = LayerNorm(-1)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.ffn1, shape), (self.self_attn_layer_norm, shape), (self.self_attn, shape),
                        (self.conv_module, shape), (self.ffn2, shape), (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x, key_mask=None) -> Tensor:
        x = as_tensor(x)
        x = F.add(x, F.mul(self.ffn1(x), 0.5))
        if self.config["convolution_first"]:
            x = F.add(x, self.conv_module(x))
        y = self.self_attn_layer_norm(x)
        x = F.add(x, self.self_attn_dropout(self.self_attn(y, key_mask=key_mask)))
        if not self.config["convolution_first"]:
            x = F.add(x, self.conv_module(x))
        x = F.add(x, F.mul(self.ffn2(x), 0.5))
        return self.final_layer_norm(x)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class Conformer(Module):
    """A stack of ``num_layers`` :class:`ConformerLayer`, torchaudio's ``Conformer``:
    ``conformer(x, lengths)`` with ``x`` (batch, frames, input_dim) and ``lengths`` (batch,) in
    [1, frames] returns (y, lengths), y (batch, frames, input_dim); frames past an utterance's
    length are hidden from attention (their outputs are computed but meaningless)."""

    def __init__(self, input_dim: int, num_heads: int, ffn_dim: int, num_layers: int,
                 depthwise_conv_kernel_size: int, dropout: float = 0.0, use_group_norm: bool = False,
                 convolution_first: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.config = {"input_dim": positive_int(input_dim, "Conformer: input_dim"), "num_heads": num_heads,
                       "ffn_dim": ffn_dim, "num_layers": positive_int(num_layers, "Conformer: num_layers"),
                       "depthwise_conv_kernel_size": depthwise_conv_kernel_size, "dropout": dropout,
                       "use_group_norm": bool(use_group_norm), "convolution_first": bool(convolution_first)}
        self.conformer_layers = ModuleList([
            ConformerLayer(input_dim, ffn_dim, num_heads, depthwise_conv_kernel_size, dropout, use_group_norm,
                           convolution_first)
            for _ in range(num_layers)])

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(layer, shape) for layer in self.conformer_layers])
        self.built = True

    def forward(self, x, lengths) -> tuple[Tensor, np.ndarray]:
        x = as_tensor(x)
        dim = self.config["input_dim"]
        if x.ndim != 3 or x.shape[-1] != dim:
            raise ShapeError(f"Conformer: the input must be (batch, frames, {dim}), got shape {tuple(x.shape)}")
        mask = lengths_mask(lengths, x.shape[1], "Conformer")
        if mask.shape[0] != x.shape[0]:
            raise ShapeError(f"Conformer: lengths must hold one length per utterance ({x.shape[0]}), got "
                             f"{mask.shape[0]}")
        for layer in self.conformer_layers:
            x = layer(x, mask)
        return x, np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}
