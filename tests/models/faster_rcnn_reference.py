"""PyTorch references for Faster R-CNN with torchvision's module names (torchvision is not
installed): the RPN head, the box head and predictor (NCHW), and torchvision's formulas for the
RPN and Fast R-CNN training targets and losses and for both post-processing steps, written
independently in torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import nn


class RPNHead(nn.Module):
    def __init__(self, channels, anchors):
        super().__init__()
        self.conv = nn.Sequential(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()))
        self.cls_logits = nn.Conv2d(channels, anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, 4 * anchors, 1)

    def forward(self, features):
        hidden = [self.conv(x) for x in features]
        return [self.cls_logits(h) for h in hidden], [self.bbox_pred(h) for h in hidden]


class TwoMLPHead(nn.Module):
    def __init__(self, in_channels, size):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, size)
        self.fc7 = nn.Linear(size, size)

    def forward(self, x):
        return torch.relu(self.fc7(torch.relu(self.fc6(x.flatten(start_dim=1)))))


class FastRCNNPredictor(nn.Module):
    def __init__(self, in_channels, classes):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, classes)
        self.bbox_pred = nn.Linear(in_channels, 4 * classes)

    def forward(self, x):
        return self.cls_score(x), self.bbox_pred(x)


class BoxHead(nn.Module):
    def __init__(self, in_channels, size, classes):
        super().__init__()
        self.box_head = TwoMLPHead(in_channels, size)
        self.box_predictor = FastRCNNPredictor(size, classes)

    def forward(self, pooled):
        return self.box_predictor(self.box_head(pooled))


# -- box utilities ------------------------------------------------------------------------------
def box_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def matcher(quality, high, low, low_quality):
    best, matches = quality.max(dim=0)
    all_matches = matches.clone()
    matches[best < low] = -1
    matches[(best >= low) & (best < high)] = -2
    if low_quality:
        update = torch.where(quality == quality.max(dim=1).values[:, None])[1]
        matches[update] = all_matches[update]
    return matches


def encode(gt, reference, weights):
    wx, wy, ww, wh = weights
    rw, rh = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    rx, ry = reference[:, 0] + 0.5 * rw, reference[:, 1] + 0.5 * rh
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw), wh * torch.log(gh / rh)],
                       dim=1)


XFORM_CLIP = math.log(1000.0 / 16)


def decode(codes, reference, weights, clip=XFORM_CLIP):
    """codes (K, 4C) -> boxes (K, C, 4)."""
    wx, wy, ww, wh = weights
    codes = codes.reshape(codes.shape[0], -1, 4)
    rw, rh = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    rx, ry = reference[:, 0] + 0.5 * rw, reference[:, 1] + 0.5 * rh
    dx, dy = codes[..., 0] / wx, codes[..., 1] / wy
    dw, dh = (codes[..., 2] / ww).clamp(max=clip), (codes[..., 3] / wh).clamp(max=clip)
    x, y = dx * rw[:, None] + rx[:, None], dy * rh[:, None] + ry[:, None]
    w, h = torch.exp(dw) * rw[:, None], torch.exp(dh) * rh[:, None]
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=2)


def clip_boxes(boxes, size):
    height, width = size
    return torch.stack([boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height),
                        boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)], dim=-1)


def nms(boxes, scores, threshold):
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    iou = box_iou(boxes, boxes)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes, scores, idxs, threshold):
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    offsets = idxs.to(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, threshold)


def large_enough(boxes, min_size):
    return torch.where((boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size))[0]


# -- the region proposal network ------------------------------------------------------------------------
def rpn_loss(objectness, deltas, anchors, targets):
    """torchvision's RPN losses with every non-ignored anchor sampled: objectness (N, A),
    deltas (N, A, 4), anchors (A, 4)."""
    labels, regression = [], []
    for target in targets:
        matched = matcher(box_iou(target["boxes"], anchors), 0.7, 0.3, True)
        image_labels = (matched >= 0).to(objectness.dtype)
        image_labels[matched == -1] = 0.0
        image_labels[matched == -2] = -1.0
        labels.append(image_labels)
        regression.append(encode(target["boxes"][matched.clamp(min=0)], anchors, (1.0, 1.0, 1.0, 1.0)))
    labels, regression = torch.cat(labels), torch.cat(regression)
    positive, sampled = torch.where(labels >= 1)[0], torch.where(labels >= 0)[0]
    box = TF.smooth_l1_loss(deltas.reshape(-1, 4)[positive], regression[positive], beta=1 / 9,
                            reduction="sum") / sampled.numel()
    objectness_loss = TF.binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled], labels[sampled])
    return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box}


def filter_proposals(objectness, deltas, anchors, level_sizes, image_size, pre_n, post_n, nms_thresh, score_thresh):
    """torchvision's RegionProposalNetwork.filter_proposals on decoded proposals."""
    results = []
    for logits, codes in zip(objectness, deltas):
        picked, levels, start = [], [], 0
        for level, size in enumerate(level_sizes):
            top = logits[start:start + size].topk(min(pre_n, size)).indices + start
            picked.append(top)
            levels.append(torch.full((len(top),), level))
            start += size
        picked, levels = torch.cat(picked), torch.cat(levels)
        boxes = clip_boxes(decode(codes[picked], anchors[picked], (1.0, 1.0, 1.0, 1.0))[:, 0], image_size)
        scores = torch.sigmoid(logits[picked])
        keep = large_enough(boxes, 1e-3)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = torch.where(scores >= score_thresh)[0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_n]
        results.append(boxes[keep])
    return results


# -- the box heads --------------------------------------------------------------------------------------
def fastrcnn_targets(proposals, targets, weights=(10.0, 10.0, 5.0, 5.0)):
    """Per image: the ground truths added to the proposals, matched at 0.5 (no low-quality
    matches); every proposal sampled. Returns the proposals, labels and regression targets,
    concatenated over the images."""
    all_proposals, all_labels, all_targets = [], [], []
    for image_proposals, target in zip(proposals, targets):
        image_proposals = torch.cat([image_proposals, target["boxes"]])
        matched = matcher(box_iou(target["boxes"], image_proposals), 0.5, 0.5, False)
        labels = target["labels"][matched.clamp(min=0)].clone()
        labels[matched == -1] = 0
        all_proposals.append(image_proposals)
        all_labels.append(labels)
        all_targets.append(encode(target["boxes"][matched.clamp(min=0)], image_proposals, weights))
    return torch.cat(all_proposals), torch.cat(all_labels), torch.cat(all_targets)


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets):
    classification = TF.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    per_class = box_regression.reshape(len(labels), -1, 4)
    box = TF.smooth_l1_loss(per_class[positive, labels[positive]], regression_targets[positive], beta=1 / 9,
                            reduction="sum")
    return {"loss_classifier": classification, "loss_box_reg": box / labels.numel()}


def postprocess_detections(class_logits, box_regression, proposals, image_size, score_thresh=0.05, nms_thresh=0.5,
                           detections_per_img=100, weights=(10.0, 10.0, 5.0, 5.0)):
    """torchvision's RoIHeads.postprocess_detections."""
    num_classes = class_logits.shape[1]
    boxes = decode(box_regression, torch.cat(proposals), weights)
    scores = TF.softmax(class_logits, -1)
    results, start = [], 0
    for image_proposals in proposals:
        rows = slice(start, start + len(image_proposals))
        start += len(image_proposals)
        image_boxes = clip_boxes(boxes[rows], image_size)
        labels = torch.arange(num_classes).view(1, -1).expand_as(scores[rows])
        image_boxes = image_boxes[:, 1:].reshape(-1, 4)
        image_scores, labels = scores[rows][:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = torch.where(image_scores > score_thresh)[0]
        image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
        keep = large_enough(image_boxes, 1e-2)
        image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
        keep = batched_nms(image_boxes, image_scores, labels, nms_thresh)[:detections_per_img]
        results.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": labels[keep]})
    return results


# -- Mask R-CNN -----------------------------------------------------------------------------------------
class MaskBranch(nn.Module):
    """roi_heads' mask_head (conv3x3 + ReLU blocks) and mask_predictor."""

    def __init__(self, channels, layers, dim_reduced, classes):
        super().__init__()
        blocks, cin = [], channels
        for filters in layers:
            blocks.append(nn.Sequential(nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU()))
            cin = filters
        self.mask_head = nn.Sequential(*blocks)
        self.mask_predictor = nn.Sequential()
        self.mask_predictor.add_module("conv5_mask", nn.ConvTranspose2d(cin, dim_reduced, 2, 2))
        self.mask_predictor.add_module("relu", nn.ReLU())
        self.mask_predictor.add_module("mask_fcn_logits", nn.Conv2d(dim_reduced, classes, 1))

    def forward(self, pooled):
        return self.mask_predictor(self.mask_head(pooled))


def _bilinear(image, y, x):
    """torchvision's bilinear sample of a 2-D image at (y, x), with its range rules."""
    height, width = image.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = min(int(y), height - 1), min(int(x), width - 1)
    y_high, x_high = min(y_low + 1, height - 1), min(x_low + 1, width - 1)
    y, x = (float(y_low) if y_low == height - 1 else y), (float(x_low) if x_low == width - 1 else x)
    ly, lx = y - y_low, x - x_low
    return float((1 - ly) * (1 - lx) * image[y_low, x_low] + (1 - ly) * lx * image[y_low, x_high]
                 + ly * (1 - lx) * image[y_high, x_low] + ly * lx * image[y_high, x_high])


def project_masks(masks, boxes, size):
    """torchvision's project_masks_on_boxes: roi_align(mask k, box k, size x size, scale 1,
    adaptive sampling, not aligned), sample by sample."""
    out = torch.zeros((len(boxes), size, size), dtype=torch.float64)
    for k, (mask, box) in enumerate(zip(masks.to(torch.float64), boxes.tolist())):
        x1, y1, x2, y2 = box
        roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        bin_h, bin_w = roi_h / size, roi_w / size
        grid_h, grid_w = math.ceil(roi_h / size), math.ceil(roi_w / size)
        for p in range(size):
            for q in range(size):
                total = sum(_bilinear(mask, y1 + p * bin_h + (i + 0.5) * bin_h / grid_h,
                                      x1 + q * bin_w + (j + 0.5) * bin_w / grid_w)
                            for i in range(grid_h) for j in range(grid_w))
                out[k, p, q] = total / max(grid_h * grid_w, 1)
    return out


def maskrcnn_loss(mask_logits, labels, mask_targets):
    """mask_logits (P, C, M, M) NCHW."""
    chosen = mask_logits[torch.arange(len(labels)), labels]
    return TF.binary_cross_entropy_with_logits(chosen, mask_targets)


def paste_masks(masks, boxes, image_size, padding=1):
    """torchvision's paste_masks_in_image: masks (k, M, M), boxes (k, 4) -> (k, H, W)."""
    height, width = image_size
    size = masks.shape[-1]
    scale = (size + 2 * padding) / size
    padded = TF.pad(masks, (padding,) * 4)
    w_half, h_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale, (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    x_c, y_c = (boxes[:, 2] + boxes[:, 0]) * 0.5, (boxes[:, 3] + boxes[:, 1]) * 0.5
    expanded = torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1).to(torch.int64)
    result = torch.zeros((len(masks), height, width), dtype=masks.dtype)
    for k, (mask, box) in enumerate(zip(padded, expanded.tolist())):
        w, h = max(box[2] - box[0] + 1, 1), max(box[3] - box[1] + 1, 1)
        resized = TF.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x0, x1 = max(box[0], 0), min(box[2] + 1, width)
        y0, y1 = max(box[1], 0), min(box[3] + 1, height)
        result[k, y0:y1, x0:x1] = resized[y0 - box[1]:y1 - box[1], x0 - box[0]:x1 - box[0]]
    return result
