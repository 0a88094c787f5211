"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): in training,
the residual branch of a block is dropped for a whole sample with probability p, so that the
block reduces to its shortcut, and kept otherwise, scaled by 1 / (1 - p):

    training:    d = f(x) · m / (1 - p),   m ~ Bernoulli(1 - p)   (m = 0 for every sample if p = 1)
    evaluation:  d = f(x)

so E[d] = f(x) and evaluation needs no rescaling (as inverted dropout). ``mode='row'`` draws
one m per sample (shared by all of its values), ``mode='batch'`` one m for the whole batch
(torchvision.ops.stochastic_depth). The residual networks of the zoo (EfficientNet, ConvNeXt)
apply it to the branch before adding the shortcut. New masks come from
:func:`lamina.backend.rng` (seed it with :func:`lamina.manual_seed`).
"""

from __future__ import annotations

import numbers

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["STOCHASTIC_DEPTH_MODES", "StochasticDepth", "stochastic_depth"]

STOCHASTIC_DEPTH_MODES = ("row", "batch")


def _check(p, mode, what: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{what}: the drop probability p must be a number in [0, 1], got {p!r}")
    if mode not in STOCHASTIC_DEPTH_MODES:
        raise ValueError(f"{what}: mode must be 'row' (one draw per sample) or 'batch' (one draw for the "
                         f"batch), got {mode!r}")
    return float(p)


def stochastic_depth(x, p: float, mode: str = "row", training: bool = True) -> Tensor:
    """d = x · m / (1 - p) with m ~ Bernoulli(1 - p) drawn per sample (``mode='row'``: shape
    (N, 1, ..., 1)) or once for the batch (``mode='batch'``); ``x`` itself when not ``training``
    or p = 0, zeros when p = 1 (the torchvision.ops.stochastic_depth convention)."""
    p = _check(p, mode, "stochastic_depth")
    x = as_tensor(x)
    if not training or p == 0.0:
        return x
    dtype = x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()
    shape = (x.shape[0],) + (1,) * (x.ndim - 1) if mode == "row" else (1,) * x.ndim
    survival = 1.0 - p
    keep = backend.rng().random(shape) < survival
    scale = keep.astype(dtype) / dtype.type(survival) if survival > 0 else numpy.zeros(shape, dtype)
    return F.mul(x, Tensor(backend.xp.asarray(scale.astype(dtype, copy=False))))


@register_layer
class StochasticDepth(Module):
    """Drops a residual branch per sample (``mode='row'``) or for the whole batch
    (``mode='batch'``) with probability ``p`` in training, scaling what is kept by
    1 / (1 - p); the identity in evaluation (see :func:`stochastic_depth`)."""

    default_name = "stochastic_depth"

    def __init__(self, p: float, mode: str = "row", name: str | None = None):
        super().__init__(name=name)
        self.p = _check(p, mode, "StochasticDepth")
        self.mode = mode

    def forward(self, x) -> Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"p": self.p, "mode": self.mode, "name": self.name}

    def extra_repr(self) -> str:
        return f"p={self.p:g}, mode={self.mode!r}"
