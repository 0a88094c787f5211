"""Mask2Former (Cheng et al. 2022, "Masked-attention Mask Transformer for Universal Image
Segmentation"), small: segmentation as the classification of Q predicted masks.

    features   c_1, c_2, c_3 = backbone(x)          3x3 stride-2 convolutions: 1/2, 1/4, 1/8
    pixels     p_3 = lateral_3(c_3), p_i = lateral_i(c_i) + up2(p_{i+1})   (an FPN, d channels)
               E = mask_features(p_1)               per-pixel embeddings (N, H/2, W/2, d)
    queries    X_0 learned (Q, d), with learned positions P_q
    layer l    attends to level s = l mod 2 of (p_3, p_2) (round robin, coarse first):
               X = norm1(X + MaskedAttn(X + P_q, p_s + P_s + e_s, p_s; M_{l-1}))
               X = norm2(X + SelfAttn(X + P_q, X + P_q, X))
               X = norm3(X + FFN(X))
    heads      from norm(X_l): class logits (K + 1, the last "no object") and a mask
               embedding m_q (an MLP); mask logits M_l[q] = m_q . E  (per pixel)

P_s is the sine encoding of level s's cells, e_s a learned level embedding. The masked
attention lets query q attend to the cells where its previous mask M_{l-1} (average-pooled to
the level's size) has sigmoid > 0.5, i.e. logit > 0; a query whose mask is empty there attends
everywhere (:func:`masked_attention`). Predictions are made from the queries before the first
layer and after every layer (L + 1 sets); each set is supervised.

Training (:class:`MaskClassificationLoss`): per image, the Hungarian matching of queries to
target masks on the cost

    C(q, j) = -w_class p_q(c_j) + w_mask BCE(M_q, T_j) + w_dice dice(M_q, T_j)

(BCE the mean over pixels of the binary cross-entropy of the logits, dice(M, T) =
1 - (2 sum sigma(M) T + 1) / (sum sigma(M) + sum T + 1)); then cross-entropy over all queries
(unmatched ones labelled "no object", weight ``eos_coef``), and the mean BCE and dice of the
matched masks, both summed and divided by the number of target masks. Targets are compared at
the resolution of the predicted masks (each target averaged over stride x stride blocks).

Inference: :func:`semantic_inference` (sum_q softmax(class_q)[k] sigmoid(M_q), "no object"
dropped) and :func:`panoptic_inference` (confident queries kept, each pixel given to the query
with the largest score x sigmoid(mask)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.attention import scaled_dot_product_attention
from lamina.models.detr_common import sine_position_encoding
from lamina.models.mask2former_pixel import PIXEL_DECODERS, MSDeformPixelEncoder
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["Mask2Former", "MaskClassificationLoss", "mask_matching_cost", "masked_attention",
           "masked_attention_mask", "panoptic_inference", "semantic_inference"]


def _logits_array(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))


def masked_attention_mask(mask_logits) -> np.ndarray:
    """Which keys each query may attend to, from its mask logits (..., Q, T): logit > 0
    (sigmoid > 0.5), and every key for a query whose row has none. A boolean array, constant
    (no gradient flows through the mask)."""
    attend = _logits_array(mask_logits) > 0
    return attend | ~attend.any(axis=-1, keepdims=True)


def masked_attention(query, key, value, mask_logits, scale: float | None = None) -> Tensor:
    """Masked attention: softmax(Q K^T / sqrt(d) + A) V with A = 0 where
    :func:`masked_attention_mask` (``mask_logits`` (N, Q, T)) allows, -inf elsewhere.
    ``query`` (N, h, Q, d), ``key`` and ``value`` (N, h, T, d)."""
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    if query.ndim != 4 or key.ndim != 4 or tuple(np.shape(mask_logits)) != (query.shape[0], query.shape[2],
                                                                            key.shape[2]):
        raise ShapeError(f"masked_attention: expected query (N, h, Q, d), key (N, h, T, d) and mask logits "
                         f"(N, Q, T); got {query.shape}, {key.shape} and {tuple(np.shape(mask_logits))}")
    attend = backend.xp.asarray(masked_attention_mask(mask_logits)[:, None])
    return scaled_dot_product_attention(query, key, value, mask=attend, scale=scale)


class _Attention(Module):
    """Multi-head attention with Dense projections ``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj`` on (N, T, d) inputs; masked (:func:`masked_attention`) when given mask logits."""

    def __init__(self, d: int, num_heads: int, name: str | None = None):
        super().__init__(name=name)
        self.d, self.num_heads = d, num_heads
        for part in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, part, nn.Dense(d, kernel_init="xavier_uniform", name=part))

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            layer.build((None, None, self.d))
            layer.built = True
        self.built = True

    def _heads(self, x: Tensor) -> Tensor:
        n, t = x.shape[0], x.shape[1]
        return F.transpose(F.reshape(x, n, t, self.num_heads, self.d // self.num_heads), 0, 2, 1, 3)

    def forward(self, query, key, value, mask_logits=None) -> Tensor:
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        heads = (scaled_dot_product_attention(q, k, v) if mask_logits is None
                 else masked_attention(q, k, v, mask_logits))
        n, t = heads.shape[0], heads.shape[2]
        return self.out_proj(F.reshape(F.transpose(heads, 0, 2, 1, 3), n, t, self.d))


class _DecoderLayer(Module):
    """Masked cross-attention, self-attention, feed-forward network, each post-norm."""

    def __init__(self, d: int, num_heads: int, dim_feedforward: int, name: str | None = None):
        super().__init__(name=name)
        self.d, self.dim_feedforward = d, dim_feedforward
        self.cross_attn = _Attention(d, num_heads, name="cross_attn")
        self.self_attn = _Attention(d, num_heads, name="self_attn")
        self.linear1 = nn.Dense(dim_feedforward, kernel_init="xavier_uniform", name="linear1")
        self.linear2 = nn.Dense(d, kernel_init="xavier_uniform", name="linear2")
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(-1, name=f"norm{i}") for i in (1, 2, 3))

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            layer.build((None, None, self.dim_feedforward if layer is self.linear2 else self.d))
            layer.built = True
        self.built = True

    def forward(self, x, query_pos, memory, memory_pos, mask_logits) -> Tensor:
        x = self.norm1(F.add(x, self.cross_attn(F.add(x, query_pos), F.add(memory, memory_pos), memory,
                                                mask_logits)))
        with_pos = F.add(x, query_pos)
        x = self.norm2(F.add(x, self.self_attn(with_pos, with_pos, x)))
        return self.norm3(F.add(x, self.linear2(F.relu(self.linear1(x)))))


def _block_mean(masks: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) averaged over factor x factor blocks: (..., H / factor, W / factor)."""
    if factor == 1:
        return masks
    *lead, h, w = masks.shape
    return masks.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


@register_with_arguments
class Mask2Former(Module):
    """Mask2Former (module docstring) for NHWC images whose sides are multiples of 8.

    ``model(images)`` gives {'pred_logits' (N, Q, K + 1), 'pred_masks' (N, Q, H / 2, W / 2)
    mask logits, 'aux_outputs': the same of the L earlier prediction sets}.
    :meth:`predict_semantic` gives (N, H, W) class ids, :meth:`predict_panoptic` per image a
    segment-id map and its segments. Weights are created at construction. Sizes: ``widths``
    the backbone's three stages, ``hidden_dim`` d, ``num_queries`` Q, ``num_layers`` L decoder
    layers. ``pixel_decoder`` 'fpn' (the FPN above) or 'msdeform' (the paper's: ``encoder_layers``
    multi-scale deformable-attention encoder layers of ``n_points`` points over p_3 and p_2 before
    the upsampling, :class:`~lamina.models.mask2former_pixel.MSDeformPixelEncoder`)."""

    default_name = "mask2former"
    stride = 2       # of the per-pixel embeddings (and the predicted masks)

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 32),
                 hidden_dim: int = 32, num_heads: int = 4, num_queries: int = 8, num_layers: int = 3,
                 dim_feedforward: int = 64, pixel_decoder: str = "fpn", encoder_layers: int = 3, n_points: int = 4,
                 name: str | None = None):
        super().__init__(name=name)
        if hidden_dim % 4 or hidden_dim % num_heads or len(widths) != 3:
            raise ValueError(f"Mask2Former: need hidden_dim a multiple of 4 and of num_heads, and 3 widths; got "
                             f"{hidden_dim}, {num_heads} and {tuple(widths)}")
        if pixel_decoder not in PIXEL_DECODERS:
            raise ValueError(f"Mask2Former: pixel_decoder must be one of {PIXEL_DECODERS}, got {pixel_decoder!r}")
        self.pixel_decoder_type = pixel_decoder
        self.num_classes, self.in_channels, self.hidden_dim = int(num_classes), int(in_channels), int(hidden_dim)
        self.num_queries, self.num_layers, self.widths = int(num_queries), int(num_layers), tuple(widths)
        d = hidden_dim
        self.backbone = nn.ModuleList(nn.Conv2D(w, 3, stride=2, padding="same", activation="relu", name=str(i))
                                      for i, w in enumerate(widths))
        self.lateral = nn.ModuleList(nn.Conv2D(d, 1, name=str(i)) for i in range(3))
        self.mask_features = nn.Conv2D(d, 3, padding="same", name="mask_features")
        if pixel_decoder == "msdeform":
            self.pixel_encoder = MSDeformPixelEncoder(d, num_heads, dim_feedforward, encoder_layers, n_points,
                                                      name="pixel_encoder")
        self.level_embed = nn.Embedding(2, d, name="level_embed")
        self.query_feat = nn.Embedding(num_queries, d, name="query_feat")
        self.query_pos = nn.Embedding(num_queries, d, name="query_pos")
        self.layers = nn.ModuleList(_DecoderLayer(d, num_heads, dim_feedforward, name=str(i))
                                    for i in range(num_layers))
        self.decoder_norm = nn.LayerNorm(-1, name="decoder_norm")
        self.class_embed = nn.Dense(num_classes + 1, name="class_embed")
        self.mask_embed = nn.ModuleList(nn.Dense(d, name=str(i)) for i in range(3))
        self.build()

    def build(self, input_shape=None) -> None:
        d = self.hidden_dim
        channels = (self.in_channels, *self.widths)
        for i, conv in enumerate(self.backbone):
            conv.build((None, None, None, channels[i]))
        for i, conv in enumerate(self.lateral):
            conv.build((None, None, None, self.widths[i]))
        self.mask_features.build((None, None, None, d))
        for layer in (self.level_embed, self.query_feat, self.query_pos):
            layer.build((None,))
        for layer in (*self.layers, self.decoder_norm, self.class_embed, *self.mask_embed):
            layer.build((None, None, d))
        for module in self.modules():
            module.built = True

    # -- running -------------------------------------------------------------------------
    def pixel_decoder(self, images) -> tuple[list[Tensor], Tensor]:
        """The attended levels [p_3 (1/8), p_2 (1/4)] and the per-pixel embeddings E (1/2);
        with ``pixel_decoder="msdeform"`` p_3 and p_2 come from the deformable-attention
        encoder (:mod:`lamina.models.mask2former_pixel`)."""
        features, x = [], images
        for conv in self.backbone:
            x = conv(x)
            features.append(x)
        p = self.lateral[2](features[2])
        if self.pixel_decoder_type == "msdeform":
            levels = self.pixel_encoder([p, self.lateral[1](features[1])])
            return levels, self.mask_features(F.add(self.lateral[0](features[0]), F.upsample2d(levels[1], 2)))
        levels = [p]
        for i in (1, 0):
            p = F.add(self.lateral[i](features[i]), F.upsample2d(p, 2))
            levels.append(p)
        return levels[:2], self.mask_features(levels[2])

    def _predict(self, queries: Tensor, pixels: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Class logits (N, Q, K + 1) and mask logits (N, Q, h, w) from the queries."""
        x = self.decoder_norm(queries)
        m = x
        for i, layer in enumerate(self.mask_embed):
            m = layer(m) if i == 2 else F.relu(layer(m))
        masks = F.matmul(m, F.transpose(pixels, 0, 2, 1))
        n, q = masks.shape[:2]
        return self.class_embed(x), F.reshape(masks, n, q, *size)

    def forward(self, images) -> dict:
        x = as_tensor(images)
        if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % 8 or x.shape[2] % 8:
            raise ShapeError(f"Mask2Former: expected images (N, H, W, {self.in_channels}) with H and W multiples "
                             f"of 8, got {x.shape}")
        levels, embeddings = self.pixel_decoder(x)
        n, h, w, d = embeddings.shape
        pixels = F.reshape(embeddings, n, h * w, d)
        memories, positions, sizes = [], [], []
        for s, level in enumerate(levels):
            lh, lw = level.shape[1:3]
            sizes.append((lh, lw))
            memories.append(F.reshape(level, n, lh * lw, d))
            pos = sine_position_encoding(lh, lw, d // 2, dtype=level.dtype).reshape(1, lh * lw, d)
            positions.append(F.add(Tensor(backend.xp.asarray(pos)), self.level_embed.weight[s]))
        queries = F.broadcast_to(self.query_feat.weight[None], (n, self.num_queries, d))
        query_pos = F.broadcast_to(self.query_pos.weight[None], (n, self.num_queries, d))
        predictions = [self._predict(queries, pixels, (h, w))]
        for i, layer in enumerate(self.layers):
            s = i % len(levels)
            factor = h // sizes[s][0]
            previous = _block_mean(_logits_array(predictions[-1][1]), factor).reshape(n, self.num_queries, -1)
            queries = layer(queries, query_pos, memories[s], positions[s], previous)
            predictions.append(self._predict(queries, pixels, (h, w)))
        (logits, masks), earlier = predictions[-1], predictions[:-1]
        return {"pred_logits": logits, "pred_masks": masks,
                "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in earlier]}

    def predict_semantic(self, images) -> np.ndarray:
        """(N, H, W) class ids: argmax of :func:`semantic_inference` on the masks upsampled to the image."""
        outputs = self(images)
        masks = _upsampled(outputs["pred_masks"], self.stride)
        return semantic_inference(outputs["pred_logits"], masks).argmax(axis=-1)

    def predict_panoptic(self, images, object_threshold: float = 0.5,
                         overlap_threshold: float = 0.8) -> list[tuple[np.ndarray, list[dict]]]:
        """Per image :func:`panoptic_inference` on the masks upsampled to the image."""
        outputs = self(images)
        return panoptic_inference(outputs["pred_logits"], _upsampled(outputs["pred_masks"], self.stride),
                                  object_threshold, overlap_threshold)


def _upsampled(masks: Tensor, factor: int) -> np.ndarray:
    """(N, Q, h, w) mask logits bilinearly upsampled by ``factor``, as an array."""
    n, q, h, w = masks.shape
    images = F.reshape(F.transpose(masks, 0, 2, 3, 1), n, h, w, q)
    return _logits_array(F.transpose(F.upsample2d(images, factor, interpolation="bilinear"), 0, 3, 1, 2))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def semantic_inference(class_logits, mask_logits) -> np.ndarray:
    """Per-pixel class scores (N, H, W, K) = sum_q softmax(class_q)[k] sigmoid(mask_q), the
    "no object" probability dropped; ``class_logits`` (N, Q, K + 1), ``mask_logits`` (N, Q, H, W)."""
    probabilities = _softmax(_logits_array(class_logits).astype(np.float64))[..., :-1]
    masks = _sigmoid(_logits_array(mask_logits).astype(np.float64))
    return np.einsum("nqk,nqhw->nhwk", probabilities, masks)


def panoptic_inference(class_logits, mask_logits, object_threshold: float = 0.5,
                       overlap_threshold: float = 0.8) -> list[tuple[np.ndarray, list[dict]]]:
    """Per image (segment ids (H, W) int64, 0 where no segment; segments [{'id', 'label',
    'score'}]): queries whose best class is not "no object" and scores above
    ``object_threshold`` are kept; each pixel goes to the kept query with the largest
    score x sigmoid(mask); a query keeps its pixels where its own mask has sigmoid >= 0.5, and
    is dropped when they are under ``overlap_threshold`` of its mask's area."""
    probabilities = _softmax(_logits_array(class_logits).astype(np.float64))
    masks = _sigmoid(_logits_array(mask_logits).astype(np.float64))
    results = []
    for image_probabilities, image_masks in zip(probabilities, masks):
        scores, labels = image_probabilities.max(axis=-1), image_probabilities.argmax(axis=-1)
        keep = np.flatnonzero((labels != image_probabilities.shape[-1] - 1) & (scores > object_threshold))
        segment_ids = np.zeros(image_masks.shape[1:], dtype=np.int64)
        segments = []
        if len(keep):
            owner = (scores[keep, None, None] * image_masks[keep]).argmax(axis=0)
            for rank, query in enumerate(keep):
                mask = (owner == rank) & (image_masks[query] >= 0.5)
                area = (image_masks[query] >= 0.5).sum()
                if mask.sum() == 0 or area == 0 or mask.sum() / area < overlap_threshold:
                    continue
                segment_ids[mask] = len(segments) + 1
                segments.append({"id": len(segments) + 1, "label": int(labels[query]), "score": float(scores[query])})
        results.append((segment_ids, segments))
    return results


def mask_matching_cost(class_logits, mask_logits, labels, masks, cost_class: float = 2.0, cost_mask: float = 5.0,
                       cost_dice: float = 5.0) -> np.ndarray:
    """The (Q, n) matching cost of one image (module docstring): ``class_logits`` (Q, K + 1),
    ``mask_logits`` (Q, P) and target ``labels`` (n,), ``masks`` (n, P) in [0, 1]."""
    logits = _logits_array(mask_logits).astype(np.float64)
    targets = np.asarray(masks, dtype=np.float64)
    probabilities = _softmax(_logits_array(class_logits).astype(np.float64))[:, np.asarray(labels, dtype=np.int64)]
    positive, negative = np.logaddexp(0.0, -logits), np.logaddexp(0.0, logits)   # -log s, -log(1 - s)
    bce = (positive @ targets.T + negative @ (1.0 - targets).T) / logits.shape[1]
    sigma = _sigmoid(logits)
    dice = 1.0 - (2.0 * sigma @ targets.T + 1.0) / (sigma.sum(axis=1)[:, None] + targets.sum(axis=1)[None] + 1.0)
    return cost_mask * bce + cost_dice * dice - cost_class * probabilities


class MaskClassificationLoss:
    """Mask2Former's training loss (module docstring) of ``model(images)``'s outputs against
    targets (per image 'labels' (n,) in [0, K) and 'masks' (n, H, W) binary at the image size,
    H a multiple of the predicted masks' height). ``loss(outputs, targets)`` gives the weighted
    terms 'loss_ce', 'loss_mask', 'loss_dice' and 'loss_ce_i' .. for the i-th earlier set: their
    sum is the loss."""

    def __init__(self, num_classes: int, eos_coef: float = 0.1, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0):
        self.num_classes, self.eos_coef = int(num_classes), float(eos_coef)
        self.weights = {"loss_ce": float(class_weight), "loss_mask": float(mask_weight),
                        "loss_dice": float(dice_weight)}

    def __call__(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        num_masks = max(1, sum(len(t["labels"]) for t in targets))
        losses = self.losses(outputs["pred_logits"], outputs["pred_masks"], targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self.losses(aux["pred_logits"], aux["pred_masks"], targets,
                                                                  num_masks).items()})
        return losses

    def match(self, class_logits, mask_logits, targets: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image (query indices, target indices) of the Hungarian matching."""
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s

        classes, masks = _logits_array(class_logits), _logits_array(mask_logits)
        n, q = masks.shape[:2]
        matches = []
        for image in range(n):
            target_masks = self._target_masks(targets[image], masks.shape[2:])
            cost = mask_matching_cost(classes[image], masks[image].reshape(q, -1), targets[image]["labels"],
                                      target_masks.reshape(len(target_masks), -1),
                                      *(self.weights[k] for k in ("loss_ce", "loss_mask", "loss_dice")))
            queries, objects = linear_sum_assignment(cost)
            matches.append((queries.astype(np.int64), objects.astype(np.int64)))
        return matches

    def _target_masks(self, target: dict, size: tuple[int, int]) -> np.ndarray:
        masks = np.asarray(target["masks"], dtype=np.float64)
        if masks.ndim != 3 or len(masks) != len(target["labels"]) or masks.shape[1] % size[0] or \
                masks.shape[1] // size[0] != masks.shape[2] // size[1]:
            raise ShapeError(f"MaskClassificationLoss: expected target masks (n, H, W) for n = "
                             f"{len(target['labels'])} labels, H, W multiples of the predicted {size}; got "
                             f"{masks.shape}")
        return _block_mean(masks, masks.shape[1] // size[0])

    def losses(self, class_logits: Tensor, mask_logits: Tensor, targets: Sequence[dict],
               num_masks: int) -> dict[str, Tensor]:
        """The three weighted terms of one set of predictions."""
        n, q, classes = class_logits.shape
        wanted = np.full((n, q), self.num_classes, dtype=np.int64)
        rows, matched = [], []
        for image, (queries, objects) in enumerate(self.match(class_logits, mask_logits, targets)):
            wanted[image, queries] = np.asarray(targets[image]["labels"], dtype=np.int64)[objects]
            rows.append(image * q + queries)
            matched.append(self._target_masks(targets[image], mask_logits.shape[2:])[objects])
        class_weights = np.ones(classes, dtype=class_logits.dtype)
        class_weights[-1] = self.eos_coef
        loss_ce = F.cross_entropy(class_logits, wanted, weight=class_weights)
        rows = np.concatenate(rows)
        if len(rows) == 0:
            loss_mask = loss_dice = mask_logits.sum() * 0.0
        else:
            predicted = F.take_rows(F.reshape(mask_logits, n * q, -1), rows)
            truth = Tensor(backend.xp.asarray(np.concatenate(matched).reshape(len(rows), -1).astype(mask_logits.dtype)))
            bce = F.binary_cross_entropy_with_logits(predicted, truth, reduction="none")
            loss_mask = bce.mean(axis=1).sum() / num_masks
            sigma = F.sigmoid(predicted)
            dice = 1.0 - (2.0 * (sigma * truth).sum(axis=1) + 1.0) / (sigma.sum(axis=1) + truth.sum(axis=1) + 1.0)
            loss_dice = dice.sum() / num_masks
        terms = {"loss_ce": loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}
        return {key: value * self.weights[key] for key, value in terms.items()}
