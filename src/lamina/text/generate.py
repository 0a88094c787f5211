"""Sampling text from a language model, one token at a time.

The model maps ids (1, t) to scores (1, t, V); the next token is drawn from
softmax(z^<t> / temperature) over the last step's scores and appended, until the
end-of-sequence token or ``max_length`` tokens. Three ways to feed the model:

* carried states: a ``streamable`` model (an embedding, unidirectional recurrent layers,
  per-step layers) reads the prompt once and then one token per step, its recurrent layers
  carrying their states (:func:`carrying_states`): linear time in the length.
* key/value cache: a causal Transformer (causal encoder layers, position layers and
  per-step layers, e.g. :func:`lamina.models.transformer_language_model`) reads the prompt
  once and then one token per step, its attention layers keeping the keys and values of
  the tokens already read (:func:`caching_keys_values`), while the text fits in its
  context. A longer text shifts every token's position at each step, so from then on the
  model reruns on the last ``context`` tokens.
* rerun: any other model runs again on the whole text so far, or its last ``context``
  tokens, at every step: quadratic time in the length (or more).

Each way draws the same tokens as the rerun from the same seed: the fast ones compute the
same scores, only once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.text.vocabulary import Vocabulary

__all__ = ["caching_keys_values", "carrying_states", "sample_text"]


@contextlib.contextmanager
def carrying_states(model, carry: bool = True) -> Iterator[None]:
    """Within: every recurrent layer of ``model`` (the modules with ``reset_states``) is
    stateful (``carry=True``: consecutive calls continue one sequence, from zeros) or not
    (``carry=False``: each call starts afresh). After: the layers' ``stateful`` flags as
    they were, their carried states reset."""
    layers = [m for m in model.modules() if hasattr(m, "reset_states")]
    flags = [m.stateful for m in layers]
    for m in layers:
        m.stateful = carry
        m.reset_states()
    try:
        yield
    finally:
        for m, flag in zip(layers, flags):
            m.stateful = flag
            m.reset_states()


def _cache_layers(model) -> list:
    """The outermost modules of ``model`` with a key/value cache mode (``start_caching``);
    the modules inside them are driven by them."""
    if hasattr(model, "start_caching"):
        return [model]
    return [layer for child in model.children() for layer in _cache_layers(child)]


@contextlib.contextmanager
def caching_keys_values(model) -> Iterator[None]:
    """Within: consecutive calls of ``model`` continue one sequence. Its causal attention
    layers keep the keys and values of every step read and attend over them and the new
    steps (query i of a call after s cached steps sees the keys t' <= s + i); its position
    layers add the encodings of positions s, s + 1, ...; its per-step layers need nothing.
    For evaluation only (``model.eval()``, under ``lamina.no_grad()``). After: the caches
    cleared. Refused (ValueError naming the layer) for a model with no such layer, for a
    non-causal encoder layer, and, at the call, for cross-attention or masks. The whole
    model gives the outputs of one call on the sequence only if its other layers act on each
    step alone: ``model.streamable`` is then True within the block."""
    layers = _cache_layers(model)
    if not layers:
        raise ValueError(f"caching_keys_values: {type(model).__name__} has no layer that caches keys and values "
                         "(TransformerEncoderLayer, MultiHeadAttention, PositionalEncoding, PositionEmbedding)")
    started = []
    try:
        for layer in layers:
            layer.start_caching()
            started.append(layer)
        yield
    finally:
        for layer in started:
            layer.stop_caching()


def _decodes_incrementally(model) -> bool:
    """Whether ``model`` can read one new token per call through :func:`caching_keys_values`
    with the outputs of a rerun: every cache layer can cache, and with the caches on, every
    layer is streamable."""
    layers = _cache_layers(model)
    if not layers or not all(getattr(layer, "cacheable", False) for layer in layers):
        return False
    with caching_keys_values(model):
        return bool(getattr(model, "streamable", False))


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """``p`` with all but the fewest likeliest tokens whose probabilities reach ``top_p`` set to 0."""
    order = np.argsort(-p, kind="stable")
    kept = int(np.searchsorted(np.cumsum(p[order]), top_p * (1 - 1e-12))) + 1
    out = np.zeros_like(p)
    out[order[:kept]] = p[order[:kept]]
    return out


def sample_text(model, vocab: Vocabulary, prompt: str = "", max_length: int = 50, temperature: float = 1.0,
                top_k: int | None = None, seed: int | None = None, context: int | None = None,
                stream: bool | None = None, top_p: float | None = None) -> str:
    """Continue ``prompt`` (after the bos token, when the vocabulary has one) with tokens
    drawn from the model. ``temperature`` < 1 sharpens the distribution, > 1 flattens it;
    ``top_k`` draws among the k most likely tokens only; ``top_p`` (nucleus sampling,
    Holtzman et al. 2020) among the fewest most likely tokens whose probabilities sum to at
    least p (after ``temperature`` and ``top_k``). ``context``: the model reads at
    most the last ``context`` tokens (default: the smallest ``max_len`` of the model's
    position layers, if it has any, else the whole text so far).

    ``stream``: how the model reads the text (see the module docstring).

    * ``None`` (default): the fastest way that draws the rerun's tokens. A ``streamable``
      model with no ``context`` carries its recurrent states; a causal Transformer uses its
      key/value cache while the text fits in ``context`` (the prompt in one call, then one
      token per call), then reruns on the last ``context`` tokens; any other model reruns.
    * ``True``: carry recurrent states over the whole text; refused for a model that is not
      ``streamable`` (a Transformer too: past its context it must rerun) or with a
      ``context``.
    * ``False``: rerun the model on the text (or its last ``context`` tokens) at every step,
      with no carried state nor cache: the reference the other ways agree with.

    Carried states and caches are cleared after. Returns the prompt and its continuation,
    special tokens left out."""
    if not temperature > 0:
        raise ValueError(f"sample_text: temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise ValueError(f"sample_text: top_k must lie in [1, {len(vocab)}], got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"sample_text: top_p must lie in (0, 1], got {top_p!r}")
    if context is None:
        limits = [m.max_len for m in model.modules() if isinstance(getattr(m, "max_len", None), int)]
        context = min(limits) if limits else None
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise ValueError(f"sample_text: context must be a positive int, got {context!r}")
    streamable = bool(getattr(model, "streamable", False))
    if stream and not streamable:
        hint = (": a causal Transformer reads each new token once (from its key/value cache) only while the text "
                "fits in its context; leave stream=None for that" if _decodes_incrementally(model) else "")
        raise ValueError(f"sample_text: stream=True needs a streamable model (embedding, unidirectional recurrent "
                         f"and per-step layers); {type(model).__name__} is not{hint}")
    if stream and context is not None:
        raise ValueError(f"sample_text: stream=True reads the whole text and cannot keep to context={context}")
    if stream is None:
        carry = streamable and context is None
        cache = not carry and _decodes_incrementally(model)
    else:
        carry, cache = bool(stream), False
    rng = np.random.default_rng(seed)
    ids = list(vocab.encode(prompt, add_bos=vocab.bos_id is not None))
    if not ids:
        raise ValueError("sample_text: an empty prompt needs a vocabulary with a bos token to start from")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad(), carrying_states(model, carry=carry), contextlib.ExitStack() as caches:
            if cache:
                caches.enter_context(caching_keys_values(model))
            read = 0                        # the tokens held in carried states or caches
            for _ in range(max_length):
                if cache and context is not None and len(ids) > context:
                    caches.close()          # the positions shift from now on: rerun
                    cache = False
                if carry or cache:
                    window = ids[read:]
                else:
                    window = ids if context is None else ids[-context:]
                scores = model(tensor(np.asarray([window], dtype=np.int64))).numpy()
                read = len(ids)
                if scores.ndim != 3 or scores.shape[:2] != (1, len(window)) or scores.shape[2] != len(vocab):
                    raise ValueError(f"sample_text: the model must map ids (1, {len(window)}) to scores (1, "
                                     f"{len(window)}, {len(vocab)}), got {scores.shape}")
                z = scores[0, -1].astype(np.float64) / temperature
                if top_k is not None:
                    z[np.argsort(z)[:-top_k]] = -np.inf
                p = np.exp(z - z.max())
                if top_p is not None:
                    p = _nucleus(p / p.sum(), top_p)
                next_id = int(rng.choice(len(vocab), p=p / p.sum()))
                if next_id == vocab.eos_id:
                    break
                ids.append(next_id)
    finally:
        model.train(was_training)
    return vocab.decode(ids)
