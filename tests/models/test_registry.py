import numpy as np
import pytest

import lamina
from lamina import models
from lamina.models import MODEL_GROUPS, get_model, get_model_builder, list_models


def test_every_registered_name_is_the_public_builder_of_that_name():
    names = list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    for name in names:
        assert get_model_builder(name) is getattr(models, name)


def test_the_torchvision_families_are_registered():
    names = set(list_models())
    for name in ("resnet18", "vit_h_14", "swin_v2_b", "maxvit_t", "convnext_large", "efficientnet_v2_l",
                 "regnet_y_128gf", "mobilenet_v2", "mobilenet_v3_small", "mnasnet1_3", "shufflenet_v2_x2_0",
                 "squeezenet1_1", "densenet201", "googlenet", "inception_v3", "vgg19", "alexnet", "lenet5",
                 "r2plus1d_18", "s3d", "fcn_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large",
                 "retinanet_resnet50_fpn", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn",
                 "fasterrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn", "ssd300_vgg16",
                 "ssdlite320_mobilenet_v3_large", "gpt2", "bert"):
        assert name in names, name


def test_groups_partition_the_registry():
    grouped = [name for group in MODEL_GROUPS for name in list_models(module=group)]
    assert sorted(grouped) == list_models()
    assert list_models(module="video") == ["mc3_18", "r2plus1d_18", "r3d_18", "s3d"]
    assert "ssd300_vgg16" in list_models(module="detection")
    assert "keypointrcnn_resnet50_fpn" in list_models(module="detection")
    assert "lraspp_mobilenet_v3_large" in list_models(module="segmentation")
    assert {"gpt2", "bert"} <= set(list_models(module="language"))
    assert "resnet18" in list_models(module="classification")
    assert "resnet18" not in list_models(module="detection")


def test_include_and_exclude_patterns():
    assert list_models(include="resnet*", exclude="*cifar") == [
        "resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]
    assert list_models(include=["vgg1?", "alexnet"]) == ["alexnet", "vgg11", "vgg13", "vgg16", "vgg19"]
    assert list_models(module="classification", include="swin_v2*", exclude=["*_b"]) == ["swin_v2_s", "swin_v2_t"]
    assert list_models(include="no_such_model*") == []


def test_get_model_builds_with_its_config():
    model = get_model("resnet18", num_classes=7, input_shape=(32, 32, 3))
    out = model(lamina.tensor(np.zeros((2, 32, 32, 3), np.float32)))
    assert out.shape == (2, 7)
    lenet = get_model("LeNet5", num_classes=3)
    assert lenet(lamina.tensor(np.zeros((1, 32, 32, 1), np.float32))).shape == (1, 3)


def test_weights_other_than_none_are_refused_with_a_pointer_to_the_loaders():
    assert get_model("lenet5", weights=None) is not None
    with pytest.raises(ValueError, match="no pretrained weights.*load_torchvision_state_dict"):
        get_model("resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="load_hf_"):
        get_model("gpt2", weights="DEFAULT")


def test_unknown_names_list_close_matches():
    with pytest.raises(ValueError, match="resnet18"):
        get_model("resnet19")
    with pytest.raises(ValueError, match="list_models"):
        get_model_builder("qqqqqqqq")
    with pytest.raises(ValueError, match="unknown module 'detector'.*detection"):
        list_models(module="detector")
