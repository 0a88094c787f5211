"""LR-ASPP: torchvision's parameter count, the head and the whole model (dilated MobileNet v3
large) equal to torch references with torchvision's names, gradients, training, config and
save/load round trips and input errors."""

import numpy as np
import pytest
import torch
import torch_lraspp as ref
import torch_zoo
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.models import load_torchvision_state_dict
from lamina.nn import init


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_parameter_count_equals_torchvision():
    model = models.lraspp_mobilenet_v3_large()
    assert not model.built
    assert model.compute_output_shape(model.input_shape) == (None, 520, 520, 21)
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 3_221_538


def test_dilated_backbone_has_output_stride_16():
    features = models.mobilenet_v3("large", dilated=True)[0]
    assert features.compute_output_shape((None, 224, 224, 3)) == (None, 14, 14, 960)
    assert [block.dilation for block in list(features)[13:16]] == [2, 2, 2]


def test_head_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.LRASPPHead(6, 10, 3, inter_channels=8), seed=3)
    head = models.LRASPPHead(6, 10, 3, inter_channels=8)
    rng = np.random.default_rng(0)
    low = rng.standard_normal((2, 8, 12, 6)).astype(np.float32)
    high = rng.standard_normal((2, 3, 5, 10)).astype(np.float32)
    head(lamina.tensor(low), lamina.tensor(high))
    load_torchvision_state_dict(head, tmodel.state_dict())
    with torch.no_grad():
        expected = tmodel(_nchw(low), _nchw(high)).numpy().transpose(0, 2, 3, 1)
    with lamina.no_grad():
        found = head.eval()(lamina.tensor(low), lamina.tensor(high)).numpy()
    assert found.shape == (2, 8, 12, 3)
    assert_close(found, expected, 1e-5, "LR-ASPP head")


def test_model_equals_torch_reference():
    tmodel = torch_zoo.randomize(ref.LRASPP(5), seed=4)
    model = models.lraspp_mobilenet_v3_large(num_classes=5, input_shape=(72, 56, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = random_inputs((2, 72, 56, 3), 1)
    with torch.no_grad():
        expected = tmodel(_nchw(x))["out"].numpy().transpose(0, 2, 3, 1)
    with lamina.no_grad():
        found = model.eval().segment(lamina.tensor(x))
    assert list(found) == ["out"] and found["out"].shape == (2, 72, 56, 5)
    assert_close(found["out"].numpy(), expected, 1e-4, "lraspp scores")


def test_tiny_head_gradients_float64():
    head = models.LRASPPHead(2, 3, 2, inter_channels=2)
    rng = np.random.default_rng(2)
    low, high = rng.standard_normal((1, 4, 4, 2)), rng.standard_normal((1, 2, 2, 3))
    head(lamina.tensor(low.astype(np.float32)), lamina.tensor(high.astype(np.float32)))
    head.to(np.float64).eval()
    assert check_gradients(lambda a, b: head(a, b), low, high)


def test_training_step_reaches_every_parameter():
    model = models.lraspp_mobilenet_v3_large(num_classes=3, input_shape=(32, 32, 3), width_mult=0.25)
    x = lamina.tensor(random_inputs((2, 32, 32, 3), 0))
    scores = model.train()(x)
    labels = np.random.default_rng(0).integers(0, 3, (2, 32, 32))
    loss = lamina.functional.cross_entropy(scores.reshape(-1, 3), labels.reshape(-1))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_config_and_save_load_round_trip(tmp_path):
    model = models.lraspp_mobilenet_v3_large(num_classes=4, input_shape=(32, 32, 3), width_mult=0.5)
    model.build((None, 32, 32, 3))
    check_config_and_save_load(model, random_inputs((1, 32, 32, 3), 2), tmp_path / "lraspp.safetensors")


def test_bad_inputs_raise_clear_errors():
    head = models.LRASPPHead(6, 10, 3)
    with pytest.raises(lamina.ShapeError, match="the high map has shape"):
        head(lamina.tensor(np.zeros((1, 8, 8, 6), dtype=np.float32)),
             lamina.tensor(np.zeros((1, 4, 4, 7), dtype=np.float32)))
    backbone = models.mobilenet_v3("large", dilated=True)[0]
    with pytest.raises(ValueError, match="low_layer '20'"):
        models.LRASPP(backbone, 40, 960, 3, low_layer="20")
    with pytest.raises(ValueError, match="dilation must be a positive int"):
        models.MobileNetV3Block(8, 3, 16, 8, False, dilation=0)


def test_onnx_export_gives_the_same_scores(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from lamina.export import export_onnx

    model = models.lraspp_mobilenet_v3_large(num_classes=3, input_shape=(40, 48, 3), width_mult=0.25)
    model.build((None, 40, 48, 3))
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    x = random_inputs((2, 40, 48, 3), 5)
    with lamina.no_grad():
        expected = model.eval()(lamina.tensor(x)).numpy()
    path = export_onnx(model, tmp_path / "lraspp.onnx", input_shape=(40, 48, 3))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert_close(got, expected, 1e-4, "onnx scores")
