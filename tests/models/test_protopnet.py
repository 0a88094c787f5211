"""ProtoPNet-lite: distances, similarity, cluster and separation costs and the whole head against
torch rewrites (float64, values and gradients), the class-connection start, push onto exact
training patches, explanations, a short training run on three digits, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import lamina
from helpers import assert_close, check_gradients
from lamina.errors import ShapeError
from lamina.models import (
    ProtoPNet,
    prototype_cluster_cost,
    prototype_distances,
    prototype_separation_cost,
    prototype_similarity,
)
from lamina.nn import Conv2D, Sequential
from tabular_checks import compare_module

EPS = 1e-4


def torch_min_distances(z, p):
    n, h, w, d = z.shape
    patches = z.reshape(n, h * w, 1, d)
    return ((patches - p) ** 2).sum(-1).min(dim=1).values          # (N, M), by direct differences


def torch_cluster(d, labels, prototype_class):
    own = torch.tensor(labels[:, None] == prototype_class[None, :])
    return torch.stack([d[i][own[i]].min() for i in range(len(labels))]).mean()


def torch_separation(d, labels, prototype_class):
    own = torch.tensor(labels[:, None] == prototype_class[None, :])
    return torch.stack([d[i][~own[i]].min() for i in range(len(labels))]).mean()


def _identity_model(n_classes=3, per_class=2, dim=4):
    return ProtoPNet(Sequential(), n_classes, per_class, dim)


def test_distances_and_similarity_match_torch(f64):
    rng = np.random.default_rng(0)
    z, p = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(6, 5))
    zt, pt = torch.tensor(z), torch.tensor(p)
    expected = ((zt[..., None, :] - pt) ** 2).sum(-1)
    assert_close(prototype_distances(z, p).numpy(), expected.numpy(), 1e-10, "distances")
    d = rng.uniform(0, 3, size=(4, 6))
    expected = torch.log((torch.tensor(d) + 1) / (torch.tensor(d) + EPS))
    assert_close(prototype_similarity(d, EPS).numpy(), expected.numpy(), 1e-12, "similarity")
    assert check_gradients(lambda a, b: prototype_distances(a, b), z, p)


def test_cluster_and_separation_costs_match_torch(f64):
    rng = np.random.default_rng(1)
    d, labels = rng.uniform(0, 5, size=(6, 6)), rng.integers(0, 3, 6)
    classes = np.repeat(np.arange(3), 2)
    for ours, theirs in ((prototype_cluster_cost, torch_cluster), (prototype_separation_cost, torch_separation)):
        dl = lamina.tensor(d, requires_grad=True, dtype=np.float64)
        dt = torch.tensor(d, requires_grad=True)
        value = ours(dl, labels, classes)
        expected = theirs(dt, labels, classes)
        assert_close(value.numpy(), expected.detach().numpy(), 1e-12, ours.__name__)
        value.backward()
        expected.backward()
        assert_close(dl.grad, dt.grad.numpy(), 1e-12, ours.__name__ + " gradient")


def test_head_and_loss_match_torch(f64):
    model = _identity_model()
    assert np.array_equal(model.last_layer.numpy(), np.where(np.repeat(np.eye(3), 2, axis=0) == 1, 1.0, -0.5))
    rng = np.random.default_rng(2)
    z, labels = rng.uniform(size=(5, 3, 3, 4)), rng.integers(0, 3, 5)

    def torch_logits(p, t):
        d = torch_min_distances(t, p["prototypes"])
        return torch.log((d + 1) / (d + EPS)) @ p["last_layer"]

    def torch_loss(p, t):
        d = torch_min_distances(t, p["prototypes"])
        ce = torch.nn.functional.cross_entropy(torch.log((d + 1) / (d + EPS)) @ p["last_layer"],
                                               torch.tensor(labels))
        return (ce + 0.8 * torch_cluster(d, labels, model.prototype_class)
                - 0.08 * torch_separation(d, labels, model.prototype_class))

    compare_module(model, model, torch_logits, [z], rtol=1e-9)
    compare_module(model, lambda t: model.loss(t, labels), torch_loss, [z], rtol=1e-9)


def test_push_explain_and_training_on_digits():
    data = load_digits()
    keep = data.target < 3
    x, y = (data.images[keep] / 16).astype(np.float32)[:300, ..., None], data.target[keep][:300]
    lamina.manual_seed(0)
    features = Sequential(Conv2D(8, 3, activation="relu"), Conv2D(4, 1, activation="sigmoid"))
    model = ProtoPNet(features, 3, 2, 4)
    model(x[:1])
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        for start in range(0, 200, 50):
            optimizer.zero_grad()
            model.loss(x[start:start + 50], y[start:start + 50]).backward()
            optimizer.step()
    accuracy = float((model(x[200:]).numpy().argmax(1) == y[200:]).mean())
    print(f"ProtoPNet-lite accuracy on digits 0-2 before push: {accuracy:.3f}")
    assert accuracy > 0.6
    model.push(x[:200], y[:200])
    z = model.feature_map(x[:200]).numpy()
    for j, (image, row, col) in enumerate(model.push_sources):
        assert y[image] == model.prototype_class[j]
        assert np.array_equal(model.prototypes.numpy()[j], z[image, row, col])
    patches = z.reshape(-1, 4)
    nearest = ((patches[:, None, :] - model.prototypes.numpy()) ** 2).sum(-1).min(axis=0)
    assert np.all(nearest == 0)                          # every prototype is some training patch exactly
    predicted, matches = model.explain(x[250], top=3)
    assert predicted == int(model(x[250:251]).numpy().argmax())
    assert len(matches) == 3 and matches[0].contribution >= matches[1].contribution >= matches[2].contribution
    top = matches[0]
    d = ((model.feature_map(x[250:251]).numpy()[0] - model.prototypes.numpy()[top.prototype]) ** 2).sum(-1)
    assert np.unravel_index(d.argmin(), d.shape) == top.location and top.source == model.push_sources[top.prototype]


def test_errors():
    with pytest.raises(ValueError, match="prototypes_per_class must be a positive int, got 0"):
        ProtoPNet(Sequential(), 3, 0, 4)
    with pytest.raises(ShapeError, match=r"\(N, H, W, 4\)"):
        _identity_model()(np.zeros((2, 3, 3, 5)))
    with pytest.raises(ShapeError, match="prototype_distances"):
        prototype_distances(np.zeros((1, 2, 2, 3)), np.zeros((4, 2)))
