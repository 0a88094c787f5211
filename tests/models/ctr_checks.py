"""Shared pieces of the click-through-rate learning tests: a mini-batch Adam fit on the logits'
binary cross-entropy, and the logistic-regression baseline on one-hot fields."""

import numpy as np

from lamina import functional as F
from lamina import optim
from lamina.models.graph_autoencoder import roc_auc_score


def fit_ctr(model, inputs: tuple, labels, epochs: int, lr: float, batch: int = 128) -> None:
    """``epochs`` passes of Adam over shuffled batches of ``batch`` rows (seeded), then eval mode."""
    opt = optim.Adam(model, lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for rows in np.array_split(rng.permutation(len(labels)), len(labels) // batch):
            loss = F.binary_cross_entropy(model(*(x[rows] for x in inputs)), labels[rows], from_logits=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def logistic_regression_auc(field_dims, train_ids, train_y, test_ids, test_y) -> float:
    """Test AUC of logistic regression on the one-hot fields, full-batch gradient descent (NumPy)."""
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])

    def one_hot(ids):
        x = np.zeros((len(ids), sum(field_dims)))
        np.put_along_axis(x, ids + offsets, 1.0, axis=1)
        return x

    x, w, b = one_hot(train_ids), np.zeros(sum(field_dims)), 0.0
    for _ in range(500):
        residual = 1 / (1 + np.exp(-(x @ w + b))) - train_y
        w -= 0.5 * x.T @ residual / len(train_y)
        b -= 0.5 * residual.mean()
    return roc_auc_score(test_y, one_hot(test_ids) @ w + b)
