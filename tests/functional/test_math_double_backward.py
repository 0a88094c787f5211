"""Differentiable backwards (``grad(..., create_graph=True)``) of the element-wise math,
reductions, indexing ops, smooth and gated activations and the single-node losses: each
against PyTorch's double backward and against centred differences of its gradient.

Ops linear in their input have a constant gradient, so they are squared (before or after)
to give the second derivatives something to check; so are the piecewise-linear losses,
whose gradient is otherwise dJ/dL times a constant pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_second_derivatives, compare_double_backward_with_torch, nonzero, positive, randn
from lamina.autograd import differentiable_ops, grad


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def squared(fn):
    """fn(...) ** 2, for lamina and torch alike."""
    return lambda *xs: fn(*xs) ** 2


def row_means(values, reduction="mean"):
    """Torch reference of lamina's reductions: the mean over each sample's values, then reduced."""
    if values.ndim > 1:
        values = values.mean(dim=tuple(range(1, values.ndim)))
    return {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]


def torch_prod(x, dims):
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d)
    return x


# -- inputs and labels ---------------------------------------------------------------------

GATHER_COLS = np.array([[3, 3, 0], [1, 0, 1], [2, 2, 2]])          # for (3, 4) along axis 1
SELECT = np.array([2, 0, 2, 2])
SCATTER_ROWS = np.array([[0, 2, 2, 0], [2, 2, 1, 0]])               # into (3, 4) along axis 0
SCATTER_SHORT = np.array([[1, 1], [0, 1]])                          # covers part of a (3, 4) src
MASK = np.random.default_rng(2).random((3, 4)) > 0.5
LABELS = np.array([2, 0, 3])
SIGNS = np.array([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, -1.0, 1.0]])
BITS = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
ROW_SIGNS = np.array([1.0, -1.0, -1.0, 1.0])
SAME = np.array([1.0, 0.0, 1.0, 0.0])
# away from every kink: +-3 (hard sigmoid and swish), +-1 (hardtanh), +-0.5 (shrinks), 0.1 (threshold)
OFF_KINKS = np.array([[-4.2, -2.6, -1.4, -0.8], [-0.3, 0.2, 0.7, 1.3], [2.2, 2.8, 3.4, 0.05]])
# multilabel_margin rows: T = {0, 3}, T = {2} (listed twice), T = {1, 0, 2}
MARGIN_TARGETS = np.array([[0, 3, -1, 1], [2, 2, -1, 0], [1, 0, 2, -1]])
MARGIN_COUNTS = np.array([[1, 0, 0, 1], [0, 0, 2, 0], [1, 1, 1, 0]], dtype=float)


def distributions(*shape, seed=0):
    p = uniform(0.1, 1.0, *shape, seed=seed)
    return p / p.sum(axis=-1, keepdims=True)


def _t(index):
    return torch.tensor(index)


# -- torch references of the losses --------------------------------------------------------


def torch_multi_margin(s, labels=LABELS, margin=1.0):
    """(1/C) sum_(j != y) max(0, margin - s_y + s_j) per row (torch's multi_margin_loss has no double backward)."""
    picked = s.gather(-1, _t(labels)[:, None])
    terms = torch.clamp(margin - picked + s, min=0) * (1 - TF.one_hot(_t(labels), s.shape[-1]))
    return terms.sum(dim=-1).mean() / s.shape[-1]


def torch_multilabel_margin(s):
    """(1/C) sum_(j in T) sum_(i not in T) max(0, 1 - s_j + s_i) per row, with T's counts."""
    counts = torch.tensor(MARGIN_COUNTS)
    pairs = counts[:, :, None] * (counts == 0).to(s.dtype)[:, None, :]
    z = 1 - s[:, :, None] + s[:, None, :]
    return (torch.clamp(z, min=0) * pairs).sum(dim=(1, 2)).mean() / s.shape[-1]


def torch_binary_focal(x, y, gamma, alpha, from_logits):
    y = torch.tensor(y)
    p = torch.sigmoid(x) if from_logits else torch.clamp(x, 1e-7, 1 - 1e-7)
    ce = TF.binary_cross_entropy_with_logits(x, y, reduction="none") if from_logits else \
        -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    weight = alpha * y + (1 - alpha) * (1 - y)
    return (weight * (1 - p_t) ** gamma * ce).mean()


def torch_categorical_focal(x, gamma, from_logits):
    rows = TF.one_hot(_t(LABELS), x.shape[-1]).to(x.dtype)
    log_p = torch.log_softmax(x, dim=-1) if from_logits else torch.log(torch.clamp(x, 1e-7, 1 - 1e-7))
    p = log_p.exp()
    return -(rows * (1 - p) ** gamma * log_p).sum(dim=-1).mean()


def torch_contrastive(x1, x2, margin):
    distance = (x1 - x2).pow(2).sum(dim=-1).sqrt()
    same = torch.tensor(SAME)
    return (0.5 * (same * distance**2 + (1 - same) * torch.clamp(margin - distance, min=0) ** 2)).mean()


# name: (lamina function, torch function, inputs); every float input gets a gradient
CASES = {
    # element-wise math
    "sin": (F.sin, torch.sin, [randn(3, 4, scale=2.0)]),
    "cos": (F.cos, torch.cos, [randn(3, 4, scale=2.0)]),
    "tan": (F.tan, torch.tan, [uniform(-1.2, 1.2, 3, 4)]),
    "log1p": (F.log1p, torch.log1p, [uniform(-0.6, 3.0, 3, 4)]),
    "expm1": (F.expm1, torch.expm1, [randn(3, 4)]),
    "square": (F.square, torch.square, [randn(3, 4)]),
    "reciprocal": (F.reciprocal, torch.reciprocal, [nonzero(3, 4)]),
    "rsqrt": (F.rsqrt, torch.rsqrt, [positive(3, 4)]),
    "log2": (F.log2, torch.log2, [positive(3, 4, high=9.0)]),
    "log10": (F.log10, torch.log10, [positive(3, 4, high=90.0)]),
    "atan2": (F.atan2, torch.atan2, [randn(3, 4), nonzero(3, 4, seed=1)]),
    "atan2_broadcast": (F.atan2, torch.atan2, [randn(2, 1, 4), nonzero(3, 1, seed=1)]),
    "sign_floor_round": (lambda x: (F.sign(x) + F.floor(x) + F.round(x)) * x * x,
                         lambda x: (torch.sign(x) + torch.floor(x) + torch.round(x)) * x * x,
                         [np.array([[-1.7, -0.2, 0.3], [0.8, 1.2, 2.3]])]),
    # reductions
    "logsumexp_last": (lambda x: F.logsumexp(x, axis=-1), lambda x: torch.logsumexp(x, -1), [randn(3, 4)]),
    "logsumexp_axes_keepdims": (lambda x: F.logsumexp(x, axis=(0, 2), keepdims=True),
                                lambda x: torch.logsumexp(x, (0, 2), keepdim=True), [randn(2, 3, 2)]),
    "prod_axis": (lambda x: F.prod(x, axis=1), lambda x: x.prod(1), [nonzero(3, 4)]),
    "prod_all": (F.prod, torch.prod, [nonzero(2, 3)]),
    "prod_axes_with_a_zero": (lambda x: F.prod(x, axis=(0, 2)), lambda x: torch_prod(x, (0, 2)),
                              [np.array([[[1.5, -0.5], [0.0, 2.0]], [[-1.2, 0.8], [0.7, 1.1]]])]),
    "std": (lambda x: F.std(x, axis=1), lambda x: torch.std(x, 1, correction=0), [randn(3, 4)]),
    "std_ddof_keepdims": (lambda x: F.std(x, axis=(0, 2), keepdims=True, ddof=1),
                          lambda x: torch.std(x, (0, 2), keepdim=True), [randn(2, 3, 2)]),
    "norm1": (lambda x: F.norm(x, ord=1, axis=-1) ** 2, lambda x: torch.linalg.vector_norm(x, 1, dim=-1) ** 2,
              [nonzero(3, 4)]),
    "norm2": (lambda x: F.norm(x, axis=1), lambda x: torch.linalg.vector_norm(x, 2, dim=1), [randn(3, 4)]),
    "norm2_all_keepdims": (lambda x: F.norm(x, keepdims=True), lambda x: torch.linalg.vector_norm(x).reshape(1, 1),
                           [randn(3, 4)]),
    "norm_inf": (lambda x: F.norm(x, ord=np.inf, axis=0) ** 2,
                 lambda x: torch.linalg.vector_norm(x, float("inf"), dim=0) ** 2, [randn(3, 4)]),
    "cumsum": (squared(lambda x: F.cumsum(x, axis=1)), squared(lambda x: torch.cumsum(x, 1)), [randn(3, 4)]),
    "cumprod": (lambda x: F.cumprod(x, axis=-1), lambda x: torch.cumprod(x, -1), [nonzero(3, 4)]),
    "cumprod_with_zeros": (lambda x: F.cumprod(x, axis=0), lambda x: torch.cumprod(x, 0),
                           [np.array([[1.5, 0.0, -0.7], [0.0, 2.0, 1.1], [-0.9, 0.6, 0.0], [1.3, -1.4, 0.8]])]),
    # indexing
    "gather": (squared(lambda x: F.gather(x, 1, GATHER_COLS)), squared(lambda x: torch.gather(x, 1, _t(GATHER_COLS))),
               [randn(3, 4)]),
    "index_select": (squared(lambda x: F.index_select(x, 0, SELECT)),
                     squared(lambda x: torch.index_select(x, 0, _t(SELECT))), [randn(3, 4)]),
    "scatter_add": (squared(lambda x, s: F.scatter_add(x, 0, SCATTER_ROWS, s)),
                    squared(lambda x, s: x.scatter_add(0, _t(SCATTER_ROWS), s)), [randn(3, 4), randn(2, 4, seed=1)]),
    "scatter_add_part_of_src": (squared(lambda x, s: F.scatter_add(x, 1, SCATTER_SHORT, s)),
                                # torch's scatter_add takes only a src the index covers
                                squared(lambda x, s: x.scatter_add(1, _t(SCATTER_SHORT), s[:2, :2])),
                                [randn(3, 4), randn(3, 4, seed=1)]),
    # times x: the upstream gradient then depends on x directly, which tests the VJP as a map of dy
    "masked_fill": (lambda x: F.masked_fill(x, MASK, -1.5) * x, lambda x: x.masked_fill(_t(MASK), -1.5) * x,
                    [randn(3, 4)]),
    "flip": (lambda x: F.flip(x, (0, -1)) * x, lambda x: torch.flip(x, (0, -1)) * x, [randn(2, 3, 2)]),
    "roll": (lambda x: F.roll(x, (1, -2), (1, 0)) * x, lambda x: torch.roll(x, (1, -2), (1, 0)) * x, [randn(3, 4)]),
    "tile": (squared(lambda x: F.tile(x, (2, 1, 3))), squared(lambda x: torch.tile(x, (2, 1, 3))), [randn(2, 3)]),
    "repeat_interleave": (squared(lambda x: F.repeat_interleave(x, 2, axis=-1)),
                          squared(lambda x: torch.repeat_interleave(x, 2, dim=-1)), [randn(2, 3)]),
    "repeat_interleave_flat": (squared(lambda x: F.repeat_interleave(x, 3)),
                               squared(lambda x: torch.repeat_interleave(x, 3)), [randn(2, 2)]),
    # smooth activations
    "gelu": (F.gelu, TF.gelu, [randn(3, 4, scale=2.0)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"),
                  [randn(3, 4, scale=2.0)]),
    "silu": (F.silu, TF.silu, [randn(3, 4, scale=2.0)]),
    "softplus": (F.softplus, TF.softplus, [randn(3, 4, scale=2.0)]),
    "softplus_beta_threshold": (lambda x: F.softplus(x, beta=2.0, threshold=1.5),
                                lambda x: TF.softplus(x, beta=2.0, threshold=1.5), [OFF_KINKS]),
    "mish": (F.mish, TF.mish, [randn(3, 4, scale=2.0)]),
    # torch's hardsigmoid has no double backward (and a float32 slope): its formula instead
    "hard_sigmoid": (lambda x: F.hard_sigmoid(x) * x, lambda x: torch.clamp(x + 3, 0, 6) / 6 * x, [OFF_KINKS]),
    "hard_swish": (F.hard_swish, TF.hardswish, [OFF_KINKS]),
    "softsign": (F.softsign, TF.softsign, [nonzero(3, 4, low=0.1, high=3.0)]),
    "log_sigmoid": (F.log_sigmoid, TF.logsigmoid, [randn(3, 4, scale=2.0)]),
    "celu": (lambda x: F.celu(x, alpha=0.7), lambda x: torch.celu(x, 0.7), [nonzero(3, 4)]),
    "softmin": (lambda x: F.softmin(x, axis=0), lambda x: TF.softmin(x, 0), [randn(3, 4)]),
    "tanhshrink": (F.tanhshrink, TF.tanhshrink, [randn(3, 4, scale=2.0)]),
    # gated activations: piecewise linear
    "hardtanh": (squared(F.hardtanh), squared(TF.hardtanh), [OFF_KINKS]),
    "hardshrink": (squared(F.hardshrink), squared(TF.hardshrink), [OFF_KINKS]),
    "softshrink": (squared(F.softshrink), squared(TF.softshrink), [OFF_KINKS]),
    "threshold": (squared(lambda x: F.threshold(x, 0.1, -2.0)), squared(lambda x: TF.threshold(x, 0.1, -2.0)),
                  [OFF_KINKS]),
    # element-wise losses, the target a tensor with a gradient too
    "mean_absolute_error": (squared(F.mean_absolute_error), squared(lambda p, y: TF.l1_loss(p, y)),
                            [randn(4, 3), randn(4, 3, seed=1)]),
    "huber": (lambda p, y: F.huber(p, y, delta=0.8), lambda p, y: TF.huber_loss(p, y, delta=0.8),
              [randn(4, 3, scale=1.5), randn(4, 3, seed=1)]),
    "smooth_l1_none": (lambda p, y: F.smooth_l1(p, y, beta=0.5, reduction="none"),
                       lambda p, y: row_means(TF.smooth_l1_loss(p, y, beta=0.5, reduction="none"), "none"),
                       [randn(4, 3, scale=1.5), randn(4, 3, seed=1)]),
    "hinge": (squared(F.hinge), squared(lambda p, y: torch.clamp(1 - y * p, min=0).mean()),
              [randn(4, 3), SIGNS]),
    "hinge_zero_one_labels": (lambda p, y: F.hinge(p, y, reduction="sum") * p.sum(),
                              lambda p, y: row_means(torch.clamp(1 - (2 * y - 1) * p, min=0), "sum") * p.sum(),
                              [randn(3, 3), BITS]),
    "kl_divergence": (F.kl_divergence, lambda q, p: TF.kl_div(q, p, reduction="batchmean"),
                      [np.log(distributions(3, 4)), distributions(3, 4, seed=1)]),
    "multiclass_hinge": (squared(lambda s: F.multiclass_hinge(s, LABELS)), squared(torch_multi_margin),
                         [randn(3, 4)]),
    "nll_loss": (squared(lambda x: F.nll_loss(x, LABELS)), squared(lambda x: TF.nll_loss(x, _t(LABELS))),
                 [randn(3, 4)]),
    "gaussian_nll": (F.gaussian_nll_loss, TF.gaussian_nll_loss,
                     [randn(4, 3), randn(4, 3, seed=1), positive(4, 3, seed=2)]),
    "gaussian_nll_var_per_row": (lambda p, y, v: F.gaussian_nll_loss(p, y, v, reduction="sum"),
                                 lambda p, y, v: TF.gaussian_nll_loss(p, y, v, reduction="sum") / 3,
                                 [randn(4, 3), randn(4, 3, seed=1), positive(4, 1, seed=2)]),
    "multilabel_margin": (squared(lambda s: F.multilabel_margin_loss(s, MARGIN_TARGETS)),
                          squared(torch_multilabel_margin), [randn(3, 4)]),
    "binary_focal_logits": (lambda x: F.binary_focal_loss(x, BITS, from_logits=True),
                            lambda x: torch_binary_focal(x, BITS, 2.0, 0.25, True), [randn(3, 3, scale=2.0)]),
    "binary_focal_probabilities": (lambda x: F.binary_focal_loss(x, BITS, gamma=1.5, alpha=0.6),
                                   lambda x: torch_binary_focal(x, BITS, 1.5, 0.6, False),
                                   [uniform(0.05, 0.95, 3, 3)]),
    "categorical_focal_logits": (lambda x: F.categorical_focal_loss(x, LABELS, from_logits=True),
                                 lambda x: torch_categorical_focal(x, 2.0, True), [randn(3, 4)]),
    "categorical_focal_probabilities": (lambda x: F.categorical_focal_loss(x, LABELS, gamma=0.5),
                                        lambda x: torch_categorical_focal(x, 0.5, False),
                                        [uniform(0.05, 0.95, 3, 4)]),
    # metric losses
    "triplet": (lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=1.5),
                lambda a, p, n: TF.triplet_margin_loss(a, p, n, margin=1.5),
                [randn(4, 3), randn(4, 3, seed=1), randn(4, 3, seed=2)]),
    "triplet_p3_swap": (lambda a, p, n: F.triplet_margin_loss(a, p, n, margin=2.0, p=3, swap=True),
                        lambda a, p, n: TF.triplet_margin_loss(a, p, n, margin=2.0, p=3, swap=True),
                        [randn(4, 3), randn(4, 3, seed=1), randn(4, 3, seed=2)]),
    "cosine_embedding": (lambda a, b: F.cosine_embedding_loss(a, b, ROW_SIGNS, margin=-0.5),
                         lambda a, b: TF.cosine_embedding_loss(a, b, _t(ROW_SIGNS), margin=-0.5),
                         [randn(4, 3), randn(4, 3, seed=1)]),
    "margin_ranking": (squared(lambda a, b: F.margin_ranking_loss(a, b, ROW_SIGNS, margin=0.3)),
                       squared(lambda a, b: TF.margin_ranking_loss(a, b, _t(ROW_SIGNS), margin=0.3)),
                       [randn(4), randn(4, seed=1)]),
    "contrastive": (lambda a, b: F.contrastive_loss(a, b, SAME, margin=2.5),
                    lambda a, b: torch_contrastive(a, b, 2.5), [randn(4, 3), randn(4, 3, seed=1)]),
}


# torch's celu takes 1/alpha in float32: its float64 gradients are off by about 1e-8
RTOL = {"celu": 1e-7}
# labels are checked on the way in, so centred differences cannot move them (torch checks their gradients)
GRADCHECKED = {"hinge": [True, False], "hinge_zero_one_labels": [True, False]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_double_backward_matches_torch(name):
    ours, theirs, inputs = CASES[name]
    compare_double_backward_with_torch(ours, theirs, *inputs, rtol=RTOL.get(name, 1e-9))


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradgradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_second_derivatives(ours, *inputs, grad=GRADCHECKED.get(name, True))


@pytest.mark.parametrize("name", ["gelu", "softplus_beta_threshold", "prod_axes_with_a_zero", "cumprod_with_zeros",
                                  "gaussian_nll", "categorical_focal_logits", "triplet_p3_swap"])
def test_create_graph_leaves_first_derivatives_unchanged(name):
    ours, _, inputs = CASES[name]
    tensors = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs]
    plain = grad(ours(*tensors).sum(), tensors)
    graphed = grad(ours(*tensors).sum(), tensors, create_graph=True)
    for p, g in zip(plain, graphed):
        assert isinstance(g, lamina.Tensor) and g.requires_grad
        np.testing.assert_allclose(g.numpy(), p, rtol=1e-13, atol=1e-15)


def test_gaussian_nll_clamped_variance_matches_torch():
    """Below eps the clamp passes the gradient through unchanged (torch clamps outside its graph),
    and the second derivatives use the clamped value."""
    var = np.array([[0.05, 1.2, 0.8], [0.5, 0.01, 2.0]])
    compare_double_backward_with_torch(lambda p, y, v: F.gaussian_nll_loss(p, y, v, eps=0.1),
                                       lambda p, y, v: TF.gaussian_nll_loss(p, y, v, eps=0.1),
                                       randn(2, 3), randn(2, 3, seed=1), var)


def test_third_derivative_of_sin_and_gelu():
    x = lamina.tensor(randn(5), requires_grad=True, dtype=np.float64)
    (d1,) = grad(F.sin(x).sum(), x, create_graph=True)
    (d2,) = grad(d1.sum(), x, create_graph=True)
    (d3,) = grad(d2.sum(), x)
    np.testing.assert_allclose(d3, -np.cos(x.numpy()), rtol=1e-12)
    xt = torch.tensor(x.numpy(), requires_grad=True)
    (g1,) = grad(F.gelu(x).sum(), x, create_graph=True)
    (g2,) = grad(g1.sum(), x, create_graph=True)
    (g3,) = grad(g2.sum(), x)
    (t1,) = torch.autograd.grad(TF.gelu(xt).sum(), xt, create_graph=True)
    (t2,) = torch.autograd.grad(t1.sum(), xt, create_graph=True)
    (t3,) = torch.autograd.grad(t2.sum(), xt)
    np.testing.assert_allclose(g3, t3.numpy(), rtol=1e-10)


def test_the_ops_are_listed_as_differentiable():
    listed = set(differentiable_ops())
    for name in ["Sin", "Atan2", "PiecewiseConstant", "LogSumExp", "Prod", "CumSum", "CumProd", "Gather",
                 "ScatterAdd", "MaskedFill", "RepeatInterleave", "GELU", "HardSigmoid", "Hardtanh", "Softmin",
                 "HuberError", "MultiMargin", "NegativeLogLikelihood", "GaussianNLL", "MultilabelMargin",
                 "BinaryFocal", "CategoricalFocal", "TripletMargin", "CosineEmbedding", "MarginRanking",
                 "Contrastive"]:
        assert name in listed, name
