"""Gradient-cached MNRL gives the whole batch's gradients while embedding a few rows at a time."""

import numpy as np
import pytest

import lamina
from lamina.functional import multiple_negatives_ranking_loss
from lamina.models import BERT
from lamina.text.embeddings import SentenceEncoder, SentencePooling
from lamina.train import cached_mnrl_backward

RNG = np.random.default_rng(0)
ANCHORS = [list(RNG.integers(1, 30, RNG.integers(2, 6))) for _ in range(7)]
POSITIVES = [list(RNG.integers(1, 30, RNG.integers(2, 6))) for _ in range(7)]
NEGATIVES = [list(RNG.integers(1, 30, RNG.integers(2, 6))) for _ in range(7)]


def full_batch_gradients(encoder, columns, scale):
    embeddings = [encoder(*encoder.tokenize(items)) for items in columns]
    loss = multiple_negatives_ranking_loss(embeddings[0], embeddings[1], embeddings[2:] or None, scale=scale)
    loss.backward()
    return loss.item(), [p.grad.copy() for p in encoder.parameters()]


@pytest.mark.parametrize("mini_batch_size, with_negatives", [(1, False), (3, True), (16, True)])
def test_cached_mnrl_equals_the_full_batch(mini_batch_size, with_negatives):
    lamina.manual_seed(0)
    bert = BERT(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                max_position_embeddings=8, add_pooling_layer=False)
    bert.eval()
    encoder = SentenceEncoder(bert, SentencePooling("mean"))
    columns = [ANCHORS, POSITIVES] + ([NEGATIVES] if with_negatives else [])
    expected_loss, expected = full_batch_gradients(encoder, columns, scale=5.0)
    for p in encoder.parameters():
        p.grad = None
    loss = cached_mnrl_backward(encoder, ANCHORS, POSITIVES, mini_batch_size=mini_batch_size, scale=5.0,
                                negatives=columns[2:])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for p, g in zip(encoder.parameters(), expected):
        np.testing.assert_allclose(p.grad, g, rtol=1e-3, atol=1e-6)


def test_mismatched_batch_sizes_are_an_error():
    encoder = SentenceEncoder(lambda ids, attention_mask: None)
    with pytest.raises(ValueError, match="7 anchors but 6 positives"):
        cached_mnrl_backward(encoder, ANCHORS, POSITIVES[:6])
