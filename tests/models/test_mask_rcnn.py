"""Mask R-CNN: torchvision's parameter count, the mask branch equals a torch reference with
torchvision's module names, the mask targets, loss and pasting equal torchvision's formulas,
gradients, training and detection on digit scenes with masks, config/save/load and errors."""

import faster_rcnn_reference as ref
import numpy as np
import pytest
import torch
import torch_zoo
from detection_checks import check_round_trip

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import load_torchvision_state_dict
from lamina.models.mask_rcnn import maskrcnn_loss, paste_masks_in_image
from lamina.nn import init
from lamina.vision import digit_scenes

SAMPLE_ALL = 10**6


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _digit_masks(image, boxes):
    """Each digit's ink inside its box, (k, H, W) uint8."""
    masks = np.zeros((len(boxes), *image.shape[:2]), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[k, y1:y2, x1:x2] = image[y1:y2, x1:x2, 0] > 0
    return masks


def _scenes(count, seed):
    images, boxes, labels = digit_scenes(count, seed=seed)
    targets = [{"boxes": b, "labels": lab + 1, "masks": _digit_masks(im, b)}
               for im, b, lab in zip(images, boxes, labels)]
    return (images / 255.0).astype(np.float32), targets


def _tiny_mask_rcnn(**kwargs):
    backbone = models.resnet_fpn_backbone(18, returned_layers=(1, 2), extra_blocks=None, out_channels=16, width=8,
                                          frozen_batch_norm=False)
    options = {"anchor_sizes": [[16], [32]], "aspect_ratios": [[1.0, 2.0]] * 2, "image_mean": (0.5,),
               "image_std": (0.5,), "representation_size": 32, "box_featmap_names": ["0", "1"],
               "mask_featmap_names": ["0", "1"], "mask_layers": (16, 16), "mask_dim_reduced": 16,
               "mask_output_size": 7, "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 30,
               "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "rpn_batch_size_per_image": 64,
               "box_batch_size_per_image": 64}
    return models.MaskRCNN(backbone, 11, **{**options, **kwargs})


def test_parameter_count_equals_torchvision():
    model = models.maskrcnn_resnet50_fpn()
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 44_401_393
    assert "roi_heads.mask_predictor.conv5_mask.weight" in model.state_dict()


def test_mask_branch_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.MaskBranch(6, (8, 8), 5, 4))
    heads = models.MaskRoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 4),
                                models.MaskRCNNHeads(6, (8, 8)), models.MaskRCNNPredictor(8, 5, 4))
    heads.build()
    heads.built = True
    load_torchvision_state_dict(heads, tmodel.state_dict(), strict=False)  # the box branch is not compared
    pooled = np.random.default_rng(0).standard_normal((3, 5, 5, 6)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(pooled))
    with lamina.no_grad():
        found = heads.mask_predictor(heads.mask_head(lamina.tensor(pooled)))
    assert found.shape == (3, 10, 10, 4)
    assert_close(found.numpy(), expected.numpy().transpose(0, 2, 3, 1), 1e-4, "mask logits")


def test_mask_branch_gradients_float64():
    head, predictor = models.MaskRCNNHeads(2, (2,)), models.MaskRCNNPredictor(2, 2, 2)
    for layer in (head, predictor):
        layer.build()
        layer.to(np.float64)
    pooled = np.random.default_rng(1).standard_normal((2, 2, 2, 2))
    assert check_gradients(lambda p: predictor(head(p)) * 1.0, pooled)
    rng = np.random.default_rng(2)
    targets = (rng.uniform(size=(3, 4, 4)) > 0.5).astype(np.float64)
    assert check_gradients(lambda z: maskrcnn_loss(z, np.array([1, 0, 1]), targets), rng.standard_normal((3, 4, 4, 2)))


def test_mask_targets_and_loss_equal_torchvision_formulas():
    heads = models.MaskRoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 4),
                                models.MaskRCNNHeads(4, (4,)), models.MaskRCNNPredictor(4, 4, 4), mask_output_size=2,
                                batch_size_per_image=SAMPLE_ALL)
    rng = np.random.default_rng(0)
    targets = [{"boxes": np.array([[4.0, 5.0, 20.0, 21.5], [18.0, 6.0, 30.0, 29.0]]), "labels": np.array([2, 1]),
                "masks": (rng.uniform(size=(2, 32, 32)) > 0.5).astype(np.uint8)},
               {"boxes": np.array([[7.0, 9.0, 25.0, 28.0]]), "labels": np.array([3]),
                "masks": (rng.uniform(size=(1, 32, 32)) > 0.5).astype(np.uint8)}]
    corners = rng.uniform(0, 16, (2, 8, 2))
    proposals = [np.concatenate([c, c + rng.uniform(6, 16, (8, 2))], axis=1) for c in corners]
    sampled, matched, labels, _ = heads.select_training_samples(proposals, targets)
    boxes, positive_labels, mask_targets = heads._mask_targets(sampled, matched, labels, targets, 4, (32, 32))
    assert len(positive_labels) >= 3
    expected_targets = torch.cat([ref.project_masks(torch.tensor(t["masks"][m[lab > 0]]), torch.tensor(b), 4)
                                  for t, m, lab, b in zip(targets, matched, np.split(labels, [len(sampled[0])]),
                                                          boxes)])
    assert_close(mask_targets, expected_targets.numpy(), 1e-12, "mask targets")
    logits = rng.standard_normal((len(positive_labels), 4, 4, 4))
    ours = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    loss = maskrcnn_loss(ours, positive_labels, mask_targets)
    theirs = torch.tensor(logits.transpose(0, 3, 1, 2), requires_grad=True)
    expected = ref.maskrcnn_loss(theirs, torch.tensor(positive_labels), expected_targets)
    assert_close(loss.numpy(), expected.detach().numpy(), 1e-12, "loss_mask")
    loss.backward()
    expected.backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "gradient")


def test_pasted_masks_equal_torchvision():
    rng = np.random.default_rng(2)
    masks = rng.uniform(size=(5, 6, 6))
    corners = rng.uniform(-4, 30, (5, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 20, (5, 2))], axis=1)
    found = paste_masks_in_image(masks, boxes, (36, 40))
    expected = ref.paste_masks(torch.tensor(masks), torch.tensor(boxes), (36, 40))
    assert found.shape == (5, 36, 40) and (found > 0).any()
    assert_close(found, expected.numpy(), 1e-6, "pasted masks")


def test_training_and_detection_give_masks():
    model = _tiny_mask_rcnn(box_score_thresh=0.0, box_detections_per_img=5)
    images, targets = _scenes(2, seed=1)
    losses = model.train()(lamina.tensor(images), targets)
    assert list(losses) == ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]
    sum(losses.values()).backward()
    assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(images))
    for d in found:
        assert d["masks"].shape == (5, 48, 48) and 0 <= d["masks"].min() and d["masks"].max() <= 1


def test_mask_rcnn_learns_digit_masks():
    lamina.manual_seed(0)
    images, targets = _scenes(16, seed=0)
    model = _tiny_mask_rcnn()
    model.build((None, 48, 48, 1))
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses = model.train()(lamina.tensor(images[:8]), targets[:8])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        first = float(losses["loss_mask"].numpy()) if first is None else first
    last = float(losses["loss_mask"].numpy())
    print(f"Mask R-CNN mask loss on digit scenes: {first:.3f} -> {last:.3f}")
    assert last < min(0.45, 0.6 * first)  # a constant mask cannot go below the ink's entropy (about 0.6)


def test_config_and_save_load_round_trip(tmp_path):
    model = _tiny_mask_rcnn(box_score_thresh=0.0, box_detections_per_img=4)
    check_round_trip(model, np.random.default_rng(0).uniform(size=(1, 32, 32, 1)).astype(np.float32),
                     tmp_path / "mask_rcnn.safetensors", ("boxes", "scores", "labels", "masks"))


def test_bad_inputs_raise_clear_errors():
    model = _tiny_mask_rcnn()
    images, targets = _scenes(2, seed=0)
    no_masks = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    with pytest.raises(ValueError, match="target 0 needs 'masks'"):
        model.train()(lamina.tensor(images), no_masks)
    wrong_count = [{**t, "masks": t["masks"][:0]} for t in targets]
    with pytest.raises(lamina.ShapeError, match="needs masks"):
        model.train()(lamina.tensor(images), wrong_count)
    wrong_size = [{**t, "masks": t["masks"][:, :40]} for t in targets]
    with pytest.raises(lamina.ShapeError, match="the images' size"):
        model.train()(lamina.tensor(images), wrong_size)
