"""Faster R-CNN (Ren et al. 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region
Proposal Networks") on a feature pyramid, in torchvision's layout and interface.

A backbone (ResNet + FPN) gives NHWC maps; the region proposal network
(:class:`~lamina.models.RegionProposalNetwork`, module ``rpn``) proposes boxes from anchors on
every map; the RoI heads (:class:`~lamina.models.RoIHeads`, module ``roi_heads``) pool each
proposal's features, classify it among ``num_classes`` classes (class 0 the background) and
refine its box. State dict keys are torchvision's ('backbone.body.conv1.weight',
'rpn.head.conv.0.0.weight', 'roi_heads.box_head.fc6.weight', ...).

Training: ``model(images, targets)`` gives {'loss_objectness', 'loss_rpn_box_reg',
'loss_classifier', 'loss_box_reg'}, whose sum is what to back-propagate (target labels from 1).
Evaluation: ``model(images)`` gives one dict {'boxes', 'scores', 'labels'} per image. Images
are normalized but not resized (see :mod:`lamina.models.detection_base`).

``fasterrcnn_resnet50_fpn``: ResNet-50 (frozen batch norms) + FPN on layer1..layer4 and a
max-pooled extra level, anchors 32..512 (one size per level) with ratios 0.5, 1, 2;
41,755,286 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import Tensor
from lamina.models.blocks import check_input, finish
from lamina.models.detection_base import DetectorBase
from lamina.models.fpn import BackboneWithFPN
from lamina.models.roi_heads import FastRCNNPredictor, RoIHeads, TwoMLPHead
from lamina.models.rpn import RegionProposalNetwork, RPNHead
from lamina.nn.layer import layer_to_config, register_layer
from lamina.nn.module import Module

__all__ = ["FasterRCNN", "fasterrcnn_resnet50_fpn"]

DEFAULT_ANCHOR_SIZES = [[32], [64], [128], [256], [512]]
RPN_OPTIONS = ("rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
               "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh",
               "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh")
BOX_OPTIONS = ("box_featmap_names", "box_output_size", "box_sampling_ratio", "box_score_thresh", "box_nms_thresh",
               "box_detections_per_img", "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image",
               "box_positive_fraction", "bbox_reg_weights")


@register_layer
class FasterRCNN(DetectorBase):
    """Faster R-CNN (module docstring) on ``backbone``, any module whose call gives a dict of
    NHWC maps of ``backbone.out_channels`` channels (a :class:`~lamina.models.BackboneWithFPN`).

    The options are torchvision's: ``anchor_sizes`` / ``aspect_ratios`` (one list per map;
    torchvision's ``rpn_anchor_generator``), ``rpn_head`` (an :class:`RPNHead` by default), the
    ``rpn_*`` counts and thresholds, ``box_head`` (a :class:`TwoMLPHead` of
    ``representation_size``) and ``box_predictor`` (a :class:`FastRCNNPredictor`), the
    ``box_*`` options (``box_featmap_names``, ``box_output_size`` and ``box_sampling_ratio``
    set the RoIAlign pooling) and ``bbox_reg_weights``.
    """

    default_name = "faster_rcnn"
    first_label = 1
    module_options = ("backbone", "rpn_head", "box_head", "box_predictor")

    def __init__(self, backbone: Module, num_classes: int, anchor_sizes=None, aspect_ratios=None,
                 image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225),
                 rpn_head: Module | None = None, rpn_pre_nms_top_n_train: int = 2000,
                 rpn_pre_nms_top_n_test: int = 1000, rpn_post_nms_top_n_train: int = 2000,
                 rpn_post_nms_top_n_test: int = 1000, rpn_nms_thresh: float = 0.7, rpn_fg_iou_thresh: float = 0.7,
                 rpn_bg_iou_thresh: float = 0.3, rpn_batch_size_per_image: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_score_thresh: float = 0.0, box_head: Module | None = None,
                 box_predictor: Module | None = None, representation_size: int = 1024,
                 box_featmap_names: Sequence[str] = ("0", "1", "2", "3"), box_output_size: int = 7,
                 box_sampling_ratio: int = 2, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, box_fg_iou_thresh: float = 0.5, box_bg_iou_thresh: float = 0.5,
                 box_batch_size_per_image: int = 512, box_positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] | None = None, name: str | None = "faster_rcnn"):
        super().__init__(num_classes, image_mean, image_std, name=name)
        anchor_sizes = DEFAULT_ANCHOR_SIZES if anchor_sizes is None else anchor_sizes
        aspect_ratios = [[0.5, 1.0, 2.0]] * len(anchor_sizes) if aspect_ratios is None else aspect_ratios
        channels = getattr(backbone, "out_channels", None)
        if channels is None and (rpn_head is None or box_head is None):
            raise ValueError("FasterRCNN: the backbone needs an out_channels attribute (the channels of its maps) "
                             "unless rpn_head and box_head are given")
        if rpn_head is None:
            rpn_head = RPNHead(channels, len(anchor_sizes[0]) * len(aspect_ratios[0]))
        if box_head is None:
            box_head = TwoMLPHead(channels * box_output_size**2, representation_size)
        if box_predictor is None:
            box_predictor = FastRCNNPredictor(getattr(box_head, "representation_size", representation_size),
                                              num_classes)
        if getattr(box_predictor, "num_classes", num_classes) != num_classes:
            raise ValueError(f"FasterRCNN: the box predictor has {box_predictor.num_classes} classes but num_classes "
                             f"is {num_classes}")
        arguments = dict(locals())
        self.options = {key: arguments[key] for key in RPN_OPTIONS + BOX_OPTIONS}
        self.representation_size = int(representation_size)
        self.backbone = backbone
        self.rpn = RegionProposalNetwork(
            anchor_sizes, aspect_ratios, rpn_head, rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image,
            rpn_positive_fraction, {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test}, rpn_nms_thresh,
            rpn_score_thresh)
        self.roi_heads = RoIHeads(box_head, box_predictor, box_featmap_names, box_output_size, box_sampling_ratio,
                                  box_fg_iou_thresh, box_bg_iou_thresh, box_batch_size_per_image,
                                  box_positive_fraction, bbox_reg_weights, box_score_thresh, box_nms_thresh,
                                  box_detections_per_img)

    def build(self, input_shape) -> None:
        self._build_parts(input_shape, self.rpn, self.roi_heads)

    def forward(self, images, targets=None):
        x, checked = self._checked_inputs(images, targets)
        features = self.backbone(self.normalize(x))
        if isinstance(features, Tensor):
            features = {"0": features}
        image_size = tuple(x.shape[1:3])
        proposals, rpn_losses = self.rpn(image_size, list(features.values()), checked)
        detections, box_losses = self.roi_heads(features, proposals, image_size, checked)
        return {**rpn_losses, **box_losses} if self.training else detections

    def get_config(self) -> dict:
        return {"backbone": layer_to_config(self.backbone), "num_classes": self.num_classes,
                "anchor_sizes": self.rpn.anchor_sizes, "aspect_ratios": self.rpn.aspect_ratios,
                "image_mean": self.image_mean, "image_std": self.image_std,
                "rpn_head": layer_to_config(self.rpn.head), "box_head": layer_to_config(self.roi_heads.box_head),
                "box_predictor": layer_to_config(self.roi_heads.box_predictor),
                "representation_size": self.representation_size, **self._plain_options(), "name": self.name}

    def _plain_options(self) -> dict:
        return {key: (list(value) if isinstance(value, (tuple, list)) else value)
                for key, value in self.options.items()}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, levels={len(self.rpn.anchor_sizes)}"


def fasterrcnn_resnet50_fpn(num_classes: int = 91, trainable_backbone_layers: int = 5,
                            input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> FasterRCNN:
    """torchvision's Faster R-CNN ResNet-50 FPN (module docstring; unbuilt, ``model.input_shape``
    = (None, *input_shape)): 41,755,286 parameters with 91 classes. ``trainable_backbone_layers``
    (0 to 5) leaves that many of the last ResNet stages trainable (all by default: there are
    no pretrained weights; torchvision's 3 applies to a pretrained backbone); ``kwargs`` go to
    :class:`FasterRCNN`."""
    input_shape = check_input(input_shape, "fasterrcnn_resnet50_fpn")
    backbone = BackboneWithFPN(50, (1, 2, 3, 4), 256, "pool", trainable_backbone_layers)
    return finish(FasterRCNN(backbone, num_classes, **kwargs), input_shape)
