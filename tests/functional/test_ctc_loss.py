"""ctc_loss: values and gradients against PyTorch, a brute-force sum over paths, float64
gradient checks, infinite losses, argument errors and learning a label sequence.

lamina takes batch-first (N, T, C) log-probabilities, torch (T, N, C): the references
transpose at the boundary. lamina's gradient is the exact dL/dlog_probs; torch's adds
exp(log_probs) (pytorch/pytorch#52241), so gradients are compared on the scores z of
log_probs = log_softmax(z), where the two agree, and the difference is checked on its own.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import assert_close, check_gradients, check_second_derivatives, randn
from lamina import nn, optim
from lamina.functional.losses_ctc import ctc_loss

REDUCTIONS = ["mean", "sum", "none"]
RTOL = {np.float32: 1e-5, np.float64: 1e-8}


def torch_ctc(scores, targets, input_lengths, target_lengths, **options):
    """torch's ctc_loss of log_softmax(scores), scores batch-first (N, T, C)."""
    log_probs = torch.log_softmax(scores, dim=-1).transpose(0, 1)
    return TF.ctc_loss(log_probs, torch.as_tensor(targets), torch.as_tensor(input_lengths),
                       torch.as_tensor(target_lengths), **options)


def concatenated(padded, lengths):
    """The padded targets' labels, sample after sample."""
    return np.concatenate([row[:n] for row, n in zip(padded, lengths)]).astype(np.int64)


def compare(scores, targets, input_lengths, target_lengths, dtype=np.float64, seed=0, **options):
    """ctc_loss(log_softmax(z)) and its gradient on z against torch; returns lamina's loss."""
    scores = scores.astype(dtype)
    ours_z = lamina.tensor(scores, requires_grad=True, dtype=dtype)
    ours = ctc_loss(F.log_softmax(ours_z), targets, input_lengths, target_lengths, **options)
    theirs_z = torch.tensor(scores, requires_grad=True)
    theirs = torch_ctc(theirs_z, targets, input_lengths, target_lengths, **options)
    rtol = RTOL[np.dtype(dtype).type]
    assert_close(ours.numpy(), theirs.detach().numpy(), rtol, "loss")
    upstream = np.random.default_rng(seed).standard_normal(ours.shape).astype(dtype)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(ours_z.grad, theirs_z.grad.numpy(), rtol, "gradient on the scores")
    return ours


def batch(seed=0):
    """Four samples of different input and target lengths (a repeat, an empty target)."""
    scores = randn(4, 9, 5, seed=seed, scale=1.5)
    targets = np.array([[1, 2, 2, 3], [4, 4, 0, 0], [3, 1, 4, 2], [0, 0, 0, 0]])
    return scores, targets, np.array([9, 6, 7, 3]), np.array([4, 2, 4, 0])


# -- against PyTorch ------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_targets_match_torch(reduction, dtype):
    compare(*batch(), dtype=dtype, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_concatenated_targets_match_torch(reduction):
    scores, padded, input_lengths, target_lengths = batch(seed=1)
    flat = concatenated(padded, target_lengths)
    ours = compare(scores, flat, input_lengths, target_lengths, reduction=reduction)
    as_padded = ctc_loss(F.log_softmax(lamina.tensor(scores, dtype=np.float64)), padded, input_lengths, target_lengths,
                         reduction=reduction)
    assert_close(ours.numpy(), as_padded.numpy(), 1e-12, "concatenated vs padded")


def test_repeated_labels_and_a_nonzero_blank_match_torch():
    scores = randn(3, 6, 4, seed=2, scale=2)
    # blank is the last class; [1, 1] needs a blank frame between the ones
    targets = np.array([[1, 1, 1], [0, 0, 2], [2, 1, 0]])
    compare(scores, targets, np.array([6, 5, 6]), np.array([3, 3, 2]), blank=3, reduction="none")


def test_random_batches_match_torch():
    rng = np.random.default_rng(3)
    for trial in range(5):
        n, frames, classes = 5, 12, 6
        target_lengths = rng.integers(0, 5, n)
        targets = rng.integers(1, classes, (n, 5))
        input_lengths = rng.integers(2 * target_lengths + 1, frames + 1)
        compare(randn(n, frames, classes, seed=trial, scale=2), targets, input_lengths, target_lengths,
                reduction=["mean", "sum", "none"][trial % 3], seed=trial)


def test_padding_values_are_ignored():
    scores, padded, input_lengths, target_lengths = batch(seed=4)
    garbage = np.where(np.arange(4)[None, :] < target_lengths[:, None], padded, -7)
    lp = F.log_softmax(lamina.tensor(scores, dtype=np.float64))
    assert_close(ctc_loss(lp, garbage, input_lengths, target_lengths, reduction="none").numpy(),
                 ctc_loss(lp, padded, input_lengths, target_lengths, reduction="none").numpy(), 0.0)


def test_gradient_differs_from_torch_by_the_probabilities():
    """Directly on log_probs torch returns exp(lp) scaled by dJ/dL_n on each sample's frames,
    on top of the exact derivative."""
    scores, targets, input_lengths, target_lengths = batch(seed=5)
    lp = torch.log_softmax(torch.tensor(scores), dim=-1).numpy()
    ours = lamina.tensor(lp, requires_grad=True, dtype=np.float64)
    ctc_loss(ours, targets, input_lengths, target_lengths).backward()
    theirs = torch.tensor(lp.transpose(1, 0, 2).copy(), requires_grad=True)
    TF.ctc_loss(theirs, torch.tensor(targets), torch.tensor(input_lengths), torch.tensor(target_lengths)).backward()
    scale = 1.0 / (len(target_lengths) * np.maximum(target_lengths, 1))
    frames = np.arange(lp.shape[1])[None, :] < input_lengths[:, None]
    expected = ours.grad + scale[:, None, None] * frames[..., None] * np.exp(lp)
    assert_close(theirs.grad.numpy().transpose(1, 0, 2), expected, 1e-8, "torch's gradient")


# -- the sum over paths ---------------------------------------------------------------------


def collapse(path, blank):
    """B: merge runs of a symbol, then drop the blanks."""
    return tuple(s for s, _ in itertools.groupby(path) if s != blank)


@pytest.mark.parametrize("target, blank", [((1, 2), 0), ((1, 1), 0), ((2,), 0), ((), 0), ((0, 2, 0), 1)])
def test_probability_is_the_sum_over_collapsing_paths(target, blank):
    frames, classes = 5, 3
    log_probs = np.log(np.random.default_rng(len(target)).dirichlet(np.ones(classes), frames))
    probability = sum(np.exp(log_probs[np.arange(frames), path].sum())
                      for path in itertools.product(range(classes), repeat=frames) if collapse(path, blank) == target)
    padded = np.array([list(target) or [blank + 1]])
    loss = ctc_loss(lamina.tensor(log_probs[None], dtype=np.float64), padded, [frames], [len(target)], blank=blank,
                    reduction="sum")
    assert probability > 0
    assert_close(np.exp(-loss.numpy()), probability, 1e-12, "p(target)")


# -- gradient checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_on_log_probs(reduction):
    """Any log_probs, normalised or not: the gradient is the exact derivative."""
    targets, input_lengths, target_lengths = np.array([[1, 1], [2, 0]]), [4, 3], [2, 1]
    assert check_gradients(lambda lp: ctc_loss(lp, targets, input_lengths, target_lengths, reduction=reduction),
                           randn(2, 4, 3, seed=6))


def test_gradcheck_through_log_softmax():
    targets, input_lengths, target_lengths = np.array([1, 2, 2, 1]), [5, 4], [3, 1]
    assert check_gradients(lambda z: ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths),
                           randn(2, 5, 3, seed=7, scale=2))


# -- infinite losses -----------------------------------------------------------------------------


def impossible_batch():
    """Sample 1 has [1, 1] in 2 frames: with the blank between them it needs 3."""
    scores = randn(3, 4, 3, seed=8)
    return scores, np.array([[1, 2], [1, 1], [2, 2]]), np.array([4, 2, 4]), np.array([2, 2, 2])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_infinity_zeroes_an_impossible_alignment(reduction):
    scores, targets, input_lengths, target_lengths = impossible_batch()
    compare(scores, targets, input_lengths, target_lengths, reduction=reduction, zero_infinity=True)
    z = lamina.tensor(scores, requires_grad=True, dtype=np.float64)
    losses = ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths, reduction="none",
                      zero_infinity=True)
    losses.sum().backward()
    assert losses.numpy()[1] == 0.0 and np.all(losses.numpy()[[0, 2]] > 0)
    assert np.all(z.grad[1] == 0.0) and np.any(z.grad[0] != 0.0)


def test_impossible_alignment_without_zero_infinity_is_an_error():
    scores, targets, input_lengths, target_lengths = impossible_batch()
    with pytest.raises(ValueError, match=r"ctc_loss: sample 1 has 2 frames .* 2 labels needs at least 3"):
        ctc_loss(F.log_softmax(lamina.tensor(scores)), targets, input_lengths, target_lengths)


def test_a_label_of_zero_probability_gives_an_infinite_loss():
    scores, targets, input_lengths, target_lengths = batch(seed=9)
    lp = torch.log_softmax(torch.tensor(scores), dim=-1).numpy()
    lp[0, :, 3] = -np.inf                  # sample 0's target holds a 3
    ours = ctc_loss(lamina.tensor(lp, dtype=np.float64), targets, input_lengths, target_lengths, reduction="none")
    theirs = TF.ctc_loss(torch.tensor(lp).transpose(0, 1), torch.tensor(targets), torch.tensor(input_lengths),
                         torch.tensor(target_lengths), reduction="none")
    assert np.isinf(ours.numpy()[0]) and np.isinf(theirs.numpy()[0])
    assert_close(ours.numpy()[1:], theirs.numpy()[1:], 1e-8)
    zeroed = lamina.tensor(lp, requires_grad=True, dtype=np.float64)
    ctc_loss(zeroed, targets, input_lengths, target_lengths, zero_infinity=True).backward()
    assert np.all(zeroed.grad[0] == 0.0) and np.all(np.isfinite(zeroed.grad))


# -- errors -----------------------------------------------------------------------------------


def bad_call(**changes):
    scores, targets, input_lengths, target_lengths = batch()
    arguments = dict(log_probs=lamina.tensor(scores), targets=targets, input_lengths=input_lengths,
                     target_lengths=target_lengths)
    arguments.update(changes)
    return lambda: ctc_loss(**arguments)


@pytest.mark.parametrize("changes, error, message", [
    ({"targets": np.array([[1, 0, 2, 3], [4, 4, 0, 0], [3, 1, 4, 2], [0, 0, 0, 0]])}, ValueError,
     r"differ from blank=0, got 0 at position 1 of sample 0"),
    ({"targets": np.array([[1, 2, 2, 5], [4, 4, 0, 0], [3, 1, 4, 2], [0, 0, 0, 0]])}, ValueError,
     r"lie in \[0, 5\).*got 5 at position 3 of sample 0"),
    ({"targets": np.ones((4, 2), dtype=np.float32)}, ValueError, r"targets must hold integers"),
    ({"targets": np.ones((3, 4), dtype=np.int64)}, lamina.errors.ShapeError, r"shape \(4, S\)"),
    ({"targets": np.ones(7, dtype=np.int64)}, lamina.errors.ShapeError, r"hold 7 labels .* add up to 10"),
    ({"input_lengths": np.array([9, 6, 10, 3])}, ValueError, r"lie in \[1, 9\], got 10 for sample 2"),
    ({"input_lengths": np.array([9, 0, 7, 3])}, ValueError, r"input_lengths must lie in \[1, 9\], got 0 for sample 1"),
    ({"input_lengths": np.array([9, 6, 7])}, lamina.errors.ShapeError, r"input_lengths must have shape \(4,\)"),
    ({"target_lengths": np.array([4, 5, 4, 0])}, ValueError, r"target_lengths must lie in \[0, 4\], got 5"),
    ({"target_lengths": np.array([4, -1, 4, 0])}, ValueError, r"target_lengths must lie in \[0, 4\], got -1"),
    ({"log_probs": lamina.tensor(np.zeros((9, 5)))}, lamina.errors.ShapeError, r"\(N, T, C\)"),
    ({"blank": 5}, ValueError, r"blank must be an integer in \[0, 5\), got 5"),
    ({"reduction": "batchmean"}, ValueError, r"reduction must be one of"),
])
def test_bad_arguments_are_refused(changes, error, message):
    with pytest.raises(error, match=message):
        bad_call(**changes)()


# -- learning ---------------------------------------------------------------------------------


def greedy_decode(log_probs, blank=0):
    """The best path, collapsed, for each sample."""
    return [collapse(path, blank) for path in np.argmax(log_probs, axis=-1).tolist()]


def test_a_small_model_learns_to_emit_label_sequences():
    """Per-frame Dense layers see the frame's position and which of two sequences to emit."""
    frames, classes = 8, 5
    wanted = {0: (1, 2, 2), 1: (3, 4)}
    groups = np.arange(16) % 2
    rng = np.random.default_rng(0)
    features = np.concatenate([np.broadcast_to(np.eye(frames), (16, frames, frames)),
                               np.broadcast_to(np.eye(2)[groups][:, None, :], (16, frames, 2))], axis=-1)
    features = (features + 0.1 * rng.standard_normal(features.shape)).astype(np.float32)
    targets = np.array([list(wanted[g]) + [0] * (3 - len(wanted[g])) for g in groups])
    target_lengths = np.array([len(wanted[g]) for g in groups])
    input_lengths = np.full(16, frames)

    lamina.manual_seed(0)
    model = nn.Sequential([nn.Dense(32, activation="relu"), nn.Dense(classes)])
    x = lamina.tensor(features)
    first = float(ctc_loss(F.log_softmax(model(x)), targets, input_lengths, target_lengths).numpy())
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        loss = ctc_loss(F.log_softmax(model(x)), targets, input_lengths, target_lengths)
        loss.backward()
        opt.step()
    with lamina.no_grad():
        log_probs = F.log_softmax(model(x))
        final = float(ctc_loss(log_probs, targets, input_lengths, target_lengths).numpy())
    assert first > 1.0
    assert final < 0.1, f"CTC loss only fell from {first:.3f} to {final:.3f}"
    assert greedy_decode(log_probs.numpy()) == [wanted[g] for g in groups]


# -- second derivatives ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_second_derivatives_through_log_softmax(reduction):
    """The recorded backward (the alpha recursion from primitive ops) against centred differences."""
    scores, targets, input_lengths, target_lengths = batch(seed=3)
    assert check_second_derivatives(
        lambda z: ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths, reduction=reduction), scores)


def test_second_derivatives_on_raw_log_probs_and_with_zero_infinity():
    targets, input_lengths, target_lengths = np.array([[1, 1], [2, 0]]), [4, 3], [2, 1]
    assert check_second_derivatives(lambda lp: ctc_loss(lp, targets, input_lengths, target_lengths),
                                    randn(2, 4, 3, seed=6))
    scores, targets, input_lengths, target_lengths = impossible_batch()
    assert check_second_derivatives(
        lambda z: ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths, reduction="sum",
                           zero_infinity=True), scores)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_made_with_create_graph_equals_the_fused_gradient(dtype):
    scores, targets, input_lengths, target_lengths = batch(seed=4)
    z = lamina.tensor(scores, requires_grad=True, dtype=dtype)
    (recorded,) = lamina.autograd.grad(ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths), z,
                                       create_graph=True)
    (fused,) = lamina.autograd.grad(ctc_loss(F.log_softmax(z), targets, input_lengths, target_lengths), z)
    assert recorded.requires_grad and recorded.dtype == dtype
    assert_close(recorded.numpy(), fused, 1e-5 if dtype == np.float32 else 1e-12, "gradient")
    assert "ConnectionistTemporalClassification" in lamina.autograd.differentiable_ops()
