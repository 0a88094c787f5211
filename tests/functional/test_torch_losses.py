"""PyTorch-named losses (functional.torch_losses): values and gradients against torch in both
precisions, gradient checks, torch's reductions on inputs with more than one axis, the option
combinations of cross_entropy and binary_cross_entropy_with_logits, and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina.functional as F
from helpers import compare_with_torch, op_table_tests, positive, randn
from lamina.errors import ShapeError
from lamina.functional import torch_losses as T


def labels(*shape, classes=5, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def probabilities(*shape, seed=0):
    p = np.random.default_rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


def signs(*shape, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


def channels_first(x):
    """lamina's (N, ..., C) as torch's (N, C, ...)."""
    return x.movedim(-1, 1).contiguous()


def with_constant(fn, constant, **options):
    """``fn(x, constant)`` or ``fn(x1, x2, constant)``: a target without a gradient (torch gives none)."""
    return lambda *xs: fn(*xs, constant, **options)


BCE_TARGET, SIGNS, LABEL_SIGNS = positive(3, 4, seed=1, low=0, high=1), signs(3, 4), signs(3, 4, seed=2)


def none(fn):
    return lambda *a: fn(*a, reduction="none")


def summed(fn):
    return lambda *a: fn(*a, reduction="sum")


CASES = {
    "cross_entropy": (F.cross_entropy, TF.cross_entropy, [randn(4, 5), labels(4)]),
    "cross_entropy_sequences_none": (none(F.cross_entropy), lambda x, y: TF.cross_entropy(
        channels_first(x), y, reduction="none"), [randn(2, 3, 5), labels(2, 3)]),
    "cross_entropy_probabilities": (F.cross_entropy, TF.cross_entropy, [randn(4, 5), probabilities(4, 5)]),
    "nll_loss": (T.nll_loss, TF.nll_loss, [randn(4, 5), labels(4)]),
    "nll_loss_images_none": (lambda x, y: T.nll_loss(x, y, reduction="none", ignore_index=1),
                             lambda x, y: TF.nll_loss(channels_first(x), y, reduction="none", ignore_index=1),
                             [randn(2, 3, 2, 5), labels(2, 3, 2)]),
    "multi_margin_loss": (F.multi_margin_loss, TF.multi_margin_loss, [randn(4, 5), labels(4)]),
    "multi_margin_loss_p2_weight": (
        lambda x, y: F.multi_margin_loss(x, y, p=2, margin=0.7, weight=positive(5, seed=3)),
        lambda x, y: TF.multi_margin_loss(x, y, p=2, margin=0.7, weight=torch.tensor(positive(5, seed=3),
                                                                                      dtype=x.dtype)),
        [randn(4, 5), labels(4)]),
    "mse_loss_none": (none(F.mse_loss), none(TF.mse_loss), [randn(3, 4), randn(3, 4, seed=1)]),
    "mse_loss_sum": (summed(F.mse_loss), summed(TF.mse_loss), [randn(3, 4), randn(3, 4, seed=1)]),
    "l1_loss_sum": (summed(F.l1_loss), summed(TF.l1_loss), [randn(3, 4), randn(3, 4, seed=1)]),
    "smooth_l1_loss_none": (lambda x, y: F.smooth_l1_loss(x, y, reduction="none", beta=0.5),
                            lambda x, y: TF.smooth_l1_loss(x, y, reduction="none", beta=0.5),
                            [randn(3, 4), randn(3, 4, seed=1)]),
    "huber_loss_sum": (lambda x, y: F.huber_loss(x, y, reduction="sum", delta=0.5),
                       lambda x, y: TF.huber_loss(x, y, reduction="sum", delta=0.5),
                       [randn(3, 4), randn(3, 4, seed=1)]),
    "binary_cross_entropy": (with_constant(T.binary_cross_entropy, BCE_TARGET),
                             lambda x: TF.binary_cross_entropy(x, torch.tensor(BCE_TARGET, dtype=x.dtype)),
                             [positive(3, 4, low=0.1, high=0.9)]),
    "binary_cross_entropy_with_logits_sum": (
        with_constant(F.binary_cross_entropy_with_logits, BCE_TARGET, reduction="sum"),
        lambda x: TF.binary_cross_entropy_with_logits(x, torch.tensor(BCE_TARGET, dtype=x.dtype), reduction="sum"),
        [randn(3, 4)]),
    "kl_div_none": (lambda x, y: T.kl_div(x, y, reduction="none"), lambda x, y: TF.kl_div(x, y, reduction="none"),
                    [randn(3, 4), probabilities(3, 4)]),
    "kl_div_batchmean_log_target": (lambda x, y: T.kl_div(x, y, reduction="batchmean", log_target=True),
                                    lambda x, y: TF.kl_div(x, y, reduction="batchmean", log_target=True),
                                    [randn(3, 4), randn(3, 4, seed=1)]),
    "poisson_nll_loss_sum": (summed(T.poisson_nll_loss), summed(TF.poisson_nll_loss),
                             [randn(3, 4), positive(3, 4, low=0, high=4)]),
    "gaussian_nll_loss_none": (lambda x, y, v: T.gaussian_nll_loss(x, y, v, reduction="none"),
                               lambda x, y, v: TF.gaussian_nll_loss(x, y, v, reduction="none"),
                               [randn(3, 4), randn(3, 4, seed=1), positive(3, 1)]),
    "soft_margin_loss_sum": (with_constant(T.soft_margin_loss, SIGNS, reduction="sum"),
                             lambda x: TF.soft_margin_loss(x, torch.tensor(SIGNS, dtype=x.dtype), reduction="sum"),
                             [randn(3, 4)]),
    "hinge_embedding_loss_none": (none(T.hinge_embedding_loss), none(TF.hinge_embedding_loss),
                                  [randn(3, 4), signs(3, 4)]),
    "margin_ranking_loss_none": (
        with_constant(T.margin_ranking_loss, LABEL_SIGNS, margin=0.3, reduction="none"),
        lambda a, b: TF.margin_ranking_loss(a, b, torch.tensor(LABEL_SIGNS, dtype=a.dtype), margin=0.3,
                                            reduction="none"),
        [randn(3, 4), randn(3, 4, seed=1)]),
    "triplet_margin_with_distance_loss": (F.triplet_margin_with_distance_loss, TF.triplet_margin_with_distance_loss,
                                          [randn(4, 3), randn(4, 3, seed=1), randn(4, 3, seed=2)]),
    "triplet_margin_with_distance_loss_swap_cosine": (
        lambda a, p, n: F.triplet_margin_with_distance_loss(
            a, p, n, distance_function=lambda u, v: 1 - F.cosine_similarity(u, v), swap=True, reduction="none"),
        lambda a, p, n: TF.triplet_margin_with_distance_loss(
            a, p, n, distance_function=lambda u, v: 1 - TF.cosine_similarity(u, v), swap=True, reduction="none"),
        [randn(4, 3), randn(4, 3, seed=1), randn(4, 3, seed=2)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy_options_match_torch(targets, weighted, ignore_index, label_smoothing, reduction):
    if targets == "probabilities" and ignore_index != -100:
        pytest.skip("torch refuses ignore_index with probabilities (see test_errors_name_the_function)")
    target = labels(6, seed=4) if targets == "indices" else probabilities(6, 5, seed=4)
    weight = positive(5, seed=5) if weighted else None
    options = {"ignore_index": ignore_index, "label_smoothing": label_smoothing, "reduction": reduction}
    compare_with_torch(
        lambda x, y: F.cross_entropy(x, y, weight=weight, **options),
        lambda x, y: TF.cross_entropy(x, y, weight=None if weight is None else torch.tensor(weight), **options),
        randn(6, 5), target, dtype=np.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_weight_and_ignore_index_match_torch(weighted, reduction):
    weight = positive(5, seed=5) if weighted else None
    compare_with_torch(
        lambda x, y: T.nll_loss(x, y, weight=weight, ignore_index=3, reduction=reduction),
        lambda x, y: TF.nll_loss(x, y, weight=None if weight is None else torch.tensor(weight), ignore_index=3,
                                 reduction=reduction),
        randn(7, 5), labels(7, seed=2), dtype=np.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weighted", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_with_logits_options_match_torch(weighted, pos_weighted, reduction):
    weight = positive(1, 4, seed=6) if weighted else None
    pos_weight = positive(4, seed=7) if pos_weighted else None

    def as_torch(a):
        return None if a is None else torch.tensor(a)

    compare_with_torch(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, weight=weight, pos_weight=pos_weight,
                                                        reduction=reduction),
        lambda x, y: TF.binary_cross_entropy_with_logits(x, y, weight=as_torch(weight), pos_weight=as_torch(pos_weight),
                                                         reduction=reduction),
        randn(3, 4) * 3, positive(3, 4, low=0, high=1), dtype=np.float64, grad=[True, False])


def test_pos_weight_gradcheck():
    from helpers import check_gradients

    assert check_gradients(lambda x: F.binary_cross_entropy_with_logits(x, positive(3, 4, low=0, high=1),
                                                                        pos_weight=positive(4)), randn(3, 4))


def test_unbatched_cross_entropy_gives_a_scalar_per_row():
    compare_with_torch(none(F.cross_entropy), none(TF.cross_entropy), randn(5), np.array(3), dtype=np.float64)


@pytest.mark.parametrize("call, message", [
    (lambda: F.cross_entropy(randn(4, 5), labels(4), reduction="avg"), "cross_entropy: reduction must be"),
    (lambda: F.cross_entropy(randn(4, 5), labels(3)), r"cross_entropy: target must be class indices"),
    (lambda: F.mse_loss(randn(4, 5), randn(5, 4)), r"mse_loss: input has shape \(4, 5\) but target has shape"),
    (lambda: F.l1_loss(randn(4), randn(4), reduction="total"), "l1_loss: reduction must be"),
    (lambda: F.binary_cross_entropy_with_logits(randn(3, 4), randn(3, 4), pos_weight=np.ones(3)),
     r"binary_cross_entropy_with_logits: pos_weight of shape \(3,\)"),
    (lambda: F.cross_entropy(randn(4, 5), labels(4), weight=np.ones(4)),
     r"cross_entropy: weight must hold one value per class \(5\)"),
    (lambda: F.multi_margin_loss(randn(4, 5), labels(4), p=3), "multi_margin_loss: p must be 1 or 2"),
    (lambda: F.cross_entropy(randn(4, 5), probabilities(4, 5), ignore_index=1),
     "cross_entropy: ignore_index applies to class indices only"),
])
def test_errors_name_the_function(call, message):
    with pytest.raises((ValueError, ShapeError), match=message):
        call()


@pytest.mark.parametrize("name", ["binary_cross_entropy", "gaussian_nll_loss", "hinge_embedding_loss", "kl_div",
                                  "margin_ranking_loss", "nll_loss", "poisson_nll_loss", "soft_margin_loss"])
def test_lamina_nn_functional_gives_torchs_reduction_for_names_lamina_has_too(name):
    import lamina.nn.functional as NF

    assert getattr(NF, name) is getattr(T, name)
    assert getattr(F, name) is not getattr(T, name)        # lamina.functional keeps lamina's per-sample losses


def test_lamina_nn_functional_nll_loss_is_per_value_as_torchs():
    import lamina.nn.functional as NF

    x, y = randn(2, 3, 4), np.random.default_rng(0).integers(0, 4, size=(2, 3))
    compare_with_torch(lambda a: NF.nll_loss(a, y, reduction="none"),
                       lambda a: TF.nll_loss(a.permute(0, 2, 1), torch.tensor(y), reduction="none"), x)
