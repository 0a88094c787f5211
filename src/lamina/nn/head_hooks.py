"""A hook point for each attention head's output (TransformerLens's ``hook_z``).

A :class:`~lamina.nn.MultiHeadAttention` mixes its heads through the output projection,

    out = concat(z_1, ..., z_h) W_o + b_o = sum_i z_i W_o[i d:(i + 1) d] + b_o,

so forward hooks on the layer only see the sum. :meth:`MultiHeadAttention.enable_head_hooks`
gives the layer a sub-module ``head_outputs`` (a :class:`HeadOutputs`) that the per-head
contexts z pass through, as one (N, T, h, d) tensor (batch, position, head, head feature),
just before the projection: a forward hook on it reads them, and one that returns a tensor of
that shape replaces them. The module passes its input on unchanged, so a hooked but unpatched
layer gives bit-identical outputs; it has no weights, and the layer's config and state dict do
not change. :meth:`MultiHeadAttention.disable_head_hooks` removes it again.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["HEAD_OUTPUTS", "HeadOutputs"]

HEAD_OUTPUTS = "head_outputs"
"""The name of the hook point's sub-module in an attention layer."""


@register_layer
class HeadOutputs(Module):
    """z -> z: the heads' contexts (N, T, h, d) of an attention layer, before its output
    projection, passed on unchanged so that forward hooks can read or replace them."""

    def __init__(self, num_heads: int | None = None, head_dim: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.num_heads = num_heads
        self.head_dim = head_dim

    def forward(self, z) -> Tensor:
        return as_tensor(z)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or (self.num_heads is not None and shape[2] not in (None, self.num_heads)):
            raise ShapeError(f"HeadOutputs: got an input shape {shape}; expected the heads' contexts "
                             f"(batch, time, {self.num_heads}, {self.head_dim})")
        return shape

    def get_config(self) -> dict:
        return {"num_heads": self.num_heads, "head_dim": self.head_dim, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"
