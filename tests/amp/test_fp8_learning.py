"""Training with FP8 emulation: an MLP of FP8Dense layers on digits learns as well as float32
(within a small margin), and per-tensor scaling is what keeps tiny gradients from underflowing
in E5M2."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import functional as F
from lamina import nn
from lamina.amp import FP8Dense, convert_to_fp8, quantize_fp8
from lamina.autograd import grad
from lamina.data import load_digits, train_val_test_split
from lamina.optim import Adam

EPOCHS, BATCH = 12, 64


def digits():
    x, y = load_digits(size=8)
    x = (x.reshape(len(x), -1) / np.float32(255)).astype(np.float32)
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return x_train, y_train, x_test, y_test


def mlp(layer, **kwargs):
    model = nn.Sequential(layer(32, activation="relu", **kwargs), layer(10, **kwargs))
    model(np.zeros((1, 64), np.float32))
    return model


def train(model, x, y, loss_factor: float = 1.0) -> None:
    """Adam (eps tiny, so that scaling the loss by ``loss_factor`` leaves its steps alone)."""
    opt = Adam(model.parameters(), lr=1e-2, eps=1e-20)
    rng = np.random.default_rng(1)
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            opt.zero_grad()
            (F.cross_entropy(model(x[rows]), lamina.tensor(y[rows])) * loss_factor).backward()
            opt.step()


def accuracy(model, x, y) -> float:
    model.eval()
    with lamina.no_grad():
        return float(np.mean(model(x).numpy().argmax(axis=1) == y))


def copy_weights(source, target) -> None:
    for a, b in zip(source.parameters(), target.parameters()):
        b.data = a.data.copy()


def test_fp8_training_matches_float32_training_on_digits():
    x, y, x_test, y_test = digits()
    reference = mlp(nn.Dense)
    fp8 = convert_to_fp8(reference)                 # the same initial weights, as FP8Dense layers
    train(reference, x, y)
    train(fp8, x, y)
    float_accuracy, fp8_accuracy = accuracy(reference, x_test, y_test), accuracy(fp8, x_test, y_test)
    print(f"digits test accuracy: float32 {float_accuracy:.3f}, FP8 emulation {fp8_accuracy:.3f}")
    assert float_accuracy > 0.9 and fp8_accuracy > float_accuracy - 0.03


def test_scaling_keeps_tiny_gradients_from_underflowing():
    x, y, x_test, y_test = digits()
    tiny = 2.0 ** -20                               # gradients of the loss times 2^-20: below E5M2's range
    models = {scaling: mlp(FP8Dense, scaling=scaling) for scaling in ("none", "delayed")}
    copy_weights(models["none"], models["delayed"])
    logits_grad = {}
    for scaling, model in models.items():
        train(model, x, y, tiny)
        model.train()
        logits = model(x[:256])
        gradient = grad(F.cross_entropy(logits, lamina.tensor(y[:256])) * tiny, logits)
        gradient = lamina.backend.to_numpy(gradient[0] if isinstance(gradient, (list, tuple)) else gradient)
        scale = 1.0 if scaling == "none" else float(model[1].scale[2])
        kept = quantize_fp8(gradient, "e5m2", scale) != 0
        logits_grad[scaling] = 1 - kept.sum() / np.count_nonzero(gradient)
    accuracies = {scaling: accuracy(model, x_test, y_test) for scaling, model in models.items()}
    print(f"zeroed output gradients: scale 1 {logits_grad['none']:.3f}, delayed scaling {logits_grad['delayed']:.3f};"
          f" test accuracy {accuracies}")
    assert logits_grad["none"] > 0.5 and logits_grad["delayed"] < 0.1
    assert accuracies["delayed"] > 0.9 and accuracies["delayed"] > accuracies["none"] + 0.2
