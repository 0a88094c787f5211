"""Mask R-CNN (He et al. 2017): Faster R-CNN with a mask branch, in torchvision's layout.

Each positive proposal (training) or detected box (inference) is pooled by RoIAlign (14 x 14,
2 samples per bin side) from its FPN level; :class:`MaskRCNNHeads` runs four conv3x3 + ReLU
(256 filters), :class:`MaskRCNNPredictor` a 2x2 stride-2 transposed convolution + ReLU and a
1x1 convolution to one M x M mask logit map per class (M = 28).

Training adds torchvision's mask loss: the ground-truth mask of each positive proposal's
matched object is cut to the proposal by RoIAlign (M x M, sampling adaptive), and

    loss_mask = mean over the positives and the M^2 pixels of BCE-with-logits(z_label, m),

z_label the logits of the proposal's own class. Inference adds 'masks' (k, H, W) to each
image's detections: sigma of the label's logits, pasted into the image as torchvision does
(the M x M map padded by one pixel, its box enlarged by (M + 2) / M and cut to whole pixels,
the map resized bilinearly to the box and copied where it lies inside the image).

``maskrcnn_resnet50_fpn``: 44,401,393 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, nn, vision
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish
from lamina.models.faster_rcnn import FasterRCNN
from lamina.models.fpn import BackboneWithFPN
from lamina.models.roi_heads import RoIHeads, fastrcnn_loss, infer_scales
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MaskRCNN", "MaskRCNNHeads", "MaskRCNNPredictor", "MaskRoIHeads", "maskrcnn_loss", "maskrcnn_resnet50_fpn",
           "paste_masks_in_image", "project_masks_on_boxes"]


@register_layer
class MaskRCNNHeads(Module):
    """torchvision's MaskRCNNHeads: blocks '0', '1', ... each a conv3x3 (``layers[i]`` filters,
    padding = ``dilation``) + ReLU (keys 'i.0'); He-normal weights, zero biases."""

    default_name = "mask_head"

    def __init__(self, in_channels: int, layers: Sequence[int] = (256, 256, 256, 256), dilation: int = 1,
                 name: str | None = "mask_head"):
        super().__init__(name=name)
        self.in_channels, self.layers, self.dilation = int(in_channels), [int(n) for n in layers], int(dilation)
        for i, filters in enumerate(self.layers):
            conv = nn.Conv2D(filters, 3, padding=self.dilation, dilation=self.dilation, kernel_init="he_normal",
                             name="0")
            setattr(self, str(i), nn.Sequential(conv, nn.ReLU(name="1"), name=str(i)))

    def build(self, input_shape=None) -> None:
        channels = self.in_channels
        for block, filters in zip(self.children(), self.layers):
            block.build((None, None, None, channels))
            block.built = True
            channels = filters
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"pooled NHWC features (K, h, w, {self.in_channels})")
        for block in self.children():
            x = block(x)
        return x

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "layers": list(self.layers), "dilation": self.dilation,
                "name": self.name}


@register_layer
class MaskRCNNPredictor(Module):
    """torchvision's MaskRCNNPredictor: ``conv5_mask`` (2x2 stride-2 transposed convolution to
    ``dim_reduced`` channels) + ReLU, then ``mask_fcn_logits`` (1x1 to ``num_classes``):
    (K, h, w, in_channels) -> mask logits (K, 2h, 2w, num_classes)."""

    default_name = "mask_predictor"

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int, name: str | None = "mask_predictor"):
        super().__init__(name=name)
        self.in_channels, self.dim_reduced, self.num_classes = int(in_channels), int(dim_reduced), int(num_classes)
        self.conv5_mask = nn.Conv2DTranspose(self.dim_reduced, 2, stride=2, kernel_init="he_normal", name="conv5_mask")
        self.mask_fcn_logits = nn.Conv2D(self.num_classes, 1, kernel_init="he_normal", name="mask_fcn_logits")

    def build(self, input_shape=None) -> None:
        self.conv5_mask.build((None, None, None, self.in_channels))
        self.mask_fcn_logits.build((None, None, None, self.dim_reduced))
        self.conv5_mask.built = self.mask_fcn_logits.built = self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"NHWC features (K, h, w, {self.in_channels})")
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "dim_reduced": self.dim_reduced, "num_classes": self.num_classes,
                "name": self.name}


def project_masks_on_boxes(masks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Mask k (H, W) cut to box k and resampled to size x size by RoIAlign (adaptive sampling,
    not aligned), as torchvision's targets: (k, size, size)."""
    if len(boxes) == 0:
        return np.zeros((0, size, size))
    rois = np.column_stack([np.arange(len(boxes), dtype=np.float64), boxes])
    return vision.roi_align(np.asarray(masks, dtype=np.float64)[..., None], rois, size, 1.0, -1).numpy()[..., 0]


def maskrcnn_loss(mask_logits: Tensor, labels: np.ndarray, mask_targets: np.ndarray) -> Tensor:
    """torchvision's mask loss (module docstring): ``mask_logits`` (P, M, M, C) of the positive
    proposals, their ``labels`` (P,) and projected ground-truth masks ``mask_targets`` (P, M, M)."""
    count, size, _, classes = mask_logits.shape
    if count == 0:
        return mask_logits.sum() * 0.0
    by_class = mask_logits.transpose(0, 3, 1, 2).reshape(count * classes, size * size)
    chosen = F.take_rows(by_class, np.arange(count) * classes + np.asarray(labels, dtype=np.int64))
    return F.binary_cross_entropy_with_logits(chosen, mask_targets.reshape(count, -1).astype(mask_logits.dtype))


def paste_masks_in_image(masks: np.ndarray, boxes: np.ndarray, image_size, padding: int = 1) -> np.ndarray:
    """torchvision's paste of mask maps (k, M, M) into (k, H, W) images at ``boxes`` (k, 4)
    (module docstring)."""
    height, width = image_size
    pasted = np.zeros((len(masks), height, width), dtype=np.float32)
    if len(masks) == 0:
        return pasted
    size = masks.shape[-1]
    scale = (size + 2 * padding) / size
    padded = np.pad(np.asarray(masks, dtype=np.float64), ((0, 0), (padding, padding), (padding, padding)))
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    expanded = np.concatenate([centre - half, centre + half], axis=1).astype(np.int64)  # truncates, as torch
    for k, (mask, (x0, y0, x1, y1)) in enumerate(zip(padded, expanded)):
        box_w, box_h = max(int(x1 - x0 + 1), 1), max(int(y1 - y0 + 1), 1)
        resized = F.interpolate(Tensor(mask[None, :, :, None]), size=(box_h, box_w), mode="bilinear",
                                align_corners=False).numpy()[0, :, :, 0]
        left, right, top, bottom = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
        if right > left and bottom > top:
            pasted[k, top:bottom, left:right] = resized[top - y0:bottom - y0, left - x0:right - x0]
    return pasted


@register_layer
class MaskRoIHeads(RoIHeads):
    """:class:`~lamina.models.RoIHeads` with torchvision's mask branch: ``mask_head`` (a
    :class:`MaskRCNNHeads`) and ``mask_predictor`` (a :class:`MaskRCNNPredictor`) on RoIAlign of
    ``mask_output_size`` from ``mask_featmap_names``. Training targets need 'masks' (n, H, W);
    the losses gain 'loss_mask' and the detections 'masks' (k, H, W) (module docstring)."""

    default_name = "roi_heads"

    def __init__(self, box_head: Module, box_predictor: Module, mask_head: Module, mask_predictor: Module,
                 mask_featmap_names: Sequence[str] = ("0", "1", "2", "3"), mask_output_size: int = 14,
                 mask_sampling_ratio: int = 2, **box_options):
        super().__init__(box_head, box_predictor, **box_options)
        self.mask_head, self.mask_predictor = mask_head, mask_predictor
        self.mask_featmap_names = [str(n) for n in mask_featmap_names]
        self.mask_output_size, self.mask_sampling_ratio = int(mask_output_size), int(mask_sampling_ratio)

    def build(self, input_shape=None) -> None:
        super().build(input_shape)
        for layer in (self.mask_head, self.mask_predictor):
            layer.build(None)
            layer.built = True

    def mask_logits(self, features, boxes: Sequence[np.ndarray], image_size) -> Tensor:
        """The mask logits (K, M, M, C) of the boxes of every image, in order."""
        missing = [n for n in self.mask_featmap_names if n not in features]
        if missing:
            raise ShapeError(f"{self._label()}: the backbone gives maps {list(features)} but mask pooling needs "
                             f"{self.mask_featmap_names}")
        maps = [features[n] for n in self.mask_featmap_names]
        pooler = vision.MultiScaleRoIAlign(infer_scales(maps, image_size), self.mask_output_size,
                                           self.mask_sampling_ratio)
        return self.mask_predictor(self.mask_head(pooler(maps, list(boxes))))

    def _mask_targets(self, proposals, matched, labels, targets, size: int, image_size):
        """The positive proposals of every image, their labels and projected masks (P, M, M)."""
        boxes, positive_labels, projected, start = [], [], [], 0
        for image_proposals, image_matched, target in zip(proposals, matched, targets):
            image_labels = labels[start:start + len(image_proposals)]
            start += len(image_proposals)
            positive = image_labels > 0
            masks = target["masks"]
            if masks.shape[1:] != tuple(image_size):
                raise ShapeError(f"{self._label()}: target masks of shape {masks.shape}; expected (n, "
                                 f"{image_size[0]}, {image_size[1]}), the images' size")
            boxes.append(image_proposals[positive])
            positive_labels.append(image_labels[positive])
            projected.append(project_masks_on_boxes(masks[image_matched[positive]], image_proposals[positive], size))
        return boxes, np.concatenate(positive_labels), np.concatenate(projected)

    def forward(self, features, proposals, image_size, targets=None) -> tuple[list[dict], dict[str, Tensor]]:
        if self.training:
            proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.box_outputs(features, proposals, image_size)
            losses = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            size = 2 * self.mask_output_size
            boxes, positive_labels, mask_targets = self._mask_targets(proposals, matched, labels, targets, size,
                                                                      image_size)
            losses["loss_mask"] = maskrcnn_loss(self.mask_logits(features, boxes, image_size), positive_labels,
                                                mask_targets)
            return [], losses
        detections, _ = super().forward(features, proposals, image_size)
        if sum(len(d["boxes"]) for d in detections) == 0:
            for d in detections:
                d["masks"] = np.zeros((0, *image_size), dtype=np.float32)
            return detections, {}
        logits = self.mask_logits(features, [d["boxes"] for d in detections], image_size).numpy()
        labels = np.concatenate([d["labels"] for d in detections])
        chosen = logits[np.arange(len(labels)), :, :, labels].astype(np.float64)
        probabilities, start = 1.0 / (1.0 + np.exp(-chosen)), 0
        for d in detections:
            rows = slice(start, start + len(d["boxes"]))
            start = rows.stop
            d["masks"] = paste_masks_in_image(probabilities[rows], d["boxes"].astype(np.float64), image_size)
        return detections, {}

    def get_config(self) -> dict:
        return {**super().get_config(), "mask_head": layer_to_config(self.mask_head),
                "mask_predictor": layer_to_config(self.mask_predictor),
                "mask_featmap_names": list(self.mask_featmap_names), "mask_output_size": self.mask_output_size,
                "mask_sampling_ratio": self.mask_sampling_ratio}

    @classmethod
    def from_config(cls, config: dict) -> MaskRoIHeads:
        config = dict(config)
        parts = [layer_from_config(config.pop(key)) for key in ("box_head", "box_predictor", "mask_head",
                                                                "mask_predictor")]
        return cls(*parts, **config)


@register_layer
class MaskRCNN(FasterRCNN):
    """Mask R-CNN (module docstring): :class:`~lamina.models.FasterRCNN` (same options) whose
    ``roi_heads`` is a :class:`MaskRoIHeads`. ``mask_head`` / ``mask_predictor`` default to
    :class:`MaskRCNNHeads` (``mask_layers``, ``mask_dilation``) and :class:`MaskRCNNPredictor`
    (``mask_dim_reduced``); ``mask_featmap_names``, ``mask_output_size`` and
    ``mask_sampling_ratio`` set their RoIAlign. Training targets also need 'masks' (n, H, W)."""

    default_name = "mask_rcnn"
    module_options = (*FasterRCNN.module_options, "mask_head", "mask_predictor")

    def __init__(self, backbone: Module, num_classes: int, mask_head: Module | None = None,
                 mask_predictor: Module | None = None, mask_layers: Sequence[int] = (256, 256, 256, 256),
                 mask_dilation: int = 1, mask_dim_reduced: int = 256,
                 mask_featmap_names: Sequence[str] = ("0", "1", "2", "3"), mask_output_size: int = 14,
                 mask_sampling_ratio: int = 2, name: str | None = "mask_rcnn", **kwargs):
        super().__init__(backbone, num_classes, name=name, **kwargs)
        channels = getattr(backbone, "out_channels", None)
        if mask_head is None:
            if channels is None:
                raise ValueError("MaskRCNN: the backbone needs an out_channels attribute unless mask_head is given")
            mask_head = MaskRCNNHeads(channels, mask_layers, mask_dilation)
        if mask_predictor is None:
            mask_predictor = MaskRCNNPredictor(getattr(mask_head, "layers", mask_layers)[-1], mask_dim_reduced,
                                               num_classes)
        box_options = {key: value for key, value in self.roi_heads.get_config().items()
                       if key not in ("box_head", "box_predictor", "name")}
        self.roi_heads = MaskRoIHeads(self.roi_heads.box_head, self.roi_heads.box_predictor, mask_head,
                                      mask_predictor, mask_featmap_names, mask_output_size, mask_sampling_ratio,
                                      **box_options)
        self.mask_options = {"mask_layers": [int(n) for n in mask_layers], "mask_dilation": int(mask_dilation),
                             "mask_dim_reduced": int(mask_dim_reduced),
                             "mask_featmap_names": [str(n) for n in mask_featmap_names],
                             "mask_output_size": int(mask_output_size), "mask_sampling_ratio": int(mask_sampling_ratio)}

    def _targets(self, targets, count: int) -> list[dict[str, np.ndarray]]:
        checked = super()._targets(targets, count)
        for i, (target, plain) in enumerate(zip(targets, checked)):
            if "masks" not in target:
                raise ValueError(f"{self._label()}: target {i} needs 'masks' (n, height, width) in training mode")
            masks = np.asarray(backend.to_numpy(getattr(target["masks"], "data", target["masks"])))
            if masks.ndim != 3 or len(masks) != len(plain["boxes"]):
                raise ShapeError(f"{self._label()}: target {i} needs masks (n, height, width) for its "
                                 f"{len(plain['boxes'])} boxes, got shape {masks.shape}")
            plain["masks"] = masks
        return checked

    def get_config(self) -> dict:
        return {**super().get_config(), "mask_head": layer_to_config(self.roi_heads.mask_head),
                "mask_predictor": layer_to_config(self.roi_heads.mask_predictor), **self.mask_options}


def maskrcnn_resnet50_fpn(num_classes: int = 91, trainable_backbone_layers: int = 5,
                          input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> MaskRCNN:
    """torchvision's Mask R-CNN ResNet-50 FPN (module docstring; unbuilt, ``model.input_shape``
    = (None, *input_shape)): 44,401,393 parameters with 91 classes; as
    :func:`~lamina.models.fasterrcnn_resnet50_fpn` otherwise."""
    input_shape = check_input(input_shape, "maskrcnn_resnet50_fpn")
    backbone = BackboneWithFPN(50, (1, 2, 3, 4), 256, "pool", trainable_backbone_layers)
    return finish(MaskRCNN(backbone, num_classes, **kwargs), input_shape)
