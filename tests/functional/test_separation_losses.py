"""SI-SDR / SI-SNR / SNR / SDR and permutation-invariant training against torch rewrites of
torchmetrics' formulas and brute-force permutation search."""

import itertools

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def torch_si_sdr(preds, target, zero_mean=False):
    eps = torch.finfo(preds.dtype).eps
    if zero_mean:
        target = target - target.mean(dim=-1, keepdim=True)
        preds = preds - preds.mean(dim=-1, keepdim=True)
    alpha = ((preds * target).sum(dim=-1, keepdim=True) + eps) / ((target**2).sum(dim=-1, keepdim=True) + eps)
    target_scaled = alpha * target
    noise = target_scaled - preds
    val = ((target_scaled**2).sum(dim=-1) + eps) / ((noise**2).sum(dim=-1) + eps)
    return 10 * torch.log10(val)


def torch_snr(preds, target, zero_mean=False):
    eps = torch.finfo(preds.dtype).eps
    if zero_mean:
        target = target - target.mean(dim=-1, keepdim=True)
        preds = preds - preds.mean(dim=-1, keepdim=True)
    noise = target - preds
    return 10 * torch.log10(((target**2).sum(dim=-1) + eps) / ((noise**2).sum(dim=-1) + eps))


def signals(seed=0, shape=(2, 3, 40)):
    reference = randn(*shape, seed=seed)
    return reference + 0.5 * randn(*shape, seed=seed + 1), reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_si_sdr_and_snr_match_torchmetrics_formulas(dtype, zero_mean):
    estimate, reference = signals()
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    compare_with_torch(lambda e, r: F.si_sdr(e, r, zero_mean=zero_mean),
                       lambda e, r: torch_si_sdr(e, r, zero_mean), estimate, reference, dtype=dtype, rtol=rtol)
    compare_with_torch(lambda e, r: F.snr(e, r, zero_mean=zero_mean),
                       lambda e, r: torch_snr(e, r, zero_mean), estimate, reference, dtype=dtype, rtol=rtol)


def test_si_snr_sdr_and_loss_are_the_named_special_cases():
    estimate, reference = signals(3)
    compare_with_torch(F.si_snr, lambda e, r: torch_si_sdr(e, r, True), estimate, reference, dtype=np.float64)
    compare_with_torch(F.sdr, lambda e, r: torch_snr(e, r, False), estimate, reference, dtype=np.float64)
    compare_with_torch(lambda e, r: F.si_sdr_loss(e, r), lambda e, r: -torch_si_sdr(e, r, True).mean(),
                       estimate, reference, dtype=np.float64)
    loss = F.si_sdr_loss(lamina.tensor(estimate), lamina.tensor(reference), zero_mean=False, reduction="none")
    assert loss.shape == (2, 3)


def test_gradients_float64():
    estimate, reference = signals(5, (2, 12))
    assert check_gradients(lambda e, r: F.si_sdr(e, r, zero_mean=True), estimate, reference)
    assert check_gradients(F.snr, estimate, reference)


def test_si_sdr_ignores_the_scale_of_the_estimate_and_snr_does_not():
    estimate, reference = signals(7)
    base = F.si_sdr(lamina.tensor(estimate, dtype=np.float64), lamina.tensor(reference, dtype=np.float64)).numpy()
    for scale in (0.01, 3.0, 250.0):
        scaled = F.si_sdr(lamina.tensor(scale * estimate, dtype=np.float64),
                          lamina.tensor(reference, dtype=np.float64)).numpy()
        np.testing.assert_allclose(scaled, base, rtol=1e-9, atol=1e-9)
    snr = F.snr(lamina.tensor(3.0 * estimate, dtype=np.float64), lamina.tensor(reference, dtype=np.float64)).numpy()
    assert np.all(snr < base)
    # a perfect estimate scores far above any noisy one
    perfect = F.si_sdr(lamina.tensor(2.0 * reference, dtype=np.float64), lamina.tensor(reference, dtype=np.float64))
    assert perfect.numpy().min() > 100


def test_shape_errors_name_the_function():
    with pytest.raises(ShapeError, match="si_sdr.*\\(2, 3\\).*\\(2, 4\\)"):
        F.si_sdr(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="mode"):
        F.permutation_invariant_loss(F.si_sdr, np.zeros((1, 2, 5)), np.zeros((1, 2, 5)), mode="greedy")


def pairwise_loss(e, r):
    return F.si_sdr_loss(e, r, reduction="none")


def brute_force(estimate, reference):
    """Per example: min over permutations of the mean negative SI-SDR, by looping in torch."""
    e, r = torch.tensor(estimate), torch.tensor(reference)
    best, orders = [], []
    for b in range(e.shape[0]):
        scores = {p: -torch_si_sdr(e[b, list(p)], r[b], True).mean().item()
                  for p in itertools.permutations(range(e.shape[1]))}
        order = min(scores, key=scores.get)
        best.append(scores[order])
        orders.append(order)
    return np.array(best), np.array(orders)


@pytest.mark.parametrize("sources", [2, 3, 4])
def test_pit_is_the_brute_force_minimum_and_hungarian_agrees(sources):
    rng = np.random.default_rng(sources)
    reference = rng.standard_normal((3, sources, 32))
    order = np.stack([rng.permutation(sources) for _ in range(3)])
    estimate = reference[np.arange(3)[:, None], order] + 0.6 * rng.standard_normal((3, sources, 32))
    expected, expected_order = brute_force(estimate, reference)
    for mode in ("exhaustive", "hungarian"):
        loss, perm = F.permutation_invariant_loss(pairwise_loss, lamina.tensor(estimate, dtype=np.float64),
                                                  lamina.tensor(reference, dtype=np.float64), mode=mode,
                                                  reduction="none")
        assert_close(loss.numpy(), expected, 1e-10)
        np.testing.assert_array_equal(perm, expected_order)
    # the planted order is found: estimate perm[b, j] is the noisy copy of reference j
    np.testing.assert_array_equal(order[np.arange(3)[:, None], perm], np.tile(np.arange(sources), (3, 1)))


def test_hungarian_equals_exhaustive_on_random_pairs():
    rng = np.random.default_rng(11)
    estimate, reference = rng.standard_normal((6, 5, 20)), rng.standard_normal((6, 5, 20))
    a, pa = F.permutation_invariant_loss(pairwise_loss, estimate, reference, reduction="none")
    b, pb = F.permutation_invariant_loss(pairwise_loss, estimate, reference, mode="hungarian", reduction="none")
    assert_close(b.numpy(), a.numpy(), 1e-6)
    np.testing.assert_array_equal(pa, pb)


def test_gradients_flow_through_the_chosen_pairing_only():
    estimate, reference = signals(13, (2, 3, 24))
    perm = np.array([[2, 0, 1], [1, 2, 0]])
    placed = np.empty_like(estimate)
    placed[np.arange(2)[:, None], perm] = estimate       # estimate perm[b, j] now matches reference j
    estimate = placed
    ours = lamina.tensor(estimate, dtype=np.float64, requires_grad=True)
    loss, found = F.permutation_invariant_loss(pairwise_loss, ours, lamina.tensor(reference, dtype=np.float64))
    np.testing.assert_array_equal(found, perm)
    loss.backward()
    theirs = torch.tensor(estimate, requires_grad=True)
    aligned = theirs[torch.arange(2)[:, None], torch.tensor(perm)]
    (-torch_si_sdr(aligned, torch.tensor(reference), True).mean()).backward()
    assert_close(ours.grad, theirs.grad.numpy(), 1e-10, "gradient")
    assert_close(loss.numpy(), -torch_si_sdr(aligned, torch.tensor(reference), True).mean().item(), 1e-10)


def test_pit_rejects_a_loss_that_reduces_the_pairs():
    with pytest.raises(ShapeError, match="loss_fn"):
        F.permutation_invariant_loss(F.si_sdr_loss, np.ones((1, 2, 5)), np.ones((1, 2, 5)))
