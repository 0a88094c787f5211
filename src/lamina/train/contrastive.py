"""Self-supervised pretraining from two augmented views (SimCLR, Chen et al. 2020), and the
linear probe that measures what it learned.

For each mini-batch x of unlabelled samples, ``augment`` (a random layer, or a Sequential of
them) is called twice to give two views x1, x2; the encoder f and a projection head g map
them to z1 = g(f(x1)), z2 = g(f(x2)), and one Adam step lowers a two-view loss, by default

    nt_xent(z1, z2, temperature)                (lamina.functional.nt_xent_loss)

which makes the two views of a sample agree and the views of different samples differ.
'info_nce', 'barlow_twins' and 'vicreg' may be used instead. The head is discarded after
pretraining; the encoder's features are then judged by a linear probe: a softmax regression
trained on frozen features of labelled data and scored on held-out data.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.projection import projection_head
from lamina.nn import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, evaluation_mode
from lamina.optim import Adam

__all__ = ["contrastive_pretrain", "encode", "linear_probe"]

LOSSES = {
    "nt_xent": lambda z1, z2, t: F.nt_xent_loss(z1, z2, temperature=t),
    "info_nce": lambda z1, z2, t: F.info_nce_loss(z1, z2, temperature=t),
    "barlow_twins": lambda z1, z2, t: F.barlow_twins_loss(z1, z2),
    "vicreg": lambda z1, z2, t: F.vicreg_loss(z1, z2),
}


def _samples(x, fn: str) -> np.ndarray:
    values = np.asarray(x)
    if values.ndim < 2 or len(values) < 2:
        raise ShapeError(f"{fn}: x must be at least 2 samples of shape (n, ...), got shape {values.shape}")
    if values.dtype.kind != "f":
        values = values.astype(backend.get_default_dtype())
    return values


def _rows(features: Tensor) -> Tensor:
    """The encoder's output as one row per sample (feature maps are flattened)."""
    return features if features.ndim == 2 else features.reshape(features.shape[0], -1)


def contrastive_pretrain(encoder: Module, x, augment, epochs: int = 10, batch_size: int = 128,
                         head: Module | None = None, loss: str = "nt_xent", temperature: float = 0.5,
                         lr: float = 1e-3, weight_decay: float = 0.0,
                         seed: int | None = None) -> dict[str, list[float]]:
    """Pretrain ``encoder`` on unlabelled ``x`` (module docstring); returns ``{'loss': [...]}``,
    the mean loss of each epoch.

    ``augment`` is called on each batch twice (a Module is put in training mode); ``head``
    defaults to :func:`lamina.models.projection_head` (128 outputs, 512 hidden); pass one to
    keep it. The encoder and the head are trained together by Adam (``lr``,
    ``weight_decay``). ``seed`` fixes the order of the batches; the augmentations draw from
    lamina's generator (:func:`lamina.manual_seed`). A last batch of one sample is dropped
    (a pair needs two). The encoder is left in evaluation mode.
    """
    fn = "contrastive_pretrain"
    if loss not in LOSSES:
        raise ValueError(f"{fn}: loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"{fn}: temperature must be a number > 0, got {temperature!r}")
    epochs, batch_size = positive_int(epochs, f"{fn}: epochs"), positive_int(batch_size, f"{fn}: batch_size")
    if batch_size < 2:
        raise ValueError(f"{fn}: batch_size must be at least 2 (the other samples are the negatives), got {batch_size}")
    if not callable(augment):
        raise TypeError(f"{fn}: augment must be a layer or a function of a batch, got {augment!r}")
    values = _samples(x, fn)
    head = projection_head() if head is None else head
    for module in (encoder, head, augment):
        if isinstance(module, Module):
            module.train()
    encoder(Tensor(values[:2]))                     # build both before the optimizer collects weights
    head(_rows(encoder(Tensor(values[:2]))))
    optimizer = Adam(list(encoder.parameters(trainable_only=True)) + list(head.parameters(trainable_only=True)),
                     lr=lr, weight_decay=weight_decay)
    order_rng = np.random.default_rng(seed) if seed is not None else backend.rng()
    history: dict[str, list[float]] = {"loss": []}
    for _ in range(epochs):
        order = order_rng.permutation(len(values))
        total, seen = 0.0, 0
        for start in range(0, len(values), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue
            batch = Tensor(values[index])
            z1 = head(_rows(encoder(augment(batch))))
            z2 = head(_rows(encoder(augment(batch))))
            cost = LOSSES[loss](z1, z2, float(temperature))
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            total, seen = total + cost.item() * len(index), seen + len(index)
        history["loss"].append(total / seen)
    encoder.eval()
    return history


def encode(encoder: Module, x, batch_size: int = 256) -> np.ndarray:
    """The encoder's features of ``x`` (one row per sample), in evaluation mode, no graph."""
    values = np.asarray(x)
    parts = []
    with evaluation_mode(encoder), no_grad():
        for start in range(0, len(values), batch_size):
            parts.append(_rows(encoder(Tensor(values[start:start + batch_size]))).numpy())
    return np.concatenate(parts)


def linear_probe(encoder: Module, train, test, epochs: int = 200, lr: float = 0.05,
                 weight_decay: float = 0.0) -> dict[str, float]:
    """Train a softmax regression on the frozen ``encoder``'s features of ``train`` = (x, y)
    and score it: returns ``{'train_accuracy', 'test_accuracy'}``, ``test`` = (x, y).

    The features are standardised with the training set's mean and standard deviation, and
    the regression is fitted by ``epochs`` full-batch Adam steps on the cross-entropy.
    """
    fn = "linear_probe"
    (x_train, y_train), (x_test, y_test) = train, test
    y_train, y_test = np.asarray(y_train).astype(np.int64), np.asarray(y_test).astype(np.int64)
    f_train, f_test = encode(encoder, x_train), encode(encoder, x_test)
    if len(f_train) != len(y_train) or len(f_test) != len(y_test):
        raise ShapeError(f"{fn}: {len(f_train)} training and {len(f_test)} test samples but {len(y_train)} and "
                         f"{len(y_test)} labels")
    mean, spread = f_train.mean(axis=0), f_train.std(axis=0) + 1e-6
    f_train, f_test = (f_train - mean) / spread, (f_test - mean) / spread
    classes = int(max(y_train.max(), y_test.max())) + 1
    probe = Dense(classes, kernel_init="zeros")
    probe.build((None, f_train.shape[1]))
    optimizer = Adam(probe, lr=lr, weight_decay=weight_decay)
    features = Tensor(f_train)
    for _ in range(positive_int(epochs, f"{fn}: epochs")):
        cost = F.categorical_cross_entropy(probe(features), y_train, from_logits=True)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    with no_grad():
        train_accuracy = float((probe(features).numpy().argmax(axis=1) == y_train).mean())
        test_accuracy = float((probe(Tensor(f_test)).numpy().argmax(axis=1) == y_test).mean())
    return {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy}
