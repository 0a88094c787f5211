"""lamina.analysis.deeplift: summation-to-delta, DeepLIFT = integrated gradients on linear
models, the Rescale rule against a torch version, DeepLIFT SHAP and gradient SHAP."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.analysis import deeplift, deeplift_shap, gradient_shap, integrated_gradients
from lamina.analysis.saliency import model_logits
from lamina.errors import ShapeError
from lamina.nn.module import evaluation_mode


def scores(model, x, target):
    with evaluation_mode(model), lamina.no_grad():
        logits = model_logits(model, lamina.tensor(x, dtype=x.dtype)).data
    return logits[np.arange(len(x)), target]


def mlp():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(6, activation="tanh"), nn.Dense(5),
                          nn.LeakyReLU(0.1), nn.Dense(5, activation="sigmoid"), nn.Dense(4), nn.ELU(), nn.Dense(3))
    model.build((None, 6))
    return model


def cnn():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(1)
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2), nn.Conv2D(5, 2), nn.BatchNorm(),
                          nn.ReLU(), nn.AvgPool2D(1), nn.Flatten(), nn.Dense(6, activation="tanh"), nn.Dense(3))
    model.build((None, 9, 9, 2))
    rng = np.random.default_rng(7)
    model[3].running_mean = rng.normal(size=5)
    model[3].running_var = rng.uniform(0.5, 2.0, size=5)
    return model


@pytest.mark.parametrize("build, shape", [(mlp, (5, 6)), (cnn, (4, 9, 9, 2))], ids=["mlp", "cnn"])
def test_summation_to_delta(build, shape):
    model = build()
    rng = np.random.default_rng(2)
    x, reference = rng.normal(size=shape), rng.normal(size=shape)
    target = np.arange(shape[0]) % 3
    attributions = deeplift(model, x, reference, target)
    assert attributions.shape == shape and attributions.dtype == np.float64
    delta = scores(model, x, target) - scores(model, reference, target)
    total = attributions.reshape(shape[0], -1).sum(axis=1)
    assert np.abs(total - delta).max() < 1e-8 * max(1.0, np.abs(delta).max())
    assert np.abs(delta).min() > 1e-3  # not a trivially zero difference


def test_summation_to_delta_where_pooled_inputs_are_clipped_alike():
    """Windows whose maximum is a ReLU zero in both passes take the reference's maximum."""
    model = cnn()
    rng = np.random.default_rng(3)
    x, reference = rng.normal(size=(6, 9, 9, 2)) - 1.0, rng.normal(size=(6, 9, 9, 2))
    attributions = deeplift(model, x, reference, 0)
    delta = scores(model, x, np.zeros(6, int)) - scores(model, reference, np.zeros(6, int))
    assert np.abs(attributions.reshape(6, -1).sum(axis=1) - delta).max() < 1e-8


def test_equals_integrated_gradients_on_a_linear_model():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Conv2D(3, 2), nn.AvgPool2D(2), nn.Flatten(), nn.Dense(4))
    model.build((None, 7, 7, 2))
    rng = np.random.default_rng(4)
    x, reference = rng.normal(size=(3, 7, 7, 2)), rng.normal(size=(3, 7, 7, 2))
    ours = deeplift(model, x, reference, 2)
    assert_close(ours, integrated_gradients(model, x, 2, baseline=reference, steps=3), 1e-10)


class Rescale(torch.autograd.Function):
    """ReLU on the inputs' rows whose backward is the secant slope against the reference row."""

    @staticmethod
    def forward(ctx, z, z0):
        dz = z - z0
        usable = dz.abs() >= 1e-10
        slope = torch.where(usable, (torch.relu(z) - torch.relu(z0)) / torch.where(usable, dz, 1.0),
                            (z > 0).to(z.dtype))
        ctx.save_for_backward(slope)
        return torch.relu(z)

    @staticmethod
    def backward(ctx, dy):
        (slope,) = ctx.saved_tensors
        return dy * slope, None


def test_rescale_rule_matches_a_torch_version_on_a_relu_net():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(5)
    model = nn.Sequential(nn.Conv2D(3, 3, activation="relu"), nn.Flatten(), nn.Dense(6, activation="relu"),
                          nn.Dense(5), nn.ReLU(), nn.Dense(3))
    model.build((None, 6, 6, 2))
    conv_w = torch.tensor(model[0].weight.numpy().transpose(0, 3, 1, 2))
    conv_b = torch.tensor(model[0].bias.numpy())
    dense = [(torch.tensor(model[i].weight.numpy().T), torch.tensor(model[i].bias.numpy())) for i in (2, 3, 5)]

    def linear_parts(h):
        yield torch.nn.functional.conv2d(h.permute(0, 3, 1, 2), conv_w, conv_b).permute(0, 2, 3, 1).flatten(1)

    rng = np.random.default_rng(6)
    x, reference = rng.normal(size=(4, 6, 6, 2)), rng.normal(size=(4, 6, 6, 2))
    inputs = torch.tensor(x, requires_grad=True)
    z0 = next(linear_parts(torch.tensor(reference)))
    z = next(linear_parts(inputs))
    h, h0 = Rescale.apply(z, z0), torch.relu(z0)
    for k, (w, b) in enumerate(dense):
        z, z0 = torch.nn.functional.linear(h, w, b), torch.nn.functional.linear(h0, w, b)
        if k < 2:
            h, h0 = Rescale.apply(z, z0), torch.relu(z0)
    target = torch.tensor([0, 1, 2, 1])
    z[torch.arange(4), target].sum().backward()
    expected = (x - reference) * inputs.grad.numpy()
    ours = deeplift(model, x, reference, target.numpy())
    assert_close(ours, expected, 1e-10, "DeepLIFT rescale")
    plain = (x - reference) * integrated_gradients(model, x, target.numpy(), baseline=reference, steps=1)
    assert np.abs(ours - plain).max() > 1e-4


def test_deeplift_shap_averages_over_the_background():
    model = mlp()
    rng = np.random.default_rng(8)
    x, background = rng.normal(size=(3, 6)), rng.normal(size=(4, 6))
    ours = deeplift_shap(model, x, background, 1)
    expected = np.mean([deeplift(model, x, row, 1) for row in background], axis=0)
    assert_close(ours, expected, 1e-12)
    delta = scores(model, x, np.ones(3, int)) - scores(model, background, np.ones(4, int)).mean()
    assert np.abs(ours.sum(axis=1) - delta).max() < 1e-8


def test_gradient_shap_on_a_linear_model_is_the_expected_difference_times_the_weights():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(3))
    model.build((None, 5))
    w = model[0].weight.numpy()[:, 2]
    rng = np.random.default_rng(9)
    x, background = rng.normal(size=(2, 5)), rng.normal(size=(1, 5))
    assert_close(gradient_shap(model, x, background, 2, n_samples=4, seed=0), (x - background) * w, 1e-12)
    background = rng.normal(size=(3, 5))
    estimate = gradient_shap(model, x, background, 2, n_samples=2000, stdevs=0.05, seed=1)
    expected = (x - background.mean(axis=0)) * w
    assert np.abs(estimate - expected).max() < 0.08 * np.abs(expected).max()
    assert np.abs(estimate - (x - background[0]) * w).max() > 0.1 * np.abs(expected).max()


def test_errors_are_clear():
    model = mlp()
    x = np.zeros((2, 6))
    with pytest.raises(ShapeError, match=r"deeplift: baselines of shape \(3,\) do not broadcast"):
        deeplift(model, x, np.zeros(3))
    with pytest.raises(ShapeError, match="deeplift_shap: baselines of shape"):
        deeplift_shap(model, x, np.zeros((4, 5)))
    with pytest.raises(ShapeError, match="gradient_shap: baselines"):
        gradient_shap(model, x, np.zeros(6))
    with pytest.raises(ValueError, match="rule must be one of"):
        deeplift(model, x, rule="reveal_cancel")
    with pytest.raises(ValueError, match="n_samples"):
        gradient_shap(model, x, np.zeros((1, 6)), n_samples=0)
    with lamina.no_grad(), pytest.raises(RuntimeError, match="no_grad"):
        deeplift(model, x)
