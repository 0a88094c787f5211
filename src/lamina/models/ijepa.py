"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
Predictive Architecture"): predict, in representation space, what a target encoder says about
image blocks that the context encoder never sees. NHWC images, in the layout of the authors'
reference (``src/models/vision_transformer.py``, ``src/masks/multiblock.py``, ``src/train.py``).

    masks:      M target blocks B_1..B_M (rectangles of patches, one size per batch: an area
                fraction in ``target_scale`` and an aspect ratio h / w in ``target_aspect``) and
                one context block (area in ``context_scale``) with every target patch removed
                (:func:`multiblock_masks`)
    targets:    s_y = LN(f_target(x)) at the patches of each B_i; f_target, the target
                encoder, sees every patch and is an exponential moving average of the context
                encoder (no gradient reaches it); LN a LayerNorm without parameters
    context:    s_x = f_context(x at the context patches)
    prediction: for each block, the predictor g (a narrow transformer) reads
                [W s_x + E'_pos(context); m + E'_pos(B_i)] (m a learned mask token, E'_pos the
                predictor's fixed sin-cos position embedding) and maps its outputs at the mask
                tokens back to the encoder's width: s_hat_y(i)
    loss:       L = mean over blocks, patches and features of (s_hat_y - s_y)^2 (``loss="mse"``,
                the paper's), |s_hat_y - s_y| (``loss="l1"``) or the smooth L1 of the reference
                code (``loss="smooth_l1"``: d^2 / 2 where |d| < 1, else |d| - 1/2)
    teacher:    theta_target <- m theta_target + (1 - m) theta_context after each step, m rising
                linearly from 0.996 to 1 (:func:`ema_momentum_schedule`)

The encoders are ViTs without a class token (patch embedding, fixed 2-D sin-cos position
embedding, pre-norm blocks as :class:`~lamina.models.DeiTBlock`, a final LayerNorm). The
training step is :class:`lamina.train.IJEPATrainer`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.mae import setup_patch_encoder, sincos_position_embedding, vit_blocks
from lamina.nn import init as initializers
from lamina.nn.layer import input_error, pair, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["IJEPA", "IJEPAEncoder", "IJEPAPredictor", "MultiBlockMasks", "ema_momentum_schedule", "ijepa_loss",
           "multiblock_masks", "target_layer_norm"]

LAYER_NORM_EPS = 1e-6        # the encoders' and predictor's LayerNorms
TARGET_NORM_EPS = 1e-5       # the parameter-free LayerNorm of the targets (torch's default)
INIT_STD = 0.02              # Dense, patch projection and mask token start N(0, 0.02^2) truncated at +-2 std
LOSSES = ("mse", "l1", "smooth_l1")


# -- masks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiBlockMasks:
    """Patch indices (row-major on the patch grid, ascending) of one batch: ``context``
    (N, K_context), ``targets`` (M, N, K_target); and the (height, width) in patches of the
    target blocks and of the context block before the targets were taken out."""

    context: np.ndarray
    targets: np.ndarray
    target_block: tuple[int, int]
    context_block: tuple[int, int]


def _range(value, fn: str, what: str, upper: float | None) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 < lo <= hi or (upper is not None and hi > upper):
        bound = f" and <= {upper}" if upper is not None else ""
        raise ValueError(f"{fn}: {what} must be (low, high) with 0 < low <= high{bound}, got {tuple(value)!r}")
    return lo, hi


def _block_size(rng: np.random.Generator, grid: tuple[int, int], scale, aspect) -> tuple[int, int]:
    """The reference's ``_sample_block_size``: area s |grid| and ratio h / w = r, s and r
    uniform in their ranges; h = round(sqrt(s |grid| r)), w = round(sqrt(s |grid| / r)), kept
    inside the grid."""
    s = scale[0] + rng.random() * (scale[1] - scale[0])
    keep = int(grid[0] * grid[1] * s)
    r = aspect[0] + rng.random() * (aspect[1] - aspect[0])
    h = min(max(int(round(np.sqrt(keep * r))), 1), grid[0])
    w = min(max(int(round(np.sqrt(keep / r))), 1), grid[1])
    return h, w


def _place(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A (rows, cols) boolean mask with one h x w block at a uniform position."""
    top = int(rng.integers(0, grid[0] - size[0] + 1))
    left = int(rng.integers(0, grid[1] - size[1] + 1))
    mask = np.zeros(grid, dtype=bool)
    mask[top:top + size[0], left:left + size[1]] = True
    return mask


def multiblock_masks(batch: int, grid_size, num_targets: int = 4, target_scale=(0.15, 0.2),
                     target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0),
                     min_keep: int = 4, rng=None, tries: int = 50) -> MultiBlockMasks:
    """The paper's multi-block masking for ``batch`` images of ``grid_size`` = (rows, cols)
    patches. One target block size and one context block size are drawn per batch (as the
    reference's collator does); each image gets ``num_targets`` target blocks at uniform
    positions (they may overlap) and one context block whose patches inside any target block
    are removed. A context left with fewer than ``min_keep`` patches is placed again (up to
    ``tries`` times, then the targets too). Every image then keeps the first K patches of its
    context, K the smallest context in the batch, so the counts match within the batch.
    ``rng``: a NumPy Generator, a seed, or None (:func:`lamina.backend.rng`)."""
    fn = "multiblock_masks"
    batch = positive_int(batch, f"{fn}: batch")
    grid = pair(grid_size, f"{fn}: grid_size")
    num_targets = positive_int(num_targets, f"{fn}: num_targets")
    min_keep = positive_int(min_keep, f"{fn}: min_keep")
    tries = positive_int(tries, f"{fn}: tries")
    target_scale = _range(target_scale, fn, "target_scale", 1.0)
    context_scale = _range(context_scale, fn, "context_scale", 1.0)
    target_aspect = _range(target_aspect, fn, "target_aspect", None)
    context_aspect = _range(context_aspect, fn, "context_aspect", None)
    if rng is None:
        rng = backend.rng()
    elif not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    target_size = _block_size(rng, grid, target_scale, target_aspect)
    context_size = _block_size(rng, grid, context_scale, context_aspect)
    contexts, targets = [], []
    for _ in range(batch):
        for _ in range(tries):
            blocks = [_place(rng, grid, target_size) for _ in range(num_targets)]
            covered = np.logical_or.reduce(blocks)
            for _ in range(tries):
                context = _place(rng, grid, context_size) & ~covered
                if context.sum() >= min_keep:
                    break
            if context.sum() >= min_keep:
                break
        else:
            raise ValueError(f"{fn}: no context block of {context_size} patches keeps min_keep={min_keep} patches "
                             f"outside {num_targets} target blocks of {target_size} on a {grid} grid after {tries} "
                             "tries; lower target_scale or num_targets")
        contexts.append(np.flatnonzero(context))
        targets.append([np.flatnonzero(b) for b in blocks])
    keep = min(len(c) for c in contexts)
    context_ids = np.stack([c[:keep] for c in contexts]).astype(np.int64)
    target_ids = np.stack([np.stack([t[m] for t in targets]) for m in range(num_targets)]).astype(np.int64)
    return MultiBlockMasks(context_ids, target_ids, target_size, context_size)


# -- loss, target normalisation and the momentum schedule -----------------------------------


def target_layer_norm(x, eps: float = TARGET_NORM_EPS) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the last axis (biased variance, no scale or shift)."""
    x = as_tensor(x)
    centred = F.sub(x, F.mean(x, axis=-1, keepdims=True))
    return F.div(centred, F.sqrt(F.add(F.mean(F.mul(centred, centred), axis=-1, keepdims=True), eps)))


def ijepa_loss(predictions, targets, loss: str = "mse") -> Tensor:
    """mean((p - t)^2) (``"mse"``), mean(|p - t|) (``"l1"``) or the mean smooth L1 (``"smooth_l1"``,
    beta 1) over all elements."""
    if loss not in LOSSES:
        raise ValueError(f"ijepa_loss: loss must be one of {LOSSES}, got {loss!r}")
    p, t = as_tensor(predictions), as_tensor(targets)
    if p.shape != t.shape:
        raise ShapeError(f"ijepa_loss: predictions of shape {p.shape} and targets of shape {t.shape} differ")
    if loss == "smooth_l1":
        return F.smooth_l1_loss(p, t)
    diff = F.sub(p, t)
    return F.mean(F.mul(diff, diff) if loss == "mse" else F.abs(diff))


def ema_momentum_schedule(start: float = 0.996, end: float = 1.0, steps: int = 1) -> np.ndarray:
    """The reference's target-encoder momentum: m_i = start + i (end - start) / steps for the
    steps i = 0 .. steps - 1 (linear, reaching ``end`` just after the last step)."""
    steps = positive_int(steps, "ema_momentum_schedule: steps")
    for value, what in ((start, "start"), (end, "end")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"ema_momentum_schedule: {what} must be a number in [0, 1], got {value!r}")
    return start + np.arange(steps) * (end - start) / steps


# -- the networks ---------------------------------------------------------------------------


def _fixed_positions(dim: int, grid: tuple[int, int], dtype):
    rows = grid[0] * grid[1]
    if initializers.is_meta():
        return initializers.meta_array((1, rows, dim), dtype)
    return backend.xp.asarray(sincos_position_embedding(dim, grid).reshape(1, rows, dim).astype(dtype))


def trace_patch_encoder(encoder: Block, shape, step):
    """The traced shapes of a ViT encoder made by ``setup_patch_encoder`` with a final ``norm``:
    NHWC images of its own size -> patch tokens -> blocks -> norm (N, T, D)."""
    shape = nhwc(encoder, shape)
    expected = (*encoder.img_size, encoder.in_chans)
    if any(n is not None and n != want for n, want in zip(shape[1:], expected)):
        raise ShapeError(f"{encoder._label()}: got images of shape {tuple(shape)}; the encoder was made for "
                         f"(batch, {expected[0]}, {expected[1]}, {expected[2]})")
    tokens = step(encoder.patch_embed, shape)
    return step(encoder.norm, step(encoder.blocks, (tokens[0], encoder.num_patches, encoder.embed_dim)))


def truncated_normal_weights(root: nn.Module, std: float = INIT_STD) -> None:
    """Every Dense and convolution weight under ``root`` drawn from N(0, std^2) truncated at
    +-2 std, biases zero (LayerNorms keep 1 and 0): the ViT references' initialisation."""
    draw = initializers.truncated_normal(std)
    for module in root.modules():
        if isinstance(module, (nn.Dense, nn.Conv2D)):
            module.weight.data[...] = draw(module.weight.shape, 1, 1, module.weight.dtype)
            if module.use_bias:
                module.bias.data[...] = 0


def _reference_init(block: Block, blocks: nn.Sequential) -> None:
    """Truncated N(0, 0.02^2) Dense and convolution weights, zero biases; the output projections
    of block l (attention ``proj`` and ``mlp.fc2``) divided by sqrt(2 l), l counted from 1."""
    if initializers.is_meta():
        return
    truncated_normal_weights(block)
    for layer, child in enumerate(blocks.children(), start=1):
        for dense in (child.attn.proj, child.mlp.fc2):
            dense.weight.data[...] = dense.weight.data / np.sqrt(2.0 * layer)


def _first_shape(shape) -> tuple:
    """The images' (or context tokens') shape when a layer is built on all its inputs' shapes."""
    shape = tuple(shape)
    return tuple(shape[0]) if shape and isinstance(shape[0], (tuple, list)) else shape


def _check_dim(dim: int, heads: int, fn: str, what: str) -> None:
    if dim % heads:
        raise ValueError(f"{fn}: {what} {dim} is not divisible by its number of heads {heads}")
    if dim % 4:
        raise ValueError(f"{fn}: {what} must be a multiple of 4 for the 2-D sin-cos position embedding, got {dim}")


def _gather(tokens: Tensor, indices, fn: str) -> Tensor:
    """tokens (N, L, D) at indices (N, K) -> (N, K, D)."""
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[0] != tokens.shape[0]:
        raise ShapeError(f"{fn}: patch indices of shape {indices.shape}; expected ({tokens.shape[0]}, K), one row "
                         "per image")
    if indices.size and (indices.min() < 0 or indices.max() >= tokens.shape[1]):
        raise ValueError(f"{fn}: patch indices must lie in [0, {tokens.shape[1]}), got [{indices.min()}, "
                         f"{indices.max()}]")
    return F.getitem(tokens, (np.arange(tokens.shape[0])[:, None], indices))


@register_layer
class IJEPAEncoder(Block):
    """A ViT without class token: ``patch_embed`` (``proj``, a p x p / p convolution to
    ``embed_dim``), the fixed sin-cos ``pos_embed`` (1, L, D), ``blocks`` and ``norm``.
    ``encoder(images)``: (N, L, D) features of every patch, or with ``indices``
    (N, K) only those patches go through the blocks: (N, K, D)."""

    default_name = "ijepa_encoder"

    def __init__(self, img_size=32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "IJEPAEncoder"
        setup_patch_encoder(self, img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, fn)
        _check_dim(self.embed_dim, self.num_heads, fn, "embed_dim")
        self.norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="norm")

    def trace(self, shape, step):
        return trace_patch_encoder(self, _first_shape(shape), step)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        self.add_parameter("pos_embed", _fixed_positions(self.embed_dim, self.grid_size, dtype), trainable=False)
        _reference_init(self, self.blocks)

    def forward(self, images, *, indices=None) -> Tensor:
        x = as_tensor(images)
        if x.ndim != 4 or tuple(x.shape[1:]) != (*self.img_size, self.in_chans):
            raise input_error(self, x, f"NHWC images (batch, {self.img_size[0]}, {self.img_size[1]}, "
                                       f"{self.in_chans})")
        tokens = F.add(self.patch_embed(x), self.pos_embed)
        if indices is not None:
            tokens = _gather(tokens, indices, self._label())
        return self.norm(self.blocks(tokens))

    def get_config(self) -> dict:
        return {"img_size": list(self.img_size), "patch_size": self.patch_size, "in_chans": self.in_chans,
                "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "name": self.name}

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, depth={self.depth}"


@register_layer
class IJEPAPredictor(Block):
    """The narrow predictor: ``predictor_embed`` (D -> D'), the learned ``mask_token`` (1, 1,
    D'), the fixed sin-cos ``pos_embed`` (1, L, D') of the patch grid, ``predictor_blocks``,
    ``predictor_norm`` and ``predictor_proj`` (D' -> D).

    ``predictor(context_tokens, context_indices=.., target_indices=..)``: context tokens (N, K_c, D)
    of the patches ``context_indices`` (N, K_c); ``target_indices`` (M, N, K_t). For each
    target block m the sequence [embed(context) + E'(context); mask_token + E'(block m)] goes
    through the blocks; returns the projected outputs at the mask tokens, (M, N, K_t, D)."""

    default_name = "ijepa_predictor"

    def __init__(self, grid_size=8, embed_dim: int = 192, predictor_embed_dim: int = 96, depth: int = 6,
                 num_heads: int = 3, mlp_ratio: float = 4.0, name: str | None = None):
        super().__init__(name=name)
        fn = "IJEPAPredictor"
        self.grid_size = pair(grid_size, f"{fn}: grid_size")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.embed_dim = positive_int(embed_dim, f"{fn}: embed_dim")
        self.predictor_embed_dim = positive_int(predictor_embed_dim, f"{fn}: predictor_embed_dim")
        self.depth = positive_int(depth, f"{fn}: depth")
        self.num_heads = positive_int(num_heads, f"{fn}: num_heads")
        self.mlp_ratio = float(mlp_ratio)
        _check_dim(self.predictor_embed_dim, self.num_heads, fn, "predictor_embed_dim")
        self.predictor_embed = nn.Dense(self.predictor_embed_dim, name="predictor_embed")
        self.predictor_blocks = vit_blocks(self.predictor_embed_dim, self.depth, self.num_heads, self.mlp_ratio,
                                        "predictor_blocks")
        self.predictor_norm = nn.LayerNorm(-1, eps=LAYER_NORM_EPS, name="predictor_norm")
        self.predictor_proj = nn.Dense(self.embed_dim, name="predictor_proj")

    def trace(self, shape, step):
        shape = _first_shape(shape)
        if len(shape) != 3 or shape[2] not in (None, self.embed_dim):
            raise ShapeError(f"{self._label()}: got context tokens of shape {shape}; expected (batch, tokens, "
                             f"{self.embed_dim})")
        tokens = step(self.predictor_embed, (shape[0], self.num_patches, self.embed_dim))
        return step(self.predictor_proj, step(self.predictor_norm, step(self.predictor_blocks, tokens)))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        dtype = backend.get_default_dtype()
        d = self.predictor_embed_dim
        token = initializers.meta_array((1, 1, d), dtype) if initializers.is_meta() \
            else initializers.truncated_normal(INIT_STD)((1, 1, d), 1, 1, dtype)
        self.add_parameter("mask_token", token)
        self.add_parameter("pos_embed", _fixed_positions(d, self.grid_size, dtype), trainable=False)
        _reference_init(self, self.predictor_blocks)

    def forward(self, context_tokens, *, context_indices, target_indices) -> Tensor:
        x = as_tensor(context_tokens)
        label = self._label()
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise input_error(self, x, f"context tokens (batch, tokens, {self.embed_dim})")
        n, k_context = x.shape[0], x.shape[1]
        context_indices = np.asarray(context_indices)
        if context_indices.shape != (n, k_context):
            raise ShapeError(f"{label}: context indices of shape {context_indices.shape}; expected ({n}, "
                             f"{k_context}), one per context token")
        target_indices = np.asarray(target_indices)
        if target_indices.ndim != 3 or target_indices.shape[1] != n:
            raise ShapeError(f"{label}: target indices of shape {target_indices.shape}; expected (blocks, {n}, "
                             "patches per block)")
        blocks, k_target = target_indices.shape[0], target_indices.shape[2]
        positions = F.broadcast_to(self.pos_embed, (n, self.num_patches, self.predictor_embed_dim))
        context = F.add(self.predictor_embed(x), _gather(positions, context_indices, label))
        context = F.concat([context] * blocks, axis=0)                      # (M N, K_c, D')
        every_block = target_indices.reshape(blocks * n, k_target)
        all_positions = F.concat([positions] * blocks, axis=0)
        queries = F.add(_gather(all_positions, every_block, label), self.mask_token)
        z = self.predictor_norm(self.predictor_blocks(F.concat([context, queries], axis=1)))
        out = self.predictor_proj(F.getitem(z, (slice(None), slice(k_context, None))))
        return F.reshape(out, blocks, n, k_target, self.embed_dim)

    def get_config(self) -> dict:
        return {"grid_size": list(self.grid_size), "embed_dim": self.embed_dim,
                "predictor_embed_dim": self.predictor_embed_dim, "depth": self.depth, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.embed_dim} -> {self.predictor_embed_dim}, depth={self.depth}"


@register_layer
class IJEPA(Block):
    """The whole I-JEPA of the module docstring: ``context_encoder`` and ``target_encoder``
    (two :class:`IJEPAEncoder` of one architecture; the target frozen, its weights copied from
    the context encoder when built and then moved by :meth:`update_target`) and ``predictor``
    (:class:`IJEPAPredictor`).

    ``model(images, masks=masks)`` returns the loss for the :class:`MultiBlockMasks` of
    :func:`multiblock_masks` (or a pair (context indices (N, K_c), target indices (M, N,
    K_t))); ``model(images)`` the target encoder's (N, L, D) patch features, what a
    downstream task reads. The parts: :meth:`targets`, :meth:`predict`, :meth:`features`."""

    default_name = "ijepa"

    def __init__(self, img_size=32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, predictor_embed_dim: int = 96, predictor_depth: int = 6,
                 predictor_num_heads: int | None = None, mlp_ratio: float = 4.0, loss: str = "mse",
                 name: str | None = None):
        super().__init__(name=name)
        if loss not in LOSSES:
            raise ValueError(f"IJEPA: loss must be one of {LOSSES}, got {loss!r}")
        self.loss_kind = loss
        predictor_num_heads = num_heads if predictor_num_heads is None else predictor_num_heads
        encoder = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
                       num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.context_encoder = IJEPAEncoder(**encoder, name="context_encoder")
        self.target_encoder = IJEPAEncoder(**encoder, name="target_encoder")
        self.predictor = IJEPAPredictor(self.context_encoder.grid_size, embed_dim, predictor_embed_dim,
                                        predictor_depth, predictor_num_heads, mlp_ratio, name="predictor")
        self.input_shape = self.context_encoder.input_shape

    def trace(self, shape, step):
        shape = _first_shape(shape)
        tokens = step(self.context_encoder, shape)
        step(self.target_encoder, shape)
        step(self.predictor, tokens)
        return ()

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.target_encoder.load_state_dict(self.context_encoder.state_dict())
        self.target_encoder.freeze()

    def targets(self, images, target_indices) -> Tensor:
        """s_y: LN(target_encoder(images)) at every block's patches, (M, N, K_t, D), constants."""
        target_indices = np.asarray(target_indices)
        if target_indices.ndim != 3:
            raise ShapeError(f"{self._label()}: target indices of shape {target_indices.shape}; expected (blocks, "
                             "batch, patches per block)")
        with no_grad():
            h = target_layer_norm(self.target_encoder(images))
            blocks = [_gather(h, ids, self._label()) for ids in target_indices]
        return Tensor(F.stack(blocks, axis=0).data)

    def predict(self, images, context_indices, target_indices) -> Tensor:
        """s_hat_y: the predictor's (M, N, K_t, D) outputs from the context encoder's tokens."""
        context = self.context_encoder(images, indices=context_indices)
        return self.predictor(context, context_indices=context_indices, target_indices=target_indices)

    def forward(self, images, *, masks=None) -> Tensor:
        if masks is None:
            return self.target_encoder(images)
        if isinstance(masks, MultiBlockMasks):
            context_indices, target_indices = masks.context, masks.targets
        else:
            context_indices, target_indices = masks
        targets = self.targets(images, target_indices)
        return ijepa_loss(self.predict(images, context_indices, target_indices), targets, self.loss_kind)

    def update_target(self, momentum: float) -> None:
        """theta_target <- m theta_target + (1 - m) theta_context, parameter by parameter."""
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{self._label()}.update_target: momentum must be a number in [0, 1], got {momentum!r}")
        pairs = zip(self.target_encoder.parameters(), self.context_encoder.parameters(), strict=True)
        for target, source in pairs:
            target.data[...] = momentum * target.data + (1.0 - momentum) * source.data

    def features(self, images, encoder: str = "target") -> Tensor:
        """The mean over patches of an encoder's outputs on whole images: (N, D), the features a
        linear probe reads (``encoder`` 'target' or 'context')."""
        if encoder not in ("target", "context"):
            raise ValueError(f"{self._label()}.features: encoder must be 'target' or 'context', got {encoder!r}")
        module = self.target_encoder if encoder == "target" else self.context_encoder
        return F.mean(module(images), axis=1)

    def get_config(self) -> dict:
        enc, pred = self.context_encoder, self.predictor
        return {"img_size": list(enc.img_size), "patch_size": enc.patch_size, "in_chans": enc.in_chans,
                "embed_dim": enc.embed_dim, "depth": enc.depth, "num_heads": enc.num_heads,
                "predictor_embed_dim": pred.predictor_embed_dim, "predictor_depth": pred.depth,
                "predictor_num_heads": pred.num_heads, "mlp_ratio": enc.mlp_ratio, "loss": self.loss_kind,
                "name": self.name}

    def extra_repr(self) -> str:
        enc = self.context_encoder
        return f"patch_size={enc.patch_size}, embed_dim={enc.embed_dim}, depth={enc.depth}, loss={self.loss_kind}"
