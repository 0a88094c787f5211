"""Faster R-CNN: torchvision's parameter count, the RPN and box heads equal torch references with
torchvision's module names, the RPN and Fast R-CNN losses and both post-processing steps equal
torchvision's formulas (float64), gradients, the sampler, a detector learning digit scenes,
config/save/load and input errors."""


import faster_rcnn_reference as ref
import numpy as np
import pytest
import torch
import torch_zoo
from detection_checks import map_at_50, scene_targets, train_on_scenes

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import load_torchvision_state_dict
from lamina.models.detection_base import BalancedPositiveNegativeSampler
from lamina.nn import init
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.vision import AnchorGenerator

SAMPLE_ALL = 10**6


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _tiny_faster_rcnn(channels=16, **kwargs):
    backbone = models.resnet_fpn_backbone(18, returned_layers=(1, 2), extra_blocks=None, out_channels=channels,
                                          width=8, frozen_batch_norm=False)
    options = {"anchor_sizes": [[16], [32]], "aspect_ratios": [[1.0, 2.0]] * 2, "image_mean": (0.5,),
               "image_std": (0.5,), "representation_size": 32, "box_featmap_names": ["0", "1"],
               "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 30, "rpn_pre_nms_top_n_test": 100,
               "rpn_post_nms_top_n_test": 50, "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64}
    return models.FasterRCNN(backbone, 11, **{**options, **kwargs})


@pytest.mark.parametrize("name, count", [("fasterrcnn_resnet50_fpn", 41_755_286),
                                         ("fasterrcnn_mobilenet_v3_large_fpn", 19_386_354)])
def test_parameter_counts_equal_torchvision(name, count):
    model = getattr(models, name)()
    assert not model.built
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == count
    assert "rpn.head.conv.0.0.weight" in model.state_dict()
    assert "roi_heads.box_predictor.bbox_pred.bias" in model.state_dict()


def test_mobilenet_backbone_detects_and_trains():
    backbone = models.MobileNetBackboneWithFPN("large", out_channels=16, trainable_layers=2, width_mult=0.5)
    model = models.FasterRCNN(backbone, 3, anchor_sizes=[[32, 64]] * 3, aspect_ratios=[[1.0]] * 3,
                              box_featmap_names=["0", "1"], representation_size=16, box_score_thresh=0.0)
    x = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    assert found[0]["boxes"].shape[1] == 4 and len(found[0]["boxes"]) > 0
    assert list(model.backbone(lamina.tensor(x))) == ["0", "1", "pool"]
    losses = model.train()(lamina.tensor(x), [{"boxes": np.array([[4.0, 4.0, 40.0, 50.0]]), "labels": np.array([1])}])
    sum(losses.values()).backward()
    trained = {name.split(".")[2] for name, _ in model.named_parameters(trainable_only=True)
               if name.startswith("backbone.body")}
    assert trained == {"13", "14", "15", "16"}
    clone = layer_from_config(layer_to_config(model))
    clone.build(model.build_input_shape)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_rpn_head_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.RPNHead(8, 3))
    head = models.RPNHead(8, 3)
    head.build()
    head.built = True
    load_torchvision_state_dict(head, tmodel.state_dict())
    rng = np.random.default_rng(0)
    maps = [rng.standard_normal((2, h, w, 8)).astype(np.float32) for h, w in [(6, 5), (3, 3)]]
    with torch.no_grad():
        expected_logits, expected_offsets = tmodel([_nchw(m) for m in maps])
    with lamina.no_grad():
        logits, offsets = head([lamina.tensor(m) for m in maps])
    for ours, theirs in zip(logits + offsets, expected_logits + expected_offsets):
        assert_close(ours.numpy(), theirs.numpy().transpose(0, 2, 3, 1), 1e-4, "rpn head")


def test_box_head_and_predictor_equal_torch_reference():
    tmodel = torch_zoo.randomize(ref.BoxHead(4 * 3 * 3, 16, 5))
    box_head, predictor = models.TwoMLPHead(4 * 3 * 3, 16), models.FastRCNNPredictor(16, 5)
    roi_heads = models.RoIHeads(box_head, predictor, output_size=3)
    roi_heads.build()
    roi_heads.built = True
    load_torchvision_state_dict(roi_heads, tmodel.state_dict())
    pooled = np.random.default_rng(1).standard_normal((6, 3, 3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(pooled))
    with lamina.no_grad():
        found = predictor(box_head(lamina.tensor(pooled)))
    for ours, theirs, what in zip(found, expected, ("class logits", "box regression")):
        assert_close(ours.numpy(), theirs.numpy(), 1e-4, what)


def test_head_gradients_float64():
    head = models.RPNHead(2, 1)
    head.build()
    head.to(np.float64)
    box_head, predictor = models.TwoMLPHead(2 * 2 * 2, 3), models.FastRCNNPredictor(3, 2)
    for layer in (box_head, predictor):
        layer.build()
        layer.to(np.float64)
    x = np.random.default_rng(1).standard_normal((1, 3, 3, 2))
    pooled = np.random.default_rng(2).standard_normal((2, 2, 2, 2))

    def rpn_outputs(f):
        logits, offsets = head([f])
        return logits[0].sum() + (offsets[0] * offsets[0]).sum()

    def box_outputs(p):
        scores, codes = predictor(box_head(p))
        return scores * 1.0 + codes.sum()

    assert check_gradients(rpn_outputs, x)
    assert check_gradients(box_outputs, pooled)


# -- losses -------------------------------------------------------------------------------------------
TARGETS = [{"boxes": np.array([[4.0, 5.0, 20.0, 21.5], [18.0, 6.0, 30.0, 29.0]]), "labels": np.array([2, 1])},
           {"boxes": np.array([[7.0, 9.0, 25.0, 28.0]]), "labels": np.array([3])}]


def _torch_targets(targets):
    return [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in targets]


def _rpn_case(**kwargs):
    sizes, ratios = ((8, 16), (24,)), ((1.0,), (0.5, 2.0))
    head = models.RPNHead(4, 2)
    rpn = models.RegionProposalNetwork([list(s) for s in sizes], [list(r) for r in ratios], head, **kwargs)
    levels = AnchorGenerator(sizes, ratios).grid_anchors((32, 32), [(4, 4), (2, 2)])
    anchors = np.concatenate(levels).astype(np.float64)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, len(anchors))) * 2
    offsets = rng.standard_normal((2, len(anchors), 4)) * 0.3
    return rpn, anchors, [len(a) for a in levels], logits, offsets


def test_rpn_loss_equals_torchvision_formulas():
    rpn, anchors, _, logits, offsets = _rpn_case(batch_size_per_image=SAMPLE_ALL)
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (logits, offsets)]
    losses = rpn.compute_loss(*ours, anchors, TARGETS)
    theirs = [torch.tensor(a, requires_grad=True) for a in (logits, offsets)]
    expected = ref.rpn_loss(*theirs, torch.tensor(anchors), _torch_targets(TARGETS))
    assert set(losses) == set(expected)
    for key in expected:
        assert_close(losses[key].numpy(), expected[key].detach().numpy(), 1e-12, key)
    sum(losses.values()).backward()
    sum(expected.values()).backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-10, "gradient")


def test_fastrcnn_loss_equals_torchvision_formulas():
    roi_heads = models.RoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 4),
                                batch_size_per_image=SAMPLE_ALL)
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 20, (2, 12, 2))
    proposals = [np.concatenate([c, c + rng.uniform(4, 14, (12, 2))], axis=1) for c in corners]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in TARGETS]
    sampled, _, labels, regression_targets = roi_heads.select_training_samples(proposals, targets)
    expected_proposals, expected_labels, expected_targets = ref.fastrcnn_targets(
        [torch.tensor(p) for p in proposals], _torch_targets(targets))
    np.testing.assert_allclose(np.concatenate(sampled), expected_proposals.numpy())
    np.testing.assert_array_equal(labels, expected_labels.numpy())
    assert_close(regression_targets, expected_targets.numpy(), 1e-12, "regression targets")
    assert (labels > 0).any() and (labels == 0).any()
    class_logits = rng.standard_normal((len(labels), 4))
    box_regression = rng.standard_normal((len(labels), 16)) * 0.5
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (class_logits, box_regression)]
    losses = models.roi_heads.fastrcnn_loss(*ours, labels, regression_targets)
    theirs = [torch.tensor(a, requires_grad=True) for a in (class_logits, box_regression)]
    expected = ref.fastrcnn_loss(*theirs, expected_labels, expected_targets)
    for key in expected:
        assert_close(losses[key].numpy(), expected[key].detach().numpy(), 1e-12, key)
    sum(losses.values()).backward()
    sum(expected.values()).backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-10, "gradient")


def test_loss_gradients_float64():
    rpn, anchors, _, logits, offsets = _rpn_case(batch_size_per_image=SAMPLE_ALL)
    assert check_gradients(lambda a, b: sum(rpn.compute_loss(a, b, anchors, TARGETS).values()), logits, offsets)
    rng = np.random.default_rng(1)
    labels, regression_targets = np.array([0, 2, 1, 0, 2]), rng.standard_normal((5, 4)) * 0.1
    assert check_gradients(lambda a, b: sum(models.roi_heads.fastrcnn_loss(a, b, labels, regression_targets).values()),
                           rng.standard_normal((5, 3)), rng.standard_normal((5, 12)) * 0.1)


# -- post-processing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["training", "testing"])
def test_proposals_equal_torchvision_filtering(mode):
    counts = {"pre_nms_top_n": {"training": 12, "testing": 20}, "post_nms_top_n": {"training": 9, "testing": 15}}
    rpn, anchors, level_sizes, logits, offsets = _rpn_case(score_thresh=0.8, **counts)
    rpn.train(mode == "training")
    found = rpn.filter_proposals(logits, offsets, anchors, level_sizes, (32, 32))
    expected = ref.filter_proposals(torch.tensor(logits), torch.tensor(offsets), torch.tensor(anchors), level_sizes,
                                    (32, 32), counts["pre_nms_top_n"][mode], counts["post_nms_top_n"][mode], 0.7, 0.8)
    assert len(found) == len(expected) == 2
    for ours, theirs in zip(found, expected):
        assert 0 < len(ours) <= counts["post_nms_top_n"][mode]
        assert_close(ours, theirs.numpy(), 1e-12, "proposals")


def test_detections_equal_torchvision_postprocessing():
    roi_heads = models.RoIHeads(models.TwoMLPHead(4, 4), models.FastRCNNPredictor(4, 5), detections_per_img=6)
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 30, (2, 10, 2))
    proposals = [np.concatenate([c, c + rng.uniform(4, 20, (10, 2))], axis=1) for c in corners]
    class_logits = rng.standard_normal((20, 5)) * 2
    box_regression = rng.standard_normal((20, 20))
    found = roi_heads.postprocess_detections(class_logits, box_regression, proposals, (40, 36))
    expected = ref.postprocess_detections(torch.tensor(class_logits), torch.tensor(box_regression),
                                          [torch.tensor(p) for p in proposals], (40, 36), detections_per_img=6)
    assert len(found) == len(expected) == 2
    for ours, theirs in zip(found, expected):
        assert len(ours["boxes"]) == 6
        assert_close(ours["boxes"], theirs["boxes"].numpy(), 1e-6, "boxes")
        assert_close(ours["scores"], theirs["scores"].numpy(), 1e-6, "scores")
        np.testing.assert_array_equal(ours["labels"], theirs["labels"].numpy())


# -- the sampler ---------------------------------------------------------------------------------------------
def test_sampler_balances_and_repeats_under_the_global_seed():
    labels = [np.array([1] * 30 + [0] * 100 + [-1] * 5), np.array([2] * 3 + [0] * 10)]
    sampler = BalancedPositiveNegativeSampler(40, 0.25)
    lamina.manual_seed(7)
    positive, negative = sampler(labels)
    assert [m.sum() for m in positive] == [10, 3] and [m.sum() for m in negative] == [30, 10]
    for image_labels, pos, neg in zip(labels, positive, negative):
        assert (image_labels[pos] >= 1).all() and (image_labels[neg] == 0).all()
    lamina.manual_seed(7)
    again = sampler(labels)
    for a, b in zip(positive + negative, again[0] + again[1]):
        np.testing.assert_array_equal(a, b)
    lamina.manual_seed(8)
    assert not np.array_equal(sampler(labels)[0][0], positive[0])


# -- the model end to end ---------------------------------------------------------------------------------
def _scenes(count, seed):
    return scene_targets(count, seed, label_offset=1)


def _map(model, images, targets):
    return map_at_50(model, images, targets, 11, label_offset=0)


def test_faster_rcnn_learns_digit_scenes():
    lamina.manual_seed(0)
    images, targets = _scenes(288, seed=0)
    model = _tiny_faster_rcnn(channels=32, representation_size=128)
    model.build((None, 48, 48, 1))
    untrained, trained, seconds = train_on_scenes(model, images, targets, steps=150, lr=3e-3, score=_map)
    print(f"Faster R-CNN on digit scenes: mAP@0.5 {untrained:.3f} -> {trained:.3f} after {seconds:.1f} s")
    assert trained > max(0.3, untrained + 0.25)


def test_training_gives_torchvision_losses_and_gradients():
    model = _tiny_faster_rcnn()
    images, targets = _scenes(2, seed=1)
    losses = model.train()(lamina.tensor(images), targets)
    assert list(losses) == ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"]
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters(trainable_only=True))
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)}] * 2
    losses = model(lamina.tensor(images), empty)
    assert float(losses["loss_rpn_box_reg"].numpy()) == 0.0 and float(losses["loss_box_reg"].numpy()) == 0.0
    sum(losses.values()).backward()


def test_detections_are_well_formed():
    model = _tiny_faster_rcnn(box_score_thresh=0.0, box_detections_per_img=7)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    assert len(found) == 2
    for d in found:
        assert d["boxes"].shape == (7, 4) and d["scores"].shape == d["labels"].shape == (7,)
        assert (np.diff(d["scores"]) <= 0).all() and set(d["labels"].tolist()) <= set(range(1, 11))
        assert d["boxes"].min() >= 0 and d["boxes"].max() <= 32


def test_config_and_save_load_round_trip(tmp_path):
    model = _tiny_faster_rcnn(box_score_thresh=0.0, box_detections_per_img=20)
    x = np.random.default_rng(0).uniform(size=(1, 32, 32, 1)).astype(np.float32)
    with lamina.no_grad():
        expected = model.eval()(lamina.tensor(x))
    clone = layer_from_config(layer_to_config(model))
    clone.build(model.build_input_shape)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert clone.get_config() == model.get_config()
    lamina.save(model, tmp_path / "faster_rcnn.safetensors")
    loaded = lamina.load(tmp_path / "faster_rcnn.safetensors")
    with lamina.no_grad():
        found = loaded.eval()(lamina.tensor(x))
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(found[0][key], expected[0][key])


def test_bad_inputs_raise_clear_errors():
    model = _tiny_faster_rcnn()
    x = np.zeros((2, 32, 32, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="targets are required in training mode"):
        model.train()(lamina.tensor(x))
    with pytest.raises(lamina.ShapeError, match="looks like NCHW"):
        model.eval()(lamina.tensor(np.zeros((2, 1, 32, 32), dtype=np.float32)))
    background = [{"boxes": np.array([[1.0, 1.0, 9.0, 9.0]]), "labels": np.array([0])}] * 2
    with pytest.raises(ValueError, match=r"labels \[0\]; expected integers in \[1, 11\) \(0 is the background\)"):
        model.train()(lamina.tensor(x), background)
    with pytest.raises(ValueError, match="anchors per location"):
        models.RegionProposalNetwork([[16], [32]], [[1.0]] * 2, models.RPNHead(8, 3))
    with pytest.raises(ValueError, match="num_classes must be an int above 1"):
        models.FasterRCNN(models.resnet_fpn_backbone(18, width=8, out_channels=8), 1)
    with pytest.raises(ValueError, match="box predictor has 5 classes"):
        models.FasterRCNN(models.resnet_fpn_backbone(18, width=8, out_channels=8), 3,
                          box_predictor=models.FastRCNNPredictor(1024, 5))
    wrong_maps = _tiny_faster_rcnn(box_featmap_names=["0", "3"])
    with pytest.raises(lamina.ShapeError, match=r"RoI pooling needs \['0', '3'\]"):
        wrong_maps.eval()(lamina.tensor(x))


def test_without_proposals_detections_are_empty_and_training_uses_the_ground_truths():
    model = _tiny_faster_rcnn(rpn_score_thresh=1.1)  # no objectness reaches it
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    assert all(d["boxes"].shape == (0, 4) and d["labels"].shape == (0,) for d in found)
    targets = [{"boxes": np.array([[2.0, 2.0, 20.0, 20.0]]), "labels": np.array([1])}] * 2
    sampled, _, labels, regression_targets = model.roi_heads.select_training_samples([np.zeros((0, 4))] * 2, targets)
    np.testing.assert_array_equal(np.concatenate(sampled), np.concatenate([t["boxes"] for t in targets]))
    assert labels.tolist() == [1, 1] and not regression_targets.any()
    losses = model.train()(lamina.tensor(x), targets)
    assert float(losses["loss_classifier"].numpy()) > 0 and float(losses["loss_box_reg"].numpy()) > 0
    sum(losses.values()).backward()
