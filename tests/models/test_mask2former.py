"""Mask2Former: masked attention against a float64 torch rewrite, the matching cost against a
hand loop, the matched loss against a torch rewrite, inference against NumPy references, saving,
and learning a toy segmentation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina.models import (
    Mask2Former,
    MaskClassificationLoss,
    mask_matching_cost,
    masked_attention,
    masked_attention_mask,
    panoptic_inference,
    semantic_inference,
)
from lamina.train.segmentation_metrics import mean_iou, pixel_confusion_matrix


def _mask_logits_with_an_empty_row(n=2, q=3, t=5, seed=3):
    logits = randn(n, q, t, seed=seed)
    logits[0, 1] = -np.abs(logits[0, 1]) - 0.1          # query 1 of image 0: an empty mask
    logits[1, 2] = np.abs(logits[1, 2]) + 0.1            # query 2 of image 1: a full mask
    logits[1, 0] = -1.0
    logits[1, 0, 3] = 2.0                               # query 0 of image 1: a single key
    return logits


def _torch_masked_attention(q, k, v, mask_logits):
    """softmax(Q K^T / sqrt(d) + A) V, A = -inf where sigmoid(mask) <= 0.5 unless the row is all masked."""
    blocked = torch.sigmoid(torch.as_tensor(mask_logits)) <= 0.5
    blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(blocked[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_attention_mask_keeps_foreground_and_opens_empty_rows():
    logits = _mask_logits_with_an_empty_row()
    attend = masked_attention_mask(logits)
    assert attend.dtype == bool and attend.shape == logits.shape
    assert attend[0, 1].all() and attend[1, 2].all()
    assert attend[1, 0].tolist() == [False, False, False, True, False]
    np.testing.assert_array_equal(attend[0, 0], logits[0, 0] > 0)


def test_masked_attention_matches_torch_in_values_and_gradients():
    logits = _mask_logits_with_an_empty_row()
    q, k, v = randn(2, 2, 3, 4, seed=0), randn(2, 2, 5, 4, seed=1), randn(2, 2, 5, 4, seed=2)
    compare_with_torch(lambda a, b, c: masked_attention(a, b, c, logits),
                       lambda a, b, c: _torch_masked_attention(a, b, c, logits), q, k, v, dtype=np.float64)


def test_masked_attention_gradients_are_the_centred_differences():
    logits = _mask_logits_with_an_empty_row()
    q, k, v = randn(2, 2, 3, 4, seed=4), randn(2, 2, 5, 4, seed=5), randn(2, 2, 5, 4, seed=6)
    assert check_gradients(lambda a, b, c: masked_attention(a, b, c, logits), q, k, v)


def test_masked_attention_refuses_a_mask_of_the_wrong_shape():
    with pytest.raises(lamina.ShapeError, match="masked_attention.*mask logits"):
        masked_attention(randn(1, 1, 3, 4), randn(1, 1, 5, 4), randn(1, 1, 5, 4), randn(1, 3, 4))


def test_matching_cost_equals_a_loop_over_pairs():
    rng = np.random.default_rng(0)
    class_logits, mask_logits = randn(4, 3, seed=1), randn(4, 6, seed=2)
    labels, masks = np.array([1, 0, 1]), (rng.random((3, 6)) > 0.5).astype(np.float64)
    cost = mask_matching_cost(class_logits, mask_logits, labels, masks, cost_class=2.0, cost_mask=5.0, cost_dice=3.0)
    assert cost.shape == (4, 3)
    for q in range(4):
        probabilities = np.exp(class_logits[q]) / np.exp(class_logits[q]).sum()
        for j in range(3):
            bce = dice_numerator = sigma_sum = 0.0
            for x, t in zip(mask_logits[q], masks[j]):
                s = 1.0 / (1.0 + np.exp(-x))
                bce += -(t * np.log(s) + (1 - t) * np.log(1 - s)) / 6
                dice_numerator += 2 * s * t
                sigma_sum += s
            dice = 1 - (dice_numerator + 1) / (sigma_sum + masks[j].sum() + 1)
            assert cost[q, j] == pytest.approx(-2.0 * probabilities[labels[j]] + 5.0 * bce + 3.0 * dice, rel=1e-12)


def _outputs_and_targets(seed=0):
    """Two prediction sets (2 images, 4 queries, K = 3, masks 4x4) and targets at 8x8."""
    rng = np.random.default_rng(seed)
    sets = [(randn(2, 4, 4, seed=seed + 10 * i), randn(2, 4, 4, 4, seed=seed + 10 * i + 1)) for i in range(2)]
    targets = [{"labels": np.array([2, 0]), "masks": rng.random((2, 8, 8)) > 0.5},
               {"labels": np.array([1]), "masks": rng.random((1, 8, 8)) > 0.4}]
    return sets, targets


def _torch_matched_loss(class_logits, mask_logits, targets, num_classes=3, eos_coef=0.1, weights=(2.0, 5.0, 5.0)):
    """Mask2Former's loss of one prediction set, matched by scipy on a cost computed in torch."""
    n, q = class_logits.shape[:2]
    wanted = torch.full((n, q), num_classes)
    predicted, truths = [], []
    for image, target in enumerate(targets):
        truth = torch.tensor(target["masks"], dtype=torch.float64).reshape(-1, 4, 2, 4, 2).mean(dim=(2, 4))
        truth = truth.reshape(len(truth), -1)
        logits = mask_logits[image].reshape(q, -1)
        s = torch.sigmoid(logits)
        bce = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(
            logits, t.expand_as(logits), reduction="none").mean(dim=1) for t in truth], dim=1)
        dice = 1 - (2 * s @ truth.T + 1) / (s.sum(1)[:, None] + truth.sum(1)[None] + 1)
        probabilities = torch.softmax(class_logits[image], -1)[:, torch.tensor(target["labels"])]
        cost = weights[1] * bce + weights[2] * dice - weights[0] * probabilities
        rows, cols = linear_sum_assignment(cost.detach().numpy())
        wanted[image, rows] = torch.tensor(target["labels"])[cols]
        predicted.append(logits[rows])
        truths.append(truth[cols])
    num_masks = sum(len(t["labels"]) for t in targets)
    class_weight = torch.ones(num_classes + 1, dtype=torch.float64)
    class_weight[-1] = eos_coef
    loss_ce = torch.nn.functional.cross_entropy(class_logits.reshape(n * q, -1), wanted.reshape(-1),
                                                weight=class_weight)
    x, t = torch.cat(predicted), torch.cat(truths)
    loss_mask = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1).sum() / num_masks
    s = torch.sigmoid(x)
    loss_dice = (1 - (2 * (s * t).sum(1) + 1) / (s.sum(1) + t.sum(1) + 1)).sum() / num_masks
    return weights[0] * loss_ce + weights[1] * loss_mask + weights[2] * loss_dice


def test_matched_loss_with_deep_supervision_equals_a_torch_rewrite():
    sets, targets = _outputs_and_targets()
    ours = [(lamina.tensor(c, requires_grad=True, dtype=np.float64), lamina.tensor(m, requires_grad=True,
                                                                                dtype=np.float64)) for c, m in sets]
    outputs = {"pred_logits": ours[1][0], "pred_masks": ours[1][1],
               "aux_outputs": [{"pred_logits": ours[0][0], "pred_masks": ours[0][1]}]}
    losses = MaskClassificationLoss(3)(outputs, targets)
    assert sorted(losses) == ["loss_ce", "loss_ce_0", "loss_dice", "loss_dice_0", "loss_mask", "loss_mask_0"]
    total = sum(losses.values())
    total.backward()
    theirs = [(torch.tensor(c, requires_grad=True), torch.tensor(m, requires_grad=True)) for c, m in sets]
    reference = sum(_torch_matched_loss(c, m, targets) for c, m in theirs)
    reference.backward()
    assert float(total.numpy()) == pytest.approx(reference.item(), rel=1e-10)
    for (c, m), (tc, tm) in zip(ours, theirs):
        np.testing.assert_allclose(c.grad, tc.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.grad, tm.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_matched_loss_gradients_are_the_centred_differences():
    (class_logits, mask_logits), _ = _outputs_and_targets(seed=5)[0]
    targets = _outputs_and_targets(seed=5)[1]
    loss = MaskClassificationLoss(3)

    def total(c, m):
        return sum(loss({"pred_logits": c, "pred_masks": m}, targets).values())

    assert check_gradients(total, class_logits, mask_logits)


def test_matching_prefers_the_query_that_predicts_the_target():
    class_logits = np.zeros((1, 3, 3))
    class_logits[0, 2, 1] = 4.0
    mask_logits = np.full((1, 3, 2, 2), -3.0)
    mask_logits[0, 2, 0] = 3.0
    target = {"labels": np.array([1]), "masks": np.array([[[1, 1, 1, 1], [1, 1, 1, 1], [0] * 4, [0] * 4]])}
    [(queries, objects)] = MaskClassificationLoss(2).match(class_logits, mask_logits, [target])
    assert queries.tolist() == [2] and objects.tolist() == [0]


def test_semantic_inference_equals_a_numpy_loop():
    class_logits, mask_logits = randn(2, 4, 4, seed=1), randn(2, 4, 3, 5, seed=2)
    scores = semantic_inference(class_logits, mask_logits)
    assert scores.shape == (2, 3, 5, 3)
    for image in range(2):
        for y in range(3):
            for x in range(5):
                expected = np.zeros(3)
                for q in range(4):
                    probabilities = np.exp(class_logits[image, q]) / np.exp(class_logits[image, q]).sum()
                    expected += probabilities[:3] / (1 + np.exp(-mask_logits[image, q, y, x]))
                np.testing.assert_allclose(scores[image, y, x], expected, rtol=1e-12)


def test_panoptic_inference_drops_no_object_and_unconfident_queries():
    class_logits = np.full((1, 4, 3), -5.0)
    class_logits[0, 0, 0] = class_logits[0, 1, 1] = 5.0       # confident: classes 0 and 1
    class_logits[0, 2, 2] = 5.0                                # "no object"
    class_logits[0, 3, :2] = 0.0                               # unsure between 0 and 1
    mask_logits = np.full((1, 4, 4, 4), -6.0)
    mask_logits[0, 0, :2] = 6.0
    mask_logits[0, 1, 2:] = 6.0
    mask_logits[0, 2] = mask_logits[0, 3] = 6.0
    [(segment_ids, segments)] = panoptic_inference(class_logits, mask_logits, object_threshold=0.8)
    assert [s["label"] for s in segments] == [0, 1] and [s["id"] for s in segments] == [1, 2]
    np.testing.assert_array_equal(segment_ids, np.repeat([1, 1, 2, 2], 4).reshape(4, 4))
    assert all(s["score"] > 0.99 for s in segments)


def _tiny_model(**sizes):
    return Mask2Former(3, **{"widths": (8, 16, 16), "hidden_dim": 16, "num_heads": 2, "num_queries": 6,
                             "num_layers": 2, "dim_feedforward": 32, **sizes})


def test_outputs_have_one_prediction_set_per_layer_and_the_start():
    model = _tiny_model(num_layers=3)
    outputs = model(randn(2, 16, 24, 3).astype(np.float32))
    assert outputs["pred_logits"].shape == (2, 6, 4) and outputs["pred_masks"].shape == (2, 6, 8, 12)
    assert len(outputs["aux_outputs"]) == 3
    with pytest.raises(lamina.ShapeError, match="Mask2Former.*multiples of 8"):
        model(randn(1, 12, 16, 3))


def test_cross_attention_of_each_layer_follows_the_previous_masks(monkeypatch):
    """The decoder's masked attention is given the previous prediction's mask logits, pooled
    to the attended level (1/8 for even layers, 1/4 for odd ones)."""
    import lamina.models.mask2former as module

    seen = []
    original = module.masked_attention

    def spy(q, k, v, mask_logits, scale=None):
        seen.append(np.asarray(mask_logits))
        return original(q, k, v, mask_logits, scale)

    monkeypatch.setattr(module, "masked_attention", spy)
    model = _tiny_model()
    images = randn(1, 16, 16, 3).astype(np.float32)
    outputs = model(images)
    first = outputs["aux_outputs"][0]["pred_masks"].numpy()        # (1, 6, 8, 8), before any layer
    assert [s.shape for s in seen] == [(1, 6, 4), (1, 6, 16)]
    np.testing.assert_allclose(seen[0], first.reshape(1, 6, 2, 4, 2, 4).mean(axis=(3, 5)).reshape(1, 6, 4),
                               rtol=1e-6)
    second = outputs["aux_outputs"][1]["pred_masks"].numpy()
    np.testing.assert_allclose(seen[1], second.reshape(1, 6, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(1, 6, 16),
                               rtol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    model = _tiny_model()
    images = randn(2, 16, 16, 3).astype(np.float32)
    with lamina.no_grad():
        expected = model.eval()(images)
    lamina.save(model, tmp_path / "mask2former.safetensors")
    twin = lamina.load(tmp_path / "mask2former.safetensors")
    assert type(twin) is Mask2Former and twin.get_config() == model.get_config()
    with lamina.no_grad():
        got = twin.eval()(images)
    np.testing.assert_array_equal(got["pred_logits"].numpy(), expected["pred_logits"].numpy())
    np.testing.assert_array_equal(got["pred_masks"].numpy(), expected["pred_masks"].numpy())


def _shapes(count, seed, size=32):
    """Noisy images of a square (class 1, red) and a disc (class 2, green) on background (class 0)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images = rng.normal(0.0, 0.2, (count, size, size, 3)).astype(np.float32)
    labels = np.zeros((count, size, size), np.int64)
    for i in range(count):
        top, left = rng.integers(1, size // 2 - 2, 2)
        labels[i, top:top + size // 3, left:left + size // 3] = 1
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        labels[i][(rows - cy) ** 2 + (cols - cx) ** 2 <= (size // 6) ** 2] = 2
    images[..., 0] += labels == 1
    images[..., 1] += labels == 2
    return images, labels


def _semantic_targets(labels):
    """One target mask per class present in each label map."""
    return [{"labels": np.unique(lab), "masks": np.stack([lab == c for c in np.unique(lab)])} for lab in labels]


def test_learns_toy_semantic_segmentation():
    lamina.manual_seed(0)
    images, labels = _shapes(32, 0)
    model = _tiny_model()
    loss_fn = MaskClassificationLoss(3)
    optimizer = lamina.optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for _ in range(12):
        for batch in range(0, 32, 8):
            losses = loss_fn(model.train()(lamina.tensor(images[batch:batch + 8])),
                             _semantic_targets(labels[batch:batch + 8]))
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    test_images, test_labels = _shapes(16, 1)
    with lamina.no_grad():
        predicted = model.eval().predict_semantic(lamina.tensor(test_images))
    iou = mean_iou(pixel_confusion_matrix(test_labels, predicted, 3))
    baseline = mean_iou(pixel_confusion_matrix(test_labels, np.zeros_like(test_labels), 3))
    assert baseline < 0.35 and iou > 0.75, (iou, baseline, seconds)


def test_readme_example_runs():
    printed, names = run_readme_section("Mask classification segmentation (Mask2Former)")
    predicted, labels = names["predicted"], names["labels"][:2]
    assert predicted.shape == (2, 16, 16) and (predicted == labels).mean() > 0.9, printed
    assert sorted(s["label"] for s in names["segments"]) == [0, 1], printed
    assert names["segment_ids"].shape == (16, 16) and set(np.unique(names["segment_ids"])) <= {0, 1, 2}
