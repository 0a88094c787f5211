"""rnnt_loss: a brute-force sum over alignments, a torch re-implementation of the lattice
recursion (values and gradients through torch's autograd), float64 gradient checks, the
reductions, the blank's index, clamping and argument errors.

torchaudio is not a dependency: the reference below writes the recursion of its documented
semantics with torch ops, cell by cell.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, randn
from lamina.errors import ShapeError
from lamina.functional import rnnt_loss

REDUCTIONS = ["mean", "sum", "none"]


def torch_rnnt(logits, targets, logit_lengths, target_lengths, blank=-1, reduction="mean", fused=True):
    """alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + y(t, u-1)) with
    torch ops; loss = -(alpha(T-1, U) + blank(T-1, U))."""
    log_probs = torch.log_softmax(logits, dim=-1) if fused else logits
    blank = blank % logits.shape[-1]
    losses = []
    for b in range(logits.shape[0]):
        frames, labels = int(logit_lengths[b]), int(target_lengths[b])
        lp = log_probs[b]
        alpha = {}
        for t in range(frames):
            for u in range(labels + 1):
                terms = []
                if t:
                    terms.append(alpha[t - 1, u] + lp[t - 1, u, blank])
                if u:
                    terms.append(alpha[t, u - 1] + lp[t, u - 1, int(targets[b][u - 1])])
                alpha[t, u] = torch.zeros((), dtype=lp.dtype) if not terms else torch.logsumexp(torch.stack(terms), 0)
        losses.append(-(alpha[frames - 1, labels] + lp[frames - 1, labels, blank]))
    losses = torch.stack(losses)
    return {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]


def brute_force(log_probs, target, blank):
    """-log of the sum over every alignment: the U emissions placed among the T - 1 + U moves
    before the final blank."""
    frames, width, _ = log_probs.shape
    labels = width - 1
    total = 0.0
    for emits in itertools.combinations(range(frames - 1 + labels), labels):
        t = u = 0
        score = 0.0
        for move in range(frames - 1 + labels):
            if move in emits:
                score += log_probs[t, u, target[u]]
                u += 1
            else:
                score += log_probs[t, u, blank]
                t += 1
        total += np.exp(score + log_probs[t, u, blank])
    return -np.log(total)


def log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def random_batch(seed=0, n=4, frames=6, labels=3, classes=5, blank=-1):
    """Scores (n, frames, labels + 1, classes), targets free of the blank, variable lengths
    (including one empty target and one single frame)."""
    rng = np.random.default_rng(seed)
    blank = blank % classes
    choices = np.array([k for k in range(classes) if k != blank])
    targets = choices[rng.integers(0, len(choices), (n, labels))]
    logit_lengths = rng.integers(1, frames + 1, n)
    logit_lengths[0] = frames
    target_lengths = rng.integers(0, labels + 1, n)
    target_lengths[1 % n] = labels
    target_lengths[-1] = 0
    return randn(n, frames, labels + 1, classes, seed=seed, scale=1.5), targets, logit_lengths, target_lengths


def compare(scores, targets, logit_lengths, target_lengths, seed=0, **options):
    """Values and gradients (float64) against the torch recursion; returns lamina's loss."""
    fused = options.pop("fused_log_softmax", True)
    if not fused:
        scores = log_softmax(scores)
    ours_z = lamina.tensor(scores, requires_grad=True, dtype=np.float64)
    ours = rnnt_loss(ours_z, targets, logit_lengths, target_lengths, fused_log_softmax=fused, **options)
    theirs_z = torch.tensor(scores, requires_grad=True)
    theirs = torch_rnnt(theirs_z, targets, logit_lengths, target_lengths, fused=fused, **options)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "loss")
    upstream = np.random.default_rng(seed).standard_normal(ours.shape)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(ours_z.grad, theirs_z.grad.numpy(), 1e-9, "gradient")
    return ours


# -- exact values ---------------------------------------------------------------------------


@pytest.mark.parametrize("frames, labels", [(1, 0), (1, 2), (2, 1), (3, 2), (3, 3), (2, 3)])
@pytest.mark.parametrize("blank", [-1, 0])
def test_equals_the_sum_over_all_alignments(frames, labels, blank):
    classes = 4
    scores = randn(1, frames, labels + 1, classes, seed=frames * 7 + labels, scale=2)
    blank_index = blank % classes
    target = np.array([[k for k in range(classes) if k != blank_index][(u * 2) % (classes - 1)]
                       for u in range(labels)], dtype=np.int64).reshape(1, labels)
    loss = rnnt_loss(lamina.tensor(scores, dtype=np.float64), target, [frames], [labels], blank=blank)
    assert_close(loss.numpy(), brute_force(log_softmax(scores)[0], target[0], blank_index), 1e-12, "loss")


def test_shorter_samples_ignore_the_padding():
    """A sample's loss reads only its own T_n x (U_n + 1) corner of the lattice."""
    scores, targets, logit_lengths, target_lengths = random_batch(seed=1)
    losses = rnnt_loss(lamina.tensor(scores, dtype=np.float64), targets, logit_lengths, target_lengths,
                       reduction="none").numpy()
    for b in range(len(scores)):
        frames, labels = logit_lengths[b], target_lengths[b]
        alone = brute_force(log_softmax(scores[b, :frames, :labels + 1]), targets[b, :labels], scores.shape[-1] - 1)
        assert_close(losses[b], alone, 1e-12, f"sample {b}")


# -- against the torch recursion ------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_random_batches_match_the_torch_recursion(reduction, fused):
    for seed in range(2):
        compare(*random_batch(seed=seed), seed=seed, reduction=reduction, fused_log_softmax=fused)


@pytest.mark.parametrize("blank", [0, 2, -3])
def test_blank_index_other_than_last(blank):
    compare(*random_batch(seed=3, blank=blank), blank=blank, reduction="none")


def test_float32_matches_float64():
    scores, targets, logit_lengths, target_lengths = random_batch(seed=4)
    single = rnnt_loss(lamina.tensor(scores, dtype=np.float32), targets, logit_lengths, target_lengths,
                       reduction="none")
    double = rnnt_loss(lamina.tensor(scores, dtype=np.float64), targets, logit_lengths, target_lengths,
                       reduction="none")
    assert single.numpy().dtype == np.float32
    assert_close(single.numpy(), double.numpy(), 1e-5, "float32")


def test_clamp_clips_each_samples_gradient_before_the_reduction():
    scores, targets, logit_lengths, target_lengths = random_batch(seed=5)
    z = torch.tensor(scores, requires_grad=True)
    torch_rnnt(z, targets, logit_lengths, target_lengths, reduction="sum").backward()
    clamp = 0.25
    assert np.abs(z.grad.numpy()).max() > clamp                      # the clamp bites
    ours_z = lamina.tensor(scores, requires_grad=True, dtype=np.float64)
    rnnt_loss(ours_z, targets, logit_lengths, target_lengths, clamp=clamp).backward()
    expected = np.clip(z.grad.numpy(), -clamp, clamp) / len(scores)
    assert_close(ours_z.grad, expected, 1e-10, "clamped gradient")


# -- gradient checks ------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
def test_gradcheck(fused):
    scores, targets, logit_lengths, target_lengths = random_batch(seed=6, n=3, frames=3, labels=2, classes=4)
    if not fused:
        scores = log_softmax(scores)
    assert check_gradients(lambda z: rnnt_loss(z, targets, logit_lengths, target_lengths, reduction="sum",
                                               fused_log_softmax=fused), scores)


def test_second_derivatives():
    scores, targets, logit_lengths, target_lengths = random_batch(seed=7, n=2, frames=3, labels=2, classes=4)
    assert check_second_derivatives(lambda z: rnnt_loss(z, targets, logit_lengths, target_lengths), scores)


def test_clamped_gradient_refuses_second_derivatives():
    scores, targets, logit_lengths, target_lengths = random_batch(seed=8, n=2, frames=3, labels=2, classes=4)
    z = lamina.tensor(scores, requires_grad=True, dtype=np.float64)
    loss = rnnt_loss(z, targets, logit_lengths, target_lengths, clamp=1.0)
    with pytest.raises(RuntimeError, match="rnnt_loss: a clamped gradient"):
        lamina.autograd.grad(loss, [z], create_graph=True)


# -- argument errors ------------------------------------------------------------------------


def bad_call(**changes):
    scores, targets, logit_lengths, target_lengths = random_batch(seed=9, n=2, frames=4, labels=2, classes=4)
    arguments = {"logits": lamina.tensor(scores), "targets": targets, "logit_lengths": logit_lengths,
                 "target_lengths": target_lengths, **changes}
    return lambda: rnnt_loss(**arguments)


@pytest.mark.parametrize("changes, error, message", [
    ({"logit_lengths": np.array([5, 1])}, ValueError, r"logit_lengths must lie in \[1, 4\], got 5 for sample 0"),
    ({"logit_lengths": np.array([0, 1])}, ValueError, r"logit_lengths must lie in \[1, 4\], got 0"),
    ({"target_lengths": np.array([3, 0])}, ValueError, r"target_lengths must lie in \[0, 2\], got 3"),
    ({"logit_lengths": np.array([4])}, ShapeError, r"logit_lengths must have shape \(2,\)"),
    ({"targets": np.array([[0, 3], [1, 1]]), "target_lengths": np.array([2, 2])}, ValueError,
     r"differ from blank=3, got 3 at position 1 of sample 0"),
    ({"targets": np.array([[0, 1, 2], [1, 1, 1]])}, ShapeError, r"targets must have shape .* \(2, 2\)"),
    ({"logits": lamina.tensor(np.zeros((2, 4, 3)))}, ShapeError, r"logits must be floating \(batch, frames"),
    ({"blank": 4}, ValueError, r"blank must be an integer in \[-4, 4\), got 4"),
    ({"reduction": "avg"}, ValueError, r"rnnt_loss"),
    ({"targets": np.zeros((2, 2))}, ValueError, r"targets must hold integers"),
])
def test_errors_name_rnnt_loss(changes, error, message):
    with pytest.raises(error, match=r"rnnt_loss") as caught:
        bad_call(**changes)()
    assert caught.match(message)


def test_padded_label_values_are_ignored():
    scores, targets, logit_lengths, target_lengths = random_batch(seed=10)
    garbage = np.where(np.arange(targets.shape[1])[None, :] < target_lengths[:, None], targets, -7)
    z = lamina.tensor(scores, dtype=np.float64)
    assert_close(rnnt_loss(z, garbage, logit_lengths, target_lengths, reduction="none").numpy(),
                 rnnt_loss(z, targets, logit_lengths, target_lengths, reduction="none").numpy(), 0.0)
