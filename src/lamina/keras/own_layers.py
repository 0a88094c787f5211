"""Keras layers that are small lamina classes of their own rather than a lamina layer under
Keras's name: :class:`MultiHeadAttention` (Keras's arguments and masks, on
:class:`lamina.nn.MultiHeadAttention` or :class:`lamina.keras.attention.ProjectedAttention`),
:class:`Rescaling` and :class:`Resizing`. Registered as ``KerasMultiHeadAttention``,
``KerasRescaling`` and ``KerasResizing``; re-exported by :mod:`lamina.keras.layers`.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.keras.attention import ProjectedAttention
from lamina.keras.masking import mask_of
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["MultiHeadAttention", "Rescaling", "Resizing"]


@register_layer(name="KerasMultiHeadAttention")
class MultiHeadAttention(Module):
    """Keras's multi-head attention: ``mha(query, value, key=None)``, ``num_heads`` heads with
    keys of ``key_dim`` and values of ``value_dim`` (default ``key_dim``) features each, the
    output projected back to the query's E features.

    When the value heads are as wide as the key heads and the query, value (and key, if passed
    positionally) share E, it is built on the first call as lamina's
    :class:`lamina.nn.MultiHeadAttention` with ``embed_dim=E`` and ``head_dim=key_dim``;
    otherwise as :class:`lamina.keras.attention.ProjectedAttention` (four Dense projections).
    Either way Keras's parameter count: E_q h d_k + E_k h d_k + E_v h d_v + h d_v E_q weights
    plus 2 h d_k + h d_v + E_q biases. ``attention_mask`` (N, T_q, T_k), True where a query
    may attend, and-ed as Keras does with the query's mask (rows) and the value's and key's
    (columns): the masks the tensors carry, or ``query_mask=``, ``value_mask=``,
    ``key_mask=`` (N, T); a fully masked query row gets zero attention weights (no NaN), its
    output the output projection's bias; the output carries the query's mask. ``use_causal_mask``;
    ``return_attention_scores`` also returns the weights (N, h, T_q, T_k). A key of another
    width than the value must be passed positionally (``mha(query, value, key)``) when
    ``value_dim`` equals ``key_dim``, so that the first call sees it.
    """

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, dropout: float = 0.0,
                 use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name: str | None = None):
        super().__init__(name=name)
        self.num_heads, self.key_dim, self.dropout = int(num_heads), int(key_dim), float(dropout)
        self.value_dim = self.key_dim if value_dim is None else int(value_dim)
        if min(self.num_heads, self.key_dim, self.value_dim) < 1:
            raise ValueError(f"MultiHeadAttention: num_heads, key_dim and value_dim must be positive, got "
                             f"{num_heads!r}, {key_dim!r}, {value_dim!r}")
        self.use_bias, self.kernel_initializer, self.bias_initializer = bool(use_bias), kernel_initializer, \
            bias_initializer

    def build(self, input_shape) -> None:
        shapes = list(input_shape) if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
        widths = {shape[-1] for shape in shapes}
        if self.value_dim == self.key_dim and len(widths) == 1:
            self.attention = nn.MultiHeadAttention(shapes[0][-1], self.num_heads, use_bias=self.use_bias,
                                                   dropout=self.dropout, kernel_init=self.kernel_initializer,
                                                   bias_init=self.bias_initializer, head_dim=self.key_dim)
        else:
            self.attention = ProjectedAttention(self.num_heads, self.key_dim, self.value_dim, dropout=self.dropout,
                                                use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                                                bias_initializer=self.bias_initializer)
        self.built = True

    def forward(self, query, value, key=None, attention_mask=None, return_attention_scores: bool = False,
                use_causal_mask: bool = False, training=None, query_mask=None, value_mask=None, key_mask=None):
        attention_mask = self._combined_mask(query, value, key, attention_mask, query_mask, value_mask, key_mask)
        if isinstance(self.attention, ProjectedAttention):
            return self.attention(query, value, key, attention_mask=attention_mask,
                                  return_attention_scores=return_attention_scores, use_causal_mask=use_causal_mask)
        key = value if key is None else key
        return self.attention(query, key, value, mask=attention_mask, causal=use_causal_mask,
                              return_weights=return_attention_scores)

    @staticmethod
    def _combined_mask(query, value, key, attention_mask, query_mask=None, value_mask=None, key_mask=None):
        """Keras's attention mask: ``attention_mask`` and-ed with the query's mask (N, T_q, 1),
        the value's and the key's (N, 1, T_k) (each given, or the one the tensor carries; the
        key's only for a key other than the value). A query row so masked that it attends to
        no key gets zero weights, hence a zero context and the output projection's bias (as
        Keras's masked softmax, which multiplies the weights by the mask)."""
        def given(mask, tensor):
            mask = mask_of(tensor) if mask is None else mask
            return None if mask is None else np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)

        t_q, t_k = query.shape[1], value.shape[1]
        masks = []
        q_mask = given(query_mask, query)
        if q_mask is not None:
            masks.append(q_mask[:, :, None])
        for mask in (given(value_mask, value), None if key is None or key is value else given(key_mask, key)):
            if mask is not None:
                masks.append(mask[:, None, :])
        if not masks:
            return attention_mask
        auto = np.logical_and.reduce([np.broadcast_to(m, (m.shape[0], t_q, t_k)) for m in masks])
        if attention_mask is None:
            return auto
        given_mask = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
        return given_mask.astype(bool) & auto

    def compute_mask(self, inputs, mask=None):
        """The query's mask."""
        return mask

    def get_config(self) -> dict:
        return {"num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
                "dropout": self.dropout, "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, "name": self.name}


@register_layer(name="KerasRescaling")
class Rescaling(Module):
    """y = x scale + offset (e.g. ``Rescaling(1 / 255)`` for pixel values)."""

    def __init__(self, scale: float, offset: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        return x * self.scale + self.offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"scale": self.scale, "offset": self.offset, "name": self.name}


@register_layer(name="KerasResizing")
class Resizing(Module):
    """Resize NHWC images to ``height`` x ``width`` ('bilinear', 'nearest', 'bicubic', 'area'),
    sampling at pixel centres (``align_corners=False``) without antialiasing."""

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        if crop_to_aspect_ratio:
            raise ValueError("Resizing: crop_to_aspect_ratio is not supported")
        self.height, self.width, self.interpolation = int(height), int(width), interpolation

    def forward(self, x) -> Tensor:
        align = False if self.interpolation in ("bilinear", "bicubic") else None
        return F.interpolate(x, size=(self.height, self.width), mode=self.interpolation, align_corners=align)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self) -> dict:
        return {"height": self.height, "width": self.width, "interpolation": self.interpolation, "name": self.name}
