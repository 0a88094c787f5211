"""PyTorch references for Keypoint R-CNN with torchvision's module names (torchvision is not
installed): the keypoint head and predictor (NCHW), and torchvision's formulas for the
keypoint targets, the keypoint loss and the decoding of heatmaps, written independently in
torch, one proposal at a time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import nn


class KeypointPredictor(nn.Module):
    def __init__(self, channels, keypoints):
        super().__init__()
        self.kps_score_lowres = nn.ConvTranspose2d(channels, keypoints, 4, stride=2, padding=1)

    def forward(self, x):
        return TF.interpolate(self.kps_score_lowres(x), scale_factor=2.0, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)


class KeypointBranch(nn.Module):
    """roi_heads' keypoint_head (a flat Sequential of conv3x3 and ReLU) and keypoint_predictor."""

    def __init__(self, channels, layers, keypoints):
        super().__init__()
        modules, cin = [], channels
        for filters in layers:
            modules += [nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU()]
            cin = filters
        self.keypoint_head = nn.Sequential(*modules)
        self.keypoint_predictor = KeypointPredictor(cin, keypoints)

    def forward(self, pooled):
        return self.keypoint_predictor(self.keypoint_head(pooled))


def keypoints_to_heatmap(keypoints, rois, size):
    """(R, K, 3) keypoints of the objects matched to rois (R, 4) -> flat cells and validity (R, K)."""
    cells = torch.zeros(keypoints.shape[:2], dtype=torch.int64)
    valid = torch.zeros(keypoints.shape[:2], dtype=torch.bool)
    for r, (x1, y1, x2, y2) in enumerate(rois.tolist()):
        for k, (x, y, visibility) in enumerate(keypoints[r].tolist()):
            column = size - 1 if x == x2 else math.floor((x - x1) * (size / (x2 - x1)))
            row = size - 1 if y == y2 else math.floor((y - y1) * (size / (y2 - y1)))
            if visibility > 0 and 0 <= column < size and 0 <= row < size:
                cells[r, k], valid[r, k] = row * size + column, True
    return cells, valid


def keypointrcnn_loss(keypoint_logits, cells, valid):
    """keypoint_logits (R, K, S, S) NCHW: cross-entropy over the S^2 cells of each counted keypoint."""
    count, joints, height, width = keypoint_logits.shape
    flat = keypoint_logits.reshape(count * joints, height * width)
    chosen = torch.where(valid.reshape(-1))[0]
    return TF.cross_entropy(flat[chosen], cells.reshape(-1)[chosen])


def heatmaps_to_keypoints(maps, rois):
    """maps (R, K, S, S) NCHW logits in rois (R, 4) -> keypoints (R, K, 3) and scores (R, K)."""
    joints = maps.shape[1]
    keypoints = torch.ones((len(rois), joints, 3), dtype=maps.dtype)
    scores = torch.zeros((len(rois), joints), dtype=maps.dtype)
    for r, (x1, y1, x2, y2) in enumerate(rois.tolist()):
        width, height = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        out_w, out_h = math.ceil(width), math.ceil(height)
        resized = TF.interpolate(maps[r][:, None], size=(out_h, out_w), mode="bicubic", align_corners=False)[:, 0]
        for k in range(joints):
            best = int(resized[k].reshape(-1).argmax())
            row, column = best // out_w, best % out_w
            keypoints[r, k, 0] = x1 + (column + 0.5) * (width / out_w)
            keypoints[r, k, 1] = y1 + (row + 0.5) * (height / out_h)
            scores[r, k] = resized[k, row, column]
    return keypoints, scores
