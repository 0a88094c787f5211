"""Video transformers on NTHWC clips (batch, frames, height, width, channels).

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

VideoMAE (Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training"): tubelets of t x p x p pixels embedded by one 3-D
convolution of that kernel and stride (``patch_embed.proj``), L = (T / t)(H / p)(W / p)
tokens (read tubelet-time, row, column) plus the fixed 1-D sinusoid table of the reference,

    E[l, 2i] = sin(l / 10000^(2i / D)),   E[l, 2i + 1] = cos(l / 10000^(2i / D)),

tube masking (:func:`tube_masking`: the same random int(rho N) of the N spatial positions
hidden in every tubelet slice, rho = 0.9 by default), the encoder (``blocks``, ``norm``) on
the visible tokens only, ``encoder_to_decoder`` (no bias) to a narrow decoder that sees
[visible + E'_visible; mask_token + E'_masked], and ``decoder_head`` predicting the
t p p C pixels of the masked tubelets only. The targets (:func:`tubelet_targets`) are each
tubelet's pixels, with ``norm_pix_loss`` standardised per tubelet and channel by their mean
and unbiased standard deviation, (x - mean) / (std + 1e-6) (the reference's form, not MAE's
sqrt(var + 1e-6)); the loss is the mean squared error over
the masked tubelets. :class:`VideoMAEClassifier` is the encoder on whole clips with mean
pooling, ``fc_norm`` and a head, for fine-tuning (:meth:`VideoMAEClassifier.from_videomae`).

Differences from the reference code: no dropout or drop-path; ``time_embed`` starts
N(0, 0.02^2) rather than at zero; pixels are taken as given (the reference undoes the ImageNet
normalisation before making targets).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.models.mae import vit_blocks
from lamina.models.mlp_mixer import timm_mlp
from lamina.nn import init as initializers
from lamina.nn.layer import check_shape_ndim, input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["TIMESFORMER_ATTENTIONS", "TimeSformer", "TimeSformerBlock", "VideoMAE", "VideoMAEClassifier",
           "sinusoid_table", "tube_masking", "tubelet_targets"]

TIMESFORMER_ATTENTIONS = ("divided", "joint", "space")
LAYER_NORM_EPS = 1e-6
TOKEN_STD = 0.02
NORM_PIX_EPS = 1e-6


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


def _clip_geometry(layer, num_frames, image_size, patch_size, in_channels, fn: str, tubelet: int = 1):
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


def _check_clip_shape(layer, shape) -> tuple:
    shape = check_shape_ndim(layer, shape, 5, "a 5-D NTHWC clip shape (batch, frames, height, width, channels)")
    expected = (layer.num_frames, *layer.image_size, layer.in_channels)
    if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
        raise ShapeError(f"{layer._label()}: got clips of shape {tuple(shape)}; the model was made for "
                         f"(batch, {', '.join(map(str, expected))})")
    return tuple(shape)


def _check_clips(layer, clips) -> Tensor:
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
        _clip_geometry(self, num_frames, image_size, patch_size, in_channels, fn)
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
        shape = _check_clip_shape(self, shape)
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
        x = _check_clips(self, clips)
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


# -- VideoMAE ----------------------------------------------------------------------------


def sinusoid_table(length: int, dim: int) -> np.ndarray:
    """The reference's fixed 1-D table (length, dim): E[l, 2i] = sin(l / 10000^(2i / dim)),
    E[l, 2i + 1] = cos(l / 10000^(2i / dim)); float64."""
    length = positive_int(length, "sinusoid_table: length")
    dim = positive_int(dim, "sinusoid_table: dim")
    exponent = 2.0 * (np.arange(dim) // 2) / dim
    angles = np.arange(length, dtype=np.float64)[:, None] / np.power(10000.0, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles


def _ratio(mask_ratio, fn: str) -> float:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, numbers.Real) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"{fn}: mask_ratio must be a number in (0, 1), got {mask_ratio!r}")
    return float(mask_ratio)


def tube_masking(batch: int, time_slices: int, patches_per_frame: int, mask_ratio: float = 0.9,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Tube masks (batch, time_slices * patches_per_frame), True where hidden: for each clip
    int(mask_ratio * patches_per_frame) spatial positions drawn without replacement, hidden
    in every time slice (tokens ordered slice by slice). ``rng`` defaults to
    :func:`lamina.backend.rng`."""
    fn = "tube_masking"
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 0:
        raise ValueError(f"{fn}: batch must be an int >= 0, got {batch!r}")
    time_slices = positive_int(time_slices, f"{fn}: time_slices")
    patches = positive_int(patches_per_frame, f"{fn}: patches_per_frame")
    hidden = int(_ratio(mask_ratio, fn) * patches)
    if not 0 < hidden < patches:
        raise ValueError(f"{fn}: mask_ratio {mask_ratio} hides {hidden} of {patches} positions per frame; at least "
                         "one must be hidden and one visible")
    rng = backend.rng() if rng is None else rng
    order = np.argsort(rng.random((batch, patches)), axis=1)
    frame_mask = np.zeros((batch, patches), dtype=bool)
    np.put_along_axis(frame_mask, order[:, :hidden], True, axis=1)
    return np.tile(frame_mask, (1, time_slices))


def tubelet_targets(clips, tubelet_size: int, patch_size: int, normalize: bool = True) -> Tensor:
    """(B, T, H, W, C) clips -> (B, L, t p p C) tubelet pixels, tubelets in (time, row,
    column) order, each laid out (frame, row, column, channel). ``normalize``: each tubelet's
    pixels standardised per channel, (x - mean) / (std + 1e-6) (unbiased std)."""
    x = as_tensor(clips)
    t = positive_int(tubelet_size, "tubelet_targets: tubelet_size")
    p = positive_int(patch_size, "tubelet_targets: patch_size")
    if x.ndim != 5 or x.shape[1] % t or x.shape[2] % p or x.shape[3] % p:
        raise ShapeError(f"tubelet_targets: expected NTHWC clips whose frames are a multiple of {t} and height and "
                         f"width of {p}, got shape {x.shape}")
    b, frames, h, w, c = x.shape
    grid = F.reshape(x, b, frames // t, t, h // p, p, w // p, p, c)
    tubes = F.reshape(F.transpose(grid, 0, 1, 3, 5, 2, 4, 6, 7), b, (frames // t) * (h // p) * (w // p), t * p * p, c)
    if normalize:
        mean = F.mean(tubes, axis=2, keepdims=True)
        var = F.var(tubes, axis=2, keepdims=True, ddof=1)
        tubes = F.div(F.sub(tubes, mean), F.add(F.sqrt(var), NORM_PIX_EPS))
    return F.reshape(tubes, b, tubes.shape[1], t * p * p * c)


def _tubelet_embed(tubelet: int, patch: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3D(dim, (tubelet, patch, patch), stride=(tubelet, patch, patch), name="proj"),
                         nn.Reshape((-1, dim), name="flatten"), name="patch_embed")


def _fixed_table(length: int, dim: int, dtype):
    if initializers.is_meta():
        return initializers.meta_array((1, length, dim), dtype)
    return backend.xp.asarray(sinusoid_table(length, dim).reshape(1, length, dim).astype(dtype))


def _gather(tokens: Tensor, ids: np.ndarray) -> Tensor:
    return F.getitem(tokens, (np.arange(tokens.shape[0])[:, None], ids))


class _TubeletEncoder(Block):
    """What the autoencoder and the classifier share: clip geometry, tubelet embedding, the
    fixed position table and the encoder blocks."""

    def _setup(self, num_frames, image_size, patch_size, tubelet_size, in_channels, dim, depth, heads, mlp_ratio,
               fn: str) -> None:
        self.tubelet_size = positive_int(tubelet_size, f"{fn}: tubelet_size")
        _clip_geometry(self, num_frames, image_size, patch_size, in_channels, fn, self.tubelet_size)
        self.dim = positive_int(dim, f"{fn}: dim")
        self.depth = positive_int(depth, f"{fn}: depth")
        self.heads = positive_int(heads, f"{fn}: heads")
        self.mlp_ratio = float(mlp_ratio)
        if dim % heads:
            raise ValueError(f"{fn}: dim {dim} is not divisible by heads {heads}")
        self.time_slices = self.num_frames // self.tubelet_size
        self.num_tokens = self.time_slices * self.patches_per_frame
        self.patch_embed = _tubelet_embed(self.tubelet_size, self.patch_size, dim)
        self.blocks = vit_blocks(dim, depth, heads, mlp_ratio, "blocks")

    def _tokens(self, x: Tensor) -> Tensor:
        return F.add(self.patch_embed(x), self.pos_embed)


@register_layer
class VideoMAE(_TubeletEncoder):
    """The VideoMAE pre-training model of the module docstring. Sub-layers ``patch_embed``
    (``proj``), ``blocks``, ``norm``, ``encoder_to_decoder``, ``decoder_blocks``,
    ``decoder_norm``, ``decoder_head``; parameters ``mask_token`` and the fixed ``pos_embed``
    (1, L, D) and ``decoder_pos_embed`` (1, L, D').

    ``model(clips, mask=None)`` returns (loss, pred (B, M, t p p C) for the masked tubelets in
    token order, mask (B, L) bool, True where hidden); without ``mask`` a tube mask of
    ``mask_ratio`` is drawn (:func:`tube_masking`). Every clip must hide the same number M."""

    default_name = "videomae"

    def __init__(self, num_frames: int = 16, image_size=224, patch_size: int = 16, tubelet_size: int = 2,
                 in_channels: int = 3, dim: int = 768, depth: int = 12, heads: int = 12, decoder_dim: int = 384,
                 decoder_depth: int = 4, decoder_heads: int = 6, mlp_ratio: float = 4.0, mask_ratio: float = 0.9,
                 norm_pix_loss: bool = True, name: str | None = None):
        super().__init__(name=name)
        fn = "VideoMAE"
        self._setup(num_frames, image_size, patch_size, tubelet_size, in_channels, dim, depth, heads, mlp_ratio, fn)
        self.decoder_dim = positive_int(decoder_dim, f"{fn}: decoder_dim")
        self.decoder_depth = positive_int(decoder_depth, f"{fn}: decoder_depth")
        self.decoder_heads = positive_int(decoder_heads, f"{fn}: decoder_heads")
        if decoder_dim % decoder_heads:
            raise ValueError(f"{fn}: decoder_dim {decoder_dim} is not divisible by decoder_heads {decoder_heads}")
        self.mask_ratio = _ratio(mask_ratio, fn)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.encoder_to_decoder = nn.Dense(decoder_dim, use_bias=False, name="encoder_to_decoder")
        self.decoder_blocks = vit_blocks(decoder_dim, decoder_depth, decoder_heads, mlp_ratio, "decoder_blocks")
        self.decoder_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="decoder_norm")
        self.decoder_head = nn.Dense(self.tubelet_size * self.patch_size ** 2 * self.in_channels,
                                     name="decoder_head")

    def trace(self, shape, step):
        shape = _check_clip_shape(self, shape)
        batch, visible = shape[0], self._visible_count()
        step(self.patch_embed, shape)
        tokens = step(self.norm, step(self.blocks, (batch, visible, self.dim)))
        step(self.encoder_to_decoder, tokens)
        full = step(self.decoder_norm, step(self.decoder_blocks, (batch, self.num_tokens, self.decoder_dim)))
        return step(self.decoder_head, (batch, self.num_tokens - visible, full[2]))

    def _visible_count(self) -> int:
        """The tokens a drawn tube mask leaves visible."""
        return self.time_slices * (self.patches_per_frame - int(self.mask_ratio * self.patches_per_frame))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        self.add_parameter("pos_embed", _fixed_table(self.num_tokens, self.dim, dtype), trainable=False)
        self.add_parameter("decoder_pos_embed", _fixed_table(self.num_tokens, self.decoder_dim, dtype),
                           trainable=False)
        self.add_parameter("mask_token", initializers.normal(TOKEN_STD)((1, 1, self.decoder_dim), 1, 1, dtype))

    def _split(self, mask, batch: int) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask)).astype(bool)
        if mask.shape != (batch, self.num_tokens):
            raise ShapeError(f"{self._label()}: mask of shape {mask.shape}; expected ({batch}, {self.num_tokens}), "
                             "one entry per tubelet")
        hidden = mask.sum(axis=1) if batch else np.array([self.num_tokens - self._visible_count()])
        if np.any(hidden != hidden[0]) or not 0 < hidden[0] < self.num_tokens:
            raise ValueError(f"{self._label()}: every clip must hide the same number of tubelets, at least one and "
                             f"not all; got {sorted(set(hidden.tolist()))} of {self.num_tokens}")
        order = np.argsort(mask, axis=1, kind="stable")                  # visible, then hidden, each ascending
        visible = self.num_tokens - int(hidden[0])
        return order[:, :visible], order[:, visible:]

    def forward_encoder(self, clips, visible_ids) -> Tensor:
        """The encoded visible tokens (B, V, D) after ``norm``."""
        x = _check_clips(self, clips)
        return self.norm(self.blocks(_gather(self._tokens(x), visible_ids)))

    def forward_decoder(self, latent, visible_ids, hidden_ids) -> Tensor:
        """The predicted pixels (B, M, t p p C) of the hidden tubelets."""
        x = self.encoder_to_decoder(latent)
        batch = x.shape[0]
        positions = F.broadcast_to(self.decoder_pos_embed, (batch, self.num_tokens, self.decoder_dim))
        shown = F.add(x, _gather(positions, visible_ids))
        hidden = F.add(self.mask_token, _gather(positions, hidden_ids))
        z = self.decoder_norm(self.decoder_blocks(F.concat([shown, hidden], axis=1)))
        return self.decoder_head(F.getitem(z, (slice(None), slice(x.shape[1], None))))

    def forward_loss(self, clips, pred, mask) -> Tensor:
        """Mean squared error between ``pred`` and the targets of the hidden tubelets."""
        x = _check_clips(self, clips)
        _, hidden_ids = self._split(mask, x.shape[0])
        target = _gather(tubelet_targets(x, self.tubelet_size, self.patch_size, self.norm_pix_loss), hidden_ids)
        diff = F.sub(pred, target)
        return F.div(F.sum(F.mul(diff, diff)), max(math.prod(diff.shape), 1))    # a zero batch gives 0

    def forward(self, clips, mask=None):
        x = _check_clips(self, clips)
        if mask is None:
            mask = tube_masking(x.shape[0], self.time_slices, self.patches_per_frame, self.mask_ratio)
        visible_ids, hidden_ids = self._split(mask, x.shape[0])
        pred = self.forward_decoder(self.forward_encoder(x, visible_ids), visible_ids, hidden_ids)
        mask = np.asarray(backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask)).astype(bool)
        return self.forward_loss(x, pred, mask), pred, mask

    def get_config(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": list(self.image_size), "patch_size": self.patch_size,
                "tubelet_size": self.tubelet_size, "in_channels": self.in_channels, "dim": self.dim,
                "depth": self.depth, "heads": self.heads, "decoder_dim": self.decoder_dim,
                "decoder_depth": self.decoder_depth, "decoder_heads": self.decoder_heads,
                "mlp_ratio": self.mlp_ratio, "mask_ratio": self.mask_ratio, "norm_pix_loss": self.norm_pix_loss,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"tubelet=({self.tubelet_size}, {self.patch_size}, {self.patch_size}), dim={self.dim}, "
                f"depth={self.depth}, decoder={self.decoder_dim}x{self.decoder_depth}, mask_ratio={self.mask_ratio}")


@register_layer
class VideoMAEClassifier(_TubeletEncoder):
    """The VideoMAE encoder on whole clips for fine-tuning: tubelet tokens + the fixed table,
    ``blocks``, the mean over the tokens through ``fc_norm``, and ``head`` to ``num_classes``
    scores (the (B, D) features themselves when ``num_classes`` is 0)."""

    default_name = "videomae_classifier"

    def __init__(self, num_frames: int = 16, image_size=224, patch_size: int = 16, tubelet_size: int = 2,
                 in_channels: int = 3, dim: int = 768, depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0,
                 num_classes: int = 400, name: str | None = None):
        super().__init__(name=name)
        fn = "VideoMAEClassifier"
        self._setup(num_frames, image_size, patch_size, tubelet_size, in_channels, dim, depth, heads, mlp_ratio, fn)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"{fn}: num_classes must be an int >= 0 (0: features), got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.fc_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="fc_norm")
        if self.num_classes:
            self.head = nn.Dense(self.num_classes, name="head")

    @classmethod
    def from_videomae(cls, mae: VideoMAE, num_classes: int = 400) -> VideoMAEClassifier:
        """A classifier with ``mae``'s tubelet embedding and encoder blocks; ``fc_norm`` and the
        head start fresh."""
        if not mae.built:
            raise ValueError("VideoMAEClassifier.from_videomae: the autoencoder has no weights yet; build or train "
                             "it first")
        model = cls(mae.num_frames, mae.image_size, mae.patch_size, mae.tubelet_size, mae.in_channels, mae.dim,
                    mae.depth, mae.heads, mae.mlp_ratio, num_classes)
        model.build((None, mae.num_frames, *mae.image_size, mae.in_channels))
        own = model.state_dict()
        for key, value in mae.state_dict().items():
            if key.startswith(("patch_embed.", "blocks.")):
                own[key] = value.copy()
        model.load_state_dict(own)
        return model

    def trace(self, shape, step):
        shape = _check_clip_shape(self, shape)
        step(self.patch_embed, shape)
        step(self.blocks, (shape[0], self.num_tokens, self.dim))
        features = step(self.fc_norm, (shape[0], self.dim))
        return step(self.head, features) if self.num_classes else features

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_parameter("pos_embed", _fixed_table(self.num_tokens, self.dim, backend.get_default_dtype()),
                           trainable=False)

    def forward_features(self, clips) -> Tensor:
        """The mean-pooled (B, D) features after ``fc_norm``."""
        x = _check_clips(self, clips)
        return self.fc_norm(F.mean(self.blocks(self._tokens(x)), axis=1))

    def forward(self, clips) -> Tensor:
        features = self.forward_features(clips)
        return self.head(features) if self.num_classes else features

    def get_config(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": list(self.image_size), "patch_size": self.patch_size,
                "tubelet_size": self.tubelet_size, "in_channels": self.in_channels, "dim": self.dim,
                "depth": self.depth, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "num_classes": self.num_classes, "name": self.name}

    def extra_repr(self) -> str:
        return (f"tubelet=({self.tubelet_size}, {self.patch_size}, {self.patch_size}), dim={self.dim}, "
                f"depth={self.depth}")
