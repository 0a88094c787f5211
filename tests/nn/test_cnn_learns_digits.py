"""A small CNN built from the layers learns a real task (scikit-learn's digits)."""

import time

import numpy as np

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import ArrayDataset, DataLoader, load_digits, train_val_test_split


def test_small_cnn_reaches_97_percent_on_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.2, seed=0)
    model = nn.Sequential(
        nn.Conv2D(16, 3, padding="same", use_bias=False), nn.BatchNorm(), nn.ReLU(),
        nn.Conv2D(32, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Dense(64, activation="relu"), nn.Dense(10),
    )
    model.build((None, 8, 8, 1))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(ArrayDataset(xtr, ytr), batch_size=32, seed=0)
    started = time.perf_counter()
    for _ in range(12):
        model.train()
        for xb, yb in loader:
            cost = F.categorical_cross_entropy(model(lamina.tensor(xb)), yb, from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    elapsed = time.perf_counter() - started
    model.eval()
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(xte)).numpy().argmax(axis=1) == yte).mean())
    assert accuracy >= 0.97, f"test accuracy {accuracy:.3f} after {elapsed:.1f} s"
