"""Activation patching and attribution patching: which activations carry the information a
behaviour depends on.

Two inputs differ in one detail: a clean one, on which the model behaves (the metric is
m_clean, e.g. the logit difference between the right and a wrong answer), and a corrupted one
(m_corr). Activation patching (causal tracing, Meng et al. 2022; Wang et al. 2022) runs the
corrupted input with one activation a (one module's output, at one position or all) set to
its clean value, and scores

    patched = (m(corrupted with a <- a_clean) - m_corr) / (m_clean - m_corr)

0: the activation carries nothing the metric needs; 1: it restores the clean behaviour.
Attribution patching (Nanda 2023; Syed et al. 2023) estimates every such number at once from
one forward and one backward pass on the corrupted input, to first order:

    m(corrupted with a <- a_clean) - m_corr  ~  (a_clean - a_corr) . dm/da |corrupted

which is exact when m depends linearly on a. Activations are (batch, position, ...): a position
is an index on axis 1; the dot product sums over the batch and the remaining axes.

Patching is per module output (block, attention branch, MLP branch), and per head once the
attention layers' head hooks are on (:func:`~lamina.analysis.interpretability.enable_head_hooks`):
``heads=`` patches the per-head outputs z (batch, position, head, feature) one head at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.analysis.interpretability.activation_cache import (
    resolve_modules,
    run_with_cache,
    run_with_hooks,
    transformer_parts,
)
from lamina.analysis.interpretability.heads import head_hook_names
from lamina.analysis.saliency import input_analysis
from lamina.autograd import Tensor, grad, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["COMPONENTS", "PatchingResult", "activation_patching", "attribution_patching", "logit_difference",
           "patching_grid"]

Metric = Callable[[Tensor], Tensor]

COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
"""What :func:`patching_grid` patches in each block: its input, its output, its attention or MLP branch
(and, with ``component='head'``, each head's output)."""

HEAD_COMPONENT = "head"


def logit_difference(logits: Tensor, correct, wrong, position: int = -1) -> Tensor:
    """mean_n (z[n, position, correct_n] - z[n, position, wrong_n]) of scores z (N, T, V):
    ``correct`` and ``wrong`` are a token id each, or one per sample."""
    logits = logits if isinstance(logits, Tensor) else Tensor._wrap(backend.xp.asarray(logits))
    if logits.ndim != 3:
        raise ShapeError(f"logit_difference: expected scores (batch, position, vocabulary), got shape {logits.shape}")
    n = logits.shape[0]
    rows = np.arange(n)
    chosen = logits[:, position]
    right = np.broadcast_to(np.asarray(correct, dtype=np.int64), (n,))
    other = np.broadcast_to(np.asarray(wrong, dtype=np.int64), (n,))
    return F.mean(F.sub(chosen[rows, right], chosen[rows, other]))


@dataclass
class PatchingResult:
    """``scores[i, j]``: the normalised metric of patching ``names[i]`` at ``positions[j]`` (None:
    every position at once); ``clean_metric`` and ``corrupted_metric``: m_clean and m_corr.
    Per head (``heads`` not None), ``scores[i, k, j]``: patching head ``heads[k]`` of ``names[i]``
    at ``positions[j]``."""

    names: list[str]
    positions: list[int | None]
    scores: np.ndarray
    clean_metric: float
    corrupted_metric: float
    heads: list[int] | None = None


def _positions(positions, length: int, who: str) -> list[int | None]:
    if positions is None:
        return [None]
    if isinstance(positions, str):
        if positions != "each":
            raise ValueError(f"{who}: positions must be 'each', None (all at once) or a list of indices, "
                             f"got {positions!r}")
        return list(range(length))
    chosen = [int(p) for p in positions]
    bad = [p for p in chosen if not -length <= p < length]
    if bad:
        raise ValueError(f"{who}: positions {bad} are outside a sequence of length {length}")
    return chosen


def _heads(heads, sources: Sequence, names: Sequence[str], who: str) -> list[int] | None:
    """The head indices ``heads`` ('each', a list, or None: no per-head patching) checked against the
    per-head activations ``sources`` (batch, position, head, feature) of ``names``."""
    if heads is None:
        return None
    counts = set()
    for name, source in zip(names, sources):
        if not isinstance(source, np.ndarray) or source.ndim != 4:
            raise ValueError(f"{who}: {name!r} outputs an activation of shape {np.shape(source)}; per-head patching "
                             "needs per-head outputs (batch, position, head, feature): the names of head hook points "
                             "('<attention layer>.head_outputs', see enable_head_hooks)")
        counts.add(source.shape[2])
    if isinstance(heads, str):
        if heads != "each":
            raise ValueError(f"{who}: heads must be 'each', None or a list of head indices, got {heads!r}")
        if len(counts) > 1:
            raise ValueError(f"{who}: heads='each' over layers of {sorted(counts)} heads; give the indices")
        return list(range(counts.pop())) if counts else []
    chosen = [int(k) for k in heads]
    fewest = min(counts, default=0)
    bad = [k for k in chosen if not 0 <= k < fewest]
    if bad:
        raise ValueError(f"{who}: head indices {bad} are out of range for attention layers of {fewest} heads "
                         f"(0 .. {fewest - 1})")
    return chosen


def _cell(position: int | None, head: int | None) -> tuple:
    """The index of one patch in a (batch, position, ...) activation."""
    where = (slice(None), slice(None) if position is None else position)
    return where if head is None else where + (head,)


def _metric_value(metric: Metric, output) -> float:
    value = metric(output if isinstance(output, Tensor) else Tensor._wrap(backend.xp.asarray(output)))
    return float(backend.to_numpy(value.data if isinstance(value, Tensor) else value))


def _check_pair(clean, corrupted, who: str) -> None:
    if np.shape(clean) != np.shape(corrupted):
        raise ShapeError(f"{who}: clean inputs of shape {np.shape(clean)} and corrupted inputs of shape "
                         f"{np.shape(corrupted)}; they must match")
    if len(np.shape(clean)) < 2:
        raise ShapeError(f"{who}: expected inputs (batch, position, ...), got shape {np.shape(clean)}")


def _normaliser(clean_metric: float, corrupted_metric: float, who: str) -> float:
    difference = clean_metric - corrupted_metric
    if difference == 0:
        raise ValueError(f"{who}: the metric is {clean_metric} on both the clean and the corrupted inputs; there is "
                         "nothing to restore")
    return difference


def activation_patching(model: Module, clean, corrupted, metric: Metric, names: Sequence[str] | str,
                        positions="each", heads=None, **kwargs) -> PatchingResult:
    """Patch each of ``names`` at each of ``positions`` ('each' position of axis 1, a list of them,
    or None for the whole activation) from the clean run into the corrupted one, one at a time;
    ``metric(output)`` is a scalar Tensor (e.g. :func:`logit_difference`). ``heads`` ('each' or a
    list of indices) patches one head at a time of per-head outputs (names of head hook points,
    see :func:`enable_head_hooks`); the scores are then (names, heads, positions). ``kwargs`` go
    to the model."""
    who = "activation_patching"
    _check_pair(clean, corrupted, who)
    names = [names] if isinstance(names, str) else list(names)
    clean_output, clean_cache = run_with_cache(model, clean, names, **kwargs)
    corrupted_output, _ = run_with_cache(model, corrupted, [], **kwargs)
    clean_metric, corrupted_metric = _metric_value(metric, clean_output), _metric_value(metric, corrupted_output)
    scale = _normaliser(clean_metric, corrupted_metric, who)
    chosen = _positions(positions, np.shape(clean)[1], who)
    chosen_heads = _heads(heads, [clean_cache[name] for name in names], names, who)
    per_name = [None] if chosen_heads is None else chosen_heads
    scores = np.empty((len(names), len(per_name), len(chosen)))
    for i, name in enumerate(names):
        source = clean_cache[name]
        if not isinstance(source, np.ndarray):
            raise TypeError(f"{who}: {name!r} outputs a {type(source).__name__}; only a tensor output can be patched")
        for k, head in enumerate(per_name):
            for j, position in enumerate(chosen):
                cell = _cell(position, head)

                def patch(activation, _, source=source, cell=cell):
                    patched = backend.to_numpy(activation.data).copy()
                    patched[cell] = source[cell]
                    return patched
                with no_grad():
                    output = run_with_hooks(model, corrupted, [(name, patch)], **kwargs)
                scores[i, k, j] = (_metric_value(metric, output) - corrupted_metric) / scale
    scores = scores[:, 0] if chosen_heads is None else scores
    return PatchingResult(names, chosen, scores, clean_metric, corrupted_metric, chosen_heads)


def attribution_patching(model: Module, clean, corrupted, metric: Metric, names: Sequence[str] | str,
                         positions="each", heads=None, **kwargs) -> PatchingResult:
    """The first-order estimate of :func:`activation_patching`'s scores, same arguments and layout:
    (a_clean - a_corr) . dm/da at the corrupted run, over the patched positions (and head), divided
    by m_clean - m_corr. One clean forward, one corrupted forward and one backward pass."""
    who = "attribution_patching"
    _check_pair(clean, corrupted, who)
    names = [names] if isinstance(names, str) else list(names)
    resolve_modules(model, names, who)
    clean_output, clean_cache = run_with_cache(model, clean, names, **kwargs)
    offsets: dict[str, Tensor] = {}
    corrupted_values: dict[str, np.ndarray] = {}

    def watch(activation, name):                   # a + 0: the gradient of the zero is dm/da
        if name not in offsets:
            corrupted_values[name] = np.array(backend.to_numpy(activation.data))
            offsets[name] = tensor(backend.xp.zeros(activation.shape, dtype=activation.dtype), requires_grad=True)
        return F.add(activation, offsets[name])

    with input_analysis(model):
        output = run_with_hooks(model, corrupted, [(name, watch) for name in names], **kwargs)
        value = metric(output)
        if not isinstance(value, Tensor) or value.size != 1:
            raise TypeError(f"{who}: the metric must return a scalar Tensor built from the output (got "
                            f"{type(value).__name__})")
        gradients = grad(value, [offsets[name] for name in names], allow_unused=True)
    clean_metric, corrupted_metric = _metric_value(metric, clean_output), float(backend.to_numpy(value.data))
    scale = _normaliser(clean_metric, corrupted_metric, who)
    chosen = _positions(positions, np.shape(clean)[1], who)
    chosen_heads = _heads(heads, [clean_cache[name] for name in names], names, who)
    per_name = [None] if chosen_heads is None else chosen_heads
    scores = np.empty((len(names), len(per_name), len(chosen)))
    for i, (name, gradient) in enumerate(zip(names, gradients)):
        change = (clean_cache[name] - corrupted_values[name]).astype(np.float64)
        slope = np.zeros(change.shape) if gradient is None else backend.to_numpy(gradient).astype(np.float64)
        cells = (change * slope).reshape(change.shape[:2] + ((-1,) if chosen_heads is None else (change.shape[2], -1)))
        per_cell = cells.sum(axis=(0, cells.ndim - 1))                 # (T,) or (T, heads)
        for k, head in enumerate(per_name):
            column = per_cell if head is None else per_cell[:, head]
            for j, position in enumerate(chosen):
                scores[i, k, j] = (column.sum() if position is None else column[position]) / scale
    scores = scores[:, 0] if chosen_heads is None else scores
    return PatchingResult(names, chosen, scores, clean_metric, corrupted_metric, chosen_heads)


def component_names(model: Module, component: str, who: str) -> list[str]:
    """The module paths of ``component`` (one of :data:`COMPONENTS`, or 'head') in each block."""
    if component == HEAD_COMPONENT:
        return head_hook_names(model, who)
    parts = transformer_parts(model)
    if component == "resid_pre":
        return parts.resid_pre
    if component == "resid_post":
        return list(parts.blocks)
    branches = {"attn_out": parts.attention_outputs, "mlp_out": parts.mlp_outputs}
    if component not in branches:
        raise ValueError(f"{who}: component must be one of {COMPONENTS + (HEAD_COMPONENT,)}, got {component!r}")
    if branches[component] is None:
        raise TypeError(f"{who}: the blocks of {type(model).__name__} have no separate {component} module")
    return branches[component]


def patching_grid(model: Module, clean, corrupted, metric: Metric, component: str = "resid_pre",
                  positions="each", method: str = "activation", heads="each", **kwargs) -> PatchingResult:
    """Layers x positions: the normalised metric of patching ``component`` of each block of a decoder
    language model (see :func:`transformer_parts`) at each position, by actual patching
    (``method='activation'``) or its first-order estimate (``'attribution'``). With
    ``component='head'`` (the head hooks enabled, see :func:`enable_head_hooks`) each of ``heads``
    of each block is patched alone: layers x heads x positions (``positions=None``: all at once)."""
    who = "patching_grid"
    names = component_names(model, component, who)
    runs = {"activation": activation_patching, "attribution": attribution_patching}
    if method not in runs:
        raise ValueError(f"{who}: method must be one of {tuple(runs)}, got {method!r}")
    return runs[method](model, clean, corrupted, metric, names, positions,
                        heads=heads if component == HEAD_COMPONENT else None, **kwargs)
