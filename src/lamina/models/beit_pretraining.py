"""BEiT's pre-training pieces (Bao et al. 2022): blockwise masking, the masked-token loss and
two tokenizers that turn images into the visual tokens the model learns to predict; the model
is :class:`lamina.models.BEiT`.

Blockwise masking (the paper's Algorithm 1), on an h x w patch grid of N = h w patches::

    M = {}
    repeat
        s ~ U(16, 0.4 N - |M|)          block area (at least ``min_patches``)
        r ~ U(0.3, 1 / 0.3)             aspect ratio (log-uniform here, as the reference code)
        a = sqrt(s r),  b = sqrt(s / r)
        t ~ U(0, h - a),  l ~ U(0, w - b)
        M = M + {(i, j): t <= i < t + a, l <= j < l + b}
    until |M| >= 0.4 N

As the reference code, a block is kept only if it adds at least one patch and does not take
the count past the target (:func:`beit_block_masking`).

The loss is the cross-entropy of the visual token z_i at the masked positions only::

    L = -1 / |M| sum_{i in M} log softmax(W h_i + b)[z_i]               (:func:`beit_mim_loss`)

The paper's tokens come from DALL-E's discrete VAE; any callable mapping (N, H, W, C) images to
(N, H / p, W / p) ids serves: :class:`VQVAETokenizer` reads them off a trained
:class:`~lamina.models.VQVAE`, :class:`PatchKMeansTokenizer` from a k-means codebook of the
raw p x p patches.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.layer import pair, positive_int
from lamina.nn.module import as_tensor, evaluation_mode

__all__ = ["PatchKMeansTokenizer", "VQVAETokenizer", "beit_block_masking", "beit_mask_blocks", "beit_mim_loss"]


def beit_mask_blocks(grid_size, num_masked: int, min_patches: int = 16, aspect=(0.3, 1 / 0.3), rng=None,
                     max_attempts: int = 10) -> list[tuple[int, int, int, int]]:
    """The rectangles (top, left, height, width) of one image's blockwise mask (module
    docstring) on a ``grid_size`` (h, w) grid, drawn until ``num_masked`` patches are covered
    or no block of ``max_attempts`` fits: area s ~ U(min_patches, remaining), log aspect
    uniform in ``aspect``, height round(sqrt(s r)) and width round(sqrt(s / r)), at a uniform
    place. Blocks whose rounded sides leave the grid, cover fewer than ``min_patches`` patches
    or leave the aspect range, and blocks that add no patch or overshoot the remaining count,
    are redrawn."""
    h, w = pair(grid_size, "beit_mask_blocks: grid_size")
    min_patches = positive_int(min_patches, "beit_mask_blocks: min_patches")
    low, high = float(aspect[0]), float(aspect[1])
    if not 0 < low <= high:
        raise ValueError(f"beit_mask_blocks: aspect must be a range (low, high) with 0 < low <= high, got {aspect!r}")
    if not 0 <= num_masked <= h * w:
        raise ValueError(f"beit_mask_blocks: num_masked must be in [0, {h * w}] for a {h}x{w} grid, got {num_masked}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mask = np.zeros((h, w), dtype=bool)
    blocks, count = [], 0
    while count < num_masked:
        remaining, added = num_masked - count, 0
        for _ in range(max_attempts):
            area = rng.uniform(min_patches, max(min_patches, remaining))
            ratio = math.exp(rng.uniform(math.log(low), math.log(high)))
            bh, bw = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if not (bh <= h and bw <= w and bh * bw >= min_patches and low <= bh / bw <= high):
                continue
            top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            added = bh * bw - int(mask[top:top + bh, left:left + bw].sum())
            if 0 < added <= remaining:
                mask[top:top + bh, left:left + bw] = True
                blocks.append((top, left, bh, bw))
                count += added
                break
            added = 0
        if added == 0:
            break
    return blocks


def beit_block_masking(batch: int, grid_size, mask_ratio: float = 0.4, min_patches: int = 16,
                       aspect=(0.3, 1 / 0.3), rng=None) -> np.ndarray:
    """BEiT's blockwise masks: (batch, h w) booleans, True where a patch is masked, patches row
    by row; each image gets blocks (:func:`beit_mask_blocks`) covering up to
    round(``mask_ratio`` h w) patches (about 40% in the paper). ``rng`` a seed or a NumPy
    Generator: the same seed gives the same masks."""
    batch = positive_int(batch, "beit_block_masking: batch")
    h, w = pair(grid_size, "beit_block_masking: grid_size")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"beit_block_masking: mask_ratio must be in [0, 1), got {mask_ratio!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    masks = np.zeros((batch, h, w), dtype=bool)
    for i in range(batch):
        for top, left, bh, bw in beit_mask_blocks((h, w), round(mask_ratio * h * w), min_patches, aspect, rng):
            masks[i, top:top + bh, left:left + bw] = True
    return masks.reshape(batch, h * w)


def beit_mim_loss(scores, token_ids, masks) -> Tensor:
    """L = -mean over the masked positions of log softmax(scores)[z] (module docstring):
    ``scores`` (N, P, V) from :meth:`~lamina.models.BEiT.masked_token_scores`, ``token_ids``
    (N, P) or (N, h, w) visual tokens, ``masks`` of the same size, True where masked. The
    unmasked positions do not enter it."""
    scores = as_tensor(scores)
    ids = np.asarray(backend.to_numpy(token_ids.data) if isinstance(token_ids, Tensor) else token_ids)
    m = np.asarray(backend.to_numpy(masks.data) if isinstance(masks, Tensor) else masks).astype(bool)
    if scores.ndim != 3 or ids.size != scores.shape[0] * scores.shape[1] or m.size != ids.size:
        raise ShapeError(f"beit_mim_loss: scores of shape {tuple(scores.shape)}, token ids of shape {ids.shape} and "
                         f"masks of shape {m.shape}; expected (N, P, vocab), and N P ids and masks")
    ids, m = ids.reshape(scores.shape[:2]).astype(np.int64), m.reshape(scores.shape[:2])
    if not m.any():
        raise ValueError("beit_mim_loss: no position is masked")
    if ids.min() < 0 or ids.max() >= scores.shape[2]:
        raise ValueError(f"beit_mim_loss: token ids must be in [0, {scores.shape[2]}), got [{ids.min()}, {ids.max()}]")
    rows, cols = np.nonzero(m)
    return F.cross_entropy(F.getitem(scores, (rows, cols)), ids[rows, cols])


def _patches(images, patch_size: int, who: str) -> np.ndarray:
    x = np.asarray(backend.to_numpy(images.data) if isinstance(images, Tensor) else images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] % patch_size or x.shape[2] % patch_size:
        raise ShapeError(f"{who}: got images of shape {x.shape}; expected NHWC images whose height and width are "
                         f"multiples of the patch size {patch_size}")
    n, h, w, c = x.shape
    grid = x.reshape(n, h // patch_size, patch_size, w // patch_size, patch_size, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, h // patch_size, w // patch_size, patch_size * patch_size * c)


class PatchKMeansTokenizer:
    """Visual tokens from a fixed k-means codebook of raw patches: :meth:`fit` runs Lloyd's
    algorithm (k-means++ seeding, ``iterations`` rounds) on the ``patch_size`` x
    ``patch_size`` patch vectors of some images; calling it maps (N, H, W, C) images to the
    (N, H / p, W / p) ids of each patch's nearest centre (squared Euclidean distance)."""

    def __init__(self, patch_size: int, vocab_size: int, iterations: int = 20, seed: int | None = 0):
        self.patch_size = positive_int(patch_size, "PatchKMeansTokenizer: patch_size")
        self.vocab_size = positive_int(vocab_size, "PatchKMeansTokenizer: vocab_size")
        self.iterations = positive_int(iterations, "PatchKMeansTokenizer: iterations")
        self.seed = seed
        self.centers: np.ndarray | None = None

    def fit(self, images) -> PatchKMeansTokenizer:
        points = _patches(images, self.patch_size, "PatchKMeansTokenizer.fit")
        points = points.reshape(-1, points.shape[-1])
        if len(points) < self.vocab_size:
            raise ValueError(f"PatchKMeansTokenizer.fit: {len(points)} patches cannot make {self.vocab_size} centres")
        rng = np.random.default_rng(self.seed)
        centers = [points[rng.integers(len(points))]]
        nearest = ((points - centers[0]) ** 2).sum(1)
        for _ in range(1, self.vocab_size):                     # k-means++: far points more likely
            total = nearest.sum()
            pick = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
            centers.append(points[pick])
            nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(1))
        self.centers = np.array(centers)
        for _ in range(self.iterations):
            labels = self._assign(points)
            for k in range(self.vocab_size):
                members = points[labels == k]
                if len(members):
                    self.centers[k] = members.mean(0)
        return self

    def _assign(self, points: np.ndarray) -> np.ndarray:
        distances = (points ** 2).sum(1)[:, None] - 2 * points @ self.centers.T + (self.centers ** 2).sum(1)[None]
        return distances.argmin(1)

    def __call__(self, images) -> np.ndarray:
        if self.centers is None:
            raise ValueError("PatchKMeansTokenizer: call fit(images) before tokenizing")
        patches = _patches(images, self.patch_size, "PatchKMeansTokenizer")
        if patches.shape[-1] != self.centers.shape[1]:
            raise ShapeError(f"PatchKMeansTokenizer: patches of {patches.shape[-1]} values; the codebook was fitted "
                             f"on patches of {self.centers.shape[1]}")
        return self._assign(patches.reshape(-1, patches.shape[-1])).reshape(patches.shape[:3])


class VQVAETokenizer:
    """Visual tokens from a trained :class:`~lamina.models.VQVAE`: (N, H, W, C) images -> its
    (N, H / 2^d, W / 2^d) code indices (``num_embeddings`` tokens), computed without gradients
    in evaluation mode; pair it with a BEiT whose patch size is 2^downsamples."""

    def __init__(self, vqvae):
        self.vqvae = vqvae
        self.vocab_size = vqvae.num_embeddings
        self.patch_size = 2 ** vqvae.downsamples

    def __call__(self, images) -> np.ndarray:
        with no_grad(), evaluation_mode(self.vqvae):
            indices = self.vqvae.encode(images).indices
        return np.asarray(backend.to_numpy(indices.data if isinstance(indices, Tensor) else indices))
