"""``load_torchvision_state_dict``: torch models with torchvision's names and random weights
(random BN statistics, eval mode) give the same outputs as the zoo models after loading."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch_zoo

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.models import load_torchvision_state_dict
from lamina.models.vgg import VGG_CONFIGS


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_out(tmodel, x_nhwc, **kwargs):
    with torch.no_grad():
        return tmodel(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()), **kwargs).numpy()


def _lamina_out(model, x):
    model.eval()
    with lamina.no_grad():
        return model(lamina.tensor(x)).numpy()


def test_resnet_cifar_option_b_matches_torch():
    torch.manual_seed(0)
    tmodel = torch_zoo.randomize(torch_zoo.ResNet(torch_zoo.BasicBlock, (3, 3, 3), num_classes=10, cifar=True))
    model = models.resnet_cifar(20, shortcut="B")
    state = tmodel.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state)
    load_torchvision_state_dict(model, state)  # torch tensors; builds the model for its input shape
    x = _images((4, 32, 32, 3))
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x), 1e-4, "resnet_cifar(20, 'B') logits")


def test_numpy_state_dict_and_bottleneck_resnet50():
    tmodel = torch_zoo.randomize(torch_zoo.ResNet(torch_zoo.Bottleneck, (3, 4, 6, 3), num_classes=10))
    model = models.resnet50(num_classes=10, input_shape=(64, 64, 3))
    load_torchvision_state_dict(model, {k: v.numpy() for k, v in tmodel.state_dict().items()})
    x = _images((2, 64, 64, 3), 1)
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x), 1e-4, "resnet50 logits")


def _small_vgg():
    torch_model = torch.nn.Sequential(OrderedDict([
        ("features", torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 6, 3, padding=1),
                                         torch.nn.ReLU(), torch.nn.MaxPool2d(2))),
        ("flatten", torch.nn.Flatten()),
        ("classifier", torch.nn.Sequential(torch.nn.Linear(6 * 3 * 4, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 5))),
    ]))
    model = nn.Sequential(
        nn.Sequential(nn.Conv2D(8, 3, padding=1, name="0"), nn.ReLU(name="1"), nn.MaxPool2D(2, name="2"),
                      nn.Conv2D(6, 3, padding=1, name="3"), nn.ReLU(name="4"), nn.MaxPool2D(2, name="5"),
                      name="features"),
        nn.Flatten(name="flatten"),
        nn.Sequential(nn.Dense(16, name="0"), nn.ReLU(name="1"), nn.Dense(5, name="2"), name="classifier"),
    )
    model.build((None, 12, 16, 3))
    return torch_zoo.randomize(torch_model), model


def test_linear_after_flatten_is_permuted_from_chw_to_hwc():
    tmodel, model = _small_vgg()
    state = tmodel.state_dict()
    load_torchvision_state_dict(model, state)
    x = _images((3, 12, 16, 3), 2)
    expected = _torch_out(tmodel, x)
    assert_close(_lamina_out(model, x), expected, 1e-4, "small VGG logits")
    # the plain transpose (no CHW -> HWC permutation) would give other numbers
    w = state["classifier.0.weight"].numpy()
    model["classifier"]["0"].weight.data = np.ascontiguousarray(w.T)
    assert np.abs(_lamina_out(model, x) - expected).max() > 1e-2


def test_vgg11_with_adaptive_pool_matches_torch():
    tmodel = torch_zoo.randomize(torch_zoo.VGG(VGG_CONFIGS[11], num_classes=10))
    model = models.vgg11(num_classes=10, input_shape=(64, 64, 3))  # 2x2 map -> adaptive pool to 7x7
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = _images((2, 64, 64, 3), 3)
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x), 1e-4, "vgg11 logits")


def test_googlenet_with_aux_heads_matches_torch():
    tmodel = torch_zoo.randomize(torch_zoo.GoogLeNet(num_classes=10))
    model = models.googlenet(num_classes=10, aux_logits=True, input_shape=(96, 96, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = _images((2, 96, 96, 3), 4)
    taps = {}
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x, taps=taps), 1e-4, "googlenet logits")
    for head, tap in (("aux1", "inception4a"), ("aux2", "inception4d")):
        feature = taps[tap].numpy().transpose(0, 2, 3, 1)  # 6x6 map: adaptive 4x4 windows overlap
        with torch.no_grad():
            expected = getattr(tmodel, head)(taps[tap]).numpy()
        assert_close(_lamina_out(getattr(model, head), feature), expected, 1e-4, f"googlenet {head}")


def test_inception_v3_matches_torch():
    tmodel = torch_zoo.randomize(torch_zoo.InceptionV3(num_classes=10))
    model = models.inception_v3(num_classes=10, aux_logits=True)  # the aux head needs 299x299 inputs
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = _images((1, 299, 299, 3), 5)
    taps = {}
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x, taps=taps), 1e-4, "inception_v3 logits")
    with torch.no_grad():
        expected = tmodel.AuxLogits(taps["Mixed_6e"]).numpy()
    feature = taps["Mixed_6e"].numpy().transpose(0, 2, 3, 1)
    assert_close(_lamina_out(model.AuxLogits, feature), expected, 1e-4, "inception_v3 aux head")
    model.train()  # training mode returns (logits, aux)
    with lamina.no_grad():
        out = model(lamina.tensor(x[:1].repeat(2, axis=0)))
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 10), (2, 10)]


def test_mobilenet_matches_keras_layout_in_torch():
    """Strided layers pad like Keras (one pixel bottom/right) and ReLU6 bounds the activations."""
    tmodel = torch_zoo.randomize(torch_zoo.mobilenet(alpha=0.25, num_classes=10))
    model = models.mobilenet(num_classes=10, alpha=0.25, input_shape=(64, 64, 3), classifier_activation=None)
    model.build(model.input_shape)
    ours = [layer for layer in model if layer.parameters()]
    theirs = [m for m in tmodel if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))]
    assert len(ours) == len(theirs) == 55  # conv1, bn, 13 x (dw, bn, pw, bn), fc
    for layer, module in zip(ours, theirs):
        if isinstance(module, torch.nn.BatchNorm2d):
            for attr in ("weight", "bias"):
                getattr(layer, attr).data = getattr(module, attr).detach().numpy().copy()
            layer.running_mean = module.running_mean.numpy().copy()
            layer.running_var = module.running_var.numpy().copy()
            continue
        w = module.weight.detach().numpy()
        layer.weight.data = np.ascontiguousarray(w.transpose(0, 2, 3, 1) if w.ndim == 4 else w.T)
        if module.bias is not None:
            layer.bias.data = module.bias.detach().numpy().copy()
    x = _images((2, 64, 64, 3), 9) * 3
    assert_close(_lamina_out(model, x), _torch_out(tmodel, x), 1e-4, "mobilenet logits")


def test_missing_unexpected_and_misshaped_keys():
    tmodel, model = _small_vgg()
    state = dict(tmodel.state_dict())
    before = model.state_dict()["features.0.weight"].copy()

    missing = {k: v for k, v in state.items() if k != "classifier.2.bias"}
    with pytest.raises(KeyError, match="classifier.2.bias"):
        load_torchvision_state_dict(model, missing)
    with pytest.raises(KeyError, match="extra.weight"):
        load_torchvision_state_dict(model, {**state, "extra.weight": np.zeros(3)})

    bad = {**state, "features.3.weight": torch.zeros(6, 8, 5, 5)}
    with pytest.raises(lamina.ShapeError, match=r"features\.3\.weight.*\(6, 8, 5, 5\).*\(6, 8, 3, 3\)"):
        load_torchvision_state_dict(model, bad)
    bad = {**state, "classifier.0.weight": torch.zeros(72, 16)}
    with pytest.raises(lamina.ShapeError, match=r"classifier\.0\.weight.*expected \(16, 72\)"):
        load_torchvision_state_dict(model, bad)
    np.testing.assert_array_equal(model.state_dict()["features.0.weight"], before)  # nothing copied

    load_torchvision_state_dict(model, {**missing, "extra.weight": np.zeros(3)}, strict=False)
    np.testing.assert_allclose(model.state_dict()["features.0.weight"],
                               state["features.0.weight"].numpy().transpose(0, 2, 3, 1))


def test_unbuilt_model_without_input_shape():
    model = nn.Sequential(nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(2))
    with pytest.raises(RuntimeError, match="build"):
        load_torchvision_state_dict(model, {})


@pytest.mark.parametrize("size, out", [(7, 7), (1, 7), (14, 4), (5, 3), (8, 4), (6, (2, 3))])
def test_adaptive_avg_pool_matches_torch(size, out):
    x = np.random.default_rng(7).standard_normal((2, size, size + 1, 3))
    layer = models.AdaptiveAvgPool2D(out)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    expected = torch.nn.AdaptiveAvgPool2d(out)(xt)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = layer(xl)
    assert_close(y.numpy(), expected.detach().numpy().transpose(0, 2, 3, 1), 1e-12, "adaptive pool")
    up = np.random.default_rng(8).standard_normal(y.shape)
    y.backward(up)
    (expected * torch.tensor(up.transpose(0, 3, 1, 2))).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), 1e-12, "adaptive pool gradient")
    assert layer.compute_output_shape((None, size, size + 1, 3)) == (None, *layer.output_size, 3)
