"""Multi-scale deformable attention layers (Zhu et al. 2021, "Deformable DETR").

:class:`MultiScaleDeformableAttention` lets each query predict, per head m, level l and point p,
an offset from its reference point and an attention weight, and reads the value maps there
(:func:`lamina.functional.ms_deform_attn`):

    value     = value_proj(input_flatten), zero at padded positions, split into M heads
    offsets   = sampling_offsets(query)              (N, Lq, M, L, P, 2)
    weights   = softmax over the L P points of attention_weights(query)
    locations = ref + offsets / (W_l, H_l)           for reference points (x, y)
              = ref_xy + offsets / P * ref_wh / 2    for reference boxes (cx, cy, w, h)
    out       = output_proj(ms_deform_attn(value, shapes, starts, locations, weights))

The offsets start as the paper's pattern: zero weights and, as bias, head m's direction
(cos, sin)(2 pi m / M) scaled so that its larger component is 1, times p + 1 for point p (the
same on every level); the attention weights start uniform (zero weights and bias).

:class:`DeformableTransformerEncoderLayer` is one post-norm encoder layer of Deformable DETR on
the flattened multi-scale features x (N, S, d) with positions ``pos``:

    x = norm1(x + dropout1(self_attn(x + pos + e_level, ref, x, ...)))
    x = norm2(x + dropout3(linear2(dropout2(relu(linear1(x))))))

e_level the learned embedding of each row's level (``level_embed``, (L, d)).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu, softmax
from lamina.functional.indexing import masked_fill
from lamina.functional.ms_deform_attn import ms_deform_attn, spatial_shape_list
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["DeformableTransformerEncoderLayer", "MultiScaleDeformableAttention", "offset_pattern"]


def offset_pattern(n_heads: int, n_levels: int, n_points: int, dtype=None):
    """The initial sampling offsets (M, L, P, 2): head m's direction (cos, sin)(2 pi m / M)
    divided by its larger absolute component, times p + 1 for point p."""
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    thetas = xp.arange(n_heads, dtype=xp.float64) * (2.0 * math.pi / n_heads)
    directions = xp.stack([xp.cos(thetas), xp.sin(thetas)], axis=-1)
    directions = directions / xp.abs(directions).max(axis=-1, keepdims=True)
    scales = xp.arange(1, n_points + 1, dtype=xp.float64)
    pattern = directions[:, None, None, :] * scales[None, None, :, None]
    return xp.broadcast_to(pattern, (n_heads, n_levels, n_points, 2)).astype(dtype)


@register_layer
class MultiScaleDeformableAttention(Module):
    """Deformable DETR's MSDeformAttn (module docstring), d_model split into ``n_heads`` heads,
    ``n_points`` points on each of ``n_levels`` levels. Sublayers (the reference's names):
    ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``.

    ``layer(query, reference_points, input_flatten, spatial_shapes, level_start_index,
    padding_mask=None)``: query (N, Lq, d), reference_points (N, Lq, L, 2) points or
    (N, Lq, L, 4) boxes normalised to [0, 1], input_flatten (N, S, d), spatial_shapes (L, 2),
    padding_mask (N, S) boolean, True at padded positions. Returns (N, Lq, d). The weights are
    made at construction (d_model fixes every shape), in the default float type.
    """

    default_name = "msda"

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 name: str | None = None):
        super().__init__(name=name)
        what = type(self).__name__
        self.d_model = positive_int(d_model, f"{what}: d_model")
        self.n_levels = positive_int(n_levels, f"{what}: n_levels")
        self.n_heads = positive_int(n_heads, f"{what}: n_heads")
        self.n_points = positive_int(n_points, f"{what}: n_points")
        if d_model % n_heads:
            raise ValueError(f"{what}: d_model {d_model} is not divisible by n_heads {n_heads}")
        samples = n_heads * n_levels * n_points
        self.sampling_offsets = Dense(2 * samples, kernel_init="zeros", name="sampling_offsets")
        self.attention_weights = Dense(samples, kernel_init="zeros", name="attention_weights")
        self.value_proj = Dense(d_model, kernel_init="xavier_uniform", name="value_proj")
        self.output_proj = Dense(d_model, kernel_init="xavier_uniform", name="output_proj")
        self.build()

    def build(self, input_shape=None) -> None:
        """Make the weights (at construction: d_model fixes every shape)."""
        for layer in self.children():
            layer.build((None, None, self.d_model))
            layer.built = True
        bias = self.sampling_offsets.bias
        bias.data[...] = offset_pattern(self.n_heads, self.n_levels, self.n_points, bias.dtype).reshape(-1)
        self.built = True

    def _check(self, query: Tensor, reference_points: Tensor, value: Tensor, shapes) -> None:
        d, levels = self.d_model, self.n_levels
        for x, what in ((query, "query"), (value, "input_flatten")):
            if x.ndim != 3 or x.shape[-1] != d:
                raise input_error(self, x, f"{what} of shape (batch, length, {d})")
        n, lq = query.shape[0], query.shape[1]
        if tuple(reference_points.shape[:3]) != (n, lq, levels) or reference_points.shape[3:] not in ((2,), (4,)):
            raise ShapeError(f"{self._label()}: expected reference_points of shape ({n}, {lq}, {levels}, 2 or 4), "
                             f"got shape {tuple(reference_points.shape)}")
        if len(shapes) != levels:
            raise ShapeError(f"{self._label()}: expected {levels} spatial shapes, got {shapes}")
        if value.shape[0] != n:
            raise ShapeError(f"{self._label()}: query of shape {tuple(query.shape)} and input_flatten of shape "
                             f"{tuple(value.shape)} differ in batch size")

    def forward(self, query, reference_points, input_flatten, spatial_shapes, level_start_index=None,
                padding_mask=None) -> Tensor:
        query, reference_points, input_flatten = (as_tensor(t) for t in (query, reference_points, input_flatten))
        shapes = spatial_shape_list(spatial_shapes, self._label())
        self._check(query, reference_points, input_flatten, shapes)
        n, lq, _ = query.shape
        m, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            mask = backend.xp.asarray(padding_mask.data if isinstance(padding_mask, Tensor) else padding_mask)
            if mask.shape != tuple(input_flatten.shape[:2]):
                raise ShapeError(f"{self._label()}: expected a padding_mask of shape {tuple(input_flatten.shape[:2])} "
                                 f"(N, S), got shape {tuple(mask.shape)}")
            value = masked_fill(value, mask.astype(bool)[..., None], 0.0)
        value = value.reshape(n, input_flatten.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).reshape(n, lq, m, levels, points, 2)
        weights = softmax(self.attention_weights(query).reshape(n, lq, m, levels * points), axis=-1)
        weights = weights.reshape(n, lq, m, levels, points)
        if reference_points.shape[-1] == 2:
            sizes = backend.xp.asarray([(w, h) for h, w in shapes], dtype=offsets.dtype)
            locations = reference_points.reshape(n, lq, 1, levels, 1, 2) + offsets / sizes[:, None, :]
        else:
            boxes = reference_points.reshape(n, lq, 1, levels, 1, 4)
            locations = boxes[..., :2] + offsets * (boxes[..., 2:] * (0.5 / points))
        out = ms_deform_attn(value, shapes, level_start_index, locations, weights)
        return self.output_proj(out)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "n_levels": self.n_levels, "n_heads": self.n_heads,
                "n_points": self.n_points, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, n_points={self.n_points}"


@register_layer
class DeformableTransformerEncoderLayer(Module):
    """One Deformable DETR encoder layer (module docstring): ``self_attn`` (a
    :class:`MultiScaleDeformableAttention`), ``level_embed`` (L, d), the feed-forward network
    ``linear1`` (d_ffn units), ``linear2``, and the post-norms ``norm1``, ``norm2``.

    ``layer(src, pos, reference_points, spatial_shapes, level_start_index=None,
    padding_mask=None)``: src and pos (N, S, d); reference_points (N, S, L, 2) as from
    :func:`deformable_reference_points`. Returns (N, S, d).
    """

    default_name = "encoder_layer"

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, f"{type(self).__name__}: d_model")
        self.d_ffn = positive_int(d_ffn, f"{type(self).__name__}: d_ffn")
        self.dropout_rate = float(dropout)
        self.self_attn = MultiScaleDeformableAttention(d_model, n_levels, n_heads, n_points, name="self_attn")
        self.dropout1 = Dropout(dropout, name="dropout1")
        self.norm1 = LayerNorm(-1, name="norm1")
        self.linear1 = Dense(d_ffn, kernel_init="xavier_uniform", name="linear1")
        self.dropout2 = Dropout(dropout, name="dropout2")
        self.linear2 = Dense(d_model, kernel_init="xavier_uniform", name="linear2")
        self.dropout3 = Dropout(dropout, name="dropout3")
        self.norm2 = LayerNorm(-1, name="norm2")
        self.build()

    def build(self, input_shape=None) -> None:
        """Make the weights (at construction: d_model and d_ffn fix every shape)."""
        d = self.d_model
        for layer in self.children():
            if layer is not self.self_attn:
                layer.build((None, None, self.d_ffn if layer is self.linear2 else d))
            layer.built = True
        dtype = backend.get_default_dtype()
        levels = self.self_attn.n_levels
        self.add_parameter("level_embed", initializers.normal(std=1.0)((levels, d), d, d, dtype))
        self.built = True

    def level_positions(self, pos: Tensor, shapes) -> Tensor:
        """pos plus each row's level embedding: level l's H_l W_l rows get level_embed[l]."""
        xp = backend.xp
        sizes = [h * w for h, w in shapes]
        if pos.shape[1] != sum(sizes):
            raise ShapeError(f"{self._label()}: pos of shape {tuple(pos.shape)} has {pos.shape[1]} rows, the "
                             f"spatial shapes {shapes} sum to {sum(sizes)}")
        level_of_row = xp.repeat(xp.arange(len(sizes)), sizes)
        return pos + self.level_embed[level_of_row]

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index=None,
                padding_mask=None) -> Tensor:
        src, pos = as_tensor(src), as_tensor(pos)
        shapes = spatial_shape_list(spatial_shapes, self._label())
        query = src + self.level_positions(pos, shapes)
        attended = self.self_attn(query, reference_points, src, shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        update = self.linear2(self.dropout2(relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(update))

    def get_config(self) -> dict:
        attn = self.self_attn
        return {"d_model": self.d_model, "d_ffn": self.d_ffn, "dropout": self.dropout_rate,
                "n_levels": attn.n_levels, "n_heads": attn.n_heads, "n_points": attn.n_points, "name": self.name}
