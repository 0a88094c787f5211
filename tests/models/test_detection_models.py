"""FPN, RetinaNet and FCOS: torchvision's parameter counts, the same maps and head outputs as
torch references with torchvision's module names, the same losses as torchvision's formulas
(float64), gradients, a detector learning digit scenes, config/save/load and input errors."""


import numpy as np
import pytest
import torch
import torch_detection as ref
import torch_zoo
from detection_checks import check_round_trip, map_at_50, scene_targets, train_on_scenes

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import load_torchvision_state_dict
from lamina.models.detection_base import IGNORED
from lamina.nn import init
from lamina.vision import AnchorGenerator


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _tiny_backbone(extra="p6p7", returned=(2, 3), channels=16, frozen=True):
    return models.resnet_fpn_backbone(18, returned_layers=returned, extra_blocks=extra, out_channels=channels,
                                      width=8, frozen_batch_norm=frozen)


def _tiny_retinanet(**kwargs):
    options = {"anchor_sizes": [[8, 12], [16, 24]], "aspect_ratios": [[1.0]] * 2, "image_mean": (0.5,),
               "image_std": (0.5,), "head_convs": 1}
    return models.RetinaNet(_tiny_backbone(extra=None), 3, **{**options, **kwargs})


@pytest.mark.parametrize("name, count", [("retinanet_resnet50_fpn", 34_014_999), ("fcos_resnet50_fpn", 32_269_600)])
def test_parameter_counts_equal_torchvision(name, count):
    model = getattr(models, name)()
    assert not model.built
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == count


@pytest.mark.parametrize("extra", ["p6p7_c5", "pool", "p6p7"])
def test_backbone_with_fpn_equals_torch_reference(extra):
    torch_extra = {"p6p7_c5": ref.LastLevelP6P7(32, 16), "p6p7": ref.LastLevelP6P7(16, 16),
                   "pool": ref.LastLevelMaxPool()}[extra]
    tmodel = torch_zoo.randomize(ref.BackboneWithFPN(8, (1, 2, 3), 16, torch_extra))
    model = _tiny_backbone(extra, (1, 2, 3))
    model.build((None, 40, 36, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 40, 36, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(_nchw(x))
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    names = ["0", "1", "2"] + {"p6p7_c5": ["p6", "p7"], "p6p7": ["p6", "p7"], "pool": ["pool"]}[extra]
    assert list(found) == names
    for name, want in zip(names, expected):
        assert_close(found[name].numpy(), want.numpy().transpose(0, 2, 3, 1), 1e-4, f"level {name}")


def _random_maps(channels, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((2, h, w, channels)).astype(np.float32) for h, w in sizes]


@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_heads_equal_torch_reference(kind):
    if kind == "retinanet":
        tmodel, head = ref.RetinaNetHead(16, 2, 3, convs=2), models.RetinaNetHead(16, 2, 3, num_convs=2)
    else:
        tmodel, head = ref.FCOSHead(16, 1, 3, 2, 4), models.FCOSHead(16, 1, 3, num_convs=2, groups=4)
    tmodel = torch_zoo.randomize(tmodel)
    head.build()
    head.built = True
    load_torchvision_state_dict(head, tmodel.state_dict())
    maps = _random_maps(16, [(6, 5), (3, 3)])
    with torch.no_grad():
        expected = tmodel([_nchw(m) for m in maps])
    with lamina.no_grad():
        found = head([lamina.tensor(m) for m in maps])
    assert set(found) == set(expected)
    for key in expected:
        assert_close(found[key].numpy(), expected[key].numpy(), 1e-4, key)


def test_head_initialization_follows_torchvision():
    head = models.RetinaNetHead(16, 2, 3, num_convs=1)
    head.build()
    bias = head.classification_head.cls_logits.bias.numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.01, rtol=1e-5)
    weight = head.regression_head.bbox_reg.weight.numpy()
    assert abs(weight.std() - 0.01) < 0.002 and not head.regression_head.bbox_reg.bias.numpy().any()


def test_head_gradients_float64():
    head = models.RetinaNetHead(4, 1, 2, num_convs=1)
    head.build()
    head.to(np.float64)
    x = np.random.default_rng(1).standard_normal((1, 3, 3, 4))
    assert check_gradients(lambda f: head([f])["cls_logits"] * 1.0 + head([f])["bbox_regression"].sum(), x)


# -- losses -----------------------------------------------------------------------------------------
def _anchors(image, feature_sizes, sizes, ratios):
    levels = AnchorGenerator(sizes, ratios).grid_anchors(image, feature_sizes)
    return np.concatenate(levels).astype(np.float64), [len(a) for a in levels]


RETINA_TARGETS = [{"boxes": np.array([[4.0, 5.0, 14.0, 15.5], [18.0, 6.0, 30.0, 21.0]]), "labels": np.array([2, 0])},
                  {"boxes": np.array([[7.0, 9.0, 25.0, 28.0]]), "labels": np.array([1])}]


def _retina_case():
    model = _tiny_retinanet()
    anchors, level_sizes = _anchors((32, 32), [(4, 4), (2, 2)], ((8, 12), (16, 24)), ((1.0,), (1.0,)))
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, len(anchors), 3))
    codes = rng.standard_normal((2, len(anchors), 4)) * 0.3
    return model, anchors, level_sizes, logits, codes


def test_retinanet_matching_has_every_case():
    model, anchors, *_ = _retina_case()
    matched = model.match(RETINA_TARGETS[0]["boxes"], anchors)
    assert (matched == IGNORED).any() and (matched == -1).any() and {0, 1} <= set(matched.tolist())


def test_retinanet_loss_equals_torchvision_formulas():
    model, anchors, level_sizes, logits, codes = _retina_case()
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in RETINA_TARGETS]
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (logits, codes)]
    losses = model.compute_loss(targets, {"cls_logits": ours[0], "bbox_regression": ours[1]}, anchors, level_sizes)
    theirs = [torch.tensor(a, requires_grad=True) for a in (logits, codes)]
    torch_targets = [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in targets]
    expected = ref.retinanet_loss(*theirs, torch.tensor(anchors), torch_targets)
    for key in expected:
        assert_close(losses[key].numpy(), expected[key].detach().numpy(), 1e-12, key)
    (losses["classification"] + losses["bbox_regression"]).backward()
    (expected["classification"] + expected["bbox_regression"]).backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-10, "gradient")


def test_retinanet_loss_gradients_float64():
    model, anchors, level_sizes, logits, codes = _retina_case()

    def total(cls, reg):
        losses = model.compute_loss(RETINA_TARGETS, {"cls_logits": cls, "bbox_regression": reg}, anchors, level_sizes)
        return losses["classification"] + losses["bbox_regression"]

    assert check_gradients(total, logits, codes)


def test_fcos_loss_equals_torchvision_formulas():
    model = models.FCOS(_tiny_backbone(extra=None), 3, anchor_sizes=[[8], [16]], image_mean=(0.5,),
                        image_std=(0.5,), head_convs=1, head_groups=4)
    anchors, level_sizes = _anchors((64, 64), [(8, 8), (4, 4)], ((8,), (16,)), ((1.0,), (1.0,)))
    targets = [{"boxes": np.array([[10.0, 12.0, 30.0, 34.0], [36.0, 8.0, 60.0, 40.0]]), "labels": np.array([2, 0])},
               {"boxes": np.array([[20.0, 20.0, 50.0, 56.0]]), "labels": np.array([1])}]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, len(anchors), 3)), rng.uniform(0.5, 2.0, (2, len(anchors), 4)),
              rng.standard_normal((2, len(anchors), 1))]
    keys = ("cls_logits", "bbox_regression", "bbox_ctrness")
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    losses = model.compute_loss(targets, dict(zip(keys, ours)), anchors, level_sizes)
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    torch_targets = [{"boxes": torch.tensor(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in targets]
    expected = ref.fcos_loss(*theirs, torch.tensor(anchors), torch_targets, level_sizes)
    assert set(losses) == set(expected)
    for key in expected:
        assert_close(losses[key].numpy(), expected[key].detach().numpy(), 1e-12, key)
    sum(losses.values()).backward()
    sum(expected.values()).backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-10, "gradient")


# -- the models end to end ------------------------------------------------------------------------------
def _scenes(count, seed):
    return scene_targets(count, seed, label_offset=0)


def _map(model, images, targets):
    return map_at_50(model, images, targets, 10, label_offset=0)


def test_retinanet_learns_digit_scenes():
    lamina.manual_seed(0)
    images, targets = _scenes(288, seed=0)
    model = models.RetinaNet(_tiny_backbone(extra=None, channels=32, frozen=False), 10, anchor_sizes=[[16], [32]],
                             aspect_ratios=[[1.0, 2.0]] * 2, image_mean=(0.5,), image_std=(0.5,), head_convs=1)
    model.build((None, 48, 48, 1))
    untrained, trained, seconds = train_on_scenes(model, images, targets, steps=150, lr=3e-3, score=_map)
    print(f"RetinaNet on digit scenes: mAP@0.5 {untrained:.3f} -> {trained:.3f} after {seconds:.1f} s")
    assert trained > max(0.15, untrained + 0.1)


def test_detections_are_well_formed():
    model = _tiny_retinanet(score_thresh=0.0, detections_per_img=7)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    with lamina.no_grad():
        found = model.eval()(lamina.tensor(x))
    assert len(found) == 2
    for d in found:
        assert d["boxes"].shape == (7, 4) and d["scores"].shape == d["labels"].shape == (7,)
        assert (np.diff(d["scores"]) <= 0).all() and set(d["labels"].tolist()) <= {0, 1, 2}
        assert d["boxes"].min() >= 0 and d["boxes"].max() <= 32


@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_config_and_save_load_round_trip(kind, tmp_path):
    if kind == "retinanet":
        model = _tiny_retinanet(score_thresh=0.0, detections_per_img=20)
    else:
        model = models.FCOS(_tiny_backbone(), 3, anchor_sizes=[[8], [16], [32], [64]], image_mean=(0.5,),
                            image_std=(0.5,), head_convs=1, head_groups=4, score_thresh=0.0, detections_per_img=20)
    check_round_trip(model, np.random.default_rng(0).uniform(size=(1, 32, 32, 1)).astype(np.float32),
                     tmp_path / f"{kind}.safetensors")


def test_trainable_layers_freeze_the_first_stages():
    backbone = models.resnet_fpn_backbone(18, trainable_layers=3, returned_layers=(2, 3), width=8, out_channels=8,
                                          frozen_batch_norm=False)
    backbone.build((None, 32, 32, 3))
    trainable = {name.split(".")[1] for name, _ in backbone.named_parameters(trainable_only=True) if
                 name.startswith("body")}
    assert trainable == {"layer3", "layer2"}
    assert any(name.startswith("fpn") for name, _ in backbone.named_parameters(trainable_only=True))


def test_bad_inputs_raise_clear_errors():
    model = _tiny_retinanet()
    x = np.zeros((2, 32, 32, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="targets are required in training mode"):
        model.train()(lamina.tensor(x))
    with pytest.raises(lamina.ShapeError, match="looks like NCHW"):
        model.eval()(lamina.tensor(np.zeros((2, 1, 32, 32), dtype=np.float32)))
    with pytest.raises(lamina.ShapeError, match="add a batch axis"):
        model.eval()(lamina.tensor(np.zeros((32, 32, 1), dtype=np.float32)))
    bad = [{"boxes": np.array([[5.0, 5.0, 5.0, 9.0]]), "labels": np.array([0])}] * 2
    with pytest.raises(ValueError, match="degenerate boxes"):
        model.train()(lamina.tensor(x), bad)
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        model.train()(lamina.tensor(x), [{"boxes": np.array([[1.0, 1.0, 9.0, 9.0]]), "labels": np.array([7])}] * 2)
    with pytest.raises(ValueError, match="2 targets for 1 images"):
        model.train()(lamina.tensor(x[:1]), RETINA_TARGETS)


def test_training_without_objects_gives_a_zero_box_loss():
    model = _tiny_retinanet()
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)}] * 2
    losses = model.train()(lamina.tensor(x), empty)
    assert float(losses["bbox_regression"].numpy()) == 0.0 and float(losses["classification"].numpy()) > 0
    (losses["classification"] + losses["bbox_regression"]).backward()
