"""Deep Sets pooling and PermEquivariant, and the Set Transformer blocks MAB, SAB, ISAB and PMA:
outputs and gradients against torch re-implementations, gradient checks, permutation invariance
and equivariance, padding masks, and error messages."""

import numpy as np
import pytest
import torch

import set_references as ref
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, SIZE, D = 3, 5, 4
MASK = np.array([[True] * 5, [True, True, True, False, False], [True, False, True, True, False]])
PERM = np.array([3, 0, 4, 2, 1])


def _built(layer, *shapes, **kwargs):
    layer(*[randn(*s) for s in shapes], **kwargs)
    return layer.double()


def _compare(layer, torch_fn, inputs, mask=None, seed=20, real_rows=False):
    """Outputs and gradients (inputs and every parameter) against ``torch_fn(p, *inputs, mask)``
    in float64, then a gradient check of the same function. ``real_rows``: only the rows of
    real elements count (an equivariant block's padding rows are meaningless)."""
    names, values = ref.named_values(layer, seed)
    k = len(inputs)
    tmask = None if mask is None else torch.from_numpy(mask)
    rows = mask[:, :, None].astype(float) if real_rows else 1.0

    def ours(*arrays):
        return functional_call(layer, dict(zip(names, arrays[k:])), *arrays[:k], mask=mask) * rows

    def theirs(*arrays):
        return torch_fn(dict(zip(names, arrays[k:])), *arrays[:k], tmask) * torch.as_tensor(rows)

    # a bias of the keys shifts every score of a query alike: its gradient is 0, roundoff on both sides
    wants = [True] * k + [not name.endswith("fc_k.bias") for name in names]
    compare_with_torch(ours, theirs, *inputs, *values, dtype=np.float64, grad=wants)
    assert check_gradients(ours, *inputs, *values)


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
@pytest.mark.parametrize("masked", [False, True])
def test_deep_sets_pooling_matches_torch(kind, masked):
    layer = _built(nn.DeepSetsPooling(kind), (N, SIZE, D))
    mask = MASK if masked else None
    _compare(layer, lambda p, x, m: ref.pool(x, kind, m), [randn(N, SIZE, D, seed=1)], mask)


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_perm_equivariant_matches_torch(kind):
    layer = _built(nn.PermEquivariant(6, pool=kind), (N, SIZE, D))
    _compare(layer, lambda p, x, m: ref.perm_equivariant(p, "", x, kind, m), [randn(N, SIZE, D, seed=1)], MASK)


def _block_cases():
    return {
        "mab": (lambda: nn.MAB(8, 2), lambda p, x, y, m: ref.mab(p, "", x, y, 2, False, m), 2),
        "mab_ln": (lambda: nn.MAB(8, 4, ln=True), lambda p, x, y, m: ref.mab(p, "", x, y, 4, True, m), 2),
        "sab": (lambda: nn.SAB(8, 2, ln=True), lambda p, x, m: ref.sab(p, "", x, 2, True, m), 1),
        "isab": (lambda: nn.ISAB(8, 2, 3), lambda p, x, m: ref.isab(p, "", x, 2, False, m), 1),
        "isab_ln": (lambda: nn.ISAB(8, 2, 3, ln=True), lambda p, x, m: ref.isab(p, "", x, 2, True, m), 1),
        "pma": (lambda: nn.PMA(8, 2, 2, ln=True), lambda p, x, m: ref.pma(p, "", x, 2, True, m), 1),
    }


@pytest.mark.parametrize("name", list(_block_cases()))
def test_set_attention_blocks_match_torch(name):
    make, torch_fn, count = _block_cases()[name]
    inputs = [randn(N, 3, 6, seed=2), randn(N, SIZE, D, seed=1)][-count:]
    layer = _built(make(), *[x.shape for x in inputs])
    _compare(layer, torch_fn, inputs, MASK, real_rows=name in ("sab", "isab", "isab_ln"))


def _f64_call(layer, x, **kwargs):
    return layer(ref.f64(x), **kwargs).numpy()


@pytest.mark.parametrize("make", [lambda: nn.SAB(8, 2, ln=True), lambda: nn.ISAB(8, 2, 3),
                                  lambda: nn.PermEquivariant(6, pool="max")])
def test_equivariant_blocks_permute_with_their_input(make):
    layer = _built(make(), (N, SIZE, D))
    x = randn(N, SIZE, D, seed=3)
    assert_close(_f64_call(layer, x[:, PERM]), _f64_call(layer, x)[:, PERM], 1e-10, "permuted outputs")


@pytest.mark.parametrize("make", [lambda: nn.PMA(8, 2, 2, ln=True), lambda: nn.DeepSetsPooling("max")])
def test_pooling_blocks_are_invariant(make):
    layer = _built(make(), (N, SIZE, D))
    x = randn(N, SIZE, D, seed=3)
    assert_close(_f64_call(layer, x[:, PERM], mask=MASK[:, PERM]), _f64_call(layer, x, mask=MASK), 1e-10,
                 "pooled outputs")


@pytest.mark.parametrize("make", [lambda: nn.SAB(8, 2), lambda: nn.ISAB(8, 2, 3, ln=True), lambda: nn.PMA(8, 2, 1),
                                  lambda: nn.PermEquivariant(6), lambda: nn.DeepSetsPooling("mean")])
def test_padding_rows_change_nothing(make):
    layer = _built(make(), (N, SIZE, D))
    x = randn(N, SIZE, D, seed=4)
    noisy = np.where(MASK[:, :, None], x, randn(N, SIZE, D, seed=5) * 100)
    before, after = _f64_call(layer, x, mask=MASK), _f64_call(layer, noisy, mask=MASK)
    real = MASK[:, :, None] if before.ndim == 3 and before.shape[1] == SIZE else True
    assert_close(np.where(real, after, 0), np.where(real, before, 0), 1e-10, "outputs with other padding")
    # and a set cut to its real elements gives the same output as the padded one
    alone = _f64_call(layer, x[1:2, :3])
    assert_close(before[1:2, :3] if alone.ndim == 3 and alone.shape[1] == 3 else before[1:2], alone, 1e-10,
                 "the unpadded set")


def test_errors_name_the_layer():
    sab = nn.SAB(8, 2)
    sab(randn(2, 5, 4))
    with pytest.raises(ShapeError, match=r"MAB.*\(2, 5, 3\).*\(batch, set size, 4\)"):
        sab(randn(2, 5, 3))
    with pytest.raises(ShapeError, match=r"ISAB.*\(2, 5\)"):
        nn.ISAB(8, 2, 3)(randn(2, 5))
    with pytest.raises(ShapeError, match=r"MAB.*mask.*\(2, 4\).*expected booleans of shape \(2, 5\)"):
        sab(randn(2, 5, 4), mask=np.ones((2, 4), bool))
    with pytest.raises(ShapeError, match="MAB.*mask.*float"):
        sab(randn(2, 5, 4), mask=np.ones((2, 5)))
    with pytest.raises(ShapeError, match="MAB.*differ in batch size"):
        nn.MAB(8, 2)(randn(2, 3, 4), randn(3, 5, 4))
    with pytest.raises(ValueError, match="PMA: dim 6 is not divisible by num_heads 4"):
        nn.PMA(6, 4, 1)
    with pytest.raises(ValueError, match="DeepSetsPooling: pool must be one of"):
        nn.DeepSetsPooling("median")
    with pytest.raises(ValueError, match="DeepSetsPooling: the max of an empty set.*\\[1\\]"):
        nn.DeepSetsPooling("max")(randn(2, 3, 4), mask=np.array([[True] * 3, [False] * 3]))
    layer = nn.PermEquivariant(3)
    layer(randn(2, 5, 4))
    with pytest.raises(ShapeError, match=r"PermEquivariant.*\(batch, set size, 4\)"):
        layer(randn(2, 5, 6))


def test_config_round_trip():
    for layer in (nn.ISAB(8, 2, 3, ln=True), nn.PMA(8, 2, 4), nn.PermEquivariant(5, pool="max", activation="tanh")):
        again = nn.layer_from_config(nn.layer_to_config(layer))
        assert again.get_config() == layer.get_config()
