"""Mask2Former's multi-scale deformable-attention pixel decoder (Cheng et al. 2022, Sec. 4 and
App. A; the encoder of Zhu et al. 2021, "Deformable DETR"), as the option
``Mask2Former(pixel_decoder="msdeform")``.

The coarse levels' projected features z_3 = lateral_3(c_3) (1/8) and z_2 = lateral_2(c_2)
(1/4) are flattened into one sequence of S = H_3 W_3 + H_2 W_2 rows and refined by
``encoder_layers`` Deformable DETR encoder layers (:class:`DeformableDetrEncoderLayer`):

    pos = sine encoding of each row's cell + e_l      (e_l this decoder's level embedding)
    x   = norm1(x + MSDeformAttn(x + pos, r, x))      (each row reads P points per head on both
                                                       levels around its cell centre r)
    x   = norm2(x + FFN(x))

The outputs, split back into maps (p_3, p_2), are what the transformer decoder attends to;
the 1/2 level stays FPN-style: p_1 = lateral_1(c_1) + up2(p_2), E = mask_features(p_1).
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.functional.ms_deform_attn import deformable_reference_points
from lamina.models.deformable_detr import DeformableDetrEncoderLayer
from lamina.models.detr_common import sine_position_encoding
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["PIXEL_DECODERS", "MSDeformPixelEncoder"]

PIXEL_DECODERS = ("fpn", "msdeform")


class MSDeformPixelEncoder(Module):
    """The deformable-attention encoder over the coarse levels (module docstring):
    ``level_embed`` (levels, d) and ``layers`` (``num_layers`` encoder layers of ``n_heads``
    heads, ``n_points`` points per head and level, a ``d_ffn`` feed-forward network, no
    dropout). Weights are created at construction.

    ``encoder(maps)``: a list of (N, h_l, w_l, d) maps -> the refined maps, same shapes."""

    default_name = "pixel_encoder"

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, num_layers: int = 3, n_points: int = 4,
                 n_levels: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "MSDeformPixelEncoder: d_model")
        self.n_levels = positive_int(n_levels, "MSDeformPixelEncoder: n_levels")
        self.level_embed = nn.Embedding(n_levels, d_model, name="level_embed")
        self.level_embed.build((None,))
        self.layers = nn.ModuleList(DeformableDetrEncoderLayer(d_model, d_ffn, 0.0, n_levels, n_heads, n_points,
                                                               name=str(i))
                                    for i in range(positive_int(num_layers, "MSDeformPixelEncoder: num_layers")))

    def forward(self, maps: list) -> list[Tensor]:
        if len(maps) != self.n_levels:
            raise ValueError(f"{self._label()}: expected {self.n_levels} maps, got {len(maps)}")
        n, d = maps[0].shape[0], self.d_model
        shapes = [tuple(int(s) for s in m.shape[1:3]) for m in maps]
        x = F.concat([F.reshape(m, n, h * w, d) for m, (h, w) in zip(maps, shapes)], axis=1)
        pos = F.concat([F.add(Tensor(backend.xp.asarray(
            sine_position_encoding(h, w, d // 2, dtype=x.dtype).reshape(1, h * w, d))), self.level_embed.weight[level])
                        for level, (h, w) in enumerate(shapes)], axis=1)
        points = deformable_reference_points(shapes, np.ones((n, len(shapes), 2)), dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, pos, points, shapes)
        out, start = [], 0
        for h, w in shapes:
            out.append(F.reshape(x[:, start:start + h * w], n, h, w, d))
            start += h * w
        return out
