"""CenterNet ("Objects as Points"): CornerNet's radius and the Gaussian targets against NumPy
references written from the published code, the penalty-reduced focal loss against a torch
rewrite, float64 gradients of the losses, decoding against a loop reference and on perfect
targets, config/save/load, and a detector learning scenes of rectangles of two classes."""

import math

import numpy as np
import pytest
import torch
from detection_checks import check_round_trip
from rectangle_detection import learn_rectangles

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, run_readme_section
from lamina import models


# -- references ---------------------------------------------------------------------------------------
def reference_radius(h, w, m):
    """CornerNet's ``gaussian_radius`` as published (each root halved, not divided by 2a), on arrays."""
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def reference_heatmap(boxes, labels, num_classes, height, width, stride, m=0.7):
    """Every pixel of every object's window visited one by one; overlaps keep the maximum."""
    heat = np.zeros((height, width, num_classes))
    for box, label in zip(boxes, labels):
        x1, y1, x2, y2 = np.asarray(box, dtype=np.float64) / stride
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        r = max(0, int(reference_radius(math.ceil(y2 - y1), math.ceil(x2 - x1), m)))
        sigma = (2 * r + 1) / 6
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                value = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                if value < np.finfo(np.float64).eps or not (0 <= cy + dy < height and 0 <= cx + dx < width):
                    continue
                heat[cy + dy, cx + dx, label] = max(heat[cy + dy, cx + dx, label], value)
    return heat


def torch_focal_loss(logits, target, num_objects):
    """CenterNet's ``_neg_loss`` written in torch on probabilities sigma(z)."""
    p = torch.sigmoid(logits)
    positive = target.eq(1).double()
    negative = 1 - positive
    pos = torch.log(p) * (1 - p) ** 2 * positive
    neg = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * negative
    return -(pos.sum() + neg.sum()) / max(1, num_objects)


def reference_decode(heat, sizes, offsets, stride, k, threshold):
    """Peaks by comparing each value with its (up to) 8 neighbours, then a sort of all of them."""
    out = []
    for image in range(heat.shape[0]):
        found = []
        h, w, c = heat.shape[1:]
        for y in range(h):
            for x in range(w):
                for cls in range(c):
                    v = heat[image, y, x, cls]
                    around = [heat[image, y + dy, x + dx, cls] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                              if 0 <= y + dy < h and 0 <= x + dx < w]
                    if v >= max(around) and v > threshold:
                        found.append((v, y, x, cls))
        found.sort(key=lambda item: -item[0])
        boxes, scores, labels = [], [], []
        for v, y, x, cls in found[:k]:
            bw, bh = max(sizes[image, y, x, 0], 0), max(sizes[image, y, x, 1], 0)
            cx, cy = x + offsets[image, y, x, 0], y + offsets[image, y, x, 1]
            boxes.append([(cx - bw / 2) * stride, (cy - bh / 2) * stride, (cx + bw / 2) * stride,
                          (cy + bh / 2) * stride])
            scores.append(v)
            labels.append(cls)
        out.append((np.array(boxes).reshape(-1, 4), np.array(scores), np.array(labels)))
    return out


# -- targets ------------------------------------------------------------------------------------------
def test_radius_equals_cornernet_code_and_a_hand_value():
    rng = np.random.default_rng(0)
    h, w, m = rng.uniform(1, 60, 50), rng.uniform(1, 60, 50), rng.uniform(0.3, 0.9, 50)
    found = np.array([models.gaussian_radius(*args) for args in zip(h, w, m)])
    assert_close(found, reference_radius(h, w, m), 1e-12, "radius")
    # 10 x 10 at 0.7: the third root, (-28 + sqrt(28^2 + 4 * 2.8 * 30)) / 2 (the others 19.07 and 36.73)
    assert models.gaussian_radius(10, 10) == pytest.approx((-28 + math.sqrt(784 + 336)) / 2, rel=1e-12)


def test_gaussian_targets_equal_the_reference_with_overlaps_by_max():
    boxes = np.array([[4, 4, 40, 36], [16, 12, 52, 44], [0, 50, 14, 64], [30, 2, 62, 20.0], [33, 37, 39, 41]])
    labels = np.array([0, 0, 1, 0, 1])
    found = models.centernet_targets(boxes, labels, 2, (16, 16), 4)
    expected = reference_heatmap(boxes, labels, 2, 16, 16, 4)
    assert_close(found["heatmap"], expected, 1e-14, "heatmap")
    assert (found["heatmap"] == 1).sum() == 5
    overlap = np.minimum(*(reference_heatmap(boxes[i:i + 1], [0], 1, 16, 16, 4)[..., 0] for i in (0, 1)))
    assert (overlap > 0).any()                          # the two class-0 Gaussians do overlap
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 8, (boxes[:, 1] + boxes[:, 3]) / 8], axis=1)
    pixels = np.floor(centres)
    np.testing.assert_array_equal(found["indices"], pixels[:, 1] * 16 + pixels[:, 0])
    assert_close(found["offsets"], centres - pixels, 1e-15, "offsets")
    assert_close(found["sizes"], (boxes[:, 2:] - boxes[:, :2]) / 4, 1e-15, "sizes")


# -- losses -------------------------------------------------------------------------------------------
def _heat_target(seed=0):
    target = models.centernet_targets(np.array([[2, 2, 14, 10], [8, 6, 22, 22.0]]), np.array([1, 0]), 3,
                                      (6, 6), 4)["heatmap"]
    return np.stack([target, np.roll(target, 1, axis=0)])


def test_focal_loss_equals_torch_rewrite_in_value_and_gradients():
    target = _heat_target()
    logits = np.random.default_rng(1).normal(size=target.shape) * 2
    compare_with_torch(lambda z: models.centernet_focal_loss(z, target, 4),
                       lambda z: torch_focal_loss(z, torch.from_numpy(target), 4), logits, dtype=np.float64)
    value = models.centernet_focal_loss(lamina.tensor(logits), target).numpy()      # 4 centres counted
    assert value == pytest.approx(torch_focal_loss(torch.from_numpy(logits), torch.from_numpy(target), 4).item())


def test_losses_have_correct_float64_gradients():
    target = _heat_target()
    logits = np.random.default_rng(2).normal(size=target.shape)
    assert check_gradients(lambda z: models.centernet_focal_loss(z, target), logits)
    model = models.centernet_small(3, in_channels=1, width=2, head_channels=2, size_weight=0.3)
    boxes = [{"boxes": np.array([[2, 2, 14, 10], [8, 6, 22, 22.0]]), "labels": np.array([1, 0])},
             {"boxes": np.array([[1, 3, 9, 20.0]]), "labels": np.array([2])}]
    checked = model._targets(boxes, 2)
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(2, 6, 6, 3)), rng.normal(size=(2, 6, 6, 2)), rng.normal(size=(2, 6, 6, 2))

    def total(heat, size, offset):
        losses = model.compute_loss(checked, {"heatmap": heat, "size": size, "offset": offset})
        return losses["heatmap"] + losses["size"] + losses["offset"]

    assert check_gradients(total, *maps)


def test_size_and_offset_losses_are_l1_at_the_centres():
    model = models.centernet_small(2, in_channels=1, width=2, head_channels=2)
    target = {"boxes": np.array([[0, 0, 10, 6.0]]), "labels": np.array([1])}
    size, offset = np.zeros((1, 4, 4, 2)), np.full((1, 4, 4, 2), 7.0)
    offset[0, 0, 1] = [0.25, 0.75]                      # centre (5, 3) / 4 = (1.25, 0.75): pixel (x 1, y 0)
    losses = model.compute_loss(model._targets([target], 1),
                                {"heatmap": lamina.tensor(np.zeros((1, 4, 4, 2))), "size": lamina.tensor(size),
                                 "offset": lamina.tensor(offset)})
    assert float(losses["offset"].numpy()) == pytest.approx(0.0)
    assert float(losses["size"].numpy()) == pytest.approx(0.1 * (2.5 + 1.5) / 2)


# -- decoding -----------------------------------------------------------------------------------------
def test_decoding_equals_the_loop_reference():
    rng = np.random.default_rng(4)
    heat, sizes = rng.uniform(size=(2, 7, 6, 3)), rng.normal(2, 2, (2, 7, 6, 2))
    offsets = rng.uniform(size=(2, 7, 6, 2))
    found = models.centernet_decode(heat, sizes, offsets, 4, k=9, score_thresh=0.3)
    for got, (boxes, scores, labels) in zip(found, reference_decode(heat, sizes, offsets, 4, 9, 0.3)):
        assert len(got["scores"]) == len(scores) > 0
        assert_close(got["boxes"], boxes, 1e-6, "boxes")
        assert_close(got["scores"], scores, 1e-7, "scores")
        np.testing.assert_array_equal(got["labels"], labels)


def test_perfect_targets_decode_to_the_boxes():
    boxes = np.array([[3, 5, 17, 15], [30, 8, 44, 30], [8, 34, 30, 60], [40, 40, 60, 50.0]])
    labels = np.array([0, 1, 1, 0])
    encoded = models.centernet_targets(boxes, labels, 2, (16, 16), 4)
    sizes, offsets = np.zeros((16 * 16, 2)), np.zeros((16 * 16, 2))
    sizes[encoded["indices"]], offsets[encoded["indices"]] = encoded["sizes"], encoded["offsets"]
    found = models.centernet_decode(encoded["heatmap"][None], sizes.reshape(1, 16, 16, 2),
                                    offsets.reshape(1, 16, 16, 2), 4, score_thresh=0.99)[0]
    order = np.lexsort((found["boxes"][:, 1], found["boxes"][:, 0]))
    truth = np.lexsort((boxes[:, 1], boxes[:, 0]))
    assert_close(found["boxes"][order], boxes[truth], 1e-7, "boxes")
    np.testing.assert_array_equal(found["labels"][order], labels[truth])
    assert (found["scores"] == 1).all()


# -- the model ----------------------------------------------------------------------------------------
def test_head_starts_at_probability_one_tenth_and_has_the_right_shapes():
    head = models.CenterNetHead(6, 3, head_channels=4)
    out = head(lamina.tensor(np.random.default_rng(0).normal(size=(2, 5, 4, 6)).astype(np.float32)))
    assert out["heatmap"].shape == (2, 5, 4, 3) and out["size"].shape == out["offset"].shape == (2, 5, 4, 2)
    np.testing.assert_allclose(head.heatmap[1].bias.numpy(), -2.19)
    assert 1 / (1 + math.exp(2.19)) == pytest.approx(0.1, abs=1e-3)


def test_config_and_save_load_round_trip(tmp_path):
    model = models.centernet_small(2, in_channels=1, width=4, head_channels=4, score_thresh=0.0,
                                   detections_per_img=10)
    check_round_trip(model, np.random.default_rng(0).uniform(size=(1, 16, 16, 1)).astype(np.float32),
                     tmp_path / "centernet.safetensors")


def test_bad_inputs_raise_clear_errors():
    model = models.centernet_small(2, in_channels=1, width=2, head_channels=2, stride=4)
    with pytest.raises(lamina.ShapeError, match="stride=4 expects"):
        model.eval()(lamina.tensor(np.zeros((1, 18, 18, 1), np.float32)))
    with pytest.raises(ValueError, match="give in_channels"):
        models.CenterNet(lamina.nn.Sequential(lamina.nn.Conv2D(2, 3)), 2)
    with pytest.raises(lamina.ShapeError, match="centernet_focal_loss"):
        models.centernet_focal_loss(lamina.tensor(np.zeros((1, 2, 2, 1))), np.zeros((1, 2, 2, 2)))


def test_centernet_learns_rectangles_of_two_classes():
    """150 Adam steps on 256 scenes (1-3 s on one thread): mAP@0.5 on 64 new scenes
    0.90 (0.83-0.93 over seeds; an untrained model and a box of the mean size at the image centre
    both score 0)."""
    lamina.manual_seed(0)
    model = models.centernet_small(2, in_channels=1, width=8, head_channels=16)
    untrained, constant, trained, _ = learn_rectangles("CenterNet", model, 150, 3e-3)
    assert trained > 0.7 and trained > max(untrained, constant) + 0.5


def test_readme_example_runs():
    printed, names = run_readme_section("CenterNet: objects as points")
    assert names["found"][0]["boxes"].shape[1] == 4 and printed.startswith("mAP@0.5")
    assert float(printed.split()[-1]) > 0.5
