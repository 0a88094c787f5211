"""The losses of losses_extra against PyTorch (its functions, or the Keras formulas written in torch
ops), float64 gradient checks, edge cases, argument errors and a Poisson regression.

lamina's reductions are per sample (the mean over every axis but the first, or over a sample's
rows), then 'mean' averages and 'sum' adds them; torch's 'none' outputs are reduced the same way
for the references, so 'mean' is compared with torch's own mean as well.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch, positive, randn
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.functional import losses_extra as L
from lamina.train import Trainer

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
KERAS_EPSILON = 1e-7


def per_sample(values, reduction, combine="mean"):
    """Torch reference for lamina's reductions: per-sample means (or sums), then mean/sum/none."""
    if values.ndim > 1:
        axes = tuple(range(1, values.ndim))
        values = values.mean(dim=axes) if combine == "mean" else values.sum(dim=axes)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def signs(*shape, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


def bits(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 2, shape).astype(np.float64)


def counts(*shape, seed=0, rate=2.0):
    return np.random.default_rng(seed).poisson(rate, shape).astype(np.float64)


def distributions(*shape, seed=0):
    p = np.random.default_rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


# -- torch references ------------------------------------------------------------------------
def torch_log_cosh(p, y):
    return torch.log(torch.cosh(p - y))


def torch_squared_hinge(p, y):
    t = 2 * y - 1 if bool(((y == 0) | (y == 1)).all()) else y
    return torch.clamp(1 - t * p, min=0) ** 2


def torch_msle(p, y):
    return (torch.log1p(torch.clamp(p, min=KERAS_EPSILON)) - torch.log1p(torch.clamp(y, min=KERAS_EPSILON))) ** 2


def torch_mape(p, y):
    return 100 * torch.abs((y - p) / torch.clamp(torch.abs(y), min=KERAS_EPSILON))


def torch_cosine_loss(p, y):
    # normalize divides by max(||v||, 1e-6) = sqrt(max(sum v^2, 1e-12)), Keras' l2_normalize
    return -(TF.normalize(p, dim=-1, eps=1e-6) * TF.normalize(y, dim=-1, eps=1e-6)).sum(dim=-1)


def torch_keras_poisson(p, y):
    return p - y * torch.log(p + KERAS_EPSILON)


def torch_kl(log_target, reduction):
    def reference(log_q, p):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch warns that 'mean' is not 'batchmean'
            if reduction == "none":
                return per_sample(TF.kl_div(log_q, p, reduction="none", log_target=log_target), "none", "sum")
            return TF.kl_div(log_q, p, reduction=reduction, log_target=log_target)
    return reference


# kink values: hinge embedding at x = margin (1), multilabel margin terms at exactly 0
EMBED_PRED = np.array([[1.0, 0.5, 2.0, 1.0], [-0.5, 1.0, 0.25, 3.0]])
EMBED_TRUE = np.array([[-1.0, -1.0, -1.0, 1.0], [1.0, -1.0, -1.0, -1.0]])
MARGIN_SCORES = np.array([[1.0, 0.0, 0.5, -2.0], [0.3, -1.2, 2.0, 0.7], [0.25, 0.5, 0.75, 1.0],
                          [1.5, -0.5, 0.0, 2.0]])
# row 0: T = {0} (1 - s_0 + s_1 = 0 exactly); row 1: class 2 listed twice; row 2: none; row 3: all
MARGIN_TARGETS = np.array([[0, -1, 2, 3], [2, 2, 1, -1], [-1, 0, 1, 2], [3, 1, 0, 2]])


def torch_multilabel_margin(s, t, reduction):
    flat = TF.multilabel_margin_loss(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), reduction="none")
    return per_sample(flat.reshape(t.shape[:-1]), reduction)


def torch_multilabel_soft_margin(reduction, weight=None):
    def reference(s, y):
        rows = TF.multilabel_soft_margin_loss(s, y, weight=None if weight is None else torch.tensor(weight),
                                              reduction="none")
        return per_sample(rows, reduction)
    return reference


def torch_cases(reduction):
    """name: (lamina fn, torch fn, inputs, which inputs get a gradient)."""
    def ours(loss, **kw):
        return lambda *a: loss(*a, reduction=reduction, **kw)

    def theirs(loss, **kw):
        return lambda *a: per_sample(loss(*a, reduction="none", **kw), reduction)

    def keras(formula):
        return lambda p, y: per_sample(formula(p, y), reduction)

    p, y = randn(4, 3), randn(4, 3, seed=1)
    rates, small_rates = positive(4, 3, low=0.2, high=3.0), positive(4, 3, seed=2, low=0.05, high=1.0)
    var = positive(4, 3, seed=3, low=0.2, high=2.0)
    tiny_var = np.array([[1e-8, 0.5, 0.0], [2.0, 1e-7, 0.3], [0.0, 0.0, 1.0], [1e-9, 3.0, 0.2]])
    weight = positive(3, seed=4)
    return {
        "poisson_nll": (ours(L.poisson_nll_loss), theirs(TF.poisson_nll_loss), [p, counts(4, 3)], True),
        "poisson_nll_full": (ours(L.poisson_nll_loss, full=True), theirs(TF.poisson_nll_loss, full=True),
                             [p, positive(4, 3, seed=5, low=0.2, high=6.0)], True),
        "poisson_nll_rate": (ours(L.poisson_nll_loss, log_input=False),
                             theirs(TF.poisson_nll_loss, log_input=False), [rates, counts(4, 3)], True),
        "poisson_nll_rate_full_3d": (ours(L.poisson_nll_loss, log_input=False, full=True, eps=1e-3),
                                     theirs(TF.poisson_nll_loss, log_input=False, full=True, eps=1e-3),
                                     [positive(2, 3, 4), positive(2, 3, 4, seed=1, low=0.5, high=5.0)], True),
        "gaussian_nll": (ours(L.gaussian_nll_loss), theirs(TF.gaussian_nll_loss), [p, y, var], True),
        "gaussian_nll_full": (ours(L.gaussian_nll_loss, full=True), theirs(TF.gaussian_nll_loss, full=True),
                              [p, y, var], True),
        "gaussian_nll_clamped": (ours(L.gaussian_nll_loss, eps=1e-3), theirs(TF.gaussian_nll_loss, eps=1e-3),
                                 [p, y, tiny_var], True),
        "gaussian_nll_var_per_row": (ours(L.gaussian_nll_loss), theirs(TF.gaussian_nll_loss),
                                     [p, y, var[:, 0]], True),
        "gaussian_nll_var_column": (ours(L.gaussian_nll_loss), theirs(TF.gaussian_nll_loss),
                                    [p, y, var[:, :1]], True),
        "gaussian_nll_var_3d": (ours(L.gaussian_nll_loss), theirs(TF.gaussian_nll_loss),
                                [randn(2, 3, 4), randn(2, 3, 4, seed=1), positive(2, 1, 4)], True),
        "gaussian_nll_var_number": (lambda a, b: L.gaussian_nll_loss(a, b, 0.7, reduction=reduction),
                                    lambda a, b: per_sample(TF.gaussian_nll_loss(a, b, 0.7, reduction="none"),
                                                            reduction), [p, y], True),
        # torch refuses a target that needs a gradient here: it gets none
        "soft_margin": (ours(L.soft_margin_loss), theirs(TF.soft_margin_loss), [randn(4, 3, scale=3),
                                                                                signs(4, 3)], [True, False]),
        "soft_margin_1d": (ours(L.soft_margin_loss), theirs(TF.soft_margin_loss), [randn(5), signs(5)],
                           [True, False]),
        "multilabel_soft_margin": (ours(L.multilabel_soft_margin_loss), torch_multilabel_soft_margin(reduction),
                                   [randn(4, 3, scale=2), bits(4, 3)], True),
        "multilabel_soft_margin_soft": (ours(L.multilabel_soft_margin_loss),
                                        torch_multilabel_soft_margin(reduction),
                                        [randn(2, 3, 5), np.random.default_rng(1).uniform(0, 1, (2, 3, 5))], True),
        "multilabel_soft_margin_weight": (ours(L.multilabel_soft_margin_loss, weight=weight),
                                          torch_multilabel_soft_margin(reduction, weight),
                                          [randn(4, 3), bits(4, 3, seed=2)], True),
        "hinge_embedding": (ours(L.hinge_embedding_loss), theirs(TF.hinge_embedding_loss),
                            [positive(4, 3, low=0.0, high=2.0), signs(4, 3)], True),
        "hinge_embedding_kinks": (ours(L.hinge_embedding_loss), theirs(TF.hinge_embedding_loss),
                                  [EMBED_PRED, EMBED_TRUE], True),
        "hinge_embedding_margin": (ours(L.hinge_embedding_loss, margin=0.5),
                                   theirs(TF.hinge_embedding_loss, margin=0.5), [EMBED_PRED / 2, EMBED_TRUE], True),
        # a label that is neither 1 nor -1 gets both terms
        "hinge_embedding_other_labels": (ours(L.hinge_embedding_loss), theirs(TF.hinge_embedding_loss),
                                         [randn(4, 3), np.random.default_rng(2).choice([-1.0, 0.0, 1.0, 2.0],
                                                                                      (4, 3))], True),
        "multilabel_margin": (ours(L.multilabel_margin_loss),
                              lambda s, t: torch_multilabel_margin(s, t, reduction),
                              [MARGIN_SCORES, MARGIN_TARGETS], True),
        "multilabel_margin_3d": (ours(L.multilabel_margin_loss),
                                 lambda s, t: torch_multilabel_margin(s, t, reduction),
                                 [randn(2, 2, 4), MARGIN_TARGETS.reshape(2, 2, 4)], True),
        "log_cosh": (ours(L.log_cosh), keras(torch_log_cosh), [randn(4, 3, scale=3), y], True),
        "log_cosh_3d": (ours(L.log_cosh), keras(torch_log_cosh), [randn(2, 3, 4), randn(2, 3, 4, seed=1)], True),
        "squared_hinge": (ours(L.squared_hinge), keras(torch_squared_hinge), [randn(4, 3), signs(4, 3)], True),
        "squared_hinge_zero_one": (ours(L.squared_hinge), keras(torch_squared_hinge), [randn(4, 3), bits(4, 3)],
                                   True),
        # negative predictions and targets are raised to eps
        "msle": (ours(L.mean_squared_logarithmic_error), keras(torch_msle),
                 [randn(4, 3), np.abs(randn(4, 3, seed=1)) * signs(4, 3, seed=2)], True),
        "mape": (ours(L.mean_absolute_percentage_error), keras(torch_mape), [p, y], True),
        "cosine_similarity_loss": (ours(L.cosine_similarity_loss), keras(torch_cosine_loss), [p, y], True),
        "cosine_similarity_loss_3d": (ours(L.cosine_similarity_loss), keras(torch_cosine_loss),
                                      [randn(2, 3, 4), randn(2, 3, 4, seed=1)], True),
        "cosine_similarity_loss_1d": (ours(L.cosine_similarity_loss), keras(torch_cosine_loss),
                                      [randn(5), randn(5, seed=1)], True),
        "poisson": (ours(L.poisson), keras(torch_keras_poisson), [rates, counts(4, 3)], True),
        "poisson_small_rates": (ours(L.poisson), keras(torch_keras_poisson), [small_rates, counts(4, 3, seed=1)],
                                True),
    }


CASES = {f"{name}-{reduction}": case for reduction in REDUCTIONS for name, case in torch_cases(reduction).items()}
for _reduction in ["mean", "batchmean", "sum", "none"]:
    for _log_target in (False, True):
        _target = np.log(distributions(4, 5, seed=1)) if _log_target else distributions(4, 5, seed=1)
        CASES[f"kl_div_{'log_target' if _log_target else 'probabilities'}-{_reduction}"] = (
            lambda a, b, r=_reduction, lt=_log_target: L.kl_div(a, b, log_target=lt, reduction=r),
            torch_kl(_log_target, _reduction), [np.log(distributions(4, 5)), _target], True)
    CASES[f"kl_div_3d-{_reduction}"] = (lambda a, b, r=_reduction: L.kl_div(a, b, reduction=r),
                                        torch_kl(False, _reduction),
                                        [np.log(distributions(2, 3, 4)), distributions(2, 3, 4, seed=1)], True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name, dtype):
    """Values, and gradients to the prediction (and to the target and var where torch gives one)."""
    ours, theirs, inputs, grad = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, grad=grad)


@pytest.mark.parametrize("name", ["poisson_nll", "gaussian_nll", "soft_margin", "multilabel_soft_margin",
                                  "hinge_embedding", "log_cosh", "msle", "mape", "poisson"])
def test_mean_is_torchs_own_mean(name):
    """'mean' is the mean over every value, as torch's (and Keras') default reduction."""
    ours, _, inputs, grad = torch_cases("mean")[name]
    reference = {
        "poisson_nll": TF.poisson_nll_loss, "gaussian_nll": TF.gaussian_nll_loss, "soft_margin": TF.soft_margin_loss,
        "multilabel_soft_margin": TF.multilabel_soft_margin_loss, "hinge_embedding": TF.hinge_embedding_loss,
        "log_cosh": lambda p, y: torch_log_cosh(p, y).mean(), "msle": lambda p, y: torch_msle(p, y).mean(),
        "mape": lambda p, y: torch_mape(p, y).mean(), "poisson": lambda p, y: torch_keras_poisson(p, y).mean(),
    }[name]
    compare_with_torch(ours, reference, *inputs, dtype=np.float64, grad=grad)


def test_torch_cases_hit_the_kinks():
    assert (EMBED_PRED[EMBED_TRUE == -1] == 1.0).sum() >= 2
    s, t = MARGIN_SCORES[0], MARGIN_TARGETS[0]
    assert t[0] == 0 and t[1] == -1 and 1 - s[0] + s[1] == 0


# -- gradient checks (float64) -------------------------------------------------------------------
def gradcheck_cases():
    p, y = randn(4, 3), randn(4, 3, seed=1)
    var = positive(4, 3, seed=3, low=0.2, high=2.0)
    return {
        "poisson_nll": (L.poisson_nll_loss, [p, counts(4, 3)], True),
        "poisson_nll_full_sum": (lambda a, b: L.poisson_nll_loss(a, b, full=True, reduction="sum"),
                                 [p, positive(4, 3, low=0.2, high=6.0)], True),
        "poisson_nll_rate": (lambda a, b: L.poisson_nll_loss(a, b, log_input=False),
                             [positive(4, 3), counts(4, 3)], True),
        "gaussian_nll": (L.gaussian_nll_loss, [p, y, var], True),
        "gaussian_nll_var_per_row_none": (lambda a, b, v: L.gaussian_nll_loss(a, b, v, full=True, reduction="none"),
                                          [p, y, var[:, 0]], True),
        "gaussian_nll_var_3d": (L.gaussian_nll_loss, [randn(2, 3, 4), randn(2, 3, 4, seed=1), positive(2, 1, 4)],
                                True),
        "soft_margin": (L.soft_margin_loss, [randn(4, 3, scale=3), signs(4, 3)], [True, False]),
        "multilabel_soft_margin": (lambda a, b: L.multilabel_soft_margin_loss(a, b, weight=positive(3)),
                                   [randn(4, 3), bits(4, 3)], True),
        "hinge_embedding": (lambda a, b: L.hinge_embedding_loss(a, b, reduction="sum"),
                            [positive(4, 3, low=0.1, high=0.8) * np.array([1, 3, 1]), signs(4, 3)], [True, False]),
        "multilabel_margin": (lambda s, t: L.multilabel_margin_loss(s, t, reduction="none"),
                              [randn(4, 4, seed=7), MARGIN_TARGETS], True),
        "kl_div": (lambda a, b: L.kl_div(a, b, reduction="batchmean"),
                   [np.log(distributions(4, 5)), distributions(4, 5, seed=1)], True),
        "kl_div_log_target": (lambda a, b: L.kl_div(a, b, log_target=True),
                              [np.log(distributions(4, 5)), np.log(distributions(4, 5, seed=1))], True),
        "log_cosh": (L.log_cosh, [randn(4, 3, scale=3), y], True),
        "squared_hinge": (L.squared_hinge, [randn(4, 3), signs(4, 3)], [True, False]),
        "msle": (L.mean_squared_logarithmic_error, [positive(4, 3), positive(4, 3, seed=1)], True),
        "mape": (L.mean_absolute_percentage_error, [p, p + positive(4, 3, seed=2) * signs(4, 3, seed=3)], True),
        "cosine_similarity_loss": (L.cosine_similarity_loss, [p, y], True),
        "poisson": (L.poisson, [positive(4, 3), counts(4, 3)], True),
    }


GRADCHECK = gradcheck_cases()


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck(name):
    fn, inputs, grad = GRADCHECK[name]
    assert check_gradients(fn, *inputs, grad=grad)


def test_gradcheck_inputs_keep_away_from_kinks():
    scores, targets = GRADCHECK["multilabel_margin"][1]
    for s, t in zip(scores, targets):
        listed = t[:list(t).index(-1)] if -1 in t else t
        others = [i for i in range(4) if i not in listed]
        z = np.array([1 - s[j] + s[i] for j in listed for i in others])
        assert z.size == 0 or np.abs(z).min() > 1e-3
    x = GRADCHECK["hinge_embedding"][1][0]
    assert np.abs(x - 1.0).min() > 1e-3


# -- edge cases ----------------------------------------------------------------------------------
def value_and_grad(loss, p, *args, dtype=np.float64, **kw):
    p = lamina.tensor(np.asarray(p, dtype=dtype), requires_grad=True, dtype=dtype)
    out = loss(p, *args, **kw)
    out.backward()
    return out.item(), p.grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_cosh_of_large_residuals_is_finite_and_linear(dtype):
    """|x| - log 2 far from 0, slope +-1; cosh itself would overflow."""
    residuals = [1e4, -1e4, 30.0, 0.0]
    values = L.log_cosh(lamina.tensor(np.array(residuals, dtype=dtype)), np.zeros(4), reduction="none").numpy()
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, [1e4 - math.log(2), 1e4 - math.log(2), 30 - math.log(2), 0.0],
                               rtol=1e-6, atol=1e-6)
    _, grad = value_and_grad(L.log_cosh, residuals, np.zeros(4), dtype=dtype, reduction="sum")
    np.testing.assert_allclose(grad, [1.0, -1.0, 1.0, 0.0], atol=1e-6)


def test_log_cosh_near_zero_is_half_the_square():
    """x^2 / 2 near 0, to the absolute precision of float64 (no offset of log 2 left over)."""
    residuals = np.array([1e-5, -3e-6, 1e-3])
    values = L.log_cosh(lamina.tensor(residuals, dtype=np.float64), np.zeros(3), reduction="none").numpy()
    np.testing.assert_allclose(values, residuals**2 / 2 - residuals**4 / 12, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisson_nll_rate_of_zero_is_finite(dtype):
    """log_input=False with a predicted rate of 0: eps keeps the log finite, as torch."""
    p, y = np.array([[0.0, 0.0, 1.5]]), np.array([[0.0, 3.0, 2.0]])
    compare_with_torch(lambda a, b: L.poisson_nll_loss(a, b, log_input=False, reduction="none"),
                       lambda a, b: TF.poisson_nll_loss(a, b, log_input=False, reduction="none").mean(dim=1),
                       p, y, dtype=dtype, grad=[True, False])
    value, grad = value_and_grad(L.poisson_nll_loss, p, y, dtype=dtype, log_input=False)
    assert np.isfinite(value) and np.isfinite(grad).all() and grad[0, 1] < -1e6


def test_poisson_nll_stirling_term_only_above_one():
    """The full loss adds y log y - y + log(2 pi y) / 2 only where y > 1; a count of 0 stays
    finite (and its target gradient 0, where torch's is NaN)."""
    p = np.zeros((1, 4))
    y = lamina.tensor(np.array([[0.0, 1.0, 2.0, 7.0]]), requires_grad=True, dtype=np.float64)
    full = L.poisson_nll_loss(lamina.tensor(p, dtype=np.float64), y, full=True, reduction="none")
    plain = L.poisson_nll_loss(lamina.tensor(p, dtype=np.float64), y.detach(), reduction="none")
    stirling = [0, 0] + [k * math.log(k) - k + 0.5 * math.log(2 * math.pi * k) for k in (2.0, 7.0)]
    assert (full - plain).item() == pytest.approx(np.mean(stirling), rel=1e-12)
    full.backward()
    assert np.isfinite(y.grad).all() and y.grad[0, 0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_nll_zero_variance_is_clamped(dtype):
    var = lamina.tensor(np.array([[0.0, 1.0]]), requires_grad=True, dtype=dtype)
    out = L.gaussian_nll_loss(lamina.tensor(np.zeros((1, 2)), dtype=dtype), np.array([[2e-3, 1.0]]), var,
                              reduction="none")
    expected = (0.5 * (math.log(1e-6) + 4e-6 / 1e-6) + 0.5 * (0 + 1)) / 2
    assert out.item() == pytest.approx(expected, rel=1e-5)
    out.backward()
    # the clamp lets the gradient through: d/dv of (log v + r^2 / v) / 2 at v = eps, over 2 values
    assert var.grad[0, 0] == pytest.approx(0.5 * (1 / 1e-6 - 4e-6 / 1e-12) / 2, rel=1e-4)
    assert var.grad[0, 1] == pytest.approx(0.5 * (1 - 1) / 2, abs=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_nll_number_and_array_variances_agree(dtype):
    p, y = lamina.tensor(randn(4, 3), dtype=dtype), randn(4, 3, seed=1)
    expected = L.gaussian_nll_loss(p, y, np.full((4, 3), 0.7)).item()
    assert L.gaussian_nll_loss(p, y, 0.7).item() == pytest.approx(expected, rel=1e-6)
    assert L.gaussian_nll_loss(p, y, np.full(4, 0.7)).item() == pytest.approx(expected, rel=1e-6)


def test_soft_margin_of_large_scores_does_not_overflow():
    """torch's log1p(exp(-y x)) overflows here; softplus does not."""
    x = np.array([[-1e4, 1e4, 50.0]], dtype=np.float32)
    value, grad = value_and_grad(L.soft_margin_loss, x, np.ones((1, 3)), dtype=np.float32, reduction="sum")
    assert value == pytest.approx(1e4 / 3, rel=1e-6)
    np.testing.assert_allclose(grad, [[-1 / 3, 0, 0]], atol=1e-7)


def test_mape_of_a_zero_target_is_large_but_finite():
    value, grad = value_and_grad(L.mean_absolute_percentage_error, [[0.5, 2.0]], np.array([[0.0, 2.0]]),
                                 dtype=np.float32)
    assert value == pytest.approx(100 * 0.5 / KERAS_EPSILON / 2, rel=1e-5)
    assert np.isfinite(grad).all() and grad[0, 1] == 0


def test_msle_negative_predictions_are_raised_to_eps_and_get_no_gradient():
    value, grad = value_and_grad(L.mean_squared_logarithmic_error, [[-3.0, 0.0]], np.array([[0.0, 0.0]]))
    assert value == pytest.approx(0.0, abs=1e-20)
    assert grad[0, 0] == 0


def test_cosine_similarity_loss_of_zero_rows_is_zero():
    p = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    y = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    p_t = lamina.tensor(p, requires_grad=True, dtype=np.float64)
    out = L.cosine_similarity_loss(p_t, y, reduction="none")
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, -1.0], atol=1e-15)
    out.sum().backward()
    assert np.isfinite(p_t.grad).all()
    np.testing.assert_allclose(p_t.grad[2], [0.0, 0.0, 0.0], atol=1e-15)    # already aligned


def test_multilabel_margin_rows_without_targets_or_with_all_targets_cost_nothing():
    s = randn(2, 4)
    value, grad = value_and_grad(L.multilabel_margin_loss, s, np.array([[-1, 0, 1, 2], [0, 1, 2, 3]]))
    assert value == 0 and (grad == 0).all()


def test_multilabel_margin_one_row_is_one_sample():
    s = randn(4)
    for dtype in DTYPES:
        out = compare_with_torch(lambda a, b: L.multilabel_margin_loss(a, b, reduction="none"),
                                 lambda a, b: TF.multilabel_margin_loss(a, b, reduction="none"),
                                 s, np.array([3, 1, -1, 0]), dtype=dtype)
        assert out[0].shape == ()


def test_kl_div_log_target_agrees_with_probabilities():
    log_q, p = np.log(distributions(3, 4)), distributions(3, 4, seed=1)
    for reduction in ["mean", "batchmean", "sum", "none"]:
        a = L.kl_div(lamina.tensor(log_q, dtype=np.float64), p, reduction=reduction).numpy()
        b = L.kl_div(lamina.tensor(log_q, dtype=np.float64), np.log(p), log_target=True, reduction=reduction).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-13)
    batchmean = L.kl_div(lamina.tensor(log_q, dtype=np.float64), p, reduction="batchmean").item()
    assert batchmean == pytest.approx(lamina.functional.kl_divergence(lamina.tensor(log_q), p).item(), rel=1e-6)


# -- bad input -----------------------------------------------------------------------------------
TWO_ARGUMENT = {
    "poisson_nll_loss": L.poisson_nll_loss, "soft_margin_loss": L.soft_margin_loss,
    "multilabel_soft_margin_loss": L.multilabel_soft_margin_loss, "hinge_embedding_loss": L.hinge_embedding_loss,
    "log_cosh": L.log_cosh, "squared_hinge": L.squared_hinge,
    "mean_squared_logarithmic_error": L.mean_squared_logarithmic_error,
    "mean_absolute_percentage_error": L.mean_absolute_percentage_error,
    "cosine_similarity_loss": L.cosine_similarity_loss, "poisson": L.poisson, "kl_div": L.kl_div,
}


@pytest.mark.parametrize("name", list(TWO_ARGUMENT) + ["gaussian_nll_loss", "multilabel_margin_loss"])
def test_shape_mismatch_names_the_function_and_shapes(name):
    p = lamina.tensor(np.ones((4, 3)))
    if name == "gaussian_nll_loss":
        call = lambda: L.gaussian_nll_loss(p, np.ones((4, 2)), 1.0)            # noqa: E731
    elif name == "multilabel_margin_loss":
        call = lambda: L.multilabel_margin_loss(p, np.zeros((4, 2), dtype=np.int64))  # noqa: E731
    else:
        call = lambda: TWO_ARGUMENT[name](p, np.ones((4, 2)))                  # noqa: E731
    with pytest.raises(ShapeError, match=rf"{name}.*\(4, 3\).*\(4, 2\)"):
        call()


@pytest.mark.parametrize("name", list(TWO_ARGUMENT) + ["gaussian_nll_loss", "multilabel_margin_loss"])
def test_unknown_reduction_is_refused(name):
    p = lamina.tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=rf"{name}: reduction must be one of .*'avg'"):
        if name == "gaussian_nll_loss":
            L.gaussian_nll_loss(p, np.ones((4, 3)), 1.0, reduction="avg")
        elif name == "multilabel_margin_loss":
            L.multilabel_margin_loss(p, np.zeros((4, 3), dtype=np.int64), reduction="avg")
        else:
            TWO_ARGUMENT[name](p, np.ones((4, 3)), reduction="avg")


def test_batchmean_only_for_kl_div():
    p = lamina.tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="log_cosh: reduction"):
        L.log_cosh(p, np.ones((4, 3)), reduction="batchmean")


@pytest.mark.parametrize("var", [-0.5, np.array([[1.0, -1e-3, 1.0]] * 4)])
def test_gaussian_nll_negative_variance_is_refused(var):
    with pytest.raises(ValueError, match=r"gaussian_nll_loss: var must be >= 0.*-0\.\d+"):
        L.gaussian_nll_loss(lamina.tensor(np.ones((4, 3))), np.ones((4, 3)), var)


@pytest.mark.parametrize("shape", [(4, 1, 1), (3,), (1,), (4, 3, 1), (2, 3), (1, 1)])
def test_gaussian_nll_variance_of_a_shape_torch_refuses(shape):
    p = np.ones((4, 3)) if len(shape) != 3 else np.ones((4, 3, 5))
    if shape == (4, 3, 1):
        p = np.ones((4, 3))
    with pytest.raises(ShapeError, match=rf"gaussian_nll_loss: var has shape \({shape[0]},"):
        L.gaussian_nll_loss(lamina.tensor(p), p, np.ones(shape))
    with pytest.raises(ValueError, match="var is of incorrect size"):
        TF.gaussian_nll_loss(torch.tensor(p), torch.tensor(p), torch.ones(shape))


def test_multilabel_margin_targets_out_of_range_or_not_integers():
    s = lamina.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"multilabel_margin_loss: y_true values must lie in \[-1, 3\).*-2 to 1"):
        L.multilabel_margin_loss(s, np.array([[0, -1, -2], [1, -1, 0]]))
    with pytest.raises(ValueError, match=r"lie in \[-1, 3\).*-1 to 3"):
        L.multilabel_margin_loss(s, np.array([[0, -1, 0], [3, -1, 0]]))
    with pytest.raises(ValueError, match="integer class indices.*float"):
        L.multilabel_margin_loss(s, np.array([[0.5, -1, 0], [1, -1, 0]]))
    with pytest.raises(ShapeError, match="multilabel_margin_loss: y_pred must have a class"):
        L.multilabel_margin_loss(lamina.tensor(1.0), np.array(0))


def test_other_bad_arguments():
    p = lamina.tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"squared_hinge: y_true must hold labels in \{-1, 1\} or in \{0, 1\}"):
        L.squared_hinge(p, np.full((4, 3), 0.5))
    with pytest.raises(ValueError, match="poisson_nll_loss: eps must be a finite number >= 0, got -1"):
        L.poisson_nll_loss(p, np.ones((4, 3)), eps=-1.0)
    with pytest.raises(ValueError, match="hinge_embedding_loss: margin must be a finite number, got inf"):
        L.hinge_embedding_loss(p, np.ones((4, 3)), margin=math.inf)
    with pytest.raises(ShapeError, match=r"multilabel_soft_margin_loss: weight of shape \(2,\).*\(4, 3\)"):
        L.multilabel_soft_margin_loss(p, np.ones((4, 3)), weight=np.ones(2))
    with pytest.raises(ValueError, match="kl_div: target must hold probabilities >= 0"):
        L.kl_div(p, -np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"kl_div: reduction must be one of \('mean', 'batchmean'"):
        L.kl_div(p, np.ones((4, 3)), reduction="avg")
    with pytest.raises(ShapeError, match="cosine_similarity_loss: y_pred must have a class"):
        L.cosine_similarity_loss(lamina.tensor(1.0), 1.0)


# -- learning ------------------------------------------------------------------------------------
def test_poisson_regression_recovers_the_weights():
    """Counts drawn with rate exp(x . w): a Dense(1) giving log-rates, trained with poisson_nll_loss,
    finds w (and a bias near 0)."""
    rng = np.random.default_rng(0)
    w = np.array([0.6, -0.4, 0.3])
    x = rng.standard_normal((2000, 3)).astype(np.float32)
    y = rng.poisson(np.exp(x @ w))[:, None].astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    trainer = Trainer(model, L.poisson_nll_loss, optim.Adam(model.parameters(), lr=0.02), metrics=(), verbose=0)
    before = trainer.evaluate((x, y))["loss"]
    trainer.fit((x, y), epochs=8, batch_size=100, seed=0)
    learned = model[0].weight.numpy()[:, 0]
    assert np.abs(learned - w).max() < 0.1, learned
    assert abs(model[0].bias.numpy()[0]) < 0.1
    assert trainer.evaluate((x, y))["loss"] < before


def test_trainer_takes_the_new_losses_by_name():
    from lamina import nn, optim
    from lamina.train import Trainer
    from lamina.train.trainer import LOSSES

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    targets = {
        "poisson_nll": rng.poisson(2.0, (32, 1)).astype(np.float32),
        "log_cosh": rng.standard_normal((32, 1)).astype(np.float32),
        "squared_hinge": rng.choice([-1.0, 1.0], (32, 1)).astype(np.float32),
        "msle": rng.uniform(0, 3, (32, 1)).astype(np.float32),
        "mape": rng.uniform(1, 3, (32, 1)).astype(np.float32),
    }
    for name, y in targets.items():
        lamina.manual_seed(0)
        model = nn.Sequential(nn.Dense(1, activation="softplus"))
        trainer = Trainer(model, name, optim.SGD(model, lr=0.01), verbose=0)
        reported = trainer.evaluate((x, y))["loss"]
        direct = LOSSES[name](model(x), y).item()
        assert np.isclose(reported, direct, rtol=1e-5), (name, reported, direct)
