"""Text generation with and without the key/value cache, and lamina's cached greedy decoding
against a PyTorch copy of the same model decoding with its own cache.

The model is a causal pre-norm Transformer language model (``transformer_language_model``:
2 layers, d_model 64, 4 heads, feed-forward 128, the sinusoidal encoding, VOCAB tokens),
untrained, in float32; the prompt has PROMPT tokens and no token ends a text, so every
decode makes NEW_TOKENS steps. Printed, from paired rounds (each round times both sides
back to back; the ratio of the times is the median of the rounds' ratios, see ``pairing``):

- beam search of width 4: the model read once per token per hypothesis, its caches
  reordered by the surviving hypotheses' parents (``beam_search_ids``), against the rerun
  of the whole text of every hypothesis at each step (``rerun=True``);
- greedy decoding (a beam of width 1), cached against rerun;
- greedy decoding, lamina cached against the PyTorch copy (same weights, same tokens
  expected) with a hand-written key/value cache: the framework overhead per token;
- SAMPLES samples drawn as the rows of one batch (``sample_texts``) against SAMPLES
  separate ``sample_text`` calls.

At these sizes every call is a few small matrix products: one thread is fastest for both
frameworks (more threads only add synchronisation).

``--profile N`` prints instead the N functions with the most own time in a cProfile of
cached greedy decoding (three decodes of NEW_TOKENS tokens), to see where a step's time goes.

Usage: python benchmarks/generation_speed.py [--repeats N] [--threads N] [--profile N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from pairing import paired_ratios

import lamina
from lamina import models
from lamina.nn.transformer import sinusoidal_encoding
from lamina.text import Vocabulary, beam_search_ids, sample_text, sample_texts

VOCAB, PROMPT, NEW_TOKENS, WIDTH, SAMPLES = 64, 8, 100, 4, 8
D_MODEL, HEADS, LAYERS, FEEDFORWARD = 64, 4, 2, 128
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?-'\"()[]{}/\\|@#*+="[:VOCAB - 1]


def lamina_model():
    lamina.manual_seed(0)
    model = models.transformer_language_model(VOCAB, d_model=D_MODEL, num_heads=HEADS, num_layers=LAYERS,
                                              dim_feedforward=FEEDFORWARD, max_len=PROMPT + NEW_TOKENS + 1)
    model.build((None, 1))
    return model.eval()


class TorchCachedLM(torch.nn.Module):
    """The lamina model's weights in PyTorch tensors, run step by step with a key/value cache:
    ``forward(ids, cache)`` reads the new ids (B, t) after the steps the cache holds and
    returns the scores (B, t, V)."""

    def __init__(self, model):
        super().__init__()

        def weight(array):
            return torch.from_numpy(np.ascontiguousarray(array.numpy()))

        self.embedding = weight(model[0].weight)
        self.positions = torch.from_numpy(np.asarray(sinusoidal_encoding(model[1].max_len, D_MODEL), np.float32))
        self.layers = []
        for layer in model[2:2 + LAYERS]:
            attention = layer.self_attention
            self.layers.append({
                "norm1": (weight(layer.norm1.weight), weight(layer.norm1.bias)),
                "in": (weight(attention.in_weight), weight(attention.in_bias)),
                "out": (weight(attention.out_weight), weight(attention.out_bias)),
                "norm2": (weight(layer.norm2.weight), weight(layer.norm2.bias)),
                "linear1": (weight(layer.linear1.weight), weight(layer.linear1.bias)),
                "linear2": (weight(layer.linear2.weight), weight(layer.linear2.bias)),
            })
        self.final_norm = (weight(model[-2].weight), weight(model[-2].bias))
        self.output = (weight(model[-1].weight), weight(model[-1].bias))

    @staticmethod
    def _norm(x, params):
        return torch.nn.functional.layer_norm(x, (D_MODEL,), *params, eps=1e-5)

    def forward(self, ids: torch.Tensor, cache: list) -> torch.Tensor:
        n, t = ids.shape
        start = 0 if not cache else cache[0][0].shape[2]
        x = self.embedding[ids] + self.positions[start:start + t]
        split = D_MODEL // HEADS
        for index, p in enumerate(self.layers):
            h = self._norm(x, p["norm1"])
            q, k, v = (torch.addmm(p["in"][1], h.reshape(n * t, D_MODEL), p["in"][0])
                       .reshape(n, t, 3, HEADS, split).permute(2, 0, 3, 1, 4))
            if len(cache) > index:
                k = torch.cat([cache[index][0], k], dim=2)
                v = torch.cat([cache[index][1], v], dim=2)
                cache[index] = (k, v)
            else:
                cache.append((k, v))
            heads = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=start == 0 and t > 1)
            joined = heads.transpose(1, 2).reshape(n, t, D_MODEL)
            x = x + joined @ p["out"][0] + p["out"][1]
            hidden = torch.relu(self._norm(x, p["norm2"]) @ p["linear1"][0] + p["linear1"][1])
            x = x + hidden @ p["linear2"][0] + p["linear2"][1]
        return self._norm(x, self.final_norm) @ self.output[0] + self.output[1]


def torch_greedy(model: TorchCachedLM, prompt: list[int]) -> list[int]:
    with torch.inference_mode():
        cache: list = []
        scores = model(torch.tensor([prompt]), cache)
        tokens = []
        for _ in range(NEW_TOKENS):
            token = int(scores[0, -1].argmax())
            tokens.append(token)
            scores = model(torch.tensor([[token]]), cache)
    return tokens


def _elapsed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, first, second, repeats: int, first_label: str, second_label: str) -> None:
    """Time ``first`` and ``second`` in paired rounds after one warm-up call each; print the
    median times and the ratio of their times, second / first (above 1: ``first`` is
    faster), with its range over the rounds."""
    first(), second()
    first_times, second_times = [], []
    for _ in range(repeats):
        first_times.append(_elapsed(first))
        second_times.append(_elapsed(second))
    median, low, high = paired_ratios(second_times, first_times)
    print(f"{name:<34} {first_label:>8} {statistics.median(first_times) * 1e3:8.1f} ms  {second_label:>8} "
          f"{statistics.median(second_times) * 1e3:8.1f} ms  {second_label}/{first_label} {median:5.2f}x "
          f"({low:.2f}-{high:.2f})")


def profile_greedy(model, prompt: list[int], top: int) -> None:
    """The ``top`` functions by own time in a cProfile of three cached greedy decodes."""
    import cProfile
    import pstats

    beam_search_ids(model, prompt, None, 1, NEW_TOKENS)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        beam_search_ids(model, prompt, None, 1, NEW_TOKENS)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch and of the BLAS calls NumPy makes (default 1)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N functions with the most own time in cached greedy decoding, and stop")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    model = lamina_model()
    vocab = Vocabulary(CHARACTERS, pad=None, unk=None, bos="^")       # no end token: every decode runs on
    text = "".join(np.random.default_rng(0).choice(list(CHARACTERS), PROMPT - 1))
    prompt = list(vocab.encode(text, add_bos=True))
    if args.profile:
        profile_greedy(model, prompt, args.profile)
        return
    print(f"transformer LM: {LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, vocabulary {VOCAB}; prompt {PROMPT} "
          f"tokens, {NEW_TOKENS} new tokens; threads {args.threads}, {args.repeats} rounds\n")

    def beam(width: int, rerun: bool):
        return lambda: beam_search_ids(model, prompt, None, width, NEW_TOKENS, rerun=rerun)

    fast = beam_search_ids(model, prompt, None, WIDTH, NEW_TOKENS, num_return=WIDTH)
    slow = beam_search_ids(model, prompt, None, WIDTH, NEW_TOKENS, num_return=WIDTH, rerun=True)
    same = [h.ids for h in fast] == [h.ids for h in slow]
    gap = max(abs(a.log_prob - b.log_prob) for a, b in zip(fast, slow))
    print(f"beam {WIDTH}: cached and rerun hypotheses {'equal' if same else 'DIFFER'} (log-probs within {gap:.1e})")
    compare(f"beam search, width {WIDTH}", beam(WIDTH, False), beam(WIDTH, True), args.repeats, "cached", "rerun")
    compare("greedy (width 1)", beam(1, False), beam(1, True), args.repeats, "cached", "rerun")

    torch_model = TorchCachedLM(model)
    ours = beam_search_ids(model, prompt, None, 1, NEW_TOKENS)[0].ids
    theirs = torch_greedy(torch_model, prompt)
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    print(f"greedy tokens of lamina and torch: {'equal' if agree is None else f'differ from step {agree}'}")
    compare("greedy, cached: lamina vs torch", beam(1, False), lambda: torch_greedy(torch_model, prompt),
            args.repeats, "lamina", "torch")

    def separate():
        return [sample_text(model, vocab, text, NEW_TOKENS, seed=i) for i in range(SAMPLES)]

    def batch():
        return sample_texts(model, vocab, text, SAMPLES, NEW_TOKENS, seed=0)

    same = batch() == separate()
    print(f"{SAMPLES} samples drawn in a batch and separately: {'equal' if same else 'DIFFER'}")
    compare(f"{SAMPLES} samples: batch vs separate", batch, separate, args.repeats, "batch", "separate")


if __name__ == "__main__":
    main()
