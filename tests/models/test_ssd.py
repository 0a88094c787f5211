"""SSD and SSDlite: torchvision's parameter counts and map sizes, default boxes, heads and the
VGG feature extractor equal to torch references with torchvision's names, the matcher, the
loss with hard negative mining and the post-processing equal to torchvision's formulas
(float64), gradients, a small SSD learning digit scenes, config/save/load and input errors."""


import numpy as np
import pytest
import torch
import torch_ssd as ref
import torch_zoo
from detection_checks import check_round_trip, map_at_50, scene_targets, train_on_scenes

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import DefaultBoxGenerator, load_torchvision_state_dict
from lamina.models.ssd import hard_negative_mask, ssd_match
from lamina.nn import init
from lamina.vision import box_iou

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SSD300_STEPS = [8, 16, 32, 64, 100, 300]


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("name, count, grids, channels", [
    ("ssd300_vgg16", 35_641_826, [38, 19, 10, 5, 3, 1], [512, 1024, 512, 256, 256, 256]),
    ("ssdlite320_mobilenet_v3_large", 3_440_060, [20, 10, 5, 3, 2, 1], [672, 480, 512, 256, 256, 128]),
])
def test_parameter_counts_and_maps_equal_torchvision(name, count, grids, channels):
    model = getattr(models, name)()
    assert not model.built
    shapes = model.backbone.compute_output_shape(model.input_shape)
    assert [s[1] for s in shapes] == grids and [s[3] for s in shapes] == channels
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == count


def test_ssd300_has_8732_default_boxes_equal_torch_reference():
    generator = DefaultBoxGenerator(SSD300_RATIOS, scales=SSD300_SCALES, steps=SSD300_STEPS)
    grids = [(g, g) for g in (38, 19, 10, 5, 3, 1)]
    boxes = generator.default_boxes((300, 300), grids)
    assert boxes.shape == (8732, 4)
    expected = ref.default_boxes(SSD300_RATIOS, SSD300_SCALES, SSD300_STEPS, (300, 300), grids)
    assert_close(boxes, expected.numpy(), 1e-12, "ssd300 default boxes")


def test_default_boxes_without_steps_or_clipping_equal_torch_reference():
    generator = DefaultBoxGenerator([[2, 3], [2]], min_ratio=0.3, max_ratio=0.8, clip=False)
    assert generator.scales == pytest.approx([0.3, 0.8, 1.0])
    assert generator.num_anchors_per_location() == [6, 4]
    boxes = generator.default_boxes((40, 56), [(5, 7), (3, 4)])
    expected = ref.default_boxes([[2, 3], [2]], [0.3, 0.8, 1.0], None, (40, 56), [(5, 7), (3, 4)], clip=False)
    assert_close(boxes, expected.numpy(), 1e-12, "default boxes")


@pytest.mark.parametrize("lite", [False, True])
def test_heads_equal_torch_reference(lite):
    channels, anchors = [8, 6], [4, 6]
    tmodel = torch_zoo.randomize(ref.SSDHead(channels, anchors, 3, lite=lite), seed=2)
    head = (models.SSDLiteHead if lite else models.SSDHead)(channels, anchors, 3)
    head.build()
    head.built = True
    load_torchvision_state_dict(head, tmodel.state_dict())
    rng = np.random.default_rng(0)
    maps = [rng.standard_normal((2, 5, 4, 8)).astype(np.float32), rng.standard_normal((2, 3, 2, 6)).astype(np.float32)]
    with torch.no_grad():
        expected = tmodel([_nchw(m) for m in maps])
    with lamina.no_grad():
        found = head.eval()([lamina.tensor(m) for m in maps])
    assert list(found) == ["bbox_regression", "cls_logits"]
    assert found["cls_logits"].shape == (2, 5 * 4 * 4 + 3 * 2 * 6, 3)
    for key in expected:
        assert_close(found[key].numpy(), expected[key].numpy(), 1e-4, key)


def test_vgg_feature_extractor_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.SSDFeatureExtractorVGG(divisor=16), seed=1)
    with torch.no_grad():
        tmodel.scale_weight.copy_(torch.linspace(5.0, 20.0, 32))
    backbone = models.SSDFeatureExtractorVGG(width_divisor=16)
    backbone.build((None, 300, 300, 3))
    load_torchvision_state_dict(backbone, tmodel.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 300, 300, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(x))
    with lamina.no_grad():
        found = backbone(lamina.tensor(x))
    assert list(found) == ["0", "1", "2", "3", "4", "5"]
    for (key, value), want in zip(found.items(), expected):
        assert_close(value.numpy(), want.numpy().transpose(0, 2, 3, 1), 1e-4, f"map {key}")


def test_ssdlite_feature_extractor_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.SSDLiteFeatureExtractorMobileNet(), seed=5)
    backbone = models.SSDLiteFeatureExtractorMobileNet()
    backbone.build((None, 64, 64, 3))
    load_torchvision_state_dict(backbone, tmodel.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(x))
    with lamina.no_grad():
        found = backbone.eval()(lamina.tensor(x))
    assert [v.shape[3] for v in found.values()] == [672, 480, 512, 256, 256, 128]
    for (key, value), want in zip(found.items(), expected):
        assert_close(value.numpy(), want.numpy().transpose(0, 2, 3, 1), 1e-4, f"map {key}")


def test_ssdlite_backbone_keeps_torchvision_names():
    model = models.ssdlite320_mobilenet_v3_large()
    with init.meta():
        model.build(model.input_shape)
    keys = set(model.state_dict())
    for key in ("backbone.features.0.13.0.weight", "backbone.features.1.0.1.0.weight",
                "backbone.features.1.0.2.fc1.weight", "backbone.features.1.3.1.running_var",
                "backbone.extra.3.2.1.bias", "head.regression_head.module_list.5.1.weight"):
        assert key in keys, key


# -- matching, loss, post-processing ----------------------------------------------------------------
def test_matching_follows_torchvision():
    iou = np.array([[0.1, 0.3, 0.2, 0.6], [0.05, 0.4, 0.45, 0.55]])
    found = ssd_match(iou, 0.5)
    # box 3 goes to truth 0 (0.6 >= 0.5); truth 1's best box (3) is taken back for it
    np.testing.assert_array_equal(found, [-1, -1, -1, 1])
    rng = np.random.default_rng(0)
    iou = rng.uniform(0, 0.8, (3, 40))
    np.testing.assert_array_equal(ssd_match(iou), ref.ssd_matcher(torch.tensor(iou)).numpy())


def test_hard_negatives_are_the_worst_unmatched_boxes():
    losses = np.array([[0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    foreground = np.zeros_like(losses, dtype=bool)
    foreground[0, 1] = True
    mined = hard_negative_mask(losses, foreground, 3.0)
    np.testing.assert_array_equal(np.flatnonzero(mined[0]), [2, 3, 5])
    assert not mined[1].any()   # no object: no negatives either
    few = hard_negative_mask(np.array([[0.5, 0.2, 0.1]]), np.array([[False, True, False]]), 3.0)
    np.testing.assert_array_equal(few, [[True, True, True]])   # too few negatives: the match fills up


SSD_TARGETS = [{"boxes": np.array([[4.0, 5.0, 14.0, 15.5], [18.0, 6.0, 30.0, 21.0]]), "labels": np.array([2, 1])},
               {"boxes": np.array([[7.0, 9.0, 25.0, 28.0]]), "labels": np.array([3])},
               {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)}]


def _tiny_ssd(**kwargs):
    backbone = models.resnet_fpn_backbone(18, returned_layers=(2, 3), extra_blocks=None, out_channels=16, width=8)
    generator = DefaultBoxGenerator([[2], [2]], scales=[0.3, 0.5, 0.7])
    return models.SSD(backbone, generator, 4, image_mean=(0.5,), image_std=(0.5,), **kwargs)


def _loss_case():
    model = _tiny_ssd()
    anchors = model.anchor_generator.default_boxes((32, 32), [(4, 4), (2, 2)])
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, len(anchors), 4)) * 2
    codes = rng.standard_normal((3, len(anchors), 4))
    return model, anchors, logits, codes


def test_loss_equals_torchvision_formulas():
    model, anchors, logits, codes = _loss_case()
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (logits, codes)]
    losses = model.compute_loss(SSD_TARGETS, {"cls_logits": ours[0], "bbox_regression": ours[1]}, anchors)
    theirs = [torch.tensor(a, requires_grad=True) for a in (logits, codes)]
    torch_targets = [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in SSD_TARGETS]
    expected = ref.ssd_loss(*theirs, torch.tensor(anchors), torch_targets)
    assert set(losses) == set(expected)
    for key in expected:
        assert_close(losses[key].numpy(), expected[key].detach().numpy(), 1e-12, key)
    (losses["classification"] + losses["bbox_regression"]).backward()
    (expected["classification"] + expected["bbox_regression"]).backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-10, "gradient")


def test_loss_gradients_float64():
    model, *_ = _loss_case()
    anchors = model.anchor_generator.default_boxes((32, 32), [(2, 2), (1, 1)])
    rng = np.random.default_rng(1)
    logits, codes = rng.standard_normal((2, len(anchors), 4)), rng.standard_normal((2, len(anchors), 4))

    def total(cls, reg):
        losses = model.compute_loss(SSD_TARGETS[:2], {"cls_logits": cls, "bbox_regression": reg}, anchors)
        return losses["classification"] + losses["bbox_regression"]

    assert check_gradients(total, logits, codes)


def test_postprocessing_equals_torchvision_formulas():
    model = _tiny_ssd(score_thresh=0.2, topk_candidates=5, nms_thresh=0.45, detections_per_img=7)
    anchors = model.anchor_generator.default_boxes((32, 32), [(4, 4), (2, 2)])
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, len(anchors), 4)) * 2
    codes = rng.standard_normal((2, len(anchors), 4))
    found = model.postprocess_detections({"cls_logits": lamina.tensor(logits), "bbox_regression": lamina.tensor(codes)},
                                         anchors, (32, 32))
    expected = ref.ssd_postprocess(torch.tensor(logits), torch.tensor(codes), torch.tensor(anchors), (32, 32),
                                   0.2, 5, 0.45, 7)
    for ours, theirs in zip(found, expected):
        assert len(ours["scores"]) == 7
        np.testing.assert_array_equal(ours["labels"], theirs["labels"].numpy())
        assert_close(ours["scores"], theirs["scores"].numpy(), 1e-6, "scores")
        assert_close(ours["boxes"], theirs["boxes"].numpy(), 1e-6, "boxes")


def test_tiny_head_gradients_float64():
    head = models.SSDHead([3], [4], 2)
    head.build()
    head.to(np.float64)
    x = np.random.default_rng(1).standard_normal((1, 3, 3, 3))
    assert check_gradients(lambda f: head([f])["cls_logits"] * 1.0 + head([f])["bbox_regression"].sum(), x)


# -- end to end -------------------------------------------------------------------------------------------
def _scenes(count, seed):
    return scene_targets(count, seed, label_offset=1)


def _map(model, images, targets):
    return map_at_50(model, images, targets, 10, label_offset=1)


def test_small_ssd_learns_digit_scenes():
    lamina.manual_seed(0)
    images, targets = _scenes(288, seed=0)
    backbone = models.resnet_fpn_backbone(18, returned_layers=(2, 3), extra_blocks=None, out_channels=16, width=8,
                                          frozen_batch_norm=False)
    model = models.SSD(backbone, DefaultBoxGenerator([[2], [2]], scales=[0.3, 0.5, 0.7]), 11, image_mean=(0.5,),
                       image_std=(0.5,))
    model.build((None, 48, 48, 1))
    untrained, trained, seconds = train_on_scenes(model, images, targets, steps=100, lr=5e-3, score=_map)
    print(f"SSD on digit scenes: mAP@0.5 {untrained:.3f} -> {trained:.3f} after {seconds:.1f} s")
    assert trained > max(0.15, untrained + 0.1)


def test_ssd300_detections_are_well_formed():
    model = models.ssd300_vgg16(num_classes=3, width_divisor=16, score_thresh=0.0, detections_per_img=9)
    x = np.random.default_rng(0).uniform(size=(1, 300, 300, 3)).astype(np.float32)
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    assert len(found) == 1
    d = found[0]
    assert d["boxes"].shape == (9, 4) and d["scores"].shape == d["labels"].shape == (9,)
    assert (np.diff(d["scores"]) <= 0).all() and set(d["labels"].tolist()) <= {1, 2}
    assert d["boxes"].min() >= 0 and d["boxes"].max() <= 300


@pytest.mark.parametrize("kind", ["fpn", "ssdlite"])
def test_config_and_save_load_round_trip(kind, tmp_path):
    if kind == "fpn":
        model, shape = _tiny_ssd(score_thresh=0.0, detections_per_img=20), (1, 32, 32, 1)
    else:
        model = models.ssdlite320_mobilenet_v3_large(num_classes=3, width_mult=0.25, input_shape=(64, 64, 3),
                                                     score_thresh=0.0, detections_per_img=20)
        shape = (1, 64, 64, 3)
    check_round_trip(model, np.random.default_rng(0).uniform(size=shape).astype(np.float32),
                     tmp_path / f"{kind}.safetensors")


def test_training_step_runs_and_matches_every_object():
    model = _tiny_ssd()
    x = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
    losses = model.train()(lamina.tensor(x), SSD_TARGETS)
    assert set(losses) == {"bbox_regression", "classification"}
    (losses["classification"] + losses["bbox_regression"]).backward()
    anchors = model.anchor_generator.default_boxes((32, 32), [(4, 4), (2, 2)])
    matched = model.match(SSD_TARGETS[0]["boxes"], anchors)
    assert set(matched[matched >= 0].tolist()) == {0, 1}
    assert (box_iou(SSD_TARGETS[0]["boxes"], anchors).max(axis=1) < 0.5).any()  # one matched only by best box


def test_bad_inputs_raise_clear_errors():
    model = _tiny_ssd()
    x = np.zeros((1, 32, 32, 1), dtype=np.float32)
    background = [{"boxes": np.array([[1.0, 1.0, 9.0, 9.0]]), "labels": np.array([0])}]
    with pytest.raises(ValueError, match="0 is the background"):
        model.train()(lamina.tensor(x), background)
    with pytest.raises(lamina.ShapeError, match="looks like NCHW"):
        model.eval()(lamina.tensor(np.zeros((1, 1, 32, 32), dtype=np.float32)))
    with pytest.raises(ValueError, match="boxes per location"):
        models.SSD(model.backbone, DefaultBoxGenerator([[2, 3], [2]]), 4, head=models.SSDHead([16, 16], [4, 4], 4))
    with pytest.raises(ValueError, match="need 3 scales"):
        DefaultBoxGenerator([[2], [2]], scales=[0.2, 0.5])
    with pytest.raises(lamina.ShapeError, match="2 feature maps for 3"):
        DefaultBoxGenerator([[2]] * 3).default_boxes((32, 32), [(4, 4), (2, 2)])
    with pytest.raises(lamina.ShapeError, match="channels"):
        models.SSDHead([8], [4], 3)([lamina.tensor(np.zeros((1, 4, 4, 5), dtype=np.float32))])


def test_trainable_backbone_layers_freeze_the_first_stages():
    vgg = models.SSDFeatureExtractorVGG(width_divisor=16, trainable_layers=2)
    vgg.build((None, 300, 300, 3))
    frozen = {name.split(".")[1] for name, p in vgg.named_parameters() if name.startswith("features") and
              not p.trainable}
    assert frozen == {"0", "2", "5", "7", "10", "12", "14"}   # the convs of stages 1-3 (layers before 16)
    lite = models.SSDLiteFeatureExtractorMobileNet(width_mult=0.25, trainable_layers=1)
    lite.build((None, 64, 64, 3))
    trainable = {name.rsplit(".", 2)[0] for name, p in lite.named_parameters() if p.trainable}
    assert all(name.startswith(("features.1.3", "extra")) for name in trainable)
    lite = models.SSDLiteFeatureExtractorMobileNet(width_mult=0.25, trainable_layers=2)
    lite.build((None, 64, 64, 3))
    stems = {name.split(".")[1] + "." + name.split(".")[2] for name, p in lite.named_parameters()
             if p.trainable and name.startswith("features")}
    assert stems == {"0.13", "1.0", "1.1", "1.2", "1.3"}      # from the C4 block on


def test_training_without_objects_gives_zero_losses():
    model = _tiny_ssd()
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    losses = model.train()(lamina.tensor(x), SSD_TARGETS[2:] * 2)
    assert float(losses["bbox_regression"].numpy()) == 0.0 and float(losses["classification"].numpy()) == 0.0
    (losses["classification"] + losses["bbox_regression"]).backward()
