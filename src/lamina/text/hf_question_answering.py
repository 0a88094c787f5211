"""Labels for extractive question answering: where an answer's characters lie among the tokens of
each window of a long context.

The question and context are encoded as a pair with ``truncation='only_second'``, ``stride`` and
``return_overflowing_tokens=True``: the question stays whole and the context is cut into
overlapping windows, one row each, ``overflow_to_sample_mapping`` naming each row's example.
:func:`answer_token_positions` then gives each row the first and last token of the answer: the
last context token starting at or before the answer's first character, and the first context
token ending at or after its end. A row whose context tokens do not cover the whole answer points
both at its first real token (the [CLS] token of BERT-style models), the "no answer here" label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.text.hf_batch import BatchEncoding
from lamina.text.hf_processors import Encoding

__all__ = ["answer_token_positions", "answer_token_range"]


def answer_token_positions(batch: BatchEncoding, answer_spans: Sequence[tuple[int, int]],
                           sequence_index: int = 1) -> tuple[list[int], list[int]]:
    """(start positions, end positions), one per row of ``batch``: the tokens (inclusive) holding
    the answer of the row's example, whose characters ``[start, end)`` of its context (the text
    of sequence ``sequence_index``: 1, the second of a pair) are ``answer_spans[example]``."""
    samples = batch.get("overflow_to_sample_mapping")
    n_rows = len(batch.encodings)
    if samples is None:
        samples = list(range(n_rows))
    elif not isinstance(samples, list):                     # an array or a tensor
        samples = np.asarray(samples.numpy() if hasattr(samples, "numpy") else samples).reshape(-1).tolist()
    starts, ends = [], []
    for row, sample in enumerate(samples):
        if not 0 <= sample < len(answer_spans):
            raise ValueError(f"answer_token_positions: row {row} comes from example {sample} but "
                             f"{len(answer_spans)} answer spans were given")
        start, end = answer_token_range(batch.encodings[row], *answer_spans[sample], sequence_index)
        starts.append(start)
        ends.append(end)
    return starts, ends


def answer_token_range(encoding: Encoding, start_char: int, end_char: int, sequence_index: int = 1) -> tuple[int, int]:
    """The first and last token of ``encoding`` covering characters ``[start_char, end_char)`` of
    sequence ``sequence_index``; both the first real token when its tokens do not cover them all."""
    if end_char < start_char:
        raise ValueError(f"answer_token_positions: the answer ends (character {end_char}) before it starts "
                         f"({start_char})")
    context = [k for k, s in enumerate(encoding.sequence_ids) if s == sequence_index]
    no_answer = encoding.attention_mask.index(1) if 1 in encoding.attention_mask else 0
    offsets = encoding.offsets
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return no_answer, no_answer
    first = max(k for k in context if offsets[k][0] <= start_char)
    last = min(k for k in context if k >= first and offsets[k][1] >= end_char)
    return first, last
