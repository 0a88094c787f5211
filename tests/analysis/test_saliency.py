"""lamina.analysis.saliency: input gradients dS_c/dx against torch, saliency maps that find
the informative pixels, SmoothGrad and the completeness of integrated gradients."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis.saliency import input_gradient, integrated_gradients, saliency_map, smooth_grad
from lamina.errors import ShapeError


def small_cnn_and_torch_twin(seed: int = 0):
    """Conv2D(4, 3) + ReLU + MaxPool2D(2) + Flatten + Dense(5) in float64, and a torch function
    with the same weights (conv (K, f, f, c_in) -> (K, c_in, f, f), dense (in, out) -> (out, in);
    NHWC inputs are transposed to NCHW and back before flattening, so the Dense sees the same order)."""
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Conv2D(4, 3), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(5))
    model.build((None, 8, 8, 2))
    conv, dense = model[0], model[4]
    conv_w = torch.tensor(conv.weight.numpy().transpose(0, 3, 1, 2))
    conv_b = torch.tensor(conv.bias.numpy())
    dense_w = torch.tensor(dense.weight.numpy().T)
    dense_b = torch.tensor(dense.bias.numpy())

    def torch_logits(x_nhwc: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.conv2d(x_nhwc.permute(0, 3, 1, 2), conv_w, conv_b)
        h = torch.nn.functional.max_pool2d(torch.relu(h), 2)
        return torch.nn.functional.linear(h.permute(0, 2, 3, 1).flatten(1), dense_w, dense_b)

    return model, torch_logits


def torch_input_gradient(torch_logits, x: np.ndarray, target, of: str) -> np.ndarray:
    inputs = torch.tensor(x, requires_grad=True)
    logits = torch_logits(inputs)
    scores = {"logit": logits, "probability": torch.softmax(logits, dim=1),
              "log_probability": torch.log_softmax(logits, dim=1)}[of]
    chosen = logits.argmax(dim=1) if target is None else torch.as_tensor(target).expand(len(x))
    scores[torch.arange(len(x)), chosen].sum().backward()
    return inputs.grad.numpy()


@pytest.mark.parametrize("of", ["logit", "probability", "log_probability"])
@pytest.mark.parametrize("target", [None, 3, np.array([0, 4, 2, 1])], ids=["predicted", "int", "per-sample"])
def test_input_gradient_matches_torch(of, target):
    model, torch_logits = small_cnn_and_torch_twin()
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 2))
    ours = input_gradient(model, x, target, of=of)
    assert ours.shape == x.shape and ours.dtype == np.float64
    assert np.abs(ours).max() > 0
    assert_close(ours, torch_input_gradient(torch_logits, x, target, of), 1e-9, f"dS/dx ({of})")


@pytest.mark.parametrize("of", ["logit", "log_probability"])
def test_a_final_softmax_layer_is_read_past(of):
    model, torch_logits = small_cnn_and_torch_twin()
    with_softmax = nn.Sequential(*model, nn.Softmax())
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 2))
    assert_close(input_gradient(with_softmax, x, 2, of=of), torch_input_gradient(torch_logits, x, 2, of), 1e-9)


def test_saliency_map_is_the_largest_or_mean_gradient_size_over_channels():
    model, torch_logits = small_cnn_and_torch_twin()
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 2))
    expected = np.abs(torch_input_gradient(torch_logits, x, None, "logit"))
    assert_close(saliency_map(model, x), expected.max(axis=-1), 1e-9, "max map")
    assert_close(saliency_map(model, x, reduce="mean"), expected.mean(axis=-1), 1e-9, "mean map")


def test_model_modes_parameter_gradients_and_running_statistics_are_left_alone():
    model = nn.Sequential(nn.Conv2D(4, 3), nn.BatchNorm(), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Dense(3))
    x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, 1)).astype(np.float32)
    F.categorical_cross_entropy(model(lamina.tensor(x)), np.arange(6) % 3, from_logits=True).backward()
    model[4].eval()  # mixed modes must come back module by module
    model[5].bias.freeze()
    grads = {name: p.grad.copy() for name, p in model.named_parameters() if p.grad is not None}
    running = model[1].running_mean.copy()
    modes = [m.training for m in model.modules()]

    first = input_gradient(model, x)
    second = input_gradient(model, x)  # evaluation mode: dropout off, batch norm on running statistics
    smooth_grad(model, x, samples=2, seed=0)
    integrated_gradients(model, x, steps=2)

    assert_close(first, second, 0, "repeated gradient")
    assert [m.training for m in model.modules()] == modes
    assert_close(model[1].running_mean, running, 0, "running mean")
    assert not model[5].bias.requires_grad and model[5].weight.requires_grad
    for name, p in model.named_parameters():
        if name in grads:
            assert_close(p.grad, grads[name], 0, f"{name}.grad")
        else:
            assert p.grad is None, name


def test_an_unbuilt_model_gets_built_without_parameter_gradients():
    model = nn.Sequential(nn.Flatten(), nn.Dense(4, activation="relu"), nn.Dense(2))
    input_gradient(model, np.ones((2, 3, 3, 1), np.float32))
    assert model.parameters() and all(p.grad is None for p in model.parameters())


def test_smooth_grad_averages_gradients_over_noisy_copies():
    lamina.set_default_dtype(np.float64)
    x = np.random.default_rng(3).uniform(0, 1, (4, 6))
    linear = nn.Sequential(nn.Dense(3))
    linear.build((None, 6))
    # a linear model's gradient is the same everywhere: the weight column of the class
    averaged = smooth_grad(linear, x, target=np.array([0, 1, 2, 1]), samples=5, noise=0.5, seed=0)
    assert_close(averaged, linear[0].weight.numpy().T[[0, 1, 2, 1]], 1e-12, "linear smooth grad")

    curved = nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(3))
    plain = input_gradient(curved, x)
    assert_close(smooth_grad(curved, x, samples=3, noise=0.0), plain, 1e-12, "no noise")
    noisy = smooth_grad(curved, x, samples=8, noise=0.3, seed=7)
    assert_close(smooth_grad(curved, x, samples=8, noise=0.3, seed=7), noisy, 0, "same seed")
    assert np.abs(noisy - plain).max() > 1e-3  # the noise moves ReLU units across their kinks


@pytest.mark.parametrize("of", ["logit", "probability"])
def test_integrated_gradients_add_up_to_the_score_difference(of):
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Flatten(), nn.Dense(16, activation="tanh"), nn.Dense(4, activation="tanh"), nn.Dense(3))
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (5, 4, 4, 2))
    baseline = rng.uniform(0, 0.2, (4, 4, 2))  # one image for the whole batch
    target = np.array([0, 1, 2, 0, 1])
    attributions = integrated_gradients(model, x, target, baseline=baseline, steps=32, of=of)
    assert attributions.shape == x.shape

    with lamina.no_grad():
        def score(images):
            logits = model(lamina.tensor(images))
            values = F.softmax(logits, axis=-1) if of == "probability" else logits
            return values.numpy()[np.arange(5), target]
        difference = score(x) - score(np.broadcast_to(baseline, x.shape))
    totals = attributions.sum(axis=(1, 2, 3))
    assert np.abs(difference).min() > 1e-3
    assert np.all(np.abs(totals - difference) <= 0.02 * np.abs(difference)), (totals, difference)
    # one step (the gradient at the midpoint times the path) is a much coarser sum
    coarse = integrated_gradients(model, x, target, baseline=baseline, steps=1, of=of).sum(axis=(1, 2, 3))
    assert np.abs(coarse - difference).max() > np.abs(totals - difference).max()


def test_saliency_of_a_trained_model_falls_on_the_pixels_that_decide_the_class():
    # 8x8 noise images; the class is whether the 3x3 patch at rows 1-3, columns 4-6 is brighter
    # on average than 0.5. Everything outside the patch is irrelevant.
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (768, 8, 8, 1)).astype(np.float32)
    region = (slice(None), slice(1, 4), slice(4, 7))
    y = (x[region].mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same", activation="relu"), nn.Flatten(), nn.Dense(2))
    model.build((None, 8, 8, 1))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        for start in range(0, 640, 64):
            cost = F.categorical_cross_entropy(model(lamina.tensor(x[start:start + 64])), y[start:start + 64],
                                               from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    held_out, labels = x[640:], y[640:]
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(held_out)).numpy().argmax(axis=1) == labels).mean())
    assert accuracy >= 0.88

    maps = saliency_map(model, held_out)
    inside = maps[region].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    area = 9 / 64
    assert inside.mean() >= 3.5 * area, f"saliency mass in the patch {inside.mean():.2f} (area {area:.2f})"
    assert inside.min() >= 2.5 * area


def test_bad_arguments_are_named():
    model, _ = small_cnn_and_torch_twin()
    x = np.zeros((2, 8, 8, 2))
    with pytest.raises(ValueError, match=r"input_gradient: target classes must lie in \[0, 5\).*7"):
        input_gradient(model, x, target=7)
    with pytest.raises(ValueError, match="saliency_map: target classes"):
        saliency_map(model, x, target=np.array([0, -1]))
    with pytest.raises(ShapeError, match=r"input_gradient: target of shape \(3,\)"):
        input_gradient(model, x, target=np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="input_gradient: target must be an int"):
        input_gradient(model, x, target=1.5)
    with pytest.raises(ShapeError, match=r"saliency_map: input of shape \(8, 8, 2\)"):
        saliency_map(model, x[0])
    with pytest.raises(ShapeError, match=r"input_gradient: input of shape \(8,\)"):
        input_gradient(model, np.zeros(8))
    with pytest.raises(ValueError, match="input_gradient: of must be one of"):
        input_gradient(model, x, of="softmax")
    with pytest.raises(ValueError, match="saliency_map: reduce must be"):
        saliency_map(model, x, reduce="sum")
    with pytest.raises(ValueError, match="smooth_grad: samples"):
        smooth_grad(model, x, samples=0)
    with pytest.raises(ValueError, match="smooth_grad: noise"):
        smooth_grad(model, x, noise=-0.1)
    with pytest.raises(ValueError, match="integrated_gradients: steps"):
        integrated_gradients(model, x, steps=0)
    with pytest.raises(ShapeError, match=r"integrated_gradients: baseline of shape \(3,\)"):
        integrated_gradients(model, x, baseline=np.zeros(3))
    with pytest.raises(ShapeError, match=r"the model's output has shape \(2, 6, 6, 4\)"):
        input_gradient(model[0], x)
    with pytest.raises(RuntimeError, match=r"input_gradient: needs gradients.*no_grad"), lamina.no_grad():
        input_gradient(model, x)
