"""DINOv2's additions: Sinkhorn-Knopp centring against a NumPy loop and its marginals, the iBOT
masked-patch loss and the KoLeo regulariser against float64 torch rewrites of the published
formulas (values and gradients) and finite differences, block masks (ratio range, blocks), and
the masked ViT encoder (the mask token replaces exactly the masked patches)."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import models
from lamina.errors import ShapeError


# -- Sinkhorn-Knopp -------------------------------------------------------------------------
def _sinkhorn_numpy(scores, temp, iterations):
    """The DINOv2 reference's loop, written on the (K, B) transpose with explicit sums."""
    q = np.exp(scores / temp).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for row in range(k):
            q[row] = q[row] / q[row].sum() / k
        for col in range(b):
            q[:, col] = q[:, col] / q[:, col].sum() / b
    return (q * b).T


def test_sinkhorn_knopp_equals_a_numpy_loop_and_balances_the_marginals():
    scores = randn(12, 7, seed=1)
    got = models.sinkhorn_knopp_centering(scores, 0.5, iterations=3)
    np.testing.assert_allclose(got, _sinkhorn_numpy(scores, 0.5, 3), rtol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)             # every sample: a distribution
    # every prototype gets B / K of the mass once the iterations converge
    many = models.sinkhorn_knopp_centering(scores, 0.5, iterations=200)
    np.testing.assert_allclose(many.sum(axis=0), 12 / 7, rtol=1e-8)
    np.testing.assert_allclose(many.sum(axis=1), 1.0, rtol=1e-12)
    # 3 rounds already bring the prototype marginals much closer to B / K than the plain softmax
    softmax = np.exp(scores / 0.5) / np.exp(scores / 0.5).sum(axis=1, keepdims=True)
    assert np.abs(got.sum(axis=0) - 12 / 7).max() < 0.2 * np.abs(softmax.sum(axis=0) - 12 / 7).max()


def test_sinkhorn_knopp_is_stable_for_sharp_temperatures_and_checks_inputs():
    scores = randn(6, 5, seed=2) * 30
    got = models.sinkhorn_knopp_centering(scores.astype(np.float32), 0.04)
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ShapeError, match="sinkhorn_knopp_centering"):
        models.sinkhorn_knopp_centering(np.zeros(4), 0.1)
    with pytest.raises(ValueError, match="teacher_temp"):
        models.sinkhorn_knopp_centering(np.zeros((2, 3)), 0.0)


# -- iBOT masked-patch loss -------------------------------------------------------------------
def _ibot_torch(student, targets, masks):
    """iBOT's patch loss: cross-entropy at masked patches, mean over each image's masked patches,
    then over the images that have any."""
    per_patch = -(targets * torch.log_softmax(student, dim=-1)).sum(-1)
    masks_t = torch.as_tensor(masks, dtype=student.dtype)
    counts = masks_t.sum(1)
    per_image = (per_patch * masks_t).sum(1) / counts.clamp(min=1.0)
    return per_image[counts > 0].mean()


MASKS = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=bool)


def _targets(seed=3):
    t = np.exp(randn(3, 6, 5, seed=seed))
    return t / t.sum(-1, keepdims=True)


def test_ibot_patch_loss_equals_a_torch_rewrite_on_masked_patches_only():
    targets = _targets()
    out = compare_with_torch(lambda s: models.ibot_patch_cross_entropy(s, targets, MASKS),
                             lambda s: _ibot_torch(s, torch.tensor(targets), MASKS), randn(3, 6, 5, seed=4),
                             dtype=np.float64, rtol=1e-12)
    assert out[0].shape == ()
    student = lamina.tensor(randn(3, 6, 5, seed=4), requires_grad=True, dtype=np.float64)
    models.ibot_patch_cross_entropy(student, targets, MASKS).backward()
    grad = np.asarray(student.grad)
    assert np.all(grad[~MASKS] == 0) and np.all(np.abs(grad[MASKS]).sum(-1) > 0)      # masked patches only
    # dL/ds_p = w_p (softmax(s_p) - t_p): image 0 (3 masked patches) and image 2 (1) weigh the
    # same, so w = 1 / (3 * 2) on image 0's patches and 1 / (1 * 2) on image 2's
    s = randn(3, 6, 5, seed=4)
    residual = np.exp(s) / np.exp(s).sum(-1, keepdims=True) - targets
    np.testing.assert_allclose(grad[0, [0, 2, 3]], residual[0, [0, 2, 3]] / 6, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad[2, 1], residual[2, 1] / 2, rtol=1e-5, atol=1e-7)
    zeros = lamina.tensor(np.zeros((3, 6, 5)), requires_grad=True, dtype=np.float64)
    uniform = np.full((3, 6, 5), 0.2)
    loss = models.ibot_patch_cross_entropy(zeros, uniform, MASKS)
    np.testing.assert_allclose(loss.item(), np.log(5), rtol=1e-12)


def test_ibot_patch_loss_gradients_float64():
    targets = _targets(seed=5)
    assert check_gradients(lambda s: models.ibot_patch_cross_entropy(s, targets, MASKS), randn(3, 6, 5, seed=6))


def test_ibot_patch_loss_without_masked_patches_is_zero_and_checks_shapes():
    student = lamina.tensor(randn(2, 3, 4), requires_grad=True)
    loss = models.ibot_patch_cross_entropy(student, np.full((2, 3, 4), 0.25), np.zeros((2, 3), dtype=bool))
    loss.backward()
    assert loss.item() == 0 and np.all(np.asarray(student.grad) == 0)
    with pytest.raises(ShapeError, match="masks of shape"):
        models.ibot_patch_cross_entropy(student, np.full((2, 3, 4), 0.25), np.zeros((2, 4), dtype=bool))
    with pytest.raises(ShapeError, match="teacher targets"):
        models.ibot_patch_cross_entropy(student, np.full((2, 3, 5), 0.2), np.zeros((2, 3), dtype=bool))


@pytest.mark.parametrize("centering", ["ema", "sinkhorn_knopp"])
def test_ibot_loss_module_targets_and_centre(centering):
    student, teacher = randn(3, 6, 5, seed=7), randn(3, 6, 5, seed=8)
    loss_fn = models.IBOTLoss(5, student_temp=0.1, teacher_temp=0.05, centering=centering, center_momentum=0.8)
    s = torch.tensor(student, requires_grad=True)
    if centering == "ema":
        targets = torch.softmax(torch.tensor(teacher) / 0.05, dim=-1)            # the centre starts at 0
    else:
        targets = torch.zeros(3, 6, 5, dtype=torch.float64)
        targets[torch.tensor(MASKS)] = torch.tensor(_sinkhorn_numpy(teacher[MASKS], 0.05, 3))
    expected = _ibot_torch(s / 0.1, targets, MASKS)
    expected.backward()
    ours = lamina.tensor(student, requires_grad=True, dtype=np.float64)
    got = loss_fn(ours, teacher, MASKS)
    got.backward()
    np.testing.assert_allclose(got.item(), expected.item(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(ours.grad), s.grad.numpy(), rtol=1e-9, atol=1e-14)
    if centering == "ema":                                  # c <- 0.8 c + 0.2 mean over every patch token
        np.testing.assert_allclose(loss_fn.center, 0.2 * teacher.reshape(-1, 5).mean(0, keepdims=True), rtol=1e-6)
    else:
        assert np.all(loss_fn.center == 0)


# -- KoLeo ------------------------------------------------------------------------------------
def _koleo_torch(x, eps=1e-8):
    """DINOv2's KoLeoLoss: nearest neighbour by the largest dot product of the normalised rows,
    -mean log(pairwise distance + eps)."""
    x = torch.nn.functional.normalize(x, eps=eps, dim=-1)
    dots = x @ x.t()
    dots.view(-1)[:: x.shape[0] + 1].fill_(-1)
    nearest = dots.detach().argmax(dim=1)
    distances = torch.nn.PairwiseDistance(2, eps=eps)(x, x[nearest])
    return -torch.log(distances + eps).mean()


def _koleo_numpy(x, eps=1e-8):
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    d = np.linalg.norm(unit[:, None, :] - unit[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return -np.mean(np.log(d.min(axis=1) + eps))


def test_koleo_equals_a_torch_rewrite_and_numpy():
    x = randn(9, 4, seed=9)
    compare_with_torch(models.koleo_loss, _koleo_torch, x, dtype=np.float64, rtol=1e-10)
    compare_with_torch(models.koleo_loss, _koleo_torch, x, dtype=np.float32)
    np.testing.assert_allclose(models.koleo_loss(lamina.tensor(x, dtype=np.float64)).item(), _koleo_numpy(x),
                               rtol=1e-7)


def test_koleo_gradients_float64_and_spreading():
    assert check_gradients(models.koleo_loss, randn(7, 3, seed=10))
    close = randn(8, 5, seed=11) * 0.05 + 1.0               # bunched together: large loss
    spread = randn(8, 5, seed=11)
    bunched, spread_out = (models.koleo_loss(lamina.tensor(v)).item() for v in (close, spread))
    assert bunched > spread_out + 1.0
    with pytest.raises(ShapeError, match="koleo_loss"):
        models.koleo_loss(lamina.tensor(randn(1, 3)))


# -- block masks ------------------------------------------------------------------------------
def _components(mask):
    """Number of 4-connected groups of masked cells."""
    seen, groups = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        groups += 1
        stack = [start]
        while stack:
            r, c = stack.pop()
            if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]) or seen[r, c] or not mask[r, c]:
                continue
            seen[r, c] = True
            stack += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
    return groups


def test_block_masks_have_the_ratio_range_and_are_blocks():
    masks = models.block_masks(200, (14, 14), mask_ratio=(0.1, 0.5), rng=0)
    assert masks.shape == (200, 196) and masks.dtype == bool
    ratios = masks.mean(axis=1)
    assert ratios.min() >= 0.1 and ratios.max() <= 0.5
    assert ratios.min() < 0.15 and ratios.max() > 0.45 and 0.25 < ratios.mean() < 0.35      # the whole range
    grids = masks.reshape(200, 14, 14)
    counts = masks.sum(axis=1)
    groups = np.array([_components(g) for g in grids])
    assert np.mean(groups) < 0.15 * np.mean(counts)          # a few blocks, not scattered patches
    # almost every masked patch has a masked neighbour (random masks of the same ratio: about 30%)
    padded = np.pad(grids, ((0, 0), (1, 1), (1, 1)))
    neighbours = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
    assert (neighbours & grids).sum() / grids.sum() > 0.95
    half = models.block_masks(400, 6, mask_ratio=0.25, mask_probability=0.5, rng=1)
    masked = half.any(axis=1)
    assert 0.4 < masked.mean() < 0.6 and np.all(half[masked].sum(axis=1) == 9)
    np.testing.assert_array_equal(models.block_masks(3, 5, rng=7), models.block_masks(3, 5, rng=7))
    with pytest.raises(ValueError, match="mask_ratio"):
        models.block_masks(2, 4, mask_ratio=(0.5, 0.2))


# -- the masked encoder -----------------------------------------------------------------------
def test_masked_encoder_replaces_exactly_the_masked_patch_embeddings():
    lamina.manual_seed(0)
    encoder = models.MaskedViTEncoder(2, d_model=8, depth=1, num_heads=2, mlp_dim=16)
    images = randn(2, 4, 6, 1, seed=12).astype(np.float32)
    tokens = encoder(images)
    assert tokens.shape == (2, 7, 8) and encoder.grid_size == (2, 3)
    encoder.mask_token.data[...] = randn(1, 1, 8, seed=13)
    masks = np.zeros((2, 6), dtype=bool)
    masks[0, [1, 4]] = True
    captured = []
    encoder.embedding.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].numpy()))
    encoder(images, masks=masks)
    encoder(images)
    masked, plain = captured
    np.testing.assert_array_equal(masked[~masks], plain[~masks])
    np.testing.assert_allclose(masked[masks], np.broadcast_to(encoder.mask_token.numpy()[0], (2, 8)))
    assert encoder(randn(3, 2, 4, 1).astype(np.float32)).shape == (3, 3, 8)          # a smaller crop
    with pytest.raises(ShapeError, match="masks of shape"):
        encoder(images, masks=np.zeros((2, 5), dtype=bool))
    with pytest.raises(ShapeError, match="multiples of the patch size"):
        encoder(randn(1, 3, 4, 1).astype(np.float32))
