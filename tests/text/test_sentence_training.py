"""A bag-of-embeddings sentence encoder trained with MNRL learns synonyms that BM25 cannot match."""

import numpy as np

import lamina
from lamina.functional import multiple_negatives_ranking_loss
from lamina.optim import Adam
from lamina.text.embeddings import BM25, SentenceEncoder, SentencePooling
from lamina.train import retrieval_metrics

DIGITS = [("zero", "nil"), ("one", "single"), ("two", "pair"), ("three", "trio"), ("four", "quartet"),
          ("five", "quintet"), ("six", "half-dozen"), ("seven", "septet"), ("eight", "octet"), ("nine", "nonet")]
THINGS = [("cats", "kittens"), ("dogs", "puppies"), ("cars", "autos"), ("ships", "boats"), ("trees", "oaks"),
          ("hats", "caps"), ("books", "novels"), ("rocks", "stones"), ("birds", "sparrows"), ("cups", "mugs")]
FILLERS = ["there", "are", "we", "saw", "the", "many", "some", "here"]


def sentence(digit, thing, form, rng):
    words = [DIGITS[digit][form], THINGS[thing][form], *rng.choice(FILLERS, 3, replace=False)]
    rng.shuffle(words)
    return " ".join(words)


def paraphrase_pairs(combos, rng):
    return [(sentence(d, t, 0, rng), sentence(d, t, 1, rng)) for d, t in combos]


class BagOfEmbeddings:
    def __init__(self, vocab, width, seed):
        self.table = lamina.tensor(np.random.default_rng(seed).normal(0, 1, (vocab, width)), requires_grad=True)

    def __call__(self, ids, attention_mask=None):
        return self.table[np.asarray(ids)]

    def parameters(self, trainable_only=False):
        return [self.table]


def test_mnrl_training_beats_an_untrained_encoder_and_bm25_on_synonyms():
    rng = np.random.default_rng(0)
    words = sorted({w for pair in DIGITS + THINGS for w in pair} | set(FILLERS))
    index = {w: i + 1 for i, w in enumerate(words)}                    # 0 is padding
    tokenize = lambda text: [index[w] for w in text.split()]  # noqa: E731
    combos = [(d, t) for d in range(10) for t in range(10)]
    order = rng.permutation(len(combos))
    train = [combos[i] for i in order[:70]]
    held_out = paraphrase_pairs([combos[i] for i in order[70:]], rng)
    queries = {f"q{i}": a for i, (a, _) in enumerate(held_out)}
    corpus = {f"c{i}": b for i, (_, b) in enumerate(held_out)}
    relevant = {f"q{i}": {f"c{i}"} for i in range(len(held_out))}

    def recall_at_1(model):
        encoder = SentenceEncoder(model, SentencePooling("mean"), tokenizer=tokenize)
        return retrieval_metrics(encoder, queries, corpus, relevant, k_values=[1])["recall@1"]

    model = BagOfEmbeddings(len(index) + 1, 16, seed=1)
    untrained = recall_at_1(model)
    encoder = SentenceEncoder(model, SentencePooling("mean"), tokenizer=tokenize)
    optimizer = Adam(encoder.parameters(), lr=0.05)
    for _ in range(60):
        batch = paraphrase_pairs([train[i] for i in rng.choice(len(train), 16, replace=False)], rng)
        anchors = encoder(*encoder.tokenize([a for a, _ in batch]))
        positives = encoder(*encoder.tokenize([b for _, b in batch]))
        loss = multiple_negatives_ranking_loss(anchors, positives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = recall_at_1(model)

    bm25 = BM25([text.split() for text in corpus.values()])
    bm25_hits = [int(np.argmax(bm25.get_scores(q.split())) == i) for i, q in enumerate(queries.values())]
    bm25_recall = float(np.mean(bm25_hits))
    assert trained >= 0.8, (trained, untrained, bm25_recall)
    assert trained > untrained + 0.4 and trained > bm25_recall + 0.4, (trained, untrained, bm25_recall)
