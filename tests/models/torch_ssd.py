"""PyTorch references with torchvision's SSD module names (torchvision is not installed): the
default box generator, the SSD and SSDlite heads, the SSD300 VGG feature extractor (channels
divided for small tests), SSDlite's MobileNet v3 feature extractor, and SSD's matcher, loss
(hard negative mining) and post-processing written from torchvision's formulas, all NCHW."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import nn
from torch_lraspp import NORM, V3_LARGE, DilatedBlock
from torch_zoo_modern import conv_norm_act


# -- default boxes --------------------------------------------------------------------------------
def default_boxes(aspect_ratios, scales, steps, image_size, grid_sizes, clip=True):
    """(sum H W A, 4) corner boxes in pixels, as torchvision's DefaultBoxGenerator."""
    rows = []
    for k, (fh, fw) in enumerate(grid_sizes):
        s_k, s_next = scales[k], scales[k + 1]
        pairs = [[s_k, s_k], [math.sqrt(s_k * s_next)] * 2]
        for ar in aspect_ratios[k]:
            pairs += [[s_k * math.sqrt(ar), s_k / math.sqrt(ar)], [s_k / math.sqrt(ar), s_k * math.sqrt(ar)]]
        pairs = torch.tensor(pairs, dtype=torch.float64)
        pairs = pairs.clamp(0, 1) if clip else pairs
        x_f, y_f = (image_size[1] / steps[k], image_size[0] / steps[k]) if steps else (fw, fh)
        shift_y, shift_x = torch.meshgrid((torch.arange(fh, dtype=torch.float64) + 0.5) / y_f,
                                          (torch.arange(fw, dtype=torch.float64) + 0.5) / x_f, indexing="ij")
        shifts = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * len(pairs), dim=-1).reshape(-1, 2)
        rows.append(torch.cat((shifts, pairs.repeat(fh * fw, 1)), dim=1))
    boxes = torch.cat(rows)
    size = torch.tensor([image_size[1], image_size[0]], dtype=torch.float64)
    return torch.cat([(boxes[:, :2] - 0.5 * boxes[:, 2:]) * size, (boxes[:, :2] + 0.5 * boxes[:, 2:]) * size], -1)


# -- heads ----------------------------------------------------------------------------------------
class SSDScoringHead(nn.Module):
    def __init__(self, module_list, num_columns):
        super().__init__()
        self.module_list, self.num_columns = module_list, num_columns

    def forward(self, x):
        outs = []
        for features, module in zip(x, self.module_list):
            out = module(features)
            n, _, h, w = out.shape
            out = out.view(n, -1, self.num_columns, h, w).permute(0, 3, 4, 1, 2)
            outs.append(out.reshape(n, -1, self.num_columns))
        return torch.cat(outs, dim=1)


def _prediction_block(cin, cout):
    return nn.Sequential(nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                       nn.BatchNorm2d(cin, eps=0.001, momentum=0.03), nn.ReLU6()),
                         nn.Conv2d(cin, cout, 1))


class SSDHead(nn.Module):
    def __init__(self, in_channels, num_anchors, num_classes, lite=False):
        super().__init__()

        def block(cin, cout):
            return _prediction_block(cin, cout) if lite else nn.Conv2d(cin, cout, 3, padding=1)

        self.classification_head = SSDScoringHead(
            nn.ModuleList(block(c, a * num_classes) for c, a in zip(in_channels, num_anchors)), num_classes)
        self.regression_head = SSDScoringHead(
            nn.ModuleList(block(c, a * 4) for c, a in zip(in_channels, num_anchors)), 4)

    def forward(self, x):
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


# -- SSD300's VGG backbone ------------------------------------------------------------------------
class SSDFeatureExtractorVGG(nn.Module):
    def __init__(self, divisor=1):
        super().__init__()

        def w(c):
            return max(1, c // divisor)

        layers, cin, pools = [], 3, 0
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if v == "M":
                pools += 1
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=pools == 3))
            else:
                layers += [nn.Conv2d(cin, w(v), 3, padding=1), nn.ReLU()]
                cin = w(v)
        self.scale_weight = nn.Parameter(torch.ones(w(512)) * 20)
        self.features = nn.Sequential(*layers[:23])
        fc = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(w(512), w(1024), 3, padding=6, dilation=6), nn.ReLU(),
                           nn.Conv2d(w(1024), w(1024), 1), nn.ReLU())
        extra = [nn.Sequential(*layers[23:30], fc)]
        cin = w(1024)
        for filters, squeezed, stride_two in ((512, 256, True), (256, 128, True), (256, 128, False),
                                              (256, 128, False)):
            last = (nn.Conv2d(w(squeezed), w(filters), 3, padding=1, stride=2) if stride_two
                    else nn.Conv2d(w(squeezed), w(filters), 3))
            extra.append(nn.Sequential(nn.Conv2d(cin, w(squeezed), 1), nn.ReLU(), last, nn.ReLU()))
            cin = w(filters)
        self.extra = nn.ModuleList(extra)

    def forward(self, x):
        x = self.features(x)
        out = [self.scale_weight.view(1, -1, 1, 1) * TF.normalize(x)]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


# -- training and inference -----------------------------------------------------------------------
def box_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt, rb = torch.max(a[:, None, :2], b[:, :2]), torch.min(a[:, None, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b - inter)


def ssd_matcher(iou, threshold=0.5):
    values, matches = iou.max(dim=0)
    matches = matches.clone()
    matches[values < threshold] = -1
    best_prior = iou.max(dim=1).indices
    matches[best_prior] = torch.arange(iou.shape[0])
    return matches


def encode(gt, anchors, weights=(10.0, 10.0, 5.0, 5.0)):
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    x, y = gt[:, 0] + 0.5 * w, gt[:, 1] + 0.5 * h
    return torch.stack([weights[0] * (x - xa) / wa, weights[1] * (y - ya) / ha,
                        weights[2] * torch.log(w / wa), weights[3] * torch.log(h / ha)], dim=1)


def decode(codes, anchors, weights=(10.0, 10.0, 5.0, 5.0)):
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    dx, dy = codes[:, 0] / weights[0], codes[:, 1] / weights[1]
    clip = math.log(1000.0 / 16)
    dw, dh = (codes[:, 2] / weights[2]).clamp(max=clip), (codes[:, 3] / weights[3]).clamp(max=clip)
    x, y, w, h = dx * wa + xa, dy * ha + ya, torch.exp(dw) * wa, torch.exp(dh) * ha
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=1)


def ssd_loss(cls_logits, bbox_regression, anchors, targets, neg_to_pos_ratio=3.0):
    """torchvision's SSD.compute_loss with its SSDMatcher."""
    num_foreground, bbox_loss, cls_targets = 0, [], []
    for target, codes, logits in zip(targets, bbox_regression, cls_logits):
        if target["boxes"].numel() == 0:
            matched = torch.full((len(anchors),), -1, dtype=torch.int64)
        else:
            matched = ssd_matcher(box_iou(target["boxes"], anchors))
        foreground = torch.where(matched >= 0)[0]
        num_foreground += foreground.numel()
        wanted = encode(target["boxes"][matched[foreground]], anchors[foreground])
        bbox_loss.append(TF.smooth_l1_loss(codes[foreground], wanted, reduction="sum"))
        classes = torch.zeros(logits.shape[0], dtype=torch.int64)
        classes[foreground] = target["labels"][matched[foreground]]
        cls_targets.append(classes)
    cls_targets = torch.stack(cls_targets)
    num_classes = cls_logits.shape[-1]
    cls_loss = TF.cross_entropy(cls_logits.reshape(-1, num_classes), cls_targets.view(-1),
                                reduction="none").view(cls_targets.shape)
    foreground = cls_targets > 0
    num_negative = neg_to_pos_ratio * foreground.sum(1, keepdim=True)
    negative_loss = cls_loss.clone()
    negative_loss[foreground] = -float("inf")
    _, idx = negative_loss.sort(1, descending=True)
    background = idx.sort(1)[1] < num_negative
    n = max(1, num_foreground)
    return {"bbox_regression": torch.stack(bbox_loss).sum() / n,
            "classification": (cls_loss[foreground].sum() + cls_loss[background].sum()) / n}


def nms(boxes, scores, threshold):
    order, keep = scores.argsort(descending=True), []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    iou = box_iou(boxes, boxes)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > threshold
    return torch.tensor(keep, dtype=torch.int64)


def ssd_postprocess(cls_logits, bbox_regression, anchors, image_size, score_thresh, topk, nms_thresh, detections):
    """torchvision's SSD.postprocess_detections (batched NMS done class by class)."""
    results = []
    for logits, codes in zip(cls_logits, bbox_regression):
        scores = TF.softmax(logits, dim=-1)
        boxes = decode(codes, anchors)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
        all_boxes, all_scores, all_labels = [], [], []
        for label in range(1, scores.shape[-1]):
            score = scores[:, label]
            keep = score > score_thresh
            score, box = score[keep], boxes[keep]
            score, idx = score.topk(min(topk, score.numel()))
            all_boxes.append(box[idx])
            all_scores.append(score)
            all_labels.append(torch.full_like(score, label, dtype=torch.int64))
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        kept = []
        for label in labels.unique().tolist():
            rows = torch.where(labels == label)[0]
            kept.append(rows[nms(boxes[rows], scores[rows], nms_thresh)])
        kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.int64)
        kept = kept[scores[kept].argsort(descending=True)][:detections]
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
    return results


# -- SSDlite's MobileNet v3 backbone --------------------------------------------------------------
def _conv_bn_relu6(cin, cout, kernel, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout, eps=0.001, momentum=0.03), nn.ReLU6())


def _extra_block(cin, cout):
    half = cout // 2
    return nn.Sequential(_conv_bn_relu6(cin, half, 1), _conv_bn_relu6(half, half, 3, 2, half),
                         _conv_bn_relu6(half, cout, 1))


class SSDLiteFeatureExtractorMobileNet(nn.Module):
    """MobileNet v3 large with the reduced tail, split inside the C4 block (features.0 ends
    with its expansion conv), and the four extra blocks."""

    def __init__(self):
        super().__init__()
        rows = [list(row) for row in V3_LARGE]
        rows[-3][3] //= 2
        for row in rows[-2:]:
            row[0], row[2], row[3] = row[0] // 2, row[2] // 2, row[3] // 2
        layers = [conv_norm_act(3, 16, 3, 2, act=nn.Hardswish, **NORM)]
        layers += [DilatedBlock(*row, dilation=1) for row in rows]
        layers.append(conv_norm_act(80, 480, 1, act=nn.Hardswish, **NORM))
        c4 = 13
        self.features = nn.Sequential(nn.Sequential(*layers[:c4], layers[c4].block[0]),
                                      nn.Sequential(layers[c4].block[1:], *layers[c4 + 1:]))
        self.extra = nn.ModuleList([_extra_block(480, 512), _extra_block(512, 256), _extra_block(256, 256),
                                    _extra_block(256, 128)])

    def forward(self, x):
        out = []
        for block in [*self.features, *self.extra]:
            x = block(x)
            out.append(x)
        return out
