"""lamina.analysis.bounds: IBP and CROWN bounds hold for every sampled input of the box,
are exact for one affine layer, CROWN's are at least as tight as IBP's; the worst-case
margins and their gradients equal a torch rewrite; unsupported layers are named."""

import numpy as np
import pytest
import torch

import lamina
from lamina import nn
from lamina.analysis.bounds import (
    certified_accuracy,
    crown_bounds,
    input_box,
    interval_bounds,
    worst_case_margins,
)


def outputs(model, inputs):
    with lamina.no_grad():
        return model(lamina.tensor(inputs)).numpy()


def samples_in(lower, upper, count, seed=1):
    """``count`` points of the box per sample: its corners half the time, else uniform."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        if k % 2:
            t = rng.uniform(size=lower.shape)
        else:
            t = rng.integers(0, 2, lower.shape).astype(float)
        yield (lower + (upper - lower) * t).astype(lower.dtype)


def conv_net():
    lamina.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2D(3, 3, padding=1, activation="relu"), nn.BatchNorm(), nn.AvgPool2D(2), nn.Conv2D(4, 2, stride=1),
        nn.ReLU(), nn.MaxPool2D(2, stride=1), nn.Dropout(0.5), nn.Flatten(), nn.Dense(8, activation="relu"),
        nn.Dense(3))
    model.build((None, 8, 8, 2))
    norm = model[1]
    norm.running_mean[:] = [0.1, -0.2, 0.3]
    norm.running_var[:] = [0.5, 2.0, 1.0]
    norm.weight.data[:] = [1.0, -2.0, 0.5]  # a negative scale flips the interval
    model.eval()
    return model


def test_ibp_bounds_contain_the_outputs_of_every_sampled_input():
    model = conv_net()
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 2)).astype(np.float32)
    lower, upper = input_box(x, 0.05)
    bounds = interval_bounds(model, lower, upper)
    low, high = bounds.lower.numpy(), bounds.upper.numpy()
    assert low.shape == (4, 3) and (low <= high).all()
    seen_low, seen_high = np.full(low.shape, np.inf), np.full(low.shape, -np.inf)
    for inputs in samples_in(lower, upper, 300):
        out = outputs(model, inputs)
        seen_low, seen_high = np.minimum(seen_low, out), np.maximum(seen_high, out)
    assert (seen_low >= low - 1e-4).all() and (seen_high <= high + 1e-4).all()
    clean = outputs(model, x)
    assert (clean >= low).all() and (clean <= high).all()


def test_ibp_bounds_through_global_pooling_and_monotone_activations_are_sound():
    lamina.manual_seed(2)
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same", dilation=2, activation="tanh"), nn.Activation("sigmoid"),
                          nn.GlobalAvgPool2D(), nn.Dense(3))
    model.build((None, 6, 6, 1))
    x = np.random.default_rng(5).uniform(0, 1, (3, 6, 6, 1)).astype(np.float32)
    lower, upper = input_box(x, 0.1)
    bounds = interval_bounds(model, lower, upper)
    for inputs in samples_in(lower, upper, 100, seed=6):
        out = outputs(model, inputs)
        assert (out >= bounds.lower.numpy() - 1e-5).all() and (out <= bounds.upper.numpy() + 1e-5).all()


def test_ibp_of_one_affine_layer_is_exact():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(1)
    layer = nn.Dense(4)
    layer.build((None, 5))
    layer.bias.data[:] = np.arange(4.0)
    rng = np.random.default_rng(2)
    lower = rng.uniform(-1, 0, (3, 5))
    upper = lower + rng.uniform(0, 1, (3, 5))
    bounds = interval_bounds(layer, lower, upper)
    weight, bias = layer.weight.data, layer.bias.data
    # the extremes are reached at corners: x_i = u_i where W_ij > 0 for the maximum of output j
    for j in range(4):
        best = np.where(weight[:, j] > 0, upper, lower) @ weight[:, j] + bias[j]
        worst = np.where(weight[:, j] > 0, lower, upper) @ weight[:, j] + bias[j]
        np.testing.assert_allclose(bounds.upper.numpy()[:, j], best, rtol=1e-12)
        np.testing.assert_allclose(bounds.lower.numpy()[:, j], worst, rtol=1e-12)
    crown = crown_bounds(layer, lower, upper)
    np.testing.assert_allclose(crown.lower, bounds.lower.numpy(), rtol=1e-12)
    np.testing.assert_allclose(crown.upper, bounds.upper.numpy(), rtol=1e-12)


def dense_net(seed=0):
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Dense(20, activation="relu"), nn.Dense(20), nn.ReLU(),
                          nn.Dense(12, activation="relu"), nn.Dense(5))
    model.build((None, 4, 4, 1))
    return model


@pytest.mark.parametrize("epsilon", [0.02, 0.1])
def test_crown_bounds_are_sound_and_at_least_as_tight_as_ibp(epsilon):
    model = dense_net()
    x = np.random.default_rng(3).uniform(0, 1, (6, 4, 4, 1))
    lower, upper = input_box(x, epsilon)
    ibp = interval_bounds(model, lower, upper)
    crown = crown_bounds(model, lower, upper)
    assert (crown.lower >= ibp.lower.numpy() - 1e-9).all() and (crown.upper <= ibp.upper.numpy() + 1e-9).all()
    ibp_width = (ibp.upper.numpy() - ibp.lower.numpy()).mean()
    crown_width = (crown.upper - crown.lower).mean()
    assert crown_width < 0.8 * ibp_width, (crown_width, ibp_width)
    seen_low, seen_high = np.full(crown.lower.shape, np.inf), np.full(crown.lower.shape, -np.inf)
    for inputs in samples_in(lower, upper, 400, seed=4):
        out = outputs(model, inputs)
        seen_low, seen_high = np.minimum(seen_low, out), np.maximum(seen_high, out)
    assert (seen_low >= crown.lower - 1e-9).all() and (seen_high <= crown.upper + 1e-9).all()


def test_worst_case_margins_and_their_gradients_equal_a_torch_rewrite():
    model = dense_net(seed=5)
    x = np.random.default_rng(6).uniform(0, 1, (5, 4, 4, 1))
    labels = np.array([0, 1, 2, 3, 4])
    lower, upper = input_box(x, 0.05)
    margins = worst_case_margins(model, lower, upper, labels)
    cost = lamina.functional.categorical_cross_entropy(margins, labels, from_logits=True)
    cost.backward()

    dense = [layer for layer in model if type(layer).__name__ == "Dense"]
    weights = [torch.tensor(layer.weight.data, requires_grad=True) for layer in dense]
    biases = [torch.tensor(layer.bias.data, requires_grad=True) for layer in dense]
    low, high = torch.tensor(lower.reshape(5, -1)), torch.tensor(upper.reshape(5, -1))
    for k in range(3):
        centre, radius = (high + low) / 2, (high - low) / 2
        centre, radius = centre @ weights[k] + biases[k], radius @ weights[k].abs()
        low, high = torch.relu(centre - radius), torch.relu(centre + radius)  # every hidden layer has a ReLU
    difference = weights[3].T[None] - weights[3].T[labels][:, None]       # (n, C, d)
    centre, radius = (high + low) / 2, (high - low) / 2
    expected = ((difference * centre[:, None]).sum(2) + (difference.abs() * radius[:, None]).sum(2)
                + biases[3][None] - biases[3][labels][:, None])
    torch_cost = torch.nn.functional.cross_entropy(expected, torch.tensor(labels))
    torch_cost.backward()
    np.testing.assert_allclose(margins.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert np.allclose(margins.numpy()[np.arange(5), labels], 0)
    for layer, w, b in zip(dense, weights, biases):
        np.testing.assert_allclose(layer.weight.grad, w.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.bias.grad, b.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_certified_accuracy_is_sound_and_shrinks_with_epsilon():
    model = dense_net(seed=7)
    x = np.random.default_rng(8).uniform(0, 1, (40, 4, 4, 1))
    labels = outputs(model, x).argmax(axis=1)
    at_zero = certified_accuracy(model, x, labels, 0.0)
    assert at_zero == 1.0
    values = [certified_accuracy(model, x, labels, eps) for eps in (0.001, 0.01, 0.1)]
    assert values[0] >= values[1] >= values[2] and values[2] < 0.5


def test_unsupported_layers_and_settings_are_named():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(4, activation="relu"), nn.LayerNorm(), nn.Dense(2))
    model.build((None, 3))
    box = input_box(np.zeros((2, 3)), 0.1)
    with pytest.raises(TypeError, match="interval_bounds: layer LayerNorm .* is not supported"):
        interval_bounds(model, *box)
    swishy = nn.Sequential(nn.Dense(4, activation="gelu"), nn.Dense(2))
    swishy.build((None, 3))
    with pytest.raises(TypeError, match="layer Dense .* with the activation 'gelu'"):
        interval_bounds(swishy, *box)
    with pytest.raises(TypeError, match="crown_bounds: layer LayerNorm"):
        crown_bounds(model, *box)
    training = conv_net().train()
    with pytest.raises(TypeError, match="layer BatchNorm .* in training mode"):
        interval_bounds(training, *input_box(np.zeros((1, 8, 8, 2), dtype=np.float32), 0.1))
    with pytest.raises(ValueError, match="input_box: epsilon must be a finite number >= 0, got -0.1"):
        input_box(np.zeros((2, 3)), -0.1)
    with pytest.raises(ValueError, match="input_box: clip must have low < high"):
        input_box(np.zeros((2, 3)), 0.1, clip=(1, 1))
    with pytest.raises(ValueError, match="lower bound must be at most"):
        interval_bounds(model, box[1], box[0] - 1)


def test_crown_bounds_of_the_absolute_value_equal_hand_computed_ones():
    """|x| = relu(x) + relu(-x) on x in [-1, 2]. The pre-activations' bounds are [-1, 2] and
    [-2, 1]; their upper lines are (2/3)(z + 1) and (1/3)(z + 2), their lower slopes 1 (u >= -l)
    and 0. Upper bound: x/3 + 4/3, at most 2 (the true maximum); lower bound: x, at least -1,
    where IBP gives [0, 3]: the intersection is [0, 2]."""
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(2, activation="relu"), nn.Dense(1))
    model.build((None, 1))
    model[0].weight.data[:] = [[1.0, -1.0]]
    model[0].bias.data[:] = 0
    model[1].weight.data[:] = [[1.0], [1.0]]
    model[1].bias.data[:] = 0
    lower, upper = np.array([[-1.0]]), np.array([[2.0]])
    ibp = interval_bounds(model, lower, upper)
    crown = crown_bounds(model, lower, upper)
    np.testing.assert_allclose([ibp.lower.numpy()[0, 0], ibp.upper.numpy()[0, 0]], [0.0, 3.0])
    np.testing.assert_allclose([crown.lower[0, 0], crown.upper[0, 0]], [0.0, 2.0], atol=1e-12)


def test_relu_relaxation_lines():
    from lamina.analysis.bounds import _relaxations

    lower = np.array([[-1.0, -2.0, 0.5, -3.0]])
    upper = np.array([[2.0, 1.0, 4.0, -0.5]])
    upper_slope, upper_intercept, lower_slope = _relaxations(lower, upper)
    # unstable: the chord from (l, 0) to (u, u); lower slope 1 where u >= -l, else 0
    np.testing.assert_allclose(upper_slope, [[2 / 3, 1 / 3, 1.0, 0.0]])
    np.testing.assert_allclose(upper_intercept, [[2 / 3, 2 / 3, 0.0, 0.0]])
    np.testing.assert_allclose(lower_slope, [[1.0, 0.0, 1.0, 0.0]])


def test_ibp_through_a_strided_padded_convolution_equals_a_torch_rewrite():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(3)
    layer = nn.Conv2D(4, 3, stride=2, padding=1)
    layer.build((None, 7, 7, 2))
    rng = np.random.default_rng(4)
    lower = rng.uniform(-1, 0, (2, 7, 7, 2))
    upper = lower + rng.uniform(0, 0.5, lower.shape)
    bounds = interval_bounds(layer, lower, upper)
    weight = torch.tensor(layer.weight.data).permute(0, 3, 1, 2)            # (K, c_in, f, f)
    bias = torch.tensor(layer.bias.data)
    low, high = (torch.tensor(a).permute(0, 3, 1, 2) for a in (lower, upper))
    centre = torch.nn.functional.conv2d((high + low) / 2, weight, bias, stride=2, padding=1)
    radius = torch.nn.functional.conv2d((high - low) / 2, weight.abs(), None, stride=2, padding=1)
    np.testing.assert_allclose(bounds.lower.numpy(), (centre - radius).permute(0, 2, 3, 1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(bounds.upper.numpy(), (centre + radius).permute(0, 2, 3, 1).numpy(), rtol=1e-10)


def test_crown_margin_bounds_are_sound_and_certify_at_least_what_ibp_does():
    from lamina.analysis.bounds import margin_specification

    model = dense_net(seed=9)
    x = np.random.default_rng(10).uniform(0, 1, (30, 4, 4, 1))
    labels = outputs(model, x).argmax(axis=1)
    lower, upper = input_box(x, 0.03)
    spec = margin_specification(labels, 5)
    crown = crown_bounds(model, lower, upper, spec)
    ibp = worst_case_margins(model, lower, upper, labels).numpy()
    assert crown.upper.shape == (30, 5) and np.allclose(crown.upper[np.arange(30), labels], 0)
    for inputs in samples_in(lower, upper, 200, seed=11):
        z = outputs(model, inputs)
        margins = z - z[np.arange(30), labels][:, None]
        assert (margins <= crown.upper + 1e-9).all() and (margins >= crown.lower - 1e-9).all()
    assert (crown.upper <= ibp + 1e-6).mean() > 0.9   # the elided IBP bound may win now and then
    by_ibp = [certified_accuracy(model, x, labels, eps) for eps in (0.005, 0.01, 0.02)]
    by_crown = [certified_accuracy(model, x, labels, eps, method="crown") for eps in (0.005, 0.01, 0.02)]
    print(f"certified at eps 0.005, 0.01, 0.02: IBP {by_ibp}, CROWN {by_crown}")
    assert all(c >= i for c, i in zip(by_crown, by_ibp)) and sum(by_crown) > sum(by_ibp), (by_ibp, by_crown)
    with pytest.raises(ValueError, match="method must be 'ibp' or 'crown', got 'lp'"):
        certified_accuracy(model, x, labels, 0.01, method="lp")
