"""DPR's dual encoder and ColBERT learn to retrieve on a synthetic corpus.

Each of 48 documents holds 4 words of its topic (4 topics of 8 words), one rare word of its
own and a punctuation token. Two kinds of queries: 'shared' queries take 3 of the document's
topic words plus a distractor word of another topic; 'rare' queries take the document's rare
word plus 2 random words of its topic, so that the rare word is their only evidence. After
a few hundred steps of in-batch-negatives training, recall@5 and MRR over held-out queries
must clearly beat the same model at its random initialization, and on the rare-word queries
ColBERT's token-level matching must do at least as well as the dual encoder's one vector.
"""

from __future__ import annotations

import numpy as np

import lamina
from lamina import backend, optim
from lamina.autograd import no_grad
from lamina.models import ColBERT, DPRDualEncoder

PAD, CLS, MASK, PUNCT = 0, 1, 2, 3
TOPICS, TOPIC_WORDS, DOCUMENTS = 4, 8, 48
FIRST_RARE = 4 + TOPICS * TOPIC_WORDS
BERT_CONFIG = {"vocab_size": FIRST_RARE + DOCUMENTS, "hidden_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16,
               "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
STEPS, BATCH = 300, 16
SEED = 0


def _corpus(rng):
    topic = np.arange(DOCUMENTS) % TOPICS
    words = 4 + topic[:, None] * TOPIC_WORDS + np.array(
        [rng.choice(TOPIC_WORDS, 4, replace=False) for _ in range(DOCUMENTS)])
    documents = np.zeros((DOCUMENTS, 8), dtype=np.int64)
    for d in range(DOCUMENTS):
        tokens = [*words[d], FIRST_RARE + d, PUNCT]
        rng.shuffle(tokens)
        documents[d, :7] = [CLS, *tokens]
    return topic, words, documents


def _queries(targets, kind, topic, words, rng):
    queries = np.zeros((len(targets), 5), dtype=np.int64)
    queries[:, 0] = CLS
    for row, d in enumerate(targets):
        if kind == "rare":
            tokens = [*(4 + topic[d] * TOPIC_WORDS + rng.choice(TOPIC_WORDS, 2, replace=False)), FIRST_RARE + d]
        else:
            other = (topic[d] + 1 + rng.integers(TOPICS - 1)) % TOPICS
            tokens = [*rng.choice(words[d], 3, replace=False), 4 + other * TOPIC_WORDS + rng.integers(TOPIC_WORDS)]
        rng.shuffle(tokens)
        queries[row, 1:1 + len(tokens)] = tokens
    return queries


def _recall_and_mrr(model, queries, documents, targets):
    with no_grad():
        scores = backend.to_numpy(model(queries, documents).data)
    rank = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1)
    return float(np.mean(rank < 5)), float(np.mean(1.0 / (rank + 1)))


def _train_and_evaluate(make_model):
    topic, words, documents = _corpus(np.random.default_rng(0))
    test_rng = np.random.default_rng(1)
    targets = np.tile(np.arange(DOCUMENTS), 2)
    tests = {kind: _queries(targets, kind, topic, words, test_rng) for kind in ("shared", "rare")}
    lamina.manual_seed(SEED)
    model = make_model()
    before = {kind: _recall_and_mrr(model, q, documents, targets) for kind, q in tests.items()}
    opt = optim.Adam(model, lr=0.006)
    rng = np.random.default_rng(2)
    for step in range(STEPS):
        batch = rng.choice(DOCUMENTS, BATCH, replace=False)
        queries = _queries(batch, "rare" if step % 2 else "shared", topic, words, rng)
        loss = model.loss(queries, documents[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = {kind: _recall_and_mrr(model, q, documents, targets) for kind, q in tests.items()}
    return before, after


def _mean(figures):
    return np.mean([figures[kind] for kind in ("shared", "rare")], axis=0)


def test_both_retrievers_learn_and_colbert_wins_on_rare_words():
    dpr_before, dpr_after = _train_and_evaluate(lambda: DPRDualEncoder(shared=True, **BERT_CONFIG))
    colbert_before, colbert_after = _train_and_evaluate(
        lambda: ColBERT(dim=16, query_maxlen=6, mask_token_id=MASK, skiplist=(PUNCT,), **BERT_CONFIG))
    figures = {"dpr": (dpr_before, dpr_after), "colbert": (colbert_before, colbert_after)}
    for name, (before, after) in figures.items():
        recall_gain, mrr_gain = _mean(after) - _mean(before)
        assert recall_gain > 0.15 and mrr_gain > 0.1, (name, figures)
    assert colbert_after["rare"][1] >= dpr_after["rare"][1] and colbert_after["rare"][0] >= 0.9, figures
