"""PointNet (Qi et al. 2017, "PointNet: Deep Learning on Point Sets for 3D Classification and
Segmentation") on point clouds x of shape (B, N, 3), channels last.

Every point goes through the same layers (a "shared MLP": Dense on the last axis, batch norm
over the batch and points, ReLU), and one symmetric function, the max over the points, makes
the cloud's feature, so the output does not depend on the order of the points:

    A_in  = TNet_3(x),        h = MLP_local(x A_in)                       (B, N, 64)
    A_feat = TNet_64(h),      l = h A_feat                                local point features
    g = max_n MLP_global(l)                                               (B, 1024) cloud feature
    classifier: logits = Dense(Dropout(MLP_head(g)))
    segmentation: per point, MLP_seg([l_n, g]) -> Dense -> (B, N, classes)

A T-Net predicts a k x k matrix from the cloud (shared MLP, max, MLP, a Dense layer started at
zero) and adds the identity, so each transform starts as the identity. The feature transform
is kept near a rotation by the regulariser ||I - A A^T||_F^2 (:func:`transform_regularizer`,
averaged over the batch), added to the loss with a small weight (0.001 in the paper).
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import BatchNorm, Dense, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import dropout_rate, input_error, positive_int
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module, as_tensor

__all__ = ["PointNet", "PointNetSegmentation", "SharedMLP", "TNet", "built_dense", "transform_regularizer"]


def _widths(values, what: str) -> tuple[int, ...]:
    return tuple(positive_int(w, what) for w in values)


def built_dense(n_in: int, units: int, use_bias: bool = True, kernel_init="he_uniform") -> Dense:
    """A Dense layer of ``units`` built for ``n_in`` input features."""
    layer = Dense(units, use_bias=use_bias, kernel_init=kernel_init)
    layer.build((None, n_in))
    return layer


def _built_norm(channels: int) -> BatchNorm:
    layer = BatchNorm()
    layer.build((None, channels))
    return layer


@register_with_arguments
class SharedMLP(Module):
    """Dense -> BatchNorm -> activation for each width, applied to the last axis of any
    (B, ..., ``in_features``) input, so every point (or edge) is mapped by the same weights.
    ``activation`` is 'relu' or 'leaky_relu' (slope ``negative_slope``)."""

    def __init__(self, in_features: int, widths, use_bias: bool = True, activation: str = "relu",
                 negative_slope: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"SharedMLP: activation must be 'relu' or 'leaky_relu', got {activation!r}")
        self.in_features = positive_int(in_features, "SharedMLP: in_features")
        self.widths = _widths(widths, "SharedMLP: a width")
        self.activation, self.negative_slope = activation, float(negative_slope)
        ins = (self.in_features,) + self.widths[:-1]
        self.dense = ModuleList([built_dense(n, w, use_bias) for n, w in zip(ins, self.widths)])
        self.norm = ModuleList([_built_norm(w) for w in self.widths])
        self.built = True

    @property
    def out_features(self) -> int:
        return self.widths[-1] if self.widths else self.in_features

    def forward(self, x) -> Tensor:
        for dense, norm in zip(self.dense, self.norm):
            x = norm(dense(x))
            x = F.relu(x) if self.activation == "relu" else F.leaky_relu(x, self.negative_slope)
        return x


def transform_regularizer(a) -> Tensor:
    """mean over the batch of ||I - A A^T||_F^2 for transforms ``a`` of shape (B, k, k)."""
    a = as_tensor(a)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ShapeError(f"transform_regularizer: got transforms of shape {tuple(a.shape)}; expected (batch, k, k)")
    k = a.shape[1]
    gap = backend.xp.eye(k, dtype=a.dtype) - F.matmul(a, F.transpose(a, 0, 2, 1))
    return F.mean(F.sum(gap * gap, axis=(1, 2)))


def _cloud(layer: Module, x, channels: int) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 3 or x.shape[2] != channels or x.shape[1] < 1:
        raise input_error(layer, x, f"points (batch, points, {channels})")
    return x


@register_with_arguments
class TNet(Module):
    """A (B, k, k) transform predicted from points (B, N, k): shared MLP ``widths``, max over the
    points, MLP ``head_widths``, a Dense layer of k^2 units started at zero, plus the identity."""

    def __init__(self, k: int, widths=(64, 128, 1024), head_widths=(512, 256), name: str | None = None):
        super().__init__(name=name)
        self.k = positive_int(k, "TNet: k")
        self.mlp = SharedMLP(self.k, widths)
        self.head = SharedMLP(self.mlp.out_features, head_widths)
        self.transform = built_dense(self.head.out_features, self.k * self.k, kernel_init="zeros")
        self.built = True

    def forward(self, x) -> Tensor:
        x = _cloud(self, x, self.k)
        flat = self.transform(self.head(F.max(self.mlp(x), axis=1)))
        return F.reshape(flat, (x.shape[0], self.k, self.k)) + backend.xp.eye(self.k, dtype=x.dtype)


class PointNetFeatures(Module):
    """The shared trunk: (B, N, channels) -> (local features (B, N, C_l), cloud feature (B, C_g),
    feature transform (B, C_l, C_l) or None). The input transform acts on the first three
    channels (coordinates); further channels (normals) pass unchanged."""

    def __init__(self, channels: int = 3, input_transform: bool = True, feature_transform: bool = True,
                 local_widths=(64, 64), global_widths=(64, 128, 1024), tnet_widths=(64, 128, 1024),
                 tnet_head_widths=(512, 256), name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "PointNet: channels")
        if input_transform and channels < 3:
            raise ValueError(f"PointNet: the input transform needs 3 coordinate channels, got channels={channels}")
        local_widths = _widths(local_widths, "PointNet: a local width")
        self.input_tnet = TNet(3, tnet_widths, tnet_head_widths) if input_transform else None
        self.local_mlp = SharedMLP(self.channels, local_widths)
        self.feature_tnet = TNet(local_widths[-1], tnet_widths, tnet_head_widths) if feature_transform else None
        self.global_mlp = SharedMLP(local_widths[-1], global_widths)
        self.built = True

    def forward(self, x):
        x = _cloud(self, x, self.channels)
        if self.input_tnet is not None:
            xyz = F.matmul(x[..., :3], self.input_tnet(x[..., :3]))
            x = xyz if self.channels == 3 else F.concat([xyz, x[..., 3:]], axis=-1)
        local = self.local_mlp(x)
        transform = None
        if self.feature_tnet is not None:
            transform = self.feature_tnet(local)
            local = F.matmul(local, transform)
        return local, F.max(self.global_mlp(local), axis=1), transform


@register_with_arguments
class PointNet(Module):
    """PointNet classification: points (B, N, ``channels``) -> logits (B, ``num_classes``) (module
    docstring). :meth:`forward_with_transform` also gives the feature transform for
    :func:`transform_regularizer`. Widths default to the paper's."""

    def __init__(self, num_classes: int, channels: int = 3, input_transform: bool = True,
                 feature_transform: bool = True, local_widths=(64, 64), global_widths=(64, 128, 1024),
                 head_widths=(512, 256), tnet_widths=(64, 128, 1024), tnet_head_widths=(512, 256),
                 dropout: float = 0.3, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "PointNet: num_classes")
        self.dropout = dropout_rate(dropout, "PointNet")
        self.features = PointNetFeatures(channels, input_transform, feature_transform, local_widths, global_widths,
                                         tnet_widths, tnet_head_widths)
        self.head = SharedMLP(self.features.global_mlp.out_features, head_widths)
        self.classifier = built_dense(self.head.out_features, self.num_classes)
        self.built = True

    def forward_with_transform(self, x):
        """(logits, feature transform (B, 64, 64) or None)."""
        _, cloud, transform = self.features(x)
        h = dropout(self.head(cloud), self.dropout, training=self.training)
        return self.classifier(h), transform

    def forward(self, x) -> Tensor:
        return self.forward_with_transform(x)[0]


@register_with_arguments
class PointNetSegmentation(Module):
    """PointNet segmentation: points (B, N, ``channels``) -> per-point logits (B, N, ``num_classes``)
    from each point's local feature joined with the cloud feature, [l_n, g], through the shared
    MLP ``seg_widths`` and a Dense layer."""

    def __init__(self, num_classes: int, channels: int = 3, input_transform: bool = True,
                 feature_transform: bool = True, local_widths=(64, 64), global_widths=(64, 128, 1024),
                 seg_widths=(512, 256, 128), tnet_widths=(64, 128, 1024), tnet_head_widths=(512, 256),
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "PointNetSegmentation: num_classes")
        self.features = PointNetFeatures(channels, input_transform, feature_transform, local_widths, global_widths,
                                         tnet_widths, tnet_head_widths)
        trunk = self.features
        self.seg_mlp = SharedMLP(trunk.local_mlp.out_features + trunk.global_mlp.out_features, seg_widths)
        self.classifier = built_dense(self.seg_mlp.out_features, self.num_classes)
        self.built = True

    def forward_with_transform(self, x):
        """(per-point logits, feature transform or None)."""
        local, cloud, transform = self.features(x)
        n = local.shape[1]
        spread = F.broadcast_to(F.expand_dims(cloud, 1), (cloud.shape[0], n, cloud.shape[1]))
        return self.classifier(self.seg_mlp(F.concat([local, spread], axis=-1))), transform

    def forward(self, x) -> Tensor:
        return self.forward_with_transform(x)[0]
