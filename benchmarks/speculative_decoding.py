"""Speculative (assisted) greedy decoding against plain greedy decoding of the same model.

Two GPT-2s (``lamina.models.GPT2``) learn the same short text, character by character, with
Adam: a big one (BIG, the model decoded) and a small one (SMALL, the assistant). The
assistant drafts DRAFT tokens per round, the big model checks them in one call; the output
is the big model's greedy decoding either way (checked). Printed: the share of drafted
tokens the big model kept, the tokens gained per big-model call, and the time of plain
greedy decoding over the assisted one (median of paired rounds, see ``pairing``; > 1: the
assistant speeds decoding up), for NEW_TOKENS new tokens after a prompt from the text, in
float32.

Usage: python benchmarks/speculative_decoding.py [--steps N] [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from pairing import paired_ratios

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.text import Vocabulary, generate_ids

TEXT = ("the quick brown fox jumps over the lazy dog. a small cat sat on the warm mat and watched the fox. "
        "the dog slept, the cat purred, and the fox ran over the hill to the river. ") * 2
BIG = {"n_embd": 96, "n_layer": 4, "n_head": 4}
SMALL = {"n_embd": 16, "n_layer": 1, "n_head": 2}
WINDOW, BATCH, PROMPT, NEW_TOKENS, DRAFT = 32, 8, 16, 100, 4


def _train(vocab: Vocabulary, ids: np.ndarray, sizes: dict, steps: int, seed: int) -> models.GPT2:
    lamina.manual_seed(seed)
    model = models.GPT2(vocab_size=len(vocab), n_positions=256, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0,
                        **sizes)
    optimizer = optim.Adam(model, lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - WINDOW - 1, size=BATCH)
        batch = np.stack([ids[s:s + WINDOW + 1] for s in starts])
        loss = F.categorical_cross_entropy(model(batch[:, :-1]), batch[:, 1:], from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"  {sizes}: final training cost {float(loss.numpy()):.3f}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="Adam steps per model")
    parser.add_argument("--repeats", type=int, default=5, help="paired timing rounds")
    args = parser.parse_args()
    vocab = Vocabulary(sorted(set(TEXT)), pad=None, unk=None)
    ids = np.asarray(vocab.encode(TEXT), dtype=np.int64)
    print(f"training on {len(ids)} characters ({len(vocab)} symbols), {args.steps} steps each:")
    big = _train(vocab, ids, BIG, args.steps, seed=0)
    small = _train(vocab, ids, SMALL, args.steps, seed=1)
    prompt = ids[None, :PROMPT]

    def plain():
        return generate_ids(big, prompt, max_new_tokens=NEW_TOKENS)

    def assisted():
        return generate_ids(big, prompt, max_new_tokens=NEW_TOKENS, assistant_model=small,
                            num_assistant_tokens=DRAFT, return_dict_in_generate=True)

    out = assisted()
    if not np.array_equal(out.sequences, plain()):
        raise SystemExit("assisted decoding differs from plain greedy decoding")
    rounds = -(-out.draft_tokens // DRAFT)
    print(f"continuation: {vocab.decode(out.sequences[0, PROMPT:].tolist())!r}")
    plain_times, assisted_times = [], []
    for _ in range(args.repeats):
        for fn, times in ((plain, plain_times), (assisted, assisted_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    median, low, high = paired_ratios(plain_times, assisted_times)
    print(f"accepted draft tokens: {out.accepted_tokens} / {out.draft_tokens} = {out.acceptance_rate:.2f}")
    print(f"new tokens per big-model call: {NEW_TOKENS / max(rounds, 1):.2f} (plain greedy: 1)")
    print(f"speed-up plain / assisted: {median:.2f}x (rounds {low:.2f} .. {high:.2f}); plain "
          f"{min(plain_times) * 1e3:.0f} ms, assisted {min(assisted_times) * 1e3:.0f} ms for {NEW_TOKENS} tokens")


if __name__ == "__main__":
    main()
