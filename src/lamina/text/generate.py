"""Sampling text from a language model, one token at a time.

The model maps ids (1, t) to scores (1, t, V); the next token is drawn from
softmax(z^<t> / temperature) over the last step's scores and appended, until the
end-of-sequence token or ``max_length`` tokens. A ``streamable`` model (an embedding,
unidirectional recurrent layers, per-step layers) reads the prompt once and then one token
per step, its recurrent layers carrying their states: linear time in the length. Any other
model (a Transformer) runs again on the longer prefix, or on its last ``context`` tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.text.vocabulary import Vocabulary

__all__ = ["carrying_states", "sample_text"]


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


def sample_text(model, vocab: Vocabulary, prompt: str = "", max_length: int = 50, temperature: float = 1.0,
                top_k: int | None = None, seed: int | None = None, context: int | None = None,
                stream: bool | None = None) -> str:
    """Continue ``prompt`` (after the bos token, when the vocabulary has one) with tokens
    drawn from the model. ``temperature`` < 1 sharpens the distribution, > 1 flattens it;
    ``top_k`` draws among the k most likely tokens only. ``context``: the model reads at
    most the last ``context`` tokens (default: the smallest ``max_len`` of the model's
    position layers, if it has any, else the whole text so far). ``stream``: read one token
    per step with the recurrent layers carrying their states (default: when the model is
    ``streamable`` and no ``context`` applies; the layers' carried states are reset after).
    Returns the prompt and its continuation, special tokens left out."""
    if not temperature > 0:
        raise ValueError(f"sample_text: temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= len(vocab):
        raise ValueError(f"sample_text: top_k must lie in [1, {len(vocab)}], got {top_k!r}")
    if context is None:
        limits = [m.max_len for m in model.modules() if isinstance(getattr(m, "max_len", None), int)]
        context = min(limits) if limits else None
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise ValueError(f"sample_text: context must be a positive int, got {context!r}")
    streamable = bool(getattr(model, "streamable", False))
    if stream is None:
        stream = streamable and context is None
    elif stream and not streamable:
        raise ValueError(f"sample_text: stream=True needs a streamable model (embedding, unidirectional recurrent "
                         f"and per-step layers); {type(model).__name__} is not")
    elif stream and context is not None:
        raise ValueError(f"sample_text: stream=True reads the whole text and cannot keep to context={context}")
    rng = np.random.default_rng(seed)
    ids = list(vocab.encode(prompt, add_bos=vocab.bos_id is not None))
    if not ids:
        raise ValueError("sample_text: an empty prompt needs a vocabulary with a bos token to start from")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad(), carrying_states(model, carry=stream):
            window = ids
            for _ in range(max_length):
                if not stream:
                    window = ids if context is None else ids[-context:]
                scores = model(tensor(np.asarray([window], dtype=np.int64))).numpy()
                if scores.ndim != 3 or scores.shape[:2] != (1, len(window)) or scores.shape[2] != len(vocab):
                    raise ValueError(f"sample_text: the model must map ids (1, {len(window)}) to scores (1, "
                                     f"{len(window)}, {len(vocab)}), got {scores.shape}")
                z = scores[0, -1].astype(np.float64) / temperature
                if top_k is not None:
                    z[np.argsort(z)[:-top_k]] = -np.inf
                p = np.exp(z - z.max())
                next_id = int(rng.choice(len(vocab), p=p / p.sum()))
                if next_id == vocab.eos_id:
                    break
                ids.append(next_id)
                window = [next_id]
    finally:
        model.train(was_training)
    return vocab.decode(ids)
