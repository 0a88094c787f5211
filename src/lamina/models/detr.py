"""DETR (Carion et al. 2020, "End-to-End Object Detection with Transformers") in the layout of
Facebook's ``detr_resnet50``: detection as the prediction of a set.

    features  f = backbone(x)                       (N, h, w, C), a ResNet's last stage
    tokens    s = input_proj(f) as (N, h w, d)      a 1x1 convolution to d = hidden_dim
    positions P (h w, d): the sine encoding of each cell's (y, x) (:func:`sine_position_encoding`)
    memory    m = encoder(s, P)                     post-norm layers, P added to queries and keys
    queries   o_l = decoder_l(0, m, P, E_q)         num_queries learned object queries E_q
                                                    (``query_embed``) added to the queries and
                                                    keys of every decoder attention; each layer's
                                                    output through the shared final ``norm``
    outputs   class_embed(o_l): C + 1 logits (the last is "no object"),
              sigmoid(bbox_embed(o_l)): (cx, cy, w, h) relative to the image size

Every encoder layer (``transformer.encoder.layers.N``) computes

    x = norm1(x + dropout1(self_attn(x + P, x + P, x)))
    x = norm2(x + dropout2(linear2(dropout(relu(linear1(x))))))

and every decoder layer (``transformer.decoder.layers.N``)

    t = norm1(t + dropout1(self_attn(t + E_q, t + E_q, t)))
    t = norm2(t + dropout2(multihead_attn(t + E_q, m + P, m)))
    t = norm3(t + dropout3(linear2(dropout(relu(linear1(t))))))

Training matches the predictions to the ground truth one to one (:class:`lamina.vision.HungarianMatcher`)
and sums, for the last layer's outputs and (``aux_loss``) those of every earlier decoder layer
(:class:`SetCriterion`):

    loss_ce   = cross-entropy of all queries, the unmatched ones labelled "no object", each
                weighted by w_c (1 for the classes, eos_coef for "no object"), divided by
                the sum of the weights;
    loss_bbox = sum over matched pairs of ||b - g||_1 / n_boxes;
    loss_giou = sum over matched pairs of (1 - GIoU(b, g)) / n_boxes,

n_boxes the number of ground-truth boxes of the batch (at least 1).

Names and weights follow Facebook's state dict (``backbone.0.body.layer1.0.conv1.weight``,
``input_proj``, ``query_embed.weight``, ``transformer.encoder.layers.0.self_attn.in_proj_weight``,
``...out_proj.weight``, ``transformer.decoder.layers.0.multihead_attn.*``, ``transformer.decoder.norm``,
``class_embed``, ``bbox_embed.layers.0`` .. ``2``): :func:`lamina.models.load_torchvision_state_dict`
loads it, the attention's ``in_proj_weight`` being kept in PyTorch's (3d, d) layout. Unlike
Facebook's, images of a batch share one size (no padding mask).

``detr_resnet50``: ResNet-50 with frozen batch norms, d = 256, 8 heads, 6 + 6 layers, a
feed-forward width of 2048, 100 queries; 41,524,768 parameters with 91 classes, of which
41,302,368 are trained (the stem and layer1 are frozen, as in Facebook's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.models.blocks import check_input, finish
from lamina.models.detection_base import DetectorBase
from lamina.models.detr_common import SetCriterion, _pixel_detections, _train_or_detect, sine_position_encoding
from lamina.models.fpn import RESNET_STAGES, _resnet_body
from lamina.models.resnet import BLOCKS
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.layer import input_error, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.vision.matching import HungarianMatcher

__all__ = ["DETR", "DetrAttention", "DetrBackbone", "DetrDecoderLayer", "DetrEncoderLayer", "DetrMLP",
           "DetrTransformer", "SetCriterion", "detr_resnet50", "sine_position_encoding"]


def _feature_shape(d: int) -> tuple:
    return (None, None, d)


@register_layer
class DetrAttention(Module):
    """Multi-head attention with PyTorch's ``nn.MultiheadAttention`` parameters:
    ``in_proj_weight`` (3 d, d) in PyTorch's layout (rows [W_q; W_k; W_v]), ``in_proj_bias``
    (3 d,), and ``out_proj`` (a Dense layer). ``attn(query, key, value)`` on (N, T, d) inputs:

        head_i = softmax(Q_i K_i^T / sqrt(d / h)) V_i,  Q = query W_q^T + b_q (K, V alike),
        out = out_proj(concat(head_1, ..., head_h)),

    dropout on the attention weights in training mode."""

    default_name = "attention"
    torch_unchanged = ("in_proj_weight",)

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "DetrAttention: embed_dim")
        self.num_heads = positive_int(num_heads, "DetrAttention: num_heads")
        if embed_dim % num_heads:
            raise ValueError(f"DetrAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.dropout = float(dropout)
        self.out_proj = nn.Dense(embed_dim, kernel_init="xavier_uniform", name="out_proj")

    def build(self, input_shape=None) -> None:
        d, dtype = self.embed_dim, backend.get_default_dtype()
        self.add_parameter("in_proj_weight", initializers.get("xavier_uniform")((3 * d, d), d, 3 * d, dtype))
        self.add_parameter("in_proj_bias", initializers.zeros((3 * d,), d, 3 * d, dtype))
        self.out_proj.build(_feature_shape(d))
        self.out_proj.built = self.built = True

    def _heads(self, x: Tensor, part: int) -> Tensor:
        """x W_part^T + b_part as (N, h, T, d / h)."""
        rows = slice(part * self.embed_dim, (part + 1) * self.embed_dim)
        y = linear(x, F.transpose(self.in_proj_weight[rows], 1, 0), self.in_proj_bias[rows])
        n, t = x.shape[0], x.shape[1]
        return F.transpose(F.reshape(y, n, t, self.num_heads, self.embed_dim // self.num_heads), 0, 2, 1, 3)

    def forward(self, query, key, value) -> Tensor:
        query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
        for x in (query, key, value):
            if x.ndim != 3 or x.shape[-1] != self.embed_dim:
                raise input_error(self, x, f"(batch, steps, {self.embed_dim})")
        heads = scaled_dot_product_attention(self._heads(query, 0), self._heads(key, 1), self._heads(value, 2),
                                             dropout=self.dropout if self.training else 0.0)
        n, t = query.shape[0], query.shape[1]
        return self.out_proj(F.reshape(F.transpose(heads, 0, 2, 1, 3), n, t, self.embed_dim))

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "dropout": self.dropout, "name": self.name}


class _DetrLayer(Module):
    """What the encoder and decoder layers share: sizes, the feed-forward network
    (``linear1``, ``dropout``, ``linear2``) and the post-norm residual steps."""

    norms = 2

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, f"{type(self).__name__}: d_model")
        self.num_heads = positive_int(num_heads, f"{type(self).__name__}: num_heads")
        self.dim_feedforward = positive_int(dim_feedforward, f"{type(self).__name__}: dim_feedforward")
        self.dropout_rate = float(dropout)
        self.self_attn = DetrAttention(d_model, num_heads, dropout, name="self_attn")
        self.linear1 = nn.Dense(dim_feedforward, kernel_init="xavier_uniform", name="linear1")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.linear2 = nn.Dense(d_model, kernel_init="xavier_uniform", name="linear2")
        for i in range(1, self.norms + 1):
            setattr(self, f"norm{i}", nn.LayerNorm(-1, name=f"norm{i}"))
            setattr(self, f"dropout{i}", nn.Dropout(dropout, name=f"dropout{i}"))

    def build(self, input_shape=None) -> None:
        shape = _feature_shape(self.d_model)
        for layer in self.children():
            layer.build(_feature_shape(self.dim_feedforward) if layer is self.linear2 else shape)
            layer.built = True
        self.built = True

    def _residual(self, x: Tensor, update: Tensor, i: int) -> Tensor:
        """norm_i(x + dropout_i(update))."""
        return getattr(self, f"norm{i}")(F.add(x, getattr(self, f"dropout{i}")(update)))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "dim_feedforward": self.dim_feedforward,
                "dropout": self.dropout_rate, "name": self.name}


@register_layer
class DetrEncoderLayer(_DetrLayer):
    """``layer(x, pos)``: self-attention with ``pos`` added to the queries and keys, then the
    feed-forward network, each post-norm (module docstring)."""

    default_name = "encoder_layer"

    def forward(self, x, pos) -> Tensor:
        x = as_tensor(x)
        with_pos = F.add(x, pos)
        x = self._residual(x, self.self_attn(with_pos, with_pos, x), 1)
        return self._residual(x, self._feed_forward(x), 2)


@register_layer
class DetrDecoderLayer(_DetrLayer):
    """``layer(t, memory, pos, query_pos)``: self-attention of the queries (``query_pos`` added
    to its queries and keys), cross-attention to the memory (``query_pos`` added to the
    queries, ``pos`` to the memory's keys), then the feed-forward network, each post-norm."""

    default_name = "decoder_layer"
    norms = 3

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 name: str | None = None):
        super().__init__(d_model, num_heads, dim_feedforward, dropout, name=name)
        self.multihead_attn = DetrAttention(d_model, num_heads, dropout, name="multihead_attn")

    def forward(self, t, memory, pos, query_pos) -> Tensor:
        t = as_tensor(t)
        with_pos = F.add(t, query_pos)
        t = self._residual(t, self.self_attn(with_pos, with_pos, t), 1)
        t = self._residual(t, self.multihead_attn(F.add(t, query_pos), F.add(memory, pos), memory), 2)
        return self._residual(t, self._feed_forward(t), 3)


class _Stack(Module):
    """A ModuleList ``layers`` of DETR layers (and the decoder's final ``norm``)."""

    def __init__(self, layers: Sequence[Module], norm: bool, name: str | None = None):
        super().__init__(name=name)
        self.layers = nn.ModuleList(layers)
        if norm:
            self.norm = nn.LayerNorm(-1, name="norm")

    def build(self, input_shape=None) -> None:
        norm = self._modules.get("norm")
        for layer in [*self.layers, *([norm] if norm is not None else [])]:
            layer.build(_feature_shape(self.layers[0].d_model))
            layer.built = True
        self.built = True


@register_layer
class DetrTransformer(Module):
    """DETR's Transformer: ``encoder.layers`` (post-norm, no final norm) and ``decoder.layers``
    with the shared final ``decoder.norm``.

    ``transformer(src, query_embed, pos)`` with the image tokens ``src`` (N, T, d), the object
    queries ``query_embed`` (Q, d) and the positions ``pos`` (N or 1, T, d) gives
    (hs, memory): hs (L, N, Q, d) the normed outputs of the L decoder layers, memory (N, T, d)
    the encoder's. The decoder starts from zeros. Weight matrices start Xavier-uniform, as
    Facebook's ``_reset_parameters``; biases at zero."""

    default_name = "transformer"

    def __init__(self, d_model: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 name: str | None = "transformer"):
        super().__init__(name=name)
        if d_model % 4:
            raise ValueError(f"DetrTransformer: d_model must be a multiple of 4 (two even halves of sine "
                             f"positions), got {d_model!r}")
        self.d_model, self.num_heads, self.dim_feedforward = int(d_model), int(num_heads), int(dim_feedforward)
        self.num_encoder_layers = positive_int(num_encoder_layers, "DetrTransformer: num_encoder_layers")
        self.num_decoder_layers = positive_int(num_decoder_layers, "DetrTransformer: num_decoder_layers")
        self.dropout = float(dropout)
        sizes = (d_model, num_heads, dim_feedforward, dropout)
        self.encoder = _Stack([DetrEncoderLayer(*sizes, name=str(i)) for i in range(num_encoder_layers)], False,
                              name="encoder")
        self.decoder = _Stack([DetrDecoderLayer(*sizes, name=str(i)) for i in range(num_decoder_layers)], True,
                              name="decoder")

    def build(self, input_shape=None) -> None:
        for stack in (self.encoder, self.decoder):
            stack.build()
            stack.built = True
        self.built = True

    def forward(self, src, query_embed, pos) -> tuple[Tensor, Tensor]:
        src, query_embed, pos = as_tensor(src), as_tensor(query_embed), as_tensor(pos)
        d = self.d_model
        if src.ndim != 3 or src.shape[-1] != d:
            raise input_error(self, src, f"image tokens (batch, steps, {d})")
        if query_embed.ndim != 2 or query_embed.shape[-1] != d or pos.ndim != 3 or pos.shape[1:] != src.shape[1:]:
            raise ShapeError(f"{self._label()}: query_embed {query_embed.shape} and pos {pos.shape} for tokens "
                             f"{src.shape}; expected (queries, {d}) and (1 or batch, {src.shape[1]}, {d})")
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory, pos)
        n, q = src.shape[0], query_embed.shape[0]
        query_pos = F.broadcast_to(F.reshape(query_embed, 1, q, d), (n, q, d))
        t = Tensor(backend.xp.zeros((n, q, d), dtype=src.dtype))
        outputs = []
        for layer in self.decoder.layers:
            t = layer(t, memory, pos, query_pos)
            outputs.append(self.decoder.norm(t))
        return F.stack(outputs, axis=0), memory

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "num_encoder_layers": self.num_encoder_layers,
                "num_decoder_layers": self.num_decoder_layers, "dim_feedforward": self.dim_feedforward,
                "dropout": self.dropout, "name": self.name}


@register_layer
class DetrMLP(Module):
    """``layers.0`` .. ``layers.(L-1)``: Dense layers of ``hidden_dim`` units with ReLU between
    them, the last of ``output_dim`` (DETR's box head: 3 layers, then a sigmoid outside)."""

    default_name = "mlp"

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, name: str | None = None):
        super().__init__(name=name)
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.output_dim, self.num_layers = int(output_dim), positive_int(num_layers, "DetrMLP: num_layers")
        widths = [self.hidden_dim] * (self.num_layers - 1) + [self.output_dim]
        self.layers = nn.ModuleList(nn.Dense(w, kernel_init="xavier_uniform", name=str(i))
                                    for i, w in enumerate(widths))

    def build(self, input_shape=None) -> None:
        width = self.input_dim
        for layer in self.layers:
            layer.build(_feature_shape(width))
            layer.built = True
            width = layer.units
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == self.num_layers - 1 else F.relu(layer(x))
        return x

    def get_config(self) -> dict:
        return {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
                "num_layers": self.num_layers, "name": self.name}


def _build_resnet_body(body: Module, input_shape, trainable_layers: int) -> None:
    """Build a ResNet ``body`` for ``input_shape`` and freeze all but the last ``trainable_layers``
    of conv1, layer1 .. layer4 (all five: bn1 trained too)."""
    body.build(tuple(input_shape))
    body.built = True
    trained = list(reversed(RESNET_STAGES))[:trainable_layers] + (["bn1"] if trainable_layers == 5 else [])
    for name, layer in body.named_children():
        if name not in trained:
            layer.freeze()


@register_layer
class DetrBackbone(Module):
    """A ResNet ``body`` (torchvision's names: conv1, bn1, layer1 ..) cut after stage
    ``stages`` (4: layer4, stride 32), batch norms frozen by default; ``forward(images)``
    gives its last map (N, h, w, ``num_channels``). ``trainable_layers`` (0 to 5) leaves the
    last that many of conv1, layer1 .. layer4 trainable (3 in Facebook's DETR: layer2 ..
    layer4); ``width`` the filters of layer1 (64 for the ImageNet ResNets)."""

    default_name = "backbone"

    def __init__(self, depth: int = 50, stages: int = 4, trainable_layers: int = 3, frozen_batch_norm: bool = True,
                 width: int = 64, name: str | None = None):
        super().__init__(name=name)
        if depth not in BLOCKS or not 1 <= int(stages) <= 4 or not 0 <= int(trainable_layers) <= 5:
            raise ValueError(f"DetrBackbone: need depth in {sorted(BLOCKS)}, stages in 1..4 and trainable_layers in "
                             f"0..5; got {depth!r}, {stages!r} and {trainable_layers!r}")
        self.depth, self.stages, self.width = int(depth), int(stages), positive_int(width, "DetrBackbone: width")
        self.trainable_layers, self.frozen_batch_norm = int(trainable_layers), bool(frozen_batch_norm)
        self.num_channels = self.width * 2 ** (self.stages - 1) * BLOCKS[self.depth][0].expansion
        self.body = _resnet_body(self.depth, self.width, self.stages, self.frozen_batch_norm)

    def build(self, input_shape) -> None:
        _build_resnet_body(self.body, input_shape, self.trainable_layers)
        self.built = True

    def forward(self, images) -> Tensor:
        return self.body(images)

    def get_config(self) -> dict:
        return {"depth": self.depth, "stages": self.stages, "trainable_layers": self.trainable_layers,
                "frozen_batch_norm": self.frozen_batch_norm, "width": self.width, "name": self.name}


@register_layer
class DETR(DetectorBase):
    """DETR (module docstring) on a ``backbone`` (a :class:`DetrBackbone`, or any module
    mapping NHWC images to one (N, h, w, C) map and telling C in ``num_channels``), stored as
    ``backbone.0`` as in Facebook's layout.

    ``model(images, targets)`` in training mode gives :class:`SetCriterion`'s weighted losses
    (boxes (x1, y1, x2, y2) in pixels, labels in [0, num_classes)); in evaluation mode, per
    image, the queries whose best class (softmax, without "no object") scores above
    ``score_thresh``: 'boxes' (x1, y1, x2, y2) in pixels, 'scores', 'labels', by decreasing
    score. :meth:`raw_outputs` gives the outputs of Facebook's ``forward``. Matching costs
    ``cost_class``, ``cost_bbox``, ``cost_giou``; loss weights ``ce_weight``, ``bbox_weight``,
    ``giou_weight``; ``eos_coef`` the weight of "no object"; ``aux_loss`` adds the losses of
    the earlier decoder layers."""

    default_name = "detr"
    module_options = ("backbone",)

    def __init__(self, backbone: Module, num_classes: int, hidden_dim: int = 256, num_heads: int = 8,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6, dim_feedforward: int = 2048,
                 dropout: float = 0.1, num_queries: int = 100, aux_loss: bool = True,
                 image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225),
                 cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, eos_coef: float = 0.1,
                 ce_weight: float = 1.0, bbox_weight: float = 5.0, giou_weight: float = 2.0, score_thresh: float = 0.0,
                 name: str | None = "detr"):
        super().__init__(num_classes, image_mean, image_std, name=name)
        if not hasattr(backbone, "num_channels"):
            raise ValueError(f"DETR: the backbone must tell its output channels in 'num_channels', got "
                             f"{type(backbone).__name__}")
        self.backbone = nn.ModuleList([backbone])
        self.hidden_dim, self.num_queries = int(hidden_dim), positive_int(num_queries, "DETR: num_queries")
        self.aux_loss = bool(aux_loss)
        self.transformer = DetrTransformer(hidden_dim, num_heads, num_encoder_layers, num_decoder_layers,
                                           dim_feedforward, dropout, name="transformer")
        self.class_embed = nn.Dense(num_classes + 1, kernel_init="xavier_uniform", name="class_embed")
        self.bbox_embed = DetrMLP(hidden_dim, hidden_dim, 4, 3, name="bbox_embed")
        self.query_embed = nn.Embedding(num_queries, hidden_dim, name="query_embed")
        self.input_proj = nn.Conv2D(hidden_dim, 1, name="input_proj")
        self.costs = {"cost_class": float(cost_class), "cost_bbox": float(cost_bbox), "cost_giou": float(cost_giou)}
        self.loss_weights = {"eos_coef": float(eos_coef), "ce_weight": float(ce_weight),
                             "bbox_weight": float(bbox_weight), "giou_weight": float(giou_weight)}
        self.criterion = SetCriterion(num_classes, HungarianMatcher(**self.costs), **self.loss_weights)
        self.score_thresh = float(score_thresh)

    # -- building ------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        shape = self._image_shape(input_shape)
        backbone = self.backbone[0]
        backbone.build(shape)
        backbone.built = True
        d = self.hidden_dim
        for layer, layer_shape in ((self.input_proj, (None, None, None, backbone.num_channels)),
                                   (self.transformer, None), (self.class_embed, _feature_shape(d)),
                                   (self.bbox_embed, None), (self.query_embed, (None,))):
            layer.build(layer_shape)
            layer.built = True
        self.build_input_shape = shape
        self.built = True

    # -- running -------------------------------------------------------------------------
    def raw_outputs(self, images) -> dict:
        """Facebook's outputs for normalized NHWC ``images``: 'pred_logits' (N, Q, C + 1),
        'pred_boxes' (N, Q, 4) normalised (cx, cy, w, h), of the last decoder layer, and
        'aux_outputs' (with ``aux_loss``) the same of each earlier layer."""
        features = self.input_proj(self.backbone[0](images))
        n, h, w, d = features.shape
        pos = sine_position_encoding(h, w, d // 2, dtype=features.dtype).reshape(1, h * w, d)
        hs, _ = self.transformer(F.reshape(features, n, h * w, d), self.query_embed.weight,
                                 Tensor(backend.xp.asarray(pos)))
        logits, boxes = self.class_embed(hs), F.sigmoid(self.bbox_embed(hs))
        outputs = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            outputs["aux_outputs"] = [{"pred_logits": logits[i], "pred_boxes": boxes[i]} for i in range(len(hs) - 1)]
        return outputs

    def forward(self, images, targets=None):
        return _train_or_detect(self, images, targets)

    def postprocess(self, outputs: dict, image_size: tuple[int, int]) -> list[dict[str, np.ndarray]]:
        """Per image the detections of ``outputs`` (see the class docstring) for an image of
        (height, width) pixels."""
        logits = outputs["pred_logits"].numpy().astype(np.float64)
        boxes = outputs["pred_boxes"].numpy().astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        detections = []
        for image_probabilities, image_boxes in zip(probabilities[..., :-1], boxes):
            scores, labels = image_probabilities.max(axis=-1), image_probabilities.argmax(axis=-1)
            keep = np.flatnonzero(scores > self.score_thresh)
            keep = keep[np.argsort(-scores[keep], kind="stable")]
            detections.append(_pixel_detections(image_boxes[keep], scores[keep], labels[keep], image_size))
        return detections

    # -- configuration -------------------------------------------------------------------
    def get_config(self) -> dict:
        t = self.transformer
        return {"backbone": layer_to_config(self.backbone[0]), "num_classes": self.num_classes,
                "hidden_dim": self.hidden_dim, "num_heads": t.num_heads, "num_encoder_layers": t.num_encoder_layers,
                "num_decoder_layers": t.num_decoder_layers, "dim_feedforward": t.dim_feedforward,
                "dropout": t.dropout, "num_queries": self.num_queries, "aux_loss": self.aux_loss,
                "image_mean": self.image_mean, "image_std": self.image_std, **self.costs, **self.loss_weights,
                "score_thresh": self.score_thresh, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_queries={self.num_queries}, hidden_dim={self.hidden_dim}"


def detr_resnet50(num_classes: int = 91, trainable_backbone_layers: int = 3,
                  input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> DETR:
    """Facebook's ``detr_resnet50`` (module docstring; unbuilt): ResNet-50 body with frozen batch
    norms (layer2 .. layer4 trained), d = 256, 8 heads, 6 encoder and 6 decoder layers, 100
    queries; 41,524,768 parameters with 91 classes, 41,302,368 trainable."""
    input_shape = check_input(input_shape, "detr_resnet50")
    backbone = DetrBackbone(50, 4, trainable_backbone_layers)
    return finish(DETR(backbone, num_classes, **kwargs), input_shape)
