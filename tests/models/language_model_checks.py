"""Checks shared by the tests of the Hugging Face-layout language models."""

from __future__ import annotations

import numpy as np

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import functional as F
from lamina import optim
from lamina.text import Vocabulary, beam_search_ids, sample_text

SHORT_TEXT = "the cat sat on the mat. "


def assert_overfits_a_short_text(make_model, steps: int) -> None:
    """A model made by ``make_model(vocab_size)`` learns SHORT_TEXT's next characters with
    Adam in ``steps`` steps: cost below 0.05, every next character predicted, in under 20 s."""
    vocab = Vocabulary(sorted(set(SHORT_TEXT)), pad=None, unk=None)
    ids = np.asarray([vocab.encode(SHORT_TEXT)])
    lamina.manual_seed(0)
    model = make_model(len(vocab))
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(steps):
        loss = F.categorical_cross_entropy(model(ids[:, :-1]), ids[:, 1:], from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.numpy()) < 0.05
    assert (model(ids[:, :-1]).numpy().argmax(-1) == ids[:, 1:]).all()


def assert_cached_generation_equals_rerun(make_model) -> list:
    """A model made by ``make_model(vocab_size)`` (after seed 0) reads the prompt once and then
    one new token per call when sampling, samples the same text as rerunning the whole sequence
    each step, and its beam search finds the same hypotheses and scores as the rerun one.
    Returns the cached beam search's hypotheses."""
    vocab = Vocabulary("abcdefghij", pad=None, unk=None, bos=".", eos=None)
    lamina.manual_seed(0)
    model = make_model(len(vocab))
    model.build((None, 1))
    lengths = watch_call_lengths(model)
    cached = sample_text(model, vocab, "abc", max_length=10, seed=3, temperature=2.0)
    assert lengths == [4] + [1] * 9          # the prompt once, then one new token per call
    rerun = sample_text(model, vocab, "abc", max_length=10, seed=3, temperature=2.0, stream=False)
    assert cached == rerun and len(cached) > 8
    prompt = list(vocab.encode("ab", add_bos=True))
    fast = beam_search_ids(model, prompt, vocab.eos_id, beam_width=3, max_length=6, num_return=3)
    slow = beam_search_ids(model, prompt, vocab.eos_id, beam_width=3, max_length=6, num_return=3, rerun=True)
    assert [h.ids for h in fast] == [h.ids for h in slow]
    assert_close([h.log_prob for h in fast], [h.log_prob for h in slow], 1e-9, "beam scores")
    return fast
