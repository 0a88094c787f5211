"""Multi-token prediction learns a language of fixed phrases: its future heads guess well and
self-speculative decoding keeps several tokens per pass, at little cost to the next token."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import models, optim
from lamina.autograd import no_grad

VOCAB, WORDS, LENGTH = 24, 6, 24


def _language(seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Six "words" of 3-4 fixed tokens (no token in two words) and each word's usual successor."""
    rng = np.random.default_rng(seed)
    tokens = [int(t) for t in rng.permutation(VOCAB)]
    ends = np.cumsum(rng.integers(3, 5, WORDS))
    words = [tokens[end - size:end] for end, size in zip(ends, np.diff(ends, prepend=0))]
    return words, rng.permutation(WORDS)


def _text(rng, words, successor, rows: int, follow: float = 0.8) -> np.ndarray:
    """Rows of LENGTH tokens: words in a row, the next one the usual successor with probability
    ``follow``, else any word."""
    out = []
    for _ in range(rows):
        row, w = [], int(rng.integers(0, WORDS))
        while len(row) < LENGTH:
            row += words[w]
            w = int(successor[w]) if rng.random() < follow else int(rng.integers(0, WORDS))
        out.append(row[:LENGTH])
    return np.array(out)


def _trained(n_future: int, seed: int, steps: int = 150):
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, embd_pdrop=0.0,
                        resid_pdrop=0.0, attn_pdrop=0.0)
    heads = models.MultiTokenHeads(model, n_future, dim_feedforward=64)
    heads.build((None, 1))
    words, successor = _language(seed)
    rng = np.random.default_rng(seed + 100)
    opt = optim.Adam(heads, lr=0.01)
    for _ in range(steps):
        loss = heads.loss(_text(rng, words, successor, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _text(np.random.default_rng(seed + 999), words, successor, 64)
    with no_grad():
        guesses = heads(test).numpy().argmax(-1)
    accuracy = [float(np.mean(guesses[:, :LENGTH - i, i - 1] == test[:, i:])) for i in range(1, n_future + 1)]
    return model, heads, test, accuracy


def test_four_heads_guess_ahead_and_decode_several_tokens_per_pass():
    model, heads, test, accuracy = _trained(4, 0)
    _, _, _, baseline = _trained(1, 0)
    # measured after 200 steps (seeds 0-3; Haswell and SkylakeX kernels): next-token 0.955-0.959, equal
    # to n=1's; heads 2-4: 0.91-0.92, 0.85-0.88, 0.81-0.83; chance 1/24. After 150 steps (seed 0, both
    # kernels) the same: 0.957 (n=1: 0.957), 0.909, 0.857, 0.822
    assert accuracy[0] > baseline[0] - 0.03, (accuracy, baseline)
    assert min(accuracy[1:]) > 0.7, accuracy
    outputs = [models.self_speculative_generate(model, heads, test[j, :5], 30) for j in range(4)]
    for j, out in enumerate(outputs):
        np.testing.assert_array_equal(out.tokens, model.generate(test[j:j + 1, :5], max_new_tokens=30,
                                                                 do_sample=False)[0, 5:])
    # measured: 3.33 tokens per pass for every seed (1 without guesses), after 200 steps and after 150
    assert np.mean([out.mean_accepted_length for out in outputs]) > 2.5


def test_mtp_modules_guess_ahead_and_decode_several_tokens_per_pass():
    """DeepSeek-V3's sequential modules (depth 3, lambda 1) on the same language."""
    lamina.manual_seed(0)
    model = models.GPT2(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, embd_pdrop=0.0,
                        resid_pdrop=0.0, attn_pdrop=0.0)
    mtp = models.MTPModules(model, depth=3, loss_weight=1.0, dim_feedforward=64)
    mtp.build((None, 1))
    words, successor = _language(0)
    rng = np.random.default_rng(100)
    opt = optim.Adam(mtp, lr=0.01)
    for _ in range(150):
        loss = mtp.loss(_text(rng, words, successor, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _text(np.random.default_rng(999), words, successor, 64)
    with no_grad():
        scores = mtp(test)
    accuracy = [float(np.mean(s.numpy().argmax(-1)[:, :LENGTH - k - 1] == test[:, k + 1:]))
                for k, s in enumerate(scores)]
    # measured after 200 steps (seeds 0-2; Haswell and SkylakeX kernels): 0.95-0.96 at every depth (the
    # modules read the true tokens up to t + k); after 150 (seed 0, both kernels): 0.95-0.96; chance 1/24
    assert min(accuracy) > 0.85, accuracy
    outputs = [models.self_speculative_generate(model, mtp, test[j, :5], 30) for j in range(4)]
    for j, out in enumerate(outputs):
        np.testing.assert_array_equal(out.tokens, model.generate(test[j:j + 1, :5], max_new_tokens=30,
                                                                 do_sample=False)[0, 5:])
    # measured after 200 steps: 2.44 (seed 0), 3.33 (seeds 1, 2) tokens per pass; after 150: 2.44 (seed 0)
    assert np.mean([out.mean_accepted_length for out in outputs]) > 2.0
