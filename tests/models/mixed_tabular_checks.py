"""What the TabTransformer and SAINT tests share: a synthetic task whose label needs
categorical interactions, the breast-cancer data with a few binned columns as categories, a
logistic-regression baseline on one-hot categories, and a training loop over (x_num, x_cat)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

import lamina
from tabular_checks import standardized_split

XOR_CARDINALITIES = (4, 4, 3)


def xor_task(n: int, seed: int):
    """(x_num (n, 2), x_cat (n, 3), y): y = parity(c_0) XOR parity(c_1) XOR [x_0 > 0]; c_2 and x_1 are noise."""
    rng = np.random.default_rng(seed)
    x_cat = np.stack([rng.integers(0, size, n) for size in XOR_CARDINALITIES], axis=1)
    x_num = rng.normal(size=(n, 2))
    y = (x_cat[:, 0] % 2) ^ (x_cat[:, 1] % 2) ^ (x_num[:, 0] > 0)
    return x_num, x_cat, y.astype(np.int64)


def logistic_accuracy(train: tuple, test: tuple) -> float:
    """Held-out accuracy of logistic regression on [one-hot(x_cat), x_num]."""
    encoder = OneHotEncoder().fit(train[1])

    def features(x_num, x_cat):
        return np.hstack([encoder.transform(x_cat).toarray(), x_num])

    model = LogisticRegression(max_iter=1000).fit(features(*train[:2]), train[2])
    return float(model.score(features(*test[:2]), test[2]))


def breast_cancer_with_categories(bins: int = 4, columns=(20, 22, 23, 27, 7)):
    """Standardised breast-cancer splits (x_num, x_cat, y) for training and test, x_cat the
    training-quantile bins of a few of the most informative columns (the data has no categories)."""
    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    edges = [np.quantile(x_train[:, c], np.arange(1, bins) / bins) for c in columns]

    def categories(x):
        return np.stack([np.digitize(x[:, c], e) for c, e in zip(columns, edges)], axis=1)

    return (x_train, categories(x_train), y_train), (x_test, categories(x_test), y_test)


def train_mixed(model, x_num, x_cat, y, epochs: int, lr: float = 3e-3, batch_size: int = 64, seed: int = 0):
    """Adam on cross-entropy over shuffled mini-batches of (x_num, x_cat); x_cat may be None."""
    optimizer = lamina.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            logits = model(x_num[rows], None if x_cat is None else x_cat[rows])
            lamina.functional.cross_entropy(logits, y[rows]).backward()
            optimizer.step()
    model.eval()


def mixed_accuracy(model, x_num, x_cat, y) -> float:
    """Accuracy with the test set as one batch (SAINT's rows attend to each other)."""
    with lamina.no_grad():
        return float((model(x_num, x_cat).numpy().argmax(axis=1) == y).mean())
