"""The depth losses against float64 torch rewrites of the published formulas (BTS's SILog, MiDaS's
scale-and-shift and gradient losses, Laina et al.'s berHu, monodepth2's smoothness), with masks,
float64 gradient checks, the exact invariances of the scale-shift invariant loss, the closed-form
alignment against numpy.linalg.lstsq, second derivatives and the normals of planes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, positive
from lamina.errors import ShapeError

SHAPE = (2, 6, 7, 1)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    pred, target = positive(*SHAPE, seed=seed), positive(*SHAPE, seed=seed + 1)
    mask = rng.uniform(size=SHAPE) > 0.25
    return pred, target, mask


# -- torch references ---------------------------------------------------------------------
def silog_torch(p, t, m, lam=0.85, alpha=10.0, root=True):
    d = torch.log(p[m]) - torch.log(t[m])
    value = (d ** 2).mean() - lam * d.mean() ** 2
    return alpha * torch.sqrt(value) if root else alpha * value


def midas_scale_and_shift(p, t, m):
    """MiDaS's compute_scale_and_shift on (B, H, W) maps."""
    m = m.to(p.dtype)
    a00, a01, a11 = (m * p * p).sum((1, 2)), (m * p).sum((1, 2)), m.sum((1, 2))
    b0, b1 = (m * p * t).sum((1, 2)), (m * t).sum((1, 2))
    det = a00 * a11 - a01 * a01
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


def midas_gradient_loss(p, t, m, scales=4):
    total = 0.0
    for k in range(scales):
        step = 2 ** k
        ps, ts, ms = p[:, ::step, ::step], t[:, ::step, ::step], m[:, ::step, ::step].to(p.dtype)
        diff = ms * (ps - ts)
        gx = torch.abs(diff[:, :, 1:] - diff[:, :, :-1]) * ms[:, :, 1:] * ms[:, :, :-1]
        gy = torch.abs(diff[:, 1:, :] - diff[:, :-1, :]) * ms[:, 1:, :] * ms[:, :-1, :]
        total = total + (gx.sum() + gy.sum()) / ms.sum()
    return total


def midas_ssi_torch(p, t, m, gradient_weight=0.0):
    p, t, m = p[..., 0], t[..., 0], m[..., 0]
    s, sh = midas_scale_and_shift(p, t, m)
    aligned = s[:, None, None] * p + sh[:, None, None]
    loss = ((aligned - t) ** 2 * m).sum() / (2 * m.sum())
    return loss + gradient_weight * midas_gradient_loss(aligned, t, m) if gradient_weight else loss


def ssitrim_torch(p, t, m, trim=0.2):
    losses = []
    for i in range(p.shape[0]):
        x, y = p[i][m[i]], t[i][m[i]]
        xn = (x - x.median()) / (x - x.median()).abs().mean()
        yn = (y - y.median()) / (y - y.median()).abs().mean()
        errors = (xn - yn).abs()
        kept = errors.numel() - int(trim * errors.numel())
        losses.append(torch.sort(errors).values[:kept].sum() / (2 * errors.numel()))
    return torch.stack(losses).mean()


def berhu_torch(p, t, m):
    x = (p - t).abs()[m]
    c = 0.2 * x.max().detach()
    return torch.where(x <= c, x, (x ** 2 + c ** 2) / (2 * c)).mean()


def smoothness_torch(disp, img):
    """monodepth2's get_smooth_loss on NCHW tensors (with its normalisation by the mean)."""
    disp, img = disp.permute(0, 3, 1, 2), img.permute(0, 3, 1, 2)
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    gx = torch.abs(disp[:, :, :, :-1] - disp[:, :, :, 1:])
    gy = torch.abs(disp[:, :, :-1, :] - disp[:, :, 1:, :])
    ix = torch.mean(torch.abs(img[:, :, :, :-1] - img[:, :, :, 1:]), 1, keepdim=True)
    iy = torch.mean(torch.abs(img[:, :, :-1, :] - img[:, :, 1:, :]), 1, keepdim=True)
    return (gx * torch.exp(-ix)).mean() + (gy * torch.exp(-iy)).mean()


# -- values and gradients against torch ---------------------------------------------------
CASES = {
    "silog": (lambda p, t, m: F.scale_invariant_log_loss(p, t, m), silog_torch),
    "eigen": (lambda p, t, m: F.scale_invariant_log_loss(p, t, m, lam=0.5, alpha=1.0, root=False),
              lambda p, t, m: silog_torch(p, t, m, 0.5, 1.0, False)),
    "ssi": (lambda p, t, m: F.scale_shift_invariant_loss(p, t, m), midas_ssi_torch),
    "ssi_gradient": (lambda p, t, m: F.scale_shift_invariant_loss(p, t, m, gradient_weight=0.5),
                     lambda p, t, m: midas_ssi_torch(p, t, m, 0.5)),
    "ssitrim": (lambda p, t, m: F.scale_shift_invariant_loss(p, t, m, mode="trim"), ssitrim_torch),
    "gradient": (lambda p, t, m: F.gradient_matching_loss(p, t, m, scales=3),
                 lambda p, t, m: midas_gradient_loss(p[..., 0], t[..., 0], m[..., 0], 3)),
    "berhu": (lambda p, t, m: F.berhu_loss(p, t, m), berhu_torch),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_losses_match_torch_rewrites_with_masks(name, dtype):
    ours, theirs = CASES[name]
    pred, target, mask = _inputs()
    compare_with_torch(ours, theirs, pred, target, mask, dtype=dtype, rtol=1e-4 if dtype == np.float32 else 1e-9)


GRADCHECK_CASES = {name: case[0] for name, case in CASES.items() if name != "berhu"}
# the default c moves with the largest residual, so the check holds c fixed
GRADCHECK_CASES["berhu"] = lambda p, t, m: F.berhu_loss(p, t, m, c=0.6)


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
def test_losses_pass_float64_gradient_checks(name):
    ours = GRADCHECK_CASES[name]
    pred, target, mask = _inputs(3)
    assert check_gradients(ours, pred, target, mask, grad=[True, True, False])


@pytest.mark.parametrize("name", ["silog", "ssi", "ssitrim", "berhu"])
def test_second_derivatives_match_torch(name):
    ours, theirs = CASES[name]
    pred, target, mask = _inputs(2)
    compare_double_backward_with_torch(ours, theirs, pred, target, mask, grad=[True, False, False])


def test_edge_aware_smoothness_matches_monodepth2():
    disp, image = positive(2, 5, 6, 1, seed=4), positive(2, 5, 6, 3, seed=5)
    compare_with_torch(F.edge_aware_smoothness, smoothness_torch, disp, image, dtype=np.float64, grad=[True, False])
    assert check_gradients(F.edge_aware_smoothness, disp, image, grad=[True, False])


def test_scale_shift_invariant_loss_is_invariant_to_scale_and_shift_of_the_prediction():
    pred, target, mask = _inputs(6)
    for mode in ("least_squares", "trim"):
        base = F.scale_shift_invariant_loss(lamina.tensor(pred, dtype=np.float64), target, mask, mode=mode).item()
        moved = F.scale_shift_invariant_loss(lamina.tensor(3.7 * pred - 2.5, dtype=np.float64), target, mask,
                                             mode=mode).item()
        assert base > 1e-3 and moved == pytest.approx(base, rel=1e-12, abs=1e-14)
        exact = F.scale_shift_invariant_loss(lamina.tensor(0.5 * target + 4.0, dtype=np.float64), target, mask,
                                             mode=mode).item()
        assert exact == pytest.approx(0.0, abs=1e-12)


def test_closed_form_alignment_equals_lstsq():
    pred, target, mask = _inputs(7)
    scale, shift = F.scale_and_shift(lamina.tensor(pred, dtype=np.float64), target, mask)
    for i in range(pred.shape[0]):
        m = mask[i, ..., 0]
        design = np.stack([pred[i, ..., 0][m], np.ones(m.sum())], axis=1)
        (s, t), *_ = np.linalg.lstsq(design, target[i, ..., 0][m], rcond=None)
        assert scale.numpy()[i] == pytest.approx(s, rel=1e-10)
        assert shift.numpy()[i] == pytest.approx(t, rel=1e-10, abs=1e-12)


def test_silog_per_image_averages_the_images():
    pred, target, mask = _inputs(8)
    value = F.scale_invariant_log_loss(lamina.tensor(pred, dtype=np.float64), target, mask, per_image=True).item()
    p, t, m = (torch.tensor(a) for a in (pred, target, mask))
    expected = np.mean([silog_torch(p[i], t[i], m[i]).item() for i in range(pred.shape[0])])
    assert value == pytest.approx(expected, rel=1e-12)


def test_berhu_is_l1_below_and_quadratic_above_the_threshold():
    pred = np.array([0.0, 0.1, 1.0, 0.0]).reshape(1, 2, 2, 1)
    target = np.zeros_like(pred)
    c = 0.2
    expected = np.mean([0.0, 0.1, (1.0 + c * c) / (2 * c), 0.0])
    assert F.berhu_loss(lamina.tensor(pred, dtype=np.float64), target).item() == pytest.approx(expected)


def _plane_depth(normal, offset, k, h, w):
    """Depth of the plane n . P = offset seen through pinhole intrinsics k."""
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    return offset / (rays @ normal)


def test_normals_of_a_plane_equal_the_analytic_normal():
    k = np.array([[30.0, 0.0, 4.5], [0.0, 28.0, 3.5], [0.0, 0.0, 1.0]])
    normal = np.array([0.3, -0.2, -1.0])
    normal /= np.linalg.norm(normal)
    depth = _plane_depth(normal, -5.0, k, 8, 10)
    assert (depth > 0).all()
    normals = F.depth_to_normals(lamina.tensor(depth[None, ..., None], dtype=np.float64), k).numpy()
    assert normals.shape == (1, 8, 10, 3)
    np.testing.assert_allclose(normals, np.broadcast_to(normal, normals.shape), atol=1e-10)
    fronto = F.depth_to_normals(lamina.tensor(np.full((2, 4, 5, 1), 3.0), dtype=np.float64), k).numpy()
    np.testing.assert_allclose(fronto, np.broadcast_to([0.0, 0.0, -1.0], fronto.shape), atol=1e-12)


def normals_torch(depth, k):
    z = depth[..., 0]
    _, h, w = z.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=z.dtype), torch.arange(w, dtype=z.dtype), indexing="ij")
    points = torch.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], dim=-1)
    padded = torch.cat([points[:, :1], points, points[:, -1:]], 1)
    padded = torch.cat([padded[:, :, :1], padded, padded[:, :, -1:]], 2)
    du = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    dv = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
    n = torch.linalg.cross(dv, du, dim=-1)
    return n / torch.sqrt((n * n).sum(-1, keepdim=True) + 1e-20)


def test_depth_to_normals_matches_torch_and_gradchecks():
    k = np.array([[6.0, 0.0, 2.0], [0.0, 5.0, 1.5], [0.0, 0.0, 1.0]])
    depth = positive(2, 4, 5, 1, seed=9, low=1.0, high=2.0)
    compare_with_torch(lambda d: F.depth_to_normals(d, k), lambda d: normals_torch(d, torch.tensor(k)), depth,
                       dtype=np.float64)
    assert check_gradients(lambda d: F.depth_to_normals(d, k), depth)


def test_errors_name_the_function_and_shapes():
    with pytest.raises(ShapeError, match="berhu_loss"):
        F.berhu_loss(np.ones((2, 3, 3, 1)), np.ones((2, 3, 4, 1)))
    with pytest.raises(ValueError, match="no valid pixel"):
        F.scale_invariant_log_loss(np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="constant"):
        F.scale_shift_invariant_loss(np.ones((1, 3, 3, 1)), positive(1, 3, 3, 1))
    with pytest.raises(ValueError, match="mode"):
        F.scale_shift_invariant_loss(positive(1, 3, 3, 1), positive(1, 3, 3, 1), mode="median")
    with pytest.raises(ShapeError, match="intrinsics"):
        F.depth_to_normals(np.ones((1, 3, 3, 1)), np.eye(2))
