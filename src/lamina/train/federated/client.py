"""The client side of a simulated federation: client data, weight snapshots and local SGD."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lamina.autograd import Tensor
from lamina.nn.module import Module

__all__ = ["ClientData", "as_clients", "local_sgd"]

ClientData = tuple[np.ndarray, np.ndarray]
# (parameter name, current weight) -> an array added to the gradient, or None
Correction = Callable[[str, np.ndarray], np.ndarray | None]


def as_clients(clients: Sequence[Any], who: str) -> list[ClientData]:
    """Each client's data as an ``(x, y)`` pair of arrays: given as such a pair or as a
    dataset with ``x`` and ``y`` arrays (an :class:`lamina.data.ArrayDataset`)."""
    result = []
    for k, client in enumerate(clients):
        if hasattr(client, "x") and hasattr(client, "y"):
            client = (client.x, client.y)
        if not (isinstance(client, tuple | list) and len(client) == 2):
            raise TypeError(f"{who}: client {k} must be an (x, y) pair of arrays or an ArrayDataset; "
                            f"got {type(client).__name__}")
        x, y = np.asarray(client[0]), np.asarray(client[1])
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"{who}: client {k} needs as many labels as inputs and at least one sample; "
                             f"got {len(x)} inputs and {len(y)} labels")
        result.append((x, y))
    if not result:
        raise ValueError(f"{who}: expected at least one client dataset, got none")
    return result


def as_input(array: np.ndarray) -> Tensor | np.ndarray:
    """Floating arrays as tensors of their own dtype (so float64 data runs a float64 model)."""
    return Tensor(array, dtype=array.dtype) if array.dtype.kind == "f" else array


def trainable_weights(model: Module) -> dict[str, np.ndarray]:
    """Copies of the trainable parameters by name."""
    return {name: p.data.copy() for name, p in model.named_parameters(trainable_only=True)}


def buffers(model: Module) -> dict[str, np.ndarray]:
    """Copies of the array buffers (batch-norm running statistics) by name."""
    return {name: np.array(b, copy=True) for name, b in model.named_buffers() if b is not None}


def local_sgd(model: Module, loss: Callable, data: ClientData, lr: float, epochs: int, batch_size: int | None,
              rng: np.random.Generator, correction: Correction | None = None) -> tuple[int, float]:
    """Train ``model`` in place by ``epochs`` passes of mini-batch SGD over ``data``:
    ``w = w - lr * (dL/dw + correction(name, w))`` per batch (``batch_size`` None: the whole
    data in its given order, one step per epoch; otherwise a fresh ``rng`` permutation each
    epoch). Returns (steps taken, mean batch loss)."""
    x, y = data
    n = len(x)
    batch = n if batch_size is None else min(batch_size, n)
    parameters = list(model.named_parameters(trainable_only=True))
    model.train()
    steps, total = 0, 0.0
    for _ in range(epochs):
        order = np.arange(n) if batch == n else rng.permutation(n)
        for start in range(0, n, batch):
            index = order[start:start + batch]
            model.zero_grad()
            value = loss(model(as_input(x[index])), as_input(y[index]))
            value.backward()
            for name, p in parameters:
                gradient = np.zeros_like(p.data) if p.grad is None else p.grad
                extra = None if correction is None else correction(name, p.data)
                if extra is not None:
                    gradient = gradient + extra
                p.data = (p.data - lr * gradient).astype(p.data.dtype, copy=False)
            steps += 1
            total += float(value.data)
    model.zero_grad()
    return steps, total / steps
