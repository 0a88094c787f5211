"""BiLSTM-CRF: shapes, masks, and learning a tagging task whose labels depend on each other.

The task: sentences of filler words (O) and runs of name words; a run is a sequence of
two-word names, so its tags alternate B-PER, I-PER, B-PER, ... (an odd run ends with a one-word
name). A name word's tag depends on the parity of its place in the run, which a per-token
softmax must learn to count through the LSTM, while the CRF's transitions carry it from tag to
tag: after the same three epochs (about 0.4 s) the CRF's entity F1 is above 0.99 on every seed
tried (0-7), the softmax tagger's of the same size between 0.08 and 0.32 (it reaches 1.0 after
about ten epochs)."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import optim
from lamina.functional.loss import categorical_cross_entropy
from lamina.models import BiLSTMCRF
from lamina.text import bio_allowed_transitions, entity_scores

LABELS = ["O", "B-PER", "I-PER"]
FILLERS, NAMES = range(1, 11), range(11, 21)


def name_runs(count, steps, rng, longest=20):
    """Word ids, tags and a prefix mask (count, steps)."""
    ids = np.zeros((count, steps), dtype=np.int64)
    tags = np.zeros((count, steps), dtype=np.int64)
    lengths = rng.integers(steps // 2, steps + 1, count)
    for n, length in enumerate(lengths):
        t = 0
        while t < length:
            if rng.random() < 0.3:
                run = min(int(rng.integers(1, longest + 1)), length - t)
                ids[n, t:t + run] = rng.integers(NAMES.start, NAMES.stop, run)
                tags[n, t:t + run] = 1 + np.arange(run) % 2
                t += run
            ids[n, t:t + 1] = rng.integers(FILLERS.start, FILLERS.stop)   # a filler after each run
            t += 1
    mask = np.arange(steps)[None, :] < lengths[:, None]
    return ids, tags, mask


def train_and_score(seed, use_crf, epochs=3):
    """Entity F1 on held-out sentences after a few epochs of Adam."""
    rng = np.random.default_rng(seed)
    lamina.manual_seed(seed)
    train, test = name_runs(300, 32, rng), name_runs(200, 32, rng)
    model = BiLSTMCRF(21, len(LABELS), embed_dim=8, hidden=8, padding_idx=0)
    optimizer = optim.Adam(model.parameters(), lr=0.03)
    for _ in range(epochs):
        order = rng.permutation(len(train[0]))
        for first in range(0, len(order), 32):
            ids, tags, mask = (a[order[first:first + 32]] for a in train)
            optimizer.zero_grad()
            if use_crf:
                loss = model.loss(ids, tags, mask)
            else:
                loss = categorical_cross_entropy(model(ids, mask), np.where(mask, tags, -100), from_logits=True,
                                                 ignore_index=-100)
            loss.backward()
            optimizer.step()
    ids, tags, mask = test
    with lamina.no_grad():
        if use_crf:
            predicted = model.decode(ids, mask)
        else:
            scores = model(ids, mask).numpy().argmax(axis=-1)
            predicted = [row[:m.sum()] for row, m in zip(scores, mask)]
    truth = [row[:m.sum()] for row, m in zip(tags, mask)]
    return entity_scores(truth, predicted, labels=LABELS)["f1"]


def test_learns_dependent_tags_sooner_than_a_softmax_tagger():
    for seed in (0, 1):
        crf_f1, softmax_f1 = train_and_score(seed, True), train_and_score(seed, False)
        assert crf_f1 > 0.95, (seed, crf_f1)
        assert crf_f1 > softmax_f1 + 0.3, (seed, crf_f1, softmax_f1)


def test_shapes_masks_and_decoding():
    lamina.manual_seed(0)
    model = BiLSTMCRF(30, 5, embed_dim=6, hidden=4, num_layers=2, dropout=0.1, padding_idx=0,
                      allowed_transitions=bio_allowed_transitions(["O", "B-A", "I-A", "B-B", "I-B"]))
    names = {name for name, _ in model.named_parameters()}
    assert {"embedding.weight", "lstms.1.backward_layer.kernel", "emissions.weight", "crf.transitions"} <= names
    ids = np.array([[3, 4, 5, 0], [6, 7, 0, 0]])
    mask = ids != 0
    assert model(ids, mask).shape == (2, 4, 5)
    loss = model.loss(ids, np.zeros((2, 4), dtype=np.int64), mask)
    loss.backward()
    assert loss.shape == () and np.isfinite(loss.numpy())
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    paths = model.decode(ids, mask)
    assert [len(p) for p in paths] == [3, 2]
    # padding does not change a sequence's emissions
    alone = model(ids[1:, :2]).numpy()
    assert np.allclose(model(ids, mask).numpy()[1, :2], alone[0], atol=1e-6)
    assert len(model.decode(ids, mask, nbest=2)[0]) == 2


def test_mask_errors_name_the_model():
    model = BiLSTMCRF(10, 3, embed_dim=4, hidden=4)
    ids = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="BiLSTMCRF.*prefix"):
        model(ids, np.array([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="BiLSTMCRF.*prefix"):
        model(ids, np.array([[False, False, False], [True, True, True]]))
    with pytest.raises(lamina.errors.ShapeError, match="BiLSTMCRF.*mask"):
        model(ids, np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="BiLSTMCRF: num_tags"):
        BiLSTMCRF(10, 0)
