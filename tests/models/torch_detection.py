"""PyTorch references with torchvision's detection module names (torchvision is not installed):
a small ResNet body with an FPN (BackboneWithFPN), RetinaNet's and FCOS's heads, and their
training losses written from torchvision's formulas (Matcher, focal loss, L1 on the box
offsets; FCOS's centre sampling, GIoU and centerness), all NCHW."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import nn
from torch_zoo import BasicBlock


class FrozenBatchNorm2d(nn.Module):
    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        for key, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(key, torch.full((channels,), value))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Body(nn.Module):
    """conv1, bn1, relu, maxpool, layer1..layer<stages> of basic blocks; returns the stages asked for."""

    def __init__(self, width, stages, returned, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for k in range(stages):
            planes = width * 2**k
            blocks = [BasicBlock(cin, planes, 1 if k == 0 else 2), BasicBlock(planes, planes)]
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
            cin = planes
        self.stages, self.returned = stages, returned

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for k in range(1, self.stages + 1):
            x = getattr(self, f"layer{k}")(x)
            if k in self.returned:
                out.append(x)
        return out


class LastLevelMaxPool(nn.Module):
    def forward(self, results, features):
        return [TF.max_pool2d(results[-1], 1, 2, 0)]


class LastLevelP6P7(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.p6 = nn.Conv2d(cin, cout, 3, 2, 1)
        self.p7 = nn.Conv2d(cout, cout, 3, 2, 1)
        self.use_P5 = cin == cout

    def forward(self, results, features):
        p6 = self.p6(results[-1] if self.use_P5 else features[-1])
        return [p6, self.p7(torch.relu(p6))]


class FeaturePyramidNetwork(nn.Module):
    def __init__(self, in_channels_list, out_channels, extra_blocks=None):
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1))
                                          for _ in in_channels_list)
        self.extra_blocks = extra_blocks

    def forward(self, features):
        inner = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](inner)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[idx](features[idx])
            inner = lateral + TF.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[idx](inner))
        if self.extra_blocks is not None:
            results += self.extra_blocks(results, features)
        return results


class BackboneWithFPN(nn.Module):
    def __init__(self, width, returned, out_channels, extra_blocks, in_channels=3):
        super().__init__()
        self.body = Body(width, max(returned), returned, in_channels)
        self.fpn = FeaturePyramidNetwork([width * 2 ** (k - 1) for k in returned], out_channels, extra_blocks)

    def forward(self, x):
        return self.fpn(self.body(x))


# -- heads --------------------------------------------------------------------------------------
def _flatten(out, values):
    n, _, h, w = out.shape
    return out.view(n, -1, values, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, values)


class RetinaNetClassificationHead(nn.Module):
    def __init__(self, cin, anchors, classes, convs=4):
        super().__init__()
        self.conv = nn.Sequential(*[nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU()) for _ in range(convs)])
        self.cls_logits = nn.Conv2d(cin, anchors * classes, 3, padding=1)
        self.classes = classes

    def forward(self, features):
        return torch.cat([_flatten(self.cls_logits(self.conv(x)), self.classes) for x in features], 1)


class RetinaNetRegressionHead(nn.Module):
    def __init__(self, cin, anchors, convs=4):
        super().__init__()
        self.conv = nn.Sequential(*[nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU()) for _ in range(convs)])
        self.bbox_reg = nn.Conv2d(cin, anchors * 4, 3, padding=1)

    def forward(self, features):
        return torch.cat([_flatten(self.bbox_reg(self.conv(x)), 4) for x in features], 1)


class RetinaNetHead(nn.Module):
    def __init__(self, cin, anchors, classes, convs=4):
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(cin, anchors, classes, convs)
        self.regression_head = RetinaNetRegressionHead(cin, anchors, convs)

    def forward(self, features):
        return {"cls_logits": self.classification_head(features), "bbox_regression": self.regression_head(features)}


def _gn_tower(cin, convs, groups):
    layers = []
    for _ in range(convs):
        layers += [nn.Conv2d(cin, cin, 3, padding=1), nn.GroupNorm(groups, cin), nn.ReLU()]
    return nn.Sequential(*layers)


class FCOSClassificationHead(nn.Module):
    def __init__(self, cin, anchors, classes, convs, groups):
        super().__init__()
        self.conv = _gn_tower(cin, convs, groups)
        self.cls_logits = nn.Conv2d(cin, anchors * classes, 3, padding=1)
        self.classes = classes

    def forward(self, features):
        return torch.cat([_flatten(self.cls_logits(self.conv(x)), self.classes) for x in features], 1)


class FCOSRegressionHead(nn.Module):
    def __init__(self, cin, anchors, convs, groups):
        super().__init__()
        self.conv = _gn_tower(cin, convs, groups)
        self.bbox_reg = nn.Conv2d(cin, anchors * 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(cin, anchors, 3, padding=1)

    def forward(self, features):
        hidden = [self.conv(x) for x in features]
        boxes = torch.cat([_flatten(torch.relu(self.bbox_reg(h)), 4) for h in hidden], 1)
        return boxes, torch.cat([_flatten(self.bbox_ctrness(h), 1) for h in hidden], 1)


class FCOSHead(nn.Module):
    def __init__(self, cin, anchors, classes, convs, groups):
        super().__init__()
        self.classification_head = FCOSClassificationHead(cin, anchors, classes, convs, groups)
        self.regression_head = FCOSRegressionHead(cin, anchors, convs, groups)

    def forward(self, features):
        boxes, ctrness = self.regression_head(features)
        return {"cls_logits": self.classification_head(features), "bbox_regression": boxes, "bbox_ctrness": ctrness}


# -- losses ---------------------------------------------------------------------------------------
def box_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def matcher(quality, high=0.5, low=0.4):
    """torchvision's Matcher(high, low, allow_low_quality_matches=True)."""
    values, matches = quality.max(dim=0)
    all_matches = matches.clone()
    matches[values < low] = -1
    matches[(values >= low) & (values < high)] = -2
    best_per_gt, _ = quality.max(dim=1)
    update = torch.where(quality == best_per_gt[:, None])[1]
    matches[update] = all_matches[update]
    return matches


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = TF.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return ((alpha * targets + (1 - alpha) * (1 - targets)) * loss).sum()


def encode(gt, anchors):
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def retinanet_loss(cls_logits, bbox_regression, anchors, targets):
    """RetinaNet's classification (focal, ignored anchors left out) and L1 box losses, each per
    image over max(1, n_fg) and averaged over the images."""
    cls_losses, box_losses = [], []
    for i, target in enumerate(targets):
        matched = matcher(box_iou(target["boxes"], anchors))
        fg = matched >= 0
        n_fg = int(fg.sum())
        gt_classes = torch.zeros_like(cls_logits[i])
        gt_classes[fg, target["labels"][matched[fg]]] = 1.0
        valid = matched != -2
        cls_losses.append(sigmoid_focal_loss(cls_logits[i][valid], gt_classes[valid]) / max(1, n_fg))
        wanted = encode(target["boxes"][matched[fg]], anchors[fg])
        box_losses.append(TF.l1_loss(bbox_regression[i][fg], wanted, reduction="sum") / max(1, n_fg))
    return {"classification": sum(cls_losses) / len(targets), "bbox_regression": sum(box_losses) / len(targets)}


def fcos_match(anchors, boxes, level_sizes, radius=1.5):
    centres_gt = (boxes[:, :2] + boxes[:, 2:]) / 2
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    sizes = anchors[:, 2] - anchors[:, 0]
    match = (centres[:, None, :] - centres_gt[None, :, :]).abs().max(dim=2).values < radius * sizes[:, None]
    x, y = centres.unsqueeze(dim=2).unbind(dim=1)
    x0, y0, x1, y1 = boxes.unsqueeze(dim=0).unbind(dim=2)
    dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)
    match &= dist.min(dim=2).values > 0
    lower, upper = sizes * 4, sizes * 8
    lower[:level_sizes[0]] = 0
    upper[-level_sizes[-1]:] = math.inf
    reach = dist.max(dim=2).values
    match &= (reach > lower[:, None]) & (reach < upper[:, None])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    values, idx = (match.to(boxes.dtype) * (1e8 - areas[None, :])).max(dim=1)
    idx[values < 1e-5] = -1
    return idx


def giou_loss(a, b, eps=1e-7):
    x1, y1 = torch.max(a[:, 0], b[:, 0]), torch.max(a[:, 1], b[:, 1])
    x2, y2 = torch.min(a[:, 2], b[:, 2]), torch.min(a[:, 3], b[:, 3])
    inter = torch.zeros_like(x1)
    overlap = (y2 > y1) & (x2 > x1)
    inter[overlap] = (x2[overlap] - x1[overlap]) * (y2[overlap] - y1[overlap])
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = inter / (union + eps)
    hull = (torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0])) * (
        torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1]))
    return (1 - (iou - (hull - union) / (hull + eps))).sum()


def fcos_loss(cls_logits, bbox_regression, bbox_ctrness, anchors, targets, level_sizes):
    """FCOS's three losses, each summed over the batch and divided by max(1, n_fg)."""
    gt_classes, gt_boxes = [], []
    for target in targets:
        matched = fcos_match(anchors, target["boxes"], level_sizes)
        classes = target["labels"][matched.clip(min=0)].clone()
        classes[matched < 0] = -1
        gt_classes.append(classes)
        gt_boxes.append(target["boxes"][matched.clip(min=0)])
    gt_classes, gt_boxes = torch.stack(gt_classes), torch.stack(gt_boxes)
    all_anchors = torch.stack([anchors] * len(targets))
    fg = gt_classes >= 0
    n_fg = max(1, int(fg.sum()))
    one_hot = torch.zeros_like(cls_logits)
    one_hot[fg, gt_classes[fg]] = 1.0
    cx, cy = (all_anchors[..., 0] + all_anchors[..., 2]) / 2, (all_anchors[..., 1] + all_anchors[..., 3]) / 2
    w, h = all_anchors[..., 2] - all_anchors[..., 0], all_anchors[..., 3] - all_anchors[..., 1]
    size = torch.stack([w, h, w, h], dim=-1)
    codes = bbox_regression * size
    pred = torch.stack([cx - codes[..., 0], cy - codes[..., 1], cx + codes[..., 2], cy + codes[..., 3]], dim=-1)
    targets_ltrb = torch.stack([cx - gt_boxes[..., 0], cy - gt_boxes[..., 1], gt_boxes[..., 2] - cx,
                                gt_boxes[..., 3] - cy], dim=-1) / size
    lr, tb = targets_ltrb[..., [0, 2]], targets_ltrb[..., [1, 3]]
    ctrness = torch.sqrt((lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) * (tb.min(dim=-1)[0] / tb.max(dim=-1)[0]))
    return {
        "classification": sigmoid_focal_loss(cls_logits, one_hot) / n_fg,
        "bbox_regression": giou_loss(pred[fg], gt_boxes[fg]) / n_fg,
        "bbox_ctrness": TF.binary_cross_entropy_with_logits(bbox_ctrness.squeeze(2)[fg], ctrness[fg],
                                                            reduction="sum") / n_fg,
    }
