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
  model reruns on the last ``context`` tokens. With ``cache="sink"`` it keeps reading one
  token per call past its context instead, through a cache of the first ``sink_tokens`` and the
  last ``window`` tokens (:func:`lamina.text.attention_sinks`, StreamingLLM; rotary models).
* rerun: any other model runs again on the whole text so far, or its last ``context``
  tokens, at every step: quadratic time in the length (or more).

Each way draws the same tokens as the rerun from the same seed: the fast ones compute the
same scores, only once.

Several texts continue at once as the rows of one batch (:func:`sample_texts`, beam search):
:func:`reorder_caches` then keeps and reorders the rows the caches and carried states hold,
dropping the finished texts, repeating the beam's hypotheses that several survivors extend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.text.vocabulary import Vocabulary

__all__ = ["caching_keys_values", "carrying_states", "reorder_caches", "sample_text", "sample_texts", "sample_token"]


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
def caching_layers(layers) -> Iterator[None]:
    """Within: each of ``layers`` caches (``start_caching``); after, even on an error, every
    layer started is stopped again (``stop_caching``), its cache cleared."""
    started = []
    try:
        for layer in layers:
            layer.start_caching()
            started.append(layer)
        yield
    finally:
        for layer in started:
            layer.stop_caching()


@contextlib.contextmanager
def caching_keys_values(model) -> Iterator[None]:
    """Within: consecutive calls of ``model`` continue one sequence. Its causal attention
    layers keep the keys and values of every step read and attend over them and the new
    steps (query i of a call after s cached steps sees the keys t' <= s + i); its position
    layers add the encodings of positions s, s + 1, ...; its per-step layers need nothing.
    For evaluation only (``model.eval()``, under ``lamina.no_grad()``). After: the caches
    cleared. Refused (ValueError naming the layer) for a model with no such layer, for a
    non-causal encoder layer, and, at the call, for cross-attention (a ``mask`` over the cached
    and new steps replaces the shifted causal one). The whole
    model gives the outputs of one call on the sequence only if its other layers act on each
    step alone: ``model.streamable`` is then True within the block."""
    layers = _cache_layers(model)
    if not layers:
        raise ValueError(f"caching_keys_values: {type(model).__name__} has no layer that caches keys and values "
                         "(TransformerEncoderLayer, MultiHeadAttention, PositionalEncoding, PositionEmbedding)")
    with caching_layers(layers):
        yield


def reorder_caches(model, rows) -> None:
    """Keep and reorder the rows of every cache of ``model``: the keys and values of its
    attention layers (within :func:`caching_keys_values`) and the states its stateful
    recurrent layers carry (within :func:`carrying_states`). Row i of the batch after is
    row ``rows[i]`` before; rows may repeat (a beam's hypotheses that share a parent) or be
    left out (finished ones). The next call of ``model`` then continues ``len(rows)``
    sequences. Refused (ValueError) for a model holding neither, or, naming the layer, for a
    cache layer that is not caching."""
    cache_layers = _cache_layers(model)
    carriers = [m for m in model.modules() if hasattr(m, "reorder_states") and m.stateful]
    if not cache_layers and not carriers:
        raise ValueError(f"reorder_caches: {type(model).__name__} holds no key/value cache nor carried recurrent "
                         "state; call it within caching_keys_values or carrying_states")
    for layer in cache_layers:
        layer.reorder_cache(rows)
    for layer in carriers:
        layer.reorder_states(rows)


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


def _default_context(model) -> int | None:
    """The most tokens ``model`` reads at once: the smallest ``max_len`` of its position
    layers, or None (no limit) when it has none."""
    limits = [m.max_len for m in model.modules() if isinstance(getattr(m, "max_len", None), int)]
    return min(limits) if limits else None


def _check_options(who: str, vocab: Vocabulary, temperature: float, top_k: int | None, top_p: float | None,
                   context: int | None) -> None:
    if not temperature > 0:
        raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise ValueError(f"{who}: top_k must lie in [1, {len(vocab)}], got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"{who}: top_p must lie in (0, 1], got {top_p!r}")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise ValueError(f"{who}: context must be a positive int, got {context!r}")


def _reading(who: str, model, stream: bool | None, context: int | None) -> tuple[bool, bool]:
    """(carry, cache): whether the model reads the text through carried recurrent states or
    through its key/value cache (neither: it reruns), for ``stream`` as :func:`sample_text`
    takes it."""
    streamable = bool(getattr(model, "streamable", False))
    if stream and not streamable:
        hint = (": a causal Transformer reads each new token once (from its key/value cache) only while the text "
                "fits in its context; leave stream=None for that" if _decodes_incrementally(model) else "")
        raise ValueError(f"{who}: stream=True needs a streamable model (embedding, unidirectional recurrent "
                         f"and per-step layers); {type(model).__name__} is not{hint}")
    if stream and context is not None:
        raise ValueError(f"{who}: stream=True reads the whole text and cannot keep to context={context}")
    if stream is None:
        carry = streamable and context is None
        return carry, not carry and _decodes_incrementally(model)
    return bool(stream), False


def _draw(scores: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int | None,
          top_p: float | None) -> int:
    """One token drawn from softmax(``scores`` / temperature), kept to the ``top_k`` likeliest
    (with every token tied with the k-th, as Hugging Face's top-k warper) and to the nucleus
    ``top_p``."""
    z = scores.astype(np.float64) / temperature
    if top_k is not None:
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    p = np.exp(z - z.max())
    if top_p is not None:
        p = _nucleus(p / p.sum(), top_p)
    return int(rng.choice(len(p), p=p / p.sum()))


def sample_token(scores, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> int:
    """One token id drawn with ``rng`` from softmax(``scores`` / temperature) over the (V,)
    scores, kept to the ``top_k`` likeliest (and those tied with the k-th) and then to the
    nucleus ``top_p``: the draw of :func:`sample_text`, for decoders that compute the scores
    themselves."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"sample_token: expected the scores of one step, shape (V,), got {scores.shape}")
    if not temperature > 0:
        raise ValueError(f"sample_token: temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= len(scores):
        raise ValueError(f"sample_token: top_k must lie in [1, {len(scores)}], got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"sample_token: top_p must lie in (0, 1], got {top_p!r}")
    return _draw(scores, rng, temperature, top_k, top_p)


def sample_text(model, vocab: Vocabulary, prompt: str = "", max_length: int = 50, temperature: float = 1.0,
                top_k: int | None = None, seed: int | None = None, context: int | None = None,
                stream: bool | None = None, top_p: float | None = None, cache: str | None = None,
                sink_tokens: int = 4, window: int | None = None) -> str:
    """Continue ``prompt`` (after the bos token, when the vocabulary has one) with tokens
    drawn from the model. ``temperature`` < 1 sharpens the distribution, > 1 flattens it;
    ``top_k`` draws among the k most likely tokens only (and those tied with the k-th);
    ``top_p`` (nucleus sampling, Holtzman et al. 2020) among the fewest most likely tokens whose probabilities sum to at
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

    ``cache="sink"`` (a causal model with rotary positions): the key/value cache keeps the
    first ``sink_tokens`` tokens and the last ``window`` ones, their positions assigned within
    the cache (Xiao et al. 2024's attention sinks, :func:`lamina.text.attention_sinks`), so
    the model reads one token per call however long the text, in constant memory; while the
    text has at most ``sink_tokens + window`` tokens it draws what the plain cache draws.

    Carried states and caches are cleared after. Returns the prompt and its continuation,
    special tokens left out. :func:`sample_texts` draws several continuations in one batch."""
    rng = np.random.default_rng(seed)
    sinks = _sink_options("sample_text", cache, sink_tokens, window, stream)
    return _sample(model, vocab, prompt, [rng], max_length, temperature, top_k, context, stream, top_p,
                   "sample_text", sinks)[0]


def sample_texts(model, vocab: Vocabulary, prompt: str = "", num_samples: int = 4, max_length: int = 50,
                 temperature: float = 1.0, top_k: int | None = None, seed: int | None = None,
                 context: int | None = None, stream: bool | None = None, top_p: float | None = None,
                 cache: str | None = None, sink_tokens: int = 4, window: int | None = None) -> list[str]:
    """``num_samples`` continuations of ``prompt`` drawn as the rows of one batch: the model
    reads the prompt once, then the last token of every unfinished sample per call (its
    caches or carried states holding a row per sample; a sample that draws the end token
    leaves the batch), or, for a model that reruns, the texts of the unfinished samples as
    one batch. The options are :func:`sample_text`'s.

    Sample i draws from its own stream ``numpy.random.default_rng(seed + i)``: it is the text
    ``sample_text(..., seed=seed + i)`` gives, up to the rounding of the batched scores (a
    draw that falls within rounding of the boundary between two tokens could differ).
    ``seed=None``: fresh streams, a different draw each time."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"sample_texts: num_samples must be a positive int, got {num_samples!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"sample_texts: seed must be an int or None, got {seed!r}")
    rngs = [np.random.default_rng(None if seed is None else seed + i) for i in range(num_samples)]
    sinks = _sink_options("sample_texts", cache, sink_tokens, window, stream)
    return _sample(model, vocab, prompt, rngs, max_length, temperature, top_k, context, stream, top_p,
                   "sample_texts", sinks)


def _sink_options(who: str, cache: str | None, sink_tokens: int, window: int | None,
                  stream: bool | None) -> tuple[int, int] | None:
    """(sink_tokens, window) for ``cache="sink"``, None for ``cache=None``; checked."""
    if cache is None:
        return None
    if cache != "sink":
        raise ValueError(f"{who}: cache must be None or 'sink', got {cache!r}")
    from lamina.text.sink_cache import check_sink_options
    check_sink_options(who, sink_tokens, window)
    if stream is not None:
        raise ValueError(f"{who}: cache='sink' reads through the key/value cache; leave stream=None, got {stream!r}")
    return int(sink_tokens), int(window)


def _sample(model, vocab: Vocabulary, prompt: str, rngs: list[np.random.Generator], max_length: int,
            temperature: float, top_k: int | None, context: int | None, stream: bool | None,
            top_p: float | None, who: str, sinks: tuple[int, int] | None = None) -> list[str]:
    """One continuation of ``prompt`` per random stream of ``rngs``, drawn as one batch; through
    an attention-sink cache of (sink tokens, window) when ``sinks`` is given."""
    if context is None and sinks is None:
        context = _default_context(model)
    _check_options(who, vocab, temperature, top_k, top_p, context)
    carry, cache = _reading(who, model, stream, context) if sinks is None else (False, True)
    if sinks is not None and not _decodes_incrementally(model):
        raise ValueError(f"{who}: cache='sink' needs a causal model that reads one token per call through its "
                         f"key/value cache (attention, per-step layers); {type(model).__name__} is not one")
    prompt_ids = list(vocab.encode(prompt, add_bos=vocab.bos_id is not None))
    if not prompt_ids:
        raise ValueError(f"{who}: an empty prompt needs a vocabulary with a bos token to start from")
    texts = [list(prompt_ids) for _ in rngs]
    alive = list(range(len(rngs)))      # the samples still drawing, in the order of the batch's rows
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad(), carrying_states(model, carry=carry), contextlib.ExitStack() as caches:
            if sinks is not None:
                from lamina.text.sink_cache import attention_sinks
                caches.enter_context(attention_sinks(model, *sinks))
            elif cache:
                caches.enter_context(caching_keys_values(model))
            read = 0                        # the tokens of each text held in carried states or caches
            for _ in range(max_length):
                length = len(texts[alive[0]])           # every unfinished text has the same length
                if cache and sinks is None and context is not None and length > context:
                    caches.close()          # the positions shift from now on: rerun
                    cache = False
                if (carry or cache) and read == 0:
                    window = np.asarray([prompt_ids], dtype=np.int64)     # the prompt, read once for all
                elif carry or cache:
                    window = np.asarray([texts[i][read:] for i in alive], dtype=np.int64)
                else:
                    start = 0 if context is None else max(length - context, 0)
                    window = np.asarray([texts[i][start:] for i in alive], dtype=np.int64)
                scores = model(tensor(window)).numpy()
                read = length
                expected = (*window.shape, len(vocab))
                if scores.shape != expected:
                    raise ValueError(f"{who}: the model must map ids {window.shape} to scores {expected}, "
                                     f"got {scores.shape}")
                rows = [0] * len(alive) if len(window) == 1 else list(range(len(alive)))
                kept = []
                for row, i in zip(rows, alive):
                    next_id = _draw(scores[row, -1], rngs[i], temperature, top_k, top_p)
                    if next_id != vocab.eos_id:
                        texts[i].append(next_id)
                        kept.append((row, i))
                if not kept:
                    break
                if (carry or cache) and [row for row, _ in kept] != list(range(len(window))):
                    reorder_caches(model, np.asarray([row for row, _ in kept]))
                alive = [i for _, i in kept]
    finally:
        model.train(was_training)
    return [vocab.decode(ids) for ids in texts]
