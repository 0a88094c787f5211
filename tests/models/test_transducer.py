"""ConformerTransducer: the joiner's lattice, the predictor's causality, batched greedy decoding
against a one-utterance reference, and a tiny transducer learning to collapse repeated symbols."""

from __future__ import annotations

import time

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import optim
from lamina.errors import ShapeError
from lamina.functional import rnnt_loss
from lamina.models import ConformerTransducer

LABELS = 4          # symbols 0..3; the blank is symbol 4, the last


def small_model(seed=0, **options):
    lamina.backend.manual_seed(seed)
    settings = {"encoder_dim": 16, "num_heads": 2, "ffn_dim": 24, "num_layers": 1, "depthwise_conv_kernel_size": 3,
                "prediction_dim": 16, "joiner_dim": 16, **options}
    return ConformerTransducer(LABELS + 2, LABELS + 1, **settings)


def collapse_batch(rng, n: int, max_symbols: int = 4):
    """Runs of 1 to 3 frames of a symbol (one-hot plus noise, two more noise channels), each
    run's symbol differing from the previous one; the target is the symbols, one per run."""
    counts = rng.integers(2, max_symbols + 1, n)
    targets = np.zeros((n, max_symbols), dtype=np.int64)
    runs = []
    for i, count in enumerate(counts):
        symbols = [int(rng.integers(LABELS))]
        while len(symbols) < count:
            symbols.append(int((symbols[-1] + rng.integers(1, LABELS)) % LABELS))
        targets[i, :count] = symbols
        runs.append([s for s in symbols for _ in range(int(rng.integers(1, 4)))])
    lengths = np.array([len(r) for r in runs])
    features = rng.normal(0, 0.3, (n, lengths.max(), LABELS + 2)).astype(np.float32)
    for i, frames in enumerate(runs):
        features[i, np.arange(len(frames)), frames] += 1.0
        features[i, len(frames):] = 0.0
    return features, lengths, targets, counts


def test_logits_form_the_lattice_and_the_loss_reads_them():
    model = small_model()
    features, lengths, targets, counts = collapse_batch(np.random.default_rng(0), 3)
    logits = model(features, lengths, targets)
    assert logits.shape == (3, features.shape[1], targets.shape[1] + 1, LABELS + 1)
    assert_close(model.loss(features, lengths, targets, counts, reduction="none").numpy(),
                 rnnt_loss(logits, targets, lengths, counts, reduction="none").numpy(), 0.0)


def test_the_predictor_reads_only_the_labels_before():
    model = small_model()
    targets = np.array([[0, 1, 2, 3]])
    changed = np.array([[0, 1, 3, 0]])
    first, second = model.predict(targets).numpy(), model.predict(changed).numpy()
    assert_close(second[:, :3], first[:, :3], 0.0, "outputs 0..2 read labels 0..1")
    assert np.abs(second[:, 3:] - first[:, 3:]).max() > 1e-4


def reference_greedy(model, encoded, length, limit=3):
    """One utterance's transcriber outputs (frames, J), the predictor re-run on the whole
    prefix at every step."""
    labels: list[int] = []
    for t in range(length):
        for _ in range(limit):
            g = model.predict(np.array([labels], dtype=np.int64).reshape(1, -1)).numpy()[0, -1]
            best = int(model.join(lamina.tensor(encoded[t][None]), lamina.tensor(g[None])).numpy()[0].argmax())
            if best == model.blank:
                break
            labels.append(best)
    return labels


def test_batched_greedy_decoding_equals_one_utterance_at_a_time():
    model = small_model(seed=1)
    model.eval()
    features, lengths, targets, _ = collapse_batch(np.random.default_rng(1), 4)
    model(features, lengths, targets)                                # builds
    # larger biases toward the labels, so that several frames emit more than one symbol
    model.joiner_output.bias.data[:LABELS] += 1.5
    decoded = model.greedy_decode(features, lengths)
    assert sum(len(d) for d in decoded) > sum(lengths)               # some frames emit several labels
    # the batch's own encoding: the convolution module sees the padded frames, as torchaudio's
    encoded = model.encode(features, lengths).numpy()
    for i in range(len(features)):
        assert decoded[i] == reference_greedy(model, encoded[i], lengths[i]), f"utterance {i}"


def test_a_tiny_transducer_learns_to_collapse_repeated_symbols():
    rng = np.random.default_rng(0)
    model = small_model(seed=2, encoder_dim=32, num_heads=4, ffn_dim=64, prediction_dim=32, joiner_dim=32)
    test_features, test_lengths, test_targets, test_counts = collapse_batch(np.random.default_rng(99), 64)
    model(test_features, test_lengths, test_targets)                 # builds
    model.eval()
    before = float(model.loss(test_features, test_lengths, test_targets, test_counts).numpy())
    model.train()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(120):
        features, lengths, targets, counts = collapse_batch(rng, 32)
        optimizer.zero_grad()
        model.loss(features, lengths, targets, counts).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    after = float(model.loss(test_features, test_lengths, test_targets, test_counts).numpy())
    decoded = model.greedy_decode(test_features, test_lengths)
    truth = [list(row[:n]) for row, n in zip(test_targets, test_counts)]
    errors = sum(_edit_distance(d, t) for d, t in zip(decoded, truth)) / sum(len(t) for t in truth)
    exact = np.mean([d == t for d, t in zip(decoded, truth)])
    print(f"collapse task: RNN-T loss {before:.2f} -> {after:.3f}, label error rate {errors:.3f}, "
          f"sequence accuracy {exact:.2f}, {seconds:.1f} s of training")
    assert after < before / 10
    assert errors < 0.15


def _edit_distance(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def test_errors():
    with pytest.raises(ValueError, match="ConformerTransducer: blank must lie in"):
        ConformerTransducer(4, 5, blank=5)
    with pytest.raises(ValueError, match="ConformerTransducer: joiner_activation"):
        ConformerTransducer(4, 5, joiner_activation="gelu")
    model = small_model()
    with pytest.raises(ShapeError, match=r"ConformerTransducer: features must be \(batch, frames, 6\)"):
        model.encode(np.zeros((2, 5, 3), dtype=np.float32), np.array([5, 5]))
    with pytest.raises(ShapeError, match="ConformerTransducer: targets must be"):
        model.predict(np.zeros(3, dtype=np.int64))
    features, lengths, targets, counts = collapse_batch(np.random.default_rng(3), 2)
    with pytest.raises(ValueError, match="rnnt_loss: target labels .* differ from blank=4"):
        model.loss(features, lengths, np.full_like(targets, LABELS), counts)
