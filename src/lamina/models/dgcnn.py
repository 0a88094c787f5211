"""DGCNN (Wang et al. 2019, "Dynamic Graph CNN for Learning on Point Clouds") on point clouds
(B, N, C), channels last.

EdgeConv links every point to its k nearest neighbours in the space of its *current*
features (the graph is rebuilt at every layer, hence "dynamic"; the point itself is among
them) and maps each edge with a shared MLP h, then takes the max over the neighbours:

    x'_i = max_{j in knn(i)} h([x_j - x_i, x_i])

The classifier chains EdgeConvs, joins their outputs, maps them with a shared Dense layer of
``emb_dims`` units, pools the points by max and by mean (joined), and ends with an MLP head
with dropout. Hidden layers are Dense (no bias) -> BatchNorm -> LeakyReLU(0.2), as in the
reference code.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.pointnet import SharedMLP, built_dense
from lamina.nn import ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import dropout_rate, input_error, positive_int
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module, as_tensor

__all__ = ["DGCNN", "EdgeConv", "edge_features"]

NEGATIVE_SLOPE = 0.2


def edge_features(x, k: int) -> Tensor:
    """[x_j - x_i, x_i] for the k nearest neighbours j of every point i of ``x`` (B, N, C), by
    distance between the rows of x: (B, N, k, 2C)."""
    x = as_tensor(x)
    neighbours = F.group_points(x, F.knn(x, k))                        # (B, N, k, C)
    centre = F.broadcast_to(F.expand_dims(x, 2), neighbours.shape)
    return F.concat([neighbours - centre, centre], axis=-1)


def _leaky_mlp(in_features: int, widths) -> SharedMLP:
    return SharedMLP(in_features, widths, use_bias=False, activation="leaky_relu", negative_slope=NEGATIVE_SLOPE)


@register_with_arguments
class EdgeConv(Module):
    """x'_i = max over the k nearest neighbours j of MLP([x_j - x_i, x_i]): (B, N, ``in_channels``)
    -> (B, N, widths[-1]); the MLP is Dense (no bias) -> BatchNorm -> LeakyReLU(0.2) per width."""

    def __init__(self, in_channels: int, widths, k: int = 20, name: str | None = None):
        super().__init__(name=name)
        widths = (widths,) if isinstance(widths, int) else tuple(widths)
        self.in_channels = positive_int(in_channels, "EdgeConv: in_channels")
        self.k = positive_int(k, "EdgeConv: k")
        self.mlp = _leaky_mlp(2 * self.in_channels, widths)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.in_channels:
            raise input_error(self, x, f"points (batch, points, {self.in_channels})")
        if x.shape[1] < self.k:
            raise input_error(self, x, f"at least k={self.k} points per cloud")
        return F.max(self.mlp(edge_features(x, self.k)), axis=2)


@register_with_arguments
class DGCNN(Module):
    """DGCNN classification: points (B, N, ``channels``) -> logits (B, ``num_classes``) (module
    docstring); ``edge_widths`` one EdgeConv each, defaults the paper's."""

    def __init__(self, num_classes: int, channels: int = 3, k: int = 20, edge_widths=(64, 64, 128, 256),
                 emb_dims: int = 1024, head_widths=(512, 256), dropout: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "DGCNN: num_classes")
        self.channels = positive_int(channels, "DGCNN: channels")
        self.k = positive_int(k, "DGCNN: k")
        self.dropout = dropout_rate(dropout, "DGCNN")
        widths = [positive_int(w, "DGCNN: an edge width") for w in edge_widths]
        ins = [self.channels] + widths[:-1]
        self.edge_convs = ModuleList([EdgeConv(n, w, self.k) for n, w in zip(ins, widths)])
        self.embedding = _leaky_mlp(sum(widths), (positive_int(emb_dims, "DGCNN: emb_dims"),))
        head_widths = [positive_int(w, "DGCNN: a head width") for w in head_widths]
        head_ins = [2 * emb_dims] + head_widths[:-1]
        self.head = ModuleList([_leaky_mlp(n, (w,)) for n, w in zip(head_ins, head_widths)])
        self.classifier = built_dense(head_widths[-1] if head_widths else 2 * emb_dims, self.num_classes)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.channels:
            raise input_error(self, x, f"points (batch, points, {self.channels})")
        if x.shape[1] < self.k:
            raise input_error(self, x, f"at least k={self.k} points per cloud")
        outputs = []
        for conv in self.edge_convs:
            x = conv(x)
            outputs.append(x)
        h = self.embedding(F.concat(outputs, axis=-1))
        h = F.concat([F.max(h, axis=1), F.mean(h, axis=1)], axis=-1)
        for layer in self.head:
            h = dropout(layer(h), self.dropout, training=self.training)
        return self.classifier(h)
