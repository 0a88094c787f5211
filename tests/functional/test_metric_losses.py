"""triplet_margin_loss, cosine_embedding_loss, margin_ranking_loss and contrastive_loss:
values and gradients against PyTorch (contrastive_loss against its formula written in torch
ops), float64 gradient checks, ties at the kinks, argument errors and training an embedding.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.functional.losses_metric import (
    contrastive_loss,
    cosine_embedding_loss,
    margin_ranking_loss,
    triplet_margin_loss,
)

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def signs(*shape, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


def pair_labels(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 2, shape).astype(np.float64)


def torch_contrastive(x1, x2, same, margin, reduction):
    """Hadsell et al.'s loss with s = 1 for similar pairs, in torch ops."""
    distance = (x1 - x2).pow(2).sum(dim=-1).sqrt()
    losses = 0.5 * (same * distance ** 2 + (1 - same) * torch.clamp(margin - distance, min=0) ** 2)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


def embeddings(n=6, d=4, seed=0):
    return [randn(n, d, seed=seed), randn(n, d, seed=seed + 1), randn(n, d, seed=seed + 2)]


def cases(reduction):
    """name: (lamina function, torch function, inputs); labels are the last input (no gradient)."""
    a, p, n = embeddings()
    triplet = {}
    for norm in [1, 2, 3]:
        for swap in [False, True]:
            options = dict(margin=0.05 if swap else 0.25, p=norm, swap=swap, reduction=reduction)
            triplet[f"triplet_p{norm}_swap{swap}"] = (functools.partial(triplet_margin_loss, **options),
                                                      functools.partial(TF.triplet_margin_loss, **options), [a, p, n])
    # anchor == positive: d(a, n) = d(p, n) ties in the swap's minimum
    options = dict(margin=2.5, swap=True, reduction=reduction)
    triplet["triplet_swap_tie"] = (functools.partial(triplet_margin_loss, **options),
                                   functools.partial(TF.triplet_margin_loss, **options), [a, a.copy(), n])
    options = dict(margin=1.5, reduction=reduction)
    triplet["triplet_unbatched"] = (functools.partial(triplet_margin_loss, **options),
                                    functools.partial(TF.triplet_margin_loss, **options), [a[1], p[1], n[1]])
    y = signs(6, seed=3)
    others = {}
    for cosine_margin, ranking_margin, contrastive_margin in [(0.0, 0.0, 1.5), (0.3, 0.3, 2.0), (-0.4, 1.0, 2.3)]:
        options = dict(margin=cosine_margin, reduction=reduction)
        others[f"cosine_margin{cosine_margin}"] = (functools.partial(cosine_embedding_loss, **options),
                                                   functools.partial(TF.cosine_embedding_loss, **options), [a, p, y])
        options = dict(margin=ranking_margin, reduction=reduction)
        others[f"ranking_margin{ranking_margin}"] = (functools.partial(margin_ranking_loss, **options),
                                                     functools.partial(TF.margin_ranking_loss, **options),
                                                     [a[:, 0], p[:, 0], y])
        others[f"contrastive_margin{contrastive_margin}"] = (
            functools.partial(contrastive_loss, margin=contrastive_margin, reduction=reduction),
            functools.partial(torch_contrastive, margin=contrastive_margin, reduction=reduction),
            [a, p, np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])])
    # hinges exactly at 0: x1 - x2 = margin for y = 1, cos = margin for y = -1
    others["ranking_kink"] = (functools.partial(margin_ranking_loss, margin=0.5, reduction=reduction),
                              functools.partial(TF.margin_ranking_loss, margin=0.5, reduction=reduction),
                              [np.array([1.5, 0.0, 2.0]), np.array([1.0, 0.5, 0.0]), np.array([-1.0, -1.0, 1.0])])
    others["cosine_kink"] = (functools.partial(cosine_embedding_loss, margin=0.0, reduction=reduction),
                             functools.partial(TF.cosine_embedding_loss, margin=0.0, reduction=reduction),
                             [np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 2.0], [1.0, -1.0]]),
                              np.array([-1.0, -1.0])])
    return {**triplet, **others}


ALL_CASES = {f"{name}-{reduction}": case for reduction in REDUCTIONS for name, case in cases(reduction).items()}


def is_triplet(name):
    return name.startswith("triplet")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ALL_CASES))
def test_matches_torch(name, dtype):
    ours, theirs, inputs = ALL_CASES[name]
    grads = [True] * 3 if is_triplet(name) else [True, True, False]
    compare_with_torch(ours, theirs, *inputs, dtype=dtype, grad=grads)


@pytest.mark.parametrize("name", [n for n in ALL_CASES if "kink" not in n and "tie" not in n])
def test_gradcheck(name):
    ours, _, inputs = ALL_CASES[name]
    grads = [True] * 3 if is_triplet(name) else [True, True, False]
    assert check_gradients(ours, *inputs, grad=grads)


@pytest.mark.parametrize("name", [n for n in cases("none") if "kink" not in n])
def test_cases_exercise_both_sides_of_each_hinge(name):
    """The inputs give active and inactive hinges, so the comparisons test both sides."""
    ours, _, inputs = cases("none")[name]
    values = ours(*inputs).numpy()
    if values.ndim == 0:
        assert values > 0
    else:
        assert np.any(values == 0) and np.any(values > 0), values


def test_rows_of_a_sample_are_averaged():
    """With two batch axes a sample's loss is the mean of its rows' losses."""
    x1, x2 = randn(2, 3, 4, seed=5), randn(2, 3, 4, seed=6)
    same = pair_labels(2, 3, seed=7)
    per_sample = contrastive_loss(x1, x2, same, margin=2.0, reduction="none").numpy()
    rows = contrastive_loss(x1.reshape(6, 4), x2.reshape(6, 4), same.reshape(6), margin=2.0, reduction="none")
    np.testing.assert_allclose(per_sample, rows.numpy().reshape(2, 3).mean(axis=1), rtol=1e-6)


def test_contrastive_pair_at_zero_distance_has_no_push():
    """d = 0 for a dissimilar pair: loss margin^2 / 2, and the undefined direction gives 0."""
    x = randn(2, 3, seed=8)
    x1 = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    x2 = lamina.tensor(x.copy(), requires_grad=True, dtype=np.float64)
    loss = contrastive_loss(x1, x2, [0, 1], margin=2.0, reduction="none")
    loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [2.0, 0.0])
    assert np.all(x1.grad == 0) and np.all(x2.grad == 0)


def test_boolean_pair_labels_are_accepted():
    a, p, _ = embeddings()
    same = pair_labels(6, seed=9)
    assert float(contrastive_loss(a, p, same.astype(bool)).numpy()) == float(contrastive_loss(a, p, same).numpy())


# -- errors -----------------------------------------------------------------------------------


A, P, N = embeddings()
Y = signs(6, seed=3)


@pytest.mark.parametrize("call, error, message", [
    (lambda: triplet_margin_loss(A, P, N[:5]), ShapeError, r"triplet_margin_loss: anchor has shape \(6, 4\) but "
                                                           r"negative has shape \(5, 4\)"),
    (lambda: triplet_margin_loss(A, P, N, p=0.5), ValueError, r"triplet_margin_loss: p must be .* >= 1"),
    (lambda: triplet_margin_loss(A, P, N, margin=-1.0), ValueError, r"margin must be a finite number > 0"),
    (lambda: triplet_margin_loss(A, P, N, eps=-1e-6), ValueError, r"eps must be a finite number >= 0"),
    (lambda: triplet_margin_loss(np.float64(1.0), 1.0, 1.0), ShapeError, r"must have a feature axis"),
    (lambda: cosine_embedding_loss(A, P, Y[:5]), ShapeError, r"cosine_embedding_loss: y must have shape \(6,\)"),
    (lambda: cosine_embedding_loss(A, P[:, :3], Y), ShapeError, r"x1 has shape \(6, 4\) but x2 has shape \(6, 3\)"),
    (lambda: cosine_embedding_loss(A, P, np.where(Y > 0, 1.0, 0.0)), ValueError,
     r"cosine_embedding_loss: y must hold only 1 or -1, got \[0.0\]"),
    (lambda: cosine_embedding_loss(A, P, Y, margin=1.5), ValueError, r"margin must be a finite number in \[-1, 1\]"),
    (lambda: margin_ranking_loss(A[:, 0], P[:3, 0], Y), ShapeError, r"margin_ranking_loss: x1 has shape \(6,\) but "
                                                                    r"x2 has shape \(3,\)"),
    (lambda: margin_ranking_loss(A[:, 0], P[:, 0], 2 * Y), ValueError, r"y must hold only 1 or -1, got \[-2.0, 2.0\]"),
    (lambda: margin_ranking_loss(A[:, 0], P[:, 0], Y, margin=float("nan")), ValueError, r"margin must be a finite"),
    (lambda: contrastive_loss(A, P, Y), ValueError, r"contrastive_loss: same must hold only 0 or 1, got \[-1.0\]"),
    (lambda: contrastive_loss(A, P, np.ones(6), margin=0.0), ValueError, r"margin must be a finite number > 0"),
    (lambda: contrastive_loss(A, P, np.ones(6), reduction="avg"), ValueError, r"reduction must be one of"),
])
def test_bad_arguments_are_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


# -- learning ---------------------------------------------------------------------------------


def clusters(seed):
    """Three classes in 6-D, each a noisy copy of its own random centre."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 6)) * 1.5
    labels = np.repeat(np.arange(3), 20)
    return (centres[labels] + 0.6 * rng.standard_normal((60, 6))).astype(np.float32), labels


def nearest_centroid_accuracy(features, labels):
    """Each point classified by the nearest class mean of the other points' embeddings."""
    correct = 0
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        means = np.stack([features[others & (labels == k)].mean(axis=0) for k in range(3)])
        correct += int(np.argmin(((means - features[i]) ** 2).sum(axis=1)) == labels[i])
    return correct / len(labels)


def test_triplet_loss_trains_an_embedding():
    x, labels = clusters(seed=0)
    rng = np.random.default_rng(1)
    lamina.manual_seed(0)
    model = nn.Sequential([nn.Dense(16, activation="relu"), nn.Dense(2)])
    opt = optim.Adam(model, lr=0.02)
    anchors = np.arange(60)
    positives = np.array([rng.choice(np.flatnonzero((labels == labels[i]) & (anchors != i))) for i in anchors])
    negatives = np.array([rng.choice(np.flatnonzero(labels != labels[i])) for i in anchors])
    inputs = lamina.tensor(x)

    def loss():
        out = model(inputs)
        return triplet_margin_loss(out[anchors], out[positives], out[negatives], margin=1.0)

    first = float(loss().numpy())
    with lamina.no_grad():
        untrained = nearest_centroid_accuracy(model(inputs).numpy(), labels)
    for _ in range(100):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with lamina.no_grad():
        final = float(loss().numpy())
        embedded = model(inputs).numpy()
    assert final < 0.25 * first, f"triplet loss only fell from {first:.3f} to {final:.3f}"
    assert untrained < 0.8 and nearest_centroid_accuracy(embedded, labels) >= 0.95
