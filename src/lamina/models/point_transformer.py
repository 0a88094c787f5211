"""Point Transformer (Zhao et al. 2021, "Point Transformer") on point clouds (B, N, C), channels
last, coordinates first.

The point transformer layer is vector self-attention over the k nearest neighbours j of every
point i (the point itself among them), with a learned encoding of the relative positions:

    delta_ij = theta(p_i - p_j)                                       (two-layer MLP)
    y_i = sum_j softmax_j( gamma(phi(x_i) - psi(x_j) + delta_ij) ) * (alpha(x_j) + delta_ij)

phi, psi and alpha are linear maps, gamma a two-layer MLP, and the softmax runs over the
neighbours separately for every channel (the attention weights are vectors). theta and gamma
are Dense -> ReLU -> Dense here (no batch norm inside the layer).

* :class:`PointTransformerBlock`: Dense -> BatchNorm -> ReLU -> layer -> BatchNorm -> ReLU ->
  Dense -> BatchNorm, plus the input, then ReLU.
* :class:`TransitionDown`: farthest point sampling keeps N / ``stride`` points; the k nearest
  input points of each kept one are grouped as [p_j - p_i, x_j], mapped by a shared MLP and
  max-pooled (``stride=1`` only maps every point by the MLP).
* :class:`TransitionUp`: the coarse features are mapped by an MLP and carried to the denser
  points by inverse-distance weighting of their three nearest coarse points
  (:func:`interpolation_weights`), then added to the mapped skip features of the denser set.
* :class:`PointTransformerClassifier` (stages of TransitionDown + blocks, a mean over the
  points, an MLP head) and :class:`PointTransformerSegmentation` (the same encoder, then
  TransitionUp + blocks back to the input points, per-point logits);
  :func:`point_transformer_classifier` and :func:`point_transformer_segmentation` build the
  paper's sizes ('paper') or small ones ('small', 'tiny').

A cloud of fewer than k points uses all of its points as neighbours. Neighbour and sampling
indices are constants: gradients flow through features and positions.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.point_cloud import square_distances
from lamina.models.pointnet import SharedMLP, built_dense
from lamina.nn import BatchNorm, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import dropout_rate, input_error, positive_int
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module, as_tensor

__all__ = ["PointTransformerBlock", "PointTransformerClassifier", "PointTransformerLayer",
           "PointTransformerSegmentation", "TransitionDown", "TransitionUp", "interpolation_weights",
           "nearest_neighbours", "point_transformer_classifier", "point_transformer_segmentation"]

# (widths, blocks per stage, strides, k) of the presets; the paper's are those of its reference code
PRESETS = {
    "paper": ((32, 64, 128, 256, 512), (1, 2, 3, 5, 2), (1, 4, 4, 4, 4), 16),
    "small": ((32, 64, 128, 256), (1, 1, 1, 1), (1, 4, 4, 4), 16),
    "tiny": ((16, 32, 64), (1, 1, 1), (1, 4, 4), 8),
}


def _raw(x):
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def nearest_neighbours(queries, points, k: int):
    """Indices (B, M, k) of the k nearest rows of ``points`` (B, N, C) to every row of ``queries``
    (B, M, C) by squared Euclidean distance, nearest first (ties in index order)."""
    q, p = _raw(queries), _raw(points)
    if k > p.shape[1]:
        raise ValueError(f"nearest_neighbours: k={k} is more than the {p.shape[1]} points of each cloud")
    xp = backend.xp
    d = square_distances(q, p)
    return xp.argsort(d, axis=-1, kind="stable")[..., :k].astype(xp.int64)


def interpolation_weights(fine_xyz, coarse_xyz, eps: float = 1e-8):
    """(idx, w), each (B, n, 3): the three nearest coarse points of every fine point (all of them
    when there are fewer) and the weights w_k = (1 / (d_k + eps)) / sum_j 1 / (d_j + eps) of
    their Euclidean distances d."""
    fine, coarse = _raw(fine_xyz), _raw(coarse_xyz)
    idx = nearest_neighbours(fine, coarse, min(3, coarse.shape[1]))
    d = backend.xp.take_along_axis(square_distances(fine, coarse), idx, axis=-1)
    return idx, F.inverse_distance_weights(backend.xp.sqrt(d), eps)


def _built_norm(channels: int) -> BatchNorm:
    layer = BatchNorm()
    layer.build((None, channels))
    return layer


def _relu_mlp(n_in: int, hidden: int, n_out: int) -> ModuleList:
    return ModuleList([built_dense(n_in, hidden), built_dense(hidden, n_out)])


def _run_relu_mlp(mlp: ModuleList, x) -> Tensor:
    return mlp[1](F.relu(mlp[0](x)))


def _check_points(layer, xyz, features, channels: int):
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise input_error(layer, xyz, "positions (batch, points, 3)")
    if features.ndim != 3 or features.shape[:2] != xyz.shape[:2] or features.shape[2] != channels:
        raise input_error(layer, features, f"features (batch, points, {channels}) for positions of shape "
                                           f"{tuple(xyz.shape)}")
    if xyz.shape[1] < 1:
        raise input_error(layer, xyz, "at least 1 point per cloud")


@register_with_arguments
class PointTransformerLayer(Module):
    """Vector self-attention over the ``k`` nearest neighbours (module docstring): (positions
    (B, N, 3), features (B, N, ``in_channels``)) -> (B, N, ``out_channels``). ``idx`` (B, N, k)
    gives the neighbours; by default they are the k nearest by position (all the points
    of a cloud of fewer than k)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, k: int = 16, position_hidden: int = 3,
                 name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "PointTransformerLayer: in_channels")
        self.out_channels = positive_int(out_channels or in_channels, "PointTransformerLayer: out_channels")
        self.k = positive_int(k, "PointTransformerLayer: k")
        self.position_hidden = positive_int(position_hidden, "PointTransformerLayer: position_hidden")
        c = self.out_channels
        self.query = built_dense(self.in_channels, c)                  # phi
        self.key = built_dense(self.in_channels, c)                    # psi
        self.value = built_dense(self.in_channels, c)                  # alpha
        self.position = _relu_mlp(3, self.position_hidden, c)          # theta
        self.attention = _relu_mlp(c, c, c)                            # gamma
        self.built = True

    def forward(self, xyz, features, idx=None) -> Tensor:
        xyz, features = as_tensor(xyz), as_tensor(features)
        _check_points(self, xyz, features, self.in_channels)
        if idx is None:
            idx = F.knn(xyz.data, min(self.k, xyz.shape[1]))
        relative = F.expand_dims(xyz, 2) - F.group_points(xyz, idx)                   # p_i - p_j (B, N, k, 3)
        delta = _run_relu_mlp(self.position, relative)
        query = F.expand_dims(self.query(features), 2)
        keys = F.group_points(self.key(features), idx)
        values = F.group_points(self.value(features), idx)
        weights = F.softmax(_run_relu_mlp(self.attention, query - keys + delta), axis=2)
        return F.sum(weights * (values + delta), axis=2)


@register_with_arguments
class PointTransformerBlock(Module):
    """The residual block around a :class:`PointTransformerLayer` of ``channels`` (module
    docstring): (positions (B, N, 3), features (B, N, channels)) -> features of the same shape."""

    def __init__(self, channels: int, k: int = 16, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "PointTransformerBlock: channels")
        self.k = positive_int(k, "PointTransformerBlock: k")
        self.linear_in = built_dense(self.channels, self.channels, use_bias=False)
        self.norm_in = _built_norm(self.channels)
        self.transformer = PointTransformerLayer(self.channels, self.channels, self.k)
        self.norm_mid = _built_norm(self.channels)
        self.linear_out = built_dense(self.channels, self.channels, use_bias=False)
        self.norm_out = _built_norm(self.channels)
        self.built = True

    def forward(self, xyz, features, idx=None) -> Tensor:
        features = as_tensor(features)
        h = F.relu(self.norm_in(self.linear_in(features)))
        h = F.relu(self.norm_mid(self.transformer(xyz, h, idx)))
        return F.relu(self.norm_out(self.linear_out(h)) + features)


@register_with_arguments
class TransitionDown(Module):
    """(positions (B, N, 3), features (B, N, ``in_channels``)) -> (positions (B, N // stride, 3),
    features (B, N // stride, ``out_channels``)): farthest point sampling, then the max over the k
    nearest input points of MLP([p_j - p_i, x_j]); ``stride=1`` maps every point by the MLP."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 4, k: int = 16, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "TransitionDown: in_channels")
        self.out_channels = positive_int(out_channels, "TransitionDown: out_channels")
        self.stride = positive_int(stride, "TransitionDown: stride")
        self.k = positive_int(k, "TransitionDown: k")
        grouped = self.in_channels + (3 if self.stride > 1 else 0)
        self.mlp = SharedMLP(grouped, (self.out_channels,), use_bias=False)
        self.built = True

    def forward(self, xyz, features):
        xyz, features = as_tensor(xyz), as_tensor(features)
        _check_points(self, xyz, features, self.in_channels)
        if self.stride == 1:
            return xyz, self.mlp(features)
        npoint = max(1, xyz.shape[1] // self.stride)
        centres = F.group_points(xyz, F.farthest_point_sample(xyz.data, npoint))      # (B, S, 3)
        idx = nearest_neighbours(centres.data, xyz.data, min(self.k, xyz.shape[1]))    # (B, S, k)
        offsets = F.group_points(xyz, idx) - F.expand_dims(centres, 2)
        grouped = F.concat([offsets, F.group_points(features, idx)], axis=-1)
        return centres, F.max(self.mlp(grouped), axis=2)


@register_with_arguments
class TransitionUp(Module):
    """(coarse positions (B, m, 3), coarse features (B, m, ``coarse_channels``), fine positions
    (B, n, 3), fine features (B, n, ``fine_channels``)) -> (B, n, ``out_channels``):
    MLP_fine(fine) + the three-nearest inverse-distance interpolation of MLP_coarse(coarse)."""

    def __init__(self, coarse_channels: int, fine_channels: int, out_channels: int, name: str | None = None):
        super().__init__(name=name)
        self.coarse_channels = positive_int(coarse_channels, "TransitionUp: coarse_channels")
        self.fine_channels = positive_int(fine_channels, "TransitionUp: fine_channels")
        self.out_channels = positive_int(out_channels, "TransitionUp: out_channels")
        self.coarse_mlp = SharedMLP(self.coarse_channels, (self.out_channels,))
        self.fine_mlp = SharedMLP(self.fine_channels, (self.out_channels,))
        self.built = True

    def forward(self, coarse_xyz, coarse_features, fine_xyz, fine_features) -> Tensor:
        coarse_xyz, fine_xyz = as_tensor(coarse_xyz), as_tensor(fine_xyz)
        _check_points(self, coarse_xyz, as_tensor(coarse_features), self.coarse_channels)
        _check_points(self, fine_xyz, as_tensor(fine_features), self.fine_channels)
        idx, weights = interpolation_weights(fine_xyz, coarse_xyz)
        coarse = self.coarse_mlp(coarse_features)
        carried = F.three_interpolate(coarse, idx, weights.astype(coarse.data.dtype))
        return self.fine_mlp(fine_features) + carried


class _Encoder:
    """What the classifier and the segmentation network share: the stages' layers and run."""

    def _build_encoder(self, owner: str, channels: int, widths, blocks, strides, k: int) -> None:
        self.channels = positive_int(channels, f"{owner}: channels")
        if self.channels < 3:
            raise ValueError(f"{owner}: channels must hold 3 coordinates first, got channels={channels}")
        self.widths = tuple(positive_int(w, f"{owner}: a width") for w in widths)
        self.blocks = tuple(int(b) for b in blocks)
        self.strides = tuple(positive_int(s, f"{owner}: a stride") for s in strides)
        if not (len(self.widths) == len(self.blocks) == len(self.strides) >= 1) or min(self.blocks) < 0:
            raise ValueError(f"{owner}: widths {self.widths}, blocks {self.blocks} and strides {self.strides} must "
                             "be one per stage, blocks >= 0")
        self.k = positive_int(k, f"{owner}: k")
        ins = (self.channels,) + self.widths[:-1]
        self.down = ModuleList([TransitionDown(n, w, s, self.k) for n, w, s in zip(ins, self.widths, self.strides)])
        self.stages = ModuleList([ModuleList([PointTransformerBlock(w, self.k) for _ in range(b)])
                                  for w, b in zip(self.widths, self.blocks)])

    def _check_input(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.channels:
            raise input_error(self, x, f"points (batch, points, {self.channels})")
        return x

    def _encode(self, x: Tensor) -> list:
        """[(positions, features)] of every stage, finest first."""
        xyz, features, levels = x[..., :3], x, []
        for down, blocks in zip(self.down, self.stages):
            xyz, features = down(xyz, features)
            idx = F.knn(xyz.data, min(self.k, xyz.shape[1])) if len(blocks) else None
            for block in blocks:
                features = block(xyz, features, idx)
            levels.append((xyz, features))
        return levels


@register_with_arguments
class PointTransformerClassifier(_Encoder, Module):
    """Point Transformer classification: points (B, N, ``channels``) (coordinates first, all
    channels used as input features) -> logits (B, ``num_classes``): the encoder's stages, the
    mean over the points, then Dense -> BatchNorm -> ReLU -> dropout per head width."""

    def __init__(self, num_classes: int, channels: int = 3, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1),
                 strides=(1, 4, 4, 4), k: int = 16, head_widths=(256, 128), dropout: float = 0.5,
                 name: str | None = None):
        Module.__init__(self, name=name)
        self.num_classes = positive_int(num_classes, "PointTransformerClassifier: num_classes")
        self._build_encoder("PointTransformerClassifier", channels, widths, blocks, strides, k)
        self.dropout = dropout_rate(dropout, "PointTransformerClassifier")
        head, features = [], self.widths[-1]
        for width in head_widths:
            head.append(SharedMLP(features, (width,)))
            features = width
        self.head = ModuleList(head)
        self.classifier = built_dense(features, self.num_classes)
        self.built = True

    def forward(self, x) -> Tensor:
        x = self._check_input(x)
        h = F.mean(self._encode(x)[-1][1], axis=1)
        for layer in self.head:
            h = dropout(layer(h), self.dropout, training=self.training)
        return self.classifier(h)


@register_with_arguments
class PointTransformerSegmentation(_Encoder, Module):
    """Point Transformer segmentation: points (B, N, ``channels``) -> per-point logits (B, N,
    ``num_classes``): the encoder, then per finer stage a TransitionUp (to that stage's width) and
    its blocks, then Dense -> BatchNorm -> ReLU -> Dense on every point."""

    def __init__(self, num_classes: int, channels: int = 3, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1),
                 strides=(1, 4, 4, 4), k: int = 16, name: str | None = None):
        Module.__init__(self, name=name)
        self.num_classes = positive_int(num_classes, "PointTransformerSegmentation: num_classes")
        self._build_encoder("PointTransformerSegmentation", channels, widths, blocks, strides, k)
        if self.strides[0] != 1:
            raise ValueError(f"PointTransformerSegmentation: the first stride must be 1 (logits at every input "
                             f"point), got strides {self.strides}")
        self.up = ModuleList([TransitionUp(coarse, fine, fine) for coarse, fine in zip(self.widths[1:][::-1],
                                                                                      self.widths[:-1][::-1])])
        self.up_stages = ModuleList([ModuleList([PointTransformerBlock(w, self.k) for _ in range(b)])
                                     for w, b in zip(self.widths[:-1][::-1], self.blocks[:-1][::-1])])
        self.head = SharedMLP(self.widths[0], (self.widths[0],))
        self.classifier = built_dense(self.widths[0], self.num_classes)
        self.built = True

    def forward(self, x) -> Tensor:
        x = self._check_input(x)
        levels = self._encode(x)
        xyz, features = levels[-1]
        for up, blocks, (fine_xyz, fine_features) in zip(self.up, self.up_stages, levels[:-1][::-1]):
            features, xyz = up(xyz, features, fine_xyz, fine_features), fine_xyz
            idx = F.knn(xyz.data, min(self.k, xyz.shape[1])) if len(blocks) else None
            for block in blocks:
                features = block(xyz, features, idx)
        return self.classifier(self.head(features))


def _preset(size: str, owner: str):
    if size not in PRESETS:
        raise ValueError(f"{owner}: size must be one of {sorted(PRESETS)}, got {size!r}")
    return PRESETS[size]


def point_transformer_classifier(num_classes: int, channels: int = 3, size: str = "small",
                                 **kwargs) -> PointTransformerClassifier:
    """A :class:`PointTransformerClassifier` of the preset ``size`` ('paper', 'small' or 'tiny')."""
    widths, blocks, strides, k = _preset(size, "point_transformer_classifier")
    kwargs.setdefault("k", k)
    return PointTransformerClassifier(num_classes, channels, widths, blocks, strides, **kwargs)


def point_transformer_segmentation(num_classes: int, channels: int = 3, size: str = "small",
                                   **kwargs) -> PointTransformerSegmentation:
    """A :class:`PointTransformerSegmentation` of the preset ``size`` ('paper', 'small' or 'tiny')."""
    widths, blocks, strides, k = _preset(size, "point_transformer_segmentation")
    kwargs.setdefault("k", k)
    return PointTransformerSegmentation(num_classes, channels, widths, blocks, strides, **kwargs)
