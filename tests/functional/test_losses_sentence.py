"""Sentence-embedding losses against torch re-implementations of sentence-transformers' definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina.errors import ShapeError
from lamina.functional import (
    angle_loss,
    contrastive_loss,
    cos_sim,
    cosent_loss,
    cosine_similarity_mse_loss,
    dot_score,
    matryoshka_loss,
    multiple_negatives_ranking_loss,
    multiple_negatives_symmetric_ranking_loss,
    online_contrastive_loss,
    sentence_contrastive_loss,
    sentence_triplet_loss,
)

N, D = 5, 6
LABELS = np.array([0.9, 0.1, 0.5, 0.3, 0.7])
SAME = np.array([1.0, 0.0, 1.0, 0.0, 0.0])


def torch_cos_sim(a, b):
    return TF.normalize(a, p=2, dim=1) @ TF.normalize(b, p=2, dim=1).T


def torch_mnrl(anchors, positives, *negatives, scale=20.0, symmetric=False):
    candidates = torch.cat([positives, *negatives])
    scores = torch_cos_sim(anchors, candidates) * scale
    labels = torch.arange(len(anchors))
    forward = TF.cross_entropy(scores, labels)
    if not symmetric:
        return forward
    return (forward + TF.cross_entropy(scores[:, :len(positives)].t(), labels)) / 2


def torch_pairwise_cos(a, b):
    return (TF.normalize(a, p=2, dim=1) * TF.normalize(b, p=2, dim=1)).sum(dim=-1)


def torch_angle_sim(x, y):
    a, b = torch.chunk(x, 2, dim=1)
    c, d = torch.chunk(y, 2, dim=1)
    z = torch.sum(c**2 + d**2, dim=1, keepdim=True)
    re, im = (a * c + b * d) / z, (b * c - a * d) / z
    dz = torch.sum(a**2 + b**2, dim=1, keepdim=True) ** 0.5
    dw = torch.sum(c**2 + d**2, dim=1, keepdim=True) ** 0.5
    re, im = re / (dz / dw), im / (dz / dw)
    return torch.abs(torch.sum(torch.cat((re, im), dim=1), dim=1))


def torch_cosent(u, v, labels, similarity=torch_pairwise_cos, scale=20.0):
    scores = similarity(u, v) * scale
    scores = scores[:, None] - scores[None, :]
    below = (labels[:, None] < labels[None, :]).to(scores.dtype)
    scores = scores - (1 - below) * 1e12
    return torch.logsumexp(torch.cat((torch.zeros(1, dtype=scores.dtype), scores.view(-1))), dim=0)


def torch_cosine_distance(u, v):
    return 1 - TF.cosine_similarity(u, v)


def torch_contrastive(u, v, labels, margin=0.5):
    d = torch_cosine_distance(u, v)
    return (0.5 * (labels * d.pow(2) + (1 - labels) * TF.relu(margin - d).pow(2))).mean()


def torch_online_contrastive(u, v, labels, margin=0.5):
    d = torch_cosine_distance(u, v)
    negs, poss = d[labels == 0], d[labels == 1]
    negative_pairs = negs[negs < (poss.max() if len(poss) > 1 else negs.mean())]
    positive_pairs = poss[poss > (negs.min() if len(negs) > 1 else poss.mean())]
    return positive_pairs.pow(2).sum() + TF.relu(margin - negative_pairs).pow(2).sum()


def torch_triplet(a, p, n, distance="euclidean", margin=5.0):
    measure = (lambda x, y: TF.pairwise_distance(x, y, p=2)) if distance == "euclidean" else torch_cosine_distance
    return TF.relu(measure(a, p) - measure(a, n) + margin).mean()


def test_similarity_matrices_match_torch():
    a, b = randn(3, D, seed=1), randn(4, D, seed=2)
    compare_with_torch(cos_sim, torch_cos_sim, a, b, dtype=np.float64)
    compare_with_torch(dot_score, lambda x, y: x @ y.T, a, b, dtype=np.float64)


@pytest.mark.parametrize("negatives", [0, 1, 2])
@pytest.mark.parametrize("symmetric", [False, True])
def test_multiple_negatives_ranking_loss(negatives, symmetric):
    arrays = [randn(N, D, seed=s) for s in range(2 + negatives)]
    ours = multiple_negatives_symmetric_ranking_loss if symmetric else multiple_negatives_ranking_loss
    compare_with_torch(lambda a, p, *n: ours(a, p, list(n) or None),
                       lambda a, p, *n: torch_mnrl(a, p, *n, symmetric=symmetric), *arrays, dtype=np.float64)
    assert check_gradients(lambda a, p, *n: ours(a, p, list(n) or None, scale=3.0), *arrays)


def test_hard_negatives_may_have_their_own_count():
    a, p, n = randn(N, D, seed=1), randn(N, D, seed=2), randn(2, D, seed=3)
    compare_with_torch(lambda a, p, n: multiple_negatives_ranking_loss(a, p, [n]), torch_mnrl, a, p, n,
                       dtype=np.float64)


@pytest.mark.parametrize("ours, similarity", [(cosent_loss, torch_pairwise_cos), (angle_loss, torch_angle_sim)])
def test_cosent_and_angle(ours, similarity):
    u, v = randn(N, D, seed=3), randn(N, D, seed=4)
    labels = torch.tensor(LABELS)
    compare_with_torch(lambda u, v: ours(u, v, LABELS), lambda u, v: torch_cosent(u, v, labels, similarity),
                       u, v, dtype=np.float64)
    assert check_gradients(lambda u, v: ours(u, v, LABELS, scale=2.0), u, v)


def test_angle_pads_an_odd_width_with_a_zero():
    u, v = randn(N, 5, seed=5), randn(N, 5, seed=6)
    padded = [np.pad(x, ((0, 0), (0, 1))) for x in (u, v)]
    odd = angle_loss(lamina.tensor(u, dtype=np.float64), lamina.tensor(v, dtype=np.float64), LABELS)
    even = angle_loss(*(lamina.tensor(x, dtype=np.float64) for x in padded), LABELS)
    np.testing.assert_allclose(odd.numpy(), even.numpy(), rtol=1e-12)


def test_contrastive_losses():
    u, v = randn(N, D, seed=7), randn(N, D, seed=8)
    same = torch.tensor(SAME)
    compare_with_torch(lambda u, v: sentence_contrastive_loss(u, v, SAME),
                       lambda u, v: torch_contrastive(u, v, same), u, v, dtype=np.float64)
    compare_with_torch(lambda u, v: online_contrastive_loss(u, v, SAME, margin=1.2),
                       lambda u, v: torch_online_contrastive(u, v, same, margin=1.2), u, v, dtype=np.float64)
    assert check_gradients(lambda u, v: sentence_contrastive_loss(u, v, SAME), u, v)
    assert check_gradients(lambda u, v: online_contrastive_loss(u, v, SAME, margin=1.2), u, v)


def test_euclidean_contrastive_is_the_existing_loss():
    u, v = randn(N, D, seed=9), randn(N, D, seed=10)
    ours = sentence_contrastive_loss(u, v + 1e-6, SAME, distance="euclidean", margin=3.0)
    existing = contrastive_loss(u, v, SAME, margin=3.0)
    np.testing.assert_allclose(ours.numpy(), existing.numpy(), rtol=1e-5)


@pytest.mark.parametrize("distance, margin", [("euclidean", 5.0), ("cosine", 0.8)])
def test_triplet_loss(distance, margin):
    a, p, n = randn(N, D, seed=11), randn(N, D, seed=12), randn(N, D, seed=13, scale=0.8)
    compare_with_torch(lambda a, p, n: sentence_triplet_loss(a, p, n, distance=distance, margin=margin),
                       lambda a, p, n: torch_triplet(a, p, n, distance, margin), a, p, n, dtype=np.float64)
    assert check_gradients(lambda a, p, n: sentence_triplet_loss(a, p, n, distance=distance, margin=margin), a, p, n)


def test_cosine_similarity_mse_and_matryoshka():
    u, v = randn(N, D, seed=14), randn(N, D, seed=15)
    labels = torch.tensor(LABELS)
    compare_with_torch(lambda u, v: cosine_similarity_mse_loss(u, v, LABELS),
                       lambda u, v: TF.mse_loss(TF.cosine_similarity(u, v), labels), u, v, dtype=np.float64)
    dims, weights = [6, 4, 2], [1.0, 0.5, 0.25]
    compare_with_torch(
        lambda u, v: matryoshka_loss(cosent_loss, [u, v], dims, weights, labels=LABELS),
        lambda u, v: sum(w * torch_cosent(u[:, :m], v[:, :m], labels) for m, w in zip(dims, weights)),
        u, v, dtype=np.float64)
    assert check_gradients(lambda u, v: matryoshka_loss(multiple_negatives_ranking_loss, [u, v], [3, 6]), u, v)


def test_clear_errors():
    a = randn(N, D)
    with pytest.raises(ShapeError, match="multiple_negatives_ranking_loss: anchors has shape"):
        multiple_negatives_ranking_loss(a, randn(N + 1, D))
    with pytest.raises(ShapeError, match="labels must have shape"):
        cosent_loss(a, a, LABELS[:3])
    with pytest.raises(ValueError, match="distance must be one of 'cosine', 'euclidean', 'manhattan'"):
        sentence_contrastive_loss(a, a, SAME, distance="hamming")
    with pytest.raises(ValueError, match="each dim must be an int in"):
        matryoshka_loss(cosent_loss, [a, a], [D + 1], labels=LABELS)
