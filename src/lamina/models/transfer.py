"""Transfer learning (course notes, Transfer learning): keep what a trained network learned
for one task, put a new output layer on it for another, and train only that (and perhaps
the last few layers).

    base = trained[:-replace]           # the early layers' "vocabulary" of visual features
    new  = base (frozen, but the last `trainable` weighted layers) + head (fresh weights)

The new model holds copies of the trained layers: training it leaves the original alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from lamina.nn import Dense, Sequential, Softmax
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["transfer"]


def transfer(model: Sequential, num_classes: int | None = None, *, replace: int | None = None, trainable: int = 0,
             head: Module | Sequence[Module] | None = None) -> Sequential:
    """A new classifier from the trained Sequential ``model``.

    - ``replace``: how many layers to drop from the end; by default the output layer: the
      last layer with weights and whatever follows it (a Softmax).
    - ``head``: a layer or a list of layers put in their place; by default
      ``Dense(num_classes)`` then ``Softmax()`` (the Trainer computes softmax and
      cross-entropy together from the logits).
    - ``trainable``: how many of the kept layers that have weights stay trainable, counted
      from the end (0: the whole base is frozen; the course notes' "let the last couple
      of conv layers be retrained" is 1 or 2).

    Frozen layers keep their weights; batch norm layers among them still follow the
    model's train()/eval() mode, as in PyTorch.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"transfer: expected a trained Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError("transfer: the model has no weights yet; train it (or load one) first")
    if replace is None:
        weighted = [i for i, layer in enumerate(model) if layer.num_parameters() > 0]
        replace = len(model) - weighted[-1] if weighted else 0
    if isinstance(replace, bool) or not isinstance(replace, int) or not 0 <= replace < len(model):
        raise ValueError(f"transfer: replace must be an int in [0, {len(model)}) for a model of "
                         f"{len(model)} layers, got {replace!r}")
    if isinstance(trainable, bool) or not isinstance(trainable, int) or trainable < 0:
        raise ValueError(f"transfer: trainable must be a non-negative int, got {trainable!r}")
    if head is None:
        if num_classes is None:
            raise ValueError("transfer: give num_classes (for the default Dense head) or a head")
        head = [Dense(positive_int(num_classes, "transfer: num_classes"), kernel_init="xavier_uniform"), Softmax()]
    elif num_classes is not None:
        raise ValueError("transfer: give num_classes or a head, not both")

    kept = copy.deepcopy(list(model)[:len(model) - replace])
    for layer in kept:
        layer.freeze()
    weighted = [layer for layer in kept if layer.num_parameters() > 0]
    if trainable > len(weighted):
        raise ValueError(f"transfer: trainable={trainable}, but the kept layers have only {len(weighted)} "
                         f"with weights ({', '.join(layer.name for layer in weighted)})")
    for layer in weighted[len(weighted) - trainable:]:
        layer.unfreeze()
    new = Sequential(*kept, *([head] if isinstance(head, Module) else head))
    shape = getattr(model, "build_input_shape", None)
    if shape is not None:
        new.build(shape)     # the head's weights exist now: an optimizer built next sees them
    return new
