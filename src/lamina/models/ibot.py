"""iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer"): masked
image modelling by self-distillation on patch tokens, the objective DINOv2 adds to DINO's.

Some patches of the student's global crops are masked: blocks of patches (:func:`block_masks`)
have their patch embeddings replaced by a learned mask token (:class:`MaskedViTEncoder`). The
teacher sees the same crops unmasked. A patch-level head (a :class:`~lamina.models.DINOHead`
applied to every patch token) gives K scores per patch, and the student learns to predict, at
each masked patch, the teacher's sharpened distribution there:

    L_MIM = 1 / |I|  sum_{i in I}  1 / |M_i|  sum_{p in M_i}  H(P_t(x_i)_p, P_s(x~_i)_p)

with M_i the masked patches of image i, I the images with at least one masked patch,
H(p, q) = -sum_k p_k log q_k, P_s = softmax(scores / tau_s) and P_t the teacher's targets:
softmax((scores - c) / tau_t) with an EMA centre c over all patch tokens (iBOT), or the
Sinkhorn-Knopp normalisation of the masked patches' scores (DINOv2,
:func:`lamina.models.sinkhorn_knopp_centering`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, nhwc
from lamina.models.dinov2 import sinkhorn_knopp_centering
from lamina.models.flexivit import resize_position_embedding
from lamina.models.vit import ClassTokenEmbedding
from lamina.nn import init as initializers
from lamina.nn.layer import input_error, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["IBOTLoss", "MaskedViTEncoder", "block_masks", "ibot_patch_cross_entropy"]

CENTERINGS = ("ema", "sinkhorn_knopp")


def _ratio_range(mask_ratio) -> tuple[float, float]:
    low, high = (mask_ratio, mask_ratio) if isinstance(mask_ratio, numbers.Real) else tuple(mask_ratio)
    if not 0.0 <= low <= high < 1.0:
        raise ValueError(f"block_masks: mask_ratio must be a number or a range (low, high) with 0 <= low <= high < 1, "
                         f"got {mask_ratio!r}")
    return float(low), float(high)


def _masked_count(rng: np.random.Generator, patches: int, low: float, high: float) -> int:
    """A patch count whose ratio to ``patches`` lies in [low, high], drawn uniformly in ratio."""
    smallest, largest = math.ceil(low * patches), math.floor(high * patches)
    return int(np.clip(round(rng.uniform(low, high) * patches), smallest, max(smallest, largest)))


def _one_block_mask(rng: np.random.Generator, grid: tuple[int, int], target: int, min_patches: int,
                    log_aspect: tuple[float, float]) -> np.ndarray:
    """Rectangles of random area and aspect ratio added at random places until ``target``
    patches are masked; a rectangle that would go past the target is redrawn."""
    height, width = grid
    mask = np.zeros(grid, dtype=bool)
    count, tries = 0, 0
    while count < target and tries < 200 * height * width:
        tries += 1
        remaining = target - count
        area = rng.uniform(min(min_patches, remaining), remaining)
        aspect = math.exp(rng.uniform(*log_aspect))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if not (1 <= h <= height and 1 <= w <= width):
            continue
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        new = h * w - int(mask[top:top + h, left:left + w].sum())
        if 0 < new <= remaining:
            mask[top:top + h, left:left + w] = True
            count += new
    return mask


def block_masks(batch: int, grid_size, mask_ratio=(0.1, 0.5), min_patches: int = 4, aspect=(0.3, 1 / 0.3),
                mask_probability: float = 1.0, rng=None) -> np.ndarray:
    """iBOT's blockwise masks: (batch, gh * gw) booleans, True where a patch is masked, patches
    numbered row by row. An image is masked with probability ``mask_probability`` (DINOv2
    masks half the images); a masked image gets a ratio r drawn uniformly in ``mask_ratio``
    (iBOT: 0.3 +- 0.2) and round(r gh gw) patches covered by rectangles of at least
    ``min_patches`` patches (fewer only to finish) with height / width log-uniform in
    ``aspect``."""
    batch = positive_int(batch, "block_masks: batch")
    grid = pair(grid_size, "block_masks: grid_size")
    if min(grid) < 1:
        raise ValueError(f"block_masks: grid_size must be positive, got {grid_size!r}")
    low, high = _ratio_range(mask_ratio)
    min_patches = positive_int(min_patches, "block_masks: min_patches")
    a_low, a_high = float(aspect[0]), float(aspect[1])
    if not 0 < a_low <= a_high:
        raise ValueError(f"block_masks: aspect must be a range (low, high) with 0 < low <= high, got {aspect!r}")
    if not 0.0 <= mask_probability <= 1.0:
        raise ValueError(f"block_masks: mask_probability must be in [0, 1], got {mask_probability!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    patches = grid[0] * grid[1]
    masks = np.zeros((batch, patches), dtype=bool)
    for i in range(batch):
        if rng.random() < mask_probability:
            target = _masked_count(rng, patches, low, high)
            masks[i] = _one_block_mask(rng, grid, target, min_patches, (math.log(a_low), math.log(a_high))).ravel()
    return masks


def _mask_array(masks, shape: tuple, fn: str) -> np.ndarray:
    masks = np.asarray(backend.to_numpy(masks.data) if isinstance(masks, Tensor) else masks).astype(bool)
    if masks.shape != shape:
        raise ShapeError(f"{fn}: masks of shape {masks.shape}; expected {shape} (batch, patches)")
    return masks


@register_layer
class MaskedViTEncoder(Block):
    """A ViT backbone returning every token: ``conv_proj`` (p x p / p patch embedding),
    ``flatten_patches``, the learned ``mask_token`` (1, 1, d) put in place of the masked
    patches' embeddings, ``embedding`` (class token and position embedding), ``encoder``
    (pre-norm TransformerEncoderLayers, ``dropout`` on their attention and MLP) and ``norm``:

        x_p <- m_p e_mask + (1 - m_p) x_p;  z = LN(encoder([x_class; x_1..P] + E_pos))

    ``encoder(images, masks=None)``: (N, H, W, C) images and optional (N, P) boolean masks
    -> (N, 1 + P, d) tokens, the class token first. Images of another size than the one it
    was built for get the position embedding resized to their patch grid."""

    default_name = "masked_vit_encoder"

    def __init__(self, patch_size, d_model: int = 192, depth: int = 12, num_heads: int = 3, mlp_dim: int = 768,
                 dropout: float = 0.0, layer_norm_eps: float = 1e-6, name: str | None = None):
        super().__init__(name=name)
        self.patch_size = pair(patch_size, "MaskedViTEncoder: patch_size")
        if min(self.patch_size) < 1:
            raise ValueError(f"MaskedViTEncoder: patch_size must be positive, got {patch_size!r}")
        self.d_model = positive_int(d_model, "MaskedViTEncoder: d_model")
        self.depth = positive_int(depth, "MaskedViTEncoder: depth")
        self.num_heads = positive_int(num_heads, "MaskedViTEncoder: num_heads")
        self.mlp_dim = positive_int(mlp_dim, "MaskedViTEncoder: mlp_dim")
        if d_model % num_heads:
            raise ValueError(f"MaskedViTEncoder: d_model {d_model} is not divisible by num_heads {num_heads}")
        self.dropout_rate, self.layer_norm_eps = float(dropout), float(layer_norm_eps)
        self.conv_proj = nn.Conv2D(d_model, self.patch_size, stride=self.patch_size, name="conv_proj")
        self.flatten_patches = nn.Reshape((-1, d_model), name="flatten_patches")
        self.embedding = ClassTokenEmbedding(name="embedding")
        self.encoder = nn.Sequential(
            *[nn.TransformerEncoderLayer(d_model, num_heads, mlp_dim, dropout=dropout, activation="gelu",
                                         norm_first=True, layer_norm_eps=layer_norm_eps, name=str(k))
              for k in range(depth)],
            name="encoder")
        self.norm = nn.LayerNorm(-1, eps=layer_norm_eps, name="norm")

    def _check_image(self, shape) -> None:
        if any(n is not None and n % p for n, p in zip(shape[1:3], self.patch_size)):
            raise ShapeError(f"{self._label()}: got images of shape {tuple(shape)}; their height and width must be "
                             f"multiples of the patch size {self.patch_size}")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        self._check_image(shape)
        shape = step(self.flatten_patches, step(self.conv_proj, shape))
        return step(self.norm, step(self.encoder, step(self.embedding, shape)))

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.grid_size = self.grid(tuple(input_shape))
        d = self.d_model
        self.add_parameter("mask_token", initializers.zeros((1, 1, d), d, d, backend.get_default_dtype()))

    def grid(self, image_shape) -> tuple[int, int]:
        """The patch grid (gh, gw) of (N, H, W, C) images."""
        return image_shape[1] // self.patch_size[0], image_shape[2] // self.patch_size[1]

    def forward(self, images, masks=None) -> Tensor:
        x = as_tensor(images)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        self._check_image(x.shape)
        tokens = self.flatten_patches(self.conv_proj(x))
        if masks is not None:
            weight = _mask_array(masks, tokens.shape[:2], self._label())[..., None].astype(tokens.dtype)
            weight = backend.xp.asarray(weight)
            tokens = F.add(F.mul(tokens, 1.0 - weight), F.mul(self.mask_token, weight))
        return self.norm(self.encoder(self._embed(tokens, self.grid(x.shape))))

    def _embed(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """Class token and position embedding; for images of another size than the built one
        (DINO's local crops) the position grid is resized (bicubic, as DINO)."""
        if grid == self.grid_size:
            return self.embedding(tokens)
        positions = resize_position_embedding(self.embedding.pos_embedding, grid, self.grid_size)
        token = F.broadcast_to(self.embedding.class_token, (tokens.shape[0], 1, self.d_model))
        return F.add(F.concat([token, tokens], axis=1), positions)

    def get_config(self) -> dict:
        return {"patch_size": list(self.patch_size), "d_model": self.d_model, "depth": self.depth,
                "num_heads": self.num_heads, "mlp_dim": self.mlp_dim, "dropout": self.dropout_rate,
                "layer_norm_eps": self.layer_norm_eps, "name": self.name}

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, d_model={self.d_model}, depth={self.depth}, num_heads={self.num_heads}"


def ibot_patch_cross_entropy(student_patch_scores, teacher_patch_probs, masks) -> Tensor:
    """L_MIM of the module docstring for given targets: ``student_patch_scores`` (N, P, K) the
    student's patch scores already divided by tau_s, ``teacher_patch_probs`` (N, P, K) the
    teacher's targets (constants; only the masked patches' rows are read), ``masks`` (N, P)
    booleans. The cross-entropy is averaged over each image's masked patches, then over the
    images that have any; 0 (with a zero gradient) when no patch is masked."""
    student = as_tensor(student_patch_scores)
    if student.ndim != 3:
        raise ShapeError(f"ibot_patch_cross_entropy: student scores of shape {student.shape}; expected (batch, "
                         "patches, K)")
    targets = teacher_patch_probs.data if isinstance(teacher_patch_probs, Tensor) \
        else backend.xp.asarray(teacher_patch_probs)
    if tuple(targets.shape) != tuple(student.shape):
        raise ShapeError(f"ibot_patch_cross_entropy: teacher targets of shape {tuple(targets.shape)}; expected the "
                         f"student's {student.shape}")
    masks = _mask_array(masks, tuple(student.shape[:2]), "ibot_patch_cross_entropy")
    per_image = masks.sum(axis=1, keepdims=True)
    images = int((per_image > 0).sum())
    weights = np.where(masks, 1.0 / np.maximum(per_image, 1), 0.0) / max(images, 1)
    weighted = backend.xp.asarray(weights[..., None], dtype=student.dtype) * targets
    return F.neg(F.sum(F.mul(F.log_softmax(student, axis=-1), weighted.astype(student.dtype))))


def _positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"IBOTLoss: {what} must be a number > 0, got {value!r}")
    return float(value)


class IBOTLoss(Module):
    """L_MIM with its teacher targets (module docstring). ``loss(student_patch_scores,
    teacher_patch_scores, masks, teacher_temp=None)``: (N, P, out_dim) scores of the student
    (on the masked crops) and of the teacher (unmasked), (N, P) boolean masks; the teacher
    temperature defaults to ``teacher_temp``.

    ``centering='ema'``: targets softmax((t - c) / tau_t) with the buffer ``center`` (1,
    out_dim), which in training mode moves to c <- m c + (1 - m) mean over all patch tokens
    (iBOT). ``centering='sinkhorn_knopp'``: the masked patches' targets are
    :func:`~lamina.models.sinkhorn_knopp_centering` of their scores, ``sinkhorn_iterations``
    rounds (DINOv2)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.07, centering: str = "ema",
                 center_momentum: float = 0.9, sinkhorn_iterations: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.out_dim = positive_int(out_dim, "IBOTLoss: out_dim")
        self.student_temp = _positive_number(student_temp, "student_temp")
        self.teacher_temp = _positive_number(teacher_temp, "teacher_temp")
        if centering not in CENTERINGS:
            raise ValueError(f"IBOTLoss: centering must be one of {CENTERINGS}, got {centering!r}")
        self.centering = centering
        if isinstance(center_momentum, bool) or not isinstance(center_momentum, numbers.Real) \
                or not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"IBOTLoss: center_momentum must be a number in [0, 1], got {center_momentum!r}")
        self.center_momentum = float(center_momentum)
        self.sinkhorn_iterations = positive_int(sinkhorn_iterations, "IBOTLoss: sinkhorn_iterations")
        self.register_buffer("center", backend.xp.zeros((1, self.out_dim), dtype=backend.get_default_dtype()))

    def _scores(self, scores, what: str):
        array = scores.data if isinstance(scores, Tensor) else backend.xp.asarray(scores)
        if array.ndim != 3 or array.shape[2] != self.out_dim:
            raise ShapeError(f"IBOTLoss: {what} patch scores of shape {tuple(array.shape)}; expected (batch, patches, "
                             f"{self.out_dim})")
        return array

    def teacher_targets(self, teacher_patch_scores, masks, teacher_temp: float | None = None):
        """The targets (N, P, out_dim) as a constant array (rows of unmasked patches are 0 with
        Sinkhorn-Knopp centring)."""
        scores = self._scores(teacher_patch_scores, "teacher")
        temp = self.teacher_temp if teacher_temp is None else _positive_number(teacher_temp, "teacher_temp")
        masks = _mask_array(masks, tuple(scores.shape[:2]), "IBOTLoss")
        if self.centering == "sinkhorn_knopp":
            targets = backend.xp.zeros_like(scores)
            if masks.any():
                rows = backend.xp.asarray(masks)
                targets[rows] = sinkhorn_knopp_centering(scores[rows], temp, self.sinkhorn_iterations)
            return targets
        z = (scores - self.center) / temp
        z = backend.xp.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def update_center(self, teacher_patch_scores) -> None:
        """c <- m c + (1 - m) mean of the teacher's scores over every patch of every image."""
        scores = self._scores(teacher_patch_scores, "teacher")
        batch_center = scores.reshape(-1, self.out_dim).mean(axis=0, keepdims=True)
        self.center = (self.center * self.center_momentum + batch_center * (1.0 - self.center_momentum)).astype(
            self.center.dtype)

    def forward(self, student_patch_scores, teacher_patch_scores, masks, teacher_temp: float | None = None) -> Tensor:
        student = as_tensor(student_patch_scores)
        self._scores(student, "student")
        targets = self.teacher_targets(teacher_patch_scores, masks, teacher_temp)
        loss = ibot_patch_cross_entropy(F.div(student, self.student_temp), targets, masks)
        if self.training and self.centering == "ema":
            self.update_center(teacher_patch_scores)
        return loss

    def get_config(self) -> dict:
        return {"out_dim": self.out_dim, "student_temp": self.student_temp, "teacher_temp": self.teacher_temp,
                "centering": self.centering, "center_momentum": self.center_momentum,
                "sinkhorn_iterations": self.sinkhorn_iterations, "name": self.name}

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, centering={self.centering}, student_temp={self.student_temp}"
