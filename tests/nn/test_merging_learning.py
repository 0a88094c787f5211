"""Merged models on a real task: small MLPs fine-tuned on scikit-learn's digits from a shared
initialisation, merged by soups and by task arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.nn import merging


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = (x.astype(np.float32) / 255).reshape(len(x), -1)
    return train_val_test_split(x, y, val=0.2, test=0.2, seed=0)


def _mlp() -> nn.Module:
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    return model


def _fine_tune(state: dict, x, y, epochs: int, lr: float, seed: int) -> dict:
    model = _mlp()
    model.load_state_dict(state)
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            cost = F.categorical_cross_entropy(model(lamina.tensor(x[batch])), y[batch], from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    return {key: value.copy() for key, value in model.state_dict().items()}


def _accuracy(state: dict, x, y) -> float:
    model = _mlp()
    model.load_state_dict(state)
    with lamina.no_grad():
        return float((model(lamina.tensor(x)).numpy().argmax(axis=1) == y).mean())


def test_uniform_and_greedy_soups_score_about_as_well_as_the_best_ingredient(digits):
    (xtr, ytr), (xva, yva), (xte, yte) = digits
    shared = _fine_tune(_mlp().state_dict(), xtr, ytr, epochs=3, lr=3e-3, seed=0)
    ingredients = [_fine_tune(shared, xtr, ytr, epochs=4, lr=lr, seed=seed)
                   for seed, lr in [(1, 3e-3), (2, 6e-3), (3, 9e-3), (4, 3e-3)]]
    individual = [_accuracy(s, xte, yte) for s in ingredients]
    uniform = _accuracy(merging.uniform_soup(ingredients), xte, yte)
    greedy = _accuracy(merging.greedy_soup(ingredients, lambda s: _accuracy(s, xva, yva)), xte, yte)
    report = f"shared {_accuracy(shared, xte, yte):.3f}, ingredients {individual}, uniform {uniform:.3f}, " \
             f"greedy {greedy:.3f}"
    assert min(individual) > 0.85, report
    assert uniform >= max(individual) - 0.03, report
    assert greedy >= max(individual) - 0.02, report


def test_task_vectors_add_two_tasks_and_negation_removes_one(digits):
    (xtr, ytr), _, (xte, yte) = digits
    base = _fine_tune(_mlp().state_dict(), xtr[:300], ytr[:300], epochs=4, lr=3e-3, seed=0)
    low, high = ytr < 5, ytr >= 5
    on_low = _fine_tune(base, xtr[low], ytr[low], epochs=3, lr=1e-3, seed=5)       # task A: digits 0-4
    on_high = _fine_tune(base, xtr[high], ytr[high], epochs=3, lr=1e-3, seed=6)    # task B: digits 5-9

    def scores(state):
        return tuple(_accuracy(state, xte[part], yte[part]) for part in (yte < 5, yte >= 5))

    vectors = merging.task_vectors(base, [on_low, on_high])
    before, added, negated = scores(base), scores(merging.task_arithmetic(base, vectors, 1.0)), \
        scores(merging.task_arithmetic(base, vectors[:1], -1.0))
    report = f"base (A, B) {before}, base + tau_A + tau_B {added}, base - tau_A {negated}"
    assert added[0] >= before[0] + 0.1 and added[1] >= before[1] + 0.03, report
    assert negated[0] <= before[0] - 0.2, report
