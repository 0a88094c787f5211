"""Locating and editing facts in a language model: causal tracing, ROME and MEMIT.

Causal tracing (Meng et al. 2022, "Locating and editing factual associations in GPT"): the
subject's input embeddings are corrupted by Gaussian noise, h_0[s] <- h_0[s] + noise, and one
activation of the clean run is restored at a time (a block's output h_l at one position, or a
window of MLP or attention outputs there). The probability of the correct next token after
each restoration shows where the fact is recalled: :func:`causal_trace`,
:func:`traced_probability`.

An MLP's output projection W (lamina's ``Dense`` weight, (in, out): v = k W + b) is read as a
key-value memory. With C = E[k k^T] over keys k of ordinary text
(:func:`second_moment_statistics`), ROME inserts the key k* (the subject's last token) with the
value v* by the smallest change in the C-weighted sense, minimise tr(dW^T C dW) subject to
k* (W + dW) + b = v*:

    W' = W + (C^-1 k*) (v* - k* W - b)^T / ((C^-1 k*)^T k*)         (:func:`rank_one_update`)

(the paper's W' = W + (v* - W k*)(C^-1 k*)^T / ((C^-1 k*)^T k*) written for (in, out) weights).
v* = k* W + b + delta, delta found by gradient descent (:class:`ValueObjective`) so that the
model given the prompt with delta added to that MLP output predicts the new target:

    L(delta) = -mean_contexts mean_j log p(target_j | context, target_<j)
               + kl_weight KL(p(. | essence) || p_delta(. | essence))
               + weight_decay ||delta||^2 / ||v_0||^2

(the paper's code decays ||delta|| / ||v_0||^2; the squared norm here is smooth at delta = 0), with
Adam from delta = 0 and ||delta|| clipped to ``max_norm_factor`` ||v_0|| as in the paper. The
defaults (50 steps, lr 0.5, weight decay 0.05) suit small models; the paper's GPT-2 XL setting is
20 steps, lr 0.5, weight decay 0.5 (on its unsquared norm) and a KL weight of 0.0625.

MEMIT (Meng et al. 2023, "Mass-editing memory in a transformer") edits many facts over layers
l_1 < ... < l_m: per request i a target z_i = h_L + delta_i of the last edited layer's output h_L
is found as above; then for each layer in turn, with the keys K (n, in) of the current model and
the residuals R = (z - h_L) / (layers left), the least-squares update

    dW = (lambda C + K^T K)^-1 K^T R                                  (:func:`memit_update`)

minimises lambda tr(dW^T C dW) + ||K (W + dW) - (K W + R)||^2. Edits are applied in place and
returned as a :class:`ModelEdit` whose ``undo()`` restores the weights bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.analysis.interpretability.activation_cache import (
    resolve_modules,
    run_with_cache,
    run_with_hooks,
    transformer_parts,
)
from lamina.analysis.saliency import input_analysis
from lamina.autograd import Tensor, grad, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["CausalTrace", "EditRequest", "ModelEdit", "ValueObjective", "causal_trace", "memit_edit",
           "memit_update", "mlp_projection", "rank_one_update", "rome_edit", "second_moment_statistics",
           "traced_probability"]

TRACE_KINDS = ("hidden", "mlp", "attn")
_PROJECTION_NAMES = ("linear2", "mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.w2")


# -- where the MLP is -----------------------------------------------------------------------
def mlp_projection(model: Module, layer: int | str) -> str:
    """The module path of the MLP output projection (the second Dense) of block ``layer``
    (GPT-2's ``h.<layer>.linear2``, a DecoderLM's ``mlp.down_proj``), or ``layer`` itself when it
    is a path. Its inputs are the keys k, its weight W (in, out)."""
    who = "mlp_projection"
    if isinstance(layer, str):
        name, module = resolve_modules(model, [layer], who)[0]
    else:
        blocks = transformer_parts(model).blocks
        if not -len(blocks) <= int(layer) < len(blocks):
            raise ValueError(f"{who}: layer {layer} is outside a model of {len(blocks)} blocks")
        block = blocks[int(layer)]
        children = {path: m for path, m in model.get_submodule(block).named_modules() if path}
        found = next((path for path in _PROJECTION_NAMES if path in children), None)
        if found is None:
            raise TypeError(f"{who}: block {block!r} has none of the MLP projections {_PROJECTION_NAMES}")
        name, module = f"{block}.{found}", children[found]
    weight = getattr(module, "weight", None)
    if weight is None or weight.ndim != 2:
        raise TypeError(f"{who}: {name!r} ({type(module).__name__}) has no 2-D (in, out) weight to edit")
    return name


def _module(model: Module, name: str) -> Module:
    return resolve_modules(model, [name], "model_editing")[0][1]


def _rows(ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return ids[None] if ids.ndim == 1 else ids


def _keys_and_outputs(model: Module, name: str, ids, positions) -> tuple[np.ndarray, np.ndarray]:
    """The keys (inputs) and outputs of module ``name`` at ``positions`` (one per row) of ``ids``, float64."""
    module = _module(model, name)
    seen = {}

    def hook(_, inputs, output):
        seen["key"], seen["value"] = inputs[0], output
    handle = module.register_forward_hook(hook)
    try:
        with no_grad(), evaluation_mode(model):
            model(ids)
    finally:
        handle.remove()
    rows = np.arange(len(ids))
    keys = backend.to_numpy(seen["key"].data)[rows, positions].astype(np.float64)
    values = backend.to_numpy(seen["value"].data)[rows, positions].astype(np.float64)
    return keys, values


# -- C = E[k k^T] ---------------------------------------------------------------------------
def second_moment_statistics(model: Module, layer: int | str, token_batches: Iterable) -> np.ndarray:
    """C = E[k k^T] (in, in), float64, of the keys entering the MLP output projection of ``layer``
    (see :func:`mlp_projection`), averaged over every position of every batch of token ids (N, T)."""
    who = "second_moment_statistics"
    module = _module(model, mlp_projection(model, layer))
    total, count = None, 0

    def hook(_, inputs, output):
        nonlocal total, count
        keys = backend.to_numpy(inputs[0].data).astype(np.float64)
        keys = keys.reshape(-1, keys.shape[-1])
        total = keys.T @ keys if total is None else total + keys.T @ keys
        count += len(keys)
    handle = module.register_forward_hook(hook)
    try:
        with no_grad(), evaluation_mode(model):
            for ids in token_batches:
                model(_rows(ids))
    finally:
        handle.remove()
    if count == 0:
        raise ValueError(f"{who}: token_batches held no tokens")
    return total / count


# -- closed-form updates ----------------------------------------------------------------------
def rank_one_update(weight, bias, key, value, C) -> np.ndarray:
    """ROME's dW (in, out): (C^-1 k*) (v* - k* W - b)^T / ((C^-1 k*)^T k*), so that
    k* (W + dW) + b = v* and k (W + dW) = k W for every k with k^T C^-1 k* = 0. ``bias``: b or None."""
    weight = np.asarray(weight, dtype=np.float64)
    key, value = np.asarray(key, dtype=np.float64), np.asarray(value, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if weight.ndim != 2 or key.shape != (weight.shape[0],) or value.shape != (weight.shape[1],) \
            or C.shape != (weight.shape[0],) * 2:
        raise ShapeError(f"rank_one_update: weight {weight.shape} (in, out) needs key ({weight.shape[0]},), "
                         f"value ({weight.shape[1]},) and C {(weight.shape[0],) * 2}; got key {key.shape}, value "
                         f"{value.shape}, C {C.shape}")
    direction = np.linalg.solve(C, key)
    residual = value - key @ weight - (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    return np.outer(direction, residual) / (direction @ key)


def memit_update(keys, residuals, C, covariance_weight: float = 1.0) -> np.ndarray:
    """MEMIT's dW (in, out) = (lambda C + K^T K)^-1 K^T R: the minimiser of
    lambda tr(dW^T C dW) + ||K dW - R||^2 for keys K (n, in) and wanted output changes R (n, out)."""
    keys, residuals = np.asarray(keys, dtype=np.float64), np.asarray(residuals, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if keys.ndim != 2 or residuals.ndim != 2 or len(keys) != len(residuals) or C.shape != (keys.shape[1],) * 2:
        raise ShapeError(f"memit_update: expected keys (n, in), residuals (n, out) and C (in, in); got "
                         f"{keys.shape}, {residuals.shape} and {C.shape}")
    return np.linalg.solve(covariance_weight * C + keys.T @ keys, keys.T @ residuals)


# -- edits, undone ----------------------------------------------------------------------------
@dataclass
class ModelEdit:
    """Weights changed in place: ``deltas[name]`` dW added to the weight of module ``name``; ``keys``
    and ``values`` the k* and v* (ROME) or keys and targets z (MEMIT) used; ``losses`` the value
    objective's trace per request. ``undo()`` puts the original weights back bit for bit."""

    deltas: dict[str, np.ndarray]
    keys: np.ndarray
    values: np.ndarray
    losses: list[list[float]]
    _originals: list = field(default_factory=list, repr=False)

    def undo(self) -> None:
        for parameter, original in reversed(self._originals):
            parameter.data[...] = original
        self._originals.clear()


def _apply(model: Module, name: str, delta: np.ndarray, edit: ModelEdit) -> None:
    weight = _module(model, name).weight
    original = weight.data.copy()
    edit._originals.append((weight, original))
    changed = backend.to_numpy(original).astype(np.float64) + delta
    weight.data[...] = backend.xp.asarray(changed.astype(weight.data.dtype))
    edit.deltas[name] = edit.deltas.get(name, 0) + delta


# -- the value objective ------------------------------------------------------------------------
@dataclass
class EditRequest:
    """One fact to write: ``prompt`` token ids (e.g. "subject relation"), the position of the
    subject's last token in it, and the ``target`` ids the prompt should now be followed by.
    ``essence``: optional ids of a prompt about the subject (e.g. "subject is a") whose next-token
    distribution the KL term keeps; ``essence_subject_position``: the subject's last token in it."""

    prompt: Sequence[int]
    subject_last_position: int
    target: Sequence[int]
    essence: Sequence[int] | None = None
    essence_subject_position: int | None = None


def _contexts(request: EditRequest, prefixes: Sequence[Sequence[int]]):
    """Right-padded ids (N, T) of each prefix + prompt + target[:-1] (then the essence prompt), the
    edit position per row, and (row, position, token) of every target token to predict."""
    prompt, target = [int(t) for t in request.prompt], [int(t) for t in request.target]
    if not target:
        raise ValueError("EditRequest: the target holds no token")
    if not 0 <= request.subject_last_position < len(prompt):
        raise ValueError(f"EditRequest: subject_last_position {request.subject_last_position} is outside the "
                         f"prompt of {len(prompt)} tokens")
    sequences, edit_positions, rows, positions, tokens = [], [], [], [], []
    for row, prefix in enumerate([[]] + [list(p) for p in prefixes]):
        sequences.append(prefix + prompt + target[:-1])
        edit_positions.append(len(prefix) + request.subject_last_position)
        start = len(prefix) + len(prompt) - 1
        rows += [row] * len(target)
        positions += range(start, start + len(target))
        tokens += target
    if request.essence is not None:
        sequences.append([int(t) for t in request.essence])
        edit_positions.append(len(sequences[-1]) - 1 if request.essence_subject_position is None
                              else int(request.essence_subject_position))
    width = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = sequence
    return ids, np.asarray(edit_positions), (np.asarray(rows), np.asarray(positions), np.asarray(tokens))


class ValueObjective:
    """L(delta) of the module docstring for one :class:`EditRequest`: delta (E,) is added to the
    output of module ``point`` at the subject's last token of each context (the plain prompt, then
    each of ``prefixes`` + prompt) and of the essence prompt. The contexts are averaged; the KL term
    compares the edited and unedited next-token distributions at the essence prompt's last token;
    ||v_0|| is the norm of the unedited output at the subject (mean over contexts).
    ``objective(delta)`` is a scalar Tensor, differentiable in delta."""

    def __init__(self, model: Module, point: str, request: EditRequest, prefixes: Sequence[Sequence[int]] = (),
                 kl_weight: float = 0.0625, weight_decay: float = 0.05):
        self.model, self.point, self.request = model, point, request
        self.kl_weight, self.weight_decay = float(kl_weight), float(weight_decay)
        self.ids, self.edit_positions, self.targets = _contexts(request, prefixes)
        self.contexts = len(prefixes) + 1
        self.essence = request.essence is not None
        mask = np.zeros(self.ids.shape + (1,))
        mask[np.arange(len(self.ids)), self.edit_positions] = 1.0
        self._mask = mask
        output, cache = run_with_cache(model, self.ids, [point])
        activation = cache[point]
        if activation.ndim != 3:
            raise ShapeError(f"ValueObjective: {point!r} outputs shape {activation.shape}; expected (batch, "
                             "position, feature)")
        rows = np.arange(self.contexts)
        self.original = activation[rows, self.edit_positions[:self.contexts]].astype(np.float64).mean(axis=0)
        self.reference_norm = float(np.linalg.norm(self.original))
        if self.essence:
            scores = output[-1, len(request.essence) - 1].astype(np.float64)
            self._essence_log_p = scores - np.logaddexp.reduce(scores)

    def __call__(self, delta: Tensor) -> Tensor:
        def constant(value) -> Tensor:                 # in delta's dtype: no float32 rounding of a float64 loss
            return Tensor._wrap(backend.xp.asarray(value, dtype=delta.dtype))
        shift = F.mul(constant(self._mask), F.reshape(delta, (1, 1, -1)))

        def add_delta(activation, _):
            return F.add(activation, shift)
        logits = run_with_hooks(self.model, self.ids, [(self.point, add_delta)])
        log_p = F.log_softmax(logits, axis=-1)
        rows, positions, tokens = self.targets
        weights = np.array([1.0 / np.sum(rows == r) for r in rows]) / self.contexts
        loss = F.neg(F.sum(F.mul(log_p[rows, positions, tokens], constant(weights))))
        if self.essence and self.kl_weight:
            p = np.exp(self._essence_log_p)
            edited = log_p[len(self.ids) - 1, len(self.request.essence) - 1]
            kl = F.sub(constant(p @ self._essence_log_p), F.sum(F.mul(edited, constant(p))))
            loss = F.add(loss, F.mul(kl, constant(self.kl_weight)))
        if self.weight_decay:
            scale = self.weight_decay / (self.reference_norm ** 2 if self.reference_norm > 0 else 1.0)
            loss = F.add(loss, F.mul(F.sum(F.square(delta)), constant(scale)))
        return loss


def _optimise_delta(objective: ValueObjective, steps: int, lr: float, max_norm_factor: float | None,
                    stop_loss: float) -> tuple[np.ndarray, list[float]]:
    """Adam on delta from zero, its norm clipped to ``max_norm_factor`` ||v_0||; stops early below ``stop_loss``."""
    size = objective.original.shape[0]
    dtype = next(iter(objective.model.parameters())).data.dtype
    delta = np.zeros(size)
    first, second = np.zeros(size), np.zeros(size)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    losses = []
    with input_analysis(objective.model):
        for step in range(1, steps + 1):
            variable = tensor(backend.xp.asarray(delta, dtype=dtype), requires_grad=True)
            loss = objective(variable)
            (gradient,) = grad(loss, [variable])
            losses.append(float(backend.to_numpy(loss.data)))
            if losses[-1] < stop_loss:
                break
            gradient = backend.to_numpy(gradient).astype(np.float64)
            first = beta1 * first + (1 - beta1) * gradient
            second = beta2 * second + (1 - beta2) * gradient ** 2
            delta = delta - lr * (first / (1 - beta1 ** step)) / (np.sqrt(second / (1 - beta2 ** step)) + eps)
            if max_norm_factor is not None and objective.reference_norm > 0:
                limit = max_norm_factor * objective.reference_norm
                norm = np.linalg.norm(delta)
                delta = delta * (limit / norm) if norm > limit else delta
    return delta, losses


def _mean_keys(model: Module, name: str, objective: ValueObjective) -> np.ndarray:
    count = objective.contexts
    keys, _ = _keys_and_outputs(model, name, objective.ids[:count], objective.edit_positions[:count])
    return keys.mean(axis=0)


def rome_edit(model: Module, layer: int | str, tokens, subject_last_position: int, target_tokens, C,
              prefixes: Sequence[Sequence[int]] = (), essence=None, essence_subject_position: int | None = None,
              steps: int = 50, lr: float = 0.5, kl_weight: float = 0.0625, weight_decay: float = 0.05,
              max_norm_factor: float | None = 4.0, stop_loss: float = 0.05) -> ModelEdit:
    """Rank-one model editing: make the prompt ``tokens`` (1-D ids) continue with ``target_tokens``
    by changing the MLP output projection of ``layer`` (see :func:`mlp_projection`) in place.

    k* is the subject's last-token key averaged over the plain prompt and each of ``prefixes``
    (token-id lists put in front of it; the paper samples short texts from the model; with none,
    the plain prompt alone). v* = k* W + b + delta, delta minimising :class:`ValueObjective` by
    ``steps`` of Adam (``lr``; ``essence``, the KL prompt, is optional). C: the keys' second
    moment (:func:`second_moment_statistics`). Returns the :class:`ModelEdit` (``undo()``)."""
    name = mlp_projection(model, layer)
    request = EditRequest(tokens, subject_last_position, list(np.atleast_1d(target_tokens)), essence,
                          essence_subject_position)
    objective = ValueObjective(model, name, request, prefixes, kl_weight, weight_decay)
    delta, losses = _optimise_delta(objective, steps, lr, max_norm_factor, stop_loss)
    key = _mean_keys(model, name, objective)
    module = _module(model, name)
    weight = backend.to_numpy(module.weight.data).astype(np.float64)
    bias = None if getattr(module, "bias", None) is None else backend.to_numpy(module.bias.data).astype(np.float64)
    value = key @ weight + (0.0 if bias is None else bias) + delta
    edit = ModelEdit({}, key[None], value[None], [losses])
    _apply(model, name, rank_one_update(weight, bias, key, value, C), edit)
    return edit


def _as_request(request) -> EditRequest:
    if isinstance(request, EditRequest):
        return request
    prompt, position, target = request
    return EditRequest(prompt, position, list(np.atleast_1d(target)))


def memit_edit(model: Module, layers: Sequence[int], requests: Sequence, C_by_layer, prefixes=(),
               covariance_weight: float = 1.0, steps: int = 50, lr: float = 0.5, kl_weight: float = 0.0625,
               weight_decay: float = 0.05, max_norm_factor: float | None = 4.0, stop_loss: float = 0.05) -> ModelEdit:
    """Mass editing: write every request (an :class:`EditRequest` or a (prompt, subject last position,
    target) triple) by spreading the change over the MLP output projections of ``layers``.

    For each request the output h_L of the last of ``layers`` is moved to z = h_L + delta
    (:class:`ValueObjective` at that block's output). Then for each layer in ascending order, with
    the current keys K and outputs h_L at the subjects (averaged over the plain prompt and
    ``prefixes``), the residual R = (z - h_L) / (number of layers left) is written by
    :func:`memit_update` with C = ``C_by_layer[layer]`` and ``covariance_weight`` lambda."""
    who = "memit_edit"
    layers = sorted(int(layer) for layer in layers)
    if not layers:
        raise ValueError(f"{who}: no layer to edit")
    requests = [_as_request(r) for r in requests]
    if not requests:
        raise ValueError(f"{who}: no request")
    missing = [layer for layer in layers if layer not in C_by_layer]
    if missing:
        raise KeyError(f"{who}: C_by_layer has no statistics for layers {missing}")
    point = transformer_parts(model).blocks[layers[-1]]
    objectives, targets, losses = [], [], []
    for request in requests:
        objective = ValueObjective(model, point, request, prefixes, kl_weight, weight_decay)
        delta, trace = _optimise_delta(objective, steps, lr, max_norm_factor, stop_loss)
        objectives.append(objective)
        targets.append(objective.original + delta)
        losses.append(trace)
    targets = np.stack(targets)
    edit = ModelEdit({}, np.empty((0,)), targets, losses)
    all_keys = []
    for index, layer in enumerate(layers):
        name = mlp_projection(model, layer)
        keys, current = [], []
        for objective in objectives:
            count = objective.contexts
            ids, positions = objective.ids[:count], objective.edit_positions[:count]
            keys.append(_keys_and_outputs(model, name, ids, positions)[0].mean(axis=0))
            current.append(_keys_and_outputs(model, point, ids, positions)[1].mean(axis=0))
        keys = np.stack(keys)
        residuals = (targets - np.stack(current)) / (len(layers) - index)
        _apply(model, name, memit_update(keys, residuals, C_by_layer[layer], covariance_weight), edit)
        all_keys.append(keys)
    edit.keys = np.stack(all_keys)
    return edit


# -- causal tracing -------------------------------------------------------------------------------
@dataclass
class CausalTrace:
    """``scores[l, t]``: the probability of ``target_token`` (mean over the noise samples) with the
    ``kind`` activation of block l at position ``positions[t]`` restored (``names[l]``); the clean
    and the corrupted (nothing restored) probabilities."""

    scores: np.ndarray
    names: list[str]
    positions: list[int]
    kind: str
    clean_probability: float
    corrupted_probability: float


def _noise_array(noise, samples: int, count: int, width: int, seed: int) -> np.ndarray:
    if np.ndim(noise) == 0:
        return float(noise) * np.random.default_rng(seed).standard_normal((samples, count, width))
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape[1:] != (count, width):
        raise ShapeError(f"causal_trace: noise of shape {noise.shape}; expected (samples, {count}, {width}) or "
                         "a standard deviation")
    return noise


class _Tracer:
    """The clean run's activations and the corrupted batch of one prompt."""

    def __init__(self, model, tokens, subject_positions, target_token, noise, samples, seed, names):
        self.model, self.target = model, int(target_token)
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        self.parts = transformer_parts(model)
        self.subject = [int(p) for p in np.atleast_1d(subject_positions)]
        if any(not -len(ids) <= p < len(ids) for p in self.subject):
            raise ValueError(f"causal_trace: subject positions {self.subject} are outside a prompt of {len(ids)} "
                             "tokens")
        output, self.cache = run_with_cache(model, ids[None], sorted(set(names) | {self.parts.embedding_output}))
        self.clean_probability = self._probability(output)
        width = self.cache[self.parts.embedding_output].shape[-1]
        added = _noise_array(noise, samples, len(self.subject), width, seed)
        self.batch = np.repeat(ids[None], len(added), axis=0)
        self._added = added

    def _probability(self, output) -> float:
        scores = np.asarray(output, dtype=np.float64)[:, -1]
        log_p = scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
        return float(np.exp(log_p[:, self.target]).mean())

    def probability(self, restore: Sequence[tuple[str, int]]) -> float:
        def corrupt(activation, _):
            values = backend.to_numpy(activation.data).copy()
            values[:, self.subject] += self._added.astype(values.dtype)
            return values

        def restorer(position):
            def restore_one(activation, name):
                values = backend.to_numpy(activation.data).copy()
                values[:, position] = self.cache[name][0, position]
                return values
            return restore_one
        hooks = [(self.parts.embedding_output, corrupt)] + [(name, restorer(int(p))) for name, p in restore]
        with no_grad():
            output = run_with_hooks(self.model, self.batch, hooks)
        return self._probability(backend.to_numpy(output.data))


def traced_probability(model: Module, tokens, subject_positions, target_token, noise,
                       restore: Sequence[tuple[str, int]] = (), samples: int = 10, seed: int = 0) -> float:
    """The probability of ``target_token`` after the prompt ``tokens`` (1-D ids) with the embeddings at
    ``subject_positions`` corrupted (``noise``: a standard deviation, or the noise itself (samples,
    subject tokens, width)) and each (module path, position) of ``restore`` set to its clean value;
    mean over the noise samples."""
    tracer = _Tracer(model, tokens, subject_positions, target_token, noise, samples, seed,
                     [name for name, _ in restore])
    return tracer.probability(restore)


def _trace_names(parts, kind: str) -> list[str]:
    if kind not in TRACE_KINDS:
        raise ValueError(f"causal_trace: kind must be one of {TRACE_KINDS}, got {kind!r}")
    names = {"hidden": parts.blocks, "mlp": parts.mlp_outputs, "attn": parts.attention_outputs}[kind]
    if names is None:
        raise TypeError(f"causal_trace: the blocks have no separate {kind} output module")
    return list(names)


def causal_trace(model: Module, tokens, subject_positions, target_token, noise, kind: str = "hidden",
                 window: int = 1, positions="each", samples: int = 10, seed: int = 0) -> CausalTrace:
    """The paper's heat map: for each block l and each position t (``positions``: 'each' or a list),
    the probability of ``target_token`` after the corrupted prompt (see :func:`traced_probability`)
    with the ``kind`` activation restored at t: 'hidden' the block's output h_l, 'mlp' or 'attn'
    the MLP or attention outputs of the ``window`` blocks centred on l (clipped at the ends)."""
    parts = transformer_parts(model)
    names = _trace_names(parts, kind)
    if window < 1:
        raise ValueError(f"causal_trace: window must be at least 1, got {window}")
    tracer = _Tracer(model, tokens, subject_positions, target_token, noise, samples, seed, names)
    length = tracer.batch.shape[1]
    chosen = list(range(length)) if isinstance(positions, str) and positions == "each" else [int(p) for p in positions]
    scores = np.empty((len(names), len(chosen)))
    for layer in range(len(names)):
        low = max(0, layer - (window - 1) // 2)
        restored = names[low:min(len(names), low + window)] if kind != "hidden" else [names[layer]]
        for j, position in enumerate(chosen):
            scores[layer, j] = tracer.probability([(name, position) for name in restored])
    return CausalTrace(scores, names, chosen, kind, tracer.clean_probability, tracer.probability([]))
