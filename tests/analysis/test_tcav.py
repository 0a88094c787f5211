"""lamina.analysis.tcav: directional derivatives against finite differences and torch, CAVs
that find a known separating direction, TCAV scores counted by hand, the t-test against
scipy, and TCAV on a CNN trained to rely on a planted stripe."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.datasets import load_digits

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import (
    CAV,
    concept_activation_vector,
    directional_derivatives,
    layer_activations,
    layer_gradients,
    tcav,
    tcav_score,
)
from lamina.analysis.tcav import _two_sided_p_value
from lamina.errors import ShapeError

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def cnn_and_torch_twin(dtype):
    """Conv2D(3, 3) + ReLU + Conv2D(4, 3) + Tanh + Flatten + Dense(3) on 6x6x2 inputs, and a
    torch function giving (class scores, the ReLU's output in NHWC) with the same weights."""
    lamina.set_default_dtype(dtype)
    lamina.manual_seed(3)
    model = nn.Sequential(nn.Conv2D(3, 3), nn.ReLU(), nn.Conv2D(4, 3), nn.Tanh(), nn.Flatten(), nn.Dense(3))
    model.build((None, 6, 6, 2))
    convs = [torch.tensor(model[i].weight.numpy().transpose(0, 3, 1, 2)) for i in (0, 2)]
    biases = [torch.tensor(model[i].bias.numpy()) for i in (0, 2)]
    dense_w, dense_b = torch.tensor(model[5].weight.numpy().T), torch.tensor(model[5].bias.numpy())

    def torch_forward(x_nhwc: torch.Tensor):
        activation = torch.relu(torch.nn.functional.conv2d(x_nhwc.permute(0, 3, 1, 2), convs[0], biases[0]))
        activation = activation.permute(0, 2, 3, 1).detach().requires_grad_()  # NHWC, as lamina flattens it
        h = torch.tanh(torch.nn.functional.conv2d(activation.permute(0, 3, 1, 2), convs[1], biases[1]))
        flat = h.permute(0, 2, 3, 1).flatten(1)
        return torch.nn.functional.linear(flat, dense_w, dense_b), activation

    return model, torch_forward


def logits_with_shift(model, layer, x, shift):
    """The model's logits with ``shift`` added to the layer's output (every sample)."""
    handle = layer.register_forward_hook(lambda _module, _inputs, output: output + lamina.tensor(shift))
    try:
        with lamina.no_grad():
            return model(lamina.tensor(x)).numpy()
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_directional_derivatives_equal_finite_differences_along_the_cav(kind):
    rng = np.random.default_rng(0)
    if kind == "mlp":
        lamina.set_default_dtype(np.float64)
        lamina.manual_seed(1)
        model = nn.Sequential(nn.Dense(6), nn.Tanh(), nn.Dense(5), nn.Tanh(), nn.Dense(3))
        model.build((None, 4))
        x, layer = rng.normal(size=(5, 4)), model[1]
    else:
        model, _ = cnn_and_torch_twin(np.float64)
        x, layer = rng.uniform(0, 1, (5, 6, 6, 2)), model[1]
    shape = layer_activations(model, layer, x[:1]).shape[1:]
    cav = rng.normal(size=shape)
    cav /= np.linalg.norm(cav)
    activation_shape = (6,) if kind == "mlp" else (4, 4, 3)
    step = 1e-6 * cav.reshape(activation_shape)
    plus, minus = logits_with_shift(model, layer, x, step), logits_with_shift(model, layer, x, -step)
    for k in range(3):
        expected = (plus[:, k] - minus[:, k]) / 2e-6
        assert_close(directional_derivatives(model, layer, x, k, cav), expected, 1e-6, f"class {k}")


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["float64", "float32"])
def test_directional_derivatives_match_a_torch_rewrite(dtype, rtol):
    model, torch_forward = cnn_and_torch_twin(dtype)
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (4, 6, 6, 2)).astype(dtype)
    classes = np.array([2, 0, 1, 2])
    cav = rng.normal(size=48)
    cav /= np.linalg.norm(cav)
    logits, activation = torch_forward(torch.tensor(x))
    (grad,) = torch.autograd.grad(logits[torch.arange(4), torch.tensor(classes)].sum(), activation)
    expected = grad.flatten(1).double().numpy() @ cav
    assert np.abs(expected).min() > 1e-4
    assert_close(directional_derivatives(model, "relu", x, classes, cav), expected, rtol, "derivatives")
    assert_close(layer_gradients(model, model[1], x, classes), grad.flatten(1).numpy(), rtol, "gradients")


def separable_sets(normal: np.ndarray, count: int, seed: int):
    """Points whose component along ``normal`` is in [0.5, 2] (concept) or [-2, -0.5] (random)."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(2 * count, normal.size))
    points -= np.outer(points @ normal, normal)
    sides = np.concatenate([np.ones(count), -np.ones(count)]) * rng.uniform(0.5, 2, 2 * count)
    points += np.outer(sides, normal)
    return points[:count], points[count:]


@pytest.mark.parametrize("classifier", ["sgd", "logistic"])
def test_the_cav_of_separable_activations_is_their_separating_normal(classifier):
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Identity(), nn.Dense(2))
    model.build((None, 8))
    normal = np.random.default_rng(5).normal(size=8)
    normal /= np.linalg.norm(normal)
    concept, random = separable_sets(normal, 150, seed=6)
    cav = concept_activation_vector(model, model[0], concept, random, classifier=classifier, seed=0)
    assert isinstance(cav, CAV) and cav.layer == "identity" and cav.classifier == classifier
    assert cav.accuracy == 1.0
    assert np.linalg.norm(cav.vector) == pytest.approx(1.0)
    assert cav.vector @ normal > 0.95
    flipped = concept_activation_vector(model, "identity", random, concept, classifier=classifier, seed=0)
    assert flipped.vector @ normal < -0.95


def test_tcav_score_is_the_hand_counted_share_of_positive_derivatives():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(7)
    model = nn.Sequential(nn.Dense(6), nn.ReLU(), nn.Dense(3))
    model.build((None, 4))
    rng = np.random.default_rng(8)
    x, cav = rng.normal(size=(40, 4)), rng.normal(size=6)
    w1, b1, w2 = model[0].weight.numpy(), model[0].bias.numpy(), model[2].weight.numpy()
    pre = x @ w1 + b1  # the Dense layer's output; h_k = w2[:, k] . relu(pre) + b
    counts = []
    for k in range(3):
        by_hand = ((pre > 0) * w2[:, k]) @ cav
        assert_close(directional_derivatives(model, model[0], x, k, cav), by_hand, 1e-12, f"class {k}")
        counts.append(sum(1 for value in by_hand if value > 0))
        assert tcav_score(model, model[0], x, k, cav) == counts[-1] / 40
    assert any(0 < count < 40 for count in counts)


def small_problem():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(9)
    model = nn.Sequential(nn.Dense(6), nn.ReLU(), nn.Dense(6), nn.ReLU(), nn.Dense(3))
    model.build((None, 5))
    rng = np.random.default_rng(10)
    concept = rng.normal(size=(20, 5)) + np.array([1.0, 0, 0, 0, 0])
    randoms = [rng.normal(size=(20, 5)) for _ in range(5)]
    return model, concept, randoms, rng.normal(size=(30, 5)), rng.normal(size=(20, 5))


@pytest.mark.parametrize("equal_var", [True, False])
def test_tcav_runs_and_its_t_test_equal_separate_cavs_and_scipy(equal_var):
    model, concept, randoms, inputs, counterpart = small_problem()
    result = tcav(model, model[2], concept, randoms, inputs, 1, seed=3, random_counterpart=counterpart,
                  equal_var=equal_var)
    for i, random in enumerate(randoms):
        cav = concept_activation_vector(model, model[2], concept, random, seed=3 + i)
        assert_close(result.cavs[i].vector, cav.vector, 1e-12, "CAV")
        assert result.scores[i] == tcav_score(model, model[2], inputs, 1, cav)
        null = concept_activation_vector(model, model[2], counterpart, random, seed=3 + i)
        assert result.random_scores[i] == tcav_score(model, model[2], inputs, 1, null)
    assert np.ptp(result.scores) > 0 and np.ptp(result.random_scores) > 0
    expected = scipy.stats.ttest_ind(result.scores, result.random_scores, equal_var=equal_var).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    assert result.mean == pytest.approx(result.scores.mean()) and result.std == pytest.approx(result.scores.std())
    assert result.significant == (result.p_value < 0.05)
    strict = tcav(model, model[2], concept, randoms, inputs, 1, seed=3, random_counterpart=counterpart,
                  equal_var=equal_var, alpha=0.5, bonferroni=int(0.5 / result.p_value) + 1)
    assert strict.p_value == result.p_value and not strict.significant  # p >= alpha / m


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy's own call on a constant sample
def test_constant_score_samples_give_p_values_of_one_or_zero():
    assert _two_sided_p_value(np.ones(4), np.ones(3), True) == 1.0
    assert _two_sided_p_value(np.ones(4), np.zeros(3), True) == 0.0
    ones, mixed = np.ones(5), np.array([0.0, 1.0, 0.5, 0.25, 1.0])
    assert _two_sided_p_value(ones, mixed, False) == pytest.approx(scipy.stats.ttest_ind(ones, mixed,
                                                                                         equal_var=False).pvalue)


def test_null_runs_pair_each_random_set_with_the_next_and_errors_are_clear():
    model, concept, randoms, inputs, _ = small_problem()
    result = tcav(model, model[2], concept, randoms, inputs, 0, seed=0)
    for i, random in enumerate(randoms):
        null = concept_activation_vector(model, model[2], random, randoms[(i + 1) % 5], seed=i)
        assert result.random_scores[i] == tcav_score(model, model[2], inputs, 0, null)
    with pytest.raises(ValueError, match="at least 2 random sets"):
        tcav(model, model[2], concept, randoms[:1], inputs, 0)
    with pytest.raises(ValueError, match="bonferroni"):
        tcav(model, model[2], concept, randoms, inputs, 0, bonferroni=0)
    with pytest.raises(ValueError, match="classifier must be one of"):
        concept_activation_vector(model, model[2], concept, randoms[0], classifier="svm")
    with pytest.raises(ShapeError, match="the CAV has 5 entries"):
        directional_derivatives(model, model[2], inputs, 0, np.ones(5))
    with pytest.raises(ValueError, match="no sub-module|not a sub-module|has no"):
        layer_activations(model, "missing", inputs)
    assert model.training and all(p.requires_grad for p in model.parameters())  # left as it was


# -- a CNN whose class A is told by a stripe planted in the top-left corner -----------------------

def with_stripe(images: np.ndarray) -> np.ndarray:
    """Two bright vertical lines (columns 0 and 2, rows 0-2) in the top-left corner."""
    out = images.copy()
    out[:, 0:3, 0:3] = 0.0
    out[:, 0:3, 0] = out[:, 0:3, 2] = 1.0
    return out


@pytest.fixture(scope="module")
def stripe_model():
    """A one-convolution network trained (under a second) on 8x8 digits: class 0 every digit
    with the stripe, class 1 every digit without it."""
    lamina.set_default_dtype(np.float32)
    lamina.manual_seed(0)
    digits = (load_digits().images / 16.0).astype(np.float32)[..., None]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits))
    train, pool = digits[order[:600]], digits[order[600:]]
    labels = np.arange(600) % 2
    train = np.where(labels[:, None, None, None] == 0, with_stripe(train), train)
    model = nn.Sequential(nn.Conv2D(8, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(2))
    model.build((None, 8, 8, 1))
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(15):
        for batch in np.array_split(rng.permutation(600), 10):
            opt.zero_grad()
            F.categorical_cross_entropy(model(lamina.tensor(train[batch])), labels[batch], from_logits=True).backward()
            opt.step()
    return model, pool


def test_tcav_finds_the_planted_stripe_and_not_a_random_texture(stripe_model):
    model, pool = stripe_model
    class_a = with_stripe(pool[:100])
    with lamina.no_grad():
        with_it = model(lamina.tensor(class_a)).numpy().argmax(axis=1)
        without_it = model(lamina.tensor(pool[:100])).numpy().argmax(axis=1)
        class_b = model(lamina.tensor(pool[100:200])).numpy().argmax(axis=1)
    assert (with_it == 0).mean() > 0.95 and (class_b == 1).mean() > 0.95
    assert (without_it == 0).mean() < 0.1  # the model relies on the stripe

    rng = np.random.default_rng(103)

    def textured(images):  # a fresh random texture on each image
        return (images + rng.uniform(-0.3, 0.3, images.shape)).astype(np.float32)

    examples = pool[200:][rng.permutation(len(pool) - 200)]
    stripes, texture = textured(with_stripe(examples[:30])), textured(examples[30:60])
    randoms = [textured(examples[60 + 30 * i:90 + 30 * i]) for i in range(8)]
    found = tcav(model, model[1], stripes, randoms, class_a, 0, seed=3, bonferroni=2)
    assert min(cav.accuracy for cav in found.cavs) > 0.9
    assert found.scores.min() > 0.9 and found.mean > 0.95
    assert found.significant and found.p_value < 0.005
    irrelevant = tcav(model, model[1], texture, randoms, class_a, 0, seed=3, bonferroni=2)
    assert not irrelevant.significant and irrelevant.p_value > 0.3
    assert np.mean([cav.accuracy for cav in irrelevant.cavs]) < 0.75  # the layer hardly tells it from random


def test_readme_tcav_example_runs():
    section = README.read_text().split("### Testing with concept activation vectors (TCAV)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    result = names["result"]
    assert result.scores.shape == (16,) and result.random_scores.shape == (16,)
    assert result.mean > 0.9 and result.significant
