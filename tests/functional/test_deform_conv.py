"""deform_conv2d (DCNv1/v2): the regular grid gives conv2d, whole-pixel offsets a shifted or
dilated convolution, a constant fractional shift the convolution of a bilinearly shifted input;
values and all gradients against a float64 torch rewrite of torchvision's semantics (explicit
four-corner bilinear sampling, zero outside), numerical and second derivatives, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import ShapeError


def torch_deform_conv2d(x, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None,
                        groups=1):
    """torchvision.ops.deform_conv2d's computation on NHWC tensors, written out: tap (i, j) of
    output (y, x) in offset group g reads the input at (y s - p + i d + dy, x s - p + j d + dx),
    (dy, dx) = offset[..., 2 (g f_h f_w + i f_w + j) + (0, 1)], as the four corners weighted
    (1 - a)(1 - b), ..., a corner outside the image and any sample outside (-1, H) x (-1, W)
    giving 0; times mask[..., g f_h f_w + i f_w + j]; then summed against the weights."""
    n, h, w, c = x.shape
    _, fh, fw, _ = weight.shape
    _, ho, wo, _ = offset.shape
    cg = c // groups
    pairs = offset.reshape(n, ho, wo, groups, fh, fw, 2)
    base_r = (torch.arange(ho, dtype=x.dtype)[:, None, None, None] * stride[0] - padding[0]
              + torch.arange(fh, dtype=x.dtype)[None, None, :, None] * dilation[0])
    base_q = (torch.arange(wo, dtype=x.dtype)[None, :, None, None] * stride[1] - padding[1]
              + torch.arange(fw, dtype=x.dtype)[None, None, None, :] * dilation[1])
    batch = torch.arange(n)[:, None, None, None, None]
    samples = []
    for g in range(groups):
        r, q = base_r + pairs[:, :, :, g, :, :, 0], base_q + pairs[:, :, :, g, :, :, 1]
        r_low, q_low = torch.floor(r).detach(), torch.floor(q).detach()
        a, b = r - r_low, q - q_low
        in_range = (r > -1) & (r < h) & (q > -1) & (q < w)
        feature = x[..., g * cg:(g + 1) * cg]
        value = 0
        for row, weight_r in ((r_low, 1 - a), (r_low + 1, a)):
            for col, weight_q in ((q_low, 1 - b), (q_low + 1, b)):
                inside = in_range & (row >= 0) & (row <= h - 1) & (col >= 0) & (col <= w - 1)
                corner = feature[batch, row.clamp(0, h - 1).long(), col.clamp(0, w - 1).long()]
                value = value + (weight_r * weight_q * inside.to(x.dtype))[..., None] * corner
        if mask is not None:
            value = value * mask.reshape(n, ho, wo, groups, fh, fw)[:, :, :, g, :, :, None]
        samples.append(value)
    out = torch.einsum("nyxijc,kijc->nyxk", torch.cat(samples, dim=-1), weight)
    return out if bias is None else out + bias


@pytest.fixture(autouse=True)
def float64_arrays():
    """Plain arrays given to the ops become float64 tensors (exact comparisons with conv2d)."""
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(before)


def _out_size(size, f, s, p, d):
    return (size + 2 * p - d * (f - 1) - 1) // s + 1


def _inputs(n=2, h=6, w=5, c=4, k=3, kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
            spread=1.5, seed=0):
    rng = np.random.default_rng(seed)
    ho = _out_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = _out_size(w, kernel[1], stride[1], padding[1], dilation[1])
    taps = groups * kernel[0] * kernel[1]
    x = rng.standard_normal((n, h, w, c))
    weight = rng.standard_normal((k, *kernel, c))
    bias = rng.standard_normal(k)
    # whole part anywhere in [-spread, spread], fractional part in [0.2, 0.8]: away from the kinks
    whole = rng.integers(-int(spread) - 1, int(spread) + 1, (n, ho, wo, 2 * taps))
    offset = whole + rng.uniform(0.2, 0.8, whole.shape)
    mask = rng.uniform(0.1, 1.0, (n, ho, wo, taps))
    return x, offset, weight, mask, bias


CASES = {
    "plain": {},
    "stride": {"stride": (2, 1)},
    "no_padding": {"padding": (0, 0)},
    "dilation": {"dilation": (2, 1), "padding": (2, 1)},
    "groups": {"groups": 2},
    "kernel_2x3": {"kernel": (2, 3), "padding": (1, 0), "groups": 4},
    "far_offsets": {"spread": 6.0},
}


@pytest.mark.parametrize("modulated", [True, False])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch_rewrite(name, modulated):
    spec = CASES[name]
    x, offset, weight, mask, bias = _inputs(**spec)
    hyper = {key: spec.get(key, default) for key, default in
             (("stride", (1, 1)), ("padding", (1, 1)), ("dilation", (1, 1)))}
    groups = spec.get("groups", 1)
    if modulated:
        def ours(x, o, w, m, b):
            return F.deform_conv2d(x, o, w, b, mask=m, offset_groups=groups, **hyper)

        def theirs(x, o, w, m, b):
            return torch_deform_conv2d(x, o, w, b, mask=m, groups=groups, **hyper)

        compare_with_torch(ours, theirs, x, offset, weight, mask, bias, dtype=np.float64)
    else:
        compare_with_torch(lambda x, o, w: F.deform_conv2d(x, o, w, offset_groups=groups, **hyper),
                           lambda x, o, w: torch_deform_conv2d(x, o, w, groups=groups, **hyper),
                           x, offset, weight, dtype=np.float64)


@pytest.mark.parametrize("with_mask, with_bias", [(True, False), (False, True)])
def test_whole_pixel_positions_take_the_right_hand_derivative(with_mask, with_bias):
    """At whole-pixel positions (the kinks) the offset gradient is the derivative from the right,
    as torchvision's (and the rewrite's floor); the optional inputs keep their places."""
    x, offset, weight, mask, bias = _inputs(n=1, h=5, w=4, c=2, k=2)
    offset = np.round(offset)
    extra = [a for a, used in ((mask, with_mask), (bias, with_bias)) if used]

    def split(extra_inputs):
        given = list(extra_inputs)
        return (given.pop(0) if with_mask else None), (given.pop(0) if with_bias else None)

    def ours(x, o, w, *rest):
        m, b = split(rest)
        return F.deform_conv2d(x, o, w, b, padding=1, mask=m)

    def theirs(x, o, w, *rest):
        m, b = split(rest)
        return torch_deform_conv2d(x, o, w, b, padding=(1, 1), mask=m)

    compare_with_torch(ours, theirs, x, offset, weight, *extra, dtype=np.float64)


def test_float32_matches_torch_rewrite():
    x, offset, weight, mask, bias = _inputs(groups=2)
    compare_with_torch(lambda x, o, w, m, b: F.deform_conv2d(x, o, w, b, padding=1, mask=m, offset_groups=2),
                       lambda x, o, w, m, b: torch_deform_conv2d(x, o, w, b, padding=(1, 1), mask=m, groups=2),
                       x, offset, weight, mask, bias, dtype=np.float32, rtol=1e-4)


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 0, 1, 1), (2, 1, 1, 2), ((1, 2), (2, 1), (2, 1), 4), (3, 2, 2, 1),
])
def test_zero_offsets_and_unit_masks_are_conv2d(stride, padding, dilation, groups):
    x, _, weight, _, bias = _inputs(n=2, h=7, w=8, c=4, k=5)
    s, p, d = (np.broadcast_to(v, 2) for v in (stride, padding, dilation))
    ho, wo = _out_size(7, 3, s[0], p[0], d[0]), _out_size(8, 3, s[1], p[1], d[1])
    offset = np.zeros((2, ho, wo, 2 * groups * 9))
    mask = np.ones((2, ho, wo, groups * 9))
    ours = F.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask=mask, offset_groups=groups)
    pads = tuple(int(v) for v in p)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=pads, dilation=dilation)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    unmodulated = F.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, offset_groups=groups)
    np.testing.assert_allclose(unmodulated.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def _shifted(x, dr: int, dq: int):
    """x moved so that out[r, q] = x[r + dr, q + dq], zeros where that is outside."""
    n, h, w, c = x.shape
    big = np.zeros((n, h + 2 * abs(dr), w + 2 * abs(dq), c))
    big[:, abs(dr):abs(dr) + h, abs(dq):abs(dq) + w] = x
    return big[:, abs(dr) + dr:abs(dr) + dr + h, abs(dq) + dq:abs(dq) + dq + w]


@pytest.mark.parametrize("dr, dq", [(1, 0), (-2, 1), (0, -1)])
def test_whole_pixel_offsets_are_a_shifted_convolution(dr, dq):
    x, _, weight, _, bias = _inputs(n=2, h=6, w=7, c=3, k=2)
    offset = np.zeros((2, 6, 7, 18))
    offset[..., 0::2], offset[..., 1::2] = dr, dq
    ours = F.deform_conv2d(x, offset, weight, bias, padding=1)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))      # the shift moves padding zeros in, not pixels out
    expected = F.conv2d(_shifted(padded, dr, dq), weight, bias)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_whole_pixel_offsets_per_tap_give_a_dilated_convolution():
    x, _, weight, _, bias = _inputs(n=1, h=9, w=9, c=2, k=3)
    taps = np.arange(3)
    offset = np.zeros((1, 9, 9, 3, 3, 2))
    offset[..., 0] = taps[:, None]                 # tap (i, j) moved by (i, j): spacing 2
    offset[..., 1] = taps[None, :]
    ours = F.deform_conv2d(x, offset.reshape(1, 9, 9, 18), weight, bias, padding=1)
    expected = F.conv2d(x, weight, bias, padding=((1, 3), (1, 3)), dilation=2)
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)


def test_constant_fractional_shift_is_the_convolution_of_a_shifted_input():
    x, _, weight, _, bias = _inputs(n=2, h=10, w=11, c=3, k=4)
    a, b = 0.3, -1.75                                # rows down by 0.3, columns back by 1.75
    offset = np.zeros((2, 8, 9, 18))
    offset[..., 0::2], offset[..., 1::2] = a, b
    ours = F.deform_conv2d(x, offset, weight, bias).numpy()
    r, q = int(np.floor(a)), int(np.floor(b))
    fa, fb = a - r, b - q
    moved = ((1 - fa) * (1 - fb) * _shifted(x, r, q) + (1 - fa) * fb * _shifted(x, r, q + 1)
             + fa * (1 - fb) * _shifted(x, r + 1, q) + fa * fb * _shifted(x, r + 1, q + 1))
    expected = F.conv2d(moved, weight, bias).numpy()
    # away from the borders, where the shifted input reads no pixel outside the image
    np.testing.assert_allclose(ours[:, :7, 2:], expected[:, :7, 2:], rtol=1e-12, atol=1e-12)
    assert not np.allclose(ours, F.conv2d(x, weight, bias).numpy())


def test_samples_outside_the_image_are_zero():
    x, _, weight, _, bias = _inputs(n=1, h=4, w=4, c=2, k=3)
    offset = np.full((1, 4, 4, 18), 5.0)
    offset[..., 1::2] = -1.0                          # rows below the image, columns inside
    out = F.deform_conv2d(x, offset, weight, bias, padding=1).numpy()
    np.testing.assert_array_equal(out, np.broadcast_to(bias, out.shape))


def test_single_offset_channel_moves_one_tap_of_one_group():
    """Channel 2 (g f_h f_w + i f_w + j) is dy of tap (i, j) in group g: moving it by a whole
    pixel changes only the contribution of that tap and of that group's channels."""
    x, _, weight, _, _ = _inputs(n=1, h=5, w=5, c=4, k=1)
    offset = np.zeros((1, 5, 5, 2 * 2 * 9))
    g, i, j = 1, 0, 2
    offset[..., 2 * (g * 9 + i * 3 + j)] = 1.0
    moved = F.deform_conv2d(x, offset, weight, padding=1, offset_groups=2).numpy()
    still = F.deform_conv2d(x, np.zeros_like(offset), weight, padding=1, offset_groups=2).numpy()
    only_tap = np.zeros_like(weight)
    only_tap[:, i, j, 2:] = weight[:, i, j, 2:]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    change = (F.conv2d(_shifted(padded, 1, 0), only_tap) - F.conv2d(padded, only_tap)).numpy()
    np.testing.assert_allclose(moved - still, change, rtol=1e-12, atol=1e-12)


def test_numerical_gradients_at_fractional_positions():
    x, offset, weight, mask, bias = _inputs(n=1, h=4, w=4, c=2, k=2, stride=(2, 1), groups=2)
    assert check_gradients(lambda x, o, w, m, b: F.deform_conv2d(x, o, w, b, (2, 1), 1, mask=m, offset_groups=2),
                           x, offset, weight, mask, bias)
    assert check_gradients(lambda x, o, w: F.deform_conv2d(x, o, w, dilation=(1, 2), padding=(1, 2)),
                           *_inputs(n=1, h=4, w=5, c=2, k=2, dilation=(1, 2), padding=(1, 2), seed=3)[:3])


def test_second_derivatives_match_torch_rewrite():
    x, offset, weight, mask, bias = _inputs(n=1, h=4, w=4, c=2, k=2, groups=2, seed=1)
    compare_double_backward_with_torch(
        lambda x, o, w, m, b: F.deform_conv2d(x, o, w, b, 1, 1, mask=m, offset_groups=2),
        lambda x, o, w, m, b: torch_deform_conv2d(x, o, w, b, padding=(1, 1), mask=m, groups=2),
        x, offset, weight, mask, bias)


def test_numerical_second_derivatives():
    x, offset, weight, _, _ = _inputs(n=1, h=3, w=3, c=1, k=1, kernel=(2, 2), padding=(0, 0), seed=2)
    assert check_second_derivatives(lambda x, o, w: F.deform_conv2d(x, o, w), x, offset, weight)


def test_only_requested_gradients_are_computed():
    x, offset, weight, mask, bias = _inputs(n=1, h=4, w=4, c=2, k=2)
    xt = lamina.tensor(x, requires_grad=True)
    out = F.deform_conv2d(xt, offset, weight, bias, padding=1, mask=mask)
    out.sum().backward()
    full = lamina.tensor(x, requires_grad=True)
    every = [lamina.tensor(a, requires_grad=True) for a in (offset, weight, mask, bias)]
    F.deform_conv2d(full, every[0], every[1], every[3], padding=1, mask=every[2]).sum().backward()
    np.testing.assert_allclose(xt.grad, full.grad, rtol=1e-12)


def test_float32_inputs_give_float32():
    x, offset, weight, mask, bias = (a.astype(np.float32) for a in _inputs())
    x, offset, weight, mask, bias = (lamina.tensor(a, dtype=np.float32) for a in (x, offset, weight, mask, bias))
    out = F.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert out.dtype == np.float32 and out.shape == (2, 6, 5, 3)


@pytest.mark.parametrize("change, message", [
    ({"offset": randn(2, 6, 5, 17)}, "expected offsets of shape \\(2, 6, 5, 18\\)"),
    ({"mask": randn(2, 6, 5, 8)}, "expected a mask of shape \\(2, 6, 5, 9\\)"),
    ({"weight": randn(3, 3, 3, 5)}, "expect C=5 input channels"),
    ({"bias": randn(4)}, "expected a bias of shape \\(3,\\)"),
    ({"x": randn(6, 5, 4)}, "expected x of shape \\(N, H, W, C\\)"),
])
def test_shape_errors_name_the_shapes(change, message):
    x, offset, weight, mask, bias = _inputs()
    args = {"x": x, "offset": offset, "weight": weight, "mask": mask, "bias": bias, **change}
    with pytest.raises(ShapeError, match=message):
        F.deform_conv2d(args["x"], args["offset"], args["weight"], args["bias"], padding=1, mask=args["mask"])


def test_offset_groups_must_divide_channels():
    x, offset, weight, _, _ = _inputs(c=4)
    with pytest.raises(ValueError, match="offset_groups must be a positive int dividing C=4"):
        F.deform_conv2d(x, offset, weight, padding=1, offset_groups=3)


def test_is_exported():
    assert "deform_conv2d" in F.__all__ and F.deform_conv2d is lamina.functional.deform_conv.deform_conv2d
