"""ProtoPNet's last-layer stage: the L1 term on the weights to the wrong classes (by hand and
against a torch rewrite of the paper's masked norm), and fine-tuning after push on three digits,
which must bring the accuracy back near its value before the push while changing nothing but
the last layer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import lamina
from helpers import assert_close
from lamina.errors import ShapeError
from lamina.models import ProtoPNet, fine_tune_last_layer, last_layer_l1
from lamina.nn import Conv2D, Sequential


def test_wrong_class_l1_by_hand(f64):
    # prototypes 0, 1 of class 0 and prototype 2 of class 1: the wrong-class weights are
    # W[0, 1] = -2, W[1, 1] = 4 and W[2, 0] = -5, so the term is 2 + 4 + 5 = 11
    w = lamina.tensor(np.array([[1.0, -2.0], [3.0, 4.0], [-5.0, 6.0]]), requires_grad=True, dtype=np.float64)
    value = last_layer_l1(w, np.array([0, 0, 1]))
    assert float(value.numpy()) == 11.0
    value.backward()
    assert np.array_equal(w.grad, np.array([[0.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]))


def test_last_layer_loss_matches_the_papers_masked_norm(f64):
    model = ProtoPNet(Sequential(), 3, 2, 4)
    model.last_layer.data[...] = np.random.default_rng(0).normal(size=(6, 3))
    x, labels = np.random.default_rng(1).uniform(size=(5, 3, 3, 4)), np.array([0, 2, 1, 1, 0])
    loss = model.last_layer_loss(x, labels, l1=0.3)
    loss.backward()
    w = torch.tensor(model.last_layer.numpy(), requires_grad=True)
    identity = torch.nn.functional.one_hot(torch.tensor(model.prototype_class), 3).T.double()   # (C, M)
    l1_mask = 1 - identity.T                                                                   # as the paper's code
    similarity = torch.tensor(model.similarities(x))
    expected = (torch.nn.functional.cross_entropy(similarity @ w, torch.tensor(labels))
                + 0.3 * (w * l1_mask).norm(p=1))
    expected.backward()
    assert_close(loss.numpy(), expected.detach().numpy(), 1e-12, "loss")
    assert_close(model.last_layer.grad, w.grad.numpy(), 1e-12, "last-layer gradient")


def _accuracy(model, x, y) -> float:
    return float((model(x).numpy().argmax(1) == y).mean())


def test_fine_tuning_after_push_recovers_the_accuracy():
    data = load_digits()
    keep = data.target < 3
    x, y = (data.images[keep] / 16).astype(np.float32)[:300, ..., None], data.target[keep][:300]
    lamina.manual_seed(0)
    model = ProtoPNet(Sequential(Conv2D(8, 3, activation="relu"), Conv2D(4, 1, activation="sigmoid")), 3, 2, 4)
    model(x[:1])
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        for start in range(0, 200, 50):
            optimizer.zero_grad()
            model.loss(x[start:start + 50], y[start:start + 50]).backward()
            optimizer.step()
    before_push = _accuracy(model, x[200:], y[200:])
    model.push(x[:200], y[:200])
    after_push = _accuracy(model, x[200:], y[200:])
    frozen = {k: v.copy() for k, v in model.state_dict().items() if k != "last_layer"}
    start_weights = model.last_layer.numpy().copy()
    wrong = model.prototype_class[:, None] != np.arange(3)[None, :]
    wrong_l1 = {}
    for l1 in (0.0, 0.05):           # the L1 term pulls the wrong-class weights towards 0
        twin = copy.deepcopy(model)
        fine_tune_last_layer(twin, x[:200], y[:200], epochs=30, lr=0.05, l1=l1)
        wrong_l1[l1] = np.abs(twin.last_layer.numpy()[wrong]).sum()
    assert wrong_l1[0.05] < 0.5 * wrong_l1[0.0]
    history = fine_tune_last_layer(model, x[:200], y[:200], epochs=30, lr=0.05)
    after_tuning = _accuracy(model, x[200:], y[200:])
    print(f"ProtoPNet-lite on digits 0-2: accuracy {before_push:.3f} before push, {after_push:.3f} after push, "
          f"{after_tuning:.3f} after last-layer fine-tuning")
    assert after_tuning >= before_push - 0.05 and after_tuning >= after_push
    assert history[-1] < history[0]
    assert not np.array_equal(model.last_layer.numpy(), start_weights)
    state = model.state_dict()
    assert all(np.array_equal(state[k], v) for k, v in frozen.items())      # features and prototypes untouched


def test_errors():
    model = ProtoPNet(Sequential(), 3, 2, 4)
    with pytest.raises(ShapeError, match=r"last_layer_l1: expected a last layer \(M, C\) and prototype classes"):
        last_layer_l1(np.zeros((6, 3)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        fine_tune_last_layer(model, np.zeros((2, 3, 3, 4)), [0, 1], epochs=0)
    with pytest.raises(ShapeError, match="2 images but 3 labels"):
        fine_tune_last_layer(model, np.zeros((2, 3, 3, 4)), [0, 1, 2])
