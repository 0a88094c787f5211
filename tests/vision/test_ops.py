import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.vision import (
    AnchorGenerator,
    BoxCoder,
    batched_nms,
    box_convert,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    complete_box_iou_loss,
    distance_box_iou,
    distance_box_iou_loss,
    generalized_box_iou,
    generalized_box_iou_loss,
    iou,
    nms,
    remove_small_boxes,
    sigmoid_focal_loss,
)


def _boxes(count, seed, spread=12.0):
    """Random corner boxes; with this spread some pairs overlap and some are disjoint."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, spread, (count, 2))
    return np.concatenate([low, low + rng.uniform(1.0, 8.0, (count, 2))], axis=1)


A, B = _boxes(5, 0), _boxes(4, 1)
MATCHED_A, MATCHED_B = _boxes(7, 2), _boxes(7, 3)


# -- torch references, from torchvision's formulas --------------------------------------------


def _t_area(b):
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _t_inter_union(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, _t_area(a)[:, None] + _t_area(b)[None, :] - inter


def t_box_iou(a, b):
    inter, union = _t_inter_union(a, b)
    return inter / union


def t_generalized_box_iou(a, b):
    inter, union = _t_inter_union(a, b)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return inter / union - (hull - union) / hull


def _t_diou_iou(a, b, eps=1e-7):
    box_iou_ = t_box_iou(a, b)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    diagonal = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
    xa, ya = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
    xb, yb = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    centres = (xa[:, None] - xb[None, :]) ** 2 + (ya[:, None] - yb[None, :]) ** 2
    return box_iou_ - centres / diagonal, box_iou_


def t_distance_box_iou(a, b):
    return _t_diou_iou(a, b)[0]


def t_complete_box_iou(a, b, eps=1e-7):
    diou, box_iou_ = _t_diou_iou(a, b, eps)
    wa, ha = a[:, None, 2] - a[:, None, 0], a[:, None, 3] - a[:, None, 1]
    wb, hb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    v = (4 / torch.pi**2) * torch.pow(torch.atan(wa / ha) - torch.atan(wb / hb), 2)
    with torch.no_grad():
        alpha = v / (1 - box_iou_ + v + eps)
    return diou - alpha * v


def _t_loss_inter_union(a, b):
    x1, y1, x2, y2 = a.unbind(-1)
    x1g, y1g, x2g, y2g = b.unbind(-1)
    xk1, yk1, xk2, yk2 = torch.max(x1, x1g), torch.max(y1, y1g), torch.min(x2, x2g), torch.min(y2, y2g)
    inter = torch.zeros_like(x1)
    mask = (yk2 > yk1) & (xk2 > xk1)
    inter[mask] = (xk2[mask] - xk1[mask]) * (yk2[mask] - yk1[mask])
    return inter, (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter


def _t_reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss.sum() if reduction == "sum" else loss


def t_giou_loss(a, b, reduction="none", eps=1e-7):
    inter, union = _t_loss_inter_union(a, b)
    x1, y1, x2, y2 = a.unbind(-1)
    x1g, y1g, x2g, y2g = b.unbind(-1)
    hull = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    giou = inter / (union + eps) - (hull - union) / (hull + eps)
    return _t_reduce(1 - giou, reduction)


def _t_diou_loss(a, b, eps=1e-7):
    inter, union = _t_loss_inter_union(a, b)
    box_iou_ = inter / (union + eps)
    x1, y1, x2, y2 = a.unbind(-1)
    x1g, y1g, x2g, y2g = b.unbind(-1)
    diagonal = (torch.max(x2, x2g) - torch.min(x1, x1g)) ** 2 + (torch.max(y2, y2g) - torch.min(y1, y1g)) ** 2 + eps
    centres = ((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2
    return 1 - box_iou_ + centres / diagonal, box_iou_


def t_diou_loss(a, b, reduction="none"):
    return _t_reduce(_t_diou_loss(a, b)[0], reduction)


def t_ciou_loss(a, b, reduction="none", eps=1e-7):
    loss, box_iou_ = _t_diou_loss(a, b, eps)
    x1, y1, x2, y2 = a.unbind(-1)
    x1g, y1g, x2g, y2g = b.unbind(-1)
    v = (4 / torch.pi**2) * torch.pow(torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1)), 2)
    with torch.no_grad():
        alpha = v / (1 - box_iou_ + v + eps)
    return _t_reduce(loss + alpha * v, reduction)


def t_sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0, reduction="none"):
    p = torch.sigmoid(z)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return _t_reduce(loss, reduction)


# -- pairwise measures and losses -------------------------------------------------------------

PAIRWISE = {
    "box_iou": (box_iou, t_box_iou),
    "generalized_box_iou": (generalized_box_iou, t_generalized_box_iou),
    "distance_box_iou": (distance_box_iou, t_distance_box_iou),
    "complete_box_iou": (complete_box_iou, t_complete_box_iou),
}
LOSSES = {
    "generalized_box_iou_loss": (generalized_box_iou_loss, t_giou_loss),
    "distance_box_iou_loss": (distance_box_iou_loss, t_diou_loss),
    "complete_box_iou_loss": (complete_box_iou_loss, t_ciou_loss),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(PAIRWISE))
def test_pairwise_measures_match_torch(name, dtype):
    ours, theirs = PAIRWISE[name]
    compare_with_torch(ours, theirs, A, B, dtype=dtype)


@pytest.mark.parametrize("name", ["box_iou", "generalized_box_iou", "distance_box_iou"])
def test_pairwise_measures_gradcheck(name):
    assert check_gradients(PAIRWISE[name][0], A, B)


def test_pairwise_measures_take_and_give_arrays():
    out = box_iou(A, B)
    assert isinstance(out, np.ndarray) and out.shape == (5, 4)
    np.testing.assert_allclose(out, iou(A, B), rtol=1e-12)
    assert ((generalized_box_iou(A, B) <= out + 1e-12) & (generalized_box_iou(A, B) >= -1)).all()
    np.testing.assert_allclose(np.diag(complete_box_iou(A, A)), 1.0, atol=1e-6)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_match_torch(name, reduction):
    ours, theirs = LOSSES[name]
    for dtype in (np.float32, np.float64):
        compare_with_torch(lambda a, b: ours(a, b, reduction=reduction),
                           lambda a, b: theirs(a, b, reduction=reduction), MATCHED_A, MATCHED_B, dtype=dtype)


# identical boxes, a shared left/right edge with a shared bottom, touching boxes of equal height
SHARED_A = np.array([[1.0, 2.0, 4.0, 7.0], [4.0, 0.0, 5.0, 3.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
SHARED_B = np.array([[1.0, 2.0, 4.0, 7.0], [4.0, 2.0, 5.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 1.0, 3.0, 2.0]])


def _gradients_against_torch(ours, theirs, a, b):
    la, lb = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    out, t_out = ours(la, lb), theirs(ta, tb)
    weights = np.arange(1.0, out.size + 1).reshape(out.shape)
    (out * lamina.tensor(weights)).sum().backward()
    (t_out * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    for x, t in ((la, ta), (lb, tb)):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(PAIRWISE) + list(LOSSES))
def test_gradients_at_shared_edges_and_identical_boxes_match_torch(name):
    ours, theirs = PAIRWISE[name] if name in PAIRWISE else LOSSES[name]
    _gradients_against_torch(ours, theirs, SHARED_A, SHARED_B)
    la = lamina.tensor(SHARED_A[:1], dtype=np.float64, requires_grad=True)
    ours(la, SHARED_A[:1]).sum().backward()
    np.testing.assert_allclose(la.grad, 0.0, atol=1e-8)     # identical boxes: a stationary point


@pytest.mark.parametrize("name", ["complete_box_iou", "complete_box_iou_loss"])
def test_complete_iou_of_inverted_boxes_uses_atan_of_the_ratio(name):
    inverted = np.array([[0.0, 0.0, 2.0, -1.0], [3.0, 4.0, 1.0, 1.0]])   # y2 < y1; both x2 < x1 and y2 < y1
    upright = np.array([[0.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 5.0]])
    ours, theirs = PAIRWISE[name] if name in PAIRWISE else LOSSES[name]
    _gradients_against_torch(ours, theirs, inverted, upright)
    if name == "complete_box_iou_loss":
        np.testing.assert_allclose(ours(inverted[:1], upright[:1]), [2.6826922], rtol=1e-6)


@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss"])
def test_losses_gradcheck(name):
    assert check_gradients(lambda a, b: LOSSES[name][0](a, b, reduction="sum"), MATCHED_A, MATCHED_B)


def test_loss_of_no_boxes_is_zero_and_bad_shapes_are_refused():
    empty = lamina.tensor(np.zeros((0, 4)), requires_grad=True)
    assert generalized_box_iou_loss(empty, empty, reduction="mean").item() == 0.0
    with pytest.raises(ShapeError, match="generalized_box_iou_loss"):
        generalized_box_iou_loss(A, B)
    with pytest.raises(ValueError, match="reduction"):
        distance_box_iou_loss(A, A, reduction="max")


@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss_matches_torch(alpha, reduction):
    rng = np.random.default_rng(4)
    logits, targets = rng.normal(0, 2, (3, 5)), (rng.uniform(size=(3, 5)) > 0.6).astype(np.float64)
    compare_with_torch(lambda z: sigmoid_focal_loss(z, targets, alpha, 2.0, reduction),
                       lambda z: t_sigmoid_focal_loss(z, torch.tensor(targets, dtype=z.dtype), alpha, 2.0, reduction),
                       logits, dtype=np.float64)


@pytest.mark.parametrize("alpha", [0.25, 1.5, -1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss_gives_soft_targets_their_gradient_as_torch(alpha, reduction):
    rng = np.random.default_rng(6)
    logits, targets = rng.normal(0, 2, (3, 4)), rng.uniform(-0.5, 1.5, (3, 4))   # soft, some outside [0, 1]
    z, y = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (logits, targets))
    tz, ty = (torch.tensor(v, requires_grad=True) for v in (logits, targets))
    out, t_out = sigmoid_focal_loss(z, y, alpha, 2.0, reduction), t_sigmoid_focal_loss(tz, ty, alpha, 2.0, reduction)
    out.sum().backward()
    t_out.sum().backward()
    np.testing.assert_allclose(out.numpy(), t_out.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((z, tz), (y, ty)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("alpha", [1.5, 0.25])
@pytest.mark.parametrize("targets", [np.array([1.0, 0.0, 0.3]), np.array([2.0, -1.0, 0.5])])
def test_sigmoid_focal_loss_accepts_what_torchvision_accepts(targets, alpha):
    logits = np.array([0.3, -1.2, 2.0])
    compare_with_torch(lambda z: sigmoid_focal_loss(z, targets, alpha, 2.0, "sum"),
                       lambda z: t_sigmoid_focal_loss(z, torch.tensor(targets), alpha, 2.0, "sum"),
                       logits, dtype=np.float64)
    with pytest.raises(ShapeError, match="sigmoid_focal_loss"):
        sigmoid_focal_loss(logits, targets[:2])
    with pytest.raises(TypeError, match="sigmoid_focal_loss: alpha"):
        sigmoid_focal_loss(logits, targets, alpha="0.25")


# -- formats, clipping, selection ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_convert_round_trips_and_has_gradients(fmt):
    converted = box_convert(A, "xyxy", fmt)
    np.testing.assert_allclose(box_convert(converted, fmt, "xyxy"), A, rtol=1e-12)
    if fmt == "xywh":
        np.testing.assert_allclose(converted, np.column_stack([A[:, :2], A[:, 2:] - A[:, :2]]))
    else:
        np.testing.assert_allclose(converted, np.column_stack([(A[:, :2] + A[:, 2:]) / 2, A[:, 2:] - A[:, :2]]))
    assert check_gradients(lambda b: box_convert(b, fmt, "xyxy"), converted)
    with pytest.raises(ValueError, match="box_convert"):
        box_convert(A, "xyxy", "yxyx")


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_convert_to_the_same_format_returns_a_copy(fmt):
    boxes = A.copy()
    out = box_convert(boxes, fmt, fmt)
    assert out is not boxes and not np.shares_memory(out, boxes)
    out[0, 0] = -1.0
    np.testing.assert_array_equal(boxes, A)
    given = lamina.tensor(A, requires_grad=True)
    same = box_convert(given, fmt, fmt)
    assert same is not given and not np.shares_memory(same.data, given.data)
    (same * 2.0).sum().backward()
    np.testing.assert_array_equal(given.grad, np.full(A.shape, 2.0))


def test_clip_boxes_to_image_matches_torch():
    boxes = np.array([[-3.0, 2.0, 5.0, 9.5], [4.0, -1.5, 12.5, 6.0], [1.0, 1.0, 2.0, 2.0]])
    compare_with_torch(lambda b: clip_boxes_to_image(b, (8, 10)),
                       lambda b: torch.stack([b[:, 0].clamp(0, 10), b[:, 1].clamp(0, 8), b[:, 2].clamp(0, 10),
                                              b[:, 3].clamp(0, 8)], dim=1), boxes, dtype=np.float64)


def test_remove_small_boxes_keeps_boxes_at_least_min_size():
    boxes = np.array([[0, 0, 3, 3], [0, 0, 2, 5], [1, 1, 4, 3.5], [2, 2, 2.9, 9]], dtype=float)
    assert remove_small_boxes(boxes, 2.5).tolist() == [0, 2]


def _t_nms(boxes, scores, threshold):
    """Greedy NMS written in torch, the reference for the index lists."""
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    ious = t_box_iou(boxes, boxes)
    kept, removed = [], set()
    for i in order:
        if i in removed:
            continue
        kept.append(i)
        removed.update(j for j in order if ious[i, j] > threshold)
    return kept


def test_nms_and_batched_nms_match_greedy_references():
    rng = np.random.default_rng(5)
    boxes, scores, labels = _boxes(40, 6, spread=20.0), rng.uniform(size=40), rng.integers(0, 3, 40)
    assert nms(boxes, scores, 0.3).tolist() == _t_nms(torch.tensor(boxes), torch.tensor(scores), 0.3)
    kept = batched_nms(boxes, scores, labels, 0.3)
    expected = []
    for label in range(3):
        chosen = np.flatnonzero(labels == label)
        expected += chosen[_t_nms(torch.tensor(boxes[chosen]), torch.tensor(scores[chosen]), 0.3)].tolist()
    assert kept.tolist() == sorted(expected, key=lambda i: -scores[i])
    assert len(kept) > len(nms(boxes, scores, 0.3))            # other classes no longer suppress
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), 0.5).shape == (0,)


@pytest.mark.parametrize("shift", [-40.0, -25.0])
def test_batched_nms_keeps_categories_apart_with_negative_coordinates(shift):
    rng = np.random.default_rng(8)
    boxes, scores, labels = _boxes(30, 9, spread=20.0) + shift, rng.uniform(size=30), rng.integers(0, 3, 30)
    expected = []
    for label in range(3):
        chosen = np.flatnonzero(labels == label)
        expected += chosen[_t_nms(torch.tensor(boxes[chosen]), torch.tensor(scores[chosen]), 0.3)].tolist()
    assert batched_nms(boxes, scores, labels, 0.3).tolist() == sorted(expected, key=lambda i: -scores[i])
    same = np.array([[-10.0, -10.0, -1.0, -1.0]] * 2)
    assert batched_nms(same, np.array([0.9, 0.8]), np.array([0, 1]), 0.5).tolist() == [0, 1]


# -- box coding and anchors ----------------------------------------------------------------------


WEIGHTS = (10.0, 10.0, 5.0, 5.0)
XFORM_CLIP = math.log(1000.0 / 16)


def t_encode(gt, proposals, weights=WEIGHTS):
    wx, wy, ww, wh = weights
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)


def t_decode(codes, boxes, weights=WEIGHTS, clip=XFORM_CLIP):
    wx, wy, ww, wh = weights
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = codes[:, 0::4] / wx, codes[:, 1::4] / wy
    dw, dh = torch.clamp(codes[:, 2::4] / ww, max=clip), torch.clamp(codes[:, 3::4] / wh, max=clip)
    x, y = dx * widths[:, None] + cx[:, None], dy * heights[:, None] + cy[:, None]
    w, h = torch.exp(dw) * widths[:, None], torch.exp(dh) * heights[:, None]
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=2).flatten(1)


def test_box_coder_encode_matches_torch_and_decode_inverts_it():
    coder = BoxCoder(WEIGHTS)
    compare_with_torch(coder.encode, t_encode, MATCHED_A, MATCHED_B, dtype=np.float64)
    codes = coder.encode(MATCHED_A, MATCHED_B)
    np.testing.assert_allclose(coder.decode(codes, [MATCHED_B[:3], MATCHED_B[3:]])[:, 0], MATCHED_A, rtol=1e-10)


def test_box_coder_decode_matches_torch_with_the_clip():
    codes = np.random.default_rng(7).normal(0, 3, (7, 8))
    codes[0, 2] = 40.0                                   # exp(40 / 5) would exceed the clip
    compare_with_torch(lambda c: BoxCoder(WEIGHTS).decode_single(c, MATCHED_B),
                       lambda c: t_decode(c, torch.tensor(MATCHED_B, dtype=c.dtype)), codes, dtype=np.float32)
    assert check_gradients(lambda c: BoxCoder(WEIGHTS).decode_single(c, MATCHED_B), codes)


def test_anchor_generator_counts_and_first_anchors():
    generator = AnchorGenerator(sizes=((32, 64), (128,)), aspect_ratios=((0.5, 1.0, 2.0), (1.0,)))
    assert generator.num_anchors_per_location() == [6, 1]
    images, maps = np.zeros((2, 64, 96, 3)), [np.zeros((2, 8, 12, 4)), np.zeros((2, 4, 6, 4))]
    anchors = generator(images, maps)
    assert len(anchors) == 2 and anchors[0].shape == (8 * 12 * 6 + 4 * 6 * 1, 4)
    # ratio 0.5, size 32: w = 32 / sqrt(0.5) = 45.25, h = 22.63, halves rounded
    np.testing.assert_array_equal(anchors[0][:6], [[-23, -11, 23, 11], [-45, -23, 45, 23], [-16, -16, 16, 16],
                                                   [-32, -32, 32, 32], [-11, -23, 11, 23], [-23, -45, 23, 45]])
    np.testing.assert_array_equal(anchors[0][6], anchors[0][0] + [8, 0, 8, 0])      # stride 96 // 12
    np.testing.assert_array_equal(anchors[0][12 * 6], anchors[0][0] + [0, 8, 0, 8])  # next row, stride 64 // 8
    np.testing.assert_array_equal(anchors[0][8 * 12 * 6 + 7], [-64 + 16, -64 + 16, 64 + 16, 64 + 16])


def test_anchor_generator_matches_torchvisions_formula():
    scales, ratios = torch.tensor([16.0, 40.0]), torch.tensor([0.3, 1.7])
    h_ratios = torch.sqrt(ratios)
    ws, hs = ((1 / h_ratios)[:, None] * scales[None, :]).view(-1), (h_ratios[:, None] * scales[None, :]).view(-1)
    expected = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()
    np.testing.assert_array_equal(AnchorGenerator.base_anchors([16, 40], [0.3, 1.7]), expected.numpy())


def test_box_coder_decodes_no_boxes():
    """An image with no proposals decodes to no boxes, in both of decode's forms."""
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    assert coder.decode_single(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(np.zeros((0, 8)), np.zeros((0, 4))).shape == (0, 2, 4)
    assert coder.decode(np.zeros((0, 4)), []).shape == (0, 1, 4)
