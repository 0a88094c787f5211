"""DeepSets and SetTransformer: outputs and gradients against torch re-implementations,
permutation invariance, padding masks, errors, and learning a set function."""

import numpy as np
import pytest
import torch

import lamina
import set_references as ref
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import models, nn, optim
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, SIZE, D = 3, 5, 4
MASK = np.array([[True] * 5, [True, True, True, False, False], [False, True, True, True, False]])
PERM = np.array([2, 4, 0, 1, 3])


def _deep_sets(pool="sum"):
    phi = nn.Sequential(nn.Dense(6, activation="tanh"), nn.PermEquivariant(5, pool="max"), nn.Dense(5))
    return models.DeepSets(phi, nn.Sequential(nn.Dense(7, activation="tanh"), nn.Dense(2)), pool=pool)


def _torch_deep_sets(p, x, mask, pool):
    h = torch.tanh(ref.linear(p, "phi.dense", x))
    h = ref.linear(p, "phi.dense_1", ref.perm_equivariant(p, "phi.perm_equivariant.", h, "max"))
    return ref.linear(p, "rho.dense_1", torch.tanh(ref.linear(p, "rho.dense", ref.pool(h, pool, mask))))


def _set_transformer(inducing):
    return models.SetTransformer(3, num_outputs=2, dim_hidden=8, num_heads=2, num_inducing=inducing,
                                 num_decoder_blocks=1, ln=True)


def _torch_set_transformer(p, x, mask, inducing):
    encode = ref.sab if inducing is None else ref.isab
    h = x
    for i in range(2):
        h = encode(p, f"encoder.{i}.", h, 2, True, mask)
    h = ref.sab(p, "decoder.0.", ref.pma(p, "pma.", h, 2, True, mask), 2, True)
    return ref.linear(p, "head", h)


def _built(model):
    model(randn(N, SIZE, D), mask=MASK)
    return model.double()


CASES = {
    "deep_sets_sum": (lambda: _deep_sets("sum"), lambda p, x, m: _torch_deep_sets(p, x, m, "sum")),
    "deep_sets_max": (lambda: _deep_sets("max"), lambda p, x, m: _torch_deep_sets(p, x, m, "max")),
    "set_transformer_isab": (lambda: _set_transformer(3), lambda p, x, m: _torch_set_transformer(p, x, m, 3)),
    "set_transformer_sab": (lambda: _set_transformer(None), lambda p, x, m: _torch_set_transformer(p, x, m, None)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_set_models_match_torch(name):
    make, torch_fn = CASES[name]
    model = _built(make())
    names, values = ref.named_values(model, seed=40)
    # the mask reaches DeepSets' pooling only (phi maps the padding too, unmasked)
    mask = MASK if name.startswith("set_transformer") else np.ones((N, SIZE), bool)

    def ours(x, *params):
        return functional_call(model, dict(zip(names, params)), x, mask=mask)

    def theirs(x, *params):
        return torch_fn(dict(zip(names, params)), x, torch.from_numpy(mask))

    wants = [True] + [not name.endswith("fc_k.bias") for name in names]
    compare_with_torch(ours, theirs, randn(N, SIZE, D, seed=1), *values, dtype=np.float64, grad=wants)
    if name.endswith("isab"):          # the blocks' parameters are checked in the layers' tests
        assert check_gradients(ours, randn(N, SIZE, D, seed=1), *values, grad=[True] + [False] * len(values))


@pytest.mark.parametrize("name", ["deep_sets_sum", "set_transformer_isab", "set_transformer_sab"])
def test_set_models_are_invariant_and_ignore_padding(name):
    model = _built(CASES[name][0]())
    x = randn(N, SIZE, D, seed=2)
    mask = MASK if name.startswith("set_transformer") else None
    out = model(ref.f64(x), mask=mask).numpy()
    permuted = model(ref.f64(x[:, PERM]), mask=None if mask is None else mask[:, PERM]).numpy()
    assert_close(permuted, out, 1e-10, "outputs of the permuted sets")
    if mask is not None:
        noisy = np.where(MASK[:, :, None], x, 30.0)
        assert_close(model(ref.f64(noisy), mask=MASK).numpy(), out, 1e-10, "outputs with other padding")
        alone = model(ref.f64(x[2:, MASK[2]])).numpy()
        assert_close(alone, out[2:], 1e-10, "the set without its padding")


def test_errors_name_the_model():
    model = _built(_set_transformer(3))
    with pytest.raises(ShapeError, match=r"SetTransformer.*mask.*expected booleans of shape \(3, 5\)"):
        model(randn(N, SIZE, D), mask=MASK[:, :4])
    with pytest.raises(ShapeError, match=r"SetTransformer.*\(3, 4\).*\(batch, set size, features\)"):
        model(randn(N, D))
    with pytest.raises(ShapeError, match=r"MAB.*\(3, 5, 6\).*\(batch, set size, 4\)"):
        model(randn(N, SIZE, 6))
    with pytest.raises(ShapeError, match=r"DeepSets.*mask"):
        _built(_deep_sets())(randn(N, SIZE, D), mask=np.ones((N, SIZE)))


def digit_sets(count, seed, largest=6):
    """Sets of 2 .. ``largest`` digits 0 .. 9 (one-hot rows, zero padding, a padding mask)
    and the largest digit of each."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, largest + 1, count)
    digits = rng.integers(0, 10, (count, largest))
    mask = np.arange(largest)[None] < sizes[:, None]
    x = np.eye(10, dtype=np.float32)[digits] * mask[..., None]
    return x, mask, np.where(mask, digits, -1).max(axis=1)


def test_deep_sets_learns_the_largest_digit_of_sets_of_different_sizes():
    lamina.manual_seed(0)
    x, mask, y = digit_sets(3000, seed=1)
    x_test, mask_test, y_test = digit_sets(500, seed=2)
    model = models.DeepSets(nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(32, activation="relu")),
                            nn.Dense(10), pool="max")
    model(x[:2], mask=mask[:2])
    opt = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows = rng.integers(0, len(x), 64)
        cost = F.categorical_cross_entropy(model(x[rows], mask=mask[rows]), y[rows], from_logits=True)
        opt.zero_grad()
        cost.backward()
        opt.step()
    with lamina.no_grad():
        accuracy = float((model(x_test, mask=mask_test).numpy().argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.97, f"test accuracy {accuracy:.3f}"
