"""MaskGIT (Chang et al. 2022): the cosine mask schedule and its per-step counts, the
masked-token loss (blind to unmasked positions, equal to a torch rewrite), iterative parallel
decoding (kept tokens never change, the masked counts follow the schedule) and learning a
small set of token patterns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, randn
from lamina import parallel
from lamina.errors import ShapeError
from lamina.models import MaskGIT, cosine_mask_schedule, mask_schedule_counts, masked_token_loss
from lamina.train import train_maskgit


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


def test_mask_schedule_counts_follow_the_cosine_formula():
    np.testing.assert_allclose(cosine_mask_schedule([0, 0.5, 1]), [1, math.sqrt(0.5), math.cos(math.pi / 2)])
    for length, steps in ((16, 8), (64, 12), (256, 8), (10, 1), (5, 10)):
        counts = mask_schedule_counts(length, steps)
        assert counts.shape == (steps,) and counts[-1] == 0
        remaining = length
        for t, count in enumerate(counts[:-1], start=1):
            formula = math.floor(length * math.cos(math.pi / 2 * t / steps))
            expected = min(remaining, max(1, min(remaining - 1, formula)))
            assert count == expected
            remaining = count
    # with room to spare the clamps do nothing: floor(M_0 cos(pi t / 2T)) exactly
    t = np.arange(1, 8)
    np.testing.assert_array_equal(mask_schedule_counts(256, 8)[:-1], np.floor(256 * np.cos(np.pi / 2 * t / 8)))
    assert mask_schedule_counts(0, 4).tolist() == [0, 0, 0, 0]


def torch_masked_loss(logits, tokens, mask):
    picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(tokens)[..., None])[..., 0]
    keep = torch.tensor(mask)
    return -(picked * keep).sum() / keep.sum()


def test_masked_token_loss_ignores_unmasked_positions_and_equals_torch():
    rng = np.random.default_rng(0)
    logits, tokens = randn(3, 5, 7), rng.integers(0, 7, (3, 5))
    mask = rng.random((3, 5)) < 0.5
    mask[0, 0] = True
    compare_with_torch(lambda z: masked_token_loss(z, tokens, mask),
                       lambda z: torch_masked_loss(z, tokens, mask), logits, dtype=np.float64)
    changed = logits + 10 * randn(3, 5, 7, seed=4) * ~mask[..., None]
    z = lamina.tensor(changed, dtype=np.float64, requires_grad=True)
    loss = masked_token_loss(z, tokens, mask)
    assert loss.item() == pytest.approx(masked_token_loss(lamina.tensor(logits, dtype=np.float64), tokens,
                                                          mask).item(), rel=1e-12)
    loss.backward()
    assert np.all(z.grad[~mask] == 0) and np.any(z.grad[mask] != 0)


def small_model(**kwargs) -> MaskGIT:
    model = MaskGIT(vocab_size=5, seq_len=6, d_model=16, num_heads=2, num_layers=1, **kwargs)
    model(np.zeros((1, 6), dtype=np.int64))
    return model


def test_model_loss_masks_inputs_and_scores_masked_positions():
    model = small_model()
    tokens = np.random.default_rng(1).integers(0, 5, (4, 6))
    mask = np.random.default_rng(2).random((4, 6)) < 0.5
    mask[:, 0] = True
    loss = model.loss(tokens, mask=mask)
    logits = model(np.where(mask, model.mask_id, tokens))
    expected = torch_masked_loss(torch.tensor(logits.numpy(), dtype=torch.float64), tokens, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the random masks: ceil(cos(pi u / 2) L) positions per row, at least one
    drawn = model.random_mask(500, generator=3)
    u = np.random.default_rng(3).random(500)
    np.testing.assert_array_equal(drawn.sum(axis=1), np.clip(np.ceil(np.cos(np.pi / 2 * u) * 6), 1, 6))


def test_decoding_keeps_tokens_and_follows_the_schedule():
    model = small_model()
    tokens, history = model.generate(5, steps=4, generator=0, return_history=True)
    assert history.shape == (5, 5, 6) and np.array_equal(history[-1], tokens)
    assert np.all(history[0] == model.mask_id) and np.all(tokens != model.mask_id)
    masked = (history == model.mask_id).sum(axis=2)
    np.testing.assert_array_equal(masked[1:], np.repeat(mask_schedule_counts(6, 4)[:, None], 5, axis=1))
    for before, after in zip(history[:-1], history[1:]):
        kept = before != model.mask_id
        np.testing.assert_array_equal(after[kept], before[kept])       # never changed once kept
    start = np.full((3, 6), model.mask_id)
    start[:, [1, 4]] = [[0, 1], [2, 3], [4, 4]]
    filled = model.generate(start=start, steps=3, temperature=0.0, generator=1)
    np.testing.assert_array_equal(filled[:, [1, 4]], start[:, [1, 4]])
    assert np.all(filled < 5)


def test_maskgit_learns_token_patterns():
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 4, (4, 8))
    data = patterns[rng.integers(0, 4, 512)]
    model = MaskGIT(vocab_size=4, seq_len=8, d_model=32, num_heads=2, num_layers=2)
    history = train_maskgit(model, data, epochs=40, batch_size=64, lr=3e-3, seed=0)
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    samples = model.generate(200, steps=4, generator=1)
    matches = (samples[:, None, :] == patterns[None]).all(-1).any(1).mean()
    chance = 4 / 4 ** 8
    assert matches > 0.4 and matches > 1000 * chance, matches


def test_errors_are_clear():
    model = small_model()
    with pytest.raises(ShapeError, match=r"tokens must be integer ids \(N, 6\)"):
        model(np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"in \[0, 4\]"):
        model.loss(np.full((2, 6), 5))
    with pytest.raises(ValueError, match="give the number of samples n or the start tokens"):
        model.generate()
    with pytest.raises(ValueError, match="choice_temperature must be a number >= 0"):
        model.generate(2, choice_temperature=-1.0)
    with pytest.raises(ValueError, match="selects no position"):
        masked_token_loss(randn(1, 6, 5), np.zeros((1, 6), dtype=np.int64), np.zeros((1, 6), dtype=bool))
    with pytest.raises(ValueError, match="tokens must be integer ids"):
        train_maskgit(model, np.zeros((4, 6)))
