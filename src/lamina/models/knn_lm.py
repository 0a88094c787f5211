"""kNN-LM: a language model interpolated with a nearest-neighbour memory of text
(Khandelwal et al., "Generalization through memorization: nearest neighbor language
models", 2020).

A *datastore* holds one entry per position t of some text: the key k_t = f(x_{<=t}), the
hidden state the model computes there (by default the final hidden state, the input of
the output layer), and the value v_t = x_{t+1}, the token that follows. At inference the
query q = f(context) finds the k entries at the smallest squared distance
d_i = ||q - k_i||^2 (exact search, by blocks of keys), and

    p_kNN(y) = sum_{i : v_i = y} exp(-d_i / T) / sum_i exp(-d_i / T)
    p(y) = lambda p_kNN(y) + (1 - lambda) p_LM(y)

so a phrase met in the datastore is recalled from memory, even by a model that never
trained on it. :func:`knn_lm_generate` decodes from p, reading the text once through the
model's key/value cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.text.generate import _decodes_incrementally, caching_keys_values

__all__ = ["KNNDatastore", "build_datastore", "knn_distribution", "knn_lm_generate", "knn_lm_log_probs",
           "knn_lm_perplexity"]


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


@dataclass
class KNNDatastore:
    """``keys`` (N, D), the model's hidden states at N positions of some text, and
    ``values`` (N,), the token that followed each; ``layer``: where the keys were taken
    (None: the final hidden states, else the name of a layer of the model)."""

    keys: np.ndarray
    values: np.ndarray
    layer: str | None = None

    def __post_init__(self):
        self.keys = np.asarray(self.keys)
        self.values = np.asarray(self.values)
        if self.keys.ndim != 2 or self.keys.shape[0] == 0 or self.values.shape != self.keys.shape[:1]:
            raise ShapeError(f"KNNDatastore: expected keys (N, D) with N >= 1 and values (N,), got "
                             f"{self.keys.shape} and {self.values.shape}")
        if self.values.dtype.kind not in "iu":
            raise ValueError(f"KNNDatastore: values must be token ids (integers), got dtype {self.values.dtype}")
        self._squared_norms = np.einsum("nd,nd->n", self.keys, self.keys, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries, k: int, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` entries nearest each query (Q, D): ``(indices, distances)``, both (Q, k),
        by increasing squared L2 distance ||q||^2 - 2 q.k + ||k||^2 (ties by index), computed
        in float64 for ``chunk_size`` queries by ``chunk_size`` keys at a time."""
        queries = np.asarray(queries, dtype=np.float64)
        if queries.ndim != 2 or queries.shape[1] != self.keys.shape[1]:
            raise ShapeError(f"KNNDatastore.search: expected queries (Q, {self.keys.shape[1]}), got {queries.shape}")
        k = _positive_int(k, "KNNDatastore.search: k")
        if k > len(self):
            raise ValueError(f"KNNDatastore.search: k={k} exceeds the {len(self)} entries of the datastore")
        step = _positive_int(chunk_size, "KNNDatastore.search: chunk_size")
        indices, distances = [], []
        for start in range(0, len(queries), step):
            block = queries[start:start + step]
            block_norms = np.einsum("qd,qd->q", block, block)[:, None]
            best_d, best_i = np.empty((len(block), 0)), np.empty((len(block), 0), dtype=np.int64)
            for first in range(0, len(self), step):
                rows = np.arange(first, min(first + step, len(self)))
                d = block_norms - 2.0 * block @ self.keys[rows].T.astype(np.float64) + self._squared_norms[rows]
                best_d, best_i = _nearest(np.concatenate([best_d, np.maximum(d, 0.0)], 1),
                                          np.concatenate([best_i, np.broadcast_to(rows, d.shape)], 1), k)
            indices.append(best_i)
            distances.append(best_d)
        return np.concatenate(indices), np.concatenate(distances)


def _nearest(distances: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances of each row with their indices, sorted by (distance, index)."""
    order = np.lexsort((indices, distances), axis=1)[:, :k]
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


def knn_distribution(distances, values, vocab_size: int, temperature: float = 1.0) -> np.ndarray:
    """p_kNN (Q, ``vocab_size``) from the neighbours' squared ``distances`` and token
    ``values`` (both (Q, k)): p(y) = sum_{i : v_i = y} exp(-d_i / T) / sum_i exp(-d_i / T)
    (weights of neighbours with equal values add up)."""
    distances, values = np.asarray(distances, dtype=np.float64), np.asarray(values)
    if distances.ndim != 2 or values.shape != distances.shape:
        raise ShapeError(f"knn_distribution: expected distances and values of one shape (Q, k), got "
                         f"{distances.shape} and {values.shape}")
    if not temperature > 0:
        raise ValueError(f"knn_distribution: temperature must be > 0, got {temperature!r}")
    if values.size and (values.min() < 0 or values.max() >= vocab_size):
        raise ValueError(f"knn_distribution: token values must lie in [0, {vocab_size}), got "
                         f"[{values.min()}, {values.max()}]")
    weights = np.exp(-(distances - distances.min(axis=1, keepdims=True)) / temperature)
    weights /= weights.sum(axis=1, keepdims=True)
    p = np.zeros((len(distances), vocab_size))
    np.add.at(p, (np.arange(len(distances))[:, None], values), weights)
    return p


def _target(model: Module, layer: str | None) -> Module | None:
    if layer is None:
        if not (hasattr(model, "hidden_states") and hasattr(model, "logits")):
            raise TypeError(f"kNN-LM: {type(model).__name__} has no hidden_states/logits methods; "
                            "name the layer whose output gives the keys")
        return None
    if not isinstance(layer, str):
        raise TypeError(f"kNN-LM: layer must be None or a layer name, got {type(layer).__name__}")
    named = dict(model.named_modules())
    if layer not in named or not layer:
        raise ValueError(f"kNN-LM: {type(model).__name__} has no layer named {layer!r}; "
                         f"layers: {[name for name in named if name]}")
    return named[layer]


def _to_numpy(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data if isinstance(x, Tensor) else x))


def _keys_and_scores(model: Module, target: Module | None, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys (N, t, D) and next-token scores (N, t, V) of one call of ``model`` on ``ids``
    (N, t); the keys are the final hidden states, or the last output of ``target``."""
    if target is None:
        hidden = model.hidden_states(tensor(ids))
        return _to_numpy(hidden), _to_numpy(model.logits(hidden))
    captured = []

    def capture(module, inputs, kwargs, forward):
        output = forward()
        if module is target:
            captured.append(output)
        return output

    with intercept_calls(capture):
        scores = model(tensor(ids))
    if not captured:
        raise ValueError(f"kNN-LM: layer {target._label()} was not called by {type(model).__name__}'s forward")
    keys = _to_numpy(captured[-1])
    if keys.shape[:2] != ids.shape:
        raise ShapeError(f"kNN-LM: the output of {target._label()} must have shape {ids.shape} + (D,), "
                         f"got {keys.shape}")
    return keys.reshape(*ids.shape, -1), _to_numpy(scores)


def _sequences(token_sequences, who: str) -> list[np.ndarray]:
    if isinstance(token_sequences, np.ndarray) and token_sequences.ndim == 1:
        token_sequences = [token_sequences]
    sequences = [np.asarray(s) for s in token_sequences]
    for i, s in enumerate(sequences):
        if s.ndim != 1 or len(s) < 2 or s.dtype.kind not in "iu":
            raise ShapeError(f"{who}: sequence {i} must be a 1-D array of at least 2 token ids, got shape "
                             f"{s.shape} and dtype {s.dtype}")
    if not sequences:
        raise ValueError(f"{who}: no token sequences given")
    return sequences


def _check_length(model, length: int, who: str) -> None:
    limit = getattr(model, "max_len", None)
    if isinstance(limit, int) and length > limit:
        raise ValueError(f"{who}: a sequence of {length} tokens exceeds the model's context of {limit}; split it")


def build_datastore(model: Module, token_sequences: Sequence | np.ndarray, layer: str | None = None,
                    batch_size: int = 32) -> KNNDatastore:
    """The datastore of ``token_sequences`` (1-D arrays of token ids, each read by the model
    in one call, sequences of equal length ``batch_size`` at a time): for every position t
    but the last of each, the key = the model's hidden state at t (``layer`` None: the
    final hidden states, the input of the output layer; else the output of the layer of
    that name, e.g. the input of the last feed-forward block, as in the paper) and the
    value = the token at t + 1. Computed in evaluation mode without the graph."""
    sequences = _sequences(token_sequences, "build_datastore")
    target = _target(model, layer)
    batch_size = _positive_int(batch_size, "build_datastore: batch_size")
    by_length: dict[int, list[np.ndarray]] = {}
    for s in sequences:
        _check_length(model, len(s), "build_datastore")
        by_length.setdefault(len(s), []).append(s)
    keys, values = [], []
    with evaluation_mode(model), no_grad():
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                ids = np.stack(group[start:start + batch_size]).astype(np.int64)
                hidden, _ = _keys_and_scores(model, target, ids)
                keys.append(hidden[:, :-1].reshape(-1, hidden.shape[-1]))
                values.append(ids[:, 1:].reshape(-1))
    return KNNDatastore(np.concatenate(keys), np.concatenate(values), layer)


def _check_interpolation(k: int, lam: float, temperature: float, datastore: KNNDatastore, who: str) -> None:
    _positive_int(k, f"{who}: k")
    if k > len(datastore):
        raise ValueError(f"{who}: k={k} exceeds the {len(datastore)} entries of the datastore")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{who}: lam (the weight of p_kNN) must lie in [0, 1], got {lam!r}")
    if not temperature > 0:
        raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")


def _interpolate(keys: np.ndarray, scores: np.ndarray, datastore: KNNDatastore, k: int, lam: float,
                 temperature: float, chunk_size: int) -> np.ndarray:
    """log(lam p_kNN + (1 - lam) p_LM) (Q, V) for keys (Q, D) and LM scores (Q, V)."""
    z = scores.astype(np.float64)
    log_lm = z - z.max(axis=1, keepdims=True)
    log_lm -= np.log(np.exp(log_lm).sum(axis=1, keepdims=True))
    if lam == 0.0:
        return log_lm
    indices, distances = datastore.search(keys, k, chunk_size)
    p_knn = knn_distribution(distances, datastore.values[indices], scores.shape[1], temperature)
    with np.errstate(divide="ignore"):
        log_knn = np.log(p_knn)
    if lam == 1.0:
        return log_knn
    return np.logaddexp(np.log(lam) + log_knn, np.log1p(-lam) + log_lm)


def knn_lm_log_probs(model: Module, datastore: KNNDatastore, ids, k: int = 8, lam: float = 0.25,
                     temperature: float = 1.0, chunk_size: int = 4096) -> np.ndarray:
    """log p(x_{t+1} = y | x_{<=t}) (N, T, V) of the kNN-LM for token ids (N, T) (or (T,),
    giving (T, V)): log(lam p_kNN + (1 - lam) p_LM), p_kNN from the ``k`` nearest entries of
    ``datastore`` at ``temperature`` (see the module docstring). lam = 0 gives the LM's
    log-softmax, lam = 1 log p_kNN (-inf for tokens no neighbour holds)."""
    _check_interpolation(k, lam, temperature, datastore, "knn_lm_log_probs")
    array = _to_numpy(ids)
    single = array.ndim == 1
    array = np.atleast_2d(array).astype(np.int64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ShapeError(f"knn_lm_log_probs: expected token ids (N, T) or (T,), got shape {np.shape(ids)}")
    _check_length(model, array.shape[1], "knn_lm_log_probs")
    with evaluation_mode(model), no_grad():
        keys, scores = _keys_and_scores(model, _target(model, datastore.layer), array)
    if keys.shape[-1] != datastore.keys.shape[1]:
        raise ShapeError(f"knn_lm_log_probs: the model's keys have {keys.shape[-1]} features, the datastore's "
                         f"{datastore.keys.shape[1]}")
    rows = array.shape[0] * array.shape[1]
    out = _interpolate(keys.reshape(rows, -1), scores.reshape(rows, -1), datastore, k, lam, temperature,
                       chunk_size).reshape(*array.shape, -1)
    return out[0] if single else out


def knn_lm_perplexity(model: Module, datastore: KNNDatastore, token_sequences, k: int = 8, lam: float = 0.25,
                      temperature: float = 1.0, chunk_size: int = 4096) -> float:
    """exp of the mean over every predicted token (positions 1 .. T - 1 of each sequence) of
    -log p(x_{t+1} | x_{<=t}) under the kNN-LM; ``lam=0`` gives the LM's own perplexity."""
    total, count = 0.0, 0
    for s in _sequences(token_sequences, "knn_lm_perplexity"):
        log_p = knn_lm_log_probs(model, datastore, s, k, lam, temperature, chunk_size)
        total -= float(log_p[np.arange(len(s) - 1), s[1:]].sum())
        count += len(s) - 1
    return float(np.exp(total / count))


def knn_lm_generate(model: Module, datastore: KNNDatastore, prompt_ids, max_new_tokens: int = 20, k: int = 8,
                    lam: float = 0.25, temperature: float = 1.0, sample_temperature: float = 0.0,
                    seed: int | None = None, eos_id: int | None = None, use_cache: bool = True,
                    chunk_size: int = 4096) -> np.ndarray:
    """The token ids (P + new,) of ``prompt_ids`` (P,) continued from the kNN-LM's
    distribution p (``k``, ``lam``, ``temperature`` as in :func:`knn_lm_log_probs`):
    ``sample_temperature`` 0 takes the most likely token (greedy), > 0 draws from
    p^(1 / sample_temperature), renormalised, with ``numpy.random.default_rng(seed)``. Stops
    after ``max_new_tokens`` or at ``eos_id`` (kept). ``use_cache``: a causal Transformer
    reads the prompt once, then one token per call through its key/value cache while the
    text fits in its context (``max_len``), and reruns on the last ``max_len`` tokens after;
    False reruns at every step (the same tokens, more slowly)."""
    _check_interpolation(k, lam, temperature, datastore, "knn_lm_generate")
    _positive_int(max_new_tokens, "knn_lm_generate: max_new_tokens")
    if not sample_temperature >= 0:
        raise ValueError(f"knn_lm_generate: sample_temperature must be >= 0, got {sample_temperature!r}")
    text = [int(t) for t in np.asarray(_to_numpy(prompt_ids)).reshape(-1)]
    if not text:
        raise ValueError("knn_lm_generate: the prompt must hold at least one token")
    target = _target(model, datastore.layer)
    context = getattr(model, "max_len", None)
    rng = np.random.default_rng(seed)
    with evaluation_mode(model), no_grad(), contextlib.ExitStack() as caches:
        cache = use_cache and _decodes_incrementally(model)
        if cache:
            caches.enter_context(caching_keys_values(model))
        read = 0
        for _ in range(max_new_tokens):
            if cache and isinstance(context, int) and len(text) > context:
                caches.close()          # the positions would shift from now on: rerun
                cache = False
            start = read if cache else max(0, len(text) - context) if isinstance(context, int) else 0
            keys, scores = _keys_and_scores(model, target, np.asarray([text[start:]], dtype=np.int64))
            read = len(text)
            log_p = _interpolate(keys[0, -1:], scores[0, -1:], datastore, k, lam, temperature, chunk_size)[0]
            if sample_temperature == 0:
                token = int(np.argmax(log_p))
            else:
                z = log_p / sample_temperature
                p = np.exp(z - z.max())
                token = int(rng.choice(len(p), p=p / p.sum()))
            text.append(token)
            if token == eos_id:
                break
    return np.asarray(text, dtype=np.int64)
