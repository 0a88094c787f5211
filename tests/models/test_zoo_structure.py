"""The zoo's architectures: published parameter counts, the course tables' volumes, the
torchvision / Keras names, unbuilt builders, configs and saving."""

import numpy as np
import pytest

import lamina
from lamina import models, nn
from lamina.nn import init, layer_from_config, layer_to_config

PUBLISHED = [
    ("alexnet", {}, 62_378_344),
    ("zfnet", {}, 107_627_624),
    ("vgg11", {}, 132_863_336),
    ("vgg13", {}, 133_047_848),
    ("vgg16", {}, 138_357_544),
    ("vgg19", {}, 143_667_240),
    ("vgg16", {"batch_norm": True}, 138_365_992),
    ("googlenet", {}, 6_624_904),
    ("googlenet", {"aux_logits": True}, 13_004_888),
    ("inception_v3", {}, 23_834_568),
    ("inception_v3", {"aux_logits": True}, 27_161_264),
    ("resnet18", {}, 11_689_512),
    ("resnet34", {}, 21_797_672),
    ("resnet50", {}, 25_557_032),
    ("resnet101", {}, 44_549_160),
    ("resnet152", {}, 60_192_808),
    ("mobilenet", {}, 4_231_976),
    ("resnet_cifar", {"depth": 20, "shortcut": "A"}, 269_722),
    ("resnet_cifar", {"depth": 20, "shortcut": "B"}, 272_474),
]


@pytest.mark.parametrize("name, kwargs, expected", PUBLISHED, ids=[f"{n}-{k}" for n, k, _ in PUBLISHED])
def test_published_parameter_counts(name, kwargs, expected):
    model = getattr(models, name)(**kwargs)
    assert not model.built and model.parameters() == []  # builders return unbuilt models
    assert model.compute_output_shape(model.input_shape)[-1] == (10 if name == "resnet_cifar" else 1000)
    with init.meta():  # shape-only weights: the counts without the memory
        model.build(model.input_shape)
    assert model.num_parameters(trainable_only=True) == expected


def test_mobilenet_moving_statistics_are_not_trainable():
    model = models.mobilenet()
    with init.meta():
        model.build(model.input_shape)
    moving = sum(int(np.prod(b.shape)) for _, b in model.named_buffers())
    assert moving == 21_888  # Keras: 4,253,864 parameters of which 21,888 non-trainable
    assert model.num_parameters() == 4_231_976


def _volumes(model):
    shapes, shape = [], model.input_shape
    for layer in model:
        shape = layer.compute_output_shape(shape)
        shapes.append((layer.name, shape[1:]))
    return dict(shapes)


def test_alexnet_follows_the_course_table():
    v = _volumes(models.alexnet())
    assert v["conv1"] == (55, 55, 96) and v["pool1"] == (27, 27, 96)
    assert v["conv2"] == (27, 27, 256) and v["pool2"] == (13, 13, 256)
    assert v["conv3"] == (13, 13, 384) and v["conv4"] == (13, 13, 384) and v["conv5"] == (13, 13, 256)
    assert v["pool5"] == (6, 6, 256) and v["flatten"] == (9216,) and v["fc6"] == (4096,)
    model = models.alexnet()
    with init.meta():
        model.build(model.input_shape)
    counts = {layer.name: layer.num_parameters() for layer in model}
    assert counts["conv1"] == 34_944 and counts["conv2"] == 614_656 and counts["conv3"] == 885_120
    assert counts["conv4"] == 1_327_488 and counts["conv5"] == 884_992
    assert counts["fc6"] == 37_752_832 and counts["fc7"] == 16_781_312 and counts["fc8"] == 4_097_000
    assert isinstance(model[-1], nn.Softmax)


def test_zfnet_follows_the_course_table():
    v = _volumes(models.zfnet())
    assert v["conv1"] == (110, 110, 96) and v["pool1"] == (55, 55, 96)
    assert v["conv2"] == (26, 26, 256) and v["pool2"] == (13, 13, 256)
    assert v["conv3"] == (13, 13, 512) and v["conv4"] == (13, 13, 1024) and v["conv5"] == (13, 13, 512)
    assert v["pool5"] == (6, 6, 512) and v["flatten"] == (18432,)


def test_vgg_and_resnet_stages():
    v = _volumes(models.vgg16())
    assert v["features"] == (7, 7, 512) and v["avgpool"] == (7, 7, 512) and v["flatten"] == (25088,)
    v = _volumes(models.resnet50())
    assert v["maxpool"] == (56, 56, 64)
    assert [v[f"layer{i}"] for i in range(1, 5)] == [(56, 56, 256), (28, 28, 512), (14, 14, 1024), (7, 7, 2048)]
    v = _volumes(models.resnet_cifar(32))
    assert [v[f"layer{i}"] for i in range(1, 4)] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
    assert len(models.resnet_cifar(56)["layer2"]) == 9


def test_branching_networks_shapes():
    g = models.googlenet()
    shape, seen = g.input_shape, {}
    for layer in g:
        shape = layer.compute_output_shape(shape)
        seen[layer.name] = shape[1:]
    assert seen["maxpool2"] == (28, 28, 192) and seen["inception3b"] == (28, 28, 480)
    assert seen["inception4e"] == (14, 14, 832) and seen["inception5b"] == (7, 7, 1024)
    v3 = models.inception_v3()
    shape, seen = v3.input_shape, {}
    for layer in v3:
        shape = layer.compute_output_shape(shape)
        seen[layer.name] = shape[1:]
    assert seen["maxpool2"] == (35, 35, 192) and seen["Mixed_5d"] == (35, 35, 288)
    assert seen["Mixed_6e"] == (17, 17, 768) and seen["Mixed_7a"] == (8, 8, 1280)
    assert seen["Mixed_7c"] == (8, 8, 2048)


def test_mobilenet_width_and_resolution_multipliers():
    m = models.mobilenet(alpha=0.5, rho=0.857)
    assert m.input_shape == (None, 192, 192, 3)
    assert m["conv1"].filters == 16 and m["conv_pw_13"].filters == 512
    assert m.compute_output_shape(m.input_shape) == (None, 1000)
    v = _volumes(models.mobilenet())
    assert v["conv1_relu"] == (112, 112, 32) and v["conv_pw_13_relu"] == (7, 7, 1024)
    with pytest.raises(ValueError):
        models.mobilenet(alpha=0)


def test_torchvision_names():
    def keys(model):
        with init.meta():
            model.build(model.input_shape)
        return set(model.state_dict())

    k = keys(models.resnet18())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var", "layer4.1.bn2.bias", "fc.weight", "fc.bias"} <= k
    k = keys(models.googlenet(aux_logits=True))
    assert {"conv1.conv.weight", "conv1.bn.running_var", "inception3a.branch2.1.conv.weight",
            "inception5b.branch4.1.bn.weight", "aux1.fc1.weight", "aux2.conv.conv.weight", "fc.bias"} <= k
    k = keys(models.inception_v3(aux_logits=True))
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_mean", "Mixed_6e.branch7x7dbl_5.conv.weight",
            "Mixed_7c.branch3x3dbl_3b.bn.bias", "AuxLogits.conv1.conv.weight", "AuxLogits.fc.weight"} <= k
    k = keys(models.mobilenet(alpha=0.25))
    assert {"conv1.weight", "conv1_bn.running_mean", "conv_dw_1.weight", "conv_pw_13_bn.bias", "logits.weight"} <= k


def test_bad_arguments():
    with pytest.raises(ValueError):
        models.resnet_cifar(21)
    with pytest.raises(ValueError):
        models.resnet_cifar(20, shortcut="C")
    with pytest.raises(ValueError):
        models.resnet(19)
    with pytest.raises(ValueError):
        models.vgg(12)
    with pytest.raises(ValueError):
        models.resnet18(input_shape=(224, 224))


def test_residual_block_shape_errors():
    block = models.BasicBlock(32)
    with pytest.raises(lamina.ShapeError, match="downsample"):
        block.compute_output_shape((None, 8, 8, 16))
    with pytest.raises(lamina.ShapeError, match="option A"):
        models.BasicBlock(16, stride=2, downsample=True, shortcut="A").compute_output_shape((None, 8, 8, 32))
    assert models.BasicBlock(32, 2, True, "A").compute_output_shape((None, 9, 9, 16)) == (None, 5, 5, 32)


SMALL = [
    ("resnet_cifar", {"depth": 8}, (2, 32, 32, 3)),
    ("resnet_cifar", {"depth": 8, "shortcut": "B"}, (2, 32, 32, 3)),
    ("resnet18", {"num_classes": 7, "input_shape": (64, 64, 3)}, (2, 64, 64, 3)),
    ("resnet50", {"num_classes": 7, "input_shape": (64, 64, 3)}, (2, 64, 64, 3)),
    ("mobilenet", {"alpha": 0.25, "input_shape": (64, 64, 3)}, (2, 64, 64, 3)),
    ("googlenet", {"num_classes": 5, "aux_logits": True, "input_shape": (64, 64, 3)}, (2, 64, 64, 3)),
    ("inception_v3", {"num_classes": 5, "input_shape": (75, 75, 3)}, (2, 75, 75, 3)),
    ("alexnet", {"num_classes": 5, "input_shape": (67, 67, 3)}, (2, 67, 67, 3)),
]


@pytest.mark.parametrize("name, kwargs, shape", SMALL, ids=[n for n, _, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, kwargs, shape):
    model = getattr(models, name)(**kwargs)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    model.eval()
    with lamina.no_grad():
        expected = model(lamina.tensor(x)).numpy()
    clone = layer_from_config(layer_to_config(model))
    clone.build(model.build_input_shape)
    assert list(clone.state_dict()) == list(model.state_dict())
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert type(loaded) is type(model)
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(lamina.tensor(x)).numpy(), expected)
