"""binary_cross_entropy, categorical_cross_entropy and mean_squared_error against PyTorch.

lamina's losses are Keras-style: one loss per sample (the mean over every axis but the
first), then 'mean' averages and 'sum' adds those per-sample losses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def probabilities(*shape, seed=0):
    return np.random.default_rng(seed).uniform(0.05, 0.95, shape)


def binary(*shape, seed=0):
    return (np.random.default_rng(seed).random(shape) > 0.5).astype(np.float64)


def softmax_rows(m, k, seed=0):
    p = np.random.default_rng(seed).uniform(0.2, 1.0, (m, k))
    return p / p.sum(axis=1, keepdims=True)


def labels(shape, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def one_hot(y, classes):
    return np.eye(classes)[y]


def reduce_per_sample(elementwise, reduction):
    """Torch reference for lamina's reductions: per-sample means, then mean/sum/none."""
    per_sample = elementwise.mean(dim=tuple(range(1, elementwise.ndim))) if elementwise.ndim > 1 else elementwise
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def bce_cases(reduction):
    return {
        "bce_probs_1d": (
            lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
            lambda p, y: torch.nn.BCELoss(reduction=reduction)(p, y),
            [probabilities(6), binary(6, seed=1)]),
        "bce_probs_2d": (
            lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
            lambda p, y: reduce_per_sample(torch.nn.BCELoss(reduction="none")(p, y), reduction),
            [probabilities(4, 3), binary(4, 3, seed=1)]),
        "bce_probs_soft_targets": (
            lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
            lambda p, y: reduce_per_sample(TF.binary_cross_entropy(p, y, reduction="none"), reduction),
            [probabilities(4, 2), probabilities(4, 2, seed=1)]),
        "bce_logits_1d": (
            lambda z, y: F.binary_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: torch.nn.BCEWithLogitsLoss(reduction=reduction)(z, y),
            [randn(6, scale=3), binary(6, seed=1)]),
        "bce_logits_2d": (
            lambda z, y: F.binary_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: reduce_per_sample(torch.nn.BCEWithLogitsLoss(reduction="none")(z, y), reduction),
            [randn(4, 3, scale=3), binary(4, 3, seed=1)]),
    }


WEIGHTS = [0.5, 2.0, 1.0, 3.0]          # class_weights: one per class


def cce_cases(reduction):
    y_int = labels((5,), 4, seed=1)
    y_seq = labels((2, 3), 4, seed=2)
    return {
        "cce_logits_int_labels": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction),
            [randn(5, 4, scale=2), y_int]),
        "cce_logits_one_hot": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction),
            [randn(5, 4, scale=2), one_hot(y_int, 4)]),
        "cce_logits_soft_targets": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction),
            [randn(5, 4, scale=2), softmax_rows(5, 4, seed=3)]),
        "cce_logits_sequence": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: reduce_per_sample(TF.cross_entropy(z.permute(0, 2, 1), y, reduction="none"), reduction),
            [randn(2, 3, 4, scale=2), y_seq]),
        "cce_probs_int_labels": (
            lambda p, y: F.categorical_cross_entropy(p, y, reduction=reduction),
            lambda p, y: reduce_per_sample(-(TF.one_hot(y, 4) * p.log()).sum(-1), reduction),
            [softmax_rows(5, 4), y_int]),
        "cce_probs_one_hot": (
            lambda p, y: F.categorical_cross_entropy(p, y, reduction=reduction),
            lambda p, y: reduce_per_sample(-(y * p.log()).sum(-1), reduction),
            [softmax_rows(5, 4), one_hot(y_int, 4)]),
        "cce_logits_unnormalised_targets": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction),
            [randn(5, 4, scale=2), probabilities(5, 4, seed=4)]),
        "cce_smoothed_logits_int_labels": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     label_smoothing=0.1),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction, label_smoothing=0.1),
            [randn(5, 4, scale=2), y_int]),
        "cce_smoothed_logits_soft_targets": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     label_smoothing=0.3),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction, label_smoothing=0.3),
            [randn(5, 4, scale=2), softmax_rows(5, 4, seed=3)]),
        "cce_smoothed_logits_sequence": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     label_smoothing=0.2),
            lambda z, y: reduce_per_sample(TF.cross_entropy(z.permute(0, 2, 1), y, reduction="none",
                                                            label_smoothing=0.2), reduction),
            [randn(2, 3, 4, scale=2), y_seq]),
        "cce_weighted_logits_int_labels": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     class_weights=WEIGHTS),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction, weight=torch.tensor(WEIGHTS, dtype=z.dtype)),
            [randn(5, 4, scale=2), y_int]),
        "cce_weighted_smoothed_logits_int_labels": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     class_weights=WEIGHTS, label_smoothing=0.2),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction, weight=torch.tensor(WEIGHTS, dtype=z.dtype),
                                          label_smoothing=0.2),
            [randn(5, 4, scale=2), y_int]),
        "cce_weighted_logits_soft_targets": (
            lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction,
                                                     class_weights=WEIGHTS, label_smoothing=0.1),
            lambda z, y: TF.cross_entropy(z, y, reduction=reduction, weight=torch.tensor(WEIGHTS, dtype=z.dtype),
                                          label_smoothing=0.1),
            [randn(5, 4, scale=2), softmax_rows(5, 4, seed=3)]),
        "cce_weighted_probs_int_labels": (
            lambda p, y: F.categorical_cross_entropy(p, y, reduction=reduction, class_weights=WEIGHTS),
            lambda p, y: TF.nll_loss(p.log(), y, reduction=reduction, weight=torch.tensor(WEIGHTS, dtype=p.dtype)),
            [softmax_rows(5, 4), y_int]),
        "cce_smoothed_probs_int_labels": (
            lambda p, y: F.categorical_cross_entropy(p, y, reduction=reduction, label_smoothing=0.1),
            lambda p, y: reduce_per_sample(-((0.9 * TF.one_hot(y, 4).to(p.dtype) + 0.1 / 4) * p.log()).sum(-1),
                                           reduction),
            [softmax_rows(5, 4), y_int]),
    }


def mse_cases(reduction):
    return {
        "mse_1d": (
            lambda p, y: F.mean_squared_error(p, y, reduction=reduction),
            lambda p, y: TF.mse_loss(p, y, reduction=reduction),
            [randn(6), randn(6, seed=1)]),
        "mse_2d": (
            lambda p, y: F.mean_squared_error(p, y, reduction=reduction),
            lambda p, y: reduce_per_sample(TF.mse_loss(p, y, reduction="none"), reduction),
            [randn(4, 3), randn(4, 3, seed=1)]),
    }


CASES = {}
for _reduction in REDUCTIONS:
    for _name, _case in {**bce_cases(_reduction), **cce_cases(_reduction), **mse_cases(_reduction)}.items():
        CASES[f"{_name}-{_reduction}"] = _case


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, grad=[True, False])


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_gradients(ours, *inputs, grad=[True, False])


def test_mse_mean_matches_torch_mse_loss_on_matrices():
    compare_with_torch(F.mean_squared_error, TF.mse_loss, randn(4, 3), randn(4, 3, seed=1), grad=[True, False])


def test_targets_may_be_plain_arrays():
    z = lamina.tensor(randn(5, 4), requires_grad=True)
    y = labels((5,), 4)
    a = F.categorical_cross_entropy(z, y, from_logits=True)
    b = F.categorical_cross_entropy(z, lamina.tensor(y), from_logits=True)
    c = F.categorical_cross_entropy(z, y.astype(np.float64), from_logits=True)  # float labels, whole numbers
    assert a.item() == b.item() == c.item()


def test_fused_softmax_cross_entropy_backward_is_yhat_minus_y_over_m():
    m, classes = 6, 5
    z_np = randn(m, classes, scale=3)
    y = labels((m,), classes)
    z = lamina.tensor(z_np, requires_grad=True, dtype=np.float64)
    F.categorical_cross_entropy(z, y, from_logits=True).backward()
    e = np.exp(z_np - z_np.max(axis=1, keepdims=True))
    y_hat = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad, (y_hat - one_hot(y, classes)) / m, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_softmax_cross_entropy_backward_with_one_hot_and_sum(dtype):
    m, classes = 4, 3
    z_np = randn(m, classes, seed=4)
    y = one_hot(labels((m,), classes, seed=5), classes)
    z = lamina.tensor(z_np, requires_grad=True, dtype=dtype)
    F.categorical_cross_entropy(z, y, from_logits=True, reduction="sum").backward()
    e = np.exp(z_np - z_np.max(axis=1, keepdims=True))
    y_hat = e / e.sum(axis=1, keepdims=True)
    assert z.grad.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(z.grad, y_hat - y, rtol=rtol, atol=rtol * 1e-2)


LOGITS = np.array([[-1e4, 0.5, 1e4], [1e4, -1e4, -3e3], [-5e3, -1e4, -2.0]])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_from_logits_is_stable_at_extreme_logits(reduction):
    targets = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    z = lamina.tensor(LOGITS, requires_grad=True, dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = F.binary_cross_entropy(z, targets, from_logits=True, reduction=reduction)
        loss.backward(np.ones(loss.shape))
    assert np.isfinite(loss.numpy()).all() and np.isfinite(z.grad).all()
    compare_with_torch(
        lambda a, y: F.binary_cross_entropy(a, y, from_logits=True, reduction=reduction),
        lambda a, y: reduce_per_sample(TF.binary_cross_entropy_with_logits(a, y, reduction="none"), reduction),
        LOGITS, targets, grad=[True, False])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cce_from_logits_is_stable_at_extreme_logits(reduction):
    y = np.array([0, 1, 2])
    z = lamina.tensor(LOGITS, requires_grad=True, dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = F.categorical_cross_entropy(z, y, from_logits=True, reduction=reduction)
        loss.backward(np.ones(loss.shape))
    assert np.isfinite(loss.numpy()).all() and np.isfinite(z.grad).all()
    compare_with_torch(
        lambda a, t: F.categorical_cross_entropy(a, t, from_logits=True, reduction=reduction),
        lambda a, t: TF.cross_entropy(a, t, reduction=reduction),
        LOGITS, y, grad=[True, False])


def test_probability_losses_are_finite_at_zero_and_one():
    p = lamina.tensor(np.array([0.0, 1.0, 0.0, 1.0]), requires_grad=True, dtype=np.float64)
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss = F.binary_cross_entropy(p, y)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(p.grad).all()
    np.testing.assert_allclose(loss.item(), -np.log(1e-7) / 2, rtol=1e-6)


@pytest.mark.parametrize("loss", [F.binary_cross_entropy, F.categorical_cross_entropy, F.mean_squared_error])
def test_unknown_reduction_is_refused(loss):
    p = lamina.tensor(softmax_rows(3, 2))
    with pytest.raises(ValueError, match="reduction"):
        loss(p, one_hot(np.array([0, 1, 1]), 2), reduction="average")


def test_target_shape_mismatch_raises_shape_error():
    p = lamina.tensor(probabilities(4, 3))
    with pytest.raises(lamina.ShapeError, match=r"\(4, 3\).*\(4, 2\)"):
        F.binary_cross_entropy(p, binary(4, 2))
    with pytest.raises(lamina.ShapeError, match=r"\(4, 3\).*\(3, 3\)"):
        F.mean_squared_error(p, randn(3, 3))
    with pytest.raises(lamina.ShapeError, match="categorical_cross_entropy"):
        F.categorical_cross_entropy(p, labels((3,), 3))
    with pytest.raises(lamina.ShapeError, match="categorical_cross_entropy.*class axis"):
        F.categorical_cross_entropy(lamina.tensor(1.5), 0, from_logits=True)


def test_integer_labels_and_their_one_hot_rows_give_the_same_cost_and_gradient():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 6)
    for reduction in ("mean", "sum", "none"):
        results = []
        for target in (y, np.eye(5)[y]):
            z = lamina.tensor(rng.standard_normal((6, 5)) if not results else results[0][2], requires_grad=True,
                              dtype=np.float64)
            cost = F.categorical_cross_entropy(z, target, from_logits=True, reduction=reduction)
            cost.sum().backward() if reduction == "none" else cost.backward()
            results.append((cost.data, z.grad, z.data))
        np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
        np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-15)


def test_out_of_range_labels_are_refused():
    z = lamina.tensor(randn(3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        F.categorical_cross_entropy(z, np.array([0, 4, 1]), from_logits=True)
    with pytest.raises(TypeError, match="integer labels"):
        F.categorical_cross_entropy(z, np.array([0.5, 1.0, 2.0]), from_logits=True)


def test_label_smoothing_bounds_and_its_zero():
    z, y = lamina.tensor(randn(5, 4, scale=2)), labels((5,), 4, seed=1)
    plain = F.categorical_cross_entropy(z, y, from_logits=True)
    assert F.categorical_cross_entropy(z, y, from_logits=True, label_smoothing=0.0).item() == plain.item()
    # eps = 1: uniform targets, L = log sum e^z - mean z, whatever the labels
    uniform = F.categorical_cross_entropy(z, y, from_logits=True, label_smoothing=1.0).item()
    other = F.categorical_cross_entropy(z, (y + 1) % 4, from_logits=True, label_smoothing=1.0).item()
    zs = z.numpy().astype(np.float64)
    expected = np.mean(np.log(np.exp(zs).sum(axis=1)) - zs.mean(axis=1))
    assert uniform == pytest.approx(expected, rel=1e-5) and other == pytest.approx(uniform, rel=1e-6)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"categorical_cross_entropy: label_smoothing must lie in \[0, 1\]"):
            F.categorical_cross_entropy(z, y, from_logits=True, label_smoothing=bad)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        F.categorical_cross_entropy(z, y + 4, from_logits=True, label_smoothing=0.1)


def test_class_weights_over_a_sequence_average_over_the_weights_and_are_checked():
    z, y = randn(2, 3, 4, scale=2), labels((2, 3), 4, seed=2)
    ours = F.categorical_cross_entropy(lamina.tensor(z, dtype=np.float64), y, from_logits=True,
                                       class_weights=WEIGHTS).item()
    theirs = TF.cross_entropy(torch.tensor(z).permute(0, 2, 1), torch.tensor(y), weight=torch.tensor(WEIGHTS,
                              dtype=torch.float64)).item()
    assert ours == pytest.approx(theirs, rel=1e-12)
    same = F.categorical_cross_entropy(lamina.tensor(z), y, from_logits=True, class_weights=[1, 1, 1, 1]).item()
    assert same == pytest.approx(F.categorical_cross_entropy(lamina.tensor(z), y, from_logits=True).item(), rel=1e-6)
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0, 1.0], [1.0, np.inf, 1.0, 1.0]):
        with pytest.raises(ValueError, match=r"categorical_cross_entropy: class_weights must be 4 finite values"):
            F.categorical_cross_entropy(lamina.tensor(z), y, from_logits=True, class_weights=bad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_ignore_index_matches_torch_on_padded_sequences(reduction, weighted):
    z, y = randn(3, 5, 4, scale=2), labels((3, 5), 4, seed=3)
    y[0, 3:] = -100                                   # a short sequence, padded
    y[2, 1] = -100
    weights = WEIGHTS if weighted else None
    out = compare_with_torch(
        lambda a: F.categorical_cross_entropy(a, y, from_logits=True, reduction=reduction, ignore_index=-100,
                                              class_weights=weights),
        lambda a: TF.cross_entropy(a.permute(0, 2, 1), torch.tensor(y), reduction=reduction, ignore_index=-100,
                                   weight=None if weights is None else torch.tensor(WEIGHTS, dtype=a.dtype)),
        z, dtype=np.float64)
    if reduction == "none":
        assert (out[0].numpy()[y == -100] == 0).all()
    check_gradients(lambda a: F.categorical_cross_entropy(a, y, from_logits=True, reduction=reduction,
                                                          ignore_index=-100), z)


def test_ignore_index_on_probabilities_and_its_checks():
    z, y = randn(4, 3, scale=2), labels((4,), 3, seed=4)
    y[1] = 7                                          # outside the classes, but ignored
    probs = F.softmax(lamina.tensor(z, dtype=np.float64))
    kept = F.categorical_cross_entropy(probs[np.array([0, 2, 3])], y[[0, 2, 3]]).item()
    assert F.categorical_cross_entropy(probs, y, ignore_index=7).item() == pytest.approx(kept, rel=1e-12)
    with pytest.raises(lamina.ShapeError, match="ignore_index=7 needs integer labels of shape"):
        F.categorical_cross_entropy(probs, np.eye(3)[[0, 1, 2, 0]], ignore_index=7)


@pytest.mark.parametrize("loss", [F.categorical_cross_entropy, F.binary_cross_entropy])
def test_logits_given_as_probabilities_are_refused(loss):
    scores = np.array([[2.5, -1.0, 0.3], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 2]) if loss is F.categorical_cross_entropy else np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"values from -1 to 3.*from_logits=True"):
        loss(lamina.tensor(scores), labels)
    probabilities = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], np.float32)
    assert np.isfinite(loss(lamina.tensor(probabilities), labels).numpy())



def soft_targets(m, k, seed=0):
    return softmax_rows(m, k, seed=seed)


TARGET_GRADIENT_CASES = {
    "bce_logits": (lambda z, y: F.binary_cross_entropy(z, y, from_logits=True),
                   TF.binary_cross_entropy_with_logits, [randn(4, 3), probabilities(4, 3, seed=1)]),
    "bce_logits_none": (lambda z, y: F.binary_cross_entropy(z, y, from_logits=True, reduction="none"),
                        lambda z, y: TF.binary_cross_entropy_with_logits(z, y, reduction="none"),
                        [randn(5), probabilities(5, seed=1)]),
    "bce_probabilities": (F.binary_cross_entropy, TF.binary_cross_entropy,
                          [probabilities(4, 3), probabilities(4, 3, seed=1)]),
    "mse": (F.mean_squared_error, TF.mse_loss, [randn(4, 3), randn(4, 3, seed=1)]),
    "cce_logits_soft": (lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True), TF.cross_entropy,
                        [randn(4, 5), soft_targets(4, 5, seed=1)]),
    "cce_logits_soft_sum_smoothed": (
        lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction="sum", label_smoothing=0.2),
        lambda z, y: TF.cross_entropy(z, y, reduction="sum", label_smoothing=0.2),
        [randn(4, 5), soft_targets(4, 5, seed=1)]),
    "cce_logits_soft_weighted_none": (
        lambda z, y: F.categorical_cross_entropy(z, y, from_logits=True, reduction="none",
                                                 class_weights=np.arange(1.0, 6.0)),
        lambda z, y: TF.cross_entropy(z, y, reduction="none", weight=torch.arange(1.0, 6.0, dtype=z.dtype)),
        [randn(4, 5), soft_targets(4, 5, seed=1)]),
}


@pytest.mark.parametrize("name", list(TARGET_GRADIENT_CASES))
def test_a_target_that_requires_grad_gets_torchs_gradient(name):
    ours, theirs, inputs = TARGET_GRADIENT_CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64, grad=[True, True])
    assert check_gradients(ours, *inputs, grad=[True, True])


def test_a_target_gradient_of_the_fused_losses_differentiates_again():
    z, y = randn(3, 4), soft_targets(3, 4, seed=2)
    assert check_second_derivatives(lambda a, b: F.categorical_cross_entropy(a, b, from_logits=True), z, y)
    assert check_second_derivatives(lambda a, b: F.binary_cross_entropy(a, b, from_logits=True), z, y)


def test_the_bce_with_logits_target_gradient_is_minus_the_logits():
    z, y = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in ([3.0, -2.0], [0.2, 0.7]))
    F.binary_cross_entropy(z, y, from_logits=True, reduction="sum").backward()
    np.testing.assert_allclose(y.grad, [-3.0, 2.0], rtol=1e-12)


def test_a_target_without_grad_stays_a_constant_of_the_fused_node():
    z = lamina.tensor(randn(6), requires_grad=True)
    for y in (probabilities(6), lamina.tensor(probabilities(6))):
        out = F.binary_cross_entropy(z, y, from_logits=True, reduction="none")
        assert type(out._ctx).__name__ == "BinaryCrossEntropyWithLogits" and len(out._ctx.inputs) == 1
