"""ALBERT learns a toy corpus in seconds: its sentence-order head tells consecutive segments from
swapped ones well above chance, and the masked-LM loss falls."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import models, optim

MASK, CLS, SEP, WORDS = 0, 1, 2, 12


def _batch(rng, n: int):
    """Counting documents: the words s, s + 1, ..., s + 5 split into two segments of three,
    which :func:`models.sop_pairs` keeps in order or swaps; packed [CLS] a [SEP] b [SEP]."""
    words = rng.integers(0, WORDS - 5, (n, 1)) + np.arange(6) + 3
    first, second, labels = models.sop_pairs(words[:, :3], words[:, 3:], rng)
    ids = np.array([[CLS, *a, SEP, *b, SEP] for a, b in zip(first, second)])
    segments = np.broadcast_to(np.array([0] * 5 + [1] * 4), ids.shape)
    return ids, segments, labels


def test_sentence_order_and_masked_lm_are_learned():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.AlbertForPreTraining(vocab_size=WORDS + 3, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=9,
                                        initializer_range=0.2)
    optimizer = optim.Adam(model, lr=0.005)
    mlm_losses = []
    for _ in range(250):
        ids, segments, labels = _batch(rng, 32)
        mask = models.ngram_mask(ids, 0.15, generator=rng, special=[CLS, SEP])
        out = models.albert_pretraining_loss(model, ids, mask, MASK, labels, segments)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        mlm_losses.append(float(out.mlm_loss.numpy()))
    test = np.random.default_rng(1)
    ids, segments, labels = _batch(test, 400)
    mask = models.ngram_mask(ids, 0.15, generator=test, special=[CLS, SEP])
    with lamina.no_grad():
        out = models.albert_pretraining_loss(model, ids, mask, MASK, labels, segments)
    accuracy = float((out.sop_logits.numpy().argmax(-1) == labels).mean())
    assert 0.4 < labels.mean() < 0.6 and accuracy > 0.9, accuracy                   # measured: 1.0
    early, late = np.mean(mlm_losses[:10]), float(out.mlm_loss.numpy())
    assert late < 0.6 * early, (early, late)                       # measured: 2.62 -> 0.76
