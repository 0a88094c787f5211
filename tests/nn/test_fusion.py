"""Inference fusion in a Sequential: convolution or dense layer -> batch norm -> activation."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.analysis import summary
from lamina.nn import fusion


def _model():
    lamina.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2D(16, 3, padding="same"), nn.BatchNorm(), nn.ReLU6(),
        nn.DepthwiseConv2D(3, stride=2, padding="same"), nn.BatchNorm(), nn.ReLU(),
        nn.Conv2D(24, 1, use_bias=False), nn.BatchNorm(),
        nn.Conv2D(8, 3, activation="relu"), nn.BatchNorm(), nn.ReLU(),   # conv with its own activation
        nn.Conv2D(8, 3, padding="same"), nn.Tanh(),                      # no batch norm
        nn.Conv2D(6, 1, activation="tanh"),
        nn.Conv2D(6, 1, activation="softmax"),                          # cannot run in place
        nn.Flatten(), nn.Dense(12, activation="relu"), nn.BatchNorm(), nn.ReLU6(),
        nn.Dense(7), nn.Tanh(), nn.Dense(5))
    x = np.random.default_rng(1).standard_normal((6, 20, 20, 3)).astype(np.float32)
    model(lamina.tensor(x))
    rng = np.random.default_rng(2)
    for layer in model:                      # running statistics and affine weights away from 0 and 1
        if isinstance(layer, nn.BatchNorm):
            c = layer.num_features
            layer.running_mean = rng.standard_normal(c).astype(np.float32)
            layer.running_var = rng.uniform(0.5, 2.0, c).astype(np.float32)
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.standard_normal(c)
    return model, x


def _layer_by_layer(model, x):
    h = lamina.tensor(x)
    for layer in model:
        h = layer(h)
    return h.numpy()


def test_fused_inference_gives_the_same_values():
    model, x = _model()
    model.eval()
    with lamina.no_grad():
        fused = model(lamina.tensor(x)).numpy()
        plain = _layer_by_layer(model, x)
    np.testing.assert_array_equal(fused, plain)


def test_fused_dilated_convolution_gives_the_same_values():
    lamina.manual_seed(3)
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same", dilation=2), nn.BatchNorm(), nn.ReLU(),
                          nn.DepthwiseConv2D(3, dilation=(2, 1), activation="relu"))
    x = np.random.default_rng(4).standard_normal((3, 11, 10, 3)).astype(np.float32)
    model(lamina.tensor(x))
    model[1].running_mean = np.linspace(-1, 1, 8).astype(np.float32)
    model.eval()
    with lamina.no_grad():
        fused = model(lamina.tensor(x)).numpy()
        plain = _layer_by_layer(model, x)
    assert fused.shape == (3, 7, 8, 8)
    np.testing.assert_array_equal(fused, plain)


def test_fused_layers_are_not_called_one_by_one(monkeypatch):
    model, x = _model()
    model.eval()
    called = []
    for cls in (nn.ReLU, nn.ReLU6, nn.Tanh, nn.BatchNorm):
        monkeypatch.setattr(cls, "forward", lambda self, x, cls=cls: called.append(cls.__name__) or x)
    with lamina.no_grad():
        model(lamina.tensor(x))
    assert called == []                      # every follower ran in place inside its head layer


def test_own_activation_that_cannot_run_in_place_is_left_alone():
    model = nn.Sequential(nn.Dense(4, activation="softmax"), nn.ReLU())
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    model.eval()
    with lamina.no_grad():
        fused = model(lamina.tensor(x)).numpy()
    np.testing.assert_array_equal(fused, _layer_by_layer(model, x))
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, rtol=1e-6)


def test_fusion_runs_only_in_evaluation_without_gradients(monkeypatch):
    model, x = _model()
    calls = []
    monkeypatch.setattr(fusion, "forward", lambda layers, x: calls.append(1) or x)
    model.train()
    with lamina.no_grad():
        model(lamina.tensor(x))
    model.eval()
    model(lamina.tensor(x))                  # gradients on
    assert calls == []
    with lamina.no_grad():
        model(lamina.tensor(x))
    assert calls == [1]


def test_a_summary_still_sees_every_layer():
    model, _ = _model()
    model.eval()
    with lamina.no_grad():
        in_evaluation = [row["name"] for row in summary(model, (20, 20, 3)).rows]
    model.train()
    assert in_evaluation == [row["name"] for row in summary(model, (20, 20, 3)).rows]
    assert len(in_evaluation) >= len(model)


def test_conv2d_epilogue_is_for_inference_only():
    x = lamina.tensor(np.ones((1, 4, 4, 2), np.float32), requires_grad=True)
    w = lamina.tensor(np.ones((3, 3, 3, 2), np.float32))
    with pytest.raises(ValueError, match="inference only"):
        F.conv2d(x, w, epilogue=lambda chunk: None)
    with lamina.no_grad():
        y = F.conv2d(x, w, epilogue=lambda chunk: chunk.__imul__(2.0))
    np.testing.assert_array_equal(y.numpy(), np.full((1, 2, 2, 3), 36.0))


def _train_step(model, x, forward):
    """Output, dJ/dx and every parameter's gradient of one forward + backward."""
    xt = lamina.tensor(x, requires_grad=True)
    for p in model.parameters():
        p.grad = None
    out = forward(xt)
    up = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    (out * lamina.tensor(up)).sum().backward()
    return out.numpy(), xt.grad.copy(), [p.grad.copy() for p in model.parameters()]


def _layer_by_layer_tensor(model, xt):
    for layer in model:
        xt = layer(xt)
    return xt


def _assert_same_step(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for ga, gb in zip(a[2], b[2], strict=True):
        np.testing.assert_array_equal(ga, gb)


def test_training_activation_layers_overwrite_fresh_outputs_with_the_same_gradients(monkeypatch):
    model, x = _model()
    model.train()
    plain = _train_step(model, x, lambda xt: _layer_by_layer_tensor(model, xt))
    called = []
    for cls in (nn.ReLU, nn.Tanh):
        original = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, h, original=original: called.append(self) or original(self, h))
    fused = _train_step(model, x, model)
    _assert_same_step(fused, plain)
    eligible = [layer for prev, layer in zip(model, list(model)[1:]) if fusion._overwrites(prev, layer)]
    assert len(eligible) == 4                     # after BN, BN, a bare conv and a bare dense layer
    assert not any(layer in called for layer in eligible)
    assert len(called) == sum(type(layer) in (nn.ReLU, nn.Tanh) for layer in model) - 4


def test_an_activation_after_a_layer_with_its_own_activation_does_not_overwrite():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Tanh(), nn.Dense(3))
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    model(lamina.tensor(x))
    assert not fusion._overwrites(model[0], model[1])
    _assert_same_step(_train_step(model, x, model),
                      _train_step(model, x, lambda xt: _layer_by_layer_tensor(model, xt)))
