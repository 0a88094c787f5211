"""A PyTorch reference of DETR with the names of Facebook's ``detr_resnet50`` state dict
(``backbone.0.body.*``, ``input_proj``, ``query_embed``, ``transformer.encoder.layers.N.self_attn``,
``transformer.decoder.layers.N.multihead_attn``, ``transformer.decoder.norm``, ``class_embed``,
``bbox_embed.layers.N``), written from the paper's and the repository's formulas: sine positions,
post-norm layers with the positions added to queries and keys, the normed output of every decoder
layer, and the set loss (Hungarian matching by scipy on the costs; weighted cross-entropy, L1 and
GIoU). Sequence-first inside, as PyTorch's ``nn.MultiheadAttention``; images NCHW."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch_detection import Body


def sine_positions(n, height, width, num_pos_feats, dtype, temperature=10000.0, scale=2 * math.pi):
    """(N, 2F, H, W): the cumulative sums of a mask of real pixels, normalised, through sin/cos."""
    real = torch.ones(n, height, width, dtype=dtype)
    y, x = real.cumsum(1), real.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * scale
    x = x / (x[:, :, -1:] + 1e-6) * scale
    k = torch.arange(num_pos_feats, dtype=dtype)
    periods = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_pos_feats)
    px, py = x[..., None] / periods, y[..., None] / periods
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, dropout=0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src, pos):
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src)[0]))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(torch.relu(self.linear1(src))))))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn, dropout=0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, memory, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt)[0]))
        attended = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        return self.norm3(tgt + self.dropout3(self.linear2(self.dropout(torch.relu(self.linear1(tgt))))))


class Encoder(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src, pos):
        for layer in self.layers:
            src = layer(src, pos)
        return src


class Decoder(nn.Module):
    def __init__(self, layers, d):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, memory, pos, query_pos):
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    def __init__(self, d, heads, encoder_layers, decoder_layers, ffn):
        super().__init__()
        self.encoder = Encoder([EncoderLayer(d, heads, ffn) for _ in range(encoder_layers)])
        self.decoder = Decoder([DecoderLayer(d, heads, ffn) for _ in range(decoder_layers)], d)

    def forward(self, src, query_embed, pos):
        """src, pos (N, T, d) batch first, query_embed (Q, d): (hs (L, N, Q, d), memory (N, T, d))."""
        src, pos = src.transpose(0, 1), pos.transpose(0, 1)
        n = src.shape[1]
        query_pos = query_embed.unsqueeze(1).repeat(1, n, 1)
        memory = self.encoder(src, pos)
        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos)
        return hs.transpose(1, 2), memory.transpose(0, 1)


class MLP(nn.Module):
    def __init__(self, d_in, hidden, d_out, count):
        super().__init__()
        widths = [d_in] + [hidden] * (count - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, [hidden] * (count - 1) + [d_out]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class Backbone(nn.Module):
    """A ResNet body of basic blocks (torch_detection.Body) giving its last stage."""

    def __init__(self, width, stages, in_channels):
        super().__init__()
        self.body = Body(width, stages, (stages,), in_channels)
        self.num_channels = width * 2 ** (stages - 1)

    def forward(self, x):
        return self.body(x)[-1]


class DETR(nn.Module):
    def __init__(self, backbone, num_classes, d, heads, encoder_layers, decoder_layers, ffn, queries):
        super().__init__()
        self.backbone = nn.ModuleList([backbone])
        self.input_proj = nn.Conv2d(backbone.num_channels, d, 1)
        self.query_embed = nn.Embedding(queries, d)
        self.transformer = Transformer(d, heads, encoder_layers, decoder_layers, ffn)
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)

    def forward(self, images):
        features = self.input_proj(self.backbone[0](images))
        n, d, h, w = features.shape
        pos = sine_positions(n, h, w, d // 2, features.dtype).flatten(2).transpose(1, 2)
        hs, _ = self.transformer(features.flatten(2).transpose(1, 2), self.query_embed.weight, pos)
        logits, boxes = self.class_embed(hs), self.bbox_embed(hs).sigmoid()
        return {"pred_logits": logits[-1], "pred_boxes": boxes[-1],
                "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]}


# -- the set loss -----------------------------------------------------------------------------------


def corners(b):
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def pairwise_giou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    low, high = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    hull = (torch.max(a[:, None, 2:], b[None, :, 2:]) - torch.min(a[:, None, :2], b[None, :, :2])).clamp(min=0).prod(-1)
    return inter / union - (hull - union) / hull


def hungarian(logits, boxes, targets, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0):
    matches = []
    with torch.no_grad():
        for image_logits, image_boxes, t in zip(logits, boxes, targets):
            probabilities = image_logits.softmax(-1)[:, t["labels"]]
            cost = (cost_bbox * torch.cdist(image_boxes, t["boxes"], p=1) - cost_class * probabilities
                    - cost_giou * pairwise_giou(corners(image_boxes), corners(t["boxes"])))
            rows, cols = linear_sum_assignment(cost.numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return matches


def set_losses(logits, boxes, targets, num_classes, eos_coef=0.1):
    """Unweighted (loss_ce, loss_bbox, loss_giou) of one set of outputs."""
    matches = hungarian(logits, boxes, targets)
    batch = torch.cat([torch.full_like(rows, i) for i, (rows, _) in enumerate(matches)])
    queries = torch.cat([rows for rows, _ in matches])
    classes = torch.full(logits.shape[:2], num_classes, dtype=torch.int64)
    classes[batch, queries] = torch.cat([t["labels"][cols] for t, (_, cols) in zip(targets, matches)])
    weight = torch.ones(num_classes + 1, dtype=logits.dtype)
    weight[-1] = eos_coef
    loss_ce = TF.cross_entropy(logits.transpose(1, 2), classes, weight)
    num_boxes = max(1, sum(len(t["labels"]) for t in targets))
    predicted = boxes[batch, queries]
    truth = torch.cat([t["boxes"][cols] for t, (_, cols) in zip(targets, matches)])
    loss_bbox = TF.l1_loss(predicted, truth, reduction="none").sum() / num_boxes
    loss_giou = (1 - torch.diag(pairwise_giou(corners(predicted), corners(truth)))).sum() / num_boxes
    return loss_ce, loss_bbox, loss_giou


def total_losses(outputs, targets, num_classes, weights=(1.0, 5.0, 2.0)):
    """Facebook's weighted losses as a dict named as lamina's (auxiliary outputs suffixed _i)."""
    named = {}
    sets = [("", outputs)] + [(f"_{i}", aux) for i, aux in enumerate(outputs["aux_outputs"])]
    for suffix, out in sets:
        terms = set_losses(out["pred_logits"], out["pred_boxes"], targets, num_classes)
        for key, value, weight in zip(("loss_ce", "loss_bbox", "loss_giou"), terms, weights):
            named[key + suffix] = value * weight
    return named


def as_targets(boxes, labels):
    return [{"boxes": torch.from_numpy(np.asarray(b, dtype=np.float64)), "labels": torch.from_numpy(np.asarray(c))}
            for b, c in zip(boxes, labels)]
