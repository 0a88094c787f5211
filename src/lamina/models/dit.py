"""The Diffusion Transformer (Peebles and Xie 2023, "Scalable Diffusion Models with
Transformers"; DiT): a ViT-style denoiser of NHWC images (or latents) for
:class:`lamina.models.DiffusionModel`, conditioned through adaptive layer norms.

    tokens:   the (H, W, C) input cut into P = (H / p)(W / p) patches of p x p pixels, each
              projected to ``dim`` features (a Conv2D with kernel = stride = p, ``patch_embed``),
              plus a fixed 2-D sin-cos position embedding (MAE's
              :func:`lamina.models.sincos_position_embedding`)
    c =       e(t) [+ E[y]]: the sinusoidal timestep features through a two-layer SiLU MLP,
              plus a learned class embedding whose extra row ``num_classes`` is "no class"
    blocks:   ``depth`` :class:`DiTBlock` (adaLN-Zero), each modulated by c
    out =     the final layer norm modulated by c (shift and scale), a Dense to p p C' values
              per token, and :func:`lamina.models.unpatchify` back to (H, W, C'), C' = C (2 C with
              ``learn_sigma``: eps then the variance values, along the channels; such a DiT
              needs a loss of its own, :class:`~lamina.models.DiffusionModel` wants C)

adaLN-Zero: each block regresses from c six vectors (shift, scale and gate for the attention
and for the MLP); the regressor's last layer starts at zero, so every gate starts at zero, each
block starts as the identity, and (the final layer starting at zero too) the untrained DiT
outputs 0, as :class:`lamina.models.DenoisingUNet`'s zero head does.

Classifier-free guidance: labels y in [0, num_classes], ``num_classes`` the "no class" of the
unconditional model (the convention of :mod:`lamina.models.diffusion_nets`). In training mode
the DiT replaces given labels by "no class" at the rate ``class_dropout`` (DiT's own label
dropout); :class:`~lamina.models.DiffusionModel` also drops labels at its ``label_dropout``, so
set one of the two to 0 to get the intended rate. Unlike DiT's code, the timestep features
interleave sin and cos (:func:`lamina.models.timestep_embedding`).

:data:`DIT_CONFIGS` holds the paper's sizes (S, B, L, XL: width, depth, heads); :func:`dit_s`,
:func:`dit_b`, :func:`dit_l` and :func:`dit_xl` build them. DiT-XL/2 on the 32x32x4 latents of
256x256 images with 1000 classes and learned variances (``dit_xl()``) has 674,834,720
parameters: the reference's 675,129,632 less its fixed position table (256 x 1152), which it
keeps as a frozen parameter.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import _TimeConditioned
from lamina.models.mae import sincos_position_embedding, unpatchify
from lamina.nn import Conv2D, Dense, LayerNorm, ModuleList, MultiHeadAttention
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DIT_CONFIGS", "DiT", "DiTBlock", "dit_b", "dit_l", "dit_s", "dit_xl"]

NORM_EPS = 1e-6

# variant -> (dim, depth, num_heads), Table 1 of the paper
DIT_CONFIGS: dict[str, tuple[int, int, int]] = {
    "s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16),
}


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (1 + scale) + shift, the (N, 1, d) shift and scale broadcast over the tokens of x (N, T, d)."""
    return x * (1 + scale) + shift


def _chunks(modulation: Tensor, count: int, dim: int) -> list[Tensor]:
    """(N, count dim) -> ``count`` tensors (N, 1, dim)."""
    parts = F.reshape(modulation, modulation.shape[0], 1, count, dim)
    return [F.getitem(parts, (slice(None), slice(None), k)) for k in range(count)]


@register_layer
class DiTBlock(Module):
    """A DiT block with adaLN-Zero: tokens x (N, T, dim) and conditioning c (N, E) ->
    (N, T, dim).

        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = W silu(c) + b     (``modulation``)
        x <- x + gate_a * attn(LN(x) (1 + scale_a) + shift_a)
        x <- x + gate_m * mlp(LN(x) (1 + scale_m) + shift_m)

    LN without affine parameters (eps 1e-6), ``attn`` multi-head self-attention of
    ``num_heads`` heads, ``mlp`` Dense(mlp_ratio dim) -> GELU (tanh form) -> Dense(dim).
    ``modulation`` (to 6 dim values) starts at zero: the block starts as the identity.
    ``forward(x, c)``."""

    default_name = "dit_block"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "DiTBlock: dim")
        self.num_heads = positive_int(num_heads, "DiTBlock: num_heads")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTBlock: dim {dim} is not divisible by num_heads {num_heads}")
        if not mlp_ratio > 0:
            raise ValueError(f"DiTBlock: mlp_ratio must be positive, got {mlp_ratio!r}")
        self.mlp_ratio = float(mlp_ratio)
        self.norm1 = LayerNorm(-1, eps=NORM_EPS, affine=False, name="norm1")
        self.attn = MultiHeadAttention(self.dim, self.num_heads, name="attn")
        self.norm2 = LayerNorm(-1, eps=NORM_EPS, affine=False, name="norm2")
        self.mlp_in = Dense(int(self.dim * self.mlp_ratio), kernel_init="xavier_uniform", name="mlp_in")
        self.mlp_out = Dense(self.dim, kernel_init="xavier_uniform", name="mlp_out")
        self.modulation = Dense(6 * self.dim, kernel_init="zeros", name="modulation")

    def forward(self, x, c) -> Tensor:
        x, c = as_tensor(x), as_tensor(c)
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise input_error(self, x, f"tokens (batch, tokens, {self.dim})")
        if c.ndim != 2 or c.shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: the conditioning c of shape {tuple(c.shape)} does not fit tokens "
                             f"of shape {tuple(x.shape)}; expected ({x.shape[0]}, features)")
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = _chunks(self.modulation(F.silu(c)), 6, self.dim)
        x = x + gate_a * self.attn(_modulate(self.norm1(x), shift_a, scale_a))
        hidden = F.gelu(self.mlp_in(_modulate(self.norm2(x), shift_m, scale_m)), approximate="tanh")
        return x + gate_m * self.mlp_out(hidden)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)

    def get_config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "name": self.name}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, mlp_ratio={self.mlp_ratio}"


@register_layer
class DiT(_TimeConditioned):
    """The Diffusion Transformer (see the module notes): (N, H, W, C) images, N timesteps
    and optional labels y -> (N, H, W, C), or (N, H, W, 2C) with ``learn_sigma``, called as
    ``dit(x_t, t)`` or ``dit(x_t, t, y)`` like :class:`lamina.models.DenoisingUNet`.

    ``image_size``: H = W (an int) or (H, W), multiples of ``patch_size``; ``dim``, ``depth``,
    ``num_heads``, ``mlp_ratio``: the transformer's sizes; ``time_dim``: the size of the
    sinusoidal timestep features (256 in the paper); ``num_classes``: labels for
    classifier-free guidance, ``class_dropout`` the rate at which training replaces them by
    "no class". Sub-layers ``patch_embed``, ``time_in``, ``time_out``, ``class_embedding``,
    ``blocks``, ``final_norm``, ``final_modulation``, ``final_linear``.
    """

    def __init__(self, image_size, patch_size: int, in_channels: int, dim: int, depth: int, num_heads: int,
                 num_classes: int | None = None, learn_sigma: bool = False, class_dropout: float = 0.1,
                 mlp_ratio: float = 4.0, time_dim: int = 256, name: str | None = None):
        super().__init__(time_dim, dim, num_classes, name)
        sizes = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
        if len(sizes) != 2:
            raise ValueError(f"DiT: image_size must be an int or a (height, width) pair, got {image_size!r}")
        self.image_size = tuple(positive_int(n, "DiT: image_size") for n in sizes)
        self.patch_size = positive_int(patch_size, "DiT: patch_size")
        if self.image_size[0] % self.patch_size or self.image_size[1] % self.patch_size:
            raise ValueError(f"DiT: image_size {self.image_size} must be a multiple of patch_size {patch_size}")
        self.in_channels = positive_int(in_channels, "DiT: in_channels")
        self.dim, self.depth = positive_int(dim, "DiT: dim"), positive_int(depth, "DiT: depth")
        self.num_heads = positive_int(num_heads, "DiT: num_heads")
        if self.dim % 4:
            raise ValueError(f"DiT: dim must be a multiple of 4 (the 2-D sin-cos position embedding), got {dim}")
        if not 0 <= class_dropout <= 1:
            raise ValueError(f"DiT: class_dropout must lie in [0, 1], got {class_dropout!r}")
        self.learn_sigma, self.class_dropout, self.mlp_ratio = bool(learn_sigma), float(class_dropout), float(mlp_ratio)
        self.out_channels = self.in_channels * (2 if self.learn_sigma else 1)
        rows, cols = (n // self.patch_size for n in self.image_size)
        self.position_table = sincos_position_embedding(self.dim, (rows, cols))[None]
        self.patch_embed = Conv2D(self.dim, self.patch_size, stride=self.patch_size, kernel_init="xavier_uniform",
                                  name="patch_embed")
        self.blocks = ModuleList([DiTBlock(self.dim, self.num_heads, self.mlp_ratio, name=str(k))
                                  for k in range(self.depth)])
        self.final_norm = LayerNorm(-1, eps=NORM_EPS, affine=False, name="final_norm")
        self.final_modulation = Dense(2 * self.dim, kernel_init="zeros", name="final_modulation")
        self.final_linear = Dense(self.patch_size ** 2 * self.out_channels, kernel_init="zeros", name="final_linear")

    def _checked_shape(self, shape):
        if tuple(shape[1:]) != (*self.image_size, self.in_channels):
            raise ShapeError(f"{self._label()}: got an input shape {tuple(shape)}; expected (batch, "
                             f"{self.image_size[0]}, {self.image_size[1]}, {self.in_channels})")
        return shape

    def _labels(self, y, n: int):
        labels = super()._labels(y, n)
        if labels is not None and y is not None and self.training and self.class_dropout > 0:
            labels = np.where(backend.rng().random(n) < self.class_dropout, self.num_classes, labels)
        return labels

    def forward(self, x, t, y=None, residuals=None) -> Tensor:
        """The denoised prediction; ``residuals`` (optional, e.g. a
        :class:`~lamina.models.DiTControlNet`'s outputs): k tensors (N, P, dim), k <= depth,
        the j-th added to the output of block j."""
        x = as_tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.image_size, self.in_channels):
            raise input_error(self, x, f"a 4-D NHWC batch (batch, {self.image_size[0]}, {self.image_size[1]}, "
                                       f"{self.in_channels})")
        c = self.time_features(t, y, x)
        n = x.shape[0]
        tokens = F.reshape(self.patch_embed(x), n, -1, self.dim)
        h = tokens + Tensor._wrap(backend.xp.asarray(self.position_table.astype(x.dtype)))
        residuals = self._checked_residuals(residuals, h)
        for k, block in enumerate(self.blocks):
            h = block(h, c)
            if k < len(residuals):
                h = h + residuals[k]
        shift, scale = _chunks(self.final_modulation(F.silu(c)), 2, self.dim)
        h = self.final_linear(_modulate(self.final_norm(h), shift, scale))
        return unpatchify(h, self.patch_size, self.image_size)

    def _checked_residuals(self, residuals, tokens: Tensor) -> list:
        residuals = [] if residuals is None else list(residuals)
        if len(residuals) > self.depth:
            raise ValueError(f"{self._label()}: got {len(residuals)} residuals; expected at most depth = "
                             f"{self.depth} (one per block, from the first)")
        for k, r in enumerate(residuals):
            if tuple(r.shape) != tuple(tokens.shape):
                raise ShapeError(f"{self._label()}: residual {k} has shape {tuple(r.shape)}; the tokens it adds to "
                                 f"have shape {tuple(tokens.shape)}")
        return residuals

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0] if isinstance(input_shape, list) else input_shape)
        return (*shape[:-1], self.out_channels)

    def get_config(self) -> dict:
        return {"image_size": list(self.image_size), "patch_size": self.patch_size, "in_channels": self.in_channels,
                "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads, "num_classes": self.num_classes,
                "learn_sigma": self.learn_sigma, "class_dropout": self.class_dropout, "mlp_ratio": self.mlp_ratio,
                "time_dim": self.time_dim, "name": self.name}

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, dim={self.dim}, depth={self.depth}, "
                f"num_heads={self.num_heads}" + (f", num_classes={self.num_classes}" if self.num_classes else ""))


def _variant(variant: str, image_size, patch_size: int, in_channels: int, num_classes: int | None,
             learn_sigma: bool, class_dropout: float) -> DiT:
    dim, depth, num_heads = DIT_CONFIGS[variant]
    return DiT(image_size, patch_size, in_channels, dim, depth, num_heads, num_classes=num_classes,
               learn_sigma=learn_sigma, class_dropout=class_dropout, name=f"dit_{variant}_{patch_size}")


def dit_s(image_size=32, patch_size: int = 2, in_channels: int = 4, num_classes: int | None = 1000,
          learn_sigma: bool = True, class_dropout: float = 0.1) -> DiT:
    """DiT-S/p (unbuilt): width 384, 12 blocks, 6 heads; defaults: DiT-S/2 on the 32x32x4
    latents of 256x256 images, 1000 classes, learned variances."""
    return _variant("s", image_size, patch_size, in_channels, num_classes, learn_sigma, class_dropout)


def dit_b(image_size=32, patch_size: int = 2, in_channels: int = 4, num_classes: int | None = 1000,
          learn_sigma: bool = True, class_dropout: float = 0.1) -> DiT:
    """DiT-B/p (unbuilt): width 768, 12 blocks, 12 heads (defaults as :func:`dit_s`)."""
    return _variant("b", image_size, patch_size, in_channels, num_classes, learn_sigma, class_dropout)


def dit_l(image_size=32, patch_size: int = 2, in_channels: int = 4, num_classes: int | None = 1000,
          learn_sigma: bool = True, class_dropout: float = 0.1) -> DiT:
    """DiT-L/p (unbuilt): width 1024, 24 blocks, 16 heads (defaults as :func:`dit_s`)."""
    return _variant("l", image_size, patch_size, in_channels, num_classes, learn_sigma, class_dropout)


def dit_xl(image_size=32, patch_size: int = 2, in_channels: int = 4, num_classes: int | None = 1000,
           learn_sigma: bool = True, class_dropout: float = 0.1) -> DiT:
    """DiT-XL/p (unbuilt): width 1152, 28 blocks, 16 heads (defaults as :func:`dit_s`)."""
    return _variant("xl", image_size, patch_size, in_channels, num_classes, learn_sigma, class_dropout)
