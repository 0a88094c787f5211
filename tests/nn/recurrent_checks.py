"""Helpers of the recurrent-layer tests: random weights and copying them into PyTorch."""

from __future__ import annotations

import numpy as np
import torch

PAIRS = (("kernel", "weight_ih_l0"), ("recurrent_kernel", "weight_hh_l0"), ("bias", "bias_ih_l0"),
         ("recurrent_bias", "bias_hh_l0"))


def randomize(layer, seed=0):
    """Random values in every parameter (zero biases would hide a bias mix-up)."""
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data = (0.5 * rng.standard_normal(p.shape)).astype(p.data.dtype)


def copy_to_torch(layer, module, suffix=""):
    """lamina's weights into the torch module (transposed); returns the (lamina, torch)
    parameter pairs. ``suffix``: '_reverse' for the backward direction of a bidirectional
    torch module."""
    with torch.no_grad():
        for ours, theirs in PAIRS:
            value = getattr(layer, ours).numpy()
            getattr(module, theirs + suffix).copy_(torch.from_numpy(np.ascontiguousarray(value.T)))
    return [(getattr(layer, ours), getattr(module, theirs + suffix)) for ours, theirs in PAIRS]
