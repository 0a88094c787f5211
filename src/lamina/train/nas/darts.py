"""DARTS's search loop: alternate an architecture step on a validation batch and a weight
step on a training batch, as the reference implementation does.

Weights: SGD with momentum 0.9, weight decay 3e-4, gradient norm clipped to 5, learning rate
following a cosine from ``weight_lr`` to ``weight_lr_min`` over the epochs (set per epoch).
Architecture: :class:`Architect` (Adam), its virtual step using the current weight
learning rate as xi. The genotype after every epoch goes into the result's history.

With a GDAS network (``SearchNetwork(sampling='gumbel')``) the search is first order and the
Gumbel temperature falls linearly from ``tau_range[0]`` to ``tau_range[1]`` over the epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.nn.nas import Genotype
from lamina.optim import SGD, clip_grad_norm
from lamina.train.nas.architect import Architect

__all__ = ["DartsResult", "darts_search"]


@dataclass
class DartsResult:
    """What a search found: the final genotype, the genotype and metrics of every epoch, and
    the final softmax weights of each cell kind (edges x operations)."""

    genotype: Genotype
    genotypes: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    weights_normal: numpy.ndarray | None = None
    weights_reduce: numpy.ndarray | None = None


def _split(data, what: str):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"darts_search: {what} must be an (x, y) pair of arrays")
    x, y = numpy.asarray(data[0]), numpy.asarray(data[1])
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"darts_search: {what} needs NHWC images x (N, H, W, C) and N labels y, got shapes "
                         f"{x.shape} and {y.shape}")
    return x, y


def _accuracy(model, x, y, batch_size: int) -> float:
    correct = 0
    with no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(Tensor(backend.xp.asarray(x[start:start + batch_size])))
            correct += int((backend.to_numpy(logits.data).argmax(axis=-1) == y[start:start + batch_size]).sum())
    return correct / len(x)


def _softmax(a) -> numpy.ndarray:
    a = numpy.asarray(backend.to_numpy(a), dtype=numpy.float64)
    e = numpy.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def darts_search(model, train_data, val_data, epochs: int, first_order: bool = False, batch_size: int = 64,
                 weight_lr: float = 0.025, weight_lr_min: float = 0.001, momentum: float = 0.9,
                 weight_decay: float = 3e-4, grad_clip: float = 5.0, arch_lr: float = 3e-4,
                 arch_weight_decay: float = 1e-3, loss_fn: Callable | None = None, seed: int | None = None,
                 log: Callable[[str], None] | None = None,
                 tau_range: tuple[float, float] = (10.0, 0.1)) -> DartsResult:
    """Search the cells of ``model`` (a :class:`lamina.nn.nas.SearchNetwork`) on
    ``train_data`` = (x, y) for the weights and ``val_data`` = (x, y) for the alphas (DARTS
    splits the training set in halves). ``log`` receives one line per epoch with the genotype.
    """
    x_train, y_train = _split(train_data, "train_data")
    x_val, y_val = _split(val_data, "val_data")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"darts_search: epochs must be a positive int, got {epochs!r}")
    if batch_size < 1:
        raise ValueError(f"darts_search: batch_size must be positive, got {batch_size!r}")
    gumbel = getattr(model, "sampling", "softmax") == "gumbel"
    if gumbel and not first_order:
        raise ValueError("darts_search: a GDAS network (sampling='gumbel') draws new operations on every pass, "
                         "so the finite-difference second-order step does not apply; pass first_order=True")
    architect = Architect(model, loss_fn, arch_lr=arch_lr, arch_weight_decay=arch_weight_decay,
                          weight_decay=weight_decay, first_order=first_order)
    weights = model.weights()
    optimizer = SGD(weights, lr=weight_lr, momentum=momentum, weight_decay=weight_decay)
    rng = numpy.random.default_rng(seed)
    result = DartsResult(genotype=model.genotype())
    dtype = backend.get_default_dtype()
    for epoch in range(epochs):
        lr = weight_lr_min + 0.5 * (weight_lr - weight_lr_min) * (1 + math.cos(math.pi * epoch / epochs))
        optimizer.lr = lr
        if gumbel:
            tau_max, tau_min = tau_range
            model.tau = tau_max - (tau_max - tau_min) * epoch / max(epochs - 1, 1)
        model.train()
        order_train, order_val = rng.permutation(len(x_train)), rng.permutation(len(x_val))
        losses, correct = [], 0
        for step, start in enumerate(range(0, len(x_train), batch_size)):
            index = order_train[start:start + batch_size]
            val_start = (step * batch_size) % len(x_val)
            val_index = order_val[val_start:val_start + batch_size]
            train_batch = (Tensor(backend.xp.asarray(x_train[index], dtype=dtype)), y_train[index])
            val_batch = (Tensor(backend.xp.asarray(x_val[val_index], dtype=dtype)), y_val[val_index])
            architect.step(train_batch, val_batch, xi=lr)
            optimizer.zero_grad()
            logits = model(train_batch[0])
            loss = architect.loss_fn(logits, train_batch[1])
            loss.backward()
            clip_grad_norm(weights, grad_clip)
            optimizer.step()
            losses.append(float(loss.item()))
            correct += int((backend.to_numpy(logits.data).argmax(axis=-1) == y_train[index]).sum())
        model.eval()
        val_accuracy = _accuracy(model, x_val.astype(dtype), y_val, batch_size)
        genotype = model.genotype()
        result.genotypes.append(genotype)
        result.train_loss.append(float(numpy.mean(losses)))
        result.train_accuracy.append(correct / len(x_train))
        result.val_accuracy.append(val_accuracy)
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs} lr {lr:.4g} train loss {result.train_loss[-1]:.4f} "
                f"train acc {result.train_accuracy[-1]:.3f} val acc {val_accuracy:.3f} genotype {genotype}")
    model.train()
    result.genotype = model.genotype()
    result.weights_normal = _softmax(model.alphas_normal.data)
    result.weights_reduce = _softmax(model.alphas_reduce.data)
    return result
