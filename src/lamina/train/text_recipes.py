"""Language-model data for ``lamina train-text``: a corpus split into
training, validation and test parts (the test part never used for training), its
vocabulary, and the input/target pairs of each part.

* ``names``: whole names, each framed by the '.' token that starts and ends it
  (``shifted_pairs``: the model learns where a name ends); the names are shuffled with
  ``seed`` and split 80/10/10.
* ``shakespeare``: one stream of characters cut into windows of ``seq_len`` inputs
  (``language_model_windows``); the first 90% of the text trains, the next 5% validates,
  the last 5% tests (contiguous parts: no window crosses into another part).

The tokens are characters (``tokenizer='char'``), or the subwords of a byte-pair encoding
learned from the training part (``tokenizer='bpe'``, ``vocab_size`` tokens; a name is then
framed by the special token ``<|endoftext|>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lamina.text import (
    BPETokenizer,
    Vocabulary,
    language_model_windows,
    load_names,
    load_tiny_shakespeare,
    shifted_pairs,
)

__all__ = ["CORPORA", "END_OF_TEXT", "IGNORE_INDEX", "TOKENIZERS", "PreparedText", "bigram_cost", "prepare_corpus"]

CORPORA = ("names", "shakespeare")
TOKENIZERS = ("char", "bpe")
IGNORE_INDEX = -100
END_OF_TEXT = "<|endoftext|>"

Pairs = tuple[np.ndarray, np.ndarray]


@dataclass
class PreparedText:
    vocab: Vocabulary | BPETokenizer
    train: Pairs
    val: Pairs
    test: Pairs
    info: dict


def prepare_corpus(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, seed: int = 0,
                   limit: int | None = None, seq_len: int = 64, tokenizer: str = "char",
                   vocab_size: int = 512) -> PreparedText:
    """The parts of corpus ``name`` as (ids, targets) pairs; ``limit`` keeps only that many
    training samples (names or windows). ``tokenizer``: 'char', or 'bpe' with ``vocab_size``
    tokens learned from the training part."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"prepare_corpus: tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if name == "names":
        names = load_names(data_dir, download)
        order = np.random.default_rng(seed).permutation(len(names))
        names = [names[i] for i in order]
        cut1, cut2 = int(0.8 * len(names)), int(0.9 * len(names))
        parts = names[:cut1][:limit], names[cut1:cut2], names[cut2:]
        if tokenizer == "bpe":
            vocab = BPETokenizer.train(parts[0], vocab_size, bos=END_OF_TEXT, eos=END_OF_TEXT)
        else:
            vocab = Vocabulary.from_texts(parts[0], bos=".", eos=".", unk="<unk>")

        def pairs(ns):
            return shifted_pairs([vocab.encode(n, add_bos=True, add_eos=True) for n in ns], pad=vocab.pad_id,
                                 ignore_index=IGNORE_INDEX)
    elif name == "shakespeare":
        text = load_tiny_shakespeare(data_dir, download)
        cut1, cut2 = int(0.9 * len(text)), int(0.95 * len(text))
        parts = text[:cut1], text[cut1:cut2], text[cut2:]
        if tokenizer == "bpe":
            vocab = BPETokenizer.train(parts[0], vocab_size, pad=None)
        else:
            vocab = Vocabulary.from_texts(parts[0], pad=None, unk="<unk>")

        def pairs(part):
            return language_model_windows(vocab.encode(part), seq_len)
    else:
        raise ValueError(f"unknown corpus {name!r}; expected one of {CORPORA}")
    train, val, test = (pairs(p) for p in parts)
    if name == "shakespeare" and limit is not None:
        train = train[0][:limit], train[1][:limit]
    info = {"corpus": name, "seed": seed, "limit": limit, "vocabulary": vocab.get_config(), "seq_len": seq_len}
    if tokenizer == "bpe":
        info.update(tokenizer=tokenizer, vocab_size=vocab_size)
    return PreparedText(vocab, train, val, test, info)


def bigram_cost(train: Pairs, test: Pairs, size: int) -> float:
    """The test cost (nats per token) of the add-one bigram model fitted on ``train``: the
    baseline of a model that sees only the previous token."""
    counts = np.ones((size, size))
    x, y = (np.asarray(a).reshape(-1) for a in train)
    kept = y >= 0
    np.add.at(counts, (x[kept], y[kept]), 1)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    x, y = (np.asarray(a).reshape(-1) for a in test)
    kept = y >= 0
    return float(-log_p[x[kept], y[kept]].mean())
