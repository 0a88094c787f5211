"""The text commands: train-text (a language model over characters or BPE subwords) and sample."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

import lamina
from lamina import functional as F
from lamina.cli.common import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule, positive_int, probability


def _token_cost(model, pairs, batch_size: int = 256) -> float:
    """The mean cost per predicted token over (ids, targets) pairs, padding left out."""
    from lamina.train.text_recipes import IGNORE_INDEX

    total, count = 0.0, 0
    x, y = pairs
    with lamina.no_grad():
        for i in range(0, len(x), batch_size):
            scores = model(lamina.tensor(np.asarray(x[i:i + batch_size])))
            targets = np.asarray(y[i:i + batch_size])
            total += F.categorical_cross_entropy(scores, targets, from_logits=True, reduction="sum",
                                                 ignore_index=IGNORE_INDEX).item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / max(count, 1)


def _per_character(cost: float, vocab, targets: np.ndarray) -> float:
    """Nats per character from nats per predicted token: the total nats over the characters
    the predicted tokens stand for (a special token, such as the end of a name, counts as
    one character), a figure that compares models with different tokenizers."""
    from lamina.train.text_recipes import IGNORE_INDEX

    specials = {i for i in (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) if i is not None}
    tokens = characters = 0
    for row in np.asarray(targets):
        ids = row[row != IGNORE_INDEX].tolist()
        tokens += len(ids)
        characters += len(vocab.decode(ids)) + sum(i in specials for i in ids)
    return cost * tokens / max(characters, 1)


def _report(where: str, cost: float, baseline: float, vocab, targets: np.ndarray) -> float:
    """Print a subword model's test cost per token and per character; returns the latter."""
    per_character = _per_character(cost, vocab, targets)
    print(f"{where}cost {cost:.4f} nats per token (perplexity {math.exp(cost):.2f}), {per_character:.4f} nats per "
          f"character ({per_character / math.log(2):.3f} bits); the bigram model: {baseline:.4f} nats per token "
          f"({_per_character(baseline, vocab, targets):.4f} per character)")
    return per_character


def build_language_model(args: argparse.Namespace, vocab_size: int):
    from lamina import models

    if args.cell == "transformer":
        return models.transformer_language_model(vocab_size, d_model=args.hidden, num_heads=args.heads,
                                                 num_layers=args.layers, dim_feedforward=4 * args.hidden,
                                                 max_len=max(args.seq_len, 64), dropout=args.dropout)
    return models.rnn_language_model(vocab_size, embed_dim=args.embed_dim, hidden=args.hidden, cell=args.cell,
                                     num_layers=args.layers, dropout=args.dropout)


def train_text(args: argparse.Namespace) -> dict:
    """Train a language model over characters or BPE subwords; report its test cost against
    the bigram model's (per token and, for subwords, per character), save it with its
    vocabulary (or tokenizer) and print a few samples."""
    import functools

    from lamina.train import ModelCheckpoint, TerminateOnNaN, Trainer
    from lamina.train.text_recipes import IGNORE_INDEX, bigram_cost, prepare_corpus

    lamina.manual_seed(args.seed)
    out = Path(args.out or Path("runs") / time.strftime("text-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = prepare_corpus(args.corpus, data_dir=args.data_dir, download=not args.offline, seed=args.seed,
                          limit=args.limit, seq_len=args.seq_len, tokenizer=args.tokenizer,
                          vocab_size=args.vocab_size)
    size = len(data.vocab)
    print(f"{args.corpus}: {len(data.train[0])} training, {len(data.val[0])} validation, {len(data.test[0])} "
          f"test sequences; {size} tokens in the vocabulary")
    model = build_language_model(args, size)
    optimizer = build_optimizer(args.optimizer, model, args.lr)
    iterations = args.epochs * -(-len(data.train[0]) // args.batch_size)
    schedule = build_schedule(args.schedule, optimizer, args.lr, iterations, args.warmup)
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True, ignore_index=IGNORE_INDEX)
    checkpoint = out / "checkpoint.safetensors"
    trainer = Trainer(model, loss, optimizer, metrics=("accuracy",),
                      callbacks=[ModelCheckpoint(checkpoint), TerminateOnNaN()], schedule=schedule,
                      verbose=args.verbose, clip_norm=args.clip_norm)
    history = trainer.fit(data.train, val=data.val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                          resume_from=args.resume)
    test_cost = _token_cost(model, data.test)
    baseline = bigram_cost(data.train, data.test, size)
    elapsed = time.perf_counter() - started
    info = {**data.info, "cell": args.cell, "epochs": args.epochs, "optimizer": args.optimizer, "lr": args.lr,
            "test_loss": test_cost, "bigram_test_loss": baseline}
    results = {"test_loss": test_cost, "bigram_test_loss": baseline}
    if args.tokenizer == "char":
        print(f"test cost {test_cost:.4f} nats per character ({test_cost / math.log(2):.3f} bits, perplexity "
              f"{math.exp(test_cost):.2f}); the bigram model: {baseline:.4f}  ({elapsed:.1f} s)")
    else:
        results["test_loss_per_character"] = _report("test ", test_cost, baseline, data.vocab, data.test[1])
        info["test_loss_per_character"] = results["test_loss_per_character"]
        print(f"({elapsed:.1f} s)")
    lamina.save(model, out / "model.safetensors", info=info)
    history.plot(out / "cost.png")
    for k in range(args.samples):
        print("  sample:", repr(_sample(model, data.vocab, args.corpus, seed=args.seed + k)[0]))
    print(f"saved {out / 'model.safetensors'}, {checkpoint} and {out / 'cost.png'}")
    return results


def _sample(model, vocab, corpus: str, seed: int, prompt: str | None = None, temperature: float = 0.8,
            max_length: int | None = None, top_k: int | None = None, top_p: float | None = None,
            beam: int | None = None, count: int = 1) -> list[str]:
    """``count`` texts drawn in one batch, text k with the seed ``seed + k`` (or the one text
    beam search finds)."""
    from lamina.text import beam_search_text, sample_texts

    if prompt is None:
        prompt = "" if vocab.bos_id is not None else "\n"
    if max_length is None:
        max_length = 30 if corpus == "names" else 200
    if beam is not None:
        return [beam_search_text(model, vocab, prompt=prompt, beam_width=beam, max_length=max_length)]
    return sample_texts(model, vocab, prompt=prompt, num_samples=count, max_length=max_length,
                        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def evaluate_text(bundle, args: argparse.Namespace) -> dict:
    """``lamina evaluate`` of a language model: its test cost per token (and per character)
    on the test part of the corpus it was trained on (split again with the saved seed, the
    BPE tokenizer learned again), and the bigram model's."""
    from lamina.text import tokenizer_from_config
    from lamina.train.text_recipes import bigram_cost, prepare_corpus

    info = bundle.info
    tokenizer = info.get("tokenizer", "char")
    data = prepare_corpus(info["corpus"], data_dir=args.data_dir, download=not args.offline, seed=info["seed"],
                          limit=info.get("limit"), seq_len=info["seq_len"], tokenizer=tokenizer,
                          vocab_size=info.get("vocab_size", 512))
    if data.vocab != tokenizer_from_config(info["vocabulary"]):
        raise SystemExit(f"lamina evaluate: the {info['corpus']} corpus found gives another vocabulary than the "
                         "model's; it is not the file the model was trained on")
    cost = _token_cost(bundle.model, data.test)
    baseline = bigram_cost(data.train, data.test, len(data.vocab))
    results = {"test_loss": cost, "bigram_test_loss": baseline}
    if tokenizer == "char":
        print(f"{info['corpus']} test: cost {cost:.4f} nats per character ({cost / math.log(2):.3f} bits, "
              f"perplexity {math.exp(cost):.2f}); the bigram model: {baseline:.4f}")
    else:
        results["test_loss_per_character"] = _report(f"{info['corpus']} test: ", cost, baseline, data.vocab,
                                                     data.test[1])
    return results


def sample(args: argparse.Namespace) -> list[str]:
    """Draw text from a language model saved by ``lamina train-text``."""
    from lamina.text import tokenizer_from_config

    bundle = lamina.load_bundle(args.checkpoint)
    if bundle.info.get("kind") == "diffusion":
        raise SystemExit(f"lamina sample: {args.checkpoint} is a diffusion model; draw from it with "
                         "'lamina sample-diffusion'")
    if "vocabulary" not in bundle.info:
        raise SystemExit(f"lamina sample: {args.checkpoint} holds no vocabulary; it was not written by "
                         "'lamina train-text'")
    vocab = tokenizer_from_config(bundle.info["vocabulary"])
    # beam search finds one text, the same each time; the drawn texts are the rows of one batch
    texts = _sample(bundle.model, vocab, bundle.info.get("corpus", ""), seed=args.seed, prompt=args.prompt,
                    temperature=args.temperature, max_length=args.max_length, top_k=args.top_k, top_p=args.top_p,
                    beam=args.beam, count=args.count)
    for text in texts:
        print(text)
    return texts


def add_commands(sub) -> None:
    """The text commands' parsers, added to the subparsers ``sub``."""
    tt = sub.add_parser("train-text", help="train a character-level (or BPE) language model (names, Shakespeare)",
                        description="Train a language model on a text corpus, over characters or byte-pair-encoded "
                                    "subwords; reports the test cost per token (and per character) against the "
                                    "bigram model's and writes model.safetensors (with the vocabulary or "
                                    "tokenizer), checkpoint.safetensors and cost.png to --out.")
    tt.add_argument("--corpus", choices=("names", "shakespeare"), default="names",
                    help="names: 32,033 first names; shakespeare: Tiny Shakespeare (default names)")
    tt.add_argument("--tokenizer", choices=("char", "bpe"), default="char",
                    help="tokens: characters, or subwords by byte-pair encoding learned from the training part "
                         "(default char)")
    tt.add_argument("--vocab-size", type=positive_int, default=512,
                    help="tokens the BPE tokenizer learns, 256 bytes and the special tokens included (default 512)")
    tt.add_argument("--cell", choices=("gru", "lstm", "rnn", "transformer"), default="gru",
                    help="recurrent cell, or a causal Transformer (default gru)")
    tt.add_argument("--embed-dim", type=positive_int, default=32, help="embedding size (default 32)")
    tt.add_argument("--hidden", type=positive_int, default=128,
                    help="units per recurrent layer, or the Transformer's width (default 128)")
    tt.add_argument("--layers", type=positive_int, default=1, help="stacked layers (default 1)")
    tt.add_argument("--heads", type=positive_int, default=4, help="Transformer attention heads (default 4)")
    tt.add_argument("--dropout", type=float, default=0.0, help="dropout between layers (default 0)")
    tt.add_argument("--seq-len", type=positive_int, default=64,
                    help="tokens per training window for shakespeare (default 64)")
    tt.add_argument("--epochs", type=positive_int, default=5, help="passes over the training data (default 5)")
    tt.add_argument("--batch-size", type=positive_int, default=64, help="mini-batch size (default 64)")
    tt.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)")
    tt.add_argument("--lr", type=float, default=5e-3, help="learning rate alpha (default 0.005)")
    tt.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="learning-rate schedule (default cosine)")
    tt.add_argument("--warmup", type=int, default=0, metavar="ITERATIONS", help="linear warm-up (default 0)")
    tt.add_argument("--clip-norm", type=float, default=5.0, metavar="N",
                    help="rescale the gradients to an L2 norm of at most N (default 5; exploding gradients "
                         "are the recurrent networks' hazard)")
    tt.add_argument("--samples", type=int, default=5, help="samples printed after training (default 5)")
    tt.add_argument("--data-dir", default=None, help="where the corpus file is (searched first)")
    tt.add_argument("--offline", action="store_true", help="never download the corpus")
    tt.add_argument("--limit", type=positive_int, default=None, help="use only this many training sequences")
    tt.add_argument("--out", default=None, help="output directory (default runs/text-<timestamp>)")
    tt.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tt.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue from a training checkpoint")
    tt.add_argument("--verbose", type=int, default=1, help="0: quiet; 1: progress")

    sm = sub.add_parser("sample", help="draw text from a language model saved by 'lamina train-text'")
    sm.add_argument("checkpoint", help="model.safetensors written by 'lamina train-text'")
    sm.add_argument("--count", "--num-samples", type=positive_int, default=10,
                    help="how many samples, drawn in one batch; sample k is the one --seed SEED+k draws (default 10)")
    sm.add_argument("--prompt", default=None, help="text to continue (default: a new name, or a new line)")
    sm.add_argument("--temperature", type=float, default=0.8,
                    help="below 1 sharpens the next-character distribution, above 1 flattens it (default 0.8)")
    sm.add_argument("--top-k", type=positive_int, default=None, help="draw among the k likeliest characters")
    sm.add_argument("--top-p", type=probability, default=None,
                    help="nucleus sampling: draw among the fewest likeliest characters whose probabilities reach P")
    sm.add_argument("--beam", type=positive_int, default=None, metavar="WIDTH",
                    help="instead of drawing, print the likeliest continuation found by beam search of this width")
    sm.add_argument("--max-length", type=positive_int, default=None, help="characters per sample at most")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
