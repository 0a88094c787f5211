"""Word labels carried over to tokens, for token classification (named entities, parts of speech).

A dataset labels words; a tokenizer cuts a word into one or more tokens and adds special ones.
With the word index of each token (``BatchEncoding.word_ids``), token k of a text gets

* ``ignore_index`` (-100, what cross-entropy losses skip) when it belongs to no word of the first
  text (a special token, padding, a token of the pair);
* ``labels[word_ids[k]]`` when it is the first token of its word;
* for the word's later tokens: the same label when ``label_all_tokens``, else ``ignore_index``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.text.hf_batch import BatchEncoding

__all__ = ["align_labels_with_tokens", "align_word_labels"]

IGNORE_INDEX = -100


def align_word_labels(word_ids: Sequence[int | None], labels: Sequence[int], label_all_tokens: bool = False,
                      ignore_index: int = IGNORE_INDEX, sequence_ids: Sequence[int | None] | None = None) -> list[int]:
    """The label of each token of one text (rules in the module docstring); ``sequence_ids``, if
    given, limits the labels to the tokens of sequence 0."""
    out, previous = [], None
    for k, word in enumerate(word_ids):
        in_text = word is not None and (sequence_ids is None or sequence_ids[k] == 0)
        if not in_text:
            out.append(ignore_index)
            previous = None
            continue
        if not 0 <= word < len(labels):
            raise ValueError(f"align_word_labels: token {k} belongs to word {word} but only {len(labels)} word "
                             "labels were given")
        out.append(int(labels[word]) if word != previous or label_all_tokens else ignore_index)
        previous = word
    return out


def align_labels_with_tokens(batch: BatchEncoding, labels: Sequence[Sequence[int]] | Sequence[int],
                             label_all_tokens: bool = False, ignore_index: int = IGNORE_INDEX):
    """:func:`align_word_labels` for every row of ``batch`` (the result of calling a tokenizer):
    ``labels`` holds the word labels of each text (of the one text when it was not a batch). The
    result has the form of ``batch['input_ids']``: a list, a list of rows or an int64 array."""
    rows = labels if batch.is_batched else [labels]
    if len(rows) != len(batch.encodings):
        raise ValueError(f"align_labels_with_tokens: {len(batch.encodings)} encoded texts but {len(rows)} label rows")
    aligned = [align_word_labels(e.word_ids, row, label_all_tokens, ignore_index, e.sequence_ids)
               for e, row in zip(batch.encodings, rows)]
    if not isinstance(batch["input_ids"], list):
        return np.asarray(aligned, dtype=np.int64)
    return aligned if batch.is_batched else aligned[0]
