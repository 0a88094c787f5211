"""PointNet++ classification (Qi et al. 2017, "PointNet++: Deep Hierarchical Feature Learning on
Point Sets in a Metric Space") on point clouds (B, N, 3 + d), channels last: coordinates
first, d extra features (normals) after them.

A set abstraction level picks S centres by farthest point sampling, groups around each the
first ``nsample`` points within ``radius`` (ball query), writes the group's coordinates
relative to the centre, joins the points' features, runs a shared MLP (a PointNet) over the
group and keeps the max over it:

    f'_s = max_{j in ball(c_s)} MLP([x_j - c_s, f_j])

Single-scale grouping (SSG) has one (radius, nsample, MLP) per level; multi-scale grouping
(MSG) several, their outputs joined. A last level groups all the points into one (the cloud
feature), and an MLP head with dropout classifies it. The sampling and grouping indices are
constants: gradients flow through the features only.
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

__all__ = ["PointNet2", "SetAbstraction", "pointnet2_msg", "pointnet2_ssg"]

# levels of the reference classifiers: (npoint, radii, nsamples, one MLP per radius); npoint None groups all
SSG_LEVELS = [(512, (0.2,), (32,), ((64, 64, 128),)), (128, (0.4,), (64,), ((128, 128, 256),)),
              (None, (), (), ((256, 512, 1024),))]
MSG_LEVELS = [(512, (0.1, 0.2, 0.4), (16, 32, 128), ((32, 32, 64), (64, 64, 128), (64, 96, 128))),
              (128, (0.2, 0.4, 0.8), (32, 64, 128), ((64, 64, 128), (128, 128, 256), (128, 128, 256))),
              (None, (), (), ((256, 512, 1024),))]


@register_with_arguments
class SetAbstraction(Module):
    """One level: (xyz (B, N, 3), features (B, N, ``in_features``) or None when 0) -> (centres
    (B, S, 3), features (B, S, sum of the MLPs' last widths)). ``npoint=None`` groups all the
    points around one centre at the origin (coordinates used as they are)."""

    def __init__(self, in_features: int, npoint: int | None, radii, nsamples, mlps, name: str | None = None):
        super().__init__(name=name)
        self.npoint = None if npoint is None else positive_int(npoint, "SetAbstraction: npoint")
        self.radii, self.nsamples = tuple(float(r) for r in radii), tuple(nsamples)
        mlps = tuple(mlps)
        if self.npoint is None and len(mlps) != 1:
            raise ValueError(f"SetAbstraction: grouping all points takes one MLP, got {len(mlps)}")
        if self.npoint is not None and not (len(self.radii) == len(self.nsamples) == len(mlps) >= 1):
            raise ValueError(f"SetAbstraction: radii {self.radii}, nsamples {self.nsamples} and {len(mlps)} MLPs "
                             "must be one per scale")
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 0:
            raise ValueError(f"SetAbstraction: in_features must be an int >= 0, got {in_features!r}")
        self.in_features = in_features
        self.mlps = ModuleList([SharedMLP(3 + in_features, widths) for widths in mlps])
        self.out_features = sum(mlp.out_features for mlp in self.mlps)
        self.built = True

    def forward(self, xyz, features=None):
        points = xyz.data if isinstance(xyz, Tensor) else xyz
        if self.npoint is None:
            grouped = as_tensor(points) if features is None else F.concat([as_tensor(points), features], axis=-1)
            return points[:, :1] * 0, F.max(self.mlps[0](grouped), axis=1)
        centres = F.group_points(points, F.farthest_point_sample(points, self.npoint)).data
        scales = []
        for radius, nsample, mlp in zip(self.radii, self.nsamples, self.mlps):
            idx = F.ball_query(radius, nsample, points, centres)
            grouped = as_tensor(F.group_points(points, idx).data - centres[:, :, None, :])
            if features is not None:
                grouped = F.concat([grouped, F.group_points(features, idx)], axis=-1)
            scales.append(F.max(mlp(grouped), axis=2))
        return centres, scales[0] if len(scales) == 1 else F.concat(scales, axis=-1)


@register_with_arguments
class PointNet2(Module):
    """PointNet++ classification: points (B, N, ``channels``) -> logits (B, ``num_classes``) through
    the set abstraction ``levels`` ((npoint, radii, nsamples, mlps) each, the last with npoint None)
    and an MLP head (``head_widths``, dropout)."""

    def __init__(self, num_classes: int, levels, channels: int = 3, head_widths=(512, 256), dropout: float = 0.5,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "PointNet2: num_classes")
        self.channels = positive_int(channels, "PointNet2: channels")
        if self.channels < 3:
            raise ValueError(f"PointNet2: channels must hold 3 coordinates first, got channels={channels}")
        levels = list(levels)
        if not levels or levels[-1][0] is not None:
            raise ValueError("PointNet2: the last level must group all points (npoint None)")
        built, features = [], self.channels - 3
        for level in levels:
            built.append(SetAbstraction(features, *level))
            features = built[-1].out_features
        self.levels = ModuleList(built)
        head = []
        for width in head_widths:
            head.append(SharedMLP(features, (width,)))
            features = width
        self.head = ModuleList(head)
        self.dropout = dropout_rate(dropout, "PointNet2")
        self.classifier = built_dense(features, self.num_classes)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.channels:
            raise input_error(self, x, f"points (batch, points, {self.channels})")
        xyz = x.data[..., :3]
        features = x[..., 3:] if self.channels > 3 else None
        for level in self.levels:
            if level.npoint is not None and level.npoint > xyz.shape[1]:
                raise input_error(self, x, f"at least npoint={level.npoint} points for {level._label()}")
            xyz, features = level(xyz, features)
        h = features
        for layer in self.head:
            h = dropout(layer(h), self.dropout, training=self.training)
        return self.classifier(h)


def pointnet2_ssg(num_classes: int, channels: int = 3, **kwargs) -> PointNet2:
    """The reference single-scale classifier (512 and 128 centres, radii 0.2 and 0.4)."""
    return PointNet2(num_classes, SSG_LEVELS, channels, **kwargs)


def pointnet2_msg(num_classes: int, channels: int = 3, **kwargs) -> PointNet2:
    """The reference multi-scale classifier (three radii per level)."""
    return PointNet2(num_classes, MSG_LEVELS, channels, **kwargs)
