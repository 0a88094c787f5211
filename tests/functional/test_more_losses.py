"""mean_absolute_error, huber, smooth_l1, hinge, multiclass_hinge, kl_divergence and
nll_loss against PyTorch, their gradient checks, argument errors and training by name.

lamina's losses are Keras-style: one loss per sample (the mean over every axis but the
first, the sum for kl_divergence), then 'mean' averages and 'sum' adds those losses;
torch's elementwise 'none' outputs are reduced the same way for the references.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch, nonzero, randn
from lamina import nn, optim
from lamina.train import Trainer
from lamina.train.trainer import LOSSES

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def per_sample(elementwise, reduction, combine="mean"):
    """Torch reference for lamina's reductions: per-sample means (or sums), then mean/sum/none."""
    if elementwise.ndim > 1:
        axes = tuple(range(1, elementwise.ndim))
        elementwise = elementwise.mean(dim=axes) if combine == "mean" else elementwise.sum(dim=axes)
    if reduction == "mean":
        return elementwise.mean()
    if reduction == "sum":
        return elementwise.sum()
    return elementwise


def labels(shape, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def signs(*shape, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


def distributions(*shape, seed=0):
    """Rows (over the last axis) of positive probabilities adding up to 1."""
    p = np.random.default_rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


def torch_hinge(y_hat, y):
    return torch.clamp(1 - y * y_hat, min=0)


# values at the kinks, exact in float32: residuals 0, +-1 (= delta = beta) and beyond
KINK_PRED = np.array([[0.5, 1.5, -0.5, 2.0], [1.0, 0.25, -3.0, 0.0]])
KINK_TRUE = np.array([[0.5, 0.5, 0.5, 1.0], [-1.0, 0.25, -2.0, 1.0]])
# hinge: y y_hat = 1 (the kink), y_hat = 0 and both sides
HINGE_PRED = np.array([[1.0, -1.0, 0.0, 0.5], [2.0, -0.25, 1.0, -3.0]])
HINGE_TRUE = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]])
# multiclass hinge: margin - s_y + s_j = 0 exactly for j = 1 (row 0) and j = 0 (row 1)
TIE_SCORES = np.array([[1.0, 0.0, 0.5, -2.0], [1.0, 3.0, 2.0, 1.5], [0.25, 0.5, 0.75, 1.0]])
TIE_LABELS = np.array([0, 2, 3])


def pointwise_cases(reduction):
    def ours(loss, **kw):
        return lambda p, y: loss(p, y, reduction=reduction, **kw)

    def theirs(loss, **kw):
        return lambda p, y: per_sample(loss(p, y, reduction="none", **kw), reduction)

    return {
        "mae_1d": (ours(F.mean_absolute_error), theirs(TF.l1_loss), [randn(6), randn(6, seed=1)]),
        "mae_2d": (ours(F.mean_absolute_error), theirs(TF.l1_loss), [randn(4, 3), randn(4, 3, seed=1)]),
        "mae_3d": (ours(F.mean_absolute_error), theirs(TF.l1_loss), [randn(2, 3, 4), randn(2, 3, 4, seed=1)]),
        "mae_ties": (ours(F.mean_absolute_error), theirs(TF.l1_loss), [KINK_PRED, KINK_TRUE]),
        "huber": (ours(F.huber), theirs(TF.huber_loss), [randn(4, 3, scale=2), randn(4, 3, seed=1)]),
        "huber_delta": (ours(F.huber, delta=0.3), theirs(TF.huber_loss, delta=0.3),
                        [randn(4, 3), randn(4, 3, seed=1)]),
        "huber_kinks": (ours(F.huber), theirs(TF.huber_loss), [KINK_PRED, KINK_TRUE]),
        "huber_kinks_delta": (ours(F.huber, delta=0.5), theirs(TF.huber_loss, delta=0.5),
                              [KINK_PRED / 2, KINK_TRUE / 2]),
        "smooth_l1": (ours(F.smooth_l1), theirs(TF.smooth_l1_loss), [randn(4, 3, scale=2), randn(4, 3, seed=1)]),
        "smooth_l1_beta": (ours(F.smooth_l1, beta=0.3), theirs(TF.smooth_l1_loss, beta=0.3),
                           [randn(4, 3), randn(4, 3, seed=1)]),
        "smooth_l1_beta_zero": (ours(F.smooth_l1, beta=0.0), theirs(TF.smooth_l1_loss, beta=0.0),
                                [KINK_PRED, KINK_TRUE]),
        "smooth_l1_kinks": (ours(F.smooth_l1), theirs(TF.smooth_l1_loss), [KINK_PRED, KINK_TRUE]),
        "hinge_signs": (ours(F.hinge), lambda p, y: per_sample(torch_hinge(p, y), reduction),
                        [randn(5, 3), signs(5, 3, seed=1)]),
        "hinge_1d": (ours(F.hinge), lambda p, y: per_sample(torch_hinge(p, y), reduction),
                     [randn(6), signs(6, seed=1)]),
        "hinge_zero_one": (ours(F.hinge), lambda p, y: per_sample(torch_hinge(p, 2 * y - 1), reduction),
                           [randn(5, 3), (signs(5, 3, seed=1) + 1) / 2]),
        "hinge_kinks": (ours(F.hinge), lambda p, y: per_sample(torch_hinge(p, y), reduction),
                        [HINGE_PRED, HINGE_TRUE]),
        "kl_2d": (ours(F.kl_divergence), theirs_kl(reduction),
                  [np.log(distributions(5, 4)), distributions(5, 4, seed=1)]),
        "kl_1d": (ours(F.kl_divergence), theirs_kl(reduction),
                  [np.log(distributions(6)), distributions(6, seed=1)]),
        "kl_3d": (ours(F.kl_divergence), theirs_kl(reduction),
                  [np.log(distributions(2, 3, 4)), distributions(2, 3, 4, seed=1)]),
        "kl_unnormalised": (ours(F.kl_divergence), theirs_kl(reduction),
                            [randn(4, 3), np.random.default_rng(2).uniform(0.1, 2.0, (4, 3))]),
    }


def theirs_kl(reduction):
    return lambda log_q, p: per_sample(TF.kl_div(log_q, p, reduction="none"), reduction, combine="sum")


def class_cases(reduction):
    def ours(loss, **kw):
        return lambda s, y: loss(s, y, reduction=reduction, **kw)

    def rows(loss, **kw):
        """torch over the rows of (m, ..., C) scores with labels (m, ...), reduced per sample."""
        def reference(s, y):
            flat = loss(s.reshape(-1, s.shape[-1]), y.reshape(-1), reduction="none", **kw)
            return per_sample(flat.reshape(y.shape), reduction)
        return reference

    log_probs = np.log(distributions(6, 5, seed=3))
    return {
        "multiclass_hinge": (ours(F.multiclass_hinge), rows(TF.multi_margin_loss),
                             [randn(6, 5), labels((6,), 5, seed=1)]),
        "multiclass_hinge_margin": (ours(F.multiclass_hinge, margin=0.4), rows(TF.multi_margin_loss, margin=0.4),
                                    [randn(6, 5), labels((6,), 5, seed=1)]),
        "multiclass_hinge_margin_zero": (ours(F.multiclass_hinge, margin=0.0), rows(TF.multi_margin_loss, margin=0.0),
                                         [randn(6, 5), labels((6,), 5, seed=1)]),
        "multiclass_hinge_ties": (ours(F.multiclass_hinge), rows(TF.multi_margin_loss), [TIE_SCORES, TIE_LABELS]),
        "multiclass_hinge_one_row": (ours(F.multiclass_hinge), TF.multi_margin_loss, [randn(5), np.array(2)]),
        "multiclass_hinge_sequence": (ours(F.multiclass_hinge), rows(TF.multi_margin_loss),
                                      [randn(2, 3, 4), labels((2, 3), 4, seed=2)]),
        "nll": (ours(F.nll_loss), rows(TF.nll_loss), [log_probs, labels((6,), 5, seed=1)]),
        "nll_any_scores": (ours(F.nll_loss), rows(TF.nll_loss), [randn(6, 5), labels((6,), 5, seed=4)]),
        "nll_one_row": (ours(F.nll_loss), TF.nll_loss, [log_probs[0], np.array(4)]),
        "nll_sequence": (ours(F.nll_loss), rows(TF.nll_loss), [randn(2, 3, 4), labels((2, 3), 4, seed=2)]),
    }


CASES = {}
for _reduction in REDUCTIONS:
    for _name, _case in {**pointwise_cases(_reduction), **class_cases(_reduction)}.items():
        if _name.endswith("one_row") and _reduction != "mean":
            continue                            # a 0-d label: torch's 'none' and 'sum' are the same value
        CASES[f"{_name}-{_reduction}"] = _case


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    """Outputs, and gradients to the prediction and to a float target, as torch's."""
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype)


def test_torch_cases_hit_the_kinks():
    """The kink cases hold what they claim: ties, |residual| = delta and y y_hat = 1."""
    residual = KINK_PRED - KINK_TRUE
    assert (residual == 0).sum() >= 2 and (np.abs(residual) == 1).sum() >= 3
    assert ((HINGE_PRED * HINGE_TRUE) == 1).sum() >= 3 and (HINGE_PRED == 0).any()
    picked = TIE_SCORES[np.arange(3), TIE_LABELS][:, None]
    assert ((1 - picked + TIE_SCORES) == 0).sum() >= 2


def far_from_kinks(seed=0):
    """Prediction and target whose residuals keep away from 0 and from 1 (delta, beta)."""
    y = randn(4, 3, seed=seed)
    magnitude = np.random.default_rng(seed + 1).choice([0.3, 0.6, 1.6, 2.5], (4, 3))
    return y + magnitude * signs(4, 3, seed=seed + 2), y


def gradcheck_cases():
    p, y = far_from_kinks()
    t = signs(5, 3, seed=1)
    scores = randn(6, 5, scale=2)
    classes = labels((6,), 5, seed=1)
    return {
        "mae": (F.mean_absolute_error, [p, y], True),
        "huber": (F.huber, [p, y], True),
        "huber_delta": (lambda a, b: F.huber(a, b, delta=0.45), [p, y], True),
        "smooth_l1": (F.smooth_l1, [p, y], True),
        "smooth_l1_beta": (lambda a, b: F.smooth_l1(a, b, beta=2.0), [p, y], True),
        # the labels are checked on every call: only the scores are perturbed
        "hinge": (F.hinge, [t * (1 + nonzero(5, 3, low=0.2, high=0.9)), t], [True, False]),
        "hinge_sum": (lambda a, b: F.hinge(a, b, reduction="sum"), [t * (1 + nonzero(5, 3, low=0.2)), t],
                      [True, False]),
        "kl": (F.kl_divergence, [np.log(distributions(5, 4)), distributions(5, 4, seed=1)], True),
        "kl_none": (lambda a, b: F.kl_divergence(a, b, reduction="none"),
                    [np.log(distributions(2, 3, 4)), distributions(2, 3, 4, seed=1)], True),
        "multiclass_hinge": (F.multiclass_hinge, [scores, classes], True),
        "multiclass_hinge_none": (lambda s, c: F.multiclass_hinge(s, c, margin=0.7, reduction="none"),
                                  [scores, classes], True),
        "nll": (F.nll_loss, [scores, classes], True),
        "nll_sequence_sum": (lambda s, c: F.nll_loss(s, c, reduction="sum"),
                             [randn(2, 3, 4), labels((2, 3), 4, seed=2)], True),
    }


GRADCHECK = gradcheck_cases()


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    fn, inputs, grad = GRADCHECK[name]
    assert check_gradients(fn, *inputs, grad=grad)


def test_multiclass_hinge_gradcheck_scores_keep_away_from_ties():
    scores, classes = GRADCHECK["multiclass_hinge"][1]
    z = 1 - scores[np.arange(6), classes][:, None] + scores
    z[np.arange(6), classes] = 1.0
    assert np.abs(z).min() > 1e-3 and (z > 0).any() and (z < 0).any()
    z = 0.7 - scores[np.arange(6), classes][:, None] + scores
    assert np.abs(z).min() > 1e-3


# -- values and gradients by hand ---------------------------------------------------------


def grad_of(fn, x):
    """fn(x) and its gradient, in float64."""
    x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = fn(x)
    out.backward()
    return out.item(), x.grad


def grads_of(loss, p, y, **kw):
    p = lamina.tensor(p, requires_grad=True, dtype=np.float64)
    y = lamina.tensor(y, requires_grad=True, dtype=np.float64)
    out = loss(p, y, **kw)
    out.backward()
    return out.item(), p.grad, y.grad


def test_mean_absolute_error_gradient_is_sign_over_m_and_zero_at_ties():
    value, g_p, g_y = grads_of(F.mean_absolute_error, KINK_PRED, KINK_TRUE)
    residual = KINK_PRED - KINK_TRUE
    assert value == pytest.approx(np.abs(residual).mean(), rel=1e-15)
    np.testing.assert_array_equal(g_p, np.sign(residual) / residual.size)
    np.testing.assert_array_equal(g_y, -np.sign(residual) / residual.size)
    assert (g_p[residual == 0] == 0).all()


def test_huber_gradient_is_the_clipped_residual_and_smooth_l1_is_huber_over_beta():
    p, y = randn(5, 4, scale=2), randn(5, 4, seed=1)
    for delta in (0.25, 1.0, 3.0):
        value, g_p, _ = grads_of(F.huber, p, y, delta=delta)
        np.testing.assert_allclose(g_p, np.clip(p - y, -delta, delta) / p.size, rtol=1e-14)
        smooth, g_smooth, _ = grads_of(F.smooth_l1, p, y, beta=delta)
        assert smooth == pytest.approx(value / delta, rel=1e-13)
        np.testing.assert_allclose(g_smooth, g_p / delta, rtol=1e-13)
    # quadratic inside delta, linear beyond it
    small = grads_of(F.huber, np.array([0.5]), np.array([0.0]), delta=1.0)[0]
    large = grads_of(F.huber, np.array([3.0]), np.array([0.0]), delta=1.0)[0]
    assert small == 0.125 and large == 2.5


def test_smooth_l1_with_beta_zero_is_the_mean_absolute_error():
    p, y = randn(4, 3), randn(4, 3, seed=1)
    assert grads_of(F.smooth_l1, p, y, beta=0.0)[0] == grads_of(F.mean_absolute_error, p, y)[0]


def test_hinge_labels_in_zero_one_are_mapped_to_minus_one_one():
    p = randn(6, 2)
    t = signs(6, 2, seed=3)
    a = grads_of(F.hinge, p, t)
    b = grads_of(F.hinge, p, (t + 1) / 2)
    assert a[0] == pytest.approx(b[0], rel=1e-15)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-15)
    np.testing.assert_allclose(b[2], 2 * a[2], rtol=1e-15)     # d(2y - 1)/dy = 2
    # integer labels, and all of one class
    assert F.hinge(lamina.tensor(p), ((t + 1) / 2).astype(np.int64)).item() == pytest.approx(a[0], rel=1e-6)
    ones = np.ones((6, 2))
    assert grads_of(F.hinge, p, ones)[0] == pytest.approx(np.maximum(0, 1 - p).mean(), rel=1e-15)


def test_kl_divergence_with_zero_probabilities():
    """0 log 0 = 0 in the value; the gradient to log q is -p / m; the gradient to p is
    log p + 1 - log q over m, -inf where p = 0 (torch's is NaN there)."""
    log_q = np.log(distributions(3, 4, seed=5))
    p = np.array([[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    for dtype in DTYPES:
        compare_with_torch(F.kl_divergence, lambda a, b: TF.kl_div(a, b, reduction="batchmean"), log_q, p,
                           dtype=dtype, grad=[True, False])
    value, g_q, g_p = grads_of(F.kl_divergence, log_q, p)
    safe = np.where(p > 0, p, 1.0)
    assert value == pytest.approx((np.where(p > 0, p * np.log(safe), 0) - p * log_q).sum() / 3, rel=1e-14)
    np.testing.assert_allclose(g_q, -p / 3, rtol=1e-15)
    np.testing.assert_allclose(g_p[p > 0], ((np.log(safe) + 1 - log_q) / 3)[p > 0], rtol=1e-14)
    assert (g_p[p == 0] == -np.inf).all()
    log_q_t = torch.tensor(log_q)
    p_t = torch.tensor(p, requires_grad=True)
    TF.kl_div(log_q_t, p_t, reduction="batchmean").backward()
    np.testing.assert_allclose(g_p[p > 0], p_t.grad.numpy()[p > 0], rtol=1e-14)


def test_kl_divergence_of_a_distribution_with_itself_is_zero():
    p = distributions(4, 6, seed=2)
    value, g_q, _ = grads_of(F.kl_divergence, np.log(p), p)
    assert abs(value) < 1e-15
    np.testing.assert_allclose(g_q, -p / 4)


@pytest.mark.parametrize("loss", [F.multiclass_hinge, F.nll_loss])
def test_one_hot_rows_and_float_labels_give_the_labels_result(loss):
    s = lamina.tensor(randn(6, 5), dtype=np.float64)
    y = labels((6,), 5, seed=1)
    expected = loss(s, y).item()
    assert loss(s, np.eye(5)[y]).item() == expected
    assert loss(s, y.astype(np.float64)).item() == expected
    assert loss(s, lamina.tensor(y)).item() == expected


def test_multiclass_hinge_by_hand():
    s = np.array([[3.0, 1.0, 2.5], [0.0, 0.5, 1.0]])
    y = np.array([0, 2])
    # row 0: max(0, 1 - 3 + 1) + max(0, 1 - 3 + 2.5) = 0 + 0.5; row 1: 0 + 0.5; each / 3 classes
    value, g_s = grad_of(lambda a: F.multiclass_hinge(a, y), s)
    assert value == pytest.approx((0.5 / 3 + 0.5 / 3) / 2, rel=1e-15)
    np.testing.assert_allclose(g_s, [[-1 / 6, 0, 1 / 6], [0, 1 / 6, -1 / 6]], rtol=1e-15)


def test_nll_loss_picks_the_labels_log_probabilities():
    log_probs = np.log(distributions(4, 3, seed=7))
    y = np.array([2, 0, 1, 2])
    value, g = grad_of(lambda a: F.nll_loss(a, y), log_probs)
    assert value == pytest.approx(-log_probs[np.arange(4), y].mean(), rel=1e-15)
    np.testing.assert_array_equal(g, -np.eye(3)[y] / 4)
    # with log_softmax it is the cross-entropy from logits
    z = lamina.tensor(randn(4, 3), dtype=np.float64)
    assert F.nll_loss(F.log_softmax(z), y).item() == pytest.approx(
        F.categorical_cross_entropy(z, y, from_logits=True).item(), rel=1e-13)


ALL_LOSSES = [F.mean_absolute_error, F.huber, F.smooth_l1, F.hinge, F.kl_divergence, F.multiclass_hinge, F.nll_loss]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_reductions_shapes_and_dtypes(loss):
    p = randn(5, 4)
    y = labels((5,), 4) if loss in (F.multiclass_hinge, F.nll_loss) else signs(5, 4, seed=1)
    if loss is F.kl_divergence:
        p, y = np.log(distributions(5, 4)), distributions(5, 4, seed=1)
    x = lamina.tensor(p, requires_grad=True, dtype=np.float32)
    none = loss(x, y, reduction="none")
    total = loss(x, y, reduction="sum")
    mean = loss(x, y)
    assert none.shape == (5,) and total.shape == () and mean.shape == ()
    assert none.dtype == total.dtype == mean.dtype == np.float32
    assert total.item() == pytest.approx(none.numpy().sum(), rel=1e-5)
    assert mean.item() == pytest.approx(none.numpy().mean(), rel=1e-5)
    mean.backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == (5, 4)


@pytest.mark.parametrize("loss", [F.mean_absolute_error, F.huber, F.smooth_l1, F.hinge, F.kl_divergence])
def test_a_target_that_needs_a_gradient_must_share_the_dtype(loss):
    p = lamina.tensor(np.full((2, 2), 0.5), requires_grad=True, dtype=np.float32)
    y = lamina.tensor(np.ones((2, 2)), requires_grad=True, dtype=np.float64)
    with pytest.raises(TypeError, match=f"{loss.__name__}: y_true has dtype float64 but y_pred has dtype float32"):
        loss(p, y)
    # a constant target tensor of another dtype is cast
    assert loss(p, lamina.tensor(np.ones((2, 2)), dtype=np.float64)).dtype == np.float32


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [F.mean_absolute_error, F.huber, F.smooth_l1, F.hinge, F.kl_divergence])
def test_target_shape_mismatch_raises_shape_error(loss):
    p = lamina.tensor(np.full((4, 3), 0.5))
    with pytest.raises(lamina.ShapeError, match=rf"{loss.__name__}: y_pred has shape \(4, 3\) but y_true has "
                                                r"shape \(4, 1\)"):
        loss(p, np.ones((4, 1)))


@pytest.mark.parametrize("loss", [F.multiclass_hinge, F.nll_loss])
def test_class_labels_are_checked(loss):
    name = loss.__name__
    s = lamina.tensor(randn(3, 4))
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 4\), got values from 0 to 4"):
        loss(s, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 4\), got values from -1"):
        loss(s, np.array([-1, 2, 1]))
    with pytest.raises(TypeError, match=f"{name}: integer labels expected"):
        loss(s, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(lamina.ShapeError, match=rf"{name}: y_true must be integer labels of shape \(3,\)"):
        loss(s, np.array([0, 1]))
    with pytest.raises(ValueError, match=f"{name}: .* one-hot rows"):
        loss(s, distributions(3, 4))
    with pytest.raises(lamina.ShapeError, match=f"{name}: y_pred must have a class axis"):
        loss(lamina.tensor(1.5), 0)


def test_bad_delta_beta_and_margin_are_refused():
    p, y = lamina.tensor(randn(3)), randn(3, seed=1)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "1", True, None):
        with pytest.raises(ValueError, match=r"huber: delta must be a finite number > 0"):
            F.huber(p, y, delta=bad)
    for bad in (-0.5, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match=r"smooth_l1: beta must be a finite number >= 0"):
            F.smooth_l1(p, y, beta=bad)
    for bad in (-0.1, float("inf")):
        with pytest.raises(ValueError, match=r"multiclass_hinge: margin must be a finite number >= 0"):
            F.multiclass_hinge(lamina.tensor(randn(3, 4)), [0, 1, 2], margin=bad)
    assert F.huber(p, y, delta=np.float32(2.0)).item() == pytest.approx(F.huber(p, y, delta=2).item())


def test_hinge_refuses_other_labels():
    p = lamina.tensor(randn(4))
    for bad in ([-1, 0, 1, 1], [0, 2, 0, 2], [0.5, 1, 1, 1]):
        with pytest.raises(ValueError, match=r"hinge: y_true must hold labels in \{-1, 1\} or in \{0, 1\}"):
            F.hinge(p, np.array(bad, dtype=np.float64))


def test_kl_divergence_refuses_negative_probabilities():
    with pytest.raises(ValueError, match="kl_divergence: y_true must hold probabilities >= 0"):
        F.kl_divergence(lamina.tensor(randn(2, 3)), np.array([[0.5, 0.6, -0.1], [0.2, 0.3, 0.5]]))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_unknown_reduction_is_refused(loss):
    with pytest.raises(ValueError, match=f"{loss.__name__}: reduction must be one of"):
        loss(lamina.tensor(np.full((2, 2), 0.5)), np.array([[1.0, 0.0], [0.0, 1.0]]), reduction="average")


# -- training by name -----------------------------------------------------------------------


def regression(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = x @ np.array([[1.5], [-2.0], [0.5], [1.0]], dtype=np.float32) + 0.5
    return x, (y + 0.1 * rng.standard_normal((n, 1))).astype(np.float32)


def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def binary(n=256, seed=0):
    """Two Gaussian blobs, labels -1 and 1 of shape (n, 1)."""
    rng = np.random.default_rng(seed)
    t = rng.choice([-1.0, 1.0], (n, 1))
    return (t * 1.5 + rng.standard_normal((n, 4))).astype(np.float32), t.astype(np.float32)


def soft_digits():
    x, y = digits()
    return x, (0.9 * np.eye(10)[y] + 0.01).astype(np.float32)


TRAINING = {
    # loss: (data, output units, activation of the last layer, learning rate)
    "mean_absolute_error": (regression, 1, None, 0.2),
    "mae": (regression, 1, None, 0.2),
    "huber": (regression, 1, None, 0.2),
    "smooth_l1": (regression, 1, None, 0.2),
    "hinge": (binary, 1, None, 0.05),
    "multiclass_hinge": (digits, 10, None, 0.01),
    "nll": (digits, 10, F.log_softmax, 0.01),
    "kl_divergence": (soft_digits, 10, F.log_softmax, 0.01),
}


@pytest.mark.parametrize("name", list(TRAINING))
def test_trainer_trains_with_the_loss_by_name(name):
    data, units, activation, lr = TRAINING[name]
    x, y = data()
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(units, activation=activation))
    model.build((None, x.shape[1]))
    trainer = Trainer(model, name, optim.Adam(model.parameters(), lr=lr), metrics=(), verbose=0)
    expected = {"nll": F.nll_loss, "mae": F.mean_absolute_error}.get(name, getattr(F, name, None))
    assert trainer.loss is expected
    before = trainer.evaluate((x, y))["loss"]
    history = trainer.fit((x, y), epochs=1, batch_size=32, seed=0)
    after = trainer.evaluate((x, y))["loss"]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])
    assert after < 0.8 * before, (before, after)


def test_new_names_are_in_the_trainer_table():
    for name, fn in {"mean_absolute_error": F.mean_absolute_error, "mae": F.mean_absolute_error, "huber": F.huber,
                     "smooth_l1": F.smooth_l1, "hinge": F.hinge, "multiclass_hinge": F.multiclass_hinge,
                     "kl_divergence": F.kl_divergence, "nll": F.nll_loss}.items():
        assert LOSSES[name] is fn
