"""TimeSformer on NTHWC clips (batch, frames, height, width, channels).

TimeSformer (the clip checks here are shared with :mod:`lamina.models.videomae`):

TimeSformer (Bertasius et al. 2021, "Is Space-Time Attention All You Need for Video
Understanding?"): every frame cut into N = (H / p)(W / p) patches by one 1 x p x p / (1, p, p)
convolution (``patch_embed``, a 2-D patch embedding applied frame by frame), a learned spatial
position embedding ``pos_embed`` (1, 1 + N, D) (row 0 for the class token), a learned temporal
one ``time_embed`` (1, T, D) added to the patch tokens of each frame, then ``depth`` blocks
with one of three attentions:

    divided:  temporal attention over the T tokens of one patch position,
                  z'_{t,n} = z_{t,n} + W_fc MSA_time(LN(z_{., n}))_t
              then spatial attention within each frame, the class token joining every frame,
                  [c_t; s_{t,.}] = MSA_space(LN([z_cls; z'_{t,.}])),
                  z''_{t,n} = z'_{t,n} + s_{t,n},   z''_cls = z_cls + mean_t c_t
              then z += MLP(LN(z)) (the reference's code: the class token skips the temporal
              step and averages its T spatial outputs)
    joint:    plain attention over all 1 + T N tokens, z += MSA(LN(z)); z += MLP(LN(z))
    space:    each frame on its own with its own copy of the class token (no temporal
              embedding, no exchange between frames); the class tokens averaged over the frames
              at the end

The class token after ``norm`` goes through ``head``. The divided block costs
O(T N (T + N)) in attention against O((T N)^2) for the joint one.

Differences from the reference code: no dropout or drop-path; ``time_embed`` starts
N(0, 0.02^2) rather than at zero.
"""

from __future__ import annotations

import math

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["TIMESFORMER_ATTENTIONS", "TimeSformer", "TimeSformerBlock", "check_clip_shape", "check_clips",
           "clip_geometry"]

TIMESFORMER_ATTENTIONS = ("divided", "joint", "space")
LAYER_NORM_EPS = 1e-6
TOKEN_STD = 0.02


# -- attention along one axis ----------------------------------------------------------


class _Attend(Module):
    """softmax(Q_h K_h^T / sqrt(d)) V_h along axis -2 of (..., L, 3 D) projected tokens, every
    leading axis a separate sequence: -> (..., L, D)."""

    default_name = "attend"

    def __init__(self, num_heads: int, name: str | None = None):
        super().__init__(name=name)
        self.num_heads = num_heads

    def forward(self, qkv) -> Tensor:
        qkv = as_tensor(qkv)
        *lead, length, width = qkv.shape
        dim, heads = width // 3, self.num_heads
        sequences = math.prod(lead)
        split = F.reshape(qkv, sequences, length, 3, heads, dim // heads)
        q, k, v = (F.getitem(F.transpose(split, 2, 0, 3, 1, 4), i) for i in range(3))
        context = F.scaled_dot_product_attention(q, k, v)
        return F.reshape(F.transpose(context, 0, 2, 1, 3), *lead, length, dim)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 3)

    def macs(self, input_shapes, output_shapes) -> int:
        """Q K^T and A V for each sequence of one sample: 2 S L^2 D."""
        *lead, length, width = input_shapes[0]
        return 2 * math.prod(lead) * length * length * (width // 3)


class _AxisAttention(Block):
    """Multi-head self-attention (``qkv``, ``attend``, ``proj``) along axis -2."""

    default_name = "attn"

    def __init__(self, dim: int, num_heads: int, name: str | None = None):
        super().__init__(name=name)
        self.qkv = nn.Dense(3 * dim, name="qkv")
        self.attend = _Attend(num_heads, name="attend")
        self.proj = nn.Dense(dim, name="proj")

    def trace(self, shape, step):
        return step(self.proj, step(self.attend, step(self.qkv, shape)))

    def forward(self, x) -> Tensor:
        return self.proj(self.attend(self.qkv(x)))


def _attention(attention, fn: str) -> str:
    if attention not in TIMESFORMER_ATTENTIONS:
        raise ValueError(f"{fn}: attention must be one of {TIMESFORMER_ATTENTIONS}, got {attention!r}")
    return attention


# -- TimeSformer -------------------------------------------------------------------------


@register_layer
class TimeSformerBlock(Block):
    """One TimeSformer block of width ``dim`` for clips of ``num_frames`` frames (see the module
    docstring). Tokens: (B, 1 + T N, D), the class token then the patches frame by frame, for
    'divided' and 'joint'; (B, T, 1 + N, D), each frame with its class token, for 'space'.
    Sub-layers ``norm1``, ``attn`` (``qkv``, ``proj``), ``norm2``, ``mlp`` (``fc1``, ``fc2``) and
    for 'divided' also ``temporal_norm1``, ``temporal_attn``, ``temporal_fc``."""

    default_name = "timesformer_block"

    def __init__(self, dim: int, num_heads: int, num_frames: int, attention: str = "divided",
                 mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "TimeSformerBlock"
        self.dim = positive_int(dim, f"{fn}: dim")
        self.num_heads = positive_int(num_heads, f"{fn}: num_heads")
        self.num_frames = positive_int(num_frames, f"{fn}: num_frames")
        self.attention = _attention(attention, fn)
        self.mlp_ratio = float(mlp_ratio)
        if dim % num_heads:
            raise ValueError(f"{fn}: dim {dim} is not divisible by num_heads {num_heads}")
        if self.attention == "divided":
            self.temporal_norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="temporal_norm1")
            self.temporal_attn = _AxisAttention(dim, num_heads, name="temporal_attn")
            self.temporal_fc = nn.Dense(dim, name="temporal_fc")
        self.norm1 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm1")
        self.attn = _AxisAttention(dim, num_heads, name="attn")
        self.norm2 = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm2")
        self.mlp = timm_mlp(int(dim * self.mlp_ratio), dim, "mlp")

    def _patches_per_frame(self, shape) -> int:
        frames = self.num_frames
        if self.attention == "space":
            shape = check_shape_ndim(self, shape, 4, "frame tokens (batch, frames, 1 + patches, dim)")
            ok = shape[1] == frames and shape[2] is not None and shape[2] > 1 and shape[3] == self.dim
            patches = None if shape[2] is None else shape[2] - 1
            expected = f"(batch, {frames}, 1 + patches, {self.dim})"
        else:
            shape = check_shape_ndim(self, shape, 3, "tokens (batch, 1 + frames * patches, dim)")
            patches = None if shape[1] is None else (shape[1] - 1) // frames
            ok = patches is not None and patches > 0 and shape[1] == 1 + frames * patches and shape[2] == self.dim
            expected = f"(batch, 1 + {frames} * patches, {self.dim})"
        if not ok:
            raise ShapeError(f"{self._label()}: got tokens of shape {tuple(shape)}; expected {expected} "
                             f"({self.attention} attention)")
        return patches

    def trace(self, shape, step):
        patches = self._patches_per_frame(shape)
        batch, frames, dim = shape[0], self.num_frames, self.dim
        if self.attention == "divided":
            step(self.temporal_attn, step(self.temporal_norm1, (batch, patches, frames, dim)))
            step(self.temporal_fc, (batch, frames, patches, dim))
            step(self.attn, step(self.norm1, (batch, frames, patches + 1, dim)))
        else:
            step(self.attn, step(self.norm1, shape))
        step(self.mlp, step(self.norm2, shape))
        return tuple(shape)

    def _divided(self, x: Tensor) -> Tensor:
        batch, frames, dim = x.shape[0], self.num_frames, self.dim
        patches = (x.shape[1] - 1) // frames
        cls = F.getitem(x, (slice(None), slice(0, 1)))
        z = F.reshape(F.getitem(x, (slice(None), slice(1, None))), batch, frames, patches, dim)
        by_position = F.transpose(z, 0, 2, 1, 3)                                  # (B, N, T, D)
        temporal = self.temporal_attn(self.temporal_norm1(by_position))
        z = F.add(z, self.temporal_fc(F.transpose(temporal, 0, 2, 1, 3)))
        framed = F.concat([F.broadcast_to(F.reshape(cls, batch, 1, 1, dim), (batch, frames, 1, dim)), z], axis=2)
        spatial = self.attn(self.norm1(framed))                                  # (B, T, 1 + N, D)
        cls = F.add(cls, F.mean(F.getitem(spatial, (slice(None), slice(None), slice(0, 1))), axis=1))
        z = F.add(z, F.getitem(spatial, (slice(None), slice(None), slice(1, None))))
        return F.concat([cls, F.reshape(z, batch, frames * patches, dim)], axis=1)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        self._patches_per_frame(x.shape)
        if self.attention == "divided":
            x = self._divided(x)
        else:
            x = F.add(x, self.attn(self.norm1(x)))
        return F.add(x, self.mlp(self.norm2(x)))

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "num_frames": self.num_frames,
                "attention": self.attention, "mlp_ratio": self.mlp_ratio, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.dim}, heads={self.num_heads}, frames={self.num_frames}, attention={self.attention}"


def clip_geometry(layer, num_frames, image_size, patch_size, in_channels, fn: str, tubelet: int = 1):
    layer.num_frames = positive_int(num_frames, f"{fn}: num_frames")
    layer.image_size = pair(image_size, f"{fn}: image_size")
    layer.patch_size = positive_int(patch_size, f"{fn}: patch_size")
    layer.in_channels = positive_int(in_channels, f"{fn}: in_channels")
    if any(n % layer.patch_size for n in layer.image_size):
        raise ValueError(f"{fn}: image_size {layer.image_size} must be a multiple of patch_size {layer.patch_size}")
    if layer.num_frames % tubelet:
        raise ValueError(f"{fn}: num_frames {layer.num_frames} must be a multiple of tubelet_size {tubelet}")
    layer.grid_size = (layer.image_size[0] // layer.patch_size, layer.image_size[1] // layer.patch_size)
    layer.patches_per_frame = layer.grid_size[0] * layer.grid_size[1]


def check_clip_shape(layer, shape) -> tuple:
    shape = check_shape_ndim(layer, shape, 5, "a 5-D NTHWC clip shape (batch, frames, height, width, channels)")
    expected = (layer.num_frames, *layer.image_size, layer.in_channels)
    if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
        raise ShapeError(f"{layer._label()}: got clips of shape {tuple(shape)}; the model was made for "
                         f"(batch, {', '.join(map(str, expected))})")
    return tuple(shape)


def check_clips(layer, clips) -> Tensor:
    x = as_tensor(clips)
    if x.ndim != 5 or tuple(x.shape[1:]) != (layer.num_frames, *layer.image_size, layer.in_channels):
        raise input_error(layer, x, f"NTHWC clips (batch, {layer.num_frames}, {layer.image_size[0]}, "
                                    f"{layer.image_size[1]}, {layer.in_channels})")
    return x


@register_layer
class TimeSformer(Block):
    """The TimeSformer classifier of the module docstring on (B, ``num_frames``,
    ``image_size``, ``in_channels``) clips: sub-layers ``patch_embed`` (a 1 x p x p Conv3D),
    ``blocks`` (``depth`` :class:`TimeSformerBlock`), ``norm``, ``head``; parameters
    ``cls_token`` (1, 1, D), ``pos_embed`` (1, 1 + N, D) and, unless ``attention`` is
    'space', ``time_embed`` (1, T, D). Outputs (B, num_classes) scores."""

    default_name = "timesformer"

    def __init__(self, num_frames: int = 8, image_size=224, patch_size: int = 16, in_channels: int = 3,
                 dim: int = 768, depth: int = 12, heads: int = 12, num_classes: int = 400,
                 attention: str = "divided", mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "TimeSformer"
        clip_geometry(self, num_frames, image_size, patch_size, in_channels, fn)
        self.dim = positive_int(dim, f"{fn}: dim")
        self.depth = positive_int(depth, f"{fn}: depth")
        self.heads = positive_int(heads, f"{fn}: heads")
        self.num_classes = positive_int(num_classes, f"{fn}: num_classes")
        self.attention = _attention(attention, fn)
        self.mlp_ratio = float(mlp_ratio)
        p = self.patch_size
        self.patch_embed = nn.Conv3D(dim, (1, p, p), stride=(1, p, p), name="patch_embed")
        self.blocks = nn.Sequential(*[TimeSformerBlock(dim, heads, self.num_frames, attention, mlp_ratio,
                                                       name=str(k)) for k in range(depth)], name="blocks")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.head = nn.Dense(num_classes, name="head")

    def _tokens_shape(self, batch) -> tuple:
        frames, patches = self.num_frames, self.patches_per_frame
        if self.attention == "space":
            return (batch, frames, 1 + patches, self.dim)
        return (batch, 1 + frames * patches, self.dim)

    def trace(self, shape, step):
        shape = check_clip_shape(self, shape)
        step(self.patch_embed, shape)
        step(self.blocks, self._tokens_shape(shape[0]))
        return step(self.head, step(self.norm, (shape[0], self.dim)))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        normal, d = initializers.normal(TOKEN_STD), self.dim
        self.add_parameter("cls_token", normal((1, 1, d), 1, 1, dtype))
        self.add_parameter("pos_embed", normal((1, 1 + self.patches_per_frame, d), 1, 1, dtype))
        if self.attention != "space":
            self.add_parameter("time_embed", normal((1, self.num_frames, d), 1, 1, dtype))
        if self.attention == "divided" and not initializers.is_meta():
            for block in list(self.blocks)[1:]:      # the reference starts later temporal_fc layers at zero
                block.temporal_fc.weight.data[...] = 0
                block.temporal_fc.bias.data[...] = 0

    def forward_features(self, clips) -> Tensor:
        """The class token's (B, D) features after ``norm``."""
        x = check_clips(self, clips)
        batch, frames, patches, d = x.shape[0], self.num_frames, self.patches_per_frame, self.dim
        z = F.reshape(self.patch_embed(x), batch, frames, patches, d)
        z = F.add(z, F.reshape(F.getitem(self.pos_embed, (0, slice(1, None))), 1, 1, patches, d))
        cls = F.add(self.cls_token, F.getitem(self.pos_embed, (slice(None), slice(0, 1))))      # (1, 1, D)
        if self.attention == "space":
            cls = F.broadcast_to(F.reshape(cls, 1, 1, 1, d), (batch, frames, 1, d))
            z = self.blocks(F.concat([cls, z], axis=2))
            return self.norm(F.mean(F.getitem(z, (slice(None), slice(None), 0)), axis=1))
        z = F.add(z, F.reshape(self.time_embed, 1, frames, 1, d))
        z = F.concat([F.broadcast_to(cls, (batch, 1, d)), F.reshape(z, batch, frames * patches, d)], axis=1)
        return self.norm(F.getitem(self.blocks(z), (slice(None), 0)))

    def forward(self, clips) -> Tensor:
        return self.head(self.forward_features(clips))

    def get_config(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": list(self.image_size), "patch_size": self.patch_size,
                "in_channels": self.in_channels, "dim": self.dim, "depth": self.depth, "heads": self.heads,
                "num_classes": self.num_classes, "attention": self.attention, "mlp_ratio": self.mlp_ratio,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"frames={self.num_frames}, patch_size={self.patch_size}, dim={self.dim}, depth={self.depth}, "
                f"attention={self.attention}")
