"""Keypoint R-CNN (He et al. 2017): Faster R-CNN with a keypoint branch, in torchvision's layout.

Each positive proposal (training) or detected box (inference) is pooled by RoIAlign (14 x 14,
2 samples per bin side) from its FPN level; :class:`KeypointRCNNHeads` runs eight conv3x3 +
ReLU (512 filters), :class:`KeypointRCNNPredictor` a 4x4 stride-2 transposed convolution
(padding 1) to K maps and a bilinear x2 upsampling: one S x S heatmap of logits per keypoint
(S = 4 x 14 = 56).

Targets carry 'keypoints' (n, K, 3): x, y in pixels and a visibility (> 0: labelled). A
keypoint (x, y) of a proposal (x1, y1, x2, y2) falls in the heatmap cell

    i = floor((x - x1) S / (x2 - x1)),   j = floor((y - y1) S / (y2 - y1))

(S - 1 on the box's right / bottom edge); it counts when visible and 0 <= i, j < S. Then

    loss_keypoint = mean over the counted (proposal, keypoint) pairs of
                    cross-entropy(softmax over the S^2 logits, target cell j S + i),

the positive proposals paired with their matched objects' keypoints. Inference adds to each
detection 'keypoints' (k, K, 3) and 'keypoints_scores' (k, K): each heatmap is resized
bicubically to the box's size rounded up (w' = ceil(max(x2 - x1, 1)), likewise h'), its argmax
(i, j) mapped back by the half-pixel rule

    x = x1 + (i + 0.5) max(x2 - x1, 1) / w',   y = y1 + (j + 0.5) max(y2 - y1, 1) / h',

visibility 1, and the score the resized logit at the argmax.

``keypointrcnn_resnet50_fpn``: 59,137,258 parameters with 2 classes and 17 keypoints, as
torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import backend, nn, vision
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.interpolate import resize_matrix
from lamina.models.blocks import check_input, finish
from lamina.models.faster_rcnn import FasterRCNN
from lamina.models.fpn import BackboneWithFPN
from lamina.models.roi_heads import RoIHeads, fastrcnn_loss, infer_scales
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["KeypointRCNN", "KeypointRCNNHeads", "KeypointRCNNPredictor", "KeypointRoIHeads", "heatmaps_to_keypoints",
           "keypointrcnn_loss", "keypointrcnn_resnet50_fpn", "keypoints_to_heatmap"]


@register_layer
class KeypointRCNNHeads(Module):
    """torchvision's KeypointRCNNHeads: conv3x3 (``layers[i]`` filters, padding 1) + ReLU pairs
    as one flat sequence, the convolutions at keys '0', '2', '4', ...; He-normal weights, zero
    biases."""

    default_name = "keypoint_head"

    def __init__(self, in_channels: int, layers: Sequence[int] = (512,) * 8, name: str | None = "keypoint_head"):
        super().__init__(name=name)
        self.in_channels, self.layers = int(in_channels), [int(n) for n in layers]
        for i, filters in enumerate(self.layers):
            setattr(self, str(2 * i), nn.Conv2D(filters, 3, padding=1, kernel_init="he_normal", name=str(2 * i)))
            setattr(self, str(2 * i + 1), nn.ReLU(name=str(2 * i + 1)))

    def build(self, input_shape=None) -> None:
        channels = self.in_channels
        for i, filters in enumerate(self.layers):
            conv = getattr(self, str(2 * i))
            conv.build((None, None, None, channels))
            conv.built = True
            channels = filters
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"pooled NHWC features (R, h, w, {self.in_channels})")
        for layer in self.children():
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "layers": list(self.layers), "name": self.name}


@register_layer
class KeypointRCNNPredictor(Module):
    """torchvision's KeypointRCNNPredictor: ``kps_score_lowres`` (4x4 transposed convolution,
    stride 2, padding 1, to ``num_keypoints`` maps), then bilinear x2 upsampling
    (align_corners False): (R, h, w, in_channels) -> heatmap logits (R, 4h, 4w, num_keypoints)."""

    default_name = "keypoint_predictor"

    def __init__(self, in_channels: int, num_keypoints: int, name: str | None = "keypoint_predictor"):
        super().__init__(name=name)
        self.in_channels, self.num_keypoints = int(in_channels), int(num_keypoints)
        if self.num_keypoints < 1:
            raise ValueError(f"KeypointRCNNPredictor: num_keypoints must be at least 1, got {num_keypoints!r}")
        self.kps_score_lowres = nn.Conv2DTranspose(self.num_keypoints, 4, stride=2, padding=1,
                                                   kernel_init="he_normal", name="kps_score_lowres")

    def build(self, input_shape=None) -> None:
        self.kps_score_lowres.build((None, None, None, self.in_channels))
        self.kps_score_lowres.built = self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"NHWC features (R, h, w, {self.in_channels})")
        return F.interpolate(self.kps_score_lowres(x), scale_factor=2.0, mode="bilinear", align_corners=False)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_keypoints": self.num_keypoints, "name": self.name}


def keypoints_to_heatmap(keypoints: np.ndarray, rois: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's keypoint targets (module docstring): ``keypoints`` (R, K, 3) of the objects
    matched to ``rois`` (R, 4) -> the flat cell j S + i of each keypoint (0 where not counted)
    and whether it counts, both (R, K)."""
    keypoints, rois = np.asarray(keypoints, dtype=np.float64), np.asarray(rois, dtype=np.float64)
    x1, y1, x2, y2 = (rois[:, k:k + 1] for k in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        column = np.floor((x - x1) * (size / (x2 - x1)))
        row = np.floor((y - y1) * (size / (y2 - y1)))
    column[x == x2], row[y == y2] = size - 1, size - 1
    inside = (column >= 0) & (row >= 0) & (column < size) & (row < size)
    valid = inside & (keypoints[..., 2] > 0)
    cells = np.where(valid, row * size + column, 0).astype(np.int64)
    return cells, valid


def keypointrcnn_loss(keypoint_logits: Tensor, cells: np.ndarray, valid: np.ndarray) -> Tensor:
    """torchvision's keypoint loss (module docstring): ``keypoint_logits`` (R, S, S, K) of the
    positive proposals and their targets ``cells`` and ``valid`` (R, K) from
    :func:`keypoints_to_heatmap`; 0 (with gradients) when no keypoint counts."""
    count, height, width, joints = keypoint_logits.shape
    rows = np.flatnonzero(np.asarray(valid).reshape(-1))
    if len(rows) == 0:
        return keypoint_logits.sum() * 0.0
    flat = keypoint_logits.transpose(0, 3, 1, 2).reshape(count * joints, height * width)
    return F.cross_entropy(F.take_rows(flat, rows), np.asarray(cells).reshape(-1)[rows])


def heatmaps_to_keypoints(maps: np.ndarray, rois: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's decoding (module docstring) of heatmap logits ``maps`` (R, S, S, K) in the
    boxes ``rois`` (R, 4): keypoints (R, K, 3) (x, y, 1) and their scores (R, K), float64."""
    maps, rois = np.asarray(maps, dtype=np.float64), np.asarray(rois, dtype=np.float64)
    joints = maps.shape[-1]
    keypoints, scores = np.ones((len(rois), joints, 3)), np.zeros((len(rois), joints))
    sizes = np.maximum(rois[:, 2:] - rois[:, :2], 1.0)
    for r, (heatmaps, (width, height)) in enumerate(zip(maps, sizes)):
        out_w, out_h = math.ceil(width), math.ceil(height)
        along_y = resize_matrix(out_h, heatmaps.shape[0], "bicubic")
        along_x = resize_matrix(out_w, heatmaps.shape[1], "bicubic")
        flat = np.einsum("ys,stk,xt->yxk", along_y, heatmaps, along_x).reshape(out_h * out_w, joints)
        best = flat.argmax(axis=0)
        row, column = np.divmod(best, out_w)
        keypoints[r, :, 0] = rois[r, 0] + (column + 0.5) * (width / out_w)
        keypoints[r, :, 1] = rois[r, 1] + (row + 0.5) * (height / out_h)
        scores[r] = flat[best, np.arange(joints)]
    return keypoints, scores


@register_layer
class KeypointRoIHeads(RoIHeads):
    """:class:`~lamina.models.RoIHeads` with torchvision's keypoint branch: ``keypoint_head``
    (a :class:`KeypointRCNNHeads`) and ``keypoint_predictor`` (a :class:`KeypointRCNNPredictor`)
    on RoIAlign of ``keypoint_output_size`` from ``keypoint_featmap_names``. Training targets
    need 'keypoints' (n, K, 3); the losses gain 'loss_keypoint' and the detections 'keypoints'
    (k, K, 3) and 'keypoints_scores' (k, K) (module docstring)."""

    default_name = "roi_heads"

    def __init__(self, box_head: Module, box_predictor: Module, keypoint_head: Module, keypoint_predictor: Module,
                 keypoint_featmap_names: Sequence[str] = ("0", "1", "2", "3"), keypoint_output_size: int = 14,
                 keypoint_sampling_ratio: int = 2, **box_options):
        super().__init__(box_head, box_predictor, **box_options)
        self.keypoint_head, self.keypoint_predictor = keypoint_head, keypoint_predictor
        self.keypoint_featmap_names = [str(n) for n in keypoint_featmap_names]
        self.keypoint_output_size = int(keypoint_output_size)
        self.keypoint_sampling_ratio = int(keypoint_sampling_ratio)

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        for layer in (self.keypoint_head, self.keypoint_predictor):
            layer.build(None)
            layer.built = True

    def keypoint_logits(self, features, boxes: Sequence[np.ndarray], image_size) -> Tensor:
        """The heatmap logits (R, S, S, K) of the boxes of every image, in order."""
        missing = [n for n in self.keypoint_featmap_names if n not in features]
        if missing:
            raise ShapeError(f"{self._label()}: the backbone gives maps {list(features)} but keypoint pooling needs "
                             f"{self.keypoint_featmap_names}")
        maps = [features[n] for n in self.keypoint_featmap_names]
        pooler = vision.MultiScaleRoIAlign(infer_scales(maps, image_size), self.keypoint_output_size,
                                           self.keypoint_sampling_ratio)
        return self.keypoint_predictor(self.keypoint_head(pooler(maps, list(boxes))))

    @staticmethod
    def positive_keypoints(proposals, matched, labels, targets) -> tuple[list[np.ndarray], np.ndarray]:
        """The positive proposals of every image and their matched objects' keypoints (P, K, 3)."""
        boxes, keypoints, start = [], [], 0
        for image_proposals, image_matched, target in zip(proposals, matched, targets):
            positive = labels[start:start + len(image_proposals)] > 0
            start += len(image_proposals)
            boxes.append(image_proposals[positive])
            keypoints.append(target["keypoints"][image_matched[positive]])
        return boxes, np.concatenate(keypoints)

    def forward(self, features, proposals, image_size, targets=None) -> tuple[list[dict], dict[str, Tensor]]:
        if self.training:
            proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.box_outputs(features, proposals, image_size)
            losses = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            boxes, keypoints = self.positive_keypoints(proposals, matched, labels, targets)
            logits = self.keypoint_logits(features, boxes, image_size)
            cells, valid = keypoints_to_heatmap(keypoints, np.concatenate(boxes), logits.shape[1])
            losses["loss_keypoint"] = keypointrcnn_loss(logits, cells, valid)
            return [], losses
        detections, _ = super().forward(features, proposals, image_size)
        joints = self.keypoint_predictor.num_keypoints
        if sum(len(d["boxes"]) for d in detections) == 0:
            for d in detections:
                d["keypoints"] = np.zeros((0, joints, 3), dtype=np.float32)
                d["keypoints_scores"] = np.zeros((0, joints), dtype=np.float32)
            return detections, {}
        logits = self.keypoint_logits(features, [d["boxes"] for d in detections], image_size).numpy()
        keypoints, scores = heatmaps_to_keypoints(logits, np.concatenate([d["boxes"] for d in detections]))
        start = 0
        for d in detections:
            rows = slice(start, start + len(d["boxes"]))
            start = rows.stop
            d["keypoints"], d["keypoints_scores"] = keypoints[rows].astype(np.float32), scores[rows].astype(np.float32)
        return detections, {}

    def get_config(self) -> dict:
        return {**super().get_config(), "keypoint_head": layer_to_config(self.keypoint_head),
                "keypoint_predictor": layer_to_config(self.keypoint_predictor),
                "keypoint_featmap_names": list(self.keypoint_featmap_names),
                "keypoint_output_size": self.keypoint_output_size,
                "keypoint_sampling_ratio": self.keypoint_sampling_ratio}

    @classmethod
    def from_config(cls, config: dict) -> KeypointRoIHeads:
        config = dict(config)
        parts = [layer_from_config(config.pop(key)) for key in ("box_head", "box_predictor", "keypoint_head",
                                                                "keypoint_predictor")]
        return cls(*parts, **config)


@register_layer
class KeypointRCNN(FasterRCNN):
    """Keypoint R-CNN (module docstring): :class:`~lamina.models.FasterRCNN` (same options) whose
    ``roi_heads`` is a :class:`KeypointRoIHeads`. ``keypoint_head`` / ``keypoint_predictor``
    default to :class:`KeypointRCNNHeads` (``keypoint_layers``) and :class:`KeypointRCNNPredictor`
    (``num_keypoints``); ``keypoint_featmap_names``, ``keypoint_output_size`` and
    ``keypoint_sampling_ratio`` set their RoIAlign. Training targets also need 'keypoints'
    (n, num_keypoints, 3)."""

    default_name = "keypoint_rcnn"
    module_options = (*FasterRCNN.module_options, "keypoint_head", "keypoint_predictor")

    def __init__(self, backbone: Module, num_classes: int, num_keypoints: int | None = None,
                 keypoint_head: Module | None = None, keypoint_predictor: Module | None = None,
                 keypoint_layers: Sequence[int] = (512,) * 8,
                 keypoint_featmap_names: Sequence[str] = ("0", "1", "2", "3"), keypoint_output_size: int = 14,
                 keypoint_sampling_ratio: int = 2, name: str | None = "keypoint_rcnn", **kwargs):
        super().__init__(backbone, num_classes, name=name, **kwargs)
        if keypoint_head is None:
            channels = getattr(backbone, "out_channels", None)
            if channels is None:
                raise ValueError("KeypointRCNN: the backbone needs an out_channels attribute unless keypoint_head is "
                                 "given")
            keypoint_head = KeypointRCNNHeads(channels, keypoint_layers)
        if keypoint_predictor is None:
            keypoint_predictor = KeypointRCNNPredictor(getattr(keypoint_head, "layers", keypoint_layers)[-1],
                                                       17 if num_keypoints is None else num_keypoints)
        predicted = getattr(keypoint_predictor, "num_keypoints", None)
        if num_keypoints is not None and predicted is not None and predicted != num_keypoints:
            raise ValueError(f"KeypointRCNN: the keypoint predictor gives {predicted} keypoints but num_keypoints is "
                             f"{num_keypoints}")
        self.num_keypoints = int(predicted if predicted is not None else num_keypoints)
        box_options = {key: value for key, value in self.roi_heads.get_config().items()
                       if key not in ("box_head", "box_predictor", "name")}
        self.roi_heads = KeypointRoIHeads(self.roi_heads.box_head, self.roi_heads.box_predictor, keypoint_head,
                                          keypoint_predictor, keypoint_featmap_names, keypoint_output_size,
                                          keypoint_sampling_ratio, **box_options)
        self.keypoint_options = {"keypoint_layers": [int(n) for n in keypoint_layers],
                                 "keypoint_featmap_names": [str(n) for n in keypoint_featmap_names],
                                 "keypoint_output_size": int(keypoint_output_size),
                                 "keypoint_sampling_ratio": int(keypoint_sampling_ratio)}

    def _targets(self, targets, count: int) -> list[dict[str, np.ndarray]]:
        checked = super()._targets(targets, count)
        for i, (target, plain) in enumerate(zip(targets, checked)):
            if "keypoints" not in target:
                raise ValueError(f"{self._label()}: target {i} needs 'keypoints' (n, {self.num_keypoints}, 3) "
                                 "(x, y, visibility) in training mode")
            keypoints = np.asarray(backend.to_numpy(getattr(target["keypoints"], "data", target["keypoints"])),
                                   dtype=np.float64)
            wanted = (len(plain["boxes"]), self.num_keypoints, 3)
            if keypoints.shape != wanted:
                raise ShapeError(f"{self._label()}: target {i} needs keypoints of shape {wanted} (one (x, y, "
                                 f"visibility) per keypoint for each of its {wanted[0]} boxes), got shape "
                                 f"{keypoints.shape}")
            plain["keypoints"] = keypoints
        return checked

    def get_config(self) -> dict:
        return {**super().get_config(), "num_keypoints": self.num_keypoints,
                "keypoint_head": layer_to_config(self.roi_heads.keypoint_head),
                "keypoint_predictor": layer_to_config(self.roi_heads.keypoint_predictor), **self.keypoint_options}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_keypoints={self.num_keypoints}"


def keypointrcnn_resnet50_fpn(num_classes: int = 2, num_keypoints: int = 17, trainable_backbone_layers: int = 5,
                              input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> KeypointRCNN:
    """torchvision's Keypoint R-CNN ResNet-50 FPN (module docstring; unbuilt,
    ``model.input_shape`` = (None, *input_shape)): 59,137,258 parameters with 2 classes and 17
    keypoints; as :func:`~lamina.models.fasterrcnn_resnet50_fpn` otherwise."""
    input_shape = check_input(input_shape, "keypointrcnn_resnet50_fpn")
    backbone = BackboneWithFPN(50, (1, 2, 3, 4), 256, "pool", trainable_backbone_layers)
    return finish(KeypointRCNN(backbone, num_classes, num_keypoints, **kwargs), input_shape)
