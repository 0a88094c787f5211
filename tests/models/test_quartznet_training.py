"""QuartzNet learns to transcribe synthetic speech with CTC: each character is a distinct tone
pattern over mel-like bins, held for a random number of frames, with random pauses and noise;
greedy CTC decoding of held-out utterances must reach a low character error rate.
"""

from __future__ import annotations

import numpy as np

import lamina
from lamina import optim
from lamina.models import QuartzNet, greedy_transcribe, quartznet_ctc_loss, word_error_rate
from lamina.vision import character_error_rate

ALPHABET = "abcdef"
BINS = 16
NOISE = 0.3


def tone_patterns(rng) -> np.ndarray:
    """One pattern per character: a main peak on an even bin (at least 2 bins from the others) and a
    weaker second peak 5 bins higher."""
    bins = np.arange(BINS)
    centres = 2 * rng.permutation(BINS // 2)[:len(ALPHABET)]
    return np.stack([np.exp(-0.5 * (bins - c) ** 2) + 0.5 * np.exp(-0.5 * (bins - (c + 5) % BINS) ** 2)
                     for c in centres])


def utterance(rng, patterns) -> tuple[np.ndarray, str]:
    """2-4 characters, no two equal in a row, each 3-6 frames long; pauses of 0-2 frames; noise."""
    ids = []
    while len(ids) < rng.integers(2, 5):
        c = int(rng.integers(len(ALPHABET)))
        if not ids or ids[-1] != c:
            ids.append(c)
    pieces = [np.zeros((int(rng.integers(1, 3)), BINS))]
    for c in ids:
        pieces.append(np.repeat(patterns[c][None], int(rng.integers(3, 7)), axis=0))
        pieces.append(np.zeros((int(rng.integers(0, 2)), BINS)))
    features = np.concatenate(pieces)
    return features + NOISE * rng.standard_normal(features.shape), "".join(ALPHABET[c] for c in ids)


def batch(rng, patterns, size):
    """Features padded with zeros to the longest utterance, frame lengths, padded targets (ids from 1)."""
    utterances = [utterance(rng, patterns) for _ in range(size)]
    frames = np.array([len(x) for x, _ in utterances])
    features = np.zeros((size, frames.max(), BINS), np.float32)
    texts = [text for _, text in utterances]
    targets = np.zeros((size, max(map(len, texts))), np.int64)
    for i, (x, text) in enumerate(utterances):
        features[i, :len(x)] = x
        targets[i, :len(text)] = [ALPHABET.index(ch) + 1 for ch in text]
    return features, frames, targets, np.array([len(t) for t in texts]), texts


def test_quartznet_learns_to_transcribe_synthetic_speech():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    patterns = tone_patterns(rng)
    model = QuartzNet(BINS, len(ALPHABET) + 1, prologue=(24, 5, 2), blocks=((24, 5), (24, 7)), repeat=2,
                      epilogue=((32, 7, 2), (32, 1, 1)))
    model.build((None, None, BINS))
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    held_out = batch(np.random.default_rng(1), patterns, 48)
    model.eval()
    before = character_error_rate(greedy_transcribe(model, held_out[0], ALPHABET, held_out[1]), held_out[4])
    model.train()
    for _ in range(250):
        features, lengths, targets, target_lengths, _ = batch(rng, patterns, 16)
        loss = quartznet_ctc_loss(model, features, lengths, targets, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    predictions = greedy_transcribe(model, held_out[0], ALPHABET, held_out[1])
    cer = character_error_rate(predictions, held_out[4])
    assert before > 0.7 and cer < 0.08, (before, cer)
    assert word_error_rate(predictions, held_out[4]) < 0.25        # each utterance is one word here
