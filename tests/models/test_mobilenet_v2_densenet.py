"""MobileNet v2 and DenseNet: torchvision's parameter counts, the summary table, outputs equal
to torch models built with torchvision's structure and names (random weights loaded with
``load_torchvision_state_dict``), configs and saving, bad arguments, and learning 8x8 digits."""

import numpy as np
import pytest
import torch
import torch_zoo
from torch import nn as tnn
from zoo_checks import eval_output, random_inputs

import lamina
from helpers import assert_close
from lamina import optim
from lamina.analysis import summary
from lamina.models import load_torchvision_state_dict
from lamina.models.densenet import DenseLayer, densenet, densenet121, densenet169, densenet201
from lamina.models.mobilenet_v2 import InvertedResidual, make_divisible, mobilenet_v2
from lamina.nn import layer_from_config, layer_to_config
from lamina.train import Trainer


# -- torch references with torchvision's module structure and names ---------------------------
def _rounded_channels(value, divisor=8):
    """torchvision's channel rounding: nearest multiple of 8, at least 8, at most 10% lost."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _torch_conv_bn_relu6(cin, cout, kernel, stride=1, groups=1):
    return tnn.Sequential(tnn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                          tnn.BatchNorm2d(cout), tnn.ReLU6())


class TorchInvertedResidual(tnn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = int(round(cin * t))
        layers = [] if t == 1 else [_torch_conv_bn_relu6(cin, hidden, 1)]
        layers += [_torch_conv_bn_relu6(hidden, hidden, 3, stride, hidden), tnn.Conv2d(hidden, cout, 1, bias=False),
                   tnn.BatchNorm2d(cout)]
        self.conv = tnn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TorchMobileNetV2(tnn.Module):
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, num_classes, width_mult):
        super().__init__()
        channels = _rounded_channels(32 * width_mult)
        features = [_torch_conv_bn_relu6(3, channels, 3, 2)]
        for t, c, n, s in self.SETTING:
            out = _rounded_channels(c * width_mult)
            for i in range(n):
                features.append(TorchInvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        last = _rounded_channels(1280 * max(1.0, width_mult))
        features.append(_torch_conv_bn_relu6(channels, last, 1))
        self.features = tnn.Sequential(*features)
        self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(tnn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class TorchDenseLayer(tnn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.relu1 = tnn.BatchNorm2d(cin), tnn.ReLU()
        self.conv1 = tnn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = tnn.BatchNorm2d(bn_size * growth), tnn.ReLU()
        self.conv2 = tnn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class TorchDenseBlock(tnn.ModuleDict):
    def __init__(self, num_layers, cin, growth, bn_size):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", TorchDenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class TorchDenseNet(tnn.Module):
    def __init__(self, growth, block_config, num_init, bn_size, num_classes):
        super().__init__()
        self.features = tnn.Sequential()
        for name, module in (("conv0", tnn.Conv2d(3, num_init, 7, 2, 3, bias=False)),
                             ("norm0", tnn.BatchNorm2d(num_init)), ("relu0", tnn.ReLU()),
                             ("pool0", tnn.MaxPool2d(3, 2, 1))):
            self.features.add_module(name, module)
        channels = num_init
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", TorchDenseBlock(n, channels, growth, bn_size))
            channels += n * growth
            if i != len(block_config) - 1:
                transition = tnn.Sequential()
                for name, module in (("norm", tnn.BatchNorm2d(channels)), ("relu", tnn.ReLU()),
                                     ("conv", tnn.Conv2d(channels, channels // 2, 1, bias=False)),
                                     ("pool", tnn.AvgPool2d(2, 2))):
                    transition.add_module(name, module)
                self.features.add_module(f"transition{i + 1}", transition)
                channels //= 2
        self.features.add_module("norm5", tnn.BatchNorm2d(channels))
        self.classifier = tnn.Linear(channels, num_classes)

    def forward(self, x):
        out = tnn.functional.adaptive_avg_pool2d(torch.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(out, 1))


def _torch_out(tmodel, x_nhwc):
    with torch.no_grad():
        return tmodel(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


# -- architecture --------------------------------------------------------------------------------
PUBLISHED = [(mobilenet_v2, 3_504_872), (densenet121, 7_978_856), (densenet169, 14_149_480),
             (densenet201, 20_013_928)]


@pytest.mark.parametrize("builder, expected", PUBLISHED, ids=[b.__name__ for b, _ in PUBLISHED])
def test_torchvision_parameter_counts(builder, expected):
    model = builder()
    assert not model.built and model.parameters() == []
    assert model.compute_output_shape(model.input_shape) == (None, 1000)
    model.build(model.input_shape)
    assert model.num_parameters() == expected


def test_channel_rounding_and_width_multiplier():
    assert make_divisible(11.2) == 16   # 32 x 0.35: the nearest multiple, 8, would lose 29%
    assert make_divisible(5.6) == 8     # never below 8
    assert make_divisible(33.6) == 32   # 96 x 0.35: 32 loses under 10%
    assert make_divisible(12) == 16     # halves round up
    thin, wide = mobilenet_v2(width_mult=0.35), mobilenet_v2(width_mult=1.4)
    assert thin["features"]["0"]["0"].filters == 16 and thin["features"]["18"]["0"].filters == 1280
    assert wide["features"]["0"]["0"].filters == 48 and wide["features"]["18"]["0"].filters == 1792
    block = thin["features"]["17"]
    assert (block.in_channels, block.out_channels, block.hidden_channels) == (56, 112, 336)


def test_summary_shows_volumes_parameters_and_macs():
    s = summary(mobilenet_v2)
    rows = {r["name"]: r for r in s.rows}
    assert rows["features.0.0"]["output_shape"] == [112, 112, 32]
    assert rows["features.18.2"]["output_shape"] == [7, 7, 1280]  # before the global pooling
    assert rows["classifier.1"]["output_shape"] == [1000]
    depthwise = rows["features.2.conv.1.0"]
    assert depthwise["output_shape"] == [56, 56, 96] and "g=96" in depthwise["hyperparameters"]
    assert depthwise["params"] == 96 * 3 * 3 and depthwise["macs"] == 56 * 56 * 96 * 3 * 3
    assert s.total_params == 3_504_872
    assert abs(s.total_macs - 300e6) < 0.01 * 300e6  # the paper's 300 M multiply-adds
    assert "(7, 7, 1280)" in str(s)

    s = summary(densenet121)
    rows = {r["name"]: r for r in s.rows}
    assert rows["features.pool0"]["output_shape"] == [56, 56, 64]
    # layer l of a block reads c_0 + (l - 1) k channels: 64 + 5 x 32 for the sixth of block 1
    assert rows["features.denseblock1.denselayer6.norm1"]["input_shape"] == [56, 56, 224]
    assert rows["features.transition1.norm"]["input_shape"] == [56, 56, 256]
    assert rows["features.transition1.pool"]["output_shape"] == [28, 28, 128]
    assert rows["features.norm5"]["output_shape"] == [7, 7, 1024]
    assert s.total_params == 7_978_856
    assert abs(s.total_macs - 2.83e9) < 0.02 * 2.83e9  # torchvision's 2.83 GFLOPs
    assert "features.denseblock4.denselayer16.conv2 (Conv2D)" in str(s)


# -- torchvision weights ------------------------------------------------------------------------
def test_mobilenet_v2_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(TorchMobileNetV2(num_classes=10, width_mult=0.35), seed=1)
    model = mobilenet_v2(num_classes=10, width_mult=0.35, input_shape=(32, 32, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())  # strict: the key sets are equal
    x = random_inputs((2, 32, 32, 3), 0) * 2
    assert_close(eval_output(model, x), _torch_out(tmodel, x), 1e-5, "mobilenet_v2(0.35) logits")


def test_densenet_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(TorchDenseNet(4, (2, 2), 8, bn_size=4, num_classes=5), seed=2)
    model = densenet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=4, num_classes=5,
                     input_shape=(32, 32, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    x = random_inputs((3, 32, 32, 3), 1)
    assert_close(eval_output(model, x), _torch_out(tmodel, x), 1e-5, "densenet logits")


def test_densenet_training_step_matches_torch():
    """Batch statistics in training mode and the gradients through the concatenations."""
    tmodel = torch_zoo.randomize(TorchDenseNet(4, (3,), 6, bn_size=2, num_classes=4), seed=3).train()
    model = densenet(growth_rate=4, block_config=(3,), num_init_features=6, bn_size=2, num_classes=4,
                     input_shape=(16, 16, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())
    x, labels = random_inputs((4, 16, 16, 3), 2), np.array([0, 3, 1, 2])
    model.train()
    loss = lamina.functional.categorical_cross_entropy(model(lamina.tensor(x)), labels, from_logits=True)
    loss.backward()
    tloss = tnn.functional.cross_entropy(tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())),
                                         torch.from_numpy(labels))
    tloss.backward()
    assert_close(loss.numpy(), tloss.detach().numpy(), 1e-5, "loss")
    ours, theirs = dict(model.named_parameters()), dict(tmodel.named_parameters())
    for name in ("features.conv0.weight", "features.denseblock1.denselayer1.conv1.weight",
                 "features.denseblock1.denselayer3.norm1.weight", "classifier.weight"):
        grad = theirs[name].grad.numpy()
        grad = grad.transpose(0, 2, 3, 1) if grad.ndim == 4 else grad.T if grad.ndim == 2 else grad
        assert_close(ours[name].grad, grad, 1e-4, f"gradient of {name}")


# -- configs, saving, errors ----------------------------------------------------------------------
SMALL = [
    ("mobilenet_v2", lambda: mobilenet_v2(num_classes=4, width_mult=0.25, input_shape=(16, 16, 3))),
    ("densenet", lambda: densenet(4, (2, 1), 8, bn_size=2, drop_rate=0.1, num_classes=4, input_shape=(16, 16, 3))),
]


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, 16, 16, 3), 3)
    expected = eval_output(model, x)
    clone = layer_from_config(layer_to_config(model))
    clone.build(model.build_input_shape)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    path = tmp_path / f"{name}.safetensors"
    lamina.save(model, path)
    np.testing.assert_array_equal(eval_output(lamina.load(path), x), expected)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v2(width_mult=0)
    with pytest.raises(ValueError, match="inverted_residual_setting"):
        mobilenet_v2(inverted_residual_setting=[(6, 24, 2, 3)])
    with pytest.raises(ValueError, match="block_config"):
        densenet(block_config=())
    with pytest.raises(ValueError, match="growth_rate"):
        densenet(growth_rate=0)
    with pytest.raises(ValueError, match="drop_rate"):
        DenseLayer(4, drop_rate=1.0)
    with pytest.raises(lamina.ShapeError, match=r"24 channels.*\(None, 8, 8, 16\)|\(None, 8, 8, 16\).*24 channels"):
        InvertedResidual(24, 24).compute_output_shape((None, 8, 8, 16))
    assert InvertedResidual(16, 24, stride=2).compute_output_shape((None, 7, 7, 16)) == (None, 4, 4, 24)


# -- learning ------------------------------------------------------------------------------------------
TINY = [
    # three groups of inverted residuals (two with a shortcut) on the 8x8 digits
    ("mobilenet_v2", lambda: mobilenet_v2(num_classes=10, width_mult=0.5, input_shape=(8, 8, 1), dropout=0.0,
                                          classifier_activation="softmax",
                                          inverted_residual_setting=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)))),
    ("densenet", lambda: densenet(8, (2, 2), 16, num_classes=10, input_shape=(8, 8, 1),
                                  classifier_activation="softmax")),
]


@pytest.mark.parametrize("name, build", TINY, ids=[n for n, _ in TINY])
def test_tiny_model_learns_digits(name, build):
    """400 digits, 5 epochs of Adam: 83-89% on 400 held-out digits over seeds 0-3 for both
    models (chance 10%); the bar leaves a wide margin."""
    x, y = lamina.data.load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:400], order[400:800]
    model = build()
    model.build(model.input_shape)
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=0.01), verbose=0)
    history = trainer.fit((x[train], y[train]), epochs=5, batch_size=32, seed=0)
    losses = history.epoch["loss"]
    assert losses[-1] < losses[0] / 3, losses
    result = trainer.evaluate((x[test], y[test]))
    assert result["accuracy"] > 0.65, result
