"""The ``lamina`` command line.

``lamina`` (or ``python -m lamina``) with no arguments runs the default job; ``lamina
--help`` lists the subcommands.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import lamina
from lamina import functional as F


def logistic_regression(iterations: int = 400, lr: float = 0.5, seed: int = 0, every: int = 25) -> float:
    """Fit a = sigma(w^T x + b) on scikit-learn's breast-cancer data with the raw engine.

    Plain gradient descent, w = w - lr dJ/dw, on a standardised training split; prints
    the cost J every ``every`` iterations and returns the accuracy on a held-out test split.
    """
    from sklearn.datasets import load_breast_cancer

    lamina.manual_seed(seed)
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.astype(np.float32)
    order = lamina.backend.rng().permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8  # statistics of the training split only
    x = (x - mean) / std
    x_train, y_train = lamina.tensor(x[train]), y[train]
    w = lamina.tensor(np.zeros(x.shape[1]), requires_grad=True)
    b = lamina.tensor(0.0, requires_grad=True)
    print(f"logistic regression on breast cancer: {len(train)} training, {len(test)} test samples")
    for it in range(iterations + 1):
        z = x_train @ w + b
        cost = F.binary_cross_entropy(z, y_train, from_logits=True)
        if it % every == 0:
            print(f"iteration {it:4d}  cost {cost.item():.4f}")
        if it == iterations:
            break
        cost.backward()
        with lamina.no_grad():
            w.data -= lr * w.grad
            b.data -= lr * b.grad
        w.zero_grad()
        b.zero_grad()
    with lamina.no_grad():
        predicted = (x[test] @ w.data + b.data) > 0
    accuracy = float((predicted == y[test].astype(bool)).mean())
    print(f"test accuracy {accuracy:.2%}")
    return accuracy


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lamina", description="lamina: deep learning on NumPy with its own autodiff engine."
    )
    sub = parser.add_subparsers(dest="command")
    logreg = sub.add_parser("logreg", help="logistic regression on breast cancer with the raw engine")
    logreg.add_argument("--iterations", type=int, default=400, help="gradient-descent steps (default 400)")
    logreg.add_argument("--lr", type=float, default=0.5, help="learning rate alpha (default 0.5)")
    logreg.add_argument("--seed", type=int, default=0, help="random seed for the split (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command in (None, "logreg"):
        logistic_regression(
            iterations=getattr(args, "iterations", 400), lr=getattr(args, "lr", 0.5), seed=getattr(args, "seed", 0)
        )
    return 0
