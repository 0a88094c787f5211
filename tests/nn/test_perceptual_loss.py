"""PerceptualLoss (feature reconstruction and style terms) against the same network in torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina import nn
from lamina.models import vgg16


def small_extractor(seed=0):
    """conv-relu-conv-relu-pool-conv-relu on 3 channels, float64, random weights."""
    net = nn.Sequential(
        nn.Sequential(nn.Conv2D(4, 3, padding=1), nn.ReLU(), nn.Conv2D(4, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2D(2, stride=2), nn.Conv2D(5, 3, padding=1), nn.ReLU(), name="features"),
    )
    net.build((None, 8, 8, 3))
    rng = np.random.default_rng(seed)
    for p in net.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    return net.double()


def torch_layers(net):
    """The same stack in torch (NCHW), outputs of every layer in NHWC."""
    convs = [layer for layer in net["features"] if isinstance(layer, nn.Conv2D)]
    weights = [(torch.tensor(c.weight.data.transpose(0, 3, 1, 2)), torch.tensor(c.bias.data)) for c in convs]

    def run(x):
        x = x.permute(0, 3, 1, 2)
        outs = []
        for k, (w, b) in enumerate(weights):
            x = TF.conv2d(x, w, b, padding=1)
            outs.append(x)
            x = torch.relu(x)
            outs.append(x)
            if k == 1:
                x = TF.max_pool2d(x, 2)
                outs.append(x)
        return {name: o.permute(0, 2, 3, 1) for name, o in zip(
            ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1"], outs)}
    return run


def torch_gram(f):
    n, h, w, c = f.shape
    flat = f.reshape(n, h * w, c)
    return flat.transpose(1, 2) @ flat / (h * w * c)


def test_stage_names_of_vgg16():
    loss = nn.PerceptualLoss(vgg16(num_classes=10, input_shape=(32, 32, 3)), ["relu1_2", "relu2_2"],
                             style_layers=["relu3_3", "relu4_3"])
    names = loss.layer_aliases
    assert [names[k] for k in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")] == [
        "features.3", "features.8", "features.15", "features.22"]
    assert names["pool5"] == "features.30"


def test_content_and_style_loss_match_torch():
    net = small_extractor()
    run = torch_layers(net)
    loss = nn.PerceptualLoss(net, {"relu1_2": 1.0, "relu2_1": 0.5}, style_layers=["relu1_1", "conv2_1"],
                             style_weights=[2.0, 3.0])
    rng = np.random.default_rng(1)
    content, style = rng.uniform(size=(2, 8, 8, 3)), rng.uniform(size=(1, 8, 8, 3))

    def reference(x):
        fx, fc, fs = run(x), run(torch.tensor(content)), run(torch.tensor(style))
        feat = 1.0 * ((fx["relu1_2"] - fc["relu1_2"]) ** 2).mean() + 0.5 * ((fx["relu2_1"] - fc["relu2_1"]) ** 2).mean()
        sty = sum(w * ((torch_gram(fx[k]) - torch_gram(fs[k])) ** 2).sum(dim=(1, 2)).mean()
                  for k, w in (("relu1_1", 2.0), ("conv2_1", 3.0)))
        return feat + sty

    x = rng.uniform(size=(2, 8, 8, 3))
    compare_with_torch(lambda t: loss(t, lamina.tensor(content, dtype=np.float64),
                                      lamina.tensor(style, dtype=np.float64)), reference, x, dtype=np.float64)
    grams = loss.style_grams(lamina.tensor(style, dtype=np.float64))
    parts = loss.content_loss(lamina.tensor(x, dtype=np.float64), lamina.tensor(content, dtype=np.float64)) + \
        loss.style_loss(lamina.tensor(x, dtype=np.float64), grams)
    assert_close(parts.numpy(), reference(torch.tensor(x)).detach().numpy(), 1e-12)


def test_gradcheck_and_frozen_network():
    net = small_extractor(seed=2)
    loss = nn.PerceptualLoss(net, ["conv1_2"], style_layers=["relu2_1"])
    rng = np.random.default_rng(3)
    target = lamina.tensor(rng.uniform(size=(1, 4, 4, 3)), dtype=np.float64)
    assert check_gradients(lambda t: loss(t, target), rng.uniform(size=(1, 4, 4, 3)))
    assert all(not p.trainable for p in net.parameters())


def test_unknown_layer_names_the_available_ones():
    with pytest.raises(ValueError, match=r"no layer named .relu3_1.*available: conv1_1, relu1_1, .*max_pool2d"):
        nn.PerceptualLoss(small_extractor(), ["relu3_1"])


def test_weights_must_match_layers():
    with pytest.raises(ValueError, match=r"2 content layers .* but 1 weights"):
        nn.PerceptualLoss(small_extractor(), ["relu1_1", "relu1_2"], weights=[1.0])
