"""rearrange, reduce, repeat, pack and unpack against the equivalent torch reshape / permute /
expand / reduction chains (values and gradients), float64 gradient checks, second
derivatives, and the errors for bad patterns."""

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
    positive,
    randn,
)
from lamina.errors import ShapeError
from lamina.functional.rearrange import _parse, output_shape, pack, rearrange, reduce, repeat, unpack

# name: (lamina fn, torch fn, input shape)
REARRANGE = {
    "merge": (lambda x: rearrange(x, "b h w c -> b (h w) c"), lambda x: x.reshape(2, 12, 3), (2, 3, 4, 3)),
    "patches": (lambda x: rearrange(x, "b (h p) (w q) c -> b h w (p q c)", p=2, q=2),
                lambda x: x.reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12), (2, 4, 6, 3)),
    "ellipsis_front": (lambda x: rearrange(x, "... c -> c ..."), lambda x: x.permute(3, 0, 1, 2), (2, 3, 4, 5)),
    "ellipsis_2d": (lambda x: rearrange(x, "... c -> c ..."), lambda x: x.permute(1, 0), (4, 5)),
    "ellipsis_middle": (lambda x: rearrange(x, "b c ... -> b ... c"), lambda x: x.permute(0, 2, 3, 1), (2, 3, 4, 5)),
    "ellipsis_grouped": (lambda x: rearrange(x, "b ... -> b (...)"), lambda x: x.reshape(2, -1), (2, 3, 4, 5)),
    "anonymous_one": (lambda x: rearrange(x, "b h w c -> b 1 h w c"), lambda x: x.unsqueeze(1), (2, 3, 4, 5)),
    "drop_one": (lambda x: rearrange(x, "b 1 c -> b c"), lambda x: x.squeeze(1), (2, 1, 4)),
    "nchw": (lambda x: rearrange(x, "b h w c -> b c h w"), lambda x: x.permute(0, 3, 1, 2), (2, 3, 4, 5)),
    "split_first": (lambda x: rearrange(x, "(b t) c -> t c b", t=3), lambda x: x.reshape(2, 3, 4).permute(1, 2, 0),
                    (6, 4)),
    "empty_group": (lambda x: rearrange(x, "b h w c -> (b w) () h c"),
                    lambda x: x.permute(0, 2, 1, 3).reshape(8, 1, 3, 5), (2, 3, 4, 5)),
    "space_to_depth": (lambda x: rearrange(x, "b (h p) (w q) c -> b h w (c p q)", p=2, q=2),
                       lambda x: x.reshape(1, 2, 2, 2, 2, 3).permute(0, 1, 3, 5, 2, 4).reshape(1, 2, 2, 12),
                       (1, 4, 4, 3)),
}

REDUCE = {
    "max_pool": (lambda x: reduce(x, "b (h 2) (w 2) c -> b h w c", "max"),
                 lambda x: x.reshape(2, 2, 2, 3, 2, 3).amax(dim=(2, 4)), (2, 4, 6, 3)),
    "global_mean": (lambda x: reduce(x, "b h w c -> b c", "mean"), lambda x: x.mean(dim=(1, 2)), (2, 3, 4, 5)),
    "sum_keep_ones": (lambda x: reduce(x, "b h w c -> b 1 () c", "sum"), lambda x: x.sum(dim=(1, 2), keepdim=True),
                      (2, 3, 4, 5)),
    "min_rows": (lambda x: reduce(x, "b (h 2) w c -> b h w c", "min"), lambda x: x.reshape(2, 2, 2, 4, 5).amin(dim=2),
                 (2, 4, 4, 5)),
    "prod_permuted": (lambda x: reduce(x, "b h w c -> c b", "prod"), lambda x: x.prod(2).prod(1).permute(1, 0),
                      (2, 2, 3, 3)),
    "ellipsis_reduced": (lambda x: reduce(x, "... c -> c", "sum"), lambda x: x.sum(dim=(0, 1, 2)), (2, 3, 4, 5)),
    "named_size": (lambda x: reduce(x, "b (t k) c -> b t c", "mean", k=3),
                   lambda x: x.reshape(2, 2, 3, 4).mean(dim=2), (2, 6, 4)),
    "callable": (lambda x: reduce(x, "b h w c -> b c", lambda t, axes: F.logsumexp(t, axis=axes)),
                 lambda x: torch.logsumexp(x, dim=(1, 2)), (2, 3, 4, 5)),
}

REPEAT = {
    "new_channel": (lambda x: repeat(x, "h w -> h w c", c=3), lambda x: x.unsqueeze(-1).expand(4, 5, 3), (4, 5)),
    "upsample": (lambda x: repeat(x, "b h w c -> b (h 2) (w 2) c"),
                 lambda x: x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2), (2, 3, 4, 5)),
    "new_middle": (lambda x: repeat(x, "b c -> b k c", k=2), lambda x: x.unsqueeze(1).expand(3, 2, 4), (3, 4)),
    "tile_rows": (lambda x: repeat(x, "h w -> (r h) w", r=2), lambda x: x.repeat(2, 1), (3, 4)),
    "anonymous_new": (lambda x: repeat(x, "... c -> ... c 2"), lambda x: x.unsqueeze(-1).expand(2, 3, 4, 2),
                      (2, 3, 4)),
    "permute_and_copy": (lambda x: repeat(x, "b c -> c (b k)", k=2),
                         lambda x: x.permute(1, 0).repeat_interleave(2, dim=1), (3, 4)),
}

CASES = {**{f"rearrange_{k}": v for k, v in REARRANGE.items()}, **{f"reduce_{k}": v for k, v in REDUCE.items()},
         **{f"repeat_{k}": v for k, v in REPEAT.items()}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(name):
    ours, theirs, shape = CASES[name]
    x = positive(*shape) if "prod" in name else randn(*shape)
    compare_with_torch(ours, theirs, x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_float64(name):
    ours, _, shape = CASES[name]
    x = positive(*shape) if "prod" in name else randn(*shape, seed=1)
    assert check_gradients(ours, x)


@pytest.mark.parametrize("name", ["reduce_max_pool", "reduce_prod_permuted", "rearrange_patches",
                                  "repeat_upsample"])
def test_second_derivatives(name):
    ours, theirs, shape = CASES[name]
    x = positive(*shape, seed=2)
    compare_double_backward_with_torch(lambda t: ours(t * t), lambda t: theirs(t * t), x)


def test_second_derivative_gradgradcheck():
    assert check_second_derivatives(lambda t: reduce(F.tanh(rearrange(t, "b (h p) c -> b h (p c)", p=2)),
                                                     "b h d -> b d", "mean"), randn(2, 4, 3))


def test_output_shape_with_unknown_lengths():
    assert output_shape("rearrange", "b (h p) w c -> b h (p w c)", (None, 8, 3, 2), p=2) == (None, 4, 12)
    assert output_shape("rearrange", "b h w c -> (b h) w c", (None, 8, 3, 2)) == (None, 3, 2)
    assert output_shape("reduce", "b (h 2) w c -> b h c", (None, 8, 3, 2)) == (None, 4, 2)
    assert output_shape("repeat", "b c -> b c k", (None, 3), k=5) == (None, 3, 5)


def test_list_input_is_stacked_and_arrays_are_accepted():
    a, b = randn(2, 3), randn(2, 3, seed=1)
    out = rearrange([lamina.tensor(a), lamina.tensor(b)], "n h w -> h (n w)")
    np.testing.assert_allclose(out.numpy(), np.concatenate([a, b], axis=1), rtol=1e-6)
    np.testing.assert_allclose(rearrange(a, "h w -> w h").numpy(), a.T, rtol=1e-6)


def test_any_and_all_give_booleans():
    x = (randn(2, 4, 3) > 0.5).astype(np.float32)
    np.testing.assert_array_equal(reduce(x, "b (t 2) c -> b t c", "any").numpy(),
                                  x.reshape(2, 2, 2, 3).any(axis=2))
    np.testing.assert_array_equal(reduce(x, "b t c -> c", "all").numpy(), x.all(axis=(0, 1)))


def test_axes_may_be_named_as_the_parameters():
    a = randn(2, 6)
    out = rearrange(lamina.tensor(a), "x (pattern y) -> x y pattern", pattern=2)
    np.testing.assert_allclose(out.numpy(), a.reshape(2, 2, 3).transpose(0, 2, 1), rtol=1e-6)
    out = reduce(lamina.tensor(a), "x (y pattern) -> x y", "max", pattern=3)
    np.testing.assert_allclose(out.numpy(), a.reshape(2, 2, 3).max(axis=2), rtol=1e-6)


def test_identity_pattern_returns_the_input():
    x = lamina.tensor(randn(2, 3))
    assert rearrange(x, "a b -> a b") is x


def test_patterns_are_parsed_once():
    x = lamina.tensor(randn(2, 3, 4))
    rearrange(x, "a b c -> c (a b)")
    before = _parse.cache_info().hits
    rearrange(x, "a b c -> c (a b)")
    assert _parse.cache_info().hits > before


def test_exported_names():
    import types

    assert lamina.rearrange is F.rearrange is lamina.nn.functional.rearrange
    assert lamina.reduce is reduce and lamina.nn.functional.reduce is reduce
    for name in ("pack", "unpack", "repeat", "rearrange", "reduce"):
        assert name in lamina.nn.functional.__all__ and name in lamina.__all__
        assert name == "reduce" or name in F.__all__
    # in lamina.functional the name is the submodule of reductions, which the ops use
    assert isinstance(F.reduce, types.ModuleType) and "reduce" not in F.__all__
    x = lamina.tensor(randn(2, 3))
    np.testing.assert_allclose(x.sum(axis=1).numpy(), x.numpy().sum(axis=1), rtol=1e-6)


# -- pack / unpack ------------------------------------------------------------------------------
def test_pack_matches_torch_cat():
    def ours(a, b, c):
        packed, shapes = pack([a, b, c], "b * c")
        assert shapes == [(5,), (3, 4), ()]
        return packed

    def theirs(a, b, c):
        return torch.cat([a, b.reshape(2, 12, 3), c.unsqueeze(1)], dim=1)

    compare_with_torch(ours, theirs, randn(2, 5, 3), randn(2, 3, 4, 3, seed=1), randn(2, 3, seed=2))


def test_unpack_inverts_pack_with_gradients():
    shapes = [(5,), (3, 4), ()]

    def ours(p):
        return unpack(p, shapes, "b * c")

    def theirs(p):
        a, b, c = torch.split(p, [5, 12, 1], dim=1)
        return [a, b.reshape(2, 3, 4, 3), c.reshape(2, 3)]

    compare_with_torch(ours, theirs, randn(2, 18, 3))
    assert check_gradients(lambda p: unpack(p, [(2,), (-1, 2)], "* c")[1], randn(8, 3))
    pieces = unpack(lamina.tensor(randn(2, 18, 3)), [(5,), (-1, 4), ()], "b * c")
    assert [p.shape for p in pieces] == [(2, 5, 3), (2, 3, 4, 3), (2, 3)]


def test_pack_star_at_the_end_and_front():
    a, b = randn(3, 2, 2), randn(3, 4, seed=1)
    packed, shapes = pack([a, b], "n *")
    assert packed.shape == (3, 8) and shapes == [(2, 2), (4,)]
    back = unpack(packed, shapes, "n *")
    np.testing.assert_allclose(back[0].numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(back[1].numpy(), b, rtol=1e-6)


# -- errors --------------------------------------------------------------------------------------
ERRORS = [
    (lambda x: rearrange(x, "b h w c -> b (h w) d"), r"rearrange\('b h w c -> b \(h w\) d'\).*unknown axis \['d'\]"),
    (lambda x: rearrange(x, "b h w -> b h w"), r"input of shape \(2, 4, 6, 3\).*left names 3 axes.*has 4"),
    (lambda x: rearrange(x, "b (h p) w c -> b h p w c", p=3),
     r"shape \(2, 4, 6, 3\).*length 4 cannot be split into \(h p\) with p=3"),
    (lambda x: rearrange(x, "b h h c -> b h c"), r"axis 'h' appears twice on the left"),
    (lambda x: rearrange(x, "b h w c -> b c"), r"axes \['h', 'w'\] of the left are missing.*reduce"),
    (lambda x: rearrange(x, "b h w c -> b h w c", d=2), r"length is given for the axis 'd'"),
    (lambda x: rearrange(x, "b (h w) c d -> b h w c d"), r"cannot infer the lengths of \['h', 'w'\]"),
    (lambda x: rearrange(x, "b (... c) -> b c"), r"'\.\.\.' inside parentheses on the left"),
    (lambda x: rearrange(x, "b h w c -> b h w c 2"), r"unnamed axis of length 2 on the right"),
    (lambda x: rearrange(x, "b h w c - b h w c"), r"one '->'"),
    (lambda x: rearrange(x, "b h w (c -> b h w c"), r"'\(' not closed on the left"),
    (lambda x: rearrange(x, "b h w c -> b h w c", c=0), r"length of the axis 'c' must be a positive int"),
    (lambda x: rearrange(x, "b h w c -> b h w c", c=4), r"length 3 does not match \(c\) = c=4"),
    (lambda x: repeat(x, "b h w c -> b h w c k"), r"new axis 'k' needs its length"),
    (lambda x: repeat(x, "b h w c -> b h c"), r"repeat only adds axes"),
    (lambda x: reduce(x, "b h w c -> b c", "median"), r"unknown reduction 'median'"),
    (lambda x: reduce(x, "b h w c -> b c k"), r"reduce\(.*unknown axis \['k'\]"),
    (lambda x: pack([x], "b * * c"), r"one '\*'"),
    (lambda x: pack([x, randn(2, 3)], "b h * c"), r"tensor 1 of shape \(2, 3\) has fewer than the 3 named axes"),
    (lambda x: pack([x, randn(3, 3)], "b * c"), r"disagree on the named axes"),
    (lambda x: unpack(x, [(4,), (5,)], "b h * c"), r"packed_shapes \[\(4,\), \(5,\)\] hold 9.*has 6"),
]


@pytest.mark.parametrize("k", range(len(ERRORS)))
def test_errors_name_the_function_pattern_and_shape(k):
    call, message = ERRORS[k]
    with pytest.raises((ShapeError, ValueError), match=message):
        call(lamina.tensor(randn(2, 4, 6, 3)))
