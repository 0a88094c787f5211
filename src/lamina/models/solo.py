"""SOLOv2 (Wang et al. 2020, "SOLOv2: Dynamic and Fast Instance Segmentation"): instance
segmentation by locations, with dynamic mask kernels and Matrix NMS.

Each FPN level l is divided into an S_l x S_l grid (S = 40, 36, 24, 16, 12 on P2 .. P6, scale
ranges (1, 96), (48, 192), (96, 384), (192, 768), (384, 2048) in image pixels). The level's
map, resized (bilinearly) to S x S, feeds two towers of ``stacked_convs`` x (conv3x3 +
GroupNorm + ReLU) shared by the levels:

* the category branch: C sigmoid logits per cell (bias -log((1 - 0.01) / 0.01));
* the kernel branch, whose input has two CoordConv channels appended (x and y normalised to
  [-1, 1]) before the resize: E weights per cell, a 1x1 kernel G_k.

The mask feature branch unifies the levels P2 .. P5 at the finest stride: level i passes
through i x (conv3x3 + GN + ReLU + upsample x2) (one conv on P2; the coarsest level gets the
CoordConv channels), the results are summed and a 1x1 conv + GN + ReLU gives E channels F.
Cell k's mask is M_k = F * G_k (:func:`~lamina.models.solo_ops.dynamic_mask_logits`).
Targets, losses and Matrix NMS: :mod:`lamina.models.solo_ops`.

Inference: cells and classes with sigma(category) > ``score_thresh``; their masks, binarised
at ``mask_thresh`` (0.5), are re-scored by the maskness sum(p [p > 0.5]) / sum([p > 0.5]);
the best ``nms_pre`` go through Matrix NMS (Gaussian, sigma 0.5 here = 2 in the reference
code's exp(-sigma iou^2)); those above ``update_thresh`` are kept, ``max_per_img`` at most,
with masks upsampled (bilinearly) to the image and binarised.

``solov2_resnet50_fpn``: the paper's model on a ResNet-50 FPN (P2 .. P6, 256 channels, E =
256, 4 stacked convs of 512 channels); no published parameter count is checked here.
``solov2_tiny``: a small convolutional backbone for tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.fpn import BackboneWithFPN, FeaturePyramidNetwork
from lamina.models.retinanet import head_conv, prior_bias
from lamina.models.solo_ops import dynamic_mask_logits, matrix_nms, solo_dice_loss, solo_focal_loss, solo_targets
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["SOLOv2", "coord_features", "solov2_resnet50_fpn", "solov2_tiny"]

PAPER_GRIDS = (40, 36, 24, 16, 12)
PAPER_SCALES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))


def coord_features(n: int, h: int, w: int, dtype=np.float32) -> np.ndarray:
    """(n, h, w, 2) CoordConv channels: x then y, each linear from -1 to 1 over the map."""
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.broadcast_to(np.stack([xs, ys], axis=-1).astype(dtype), (n, h, w, 2))


def _with_coords(x: Tensor) -> Tensor:
    n, h, w, _ = x.shape
    return F.concat([x, Tensor(np.ascontiguousarray(coord_features(n, h, w, x.dtype)))], axis=-1)


def _conv_gn_relu(filters: int, kernel: int, groups: int) -> list[Module]:
    return [nn.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_init="he_normal"),
            nn.GroupNorm(groups), nn.ReLU()]


def _build(module: Module, channels: int) -> None:
    module.build((None, None, None, channels))
    for sub in module.modules():
        sub.built = True


@register_with_arguments
class SOLOv2(Module):
    """SOLOv2 (module docstring) for NHWC images whose sides are multiples of the coarsest stride.

    ``backbone_depth``: a ResNet-``depth`` FPN (levels P2 .. P6 at strides 4 .. 64) or, when
    None, a small backbone of stride-2 conv3x3 + ReLU stages of ``widths`` under an FPN (one
    level per stage, strides 2, 4, ...). ``grid_numbers`` and ``scale_ranges``: one per level.
    In training, ``model(images, targets)`` (targets: per image {'masks' (n, H, W), 'labels'
    (n,)}) gives {'loss_mask' (Dice, times ``dice_weight``), 'loss_category' (focal)}; in
    evaluation ``model(images)`` gives per image {'masks' (k, H, W) bool, 'labels', 'scores'}.
    Weights are created at construction."""

    default_name = "solov2"

    def __init__(self, num_classes: int, in_channels: int = 3, backbone_depth: int | None = None,
                 widths: Sequence[int] = (16, 32, 32), fpn_channels: int = 32, head_channels: int = 32,
                 stacked_convs: int = 2, mask_channels: int = 32, mask_branch_channels: int = 32, groups: int = 8,
                 grid_numbers: Sequence[int] = (12, 8, 4), scale_ranges: Sequence[Sequence[float]] | None = None,
                 sigma: float = 0.2, dice_weight: float = 3.0, score_thresh: float = 0.1, mask_thresh: float = 0.5,
                 update_thresh: float = 0.05, nms_pre: int = 500, max_per_img: int = 100,
                 nms_kernel: str = "gaussian", nms_sigma: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.backbone_depth = None if backbone_depth is None else int(backbone_depth)
        self.widths, self.grid_numbers = tuple(int(w) for w in widths), tuple(int(s) for s in grid_numbers)
        levels = 5 if self.backbone_depth is not None else len(self.widths)
        self.strides = tuple(4 * 2 ** i for i in range(5)) if self.backbone_depth else tuple(
            2 ** (i + 1) for i in range(levels))
        if scale_ranges is None:
            scale_ranges = [(s * 2, s * 8) for s in self.strides]
            scale_ranges[0], scale_ranges[-1] = (0, self.strides[0] * 8), (self.strides[-1] * 2, math.inf)
        self.scale_ranges = tuple((float(a), float(b)) for a, b in scale_ranges)
        if len(self.grid_numbers) != levels or len(self.scale_ranges) != levels:
            raise ValueError(f"SOLOv2: {levels} levels need {levels} grid numbers and scale ranges, got "
                             f"{self.grid_numbers} and {self.scale_ranges}")
        if nms_kernel not in ("gaussian", "linear"):
            raise ValueError(f"SOLOv2: nms_kernel must be 'gaussian' or 'linear', got {nms_kernel!r}")
        self.mask_levels = min(4, levels)
        self.fpn_channels, self.head_channels, self.stacked_convs = int(fpn_channels), int(head_channels), int(
            stacked_convs)
        self.mask_channels, self.mask_branch_channels, self.groups = int(mask_channels), int(
            mask_branch_channels), int(groups)
        self.sigma, self.dice_weight = float(sigma), float(dice_weight)
        self.score_thresh, self.mask_thresh, self.update_thresh = float(score_thresh), float(mask_thresh), float(
            update_thresh)
        self.nms_pre, self.max_per_img, self.nms_kernel, self.nms_sigma = int(nms_pre), int(max_per_img), str(
            nms_kernel), float(nms_sigma)
        self._make_layers()
        self.build()

    def build(self, input_shape=None) -> None:
        """Every layer is built for its input channels at construction."""
        self.built = True

    def _make_layers(self) -> None:
        d, g = self.fpn_channels, self.groups
        if self.backbone_depth is not None:
            self.backbone = BackboneWithFPN(self.backbone_depth, (1, 2, 3, 4), d, "pool")
            self.backbone.build((None, None, None, self.in_channels))
        else:
            self.stages = nn.ModuleList(nn.Conv2D(w, 3, stride=2, padding="same", activation="relu", name=str(i))
                                        for i, w in enumerate(self.widths))
            self.fpn = FeaturePyramidNetwork(self.widths, d)
            for conv, channels in zip(self.stages, (self.in_channels, *self.widths)):
                _build(conv, channels)
            _build(self.fpn, self.widths[0])
        tower = [layer for _ in range(self.stacked_convs) for layer in _conv_gn_relu(self.head_channels, 3, g)]
        self.category_tower = nn.Sequential(*tower)
        self.category_out = head_conv(self.num_classes, prior_bias(0.01))
        tower = [layer for _ in range(self.stacked_convs) for layer in _conv_gn_relu(self.head_channels, 3, g)]
        self.kernel_tower = nn.Sequential(*tower)
        self.kernel_out = head_conv(self.mask_channels)
        _build(self.category_tower, d)
        _build(self.kernel_tower, d + 2)
        _build(self.category_out, self.head_channels)
        _build(self.kernel_out, self.head_channels)
        m = self.mask_branch_channels
        self.mask_branch = nn.ModuleList(
            nn.Sequential(*[layer for _ in range(max(1, i)) for layer in _conv_gn_relu(m, 3, g)])
            for i in range(self.mask_levels))
        for i, branch in enumerate(self.mask_branch):
            convs = list(branch.children())
            channels = [d + 2 if i == self.mask_levels - 1 and i > 0 else d] + [m] * (len(convs) // 3 - 1)
            for k in range(len(convs) // 3):
                for layer in convs[3 * k:3 * k + 3]:
                    _build(layer, m if layer is not convs[3 * k] else channels[k])
            branch.built = True
        self.mask_out = nn.Sequential(*_conv_gn_relu(self.mask_channels, 1, g))
        _build(self.mask_out, m)

    # -- running -------------------------------------------------------------------------
    def features(self, images) -> list[Tensor]:
        """The FPN levels, finest first."""
        if self.backbone_depth is not None:
            return list(self.backbone(images).values())
        maps, x = [], images
        for conv in self.stages:
            x = conv(x)
            maps.append(x)
        return list(self.fpn(maps).values())

    def mask_features(self, levels: list[Tensor]) -> Tensor:
        """The unified mask feature map F (N, h, w, E) at the finest level's stride."""
        total = None
        last = self.mask_levels - 1
        for i, branch in enumerate(self.mask_branch):
            x = _with_coords(levels[i]) if i == last and i > 0 else levels[i]
            layers = list(branch.children())
            for k in range(len(layers) // 3):
                for layer in layers[3 * k:3 * k + 3]:
                    x = layer(x)
                if i > 0:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            total = x if total is None else F.add(total, x)
        return self.mask_out(total)

    def heads(self, levels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Category logits (N, sum S^2, C) and kernels (N, sum S^2, E), cells row-major per level."""
        categories, kernels = [], []
        for level, grid in zip(levels, self.grid_numbers):
            n = level.shape[0]
            kernel_in = F.interpolate(_with_coords(level), size=(grid, grid), mode="bilinear", align_corners=False)
            category_in = kernel_in[..., :-2]
            categories.append(F.reshape(self.category_out(self.category_tower(category_in)), n, grid * grid, -1))
            kernels.append(F.reshape(self.kernel_out(self.kernel_tower(kernel_in)), n, grid * grid, -1))
        return F.concat(categories, axis=1), F.concat(kernels, axis=1)

    def forward(self, images, targets: Sequence[dict] | None = None):
        x = as_tensor(images)
        coarsest = self.strides[-1]
        if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % coarsest or x.shape[2] % coarsest:
            raise ShapeError(f"SOLOv2: expected images (N, H, W, {self.in_channels}) with H and W multiples of "
                             f"{coarsest}, got {x.shape}")
        levels = self.features(x)
        categories, kernels = self.heads(levels)
        masks = self.mask_features(levels[:self.mask_levels])
        if self.training:
            if targets is None or len(targets) != x.shape[0]:
                raise ValueError(f"SOLOv2: training needs one target dict per image ({x.shape[0]}), got "
                                 f"{None if targets is None else len(targets)}")
            return self.compute_loss(categories, kernels, masks, targets, x.shape[1:3])
        with no_grad():
            return [self.postprocess(c.numpy(), k.numpy(), m.numpy(), x.shape[1:3])
                    for c, k, m in zip(categories, kernels, masks)]

    def compute_loss(self, categories: Tensor, kernels: Tensor, masks: Tensor, targets: Sequence[dict],
                     image_size) -> dict[str, Tensor]:
        """{'loss_mask', 'loss_category'} (:mod:`lamina.models.solo_ops`)."""
        factor = image_size[0] // masks.shape[1]
        all_labels, dice = [], []
        for n, target in enumerate(targets):
            gt_masks = np.asarray(target["masks"], dtype=np.float64)
            if gt_masks.ndim != 3 or gt_masks.shape[1:] != tuple(image_size):
                raise ShapeError(f"SOLOv2: target masks of image {n} must be (n, {image_size[0]}, {image_size[1]}), "
                                 f"got {gt_masks.shape}")
            levels = solo_targets(gt_masks, np.asarray(target["labels"]), self.grid_numbers, self.scale_ranges,
                                  self.sigma)
            labels = np.concatenate([cate for cate, _ in levels])
            instances = np.concatenate([inst for _, inst in levels])
            all_labels.append(labels)
            cells = np.flatnonzero(instances >= 0)
            if len(cells):
                h, w = gt_masks.shape[1:]
                small = gt_masks.reshape(-1, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
                logits = dynamic_mask_logits(masks[n], F.take_rows(kernels[n], cells))
                dice.append(solo_dice_loss(logits, small[instances[cells]]))
        labels = np.concatenate(all_labels)
        positives = int((labels >= 0).sum())
        category = solo_focal_loss(F.reshape(categories, -1, self.num_classes), labels, positives)
        mask_loss = F.mean(F.concat(dice, axis=0)) if dice else F.sum(kernels) * 0.0 + F.sum(masks) * 0.0
        return {"loss_mask": mask_loss * self.dice_weight, "loss_category": category}

    def postprocess(self, categories: np.ndarray, kernels: np.ndarray, features: np.ndarray, image_size) -> dict:
        """Instances of one image from its category logits, kernels and mask features (module docstring)."""
        height, width = image_size
        probabilities = 1.0 / (1.0 + np.exp(-categories.astype(np.float64)))
        cells, classes = np.nonzero(probabilities > self.score_thresh)
        empty = {"masks": np.zeros((0, height, width), dtype=bool), "labels": np.zeros(0, dtype=np.int64),
                 "scores": np.zeros(0)}
        if len(cells) == 0:
            return empty
        scores = probabilities[cells, classes]
        logits = np.einsum("hwe,ke->khw", features.astype(np.float64), kernels[cells].astype(np.float64))
        soft = 1.0 / (1.0 + np.exp(-logits))
        binary = soft > self.mask_thresh
        areas = binary.sum(axis=(1, 2))
        keep = areas > 0
        if not keep.any():
            return empty
        soft, binary, areas, scores, classes = soft[keep], binary[keep], areas[keep], scores[keep], classes[keep]
        scores = scores * (soft * binary).sum(axis=(1, 2)) / areas
        order = np.argsort(-scores, kind="stable")[:self.nms_pre]
        soft, binary, scores, classes = soft[order], binary[order], scores[order], classes[order]
        scores = matrix_nms(binary, scores, classes, self.nms_kernel, self.nms_sigma)
        keep = np.flatnonzero(scores >= self.update_thresh)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:self.max_per_img]
        if len(keep) == 0:
            return empty
        up = F.interpolate(Tensor(soft[keep][..., None]), size=(height, width), mode="bilinear", align_corners=False)
        return {"masks": up.numpy()[..., 0] > self.mask_thresh, "labels": classes[keep].astype(np.int64),
                "scores": scores[keep]}


def solov2_resnet50_fpn(num_classes: int = 80, **kwargs) -> SOLOv2:
    """SOLOv2 on a ResNet-50 FPN with the paper's grids and scale ranges (module docstring)."""
    options = {"backbone_depth": 50, "fpn_channels": 256, "head_channels": 512, "stacked_convs": 4,
               "mask_channels": 256, "mask_branch_channels": 128, "groups": 32, "grid_numbers": PAPER_GRIDS,
               "scale_ranges": PAPER_SCALES, **kwargs}
    return SOLOv2(num_classes, **options)


def solov2_tiny(num_classes: int = 3, **kwargs) -> SOLOv2:
    """A small SOLOv2 for tests: three stride-2 stages (8, 16, 16 channels), 16-channel FPN and
    heads, one stacked conv, grids 8, 4, 2."""
    options = {"widths": (8, 16, 16), "fpn_channels": 16, "head_channels": 16, "stacked_convs": 1,
               "mask_channels": 16, "mask_branch_channels": 16, "groups": 4, "grid_numbers": (8, 4, 2), **kwargs}
    return SOLOv2(num_classes, **options)
