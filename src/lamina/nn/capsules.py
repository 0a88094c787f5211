"""Capsule layers (Sabour, Frosst & Hinton 2017, "Dynamic Routing Between Capsules").

A capsule is a vector whose length is the probability that an entity is present and whose
direction describes it. :class:`PrimaryCapsules` cuts the channels of a convolution into
capsules; :class:`CapsuleLayer` maps child capsules u_i to parent capsules v_j through the
predictions u_hat_{j|i} = u_i W_ij (a d_in x d_out matrix per pair) and routing by agreement
(:func:`lamina.functional.dynamic_routing`). :class:`DigitCapsules` is the paper's DigitCaps
layer, a CapsuleLayer of 10 capsules of 16 dimensions.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.capsules import dynamic_routing, squash
from lamina.nn import init as initializers
from lamina.nn.conv import Conv2D
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CapsuleLayer", "DigitCapsules", "PrimaryCapsules", "capsule_lengths"]


def capsule_lengths(capsules) -> Tensor:
    """|v| over the last axis: (batch, n, d) -> (batch, n), the probabilities of the entities."""
    capsules = as_tensor(capsules)
    return (F.sum(capsules * capsules, axis=-1) + 1e-12).sqrt()


@register_layer
class PrimaryCapsules(Module):
    """The PrimaryCaps layer: a convolution with ``num_capsules`` * ``capsule_dim`` filters over
    NHWC maps whose channels at each position are cut into ``num_capsules`` capsules of
    ``capsule_dim`` values, squashed: (batch, h, w, c) -> (batch, h' w' num_capsules,
    capsule_dim), the capsules ordered by row, column, then capsule (the paper's 32 channels of
    8-D capsules on a 6 x 6 grid: 1152 capsules). Sub-layer ``conv`` (:class:`Conv2D`, no
    activation: the squash is the non-linearity)."""

    def __init__(self, num_capsules: int = 32, capsule_dim: int = 8, kernel_size=9, stride=2,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_capsules = positive_int(num_capsules, "PrimaryCapsules: num_capsules")
        self.capsule_dim = positive_int(capsule_dim, "PrimaryCapsules: capsule_dim")
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = Conv2D(self.num_capsules * self.capsule_dim, kernel_size, stride=stride)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "NHWC images (batch, height, width, channels)")
        maps = self.conv(x)
        n, h, w, _ = maps.shape
        return squash(F.reshape(maps, n, h * w * self.num_capsules, self.capsule_dim))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = self.conv.compute_output_shape(input_shape)
        return (n, h * w * self.num_capsules, self.capsule_dim)

    def get_config(self) -> dict:
        return {"num_capsules": self.num_capsules, "capsule_dim": self.capsule_dim,
                "kernel_size": self.kernel_size, "stride": self.stride, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_capsules={self.num_capsules}, capsule_dim={self.capsule_dim}"


@register_layer
class CapsuleLayer(Module):
    """Capsules routed by agreement: child capsules (batch, n_in, d_in) -> ``num_capsules``
    parent capsules (batch, num_capsules, ``capsule_dim``).

        u_hat_{j|i} = u_i W_ij          (parameter ``weight`` (n_in, num_capsules, d_in, d_out))
        v = dynamic_routing(u_hat, routing_iterations)

    ``weight`` starts Glorot-uniform over (d_in, d_out); the routing logits b_ij are no
    parameters (they start at zero for every input). ``detach_agreement``: see
    :func:`lamina.functional.dynamic_routing` (by default the gradient flows through all the
    iterations, as in the authors' code)."""

    def __init__(self, num_capsules: int, capsule_dim: int, routing_iterations: int = 3,
                 detach_agreement: bool = False, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.num_capsules = positive_int(num_capsules, f"{who}: num_capsules")
        self.capsule_dim = positive_int(capsule_dim, f"{who}: capsule_dim")
        self.routing_iterations = positive_int(routing_iterations, f"{who}: routing_iterations")
        self.detach_agreement = bool(detach_agreement)

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, 3, "capsules (batch, n_in, d_in)")
        n_in, d_in = shape[1], shape[2]
        if n_in is None or d_in is None:
            raise ShapeError(f"{self._label()}: input shape {shape}; expected capsules (batch, n_in, d_in) with "
                             "n_in and d_in known")
        weight_shape = (n_in, self.num_capsules, d_in, self.capsule_dim)
        dtype = backend.get_default_dtype()
        self.add_parameter("weight", initializers.xavier_uniform(weight_shape, d_in, self.capsule_dim, dtype))
        self.built = True

    def predictions(self, u) -> Tensor:
        """u_hat_{j|i} = u_i W_ij: (batch, n_in, d_in) -> (batch, n_in, num_capsules, capsule_dim)."""
        u = as_tensor(u)
        n_in, _, d_in, _ = self.weight.shape
        if u.ndim != 3 or tuple(u.shape[1:]) != (n_in, d_in):
            raise input_error(self, u, f"capsules (batch, {n_in}, {d_in}): {n_in} child capsules of {d_in} "
                                       "dimensions, as the layer was built for")
        return F.einsum("bik,ijkd->bijd", u, self.weight)

    def forward(self, u) -> Tensor:
        return dynamic_routing(self.predictions(u), self.routing_iterations, self.detach_agreement)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, 3, "capsules (batch, n_in, d_in)")
        return (shape[0], self.num_capsules, self.capsule_dim)

    def get_config(self) -> dict:
        return {"num_capsules": self.num_capsules, "capsule_dim": self.capsule_dim,
                "routing_iterations": self.routing_iterations, "detach_agreement": self.detach_agreement,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"num_capsules={self.num_capsules}, capsule_dim={self.capsule_dim}, "
                f"routing_iterations={self.routing_iterations}")


@register_layer
class DigitCapsules(CapsuleLayer):
    """The DigitCaps layer: one capsule per class (10 of 16 dimensions by default), routed from
    the primary capsules with 3 iterations, as in the paper."""

    def __init__(self, num_capsules: int = 10, capsule_dim: int = 16, routing_iterations: int = 3,
                 detach_agreement: bool = False, name: str | None = None):
        super().__init__(num_capsules, capsule_dim, routing_iterations, detach_agreement, name)
