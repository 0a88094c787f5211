"""Patch-size and grid resizing of a ViT's embeddings (Beyer et al. 2023, "FlexiViT: One
Model for All Patch Sizes").

PI-resize of a patch embedding. Resizing a p x p patch x to p' x p' bilinearly is linear,
resize(x) = B x with B = A_h (x) A_w (the Kronecker product of the per-axis matrices of
:func:`lamina.functional.interpolate`, patches flattened row by row). The new kernel w'
should see a resized patch as the old one saw the patch: <x, w> = <B x, w'> for all x, that
is B^T w' = w. PI-resize takes

    w' = pinv(B^T) w

which solves it exactly when upsampling (p' >= p: B has full column rank) and is the
least-squares (minimum-norm) solution of B^T w' ~ w when downsampling.

Position embeddings (:func:`resize_position_embedding`): the (H, W) grid of position rows
is interpolated to the new grid (bicubic by default, as timm's ``resample_abs_pos_embed``);
the class-token rows in front are kept.
"""

from __future__ import annotations

import numpy

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.interpolate import resize_matrix
from lamina.nn.layer import pair
from lamina.nn.module import as_tensor

__all__ = ["patch_resize_matrix", "pi_resize_matrix", "resize_patch_embedding", "resize_position_embedding"]


def patch_resize_matrix(old_size, new_size, mode: str = "bilinear") -> numpy.ndarray:
    """B (p'_h p'_w, p_h p_w): resize(x).ravel() = B x.ravel() for one-channel patches x of
    ``old_size`` resized to ``new_size`` (as :func:`lamina.functional.interpolate`)."""
    ph, pw = pair(old_size, "patch_resize_matrix: old_size")
    qh, qw = pair(new_size, "patch_resize_matrix: new_size")
    return numpy.kron(resize_matrix(qh, ph, mode), resize_matrix(qw, pw, mode))


def pi_resize_matrix(old_size, new_size, mode: str = "bilinear") -> numpy.ndarray:
    """pinv(B^T) (p'_h p'_w, p_h p_w): w' = pinv(B^T) w (module docstring)."""
    return numpy.linalg.pinv(patch_resize_matrix(old_size, new_size, mode).T)


def resize_patch_embedding(weight, new_patch_size, mode: str = "bilinear") -> numpy.ndarray:
    """PI-resize (module docstring) of a patch-embedding kernel ``weight`` (K, p_h, p_w, c)
    (lamina's Conv2D layout) to (K, p'_h, p'_w, c); a float64 computation returned in the
    input's dtype. The bias needs no change."""
    w = numpy.asarray(weight.data if isinstance(weight, Tensor) else weight)
    if w.ndim != 4:
        raise ShapeError(f"resize_patch_embedding: weight must be (filters, p_h, p_w, channels), got shape "
                         f"{tuple(w.shape)}")
    k, ph, pw, c = w.shape
    qh, qw = pair(new_patch_size, "resize_patch_embedding: new_patch_size")
    resize = pi_resize_matrix((ph, pw), (qh, qw), mode)
    flat = w.astype(numpy.float64).reshape(k, ph * pw, c)
    return numpy.einsum("pq,kqc->kpc", resize, flat).reshape(k, qh, qw, c).astype(w.dtype)


def resize_position_embedding(pos_embedding, new_grid, old_grid=None, num_prefix_tokens: int = 1,
                              mode: str = "bicubic") -> Tensor:
    """(1, p + H W, d) -> (1, p + H' W', d): the H x W grid of position rows (after the
    ``num_prefix_tokens`` = p class-token rows, which are kept) interpolated to ``new_grid``
    (H', W') with ``mode`` (align_corners False). ``old_grid`` defaults to a square grid."""
    pos = as_tensor(pos_embedding)
    p = int(num_prefix_tokens)
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[1] < p:
        raise ShapeError(f"resize_position_embedding: pos_embedding must be (1, {p} + H W, d), got "
                         f"{tuple(pos.shape)}")
    cells, d = pos.shape[1] - p, pos.shape[2]
    if old_grid is None:
        side = int(round(cells ** 0.5))
        old_grid = (side, side)
    h, w = pair(old_grid, "resize_position_embedding: old_grid")
    if h * w != cells:
        raise ShapeError(f"resize_position_embedding: {cells} position rows after {p} prefix rows do not form the "
                         f"grid {(h, w)}")
    new_h, new_w = pair(new_grid, "resize_position_embedding: new_grid")
    grid = F.reshape(F.getitem(pos, (slice(None), slice(p, None))), 1, h, w, d)
    resized = F.reshape(F.interpolate(grid, size=(new_h, new_w), mode=mode, align_corners=False),
                        1, new_h * new_w, d)
    return F.concat([F.getitem(pos, (slice(None), slice(0, p))), resized], axis=1) if p else resized
