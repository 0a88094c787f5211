"""Window arithmetic shared by convolution and pooling."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.functional.im2col import gradient_pads, out_size, pad_nhwc, patches, strided_view


def _windows_by_loops(xpad, f, s, out_hw):
    n, _, _, c = xpad.shape
    ho, wo = out_hw
    out = np.empty((n, ho, wo, f, f, c), xpad.dtype)
    for y in range(ho):
        for x in range(wo):
            out[:, y, x] = xpad[:, y * s:y * s + f, x * s:x * s + f]
    return out


@pytest.mark.parametrize("contiguous", [True, False])
def test_patches_are_the_windows_and_read_only(contiguous):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((2, 9, 12, 3)).astype(np.float32)
    xpad = grid if contiguous else grid[:, :, 1:10]          # a view: the as_strided fallback
    view = patches(xpad, (3, 3), (4, 4), (2, 2))
    np.testing.assert_array_equal(view, _windows_by_loops(xpad, 3, 2, (4, 4)))
    assert not view.flags.writeable
    assert np.shares_memory(view, grid)                       # a view, not a copy


def test_strided_view_matches_as_strided_and_keeps_its_array_alive():
    a = np.arange(40, dtype=np.float64)
    shape, strides = (5, 4), (8 * 8, 8)                       # overlapping rows
    view = strided_view(a, shape, strides)
    np.testing.assert_array_equal(view, np.lib.stride_tricks.as_strided(a, shape, strides))
    assert not view.flags.writeable
    del a
    np.testing.assert_array_equal(view[1], [8.0, 9.0, 10.0, 11.0])


def test_pad_nhwc_pads_with_the_value_and_crops_with_negative_amounts():
    x = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
    np.testing.assert_array_equal(pad_nhwc(x, (1, 2, 0, 1), -1.0),
                                  np.pad(x, ((0, 0), (1, 2), (0, 1), (0, 0)), constant_values=-1.0))
    assert pad_nhwc(x, (0, 0, 0, 0)) is x
    np.testing.assert_array_equal(pad_nhwc(x, (-1, 0, 1, -1)), np.pad(x[:, 1:, :-1], ((0, 0), (0, 0), (1, 0), (0, 0))))


@pytest.mark.parametrize("h, f, pads, expected", [(8, 3, (1, 1, 1, 1), (1, 1, 1, 1)),       # 'same'
                                                  (14, 5, (0, 0, 0, 0), (4, 4, 4, 4)),       # valid
                                                  (8, 2, (0, 1, 0, 1), (1, 0, 1, 0)),        # even 'same'
                                                  (7, 3, (3, 3, 3, 3), (-1, -1, -1, -1))])   # crops
def test_gradient_pads_give_back_the_input_size(h, f, pads, expected):
    """f - 1 - p before; the padded dJ/dv, correlated with an f x f kernel, is h x h again."""
    ho = out_size(h, f, 1, pads[0], pads[1])
    got = gradient_pads((h, h), (f, f), (ho, ho), pads)
    assert got == expected
    assert ho + got[0] + got[1] - f + 1 == h and ho + got[2] + got[3] - f + 1 == h
