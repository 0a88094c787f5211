"""SlotAttention: Algorithm 1 against a torch re-implementation (outputs, gradients of the
inputs, the initial slots and every parameter), a gradient check, equivariance under
permutations of the inputs and of the slots, padding masks, seeded sampling and errors."""

import numpy as np
import pytest
import torch

import lamina
import set_references as ref
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N, SIZE, D_IN, SLOTS, DIM = 2, 6, 5, 3, 4
MASK = np.array([[True] * 6, [True, False, True, True, True, False]])


def _layer(iters=3):
    layer = nn.SlotAttention(SLOTS, DIM, iters=iters, hidden_dim=7)
    layer(randn(N, SIZE, D_IN), seed=0)
    return layer.double()


@pytest.mark.parametrize("masked", [False, True])
def test_slot_attention_matches_torch(masked):
    layer = _layer()
    names, values = ref.named_values(layer, seed=30)
    mask = MASK if masked else None
    tmask = None if mask is None else torch.from_numpy(mask)

    def ours(x, slots, *params):
        return functional_call(layer, dict(zip(names, params)), x, mask=mask, slots=slots)

    def theirs(x, slots, *params):
        return ref.slot_attention(dict(zip(names, params)), x, slots, 3, mask=tmask)

    arrays = (randn(N, SIZE, D_IN, seed=1), randn(N, SLOTS, DIM, seed=2), *values)
    # a bias of the slots' norm shifts the scores of an input alike for every slot: no gradient
    wants = [True, True] + [name != "norm_slots.bias" for name in names]
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, grad=wants)
    if masked:
        assert check_gradients(ours, *arrays)


def test_sampled_slots_match_torch_with_the_same_noise():
    """slots = mu + exp(log_sigma) * noise, noise from numpy's generator of the seed: the
    gradients reach mu and log_sigma."""
    layer = _layer(iters=2)
    names, values = ref.named_values(layer, seed=31)
    noise = torch.from_numpy(np.random.default_rng(7).standard_normal((N, SLOTS, DIM)))

    def ours(x, *params):
        return functional_call(layer, dict(zip(names, params)), x, seed=7)

    def theirs(x, *params):
        p = dict(zip(names, params))
        return ref.slot_attention(p, x, p["slots_mu"] + torch.exp(p["slots_log_sigma"]) * noise, 2)

    wants = [True] + [name != "norm_slots.bias" for name in names]
    compare_with_torch(ours, theirs, randn(N, SIZE, D_IN, seed=1), *values, dtype=np.float64, grad=wants)


def test_seeded_sampling_repeats_and_the_generator_draws_anew():
    layer = _layer()
    x = ref.f64(randn(N, SIZE, D_IN, seed=1))
    assert np.array_equal(layer(x, seed=3).numpy(), layer(x, seed=3).numpy())
    assert not np.allclose(layer(x, seed=3).numpy(), layer(x, seed=4).numpy())
    lamina.manual_seed(5)
    first = layer(x).numpy()
    lamina.manual_seed(5)
    assert np.array_equal(layer(x).numpy(), first)


def test_slots_follow_a_permutation_of_the_initial_slots():
    layer = _layer()
    x, slots = randn(N, SIZE, D_IN, seed=1), randn(N, SLOTS, DIM, seed=2)
    order = np.array([2, 0, 1])
    out = layer(ref.f64(x), slots=ref.f64(slots)).numpy()
    assert_close(layer(ref.f64(x), slots=ref.f64(slots[:, order])).numpy(), out[:, order], 1e-10, "permuted slots")
    # a permutation of the inputs changes nothing (the weighted mean is over a set)
    perm = np.array([4, 2, 0, 5, 1, 3])
    assert_close(layer(ref.f64(x[:, perm]), slots=ref.f64(slots)).numpy(), out, 1e-10, "permuted inputs")


def test_padding_inputs_change_nothing_and_attention_is_returned():
    layer = _layer()
    x, slots = randn(N, SIZE, D_IN, seed=1), randn(N, SLOTS, DIM, seed=2)
    noisy = np.where(MASK[:, :, None], x, 50.0)
    out, attention = layer(ref.f64(x), mask=MASK, slots=ref.f64(slots), return_attention=True)
    assert_close(layer(ref.f64(noisy), mask=MASK, slots=ref.f64(slots)).numpy(), out.numpy(), 1e-10, "padding")
    alone = layer(ref.f64(x[1:, MASK[1]]), slots=ref.f64(slots[1:])).numpy()
    assert_close(alone, out.numpy()[1:], 1e-10, "the set without its padding")
    assert attention.shape == (N, SIZE, SLOTS) and attention.dtype == np.float64 and not attention.requires_grad
    assert_close(attention.numpy().sum(axis=-1), np.ones((N, SIZE)), 1e-12, "softmax over the slots")


def test_errors_name_the_layer():
    layer = _layer()
    with pytest.raises(ShapeError, match=r"SlotAttention.*\(2, 6, 3\).*\(batch, set size, 5\)"):
        layer(randn(N, SIZE, 3), seed=0)
    with pytest.raises(ShapeError, match=r"SlotAttention.*initial slots of shape \(2, 2, 4\); expected \(2, 3, 4\)"):
        layer(randn(N, SIZE, D_IN), slots=randn(N, 2, DIM))
    with pytest.raises(ShapeError, match=r"SlotAttention.*mask.*\(2, 5\)"):
        layer(randn(N, SIZE, D_IN), mask=np.ones((2, 5), bool), seed=0)
    with pytest.raises(ValueError, match=r"SlotAttention: the slots average over the real inputs.*\[1\]"):
        layer(randn(N, SIZE, D_IN), mask=np.array([[True] * 6, [False] * 6]), seed=0)
    with pytest.raises(ValueError, match="SlotAttention: iters must be a positive int"):
        nn.SlotAttention(3, 4, iters=0)
