"""FCN and DeepLabv3: torchvision's parameter counts, and the same outputs as a torch model with
torchvision's module names once its state dict is loaded (random weights and BN statistics)."""

import numpy as np
import pytest
import torch
import torch_segmentation
import torch_zoo

import lamina
from helpers import assert_close
from lamina import models
from lamina.models import load_torchvision_state_dict

# torchvision's published figures (21 classes, with the aux head) and the same without it
COUNTS = {
    ("fcn_resnet50", True): 35_322_218, ("fcn_resnet50", False): 32_957_013,
    ("fcn_resnet101", True): 54_314_346,
    ("deeplabv3_resnet50", True): 42_004_074, ("deeplabv3_resnet50", False): 39_638_869,
    ("deeplabv3_resnet101", True): 60_996_202,
}


@pytest.mark.parametrize("name, aux", list(COUNTS))
def test_parameter_counts_equal_torchvision(name, aux):
    model = getattr(models, name)(aux_loss=aux, input_shape=(16, 16, 3))
    model.build(model.input_shape)
    assert model.num_parameters() == COUNTS[name, aux]


def _both(kind, aux, classes=3):
    tmodel = torch_zoo.randomize(torch_segmentation.SegmentationModel(kind, (3, 4, 6, 3), classes, aux))
    model = getattr(models, f"{kind}_resnet50")(num_classes=classes, aux_loss=aux, input_shape=(35, 29, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    return model.eval(), tmodel


@pytest.mark.parametrize("kind, aux", [("deeplabv3", True), ("fcn", False)])
def test_outputs_equal_torch_reference(kind, aux):
    model, tmodel = _both(kind, aux)
    x = np.random.default_rng(0).standard_normal((1, 35, 29, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    with lamina.no_grad():
        found = model.segment(lamina.tensor(x))
        plain = model(lamina.tensor(x))
    assert set(found) == set(expected)
    for key in expected:
        assert_close(found[key].numpy(), expected[key].numpy().transpose(0, 2, 3, 1), 1e-4, f"{kind} {key}")
    np.testing.assert_array_equal(plain.numpy(), found["out"].numpy())


def test_dilated_backbone_keeps_output_stride_8():
    net = models.resnet(50, replace_stride_with_dilation=(False, True, True), input_shape=(64, 64, 3))
    layers = list(net)[:-2]                                    # without avgpool and fc
    shape = (None, 64, 64, 3)
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    assert shape == (None, 8, 8, 2048)
    assert net.get_submodule("layer4.0.conv2").dilation in (2, (2, 2))
    assert net.get_submodule("layer4.1.conv2").dilation in (4, (4, 4))
    assert net.get_submodule("layer3.0.conv2").dilation in (1, (1, 1))
    with pytest.raises(ValueError, match="replace_stride_with_dilation needs bottleneck blocks"):
        models.resnet(18, replace_stride_with_dilation=(False, True, True))


def test_training_mode_returns_the_aux_scores_too():
    model = models.fcn_resnet50(num_classes=2, aux_loss=True, input_shape=(16, 16, 3))
    x = np.zeros((1, 16, 16, 3), dtype=np.float32)
    assert model.compute_output_shape((None, 16, 16, 3)) == (None, 16, 16, 2)
    out, aux = model.train()(lamina.tensor(x))
    assert out.shape == aux.shape == (1, 16, 16, 2)
