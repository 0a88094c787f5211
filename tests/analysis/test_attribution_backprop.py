"""lamina.analysis.attribution: input x gradient, guided backprop and deconvnet against torch
(ReLU backward hooks), guided Grad-CAM, and the ReLU rule undone after an exception."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.analysis import (
    deconvnet,
    deeplift,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    input_gradient,
    input_x_gradient,
)
from lamina.analysis.backward_rules import ELEMENTWISE_NONLINEAR_OPS, relu_backward_rule
from lamina.errors import ShapeError
from lamina.functional.activation import ReLU as ReLUOp
from lamina.functional.pooling import MaxPool2d


def cnn_and_torch_twin(seed: int = 0):
    """Conv2D(4, 3, relu) + MaxPool2D(2) + Flatten + Dense(6) + ReLU + Dense(3), float64, and a
    torch module with the same weights whose ReLUs are nn.ReLU modules (for hooks)."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(6),
                          nn.ReLU(), nn.Dense(3))
    model.build((None, 8, 8, 2))
    conv, hidden, out = model[0], model[3], model[5]

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 4, 3).double()
            self.relu1, self.relu2 = torch.nn.ReLU(), torch.nn.ReLU()
            self.hidden = torch.nn.Linear(hidden.weight.shape[0], 6).double()
            self.out = torch.nn.Linear(6, 3).double()
            with torch.no_grad():
                self.conv.weight.copy_(torch.tensor(conv.weight.numpy().transpose(0, 3, 1, 2)))
                self.conv.bias.copy_(torch.tensor(conv.bias.numpy()))
                for twin, layer in ((self.hidden, hidden), (self.out, out)):
                    twin.weight.copy_(torch.tensor(layer.weight.numpy().T))
                    twin.bias.copy_(torch.tensor(layer.bias.numpy()))

        def forward(self, x_nhwc):
            h = torch.nn.functional.max_pool2d(self.relu1(self.conv(x_nhwc.permute(0, 3, 1, 2))), 2)
            return self.out(self.relu2(self.hidden(h.permute(0, 2, 3, 1).flatten(1))))

    return model, Twin()


def torch_attribution(twin, x, target, rule):
    """dS_c/dx in torch with each ReLU's backward changed by a full backward hook."""
    def guided(_module, grad_input, _grad_output):
        return (grad_input[0].clamp(min=0),)

    def deconv(_module, _grad_input, grad_output):
        return (grad_output[0].clamp(min=0),)

    hooks = [] if rule is None else [relu.register_full_backward_hook(guided if rule == "guided" else deconv)
                                     for relu in (twin.relu1, twin.relu2)]
    inputs = torch.tensor(x, requires_grad=True)
    logits = twin(inputs)
    chosen = logits.argmax(dim=1) if target is None else torch.as_tensor(target).expand(len(x))
    logits[torch.arange(len(x)), chosen].sum().backward()
    for hook in hooks:
        hook.remove()
    return inputs.grad.numpy()


@pytest.mark.parametrize("target", [None, 1, np.array([2, 0, 1])], ids=["predicted", "int", "per-sample"])
def test_guided_backprop_and_deconvnet_match_torch_hooks(target):
    model, twin = cnn_and_torch_twin()
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 2))
    guided = guided_backprop(model, x, target)
    deconv = deconvnet(model, x, target)
    assert guided.shape == x.shape and deconv.shape == x.shape
    assert_close(guided, torch_attribution(twin, x, target, "guided"), 1e-10, "guided backprop")
    assert_close(deconv, torch_attribution(twin, x, target, "deconv"), 1e-10, "deconvnet")
    plain = torch_attribution(twin, x, target, None)
    assert np.abs(guided - plain).max() > 1e-3 and np.abs(deconv - plain).max() > 1e-3


def test_input_x_gradient_is_the_input_times_its_gradient():
    model, twin = cnn_and_torch_twin()
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 2))
    assert_close(input_x_gradient(model, x, 2), x * torch_attribution(twin, x, 2, None), 1e-10)


def test_guided_grad_cam_weights_guided_backprop_by_the_cam_map():
    model, _ = cnn_and_torch_twin()
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 2))
    ours = guided_grad_cam(model, x, 1, layer=model[0])
    expected = guided_backprop(model, x, 1) * grad_cam(model, x, 1, layer=model[0])[..., None]
    assert ours.shape == x.shape
    assert_close(ours, expected, 1e-12)
    with pytest.raises(ShapeError, match="guided_grad_cam"):
        guided_grad_cam(model, x[0])


class FailingBlock(nn.Module):
    """ReLU, then an error when the graph is on: it fails inside the modified backward block."""

    def forward(self, x):
        out = lamina.functional.relu(x)
        if lamina.autograd.is_grad_enabled():
            raise RuntimeError("broken block")
        return out


@pytest.mark.parametrize("method", [guided_backprop, deconvnet, deeplift])
def test_backward_rules_are_restored_after_an_exception(method):
    originals = {cls: (cls.__dict__["forward"], cls.__dict__["backward"])
                 for cls in (*ELEMENTWISE_NONLINEAR_OPS, MaxPool2d)}
    model, twin = cnn_and_torch_twin()
    broken = nn.Sequential(nn.Dense(4), FailingBlock(), nn.Dense(2))
    broken.build((None, 3))
    with pytest.raises(RuntimeError, match="broken block"):
        method(broken, np.ones((2, 3)))
    for cls, (forward, backward) in originals.items():
        assert cls.__dict__["forward"] is forward and cls.__dict__["backward"] is backward, cls.__name__
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 2))
    assert_close(input_gradient(model, x, 0), torch_attribution(twin, x, 0, None), 1e-10)


def test_relu_rule_names_are_checked():
    with pytest.raises(ValueError, match="guided"):
        relu_backward_rule("positive")
    with relu_backward_rule("deconvnet"):
        assert ReLUOp.backward.__name__ == "deconvnet"
    assert ReLUOp.backward.__name__ == "backward"
