"""Masked autoencoders (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners";
MAE) for Vision Transformers, in the layout and parameter names of the authors' reference
(``models_mae.MaskedAutoencoderViT``), on NHWC images.

    patches:  x (N, H, W, C) cut into L = (H / p)(W / p) patches of p x p pixels, projected to
              D features by one p x p / p convolution (``patch_embed.proj``), row by row
    encoder:  z = patches + E_pos[1:] (fixed 2-D sin-cos position embeddings, ``pos_embed``);
              a random (1 - mask_ratio) of the L patches is kept per image
              (:func:`random_masking`); [x_cls + E_pos[0]; kept patches] go through ``depth``
              pre-norm blocks (timm's, as :class:`~lamina.models.DeiTBlock`) and ``norm``
    decoder:  the encoded tokens projected to D' (``decoder_embed``); a learned ``mask_token``
              stands in for every removed patch, the sequence is put back in the image's order
              (``ids_restore``), ``decoder_pos_embed`` added, ``decoder_depth`` blocks,
              ``decoder_norm`` and a Dense layer to the p * p * C pixels of each patch
              (``decoder_pred``); the class token's row is dropped
    loss:     mean over the removed patches of the mean squared error of each patch's pixels,
              L = sum_l m_l mean_j (pred_lj - target_lj)^2 / sum_l m_l (m_l = 1 for a removed
              patch); with ``norm_pix_loss`` the targets are each patch's pixels standardised
              by their own mean and (unbiased) variance, (t - mean) / sqrt(var + 1e-6)

The position embeddings are fixed (non-trainable parameters, counted as the reference counts
them). The patch vectors of :func:`patchify` are laid out (p_row, p_col, channel), the
reference's order, so a reference checkpoint loads with
:func:`~lamina.models.load_timm_state_dict`.

:class:`MAEClassifier` is the encoder alone as a classifier or feature extractor, as the
reference's fine-tuning and linear-probing model (the class token after ``norm``, or the
mean of the patch tokens after ``fc_norm``); :meth:`MAEClassifier.from_mae` copies a
pretrained encoder into it.

The presets' parameter counts (decoder 512 x 8, 16 heads, 224x224x3):
mae_vit_base_patch16 111,907,840; mae_vit_large_patch16 329,541,888;
mae_vit_huge_patch14 657,074,508.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.deit import DeiTBlock
from lamina.nn import init as initializers
from lamina.nn.layer import input_error, pair, positive_int, register_layer

__all__ = ["MAE_CONFIGS", "MAEClassifier", "MaskedAutoencoderViT", "mae_vit_base_patch16", "mae_vit_huge_patch14",
           "mae_vit_large_patch16", "masking_indices", "patchify", "random_masking", "sincos_position_embedding",
           "unpatchify"]

LAYER_NORM_EPS = 1e-6
TOKEN_STD = 0.02           # the class and mask tokens start N(0, 0.02^2)
NORM_PIX_EPS = 1e-6

# preset -> (patch size, width D, depth, heads); decoder 512 wide, 8 blocks, 16 heads
MAE_CONFIGS: dict[str, tuple[int, int, int, int]] = {
    "base_patch16": (16, 768, 12, 12), "large_patch16": (16, 1024, 24, 16), "huge_patch14": (14, 1280, 32, 16),
}


# -- position embeddings -----------------------------------------------------------------


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M, dim): [sin(pos w_k) | cos(pos w_k)] with w_k = 10000^(-k / (dim / 2)), k < dim / 2."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_position_embedding(dim: int, grid_size, cls_token: bool = False) -> np.ndarray:
    """The reference's fixed 2-D sin-cos embedding of a (rows, cols) grid of patches, read row
    by row: (rows * cols, dim), or (1 + rows * cols, dim) with a zero first row for the class
    token. For the patch in row i and column j, with Q = dim / 4 and w_k = 10000^(-k / Q):

        E[k] = sin(j w_k),  E[Q + k] = cos(j w_k),  E[2Q + k] = sin(i w_k),  E[3Q + k] = cos(i w_k)

    (the first half encodes the column, as the reference's meshgrid does). float64; ``dim``
    must be a multiple of 4."""
    dim = positive_int(dim, "sincos_position_embedding: dim")
    if dim % 4:
        raise ValueError(f"sincos_position_embedding: dim must be a multiple of 4 (sin and cos of two coordinates), "
                         f"got {dim}")
    rows, cols = pair(grid_size, "sincos_position_embedding: grid_size")
    row, col = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    table = np.concatenate([_sincos_1d(dim // 2, col), _sincos_1d(dim // 2, row)], axis=1)
    return np.concatenate([np.zeros((1, dim)), table]) if cls_token else table


# -- patches and masking -----------------------------------------------------------------


def patchify(images, patch_size) -> Tensor:
    """(N, H, W, C) images -> (N, L, p * p * C) patch vectors, patches row by row, each laid
    out (row in patch, column in patch, channel) as the reference's."""
    x = images if isinstance(images, Tensor) else Tensor(images)
    p = positive_int(patch_size, "patchify: patch_size")
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
        raise ShapeError(f"patchify: expected NHWC images whose height and width are multiples of the patch size "
                         f"{p}, got shape {x.shape}")
    n, h, w, c = x.shape
    grid = F.reshape(x, n, h // p, p, w // p, p, c)
    return F.reshape(F.transpose(grid, 0, 1, 3, 2, 4, 5), n, (h // p) * (w // p), p * p * c)


def unpatchify(patches, patch_size, image_size) -> Tensor:
    """The inverse of :func:`patchify`: (N, L, p * p * C) -> (N, H, W, C) for
    ``image_size`` = (H, W) (an int for a square)."""
    x = patches if isinstance(patches, Tensor) else Tensor(patches)
    p = positive_int(patch_size, "unpatchify: patch_size")
    h, w = pair(image_size, "unpatchify: image_size")
    rows, cols = h // p, w // p
    if h % p or w % p or x.ndim != 3 or x.shape[1] != rows * cols or x.shape[2] % (p * p):
        raise ShapeError(f"unpatchify: patch vectors of shape {x.shape} do not tile a {h}x{w} image with {p}x{p} "
                         f"patches; expected (batch, {rows * cols}, {p}*{p}*channels)")
    n, c = x.shape[0], x.shape[2] // (p * p)
    grid = F.reshape(x, n, rows, cols, p, p, c)
    return F.reshape(F.transpose(grid, 0, 1, 3, 2, 4, 5), n, h, w, c)


def _mask_ratio(mask_ratio, fn: str) -> float:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, numbers.Real) or not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"{fn}: mask_ratio must be a number in [0, 1), got {mask_ratio!r}")
    return float(mask_ratio)


def masking_indices(n: int, length: int, mask_ratio: float, noise=None):
    """The random masking of the reference for ``n`` sequences of ``length`` tokens: each row
    of uniform ``noise`` (n, length) (drawn from :func:`lamina.backend.rng` if None) is
    argsorted, and the keep = int(length (1 - mask_ratio)) tokens of lowest noise are kept
    (truncated, as the reference).

    Returns (ids_keep (n, keep) in that order, ids_restore (n, length), the inverse
    permutation: position l of the shuffled sequence [kept; removed] that holds token l,
    mask (n, length), 1 for removed tokens and 0 for kept ones)."""
    ratio = _mask_ratio(mask_ratio, "masking_indices")
    if noise is None:
        noise = backend.rng().random((n, length))
    noise = backend.to_numpy(noise.data if isinstance(noise, Tensor) else noise)
    if noise.shape != (n, length):
        raise ShapeError(f"masking_indices: noise of shape {noise.shape}; expected ({n}, {length}), one value per "
                         "token")
    keep = int(length * (1.0 - ratio))
    ids_shuffle = np.argsort(noise, axis=1, kind="stable")
    ids_restore = np.argsort(ids_shuffle, axis=1, kind="stable")
    mask = np.ones((n, length))
    mask[:, :keep] = 0.0
    mask = np.take_along_axis(mask, ids_restore, axis=1)
    return ids_shuffle[:, :keep], ids_restore, mask


def random_masking(x, mask_ratio: float, noise=None):
    """Keep a random int(L (1 - mask_ratio)) of the L tokens of each sequence x (N, L, D):
    returns (x_masked (N, keep, D), the kept tokens in the order of their noise; mask (N, L),
    1 where removed; ids_restore (N, L)). See :func:`masking_indices` for ``noise``."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 3:
        raise ShapeError(f"random_masking: expected tokens (batch, length, features), got shape {x.shape}")
    ids_keep, ids_restore, mask = masking_indices(x.shape[0], x.shape[1], mask_ratio, noise)
    rows = np.arange(x.shape[0])[:, None]
    return F.getitem(x, (rows, ids_keep)), mask, ids_restore


# -- the models --------------------------------------------------------------------------


def vit_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, name: str) -> nn.Sequential:
    """``depth`` pre-norm ViT blocks of width ``dim`` (MLP width ``dim * mlp_ratio``), named 0, 1, ..."""
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(*[DeiTBlock(dim, heads, hidden, name=str(k)) for k in range(depth)], name=name)


def _patch_embed(patch: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(dim, patch, stride=patch, name="proj"), nn.Reshape((-1, dim), name="flatten"),
                         name="patch_embed")


def _reference_init(model: Block) -> None:
    """The reference's initialisation: Xavier-uniform Dense weights and zero biases, the patch
    projection Xavier-uniform as a (D, p * p * C) matrix (LayerNorms keep 1 and 0)."""
    if initializers.is_meta():
        return
    for module in model.modules():
        if isinstance(module, nn.Dense):
            n_in, n_out = module.weight.shape
            module.weight.data[...] = initializers.xavier_uniform((n_in, n_out), n_in, n_out, module.weight.dtype)
            if module.use_bias:
                module.bias.data[...] = 0
    proj = model.patch_embed.proj
    k, fan_in = proj.weight.shape[0], int(np.prod(proj.weight.shape[1:]))
    proj.weight.data[...] = initializers.xavier_uniform(proj.weight.shape, fan_in, k, proj.weight.dtype)
    proj.bias.data[...] = 0


def setup_patch_encoder(layer: Block, img_size, patch_size: int, in_chans: int, embed_dim: int, depth: int,
                        num_heads: int, mlp_ratio: float, fn: str) -> None:
    """Check and keep a ViT encoder's sizes on ``layer`` (``fn`` names it in errors) and give it
    ``patch_embed`` (a p x p / p convolution ``proj`` to ``embed_dim``, flattened to tokens) and
    ``blocks``; also ``grid_size``, ``num_patches`` and ``input_shape``."""
    layer.img_size = pair(img_size, f"{fn}: img_size")
    layer.patch_size = positive_int(patch_size, f"{fn}: patch_size")
    layer.in_chans = positive_int(in_chans, f"{fn}: in_chans")
    layer.embed_dim = positive_int(embed_dim, f"{fn}: embed_dim")
    layer.depth = positive_int(depth, f"{fn}: depth")
    layer.num_heads = positive_int(num_heads, f"{fn}: num_heads")
    layer.mlp_ratio = float(mlp_ratio)
    if any(n % layer.patch_size for n in layer.img_size):
        raise ValueError(f"{fn}: img_size {layer.img_size} must be a multiple of patch_size {layer.patch_size}")
    if embed_dim % num_heads:
        raise ValueError(f"{fn}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    layer.grid_size = (layer.img_size[0] // layer.patch_size, layer.img_size[1] // layer.patch_size)
    layer.num_patches = layer.grid_size[0] * layer.grid_size[1]
    layer.input_shape = (None, *layer.img_size, layer.in_chans)
    layer.patch_embed = _patch_embed(layer.patch_size, embed_dim)
    layer.blocks = vit_blocks(embed_dim, depth, num_heads, mlp_ratio, "blocks")


class _PatchEncoder(Block):
    """What the autoencoder and the classifier share: the image checks, the patch embedding and
    the class token with its position embedding."""

    def _image_shape(self, shape) -> tuple:
        shape = nhwc(self, shape)
        expected = (*self.img_size, self.in_chans)
        if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; the model was made for "
                             f"(batch, {expected[0]}, {expected[1]}, {expected[2]})")
        return shape

    def _check_images(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.img_size, self.in_chans):
            raise input_error(self, x, f"NHWC images (batch, {self.img_size[0]}, {self.img_size[1]}, "
                                       f"{self.in_chans})")
        return x

    def _class_token(self, batch: int) -> Tensor:
        """x_cls + E_pos[0], one row per image: (batch, 1, D)."""
        token = F.add(self.cls_token, F.getitem(self.pos_embed, (slice(None), slice(0, 1))))
        return F.broadcast_to(token, (batch, 1, self.embed_dim))

    def _patch_tokens(self, x: Tensor) -> Tensor:
        """patches + E_pos[1:]: (N, L, D)."""
        return F.add(self.patch_embed(x), F.getitem(self.pos_embed, (slice(None), slice(1, None))))


@register_layer
class MaskedAutoencoderViT(_PatchEncoder):
    """The masked autoencoder of the module docstring for (N, ``img_size``, ``in_chans``)
    images. Sub-layers (the reference's names): ``patch_embed`` (``proj``), ``blocks``,
    ``norm``, ``decoder_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``;
    parameters ``cls_token``, ``mask_token``, and the fixed ``pos_embed`` (1, L + 1, D) and
    ``decoder_pos_embed`` (1, L + 1, D').

    ``model(images, mask_ratio=0.75, noise=None)`` returns (loss, pred (N, L, p * p * C),
    mask (N, L) array, 1 on removed patches); ``noise`` (N, L) fixes the masking. The parts:
    :meth:`forward_encoder`, :meth:`forward_decoder`, :meth:`forward_loss`.
    """

    default_name = "mae"

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 1024,
                 depth: int = 24, num_heads: int = 16, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, mlp_ratio: float = 4.0, norm_pix_loss: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        fn = "MaskedAutoencoderViT"
        setup_patch_encoder(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, fn)
        self.decoder_embed_dim = positive_int(decoder_embed_dim, f"{fn}: decoder_embed_dim")
        self.decoder_depth = positive_int(decoder_depth, f"{fn}: decoder_depth")
        self.decoder_num_heads = positive_int(decoder_num_heads, f"{fn}: decoder_num_heads")
        if decoder_embed_dim % decoder_num_heads:
            raise ValueError(f"{fn}: decoder_embed_dim {decoder_embed_dim} is not divisible by decoder_num_heads "
                             f"{decoder_num_heads}")
        for dim, what in ((embed_dim, "embed_dim"), (decoder_embed_dim, "decoder_embed_dim")):
            if dim % 4:
                raise ValueError(f"{fn}: {what} must be a multiple of 4 for the 2-D sin-cos position embedding, "
                                 f"got {dim}")
        self.norm_pix_loss = bool(norm_pix_loss)
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")
        self.decoder_embed = nn.Dense(decoder_embed_dim, name="decoder_embed")
        self.decoder_blocks = vit_blocks(decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio,
                                      "decoder_blocks")
        self.decoder_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="decoder_norm")
        self.decoder_pred = nn.Dense(self.patch_size ** 2 * self.in_chans, name="decoder_pred")

    def trace(self, shape, step):
        shape = self._image_shape(shape)
        tokens = step(self.patch_embed, shape)
        tokens = step(self.norm, step(self.blocks, (tokens[0], self.num_patches + 1, self.embed_dim)))
        tokens = step(self.decoder_norm, step(self.decoder_blocks, step(self.decoder_embed, tokens)))
        out = step(self.decoder_pred, tokens)
        return (out[0], self.num_patches, out[2])

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        normal = initializers.normal(TOKEN_STD)
        self.add_parameter("cls_token", normal((1, 1, self.embed_dim), 1, 1, dtype))
        self.add_parameter("pos_embed", self._fixed_positions(self.embed_dim, dtype), trainable=False)
        self.add_parameter("mask_token", normal((1, 1, self.decoder_embed_dim), 1, 1, dtype))
        self.add_parameter("decoder_pos_embed", self._fixed_positions(self.decoder_embed_dim, dtype),
                           trainable=False)
        _reference_init(self)

    def _fixed_positions(self, dim: int, dtype):
        rows = self.num_patches + 1
        if initializers.is_meta():
            return initializers.meta_array((1, rows, dim), dtype)
        table = sincos_position_embedding(dim, self.grid_size, cls_token=True)
        return backend.xp.asarray(table.reshape(1, rows, dim).astype(dtype))

    def patchify(self, images) -> Tensor:
        """(N, H, W, C) -> (N, L, p * p * C); see :func:`patchify`."""
        return patchify(images, self.patch_size)

    def unpatchify(self, patches) -> Tensor:
        """(N, L, p * p * C) -> (N, H, W, C); see :func:`unpatchify`."""
        return unpatchify(patches, self.patch_size, self.img_size)

    def forward_encoder(self, images, mask_ratio: float = 0.75, noise=None):
        """(latent (N, 1 + keep, D) after ``norm``, mask (N, L), ids_restore (N, L))."""
        x = self._check_images(images)
        tokens, mask, ids_restore = random_masking(self._patch_tokens(x), mask_ratio, noise)
        tokens = F.concat([self._class_token(x.shape[0]), tokens], axis=1)
        return self.norm(self.blocks(tokens)), mask, ids_restore

    def forward_decoder(self, latent, ids_restore) -> Tensor:
        """The predicted pixels (N, L, p * p * C) of every patch from the encoded tokens."""
        x = self.decoder_embed(latent)
        n, visible, dim = x.shape
        ids_restore = np.asarray(ids_restore)
        if ids_restore.shape != (n, self.num_patches):
            raise ShapeError(f"{self._label()}: ids_restore of shape {ids_restore.shape}; expected "
                             f"({n}, {self.num_patches})")
        mask_tokens = F.broadcast_to(self.mask_token, (n, self.num_patches + 1 - visible, dim))
        shuffled = F.concat([F.getitem(x, (slice(None), slice(1, None))), mask_tokens], axis=1)
        ordered = F.getitem(shuffled, (np.arange(n)[:, None], ids_restore))
        x = F.add(F.concat([F.getitem(x, (slice(None), slice(0, 1))), ordered], axis=1), self.decoder_pos_embed)
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))
        return F.getitem(pred, (slice(None), slice(1, None)))

    def forward_loss(self, images, pred, mask) -> Tensor:
        """The mean over the removed patches (``mask`` 1) of each patch's mean squared error."""
        target = self.patchify(images)
        if self.norm_pix_loss:
            mean = F.mean(target, axis=-1, keepdims=True)
            var = F.var(target, axis=-1, keepdims=True, ddof=1)
            target = F.div(F.sub(target, mean), F.sqrt(F.add(var, NORM_PIX_EPS)))
        mask = np.asarray(mask, dtype=pred.dtype)
        if not mask.sum():
            raise ValueError(f"{self._label()}: no patch is masked; the loss is over the removed patches, so "
                             "mask_ratio must leave at least one out")
        diff = F.sub(pred, target)
        per_patch = F.mean(F.mul(diff, diff), axis=-1)
        return F.div(F.sum(F.mul(per_patch, backend.xp.asarray(mask))), float(mask.sum()))

    def forward(self, images, mask_ratio: float = 0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(images, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(images, pred, mask), pred, mask

    def get_config(self) -> dict:
        return {"img_size": list(self.img_size), "patch_size": self.patch_size, "in_chans": self.in_chans,
                "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "decoder_embed_dim": self.decoder_embed_dim, "decoder_depth": self.decoder_depth,
                "decoder_num_heads": self.decoder_num_heads, "mlp_ratio": self.mlp_ratio,
                "norm_pix_loss": self.norm_pix_loss, "name": self.name}

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, depth={self.depth}, "
                f"decoder={self.decoder_embed_dim}x{self.decoder_depth}")


@register_layer
class MAEClassifier(_PatchEncoder):
    """The MAE encoder on whole images (no masking) as a classifier, the reference's
    fine-tuning and linear-probing ViT: tokens [x_cls; patches] + E_pos through ``blocks``;
    then with ``global_pool`` the mean of the patch tokens through ``fc_norm``, else the class
    token through ``norm``; a Dense ``head`` to ``num_classes`` scores, or the (N, D) features
    themselves when ``num_classes`` is 0. ``pos_embed`` is trainable here (it starts at the
    sin-cos table, or at the autoencoder's with :meth:`from_mae`)."""

    default_name = "mae_classifier"

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 1024,
                 depth: int = 24, num_heads: int = 16, mlp_ratio: float = 4.0, num_classes: int = 0,
                 global_pool: bool = True, name: str | None = None):
        super().__init__(name=name)
        setup_patch_encoder(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio,
                            "MAEClassifier")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"MAEClassifier: num_classes must be an int >= 0 (0: features), got {num_classes!r}")
        self.num_classes, self.global_pool = int(num_classes), bool(global_pool)
        norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="fc_norm" if self.global_pool else "norm")
        setattr(self, norm.name, norm)
        if self.num_classes:
            self.head = nn.Dense(self.num_classes, name="head")

    @classmethod
    def from_mae(cls, mae: MaskedAutoencoderViT, num_classes: int = 0, global_pool: bool = True) -> MAEClassifier:
        """A classifier with ``mae``'s encoder weights (patch embedding, class token, position
        embedding, blocks, and ``norm`` for the class-token readout); ``fc_norm`` and the head
        start fresh."""
        if not mae.built:
            raise ValueError("MAEClassifier.from_mae: the autoencoder has no weights yet; build or train it first")
        model = cls(mae.img_size, mae.patch_size, mae.in_chans, mae.embed_dim, mae.depth, mae.num_heads,
                    mae.mlp_ratio, num_classes, global_pool)
        model.build((None, *mae.img_size, mae.in_chans))
        prefixes = ("patch_embed.", "blocks.", "cls_token", "pos_embed") + (() if global_pool else ("norm.",))
        own = model.state_dict()
        for key, value in mae.state_dict().items():
            if key.startswith(prefixes):
                own[key] = value.copy()
        model.load_state_dict(own)
        return model

    def trace(self, shape, step):
        shape = self._image_shape(shape)
        tokens = step(self.patch_embed, shape)
        tokens = step(self.blocks, (tokens[0], self.num_patches + 1, self.embed_dim))
        features = step(self.fc_norm if self.global_pool else self.norm, (tokens[0], self.embed_dim))
        return step(self.head, features) if self.num_classes else features

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        self.add_parameter("cls_token", initializers.normal(TOKEN_STD)((1, 1, self.embed_dim), 1, 1, dtype))
        rows = self.num_patches + 1
        if initializers.is_meta():
            table = initializers.meta_array((1, rows, self.embed_dim), dtype)
        else:
            table = backend.xp.asarray(sincos_position_embedding(self.embed_dim, self.grid_size, cls_token=True)
                                       .reshape(1, rows, self.embed_dim).astype(dtype))
        self.add_parameter("pos_embed", table)
        _reference_init(self)

    def forward_features(self, images) -> Tensor:
        """The pooled (N, D) features before the head."""
        x = self._check_images(images)
        tokens = F.concat([self._class_token(x.shape[0]), self._patch_tokens(x)], axis=1)
        z = self.blocks(tokens)
        if self.global_pool:
            return self.fc_norm(F.mean(F.getitem(z, (slice(None), slice(1, None))), axis=1))
        return F.getitem(self.norm(z), (slice(None), 0))

    def forward(self, images) -> Tensor:
        features = self.forward_features(images)
        return self.head(features) if self.num_classes else features

    def get_config(self) -> dict:
        return {"img_size": list(self.img_size), "patch_size": self.patch_size, "in_chans": self.in_chans,
                "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "num_classes": self.num_classes, "global_pool": self.global_pool,
                "name": self.name}

    def extra_repr(self) -> str:
        pool = "mean" if self.global_pool else "cls"
        return f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, depth={self.depth}, pool={pool}"


def _preset(variant: str, norm_pix_loss: bool, img_size) -> MaskedAutoencoderViT:
    patch, dim, depth, heads = MAE_CONFIGS[variant]
    return MaskedAutoencoderViT(img_size, patch, 3, dim, depth, heads, decoder_embed_dim=512, decoder_depth=8,
                                decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=norm_pix_loss,
                                name=f"mae_vit_{variant}")


def mae_vit_base_patch16(norm_pix_loss: bool = False, img_size=224) -> MaskedAutoencoderViT:
    """MAE ViT-Base/16 (unbuilt): 12 blocks of width 768, 12 heads; decoder 8 blocks of width
    512, 16 heads; 111,907,840 parameters at 224x224x3 (the fixed position embeddings included)."""
    return _preset("base_patch16", norm_pix_loss, img_size)


def mae_vit_large_patch16(norm_pix_loss: bool = False, img_size=224) -> MaskedAutoencoderViT:
    """MAE ViT-Large/16 (unbuilt): 24 blocks of width 1024, 16 heads; the 512 x 8 decoder;
    329,541,888 parameters at 224x224x3."""
    return _preset("large_patch16", norm_pix_loss, img_size)


def mae_vit_huge_patch14(norm_pix_loss: bool = False, img_size=224) -> MaskedAutoencoderViT:
    """MAE ViT-Huge/14 (unbuilt): 32 blocks of width 1280, 16 heads on 14x14 patches; the
    512 x 8 decoder; 657,074,508 parameters at 224x224x3."""
    return _preset("huge_patch14", norm_pix_loss, img_size)
