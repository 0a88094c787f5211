"""Medusa decoding of several prompts at once (:func:`medusa_generate_batch`).

The prompts, of different lengths, are left-padded into one (N, P) batch; every row then reads
the same tree of candidates in each call, built from its own root and its own heads' guesses,
and keeps its own accepted path. The rows' caches are not moved apart: a boolean ``visible``
(N, S) over the S cached steps marks the steps of each row's sequence (its prompt and the nodes
it accepted), and each call's mask is

    mask[r, i, j] = visible[r, j]            for the S cached steps j,
    mask[r, i, S + j] = tree.mask[i, j]      for the tree's nodes,

with node i of row r at position held_r + depth_i (held_r the tokens row r has so far). Steps
no row sees are dropped from the cache after each call. A row stops after its
``max_new_tokens`` or its end token (it keeps riding along, its results unused), and uses only
the part of the tree that single-prompt decoding would read, so greedy rows get the tokens and
the accepted lengths of :func:`lamina.models.medusa_generate` on each prompt alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.models.medusa import (
    MedusaHeads,
    MedusaOutput,
    _Acceptance,
    _check_model,
    _checked_tree,
    _node_tokens,
    _pruned,
)
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.text.generate import caching_keys_values

__all__ = ["medusa_generate_batch"]


def _left_padded(prompts) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N, P) left-padded with token 0, lengths (N,)) of a list of 1-D prompts or an (N, T) array."""
    if isinstance(prompts, np.ndarray) and prompts.ndim != 2:
        raise ValueError(f"medusa_generate_batch: an array of prompts must be (N, T), got {prompts.shape}; "
                         "pass prompts of different lengths as a list of 1-D arrays")
    rows = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
    if not rows or any(r.size == 0 for r in rows):
        raise ValueError(f"medusa_generate_batch: needs >= 1 prompt, each of >= 1 token, got lengths "
                         f"{[r.size for r in rows]}")
    lengths = np.array([r.size for r in rows])
    ids = np.zeros((len(rows), lengths.max()), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, ids.shape[1] - r.size:] = r
    return ids, lengths


def _keep(model, steps: np.ndarray) -> None:
    """Keep the cached steps ``steps`` in every attention layer; the layers that count positions
    start again from 0 (every call passes its own positions, the count only limits a call's length)."""
    for layer in model.modules():
        if isinstance(layer, MultiHeadAttention) and layer.caching:
            layer.keep_cache_steps(steps)
    for layer in model.modules():
        counts = hasattr(layer, "crop_cache") and getattr(layer, "caching", False)
        if counts and not isinstance(layer, MultiHeadAttention):
            layer.crop_cache(0)


def medusa_generate_batch(model, heads: MedusaHeads, prompts: Sequence, max_new_tokens: int, tree=None,
                          eos_token_id: int | None = None, acceptance: str = "greedy", temperature: float = 0.7,
                          epsilon: float = 0.09, delta: float | None = None, seed=None) -> list[MedusaOutput]:
    """:func:`lamina.models.medusa_generate` of every prompt of ``prompts`` (a list of 1-D
    prompts of any lengths, or an (N, T) array) in one batch: one :class:`MedusaOutput` per
    prompt. Greedy rows equal decoding each prompt alone; typical acceptance draws every row's
    roots from one generator (``seed``), row after row, so its text differs from single-prompt
    decoding with the same seed."""
    _check_model(model, "medusa_generate_batch")
    was_training = model.training
    model.eval()
    try:
        with no_grad(), caching_keys_values(model):
            return _decode(model, heads, prompts, max_new_tokens, tree, eos_token_id,
                           _Acceptance(acceptance, temperature, epsilon, delta, seed, "medusa_generate_batch"))
    finally:
        model.train(was_training)


def _decode(model, heads, prompts, max_new_tokens, tree, eos_token_id, rule) -> list[MedusaOutput]:
    ids, lengths = _left_padded(prompts)
    steps = int(max_new_tokens)
    if steps < 1:
        raise ValueError(f"medusa_generate_batch: max_new_tokens must be >= 1, got {max_new_tokens!r}")
    full = _checked_tree(tree, heads)
    n, width = ids.shape
    rows = np.arange(n)
    visible = np.arange(width)[None] >= (width - lengths)[:, None]                 # (N, P): the real tokens
    causal = np.tril(np.ones((width, width), dtype=bool))
    mask = (causal[None] & visible[:, None]) | np.eye(width, dtype=bool)       # padding sees itself only
    positions = np.maximum(np.arange(width)[None] - (width - lengths)[:, None], 0)
    hidden = model.hidden_states(tensor(ids), position_ids=positions, mask=mask).numpy()
    _keep(model, np.arange(width))
    last = hidden[:, -1:]
    logits = model.logits(tensor(last)).numpy()[:, 0]
    tokens = [[rule.draw(logits[r])] for r in rows]
    accepted = [[] for _ in rows]
    held = lengths.copy()
    context = getattr(model, "max_len", None)

    def active(r) -> bool:
        return len(tokens[r]) < steps and eos_token_id not in tokens[r]

    while any(active(r) for r in rows):
        going = [r for r in rows if active(r)]
        want = [_pruned(full, steps - len(tokens[r]) - 1, None if context is None else context - held[r])
                for r in rows]
        tree = max((want[r] for r in going), key=len)          # pruned trees are nested: the largest holds all
        guesses = heads(last).numpy()[:, 0]                     # (N, K, V)
        node_tokens = np.stack([_node_tokens(tree, tokens[r][-1], guesses[r]) for r in rows])
        positions = held[:, None] + tree.depth[None]
        if context is not None:                                 # nodes a row does not use: any valid position
            positions = np.minimum(positions, context - 1)
        mask = np.concatenate([np.repeat(visible[:, None], len(tree), axis=1),
                               np.broadcast_to(tree.mask, (n, len(tree), len(tree)))], axis=2)
        hidden = model.hidden_states(tensor(node_tokens), position_ids=positions, mask=mask).numpy()
        logits = model.logits(tensor(hidden)).numpy()
        kept = np.zeros((n, len(tree)), dtype=bool)
        ends = np.zeros(n, dtype=np.int64)
        for r in going:
            path = rule.path(tree, node_tokens[r], logits[r], usable=min(len(want[r]), len(tree)))
            kept[r, path] = True
            ends[r] = path[-1]
            held[r] += len(path)
            accepted[r].append(len(path))
            tokens[r].extend([int(t) for t in node_tokens[r, path[1:]]] + [rule.draw(logits[r, path[-1]])])
        last = hidden[rows, ends][:, None]
        visible = np.concatenate([visible, kept], axis=1)
        seen = visible.any(axis=0)
        _keep(model, np.flatnonzero(seen))
        visible = visible[:, seen]
    outputs = []
    for r in rows:
        out = tokens[r][:steps]
        if eos_token_id is not None and eos_token_id in out:
            out = out[:out.index(eos_token_id) + 1]
        outputs.append(MedusaOutput(np.array(out, dtype=np.int64), accepted[r]))
    return outputs
