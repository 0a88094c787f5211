"""One layer of GPS, the general, powerful, scalable graph transformer (Rampasek et al. 2022):
a local message-passing step and global attention over all nodes of the same graph, run
side by side on x (N, C), summed, then a two-layer MLP:

    h_local = norm_1(conv(x, edge_index) + x)
    h_attn  = norm_2(MHA(x) + x)              each node attends to the nodes of its own graph
    h       = h_local + h_attn
    out     = norm_3(h + W_2 relu(W_1 h + b_1) + b_2)

MHA is multi-head scaled dot-product attention, heads of C / heads features:
softmax(Q K^T / sqrt(C / heads)) V per head, Q = x W_q + b_q (and K, V alike), the heads
concatenated and projected by W_o, b_o. The norms are layer norms and there is no dropout.
Positional and structural encodings (:func:`lamina.data.laplacian_pe`,
:func:`lamina.data.random_walk_pe`) are concatenated to the input features before the
first layer, as the paper does.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.dense import Dense, linear
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.graph.gin import GINConv
from lamina.nn.layer import layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.sequential import Sequential

__all__ = ["GPSLayer", "add_attention_parameters", "graph_attention"]

BLOCKED = -1e9                     # the score bias of a pair of nodes that may not attend


def add_attention_parameters(layer: Module, channels: int) -> None:
    """W_q, W_k, W_v, W_o (channels, channels) and their biases, on ``layer``."""
    dtype = backend.get_default_dtype()
    for part in ("query", "key", "value", "output"):
        layer.add_parameter(f"{part}_weight", initializers.xavier_uniform((channels, channels), dtype=dtype))
        layer.add_parameter(f"{part}_bias", initializers.zeros((channels,), dtype=dtype))


def _build_attention(layer: Module, input_shape) -> None:
    """Check that the nodes of ``input_shape`` are ``layer.channels`` wide and add the attention
    parameters for them."""
    c = node_shape(layer, input_shape)[1]
    if c != layer.channels:
        raise ValueError(f"{layer._label()}: node features of width {c}; expected channels = {layer.channels}")
    add_attention_parameters(layer, c)


def _graph_batch_inputs(layer: Module, x, edge_index, batch) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """x (N, layer.channels) and edge_index checked as :func:`graph_inputs` does, and ``batch``
    as one graph id per node (every node in graph 0 when None)."""
    x, edge_index, _ = graph_inputs(layer, x, edge_index, None, layer.channels)
    n = x.shape[0]
    batch = np.zeros(n, dtype=np.int64) if batch is None else np.asarray(getattr(batch, "data", batch))
    if batch.shape != (n,):
        raise ValueError(f"{layer._label()}: batch must give one graph id per node, shape ({n},), got "
                         f"{batch.shape}")
    return x, edge_index, batch


def _same_graph_bias(batch: np.ndarray, dtype) -> Tensor:
    """(N, N) score bias: 0 between nodes of one graph, ``BLOCKED`` across graphs."""
    return Tensor(np.where(batch[:, None] == batch[None, :], 0.0, BLOCKED).astype(dtype), dtype=dtype)


def graph_attention(layer: Module, x: Tensor, heads: int, bias: Tensor) -> Tensor:
    """softmax(Q K^T / sqrt(d) + bias) V per head over the rows of x (N, C), heads of
    d = C / heads features, concatenated and projected; ``bias`` (N, N) or (heads, N, N)."""
    n, channels = x.shape
    width = channels // heads
    q, k, v = (F.reshape(linear(x, getattr(layer, f"{p}_weight"), getattr(layer, f"{p}_bias")), (n, heads, width))
               for p in ("query", "key", "value"))
    scores = F.einsum("nhd,mhd->hnm", q, k) * (1.0 / np.sqrt(width))
    weights = F.softmax(scores + bias, axis=-1)
    mixed = F.reshape(F.einsum("hnm,mhd->nhd", weights, v), (n, channels))
    return linear(mixed, layer.output_weight, layer.output_bias)


@register_layer
class GPSLayer(Module):
    """``GPSLayer(channels, conv=None, heads=1)``: ``forward(x, edge_index, batch=None)`` on x
    (N, channels); ``batch`` (N,) says which graph each node is in (one graph when None).
    ``conv`` maps (x, edge_index) to (N, channels); by default a GIN convolution with a
    two-layer ReLU MLP. ``conv=False`` leaves out the local part (a plain transformer)."""

    def __init__(self, channels: int, conv: Module | None | bool = None, heads: int = 1, mlp_ratio: int = 2,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "GPSLayer: channels")
        self.heads = positive_int(heads, "GPSLayer: heads")
        if self.channels % self.heads:
            raise ValueError(f"GPSLayer: heads = {heads} must divide channels = {channels}")
        if conv is None:
            conv = GINConv(Sequential(Dense(self.channels, activation="relu"), Dense(self.channels)))
        if conv is not False and not isinstance(conv, Module):
            raise TypeError(f"GPSLayer: conv must be a Module, None or False, got {type(conv).__name__}")
        self.local = conv if conv is not False else None
        self.mlp_ratio = positive_int(mlp_ratio, "GPSLayer: mlp_ratio")
        self.mlp = Sequential(Dense(mlp_ratio * self.channels, activation="relu"), Dense(self.channels))
        self.norm_local, self.norm_attention, self.norm_out = LayerNorm(), LayerNorm(), LayerNorm()

    def build(self, input_shape) -> None:
        _build_attention(self, input_shape)
        self.built = True

    def attention(self, x: Tensor, batch: np.ndarray) -> Tensor:
        """Multi-head self-attention of x (N, C) restricted to pairs of nodes in one graph."""
        return graph_attention(self, x, self.heads, _same_graph_bias(batch, x.dtype))

    def forward(self, x, edge_index, batch=None) -> Tensor:
        x, edge_index, batch = _graph_batch_inputs(self, x, edge_index, batch)
        h = self.norm_attention(self.attention(x, batch) + x)
        if self.local is not None:
            h = h + self.norm_local(self.local(x, edge_index) + x)
        return self.norm_out(h + self.mlp(h))

    def compute_output_shape(self, input_shape):
        return node_shape(self, input_shape)

    def get_config(self) -> dict:
        conv = False if self.local is None else layer_to_config(self.local)
        return {"channels": self.channels, "conv": conv, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> GPSLayer:
        config = dict(config)
        if isinstance(config.get("conv"), dict):
            config["conv"] = layer_from_config(config["conv"])
        return cls(**config)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, local={type(self.local).__name__}"
