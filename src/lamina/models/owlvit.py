"""OWL-ViT (Minderer et al. 2022, "Simple open-vocabulary object detection with vision
transformers"): a CLIP whose image tower's patch tokens each become a detection, classified
against the embeddings of free-text queries.

    tokens   z = layer_norm(z_L[1:] * z_L[0])          the image tower's last states after its
                                                        post_layernorm, each patch token scaled
                                                        by the class token, (N, P, E)
    boxes    b = sigmoid(MLP(z) + beta)                 (cx, cy, w, h) per token, beta the
                                                        token's grid cell in logit space:
                                                        logit((c + 1/2) / n) for the centre,
                                                        logit(1 / n) for the sizes
    classes  e = class_embed(z);  q = the text tower's projected embedding of each query
             logit = (e . q / (|e| |q|) + shift(z)) * (elu(scale(z)) + 1)
                                                        shift, scale one-unit linear maps

A query may also be an image region: the class embedding of the token whose box best covers
it (:meth:`OWLViT.image_query_embeddings`). Training matches tokens to the objects one to one
(Hungarian matching of class, L1 and GIoU costs, as DETR) and sums a sigmoid class loss over
all tokens and queries (focal or plain binary cross-entropy) with L1 and 1 - GIoU on the
matched boxes (:class:`OWLViTCriterion`). :func:`owlvit_postprocess` turns the outputs into
the detections of lamina's other detectors: per token its best query's score, thresholded,
optionally de-duplicated by NMS, the top k kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend, vision
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.clip import CLIP
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["OWLViT", "OWLViTCriterion", "OWLViTOutput", "owlvit_box_bias", "owlvit_matching_cost",
           "owlvit_postprocess"]

CLASS_LOSSES = ("focal", "bce")


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def owlvit_box_bias(grid_size: int) -> np.ndarray:
    """The box bias beta (n^2, 4) of an n x n token grid, row by row: (logit((x + 1/2) / n),
    logit((y + 1/2) / n), logit(1 / n), logit(1 / n)) for the token of column x and row y, so
    that a zero head output predicts the token's own cell (a 1 x 1 grid, whose logit(1) is
    infinite, gets 0 for the sizes: half the image)."""
    n = positive_int(grid_size, "owlvit_box_bias: grid_size")
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    size = np.full(n * n, _logit(np.float64(1.0 / n)) if n > 1 else 0.0)
    return np.stack([_logit(cx.reshape(-1)), _logit(cy.reshape(-1)), size, size], axis=1)


@dataclass
class OWLViTOutput:
    """Per image and token: ``logits`` (N, P, Q) against the Q queries, ``pred_boxes`` (N, P, 4)
    normalised (cx, cy, w, h), ``class_embeds`` (N, P, D) (not normalised) and the merged
    tokens ``image_embeds`` (N, P, E); ``query_embeds`` (Q, D) or (N, Q, D) as given."""

    logits: Tensor
    pred_boxes: Tensor
    class_embeds: Tensor
    image_embeds: Tensor
    query_embeds: Tensor


@register_with_arguments(modules=("clip_model",))
class OWLViT(Module):
    """OWL-ViT on a :class:`~lamina.models.CLIP` (module docstring). ``model(pixel_values,
    input_ids=None, attention_mask=None, query_embeds=None)`` -> :class:`OWLViTOutput`: the
    queries are texts (ids (Q, T), shared by the batch, through the text tower) or embeddings
    ``query_embeds`` (Q, D) or (N, Q, D), D the CLIP's projection_dim. Sub-modules ``clip``,
    ``layer_norm``, ``class_embed``, ``logit_shift``, ``logit_scale``, ``box_head`` (Dense
    layers E -> E -> E -> 4, gelu between); ``box_hidden`` the box MLP's width (E by default)."""

    default_name = "owlvit"

    def __init__(self, clip_model: CLIP, box_hidden: int | None = None, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(clip_model, CLIP):
            raise TypeError(f"OWLViT: clip_model must be a lamina.models.CLIP, got {type(clip_model).__name__}")
        self.clip = clip_model
        vision_config = clip_model.vision_config
        self.hidden_size = vision_config["hidden_size"]
        self.grid_size = vision_config["image_size"] // vision_config["patch_size"]
        self.box_hidden = positive_int(box_hidden or self.hidden_size, "OWLViT: box_hidden")
        self.layer_norm = LayerNorm(-1, eps=vision_config["layer_norm_eps"])
        self.class_embed = Dense(clip_model.projection_dim)
        self.logit_shift = Dense(1)
        self.logit_scale = Dense(1)
        self.box_head = ModuleList([Dense(self.box_hidden), Dense(self.box_hidden), Dense(4)])
        self.box_bias = owlvit_box_bias(self.grid_size)

    # -- the heads ---------------------------------------------------------------------
    def image_embeddings(self, pixel_values) -> Tensor:
        """The merged tokens layer_norm(z_L[1:] * z_L[0]): (N, P, E)."""
        self.clip._ensure_built()
        vision_model = self.clip.vision_model
        states = vision_model.post_layernorm(vision_model(pixel_values)[0])
        patches = F.getitem(states, (slice(None), slice(1, None)))
        return self.layer_norm(F.mul(patches, F.getitem(states, (slice(None), slice(0, 1)))))

    def box_predictions(self, image_embeds) -> Tensor:
        """sigmoid(MLP(z) + beta): (N, P, 4) normalised (cx, cy, w, h)."""
        x = as_tensor(image_embeds)
        if x.ndim != 3 or x.shape[1] != len(self.box_bias):
            raise ShapeError(f"{self._label()}: box predictions need tokens (batch, {len(self.box_bias)}, features) "
                             f"of the {self.grid_size} x {self.grid_size} grid, got {tuple(x.shape)}")
        for i, layer in enumerate(self.box_head):
            x = layer(x) if i == len(self.box_head) - 1 else F.gelu(layer(x))
        return F.sigmoid(F.add(x, Tensor(self.box_bias.astype(x.dtype))))

    def class_logits(self, image_embeds, query_embeds) -> tuple[Tensor, Tensor]:
        """((cos(e, q) + shift) * (elu(scale) + 1) (N, P, Q), e = class_embed(z) (N, P, D)) for
        queries (Q, D) or (N, Q, D)."""
        z = as_tensor(image_embeds)
        q = as_tensor(query_embeds)
        if q.ndim not in (2, 3) or q.shape[-1] != self.clip.projection_dim:
            raise ShapeError(f"{self._label()}: query embeddings must be (queries, {self.clip.projection_dim}) or "
                             f"(batch, queries, {self.clip.projection_dim}), got {tuple(q.shape)}")
        class_embeds = self.class_embed(z)
        e, q = F.normalize(class_embeds, axis=-1), F.normalize(q, axis=-1)
        q_t = F.transpose(q, 1, 0) if q.ndim == 2 else F.transpose(q, 0, 2, 1)
        cosine = F.matmul(e, q_t)
        scale = F.add(F.elu(self.logit_scale(z)), 1.0)
        return F.mul(F.add(cosine, self.logit_shift(z)), scale), class_embeds

    def text_query_embeddings(self, input_ids, attention_mask=None) -> Tensor:
        """The CLIP text tower's projected embeddings of the queries: (Q, D)."""
        self.clip._ensure_built()
        return self.clip.get_text_features(input_ids, attention_mask)

    def forward(self, pixel_values, input_ids=None, attention_mask=None, query_embeds=None) -> OWLViTOutput:
        if (input_ids is None) == (query_embeds is None):
            raise ValueError(f"{self._label()}: give the queries as input_ids or as query_embeds (exactly one)")
        if query_embeds is None:
            query_embeds = self.text_query_embeddings(input_ids, attention_mask)
        image_embeds = self.image_embeddings(pixel_values)
        logits, class_embeds = self.class_logits(image_embeds, query_embeds)
        return OWLViTOutput(logits, self.box_predictions(image_embeds), class_embeds, image_embeds,
                            as_tensor(query_embeds))

    def image_query_embeddings(self, pixel_values, boxes) -> Tensor:
        """Image-conditioned queries: per image the class embedding (N, D) of the token whose
        predicted box has the highest IoU with the given box (N, 4) (normalised cx, cy, w, h);
        usable as ``query_embeds`` for other images. No gradient."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        with no_grad():
            image_embeds = self.image_embeddings(pixel_values)
            if len(boxes) != image_embeds.shape[0]:
                raise ShapeError(f"{self._label()}: need one query box per image, got {len(boxes)} boxes for "
                                 f"{image_embeds.shape[0]} images")
            predicted = self.box_predictions(image_embeds).numpy().astype(np.float64)
            class_embeds = self.class_embed(image_embeds).numpy()
        rows = []
        for image, box in enumerate(boxes):
            overlap = vision.box_iou(vision.box_convert(predicted[image], "cxcywh", "xyxy"),
                                     vision.box_convert(box[None], "cxcywh", "xyxy"))[:, 0]
            rows.append(class_embeds[image, int(np.argmax(overlap))])
        return Tensor(backend.xp.asarray(np.stack(rows)))

    def extra_repr(self) -> str:
        return f"grid={self.grid_size}x{self.grid_size}, box_hidden={self.box_hidden}"


# -- training --------------------------------------------------------------------------
def _corners(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)


def owlvit_matching_cost(logits, boxes, target_labels, target_boxes, cost_class: float = 1.0,
                         cost_bbox: float = 5.0, cost_giou: float = 2.0) -> np.ndarray:
    """The cost (P, n) of pairing each token with each object of one image:

        C[i, j] = -cost_class sigmoid(logits[i, c_j]) + cost_bbox ||b_i - g_j||_1 - cost_giou GIoU(b_i, g_j),

    ``logits`` (P, Q), ``boxes`` (P, 4) and ``target_boxes`` (n, 4) (cx, cy, w, h),
    ``target_labels`` (n,) query indices."""
    logits, boxes = np.asarray(logits, dtype=np.float64), np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(target_labels).reshape(-1).astype(np.int64)
    targets = np.asarray(target_boxes, dtype=np.float64).reshape(-1, 4)
    if logits.ndim != 2 or boxes.shape != (logits.shape[0], 4) or len(targets) != len(labels):
        raise ShapeError(f"owlvit_matching_cost: expected logits (P, Q), boxes (P, 4), target labels (n,) and boxes "
                         f"(n, 4); got {logits.shape}, {boxes.shape}, {labels.shape} and {targets.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"owlvit_matching_cost: target labels {labels.tolist()} must lie in [0, {logits.shape[1]})")
    probabilities = 1.0 / (1.0 + np.exp(-logits[:, labels]))
    l1 = np.abs(boxes[:, None, :] - targets[None, :, :]).sum(axis=-1)
    giou = vision.generalized_box_iou(_corners(boxes), _corners(targets))
    return cost_bbox * l1 - cost_class * probabilities - cost_giou * np.asarray(giou)


class OWLViTCriterion:
    """OWL-ViT's training loss of outputs against targets (per image 'labels' (n,) query
    indices and 'boxes' (n, 4) normalised (cx, cy, w, h)). Tokens are matched one to one to
    the objects by :func:`owlvit_matching_cost` (Hungarian algorithm); with y (N, P, Q) one at
    each matched (token, label) and zero elsewhere and n_boxes the objects of the batch (at
    least 1):

        loss_class = sum focal(logits, y) / n_boxes  ('focal': alpha, gamma as torchvision's)
                     or sum BCE(logits, y) / n_boxes  ('bce')
        loss_bbox  = sum over matched pairs ||b - g||_1 / n_boxes
        loss_giou  = sum over matched pairs (1 - GIoU(b, g)) / n_boxes

    ``criterion(outputs, targets)`` gives the three terms times ``class_weight``,
    ``bbox_weight``, ``giou_weight``: their sum is the loss."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 class_loss: str = "focal", alpha: float = 0.25, gamma: float = 2.0, class_weight: float = 1.0,
                 bbox_weight: float = 5.0, giou_weight: float = 2.0):
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"OWLViTCriterion: class_loss must be one of {CLASS_LOSSES}, got {class_loss!r}")
        self.costs = {"cost_class": float(cost_class), "cost_bbox": float(cost_bbox), "cost_giou": float(cost_giou)}
        self.class_loss, self.alpha, self.gamma = class_loss, float(alpha), float(gamma)
        self.weights = {"loss_class": float(class_weight), "loss_bbox": float(bbox_weight),
                        "loss_giou": float(giou_weight)}

    def match(self, logits, boxes, targets: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image (token indices, object indices), ordered by token."""
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s
        logits, boxes = np.asarray(logits), np.asarray(boxes)
        matches = []
        for image_logits, image_boxes, target in zip(logits, boxes, targets):
            cost = owlvit_matching_cost(image_logits, image_boxes, target["labels"], target["boxes"], **self.costs)
            tokens, objects = linear_sum_assignment(cost)
            order = np.argsort(tokens)
            matches.append((tokens[order].astype(np.int64), objects[order].astype(np.int64)))
        return matches

    def __call__(self, outputs: OWLViTOutput, targets: Sequence[dict]) -> dict[str, Tensor]:
        logits, boxes = outputs.logits, outputs.pred_boxes
        n, p, q = logits.shape
        if len(targets) != n:
            raise ValueError(f"OWLViTCriterion: got {len(targets)} targets for {n} images")
        num_boxes = max(1, sum(len(np.asarray(t["labels"]).reshape(-1)) for t in targets))
        matches = self.match(logits.numpy(), boxes.numpy(), targets)
        wanted = np.zeros((n, p, q), dtype=logits.dtype)
        rows, matched = [], []
        for image, ((tokens, objects), target) in enumerate(zip(matches, targets)):
            wanted[image, tokens, np.asarray(target["labels"]).reshape(-1)[objects]] = 1.0
            rows.append(image * p + tokens)
            matched.append(np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)[objects])
        if self.class_loss == "focal":
            loss_class = vision.sigmoid_focal_loss(logits, wanted, self.alpha, self.gamma, reduction="sum")
        else:
            loss_class = F.binary_cross_entropy_with_logits(logits, wanted, reduction="sum")
        rows = np.concatenate(rows)
        if len(rows) == 0:
            loss_bbox = loss_giou = boxes.sum() * 0.0
        else:
            predicted = F.take_rows(F.reshape(boxes, n * p, 4), rows)
            truth = np.concatenate(matched).astype(boxes.dtype)
            loss_bbox = F.abs(predicted - Tensor(truth)).sum()
            loss_giou = vision.generalized_box_iou_loss(vision.box_convert(predicted, "cxcywh", "xyxy"),
                                                        _corners(truth), reduction="sum", eps=0.0)
        terms = {"loss_class": loss_class, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        return {key: value * (self.weights[key] / num_boxes) for key, value in terms.items()}


# -- detection -------------------------------------------------------------------------
def owlvit_postprocess(logits, boxes, image_size: tuple[int, int], score_thresh: float = 0.1, top_k: int = 100,
                       nms_threshold: float | None = None) -> list[dict[str, np.ndarray]]:
    """Per image the detections of OWL-ViT's ``logits`` (N, P, Q) and ``boxes`` (N, P, 4)
    (normalised cx, cy, w, h) for images of (height, width) pixels: each token's best query
    (score sigmoid(logit), label the query index), those scoring above ``score_thresh``, by
    decreasing score, thinned by NMS within each label when ``nms_threshold`` is given, the
    first ``top_k`` kept. Dicts of 'boxes' (k, 4) (x1, y1, x2, y2) in pixels, 'scores' (k,)
    and 'labels' (k,), as lamina's other detectors give."""
    logits = np.asarray(logits.numpy() if isinstance(logits, Tensor) else logits, dtype=np.float64)
    boxes = np.asarray(boxes.numpy() if isinstance(boxes, Tensor) else boxes, dtype=np.float64)
    if logits.ndim != 3 or boxes.shape != (*logits.shape[:2], 4):
        raise ShapeError(f"owlvit_postprocess: expected logits (N, P, Q) and boxes (N, P, 4), got {logits.shape} "
                         f"and {boxes.shape}")
    height, width = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    scores_all = 1.0 / (1.0 + np.exp(-logits))
    detections = []
    for image_scores, image_boxes in zip(scores_all, boxes):
        scores, labels = image_scores.max(axis=-1), image_scores.argmax(axis=-1)
        keep = np.flatnonzero(scores > score_thresh)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        corners = _corners(image_boxes[keep]) * scale
        if nms_threshold is not None and len(keep):
            kept = vision.batched_nms(corners, scores[keep], labels[keep], nms_threshold)
            keep, corners = keep[kept], corners[kept]
        keep, corners = keep[:top_k], corners[:top_k]
        detections.append({"boxes": corners.astype(np.float32), "scores": scores[keep].astype(np.float32),
                           "labels": labels[keep].astype(np.int64)})
    return detections
