"""Neural style transfer by optimising the image, on 16x16 images through a small random CNN."""

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.vision import style_transfer


def extractor():
    rng = np.random.default_rng(0)
    net = nn.Sequential(nn.Conv2D(8, 3, padding=1), nn.ReLU(), nn.Conv2D(8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2D(2, stride=2), nn.Conv2D(16, 3, padding=1), nn.ReLU())
    net.build((None, 16, 16, 3))
    for p in net.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    return net.double()


def content_and_style():
    yy, xx = np.mgrid[0:16, 0:16] / 15
    content = np.stack([xx, yy, 0.5 * np.ones_like(xx)], -1)[None]
    style = (np.sin(6 * xx)[..., None] * 0.5 + 0.5) * np.array([1.0, 0.2, 0.6])
    return content, style


@pytest.mark.parametrize("optimizer, init", [("lbfgs", "content"), ("adam", "noise")])
def test_style_loss_falls_and_content_stays_close(optimizer, init):
    net = extractor()
    content, style = content_and_style()
    image, history = style_transfer(content, style, net, ["relu2_1"], ["relu1_1", "relu1_2", "relu2_1"],
                                    alpha=1.0, beta=1.0, steps=25, optimizer=optimizer, init=init, tv_weight=0.1)
    assert image.shape == (1, 16, 16, 3) and image.dtype == np.float64
    assert image.min() >= 0 and image.max() <= 1
    assert all(len(v) == 26 for v in history.values())
    assert history["style"][-1] < history["style"][0] / 20
    assert history["total"][-1] < history["total"][0]
    # in feature space, the result stays nearer the content than the style image is
    loss = nn.PerceptualLoss(net, ["relu2_1"])
    target = lamina.tensor(content, dtype=np.float64)
    final = loss.content_loss(lamina.tensor(image, dtype=np.float64), target).item()
    assert abs(final - history["content"][-1]) < 1e-12
    assert final < 0.8 * loss.content_loss(lamina.tensor(style[None], dtype=np.float64), target).item()


def test_bad_arguments():
    net = extractor()
    content, style = content_and_style()
    with pytest.raises(ValueError, match="optimizer must be one of"):
        style_transfer(content, style, net, ["relu1_1"], ["relu1_1"], optimizer="sgd")
    with pytest.raises(ValueError, match="init must be one of"):
        style_transfer(content, style, net, ["relu1_1"], ["relu1_1"], init="zeros")
    with pytest.raises(ValueError, match="no layer named 'relu4_2'"):
        style_transfer(content, style, net)
    with pytest.raises(lamina.errors.ShapeError, match="content image must be"):
        style_transfer(np.stack([content[0]] * 2), style, net, ["relu1_1"], ["relu1_1"])
