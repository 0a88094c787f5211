"""Decode throughput of the serving engine's continuous batching against generating the same
prompts one at a time with lamina's cached ``generate``.

A tiny untrained GPT-2 (2 layers, 64 features, 4 heads, vocabulary 256) in float32 serves
REQUESTS prompts of 4 to 24 tokens, each asking for NEW_TOKENS greedy tokens. Printed:
generated tokens per second for

- one at a time: ``model.generate`` per prompt (batch of one, contiguous key/value cache);
- the engine with ``max_num_seqs`` 1 (paged cache, no batching);
- the engine with ``max_num_seqs`` REQUESTS (every running sequence decodes in one step);

and the best of ``--repeats`` runs of each. Every side produces the same tokens (checked).

Usage: python benchmarks/serving_throughput.py [--requests N] [--new-tokens N] [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lamina
from lamina import models
from lamina.text import LLMEngine


def _model() -> models.GPT2:
    lamina.manual_seed(0)
    model = models.GPT2(vocab_size=256, n_positions=128, n_embd=64, n_layer=2, n_head=4)
    model.build((None, 1))
    return model.eval()


def _one_at_a_time(model, prompts, new_tokens: int) -> list[list[int]]:
    with lamina.no_grad():
        return [np.asarray(model.generate(np.array([p]), max_new_tokens=new_tokens))[0, len(p):].tolist()
                for p in prompts]


def _engine(model, prompts, new_tokens: int, max_num_seqs: int) -> list[list[int]]:
    engine = LLMEngine(model, max_num_seqs=max_num_seqs, num_blocks=256, block_size=16)
    return engine.generate(prompts, max_new_tokens=new_tokens)


def _best_time(run, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = _model()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 256, size=int(n)).tolist() for n in rng.integers(4, 25, size=args.requests)]
    tokens = args.requests * args.new_tokens
    sides = {
        "generate, one prompt at a time": lambda: _one_at_a_time(model, prompts, args.new_tokens),
        "engine, max_num_seqs 1": lambda: _engine(model, prompts, args.new_tokens, 1),
        f"engine, max_num_seqs {args.requests} (continuous batching)":
            lambda: _engine(model, prompts, args.new_tokens, args.requests),
    }
    reference = None
    for label, run in sides.items():
        seconds, outputs = _best_time(run, args.repeats)
        reference = outputs if reference is None else reference
        same = "same tokens" if outputs == reference else "DIFFERENT tokens"
        print(f"{label:<52} {tokens / seconds:9.0f} tokens/s  ({seconds:.3f} s, {same})")


if __name__ == "__main__":
    main()
