"""The projection head of contrastive self-supervised learning (SimCLR, Chen et al. 2020).

The encoder's features h are mapped by a small MLP g to z = g(h), where the contrastive loss
is computed; after pretraining g is thrown away and h is used downstream (a linear probe or
fine-tuning). The paper found h before the head to be much the better representation: the
loss makes z invariant to the augmentations, g absorbs that and h keeps more.
"""

from __future__ import annotations

from lamina import nn
from lamina.nn.layer import positive_int

__all__ = ["projection_head"]


def projection_head(out_features: int = 128, hidden: int = 512, layers: int = 2, batch_norm: bool = False,
                    in_features: int | None = None) -> nn.Sequential:
    """z = W_L relu(... relu(W_1 h)): ``layers`` Dense layers, ``hidden`` units and a ReLU
    between them (and batch normalisation before each ReLU with ``batch_norm``, as SimCLR v2
    and BYOL), ``out_features`` at the end with no activation. SimCLR uses 2 layers and 128
    outputs. ``in_features`` builds it at once; otherwise on the first call."""
    out_features = positive_int(out_features, "projection_head: out_features")
    hidden = positive_int(hidden, "projection_head: hidden")
    layers = positive_int(layers, "projection_head: layers")
    stack: list = []
    for _ in range(layers - 1):
        stack.append(nn.Dense(hidden, use_bias=not batch_norm))
        if batch_norm:
            stack.append(nn.BatchNorm())
        stack.append(nn.ReLU())
    stack.append(nn.Dense(out_features))
    head = nn.Sequential(*stack)
    if in_features is not None:
        head.build((None, positive_int(in_features, "projection_head: in_features")))
    return head
