"""binary_focal_loss and categorical_focal_loss: values and gradients against PyTorch (the
references written here with torch ops, torchvision's ``sigmoid_focal_loss`` formula for the
binary loss and Keras' for the categorical one), float64 gradient checks, the reduction to
lamina's cross-entropies at gamma = 0, stability at extreme logits, errors, and training.

lamina's losses are Keras-style: one loss per sample (the mean over its values or rows),
then 'mean' averages and 'sum' adds them; torch's elementwise values are reduced the same way.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn, optim
from lamina.functional import binary_focal_loss, categorical_focal_loss
from lamina.train import Trainer

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
EPS = 1e-7


def per_sample(values, reduction):
    """Torch reference for lamina's reductions: per-sample means, then mean/sum/none."""
    if values.ndim > 1:
        values = values.mean(dim=tuple(range(1, values.ndim)))
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def torch_binary_focal(x, y, gamma, alpha, from_logits):
    """torchvision's sigmoid_focal_loss (elementwise), also on clipped probabilities."""
    if from_logits:
        p = torch.sigmoid(x)
        ce = TF.binary_cross_entropy_with_logits(x, y, reduction="none")
    else:
        p = torch.clamp(x, EPS, 1 - EPS)
        ce = TF.binary_cross_entropy(p, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def torch_categorical_focal(x, y, gamma, alpha, from_logits):
    """Keras' CategoricalFocalCrossentropy per row (no renormalisation of probabilities);
    ``y`` integer labels or target rows, ``alpha`` None, a number or a list of class weights."""
    classes = x.shape[-1]
    rows = TF.one_hot(y, classes).to(x.dtype) if not y.is_floating_point() else y
    if from_logits:
        log_p = torch.log_softmax(x, dim=-1)
        p = log_p.exp()
    else:
        p = torch.clamp(x, EPS, 1 - EPS)
        log_p = torch.log(p)
    weights = 1.0 if alpha is None else torch.as_tensor(alpha, dtype=x.dtype)
    return -(weights * rows * (1 - p) ** gamma * log_p).sum(dim=-1)


def hard_labels(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 2, shape).astype(np.float64)


def soft_targets(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape)


def probabilities(*shape, seed=0):
    """Values in [0.05, 0.95]: away from the clip at eps and 1 - eps."""
    return np.random.default_rng(seed).uniform(0.05, 0.95, shape)


def distributions(*shape, seed=0):
    """Rows of positive probabilities adding up to 1."""
    p = np.random.default_rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


def labels(shape, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


EDGES = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])


# -- against PyTorch ------------------------------------------------------------------------


def binary_cases():
    return {
        # name: (inputs, from_logits, gamma, alpha)
        "logits": ([randn(5, 3, scale=2), hard_labels(5, 3, seed=1)], True, 2.0, 0.25),
        "logits_no_alpha": ([randn(5, 3, scale=2), hard_labels(5, 3, seed=1)], True, 2.0, None),
        "logits_gamma_half": ([randn(5, 3, scale=2), hard_labels(5, 3, seed=1)], True, 0.5, 0.7),
        "logits_soft": ([randn(5, 3, scale=2), soft_targets(5, 3, seed=1)], True, 2.0, 0.25),
        "logits_1d": ([randn(7, scale=2), hard_labels(7, seed=2)], True, 1.0, 0.4),
        "logits_3d": ([randn(2, 3, 4, scale=2), hard_labels(2, 3, 4, seed=3)], True, 3.0, 0.25),
        "probabilities": ([probabilities(5, 3), hard_labels(5, 3, seed=1)], False, 2.0, 0.25),
        "probabilities_soft": ([probabilities(5, 3), soft_targets(5, 3, seed=1)], False, 1.5, None),
        # 0 and 1 are clipped to [eps, 1 - eps]: no gradient there
        "probabilities_edges": ([EDGES, hard_labels(2, 3, seed=4)], False, 2.0, 0.25),
    }


def categorical_cases():
    scores = randn(6, 5, scale=2)
    classes = labels((6,), 5, seed=1)
    weights = [0.1, 0.3, 0.5, 0.7, 0.9]
    return {
        # name: (inputs, from_logits, gamma, alpha)
        "logits": ([scores, classes], True, 2.0, None),
        "logits_one_hot": ([scores, np.eye(5)[classes]], True, 2.0, None),
        "logits_soft": ([scores, distributions(6, 5, seed=2)], True, 2.0, 0.25),
        "logits_class_weights": ([scores, classes], True, 2.0, weights),
        "logits_gamma_half": ([scores, classes], True, 0.5, 0.25),
        "logits_sequence": ([randn(2, 3, 4, scale=2), labels((2, 3), 4, seed=2)], True, 2.0, None),
        "probabilities": ([distributions(6, 5, seed=3), classes], False, 2.0, None),
        "probabilities_weights": ([distributions(6, 5, seed=3), distributions(6, 5, seed=4)], False, 1.0, weights),
        "probabilities_edges": ([EDGES, np.array([0, 2])], False, 2.0, None),
    }


def torch_cases():
    cases = {}
    for reduction in REDUCTIONS:
        for name, (inputs, logits, gamma, alpha) in binary_cases().items():
            ours = functools.partial(binary_focal_loss, gamma=gamma, alpha=alpha, from_logits=logits,
                                     reduction=reduction)
            theirs = (lambda g, a, lg, r: lambda x, y: per_sample(torch_binary_focal(x, y, g, a, lg), r))(
                gamma, alpha, logits, reduction)
            cases[f"binary_{name}-{reduction}"] = (ours, theirs, inputs)
        for name, (inputs, logits, gamma, alpha) in categorical_cases().items():
            ours = functools.partial(categorical_focal_loss, gamma=gamma, alpha=alpha, from_logits=logits,
                                     reduction=reduction)
            theirs = (lambda g, a, lg, r: lambda x, y: per_sample(torch_categorical_focal(x, y, g, a, lg), r))(
                gamma, alpha, logits, reduction)
            cases[f"categorical_{name}-{reduction}"] = (ours, theirs, inputs)
    return cases


TORCH_CASES = torch_cases()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_torch(name, dtype):
    """Outputs, and gradients to the prediction (the target is constant), as torch's."""
    ours, theirs, inputs = TORCH_CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, grad=[True, False])


def test_torchvision_formula_is_the_paper_loss_on_hard_labels():
    """The reference itself: on 0/1 labels, ce (1 - p_t)^gamma alpha_t is -alpha_t (1 - p_t)^gamma log p_t."""
    z = torch.tensor(randn(4, 3, scale=2))
    y = torch.tensor(hard_labels(4, 3, seed=1))
    p = torch.sigmoid(z)
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, 0.25, 0.75)
    paper = -alpha_t * (1 - p_t) ** 2 * torch.log(p_t)
    np.testing.assert_allclose(torch_binary_focal(z, y, 2.0, 0.25, True).numpy(), paper.numpy(), rtol=1e-12)


# -- gradient checks --------------------------------------------------------------------------


def gradcheck_cases():
    z, y = randn(4, 3, scale=2), hard_labels(4, 3, seed=1)
    scores, classes = randn(5, 4, scale=2), labels((5,), 4, seed=1)
    return {
        "binary_logits": (functools.partial(binary_focal_loss, from_logits=True), [z, y]),
        "binary_logits_gamma_half_none": (
            functools.partial(binary_focal_loss, gamma=0.5, alpha=0.6, from_logits=True, reduction="none"), [z, y]),
        "binary_logits_soft_sum": (
            functools.partial(binary_focal_loss, gamma=1.5, from_logits=True, reduction="sum"),
            [z, soft_targets(4, 3, seed=2)]),
        "binary_probabilities": (binary_focal_loss, [probabilities(4, 3), y]),
        "binary_probabilities_soft": (functools.partial(binary_focal_loss, gamma=0.7, alpha=None),
                                      [probabilities(2, 3, 2), soft_targets(2, 3, 2, seed=3)]),
        "categorical_logits": (functools.partial(categorical_focal_loss, from_logits=True), [scores, classes]),
        "categorical_logits_gamma_half_weights": (
            functools.partial(categorical_focal_loss, gamma=0.5, alpha=[0.2, 0.4, 0.6, 0.8], from_logits=True,
                              reduction="none"), [scores, classes]),
        "categorical_logits_soft_sequence": (
            functools.partial(categorical_focal_loss, gamma=3.0, from_logits=True, reduction="sum"),
            [randn(2, 3, 4), distributions(2, 3, 4, seed=1)]),
        "categorical_probabilities": (functools.partial(categorical_focal_loss, alpha=0.25),
                                      [distributions(5, 4, seed=2), classes]),
    }


GRADCHECK = gradcheck_cases()


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    fn, inputs = GRADCHECK[name]
    assert check_gradients(fn, *inputs, grad=[True, False])


# -- gamma = 0 is the cross-entropy -----------------------------------------------------------


def value_and_grad(loss, x, y, dtype, **kw):
    t = lamina.tensor(x, requires_grad=True, dtype=dtype)
    out = loss(t, y, **kw)
    out.backward(np.ones(out.shape, dtype=dtype))
    return out.numpy(), t.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("from_logits", [True, False])
def test_binary_focal_with_gamma_zero_is_binary_cross_entropy(from_logits, reduction, dtype):
    x = randn(2, 3, 4, scale=2) if from_logits else probabilities(2, 3, 4)
    for y in (hard_labels(2, 3, 4, seed=1), soft_targets(2, 3, 4, seed=1)):
        expected = value_and_grad(F.binary_cross_entropy, x, y, dtype, from_logits=from_logits, reduction=reduction)
        actual = value_and_grad(binary_focal_loss, x, y, dtype, gamma=0.0, alpha=None, from_logits=from_logits,
                                reduction=reduction)
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(actual[0], expected[0], rtol=rtol)
        np.testing.assert_allclose(actual[1], expected[1], rtol=rtol, atol=rtol * np.abs(expected[1]).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("from_logits", [True, False])
def test_categorical_focal_with_gamma_zero_is_categorical_cross_entropy(from_logits, reduction, dtype):
    for shape in ((6, 5), (2, 3, 5)):
        x = randn(*shape, scale=2) if from_logits else distributions(*shape, seed=4)
        classes = labels(shape[:-1], 5, seed=1)
        for y in (classes, np.eye(5)[classes], distributions(*shape, seed=2)):
            expected = value_and_grad(F.categorical_cross_entropy, x, y, dtype, from_logits=from_logits,
                                      reduction=reduction)
            actual = value_and_grad(categorical_focal_loss, x, y, dtype, gamma=0.0, from_logits=from_logits,
                                    reduction=reduction)
            rtol = 1e-6 if dtype == np.float32 else 1e-14
            np.testing.assert_allclose(actual[0], expected[0], rtol=rtol)
            np.testing.assert_allclose(actual[1], expected[1], rtol=rtol, atol=rtol * np.abs(expected[1]).max())


# -- what the loss does -----------------------------------------------------------------------


def test_each_binary_term_is_the_cross_entropy_scaled_by_alpha_t_and_the_modulation():
    """Per value (one value per sample), FL / CE = alpha_t (1 - p_t)^gamma: confident correct
    predictions lose almost all of their weight, confident wrong ones keep nearly all of it."""
    z = np.array([4.0, 1.0, -1.0, -4.0, 4.0, -4.0])
    y = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    focal = binary_focal_loss(lamina.tensor(z, dtype=np.float64), y, gamma=2.0, alpha=0.25, from_logits=True,
                              reduction="none").numpy()
    ce = F.binary_cross_entropy(lamina.tensor(z, dtype=np.float64), y, from_logits=True, reduction="none").numpy()
    p = 1 / (1 + np.exp(-z))
    p_t = np.where(y == 1, p, 1 - p)
    np.testing.assert_allclose(focal / ce, np.where(y == 1, 0.25, 0.75) * (1 - p_t) ** 2, rtol=1e-12)
    easy, hard = focal[0] / ce[0], focal[3] / ce[3]     # p_t = sigma(4) and sigma(-4)
    assert easy < 1e-3 < 0.2 < hard


def test_categorical_weights_scale_each_classs_rows():
    """With per-class alpha, a row labelled j has alpha_j times its unweighted loss."""
    scores, classes = randn(8, 4, scale=2), labels((8,), 4, seed=3)
    weights = np.array([0.1, 0.4, 0.7, 1.0])
    x = lamina.tensor(scores, dtype=np.float64)
    plain = categorical_focal_loss(x, classes, from_logits=True, reduction="none").numpy()
    weighted = categorical_focal_loss(x, classes, alpha=weights, from_logits=True, reduction="none").numpy()
    np.testing.assert_allclose(weighted, weights[classes] * plain, rtol=1e-14)
    scalar = categorical_focal_loss(x, classes, alpha=0.3, from_logits=True, reduction="none").numpy()
    np.testing.assert_allclose(scalar, 0.3 * plain, rtol=1e-14)


def test_labels_one_hot_rows_and_float_labels_agree():
    x = lamina.tensor(randn(6, 5), dtype=np.float64)
    classes = labels((6,), 5, seed=1)
    expected = categorical_focal_loss(x, classes, from_logits=True).item()
    assert categorical_focal_loss(x, np.eye(5)[classes], from_logits=True).item() == pytest.approx(expected, rel=1e-15)
    assert categorical_focal_loss(x, classes.astype(np.float64), from_logits=True).item() == pytest.approx(
        expected, rel=1e-15)


def test_integer_binary_labels_and_reduction_shapes():
    z = lamina.tensor(randn(5, 4), requires_grad=True)
    y = hard_labels(5, 4, seed=1)
    for loss, target in ((binary_focal_loss, y.astype(np.int64)), (categorical_focal_loss, labels((5,), 4))):
        none = loss(z, target, from_logits=True, reduction="none")
        total = loss(z, target, from_logits=True, reduction="sum")
        mean = loss(z, target, from_logits=True)
        assert none.shape == (5,) and total.shape == () and mean.shape == ()
        assert none.dtype == total.dtype == mean.dtype == np.float32
        assert total.item() == pytest.approx(none.numpy().sum(), rel=1e-5)
        assert mean.item() == pytest.approx(none.numpy().mean(), rel=1e-5)
        z.grad = None
        mean.backward()
        assert z.grad.dtype == np.float32 and z.grad.shape == (5, 4)
    assert binary_focal_loss(z, y.astype(np.int64), from_logits=True).item() == pytest.approx(
        binary_focal_loss(z, y, from_logits=True).item(), rel=1e-7)


# -- extreme inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_logits_stay_finite_and_exact_far_out(dtype):
    """log p_t from the logits: at z = -1000 with y = 1 the loss is alpha * 1000 (not inf) and
    the gradient -alpha / m; confident right answers give 0; gamma < 1 gives no NaN."""
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0, 80.0, -80.0])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    for gamma in (2.0, 0.5, 0.0):
        value, grad = value_and_grad(binary_focal_loss, z, y, dtype, gamma=gamma, alpha=0.25, from_logits=True,
                                     reduction="sum")
        assert np.isfinite(value) and np.isfinite(grad).all()
        assert value == pytest.approx(0.25 * 1000 + 0.75 * 1000, rel=1e-6)
        np.testing.assert_allclose(grad[:4], [0.0, -0.25, 0.75, 0.0], atol=1e-6)
        assert np.abs(grad[4:]).max() < 1e-30


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_logits_stay_finite_far_out(dtype):
    z = np.array([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0], [0.0, 50.0, 0.0]])
    y = np.array([0, 2, 1])
    for gamma in (2.0, 0.5):
        value, grad = value_and_grad(categorical_focal_loss, z, y, dtype, gamma=gamma, from_logits=True,
                                     reduction="none")
        assert np.isfinite(value).all() and np.isfinite(grad).all()
        np.testing.assert_allclose(value, [0.0, 2000.0, 0.0], atol=1e-6)
        np.testing.assert_allclose(grad[1], [1.0, 0.0, -1.0], atol=1e-6)   # softmax minus the target


def test_near_saturated_logits_match_torch_in_float64():
    z = np.array([[30.0, -30.0, 12.0], [-25.0, 0.5, 18.0]])
    y = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    compare_with_torch(functools.partial(binary_focal_loss, gamma=2.0, alpha=0.25, from_logits=True),
                       lambda a, b: torch_binary_focal(a, b, 2.0, 0.25, True).mean(), z, y, dtype=np.float64,
                       grad=[True, False], rtol=1e-10)


# -- errors -----------------------------------------------------------------------------------

LOSSES = [binary_focal_loss, categorical_focal_loss]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_bad_gamma_is_refused(loss):
    x, y = lamina.tensor(randn(3, 2)), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    for gamma in (-0.5, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match=rf"{loss.__name__}: gamma must be a finite number >= 0, got"):
            loss(x, y, gamma=gamma, from_logits=True)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_alpha_outside_zero_one_is_refused(loss):
    x, y = lamina.tensor(randn(3, 2)), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    for alpha in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=rf"{loss.__name__}: alpha must be None or a number in \[0, 1\]"):
            loss(x, y, alpha=alpha, from_logits=True)


def test_per_class_alpha_is_checked():
    x, y = lamina.tensor(randn(3, 4)), np.array([0, 3, 1])
    with pytest.raises(ValueError, match=r"categorical_focal_loss: alpha must be a number or 4 per-class weights "
                                         r"\(y_pred has shape \(3, 4\)\), got 3 weights"):
        categorical_focal_loss(x, y, alpha=[0.2, 0.3, 0.5], from_logits=True)
    with pytest.raises(ValueError, match=r"categorical_focal_loss: per-class alpha weights must lie in \[0, 1\]"):
        categorical_focal_loss(x, y, alpha=[0.2, 0.3, 1.5, 0.1], from_logits=True)


def test_shape_mismatch_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match=r"binary_focal_loss: y_pred has shape \(4, 3\) but y_true has "
                                                r"shape \(4, 1\)"):
        binary_focal_loss(lamina.tensor(np.full((4, 3), 0.5)), np.ones((4, 1)))
    with pytest.raises(lamina.ShapeError, match=r"categorical_focal_loss: y_true must be integer labels of shape "
                                                r"\(4,\) or one-hot rows of shape \(4, 3\), got shape \(4, 2\)"):
        categorical_focal_loss(lamina.tensor(np.full((4, 3), 1 / 3)), np.ones((4, 2)))
    with pytest.raises(lamina.ShapeError, match="categorical_focal_loss: y_pred must have a class axis"):
        categorical_focal_loss(lamina.tensor(0.5), 0)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_logits_given_as_probabilities_are_refused(loss):
    scores = lamina.tensor(np.array([[2.5, -1.0], [0.3, 0.1]]))
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=rf"{loss.__name__}: y_pred of shape \(2, 2\) holds values from -1 to 2.5, "
                                         "but with from_logits=False it must hold probabilities in"):
        loss(scores, y)
    assert np.isfinite(loss(scores, y, from_logits=True).item())


def test_targets_outside_zero_one_and_bad_labels_are_refused():
    p = lamina.tensor(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"binary_focal_loss: y_true must hold targets in \[0, 1\], got values "
                                         "from -1 to 1"):
        binary_focal_loss(p, np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"categorical_focal_loss: y_true must hold targets in \[0, 1\]"):
        categorical_focal_loss(p, np.array([[1.5, -0.5, 0.0], [0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"categorical_focal_loss: labels must lie in \[0, 3\)"):
        categorical_focal_loss(p, np.array([0, 3]))


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_unknown_reduction_is_refused(loss):
    with pytest.raises(ValueError, match=f"{loss.__name__}: reduction must be one of"):
        loss(lamina.tensor(np.full((2, 2), 0.5)), np.array([[1.0, 0.0], [0.0, 1.0]]), reduction="average")


# -- training ---------------------------------------------------------------------------------


def test_binary_focal_loss_trains_a_detector_on_rare_positives():
    """5% positives in two overlapping blobs: a logistic unit trained on the focal loss
    finds most positives while keeping false alarms low."""
    rng = np.random.default_rng(0)
    n = 2000
    y = (rng.random(n) < 0.05).astype(np.float32)[:, None]
    x = (rng.standard_normal((n, 2)) + 2.5 * y * np.array([1.0, 1.0])).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 2))
    trainer = Trainer(model, functools.partial(binary_focal_loss, alpha=0.75, from_logits=True),
                      optim.Adam(model.parameters(), lr=0.05), metrics=(), verbose=0)
    before = trainer.evaluate((x, y))["loss"]
    trainer.fit((x, y), epochs=8, batch_size=64, seed=0)
    assert trainer.evaluate((x, y))["loss"] < 0.5 * before
    predicted = trainer.predict(x)[:, 0] > 0
    positives = y[:, 0] == 1
    recall = predicted[positives].mean()
    false_alarms = predicted[~positives].mean()
    assert recall > 0.7 and false_alarms < 0.1, (recall, false_alarms)


def test_categorical_focal_loss_trains_an_imbalanced_classifier():
    """Four Gaussian classes in 6-D with 55/25/15/5 % of the samples: a small network
    trained on the focal loss classifies held-out samples well, the rarest class included."""
    rng = np.random.default_rng(0)
    classes, d, n = 4, 6, 1200
    centres = rng.standard_normal((classes, d)) * 1.5
    y = rng.choice(classes, n, p=[0.55, 0.25, 0.15, 0.05])
    x = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(classes))
    model.build((None, d))
    trainer = Trainer(model, functools.partial(categorical_focal_loss, from_logits=True),
                      optim.Adam(model.parameters(), lr=0.02), metrics=(), verbose=0)
    before = trainer.evaluate((x[:800], y[:800]))["loss"]
    trainer.fit((x[:800], y[:800]), epochs=5, batch_size=32, seed=0)
    assert trainer.evaluate((x[:800], y[:800]))["loss"] < 0.3 * before
    predicted, truth = trainer.predict(x[800:]).argmax(axis=1), y[800:]
    accuracy = (predicted == truth).mean()
    rare_recall = (predicted[truth == 3] == 3).mean()
    assert accuracy > 0.85 and rare_recall > 0.5, (accuracy, rare_recall)
