"""VideoMAE on NTHWC clips (batch, frames, height, width, channels).

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

Differences from the reference code: no dropout or drop-path; pixels are taken as given (the
reference undoes the ImageNet normalisation before making targets).
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
from lamina.models.timesformer import LAYER_NORM_EPS, TOKEN_STD, check_clip_shape, check_clips, clip_geometry
from lamina.nn import init as initializers
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["VideoMAE", "VideoMAEClassifier", "sinusoid_table", "tube_masking", "tubelet_targets"]

NORM_PIX_EPS = 1e-6


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
        clip_geometry(self, num_frames, image_size, patch_size, in_channels, fn, self.tubelet_size)
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
        shape = check_clip_shape(self, shape)
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
        x = check_clips(self, clips)
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
        x = check_clips(self, clips)
        _, hidden_ids = self._split(mask, x.shape[0])
        target = _gather(tubelet_targets(x, self.tubelet_size, self.patch_size, self.norm_pix_loss), hidden_ids)
        diff = F.sub(pred, target)
        return F.div(F.sum(F.mul(diff, diff)), max(math.prod(diff.shape), 1))    # a zero batch gives 0

    def forward(self, clips, mask=None):
        x = check_clips(self, clips)
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
        shape = check_clip_shape(self, shape)
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
        x = check_clips(self, clips)
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
