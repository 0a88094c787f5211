"""Deformable DETR (Zhu et al. 2021, "Deformable DETR: Deformable Transformers for End-to-End
Object Detection") in the layout of the reference implementation (SenseTime's ``deformable_detr``).

    features   f_1 .. f_k = backbone(x)             k maps, finest first (ResNet: layer2 .. layer4)
    levels     s_l = GroupNorm(conv_1x1(f_l)); extra levels s_l = GroupNorm(conv_3x3/2(previous))
    positions  P_l: sine encoding of the cell centres, (i + 1/2) / H_l 2 pi (as :func:`deformable_position_encoding`),
               plus the learned level embedding e_l (``transformer.level_embed``)
    memory     m = encoder(concat of the flattened s_l)   multi-scale deformable self-attention,
               the reference points r the cell centres normalised by the valid ratios
               (:func:`lamina.functional.deformable_reference_points`)
    queries    (E_pos, t_0) = split(``query_embed``), reference points p_0 = sigmoid(W_r E_pos + b_r)
    decoder    t_j = decoder_j(t_{j-1}, E_pos, p_{j-1}, m): self-attention among the queries
               (E_pos added to their queries and keys), then deformable cross-attention
               around p_{j-1} (each level's points scaled by the valid ratios), then the FFN.
    outputs    logits_j = class_embed_j(t_j) (sigmoid per class, no "no object" class),
               boxes_j  = sigmoid(bbox_embed_j(t_j) + inverse_sigmoid(p_{j-1}))
               (a 2-d reference point shifts only the centre (cx, cy)).

With iterative bounding box refinement (``with_box_refine``) every decoder layer has its own
heads and the next reference is the detached box, p_j = stop_gradient(boxes_j) (4-d from
layer 1 on); otherwise the heads are shared and p_j = p_0.

Every encoder layer is post-norm (:class:`DeformableDetrEncoderLayer`); every decoder layer
(:class:`DeformableDetrDecoderLayer`)

    t = norm2(t + dropout2(self_attn(t + E_pos, t + E_pos, t)))
    t = norm1(t + dropout1(cross_attn(t + E_pos, p, m)))
    t = norm3(t + dropout4(linear2(dropout3(relu(linear1(t)))))).

Training (:class:`DeformableDetrCriterion`) matches queries to the ground truth by the
Hungarian algorithm on the cost

    C = cost_class (pos - neg)[label] + cost_bbox ||b - g||_1 - cost_giou GIoU(b, g),
    pos = alpha (1 - p)^gamma (-log p),  neg = (1 - alpha) p^gamma (-log(1 - p)),

and sums, for every decoder layer (``aux_loss``), the sigmoid focal loss of all queries and
classes (one-hot targets, zero for the unmatched queries) divided by the number of boxes,
and DETR's L1 and GIoU losses of the matched boxes (:class:`lamina.models.SetCriterion`).

``deformable_detr_resnet50``: ResNet-50 (frozen batch norms, conv1 and layer1 frozen), 4 levels
(layer2 .. layer4 and one extra), d = 256, 8 heads, 4 points, 6 + 6 layers, FFN 1024, 300
queries: 40,069,665 parameters with 91 classes, 39,847,265 of them trained (what the reference's
``n_parameters`` counts; 40M in the paper's Table 1); 40,849,660 (40,627,260 trained) with
``with_box_refine``, whose heads are one per decoder layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend, nn, vision
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.ms_deform_attn import deformable_reference_points, spatial_shape_list
from lamina.models.blocks import check_input, finish
from lamina.models.detection_base import DetectorBase
from lamina.models.detr import DetrAttention, DetrMLP, _build_resnet_body
from lamina.models.detr_common import SetCriterion, _pixel_detections, _sine_grid, _train_or_detect
from lamina.models.fpn import _resnet_body
from lamina.models.resnet import BLOCKS
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor
from lamina.nn.ms_deform_attn import DeformableTransformerEncoderLayer, MultiScaleDeformableAttention
from lamina.vision.matching import matching_cost

__all__ = ["DeformableDETR", "DeformableDetrConvBackbone", "DeformableDetrCriterion", "DeformableDetrDecoderLayer",
           "DeformableDetrEncoderLayer", "DeformableDetrResNetBackbone", "DeformableDetrTransformer",
           "deformable_detr_resnet50", "deformable_detr_small", "deformable_position_encoding", "focal_matching_cost",
           "inverse_sigmoid", "refine_boxes"]


def deformable_position_encoding(height: int, width: int, num_pos_feats: int, temperature: float = 10000.0,
                                 scale: float = 2 * math.pi, dtype=np.float64) -> np.ndarray:
    """The reference's sine encoding of an (height, width) map: (height, width, 2 F), the F
    features of the row then the F of the column, the row at y = (i + 1/2) / (height + 1e-6)
    scale (the column alike); with t_k = temperature^(2 floor(k / 2) / F), feature k is
    sin(y / t_k) for even k, cos(y / t_k) for odd k."""
    if num_pos_feats < 2 or num_pos_feats % 2:
        raise ValueError(f"deformable_position_encoding: num_pos_feats must be even and >= 2, got {num_pos_feats!r}")
    y, x = ((np.arange(size) + 0.5) / (size + 1e-6) * scale for size in (height, width))
    return _sine_grid(y, x, num_pos_feats, temperature, dtype)


def inverse_sigmoid(x, eps: float = 1e-5) -> Tensor:
    """log(x1 / x2), x1 = max(x, eps), x2 = max(1 - x, eps), x clipped to [0, 1] (the reference's)."""
    x = F.clip(as_tensor(x), 0.0, 1.0)
    return F.log(F.clip(x, eps, None)) - F.log(F.clip(1.0 - x, eps, None))


def refine_boxes(deltas, reference) -> Tensor:
    """sigmoid(deltas + inverse_sigmoid(reference)) for boxes ``deltas`` (..., 4) and a
    reference (..., 4) box or (..., 2) point (which shifts only the centre)."""
    deltas, reference = as_tensor(deltas), as_tensor(reference)
    logit = inverse_sigmoid(reference)
    if reference.shape[-1] == 2:
        logit = F.concat([logit, Tensor(backend.xp.zeros(logit.shape, dtype=logit.dtype))], axis=-1)
    return F.sigmoid(deltas + logit)


# -- layers ------------------------------------------------------------------------------------------------


@register_with_arguments
class DeformableDetrEncoderLayer(DeformableTransformerEncoderLayer):
    """One encoder layer (post-norm; module docstring) without a level embedding of its own:
    ``layer(src, pos, reference_points, spatial_shapes, level_start_index=None, padding_mask=None)``
    with ``pos`` already holding the level embeddings. Returns (N, S, d)."""

    default_name = "encoder_layer"

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            if layer is not self.self_attn:
                layer.build((None, None, self.d_ffn if layer is self.linear2 else self.d_model))
            layer.built = True
        self.built = True

    def level_positions(self, pos: Tensor, shapes) -> Tensor:
        return pos


@register_with_arguments
class DeformableDetrDecoderLayer(Module):
    """One decoder layer (module docstring), the reference's names: ``cross_attn`` (a
    :class:`lamina.nn.MultiScaleDeformableAttention`), ``self_attn`` (PyTorch's
    MultiheadAttention layout), ``linear1``, ``linear2``, ``norm1`` .. ``norm3``.

    ``layer(tgt, query_pos, reference_points, src, spatial_shapes, level_start_index=None,
    padding_mask=None)``: tgt and query_pos (N, Q, d), reference_points (N, Q, L, 2 or 4)
    already scaled by the valid ratios, src the memory (N, S, d). Returns (N, Q, d)."""

    default_name = "decoder_layer"

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.d_model, self.d_ffn = int(d_model), int(d_ffn)
        self.cross_attn = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points, name="cross_attn")
        self.self_attn = DetrAttention(d_model, n_heads, dropout, name="self_attn")
        self.linear1 = nn.Dense(d_ffn, kernel_init="xavier_uniform", name="linear1")
        self.linear2 = nn.Dense(d_model, kernel_init="xavier_uniform", name="linear2")
        for i in range(1, 5):
            setattr(self, f"dropout{i}", nn.Dropout(dropout, name=f"dropout{i}"))
        for i in range(1, 4):
            setattr(self, f"norm{i}", nn.LayerNorm(-1, name=f"norm{i}"))
        self.build()

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            if layer is not self.cross_attn:
                layer.build((None, None, self.d_ffn if layer is self.linear2 else self.d_model))
            layer.built = True
        self.built = True

    def forward(self, tgt, query_pos, reference_points, src, spatial_shapes, level_start_index=None,
                padding_mask=None) -> Tensor:
        tgt, query_pos = as_tensor(tgt), as_tensor(query_pos)
        with_pos = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout2(self.self_attn(with_pos, with_pos, tgt)))
        attended = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, level_start_index,
                                   padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attended))
        update = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(update))


class _Layers(Module):
    """A ModuleList ``layers`` (the reference's ``encoder.layers`` / ``decoder.layers``)."""

    def __init__(self, layers: Sequence[Module], name: str | None = None):
        super().__init__(name=name)
        self.layers = nn.ModuleList(layers)
        self.built = True


@register_with_arguments
class DeformableDetrTransformer(Module):
    """The encoder, the decoder, ``level_embed`` (L, d) and ``reference_points`` (Dense d -> 2).

    ``transformer(srcs, pos_embeds, query_embed, bbox_embeds=None, valid_ratios=None)``: srcs and
    pos_embeds lists of L maps (N, H_l, W_l, d), query_embed (Q, 2 d) (positions, then the
    initial targets), ``bbox_embeds`` one box head per decoder layer for iterative refinement
    (None: no refinement), valid_ratios (N, L, 2) (None: all 1). Returns (hs, references): the
    outputs (N, Q, d) of each decoder layer and the reference (N, Q, 2 or 4) each layer's boxes
    refine (module docstring)."""

    default_name = "transformer"

    def __init__(self, d_model: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.1,
                 num_feature_levels: int = 4, n_points: int = 4, name: str | None = "transformer"):
        super().__init__(name=name)
        if d_model % 4:
            raise ValueError(f"DeformableDetrTransformer: d_model must be a multiple of 4, got {d_model!r}")
        self.d_model, self.num_feature_levels = int(d_model), int(num_feature_levels)
        sizes = (d_model, dim_feedforward, dropout, num_feature_levels, num_heads, n_points)
        self.encoder = _Layers([DeformableDetrEncoderLayer(*sizes, name=str(i)) for i in range(num_encoder_layers)],
                               name="encoder")
        self.decoder = _Layers([DeformableDetrDecoderLayer(*sizes, name=str(i)) for i in range(num_decoder_layers)],
                               name="decoder")
        self.reference_points = nn.Dense(2, kernel_init="xavier_uniform", name="reference_points")
        self.reference_points.build((None, None, d_model))
        self.reference_points.built = True
        dtype = backend.get_default_dtype()
        self.add_parameter("level_embed", initializers.normal(std=1.0)((num_feature_levels, d_model), d_model,
                                                                        d_model, dtype))
        self.built = True

    def forward(self, srcs, pos_embeds, query_embed, bbox_embeds=None, valid_ratios=None):
        n, d = srcs[0].shape[0], self.d_model
        shapes = spatial_shape_list([tuple(s.shape[1:3]) for s in srcs], self._label())
        if len(shapes) != self.num_feature_levels or len(pos_embeds) != len(shapes):
            raise ValueError(f"{self._label()}: expected {self.num_feature_levels} maps and positions, got "
                             f"{len(srcs)} and {len(pos_embeds)}")
        flat = F.concat([F.reshape(as_tensor(s), n, -1, d) for s in srcs], axis=1)
        pos = F.concat([F.reshape(as_tensor(p), -1, h * w, d) + self.level_embed[level]
                        for level, (p, (h, w)) in enumerate(zip(pos_embeds, shapes))], axis=1)
        ratios = np.ones((n, len(shapes), 2)) if valid_ratios is None else np.asarray(valid_ratios)
        memory = flat
        encoder_points = deformable_reference_points(shapes, ratios, dtype=flat.dtype)
        for layer in self.encoder.layers:
            memory = layer(memory, pos, encoder_points, shapes)
        query_embed = as_tensor(query_embed)
        query_pos = F.broadcast_to(query_embed[:, :d], (n, query_embed.shape[0], d))
        tgt = F.broadcast_to(query_embed[:, d:], (n, query_embed.shape[0], d))
        reference = F.sigmoid(self.reference_points(query_pos))
        ratio_tensor = Tensor(backend.xp.asarray(ratios.astype(flat.dtype)))
        hs, references = [], []
        for j, layer in enumerate(self.decoder.layers):
            scale = ratio_tensor if reference.shape[-1] == 2 else F.concat([ratio_tensor, ratio_tensor], axis=-1)
            points = F.reshape(reference, n, -1, 1, reference.shape[-1]) * F.reshape(scale, n, 1, len(shapes), -1)
            tgt = layer(tgt, query_pos, points, memory, shapes)
            hs.append(tgt)
            references.append(reference)
            if bbox_embeds is not None:
                reference = refine_boxes(bbox_embeds[j](tgt), reference).detach()
        return hs, references


# -- backbones ---------------------------------------------------------------------------------------------


@register_with_arguments
class DeformableDetrConvBackbone(Module):
    """A small backbone for tests and toys: 3x3 stride-2 ReLU convolutions of ``widths``;
    ``forward(images)`` gives the maps of the last ``levels`` of them (finest first),
    ``num_channels`` their widths."""

    default_name = "backbone"

    def __init__(self, widths: Sequence[int] = (16, 32, 32), levels: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.widths, self.levels = [int(w) for w in widths], int(levels)
        if not 1 <= self.levels <= len(self.widths):
            raise ValueError(f"DeformableDetrConvBackbone: levels must lie in 1..{len(self.widths)}, got {levels!r}")
        self.num_channels = self.widths[-self.levels:]
        self.convs = nn.ModuleList(nn.Conv2D(w, 3, stride=2, padding=1, activation="relu", name=str(i))
                                   for i, w in enumerate(self.widths))

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        for conv, width in zip(self.convs, self.widths):
            conv.build((None, None, None, channels))
            conv.built, channels = True, width
        self.built = True

    def forward(self, images) -> list[Tensor]:
        maps, x = [], as_tensor(images)
        for conv in self.convs:
            x = conv(x)
            maps.append(x)
        return maps[-self.levels:]


@register_with_arguments
class DeformableDetrResNetBackbone(Module):
    """A ResNet ``body`` (torchvision's names, frozen batch norms) giving the maps of layer2 ..
    layer4 (strides 8, 16, 32); ``trainable_layers`` of conv1, layer1 .. layer4 trained, the
    last ones (3: layer2 .. layer4, as the reference)."""

    default_name = "backbone"

    def __init__(self, depth: int = 50, trainable_layers: int = 3, name: str | None = None):
        super().__init__(name=name)
        if depth not in BLOCKS or not 0 <= int(trainable_layers) <= 5:
            raise ValueError(f"DeformableDetrResNetBackbone: need depth in {sorted(BLOCKS)} and trainable_layers in "
                             f"0..5, got {depth!r} and {trainable_layers!r}")
        self.depth, self.trainable_layers = int(depth), int(trainable_layers)
        expansion = BLOCKS[self.depth][0].expansion
        self.num_channels = [64 * 2 ** k * expansion for k in (1, 2, 3)]
        self.body = _resnet_body(self.depth, 64, 4, True)

    def build(self, input_shape) -> None:
        _build_resnet_body(self.body, input_shape, self.trainable_layers)
        self.built = True

    def forward(self, images) -> list[Tensor]:
        maps, x = [], as_tensor(images)
        for name, layer in self.body.named_children():
            x = layer(x)
            if name in ("layer2", "layer3", "layer4"):
                maps.append(x)
        return maps


# -- loss --------------------------------------------------------------------------------------------------


def focal_matching_cost(logits, boxes, target_labels, target_boxes, cost_class: float = 2.0,
                        cost_bbox: float = 5.0, cost_giou: float = 2.0, alpha: float = 0.25,
                        gamma: float = 2.0) -> np.ndarray:
    """The matching cost C (Q, n) of the module docstring for one image: ``logits`` (Q, C)
    (one sigmoid per class), boxes (cx, cy, w, h)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(target_labels).reshape(-1).astype(np.int64)
    cost = matching_cost(logits, boxes, labels, target_boxes, 0.0, cost_bbox, cost_giou)
    p = 1.0 / (1.0 + np.exp(-logits))
    negative = (1 - alpha) * p ** gamma * -np.log(1 - p + 1e-8)
    positive = alpha * (1 - p) ** gamma * -np.log(p + 1e-8)
    return cost + cost_class * (positive - negative)[:, labels]


class _FocalMatcher:
    def __init__(self, cost_class: float, cost_bbox: float, cost_giou: float, alpha: float):
        self.costs, self.alpha = (cost_class, cost_bbox, cost_giou), alpha

    def __call__(self, logits, boxes, targets) -> list[tuple[np.ndarray, np.ndarray]]:
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s

        matches = []
        for image_logits, image_boxes, target in zip(np.asarray(logits), np.asarray(boxes), targets):
            cost = focal_matching_cost(image_logits, image_boxes, target["labels"], target["boxes"], *self.costs,
                                       alpha=self.alpha)
            queries, objects = linear_sum_assignment(cost)
            matches.append((queries.astype(np.int64), objects.astype(np.int64)))
        return matches


class DeformableDetrCriterion(SetCriterion):
    """Deformable DETR's loss (module docstring) of outputs {'pred_logits' (N, Q, C),
    'pred_boxes' (N, Q, 4), 'aux_outputs'}: 'loss_ce' (focal, x ``cls_weight``), 'loss_bbox',
    'loss_giou' and their '_i' copies for the auxiliary outputs; their sum is the loss."""

    def __init__(self, num_classes: int, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 focal_alpha: float = 0.25, cls_weight: float = 2.0, bbox_weight: float = 5.0,
                 giou_weight: float = 2.0):
        super().__init__(num_classes, _FocalMatcher(cost_class, cost_bbox, cost_giou, focal_alpha), 0.0, cls_weight,
                         bbox_weight, giou_weight)
        self.focal_alpha = float(focal_alpha)

    def class_loss(self, logits: Tensor, matches, targets: Sequence[dict], num_boxes: int) -> Tensor:
        """The sigmoid focal loss of every (query, class) score against the matched labels, / ``num_boxes``."""
        onehot = np.zeros(logits.shape, dtype=logits.dtype)
        for image, ((queries, objects), target) in enumerate(zip(matches, targets)):
            onehot[image, queries, np.asarray(target["labels"])[objects]] = 1.0
        return vision.sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, reduction="sum") / num_boxes


# -- the model ---------------------------------------------------------------------------------------------


def _projection(d: int, groups: int, extra: bool, name: str) -> nn.Sequential:
    """A level's ``input_proj``: a 1x1 convolution (a 3x3 stride-2 one for an extra level), GroupNorm."""
    conv = (nn.Conv2D(d, 3, stride=2, padding=1, kernel_init="xavier_uniform", name="0") if extra
            else nn.Conv2D(d, 1, kernel_init="xavier_uniform", name="0"))
    return nn.Sequential(conv, nn.GroupNorm(groups, name="1"), name=name)


@register_with_arguments(modules=("backbone",))
class DeformableDETR(DetectorBase):
    """Deformable DETR (module docstring) on a ``backbone`` mapping NHWC images to a list of maps
    (finest first) and telling their channels in ``num_channels``.

    ``model(images, targets)`` in training mode gives :class:`DeformableDetrCriterion`'s
    weighted losses (boxes (x1, y1, x2, y2) in pixels, labels in [0, num_classes)); in
    evaluation mode, per image, the ``detections_per_img`` best (query, class) pairs by sigmoid
    score above ``score_thresh``: 'boxes' (pixels), 'scores', 'labels'. :meth:`raw_outputs`
    gives the reference's outputs. ``num_feature_levels`` beyond the backbone's maps are made by
    3x3 stride-2 convolutions; ``norm_groups`` the GroupNorm groups of ``input_proj`` (32)."""

    default_name = "deformable_detr"
    module_options = ("backbone",)

    def __init__(self, backbone: Module, num_classes: int, hidden_dim: int = 256, num_heads: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dim_feedforward: int = 1024,
                 dropout: float = 0.1, num_queries: int = 300, num_feature_levels: int = 4, n_points: int = 4,
                 with_box_refine: bool = False, aux_loss: bool = True, norm_groups: int = 32,
                 image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), cost_class: float = 2.0,
                 cost_bbox: float = 5.0, cost_giou: float = 2.0, focal_alpha: float = 0.25, cls_weight: float = 2.0,
                 bbox_weight: float = 5.0, giou_weight: float = 2.0, score_thresh: float = 0.0,
                 detections_per_img: int = 100, name: str | None = None):
        super().__init__(num_classes, image_mean, image_std, name=name)
        if not hasattr(backbone, "num_channels") or len(backbone.num_channels) > num_feature_levels:
            raise ValueError(f"DeformableDETR: the backbone must tell at most num_feature_levels={num_feature_levels} "
                             f"map widths in 'num_channels', got {type(backbone).__name__}")
        self.backbone, self.hidden_dim, self.num_queries = backbone, int(hidden_dim), int(num_queries)
        self.with_box_refine, self.aux_loss = bool(with_box_refine), bool(aux_loss)
        self.score_thresh, self.detections_per_img = float(score_thresh), int(detections_per_img)
        self.transformer = DeformableDetrTransformer(hidden_dim, num_heads, num_encoder_layers, num_decoder_layers,
                                                     dim_feedforward, dropout, num_feature_levels, n_points)
        d, heads = self.hidden_dim, num_decoder_layers if with_box_refine else 1
        self.class_embed = nn.ModuleList(nn.Dense(num_classes, name=str(i)) for i in range(heads))
        self.bbox_embed = nn.ModuleList(DetrMLP(d, d, 4, 3, name=str(i)) for i in range(heads))
        self.query_embed = nn.Embedding(num_queries, 2 * d, name="query_embed")
        self.input_proj = nn.ModuleList(_projection(d, norm_groups, level >= len(backbone.num_channels), str(level))
                                        for level in range(num_feature_levels))
        self.criterion = DeformableDetrCriterion(num_classes, cost_class, cost_bbox, cost_giou, focal_alpha,
                                                 cls_weight, bbox_weight, giou_weight)

    def build(self, input_shape) -> None:
        shape = self._image_shape(input_shape)
        self.backbone.build(shape)
        self.backbone.built = True
        d, widths = self.hidden_dim, list(self.backbone.num_channels)
        for level, proj in enumerate(self.input_proj):
            channels = widths[level] if level < len(widths) else (widths[-1] if level == len(widths) else d)
            proj.build((None, None, None, channels))
            proj.built = True
        prior = -math.log((1 - 0.01) / 0.01)
        for head in self.class_embed:
            head.build((None, None, d))
            head.bias.data[...] = prior
            head.built = True
        for head in self.bbox_embed:
            head.build()
            last = head.layers[-1]
            last.weight.data[...] = 0.0
            last.bias.data[...] = 0.0
            head.built = True
        self.bbox_embed[0].layers[-1].bias.data[2:] = -2.0
        self.query_embed.build((None,))
        self.query_embed.built = True
        self.build_input_shape = shape
        self.built = True

    def raw_outputs(self, images) -> dict:
        """The reference's outputs for normalized NHWC ``images``: 'pred_logits' (N, Q, C) and
        'pred_boxes' (N, Q, 4) normalised (cx, cy, w, h) of the last decoder layer, and
        'aux_outputs' (with ``aux_loss``) those of the earlier layers."""
        features = self.backbone(images)
        srcs = []
        for level, proj in enumerate(self.input_proj):
            if level < len(features):
                srcs.append(proj(features[level]))
            else:
                srcs.append(proj(features[-1] if level == len(features) else srcs[-1]))
        d = self.hidden_dim
        pos = [Tensor(backend.xp.asarray(deformable_position_encoding(s.shape[1], s.shape[2], d // 2,
                                                                      dtype=s.dtype))[None]) for s in srcs]
        layers = len(self.transformer.decoder.layers)
        heads = (lambda j: j) if self.with_box_refine else (lambda j: 0)
        hs, references = self.transformer(srcs, pos, self.query_embed.weight,
                                          [self.bbox_embed[heads(j)] for j in range(layers)]
                                          if self.with_box_refine else None)
        logits = [self.class_embed[heads(j)](hs[j]) for j in range(layers)]
        boxes = [refine_boxes(self.bbox_embed[heads(j)](hs[j]), references[j]) for j in range(layers)]
        outputs = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            outputs["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return outputs

    def forward(self, images, targets=None):
        return _train_or_detect(self, images, targets)

    def postprocess(self, outputs: dict, image_size: tuple[int, int]) -> list[dict[str, np.ndarray]]:
        """Per image the best (query, class) pairs (class docstring) for an image of (height, width)."""
        logits = outputs["pred_logits"].numpy().astype(np.float64)
        boxes = outputs["pred_boxes"].numpy().astype(np.float64)
        scores_all = 1.0 / (1.0 + np.exp(-logits))
        classes = logits.shape[-1]
        detections = []
        for image_scores, image_boxes in zip(scores_all, boxes):
            flat = image_scores.reshape(-1)
            order = np.argsort(-flat, kind="stable")[:self.detections_per_img]
            order = order[flat[order] > self.score_thresh]
            detections.append(_pixel_detections(image_boxes[order // classes], flat[order], order % classes,
                                               image_size))
        return detections


def deformable_detr_small(num_classes: int = 2, input_shape: tuple[int, int, int] = (32, 32, 3),
                          **kwargs) -> DeformableDETR:
    """A small Deformable DETR for tests and toys (unbuilt): a 3-convolution backbone
    (:class:`DeformableDetrConvBackbone`, widths 16, 32, 32; its last 2 maps, strides 4 and 8),
    d = 32, 4 heads, 2 points, 2 levels, 1 encoder and 2 decoder layers, FFN 64, 8 queries,
    GroupNorm with 8 groups, no dropout."""
    input_shape = check_input(input_shape, "deformable_detr_small")
    options = {"hidden_dim": 32, "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 2,
               "dim_feedforward": 64, "dropout": 0.0, "num_queries": 8, "num_feature_levels": 2, "n_points": 2,
               "norm_groups": 8, "image_mean": (0.5,) * input_shape[2], "image_std": (0.5,) * input_shape[2],
               **kwargs}
    return finish(DeformableDETR(DeformableDetrConvBackbone((16, 32, 32), 2), num_classes, **options), input_shape)


def deformable_detr_resnet50(num_classes: int = 91, with_box_refine: bool = False,
                             input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> DeformableDETR:
    """The reference's Deformable DETR (module docstring; unbuilt): ResNet-50, 4 levels, d = 256,
    8 heads, 4 points, 6 + 6 layers, FFN 1024, 300 queries, optionally with box refinement."""
    input_shape = check_input(input_shape, "deformable_detr_resnet50")
    return finish(DeformableDETR(DeformableDetrResNetBackbone(50, 3), num_classes, with_box_refine=with_box_refine,
                                 **kwargs), input_shape)
