"""Keypoint R-CNN: torchvision's parameter count, the keypoint branch equals a torch reference
with torchvision's module names, the keypoint targets, loss and heatmap decoding equal
torchvision's formulas, gradients, learning keypoints of digit scenes, config/save/load and
errors."""

import keypoint_rcnn_reference as ref
import numpy as np
import pytest
import torch
import torch_zoo
from detection_checks import check_round_trip

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import load_torchvision_state_dict
from lamina.models.keypoint_rcnn import heatmaps_to_keypoints, keypointrcnn_loss, keypoints_to_heatmap
from lamina.nn import init
from lamina.vision import digit_scenes, iou

SAMPLE_ALL = 10**6


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _box_keypoints(boxes):
    """Three keypoints per digit, all visible: its box's top-left corner, centre and
    bottom-right corner, (k, 3, 3)."""
    x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float64).T
    points = np.stack([np.stack([x1, y1], 1), np.stack([(x1 + x2) / 2, (y1 + y2) / 2], 1), np.stack([x2, y2], 1)], 1)
    return np.concatenate([points, np.ones((len(boxes), 3, 1))], axis=2)


def _scenes(count, seed):
    images, boxes, _ = digit_scenes(count, seed=seed)
    targets = [{"boxes": b, "labels": np.ones(len(b), dtype=np.int64), "keypoints": _box_keypoints(b)} for b in boxes]
    return (images / 255.0).astype(np.float32), targets


def _tiny_keypoint_rcnn(**kwargs):
    backbone = models.resnet_fpn_backbone(18, returned_layers=(1, 2), extra_blocks=None, out_channels=16, width=8,
                                          frozen_batch_norm=False)
    options = {"num_keypoints": 3, "anchor_sizes": [[16], [32]], "aspect_ratios": [[1.0, 2.0]] * 2,
               "image_mean": (0.5,), "image_std": (0.5,), "representation_size": 32, "box_featmap_names": ["0", "1"],
               "keypoint_featmap_names": ["0", "1"], "keypoint_layers": (16, 16), "keypoint_output_size": 7,
               "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 30, "rpn_pre_nms_top_n_test": 100,
               "rpn_post_nms_top_n_test": 50, "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64}
    return models.KeypointRCNN(backbone, 2, **{**options, **kwargs})


def test_parameter_count_equals_torchvision():
    model = models.keypointrcnn_resnet50_fpn()
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 59_137_258
    state = model.state_dict()
    assert "roi_heads.keypoint_head.14.weight" in state
    assert "roi_heads.keypoint_predictor.kps_score_lowres.bias" in state


def test_keypoint_branch_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.KeypointBranch(6, (8, 8), 5))
    heads = models.KeypointRoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 4),
                                    models.KeypointRCNNHeads(6, (8, 8)), models.KeypointRCNNPredictor(8, 5))
    heads.build()
    heads.built = True
    load_torchvision_state_dict(heads, tmodel.state_dict(), strict=False)  # the box branch is not compared
    pooled = np.random.default_rng(0).standard_normal((3, 7, 7, 6)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(pooled))
    with lamina.no_grad():
        found = heads.keypoint_predictor(heads.keypoint_head(lamina.tensor(pooled)))
    assert found.shape == (3, 28, 28, 5)
    assert_close(found.numpy(), expected.numpy().transpose(0, 2, 3, 1), 1e-4, "keypoint logits")


def test_keypoint_branch_gradients_float64():
    head, predictor = models.KeypointRCNNHeads(2, (2,)), models.KeypointRCNNPredictor(2, 2)
    for layer in (head, predictor):
        layer.build()
        layer.to(np.float64)
    pooled = np.random.default_rng(1).standard_normal((2, 2, 2, 2))
    assert check_gradients(lambda p: predictor(head(p)) * 1.0, pooled)
    rng = np.random.default_rng(2)
    cells, valid = rng.integers(0, 16, (3, 2)), np.array([[True, False], [True, True], [False, True]])
    assert check_gradients(lambda z: keypointrcnn_loss(z, cells, valid), rng.standard_normal((3, 4, 4, 2)))


def _random_rois_and_keypoints(rng, count, joints):
    corners = rng.uniform(0, 30, (count, 2))
    rois = np.concatenate([corners, corners + rng.uniform(0.5, 20, (count, 2))], axis=1)
    keypoints = np.stack([rng.uniform(rois[:, 0:1] - 4, rois[:, 2:3] + 4, (count, joints)),
                          rng.uniform(rois[:, 1:2] - 4, rois[:, 3:4] + 4, (count, joints)),
                          rng.integers(0, 3, (count, joints)).astype(np.float64)], axis=2)
    keypoints[0, 0, :2], keypoints[0, 0, 2] = rois[0, 2:], 2  # on the right / bottom edge: the last cell
    keypoints[1, 1, 0], keypoints[1, 1, 2] = rois[1, 2], 1
    return rois, keypoints


def test_keypoint_targets_and_loss_equal_torchvision_formulas():
    rng = np.random.default_rng(0)
    rois, keypoints = _random_rois_and_keypoints(rng, 12, 4)
    cells, valid = keypoints_to_heatmap(keypoints, rois, 8)
    expected_cells, expected_valid = ref.keypoints_to_heatmap(torch.tensor(keypoints), torch.tensor(rois), 8)
    np.testing.assert_array_equal(valid, expected_valid.numpy())
    np.testing.assert_array_equal(cells, expected_cells.numpy())
    assert valid[0, 0] and cells[0, 0] == 63 and 0 < valid.sum() < valid.size
    logits = rng.standard_normal((12, 8, 8, 4))
    ours = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    loss = keypointrcnn_loss(ours, cells, valid)
    theirs = torch.tensor(logits.transpose(0, 3, 1, 2), requires_grad=True)
    expected = ref.keypointrcnn_loss(theirs, expected_cells, expected_valid)
    assert_close(loss.numpy(), expected.detach().numpy(), 1e-12, "loss_keypoint")
    loss.backward()
    expected.backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "gradient")
    none_visible = keypointrcnn_loss(ours, cells, np.zeros_like(valid))
    assert float(none_visible.numpy()) == 0.0


def test_heatmap_decoding_equals_torchvision_formulas():
    rng = np.random.default_rng(1)
    rois, _ = _random_rois_and_keypoints(rng, 6, 2)
    rois[2, 2] = rois[2, 0] + 0.3  # narrower than a pixel: widened to 1
    maps = rng.standard_normal((6, 8, 8, 3))
    keypoints, scores = heatmaps_to_keypoints(maps, rois)
    expected_keypoints, expected_scores = ref.heatmaps_to_keypoints(torch.tensor(maps.transpose(0, 3, 1, 2)),
                                                                    torch.tensor(rois))
    assert_close(keypoints, expected_keypoints.numpy(), 1e-12, "keypoints")
    assert_close(scores, expected_scores.numpy(), 1e-12, "keypoint scores")
    inside = (keypoints[..., 0] >= rois[:, :1]) & (keypoints[..., 1] >= rois[:, 1:2])
    assert inside.all() and (keypoints[..., 2] == 1).all()


def test_training_pairs_positives_with_matched_keypoints():
    heads = models.KeypointRoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 2),
                                    models.KeypointRCNNHeads(4, (4,)), models.KeypointRCNNPredictor(4, 3),
                                    batch_size_per_image=SAMPLE_ALL)
    rng = np.random.default_rng(3)
    boxes = [np.array([[4.0, 5.0, 20.0, 21.5], [18.0, 6.0, 30.0, 29.0]]), np.array([[7.0, 9.0, 25.0, 28.0]])]
    targets = [{"boxes": b, "labels": np.ones(len(b), dtype=np.int64), "keypoints": _box_keypoints(b)}
               for b in boxes]
    proposals = [b[rng.integers(0, len(b), 10)] + rng.uniform(-3, 3, (10, 4)) for b in boxes]
    sampled, matched, labels, _ = heads.select_training_samples(proposals, targets)
    positives, keypoints = heads.positive_keypoints(sampled, matched, labels, targets)
    assert len(keypoints) == int((labels > 0).sum()) >= 6
    for image_positives, image_boxes, start in zip(positives, boxes, (0, len(positives[0]))):
        best = iou(image_boxes, image_positives).argmax(axis=0)
        np.testing.assert_array_equal(keypoints[start:start + len(best)], _box_keypoints(image_boxes)[best])


def test_training_and_detection_give_keypoints():
    model = _tiny_keypoint_rcnn(box_score_thresh=0.0, box_detections_per_img=5)
    images, targets = _scenes(2, seed=1)
    losses = model.train()(lamina.tensor(images), targets)
    assert list(losses) == ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                            "loss_keypoint"]
    sum(losses.values()).backward()
    assert model.roi_heads.keypoint_predictor.kps_score_lowres.weight.grad is not None
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(images))
    for d in found:
        assert d["keypoints"].shape == (5, 3, 3) and d["keypoints_scores"].shape == (5, 3)
        boxes = d["boxes"]
        assert (d["keypoints"][..., 0] >= boxes[:, :1]).all() and (d["keypoints"][..., 0] <= boxes[:, 2:3] + 1).all()


def _mean_keypoint_error(detections, targets):
    """Mean distance (pixels) from each object's keypoints to those of the detection overlapping it most."""
    errors = []
    for found, target in zip(detections, targets):
        overlap = iou(target["boxes"].astype(np.float64), found["boxes"].astype(np.float64))
        best = overlap.argmax(axis=1)
        errors.append(np.linalg.norm(found["keypoints"][best, :, :2] - target["keypoints"][..., :2], axis=-1))
    return float(np.concatenate(errors).mean())


def test_keypoint_rcnn_learns_digit_keypoints():
    """Keypoints: each digit box's top-left corner, centre and bottom-right corner; the error is
    measured on unseen scenes, through the detections."""
    lamina.manual_seed(0)
    images, targets = _scenes(8, seed=0)
    model = _tiny_keypoint_rcnn()
    model.build((None, 48, 48, 1))
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(70):
        losses = model.train()(lamina.tensor(images), targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        first = float(losses["loss_keypoint"].numpy()) if first is None else first
    last = float(losses["loss_keypoint"].numpy())
    test_images, test_targets = _scenes(16, seed=5)
    with lamina.no_grad():
        detections = model.eval()(lamina.tensor(test_images))
    assert all(len(d["boxes"]) for d in detections)
    error = _mean_keypoint_error(detections, test_targets)
    print(f"Keypoint R-CNN keypoint loss on digit scenes: {first:.3f} -> {last:.3f}; mean keypoint error on unseen "
          f"scenes {error:.2f} px")
    assert last < 0.4 * first  # a uniform heatmap of 28 x 28 cells gives log(784) = 6.66
    assert error < 3.0  # the digits' boxes are 10 to 16 pixels wide


def test_config_and_save_load_round_trip(tmp_path):
    model = _tiny_keypoint_rcnn(box_score_thresh=0.0, box_detections_per_img=4)
    check_round_trip(model, np.random.default_rng(0).uniform(size=(1, 32, 32, 1)).astype(np.float32),
                     tmp_path / "keypoint_rcnn.safetensors",
                     ("boxes", "scores", "labels", "keypoints", "keypoints_scores"))


def test_bad_inputs_raise_clear_errors():
    model = _tiny_keypoint_rcnn()
    images, targets = _scenes(2, seed=0)
    no_keypoints = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    with pytest.raises(ValueError, match="target 0 needs 'keypoints'"):
        model.train()(lamina.tensor(images), no_keypoints)
    wrong_k = [{**t, "keypoints": t["keypoints"][:, :2]} for t in targets]
    with pytest.raises(lamina.ShapeError, match=r"needs keypoints of shape \(\d+, 3, 3\)"):
        model.train()(lamina.tensor(images), wrong_k)
    wrong_count = [{**t, "keypoints": t["keypoints"][:0]} for t in targets]
    with pytest.raises(lamina.ShapeError, match="needs keypoints of shape"):
        model.train()(lamina.tensor(images), wrong_count)
    with pytest.raises(ValueError, match="gives 4 keypoints but num_keypoints is 3"):
        _tiny_keypoint_rcnn(keypoint_predictor=models.KeypointRCNNPredictor(16, 4))
